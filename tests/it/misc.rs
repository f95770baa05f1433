//! Workspace switches, identity, user connectors and the `enrich` command.

use std::process::Command;

use enrichd::store::LeadState;
use enrichd_sim::{ProviderKind, ProviderProfile, SimChannel, SimOptions};

use crate::support::{Harness, HarnessBuilder};

fn perfect(kind: ProviderKind) -> SimOptions {
    SimOptions::defaults(kind).with_profile(ProviderProfile::perfect(&[SimChannel::WorkEmail]))
}

const AUDIENCE: &str = r#"
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]"#;

#[tokio::test]
async fn while_enrichment_is_off_no_provider_is_called() {
    let h = HarnessBuilder::new(20)
        .fast_provider(
            "apollo",
            ProviderKind::Apollo,
            perfect(ProviderKind::Apollo),
        )
        .workspace(&format!(
            "enabled = false\nproviders = [\"apollo\"]\n{AUDIENCE}"
        ))
        .start()
        .await;
    let report = h.run(h.leads(0..10)).await;
    assert_eq!(h.total_requests(), 0);
    assert_eq!(report.totals.credits_charged, 0);
    assert!(
        report
            .leads
            .iter()
            .all(|l| l.reason.contains("switched off"))
    );
}

#[tokio::test]
async fn a_lead_without_enough_identity_is_recorded_not_retried() {
    let h = HarnessBuilder::new(20)
        .fast_provider(
            "apollo",
            ProviderKind::Apollo,
            perfect(ProviderKind::Apollo),
        )
        .workspace(&format!("providers = [\"apollo\"]\n{AUDIENCE}"))
        .start()
        .await;
    let anonymous = enrichd::core::lead::Lead::new("anon").with("jobtitle", "CEO");
    let report = h.run(vec![anonymous.clone()]).await;
    assert_eq!(
        report.leads[0].state,
        LeadState::NoIdentity,
        "{}",
        report.leads[0].reason
    );
    assert_eq!(h.total_requests(), 0);
    let again = h.run(vec![anonymous]).await;
    assert_eq!(again.leads[0].state, LeadState::NoIdentity);
    assert_eq!(h.total_requests(), 0);
}

#[tokio::test]
async fn a_declarative_connector_file_needs_no_code() {
    // A user's own connector file: the Prospeo shape under another name.
    let text = include_str!("../../connectors/prospeo.toml")
        .replace("id = \"prospeo\"", "id = \"acme_people\"")
        .replace("name = \"Prospeo\"", "name = \"Acme People API\"");
    let h = HarnessBuilder::new(40)
        .connector_file("acme_people.toml", &text)
        .provider_with(
            "acme_people",
            ProviderKind::Prospeo,
            perfect(ProviderKind::Prospeo).unlimited(),
            "connector = \"acme_people\"\nlimits = { per_second = 1000, per_minute = 60000, per_day = 10000000 }",
        )
        .workspace(&format!("providers = [\"acme_people\"]\n{AUDIENCE}"))
        .start()
        .await;
    let leads: Vec<usize> = (0..40)
        .filter(|i| {
            !h.population
                .is_catch_all_domain(&h.population.person(*i).domain)
        })
        .take(5)
        .collect();
    let report = h.run(leads.iter().map(|i| h.lead(*i)).collect()).await;
    for i in &leads {
        let l = report.lead(Harness::lead_id(*i).as_str()).expect("lead");
        assert_eq!(l.filled.len(), 1, "{}", l.reason);
        assert_eq!(l.filled[0].source, "acme_people");
        assert_eq!(l.filled[0].value, h.population.person(*i).work_email);
    }
}

// Multi-threaded: the simulators must keep serving while this thread waits
// for the child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrich_command_reads_csv_and_reports_json() {
    let h = HarnessBuilder::new(30)
        .fast_provider(
            "apollo",
            ProviderKind::Apollo,
            perfect(ProviderKind::Apollo),
        )
        .workspace(&format!("providers = [\"apollo\"]\n{AUDIENCE}"))
        .start()
        .await;
    let dir = h.config_path.parent().expect("dir").to_path_buf();
    let mut csv = String::from("id,firstname,lastname,company_domain,company,country\n");
    let leads: Vec<usize> = (0..30)
        .filter(|i| {
            !h.population
                .is_catch_all_domain(&h.population.person(*i).domain)
        })
        .take(3)
        .collect();
    for i in &leads {
        let p = h.population.person(*i);
        csv.push_str(&format!(
            "p{i},{},{},{},\"{}\",{}\n",
            p.first_name, p.last_name, p.domain, p.company_name, p.country
        ));
    }
    csv.push_str(",no,id,x.com,X,US\n");
    let file = dir.join("leads.csv");
    std::fs::write(&file, csv).expect("write csv");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_enrichd"));
    cmd.args([
        "--config",
        h.config_path.to_str().expect("utf-8"),
        "enrich",
        file.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    for (k, v) in &h.secrets {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run enrichd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("row 5: empty id (skipped)"),
        "bad rows are reported: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["totals"]["leads"], 3);
    assert_eq!(report["totals"]["values_found"], 3, "{report:#}");
    assert_eq!(report["totals"]["credits_charged"], 3);
    let first = &report["leads"][0]["filled"][0];
    assert_eq!(first["source"], "apollo");
    assert_eq!(first["channel"], "work_email");

    // The table view of a second run: nothing left to do.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_enrichd"));
    cmd.args([
        "--config",
        h.config_path.to_str().expect("utf-8"),
        "enrich",
        file.to_str().expect("utf-8"),
    ]);
    for (k, v) in &h.secrets {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run enrichd");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("0 credits charged"), "{stdout}");
    assert!(stdout.contains("nothing to fill"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_leads_are_picked_up_when_the_budget_allows() {
    let h = HarnessBuilder::new(40)
        .fast_provider(
            "apollo",
            ProviderKind::Apollo,
            perfect(ProviderKind::Apollo),
        )
        .workspace(&format!(
            "providers = [\"apollo\"]\nbudget = {{ credits = 2, period = \"month\" }}\n{AUDIENCE}"
        ))
        .start()
        .await;
    let dir = h.config_path.parent().expect("dir").to_path_buf();
    let leads: Vec<usize> = (0..40)
        .filter(|i| {
            !h.population
                .is_catch_all_domain(&h.population.person(*i).domain)
        })
        .take(5)
        .collect();
    let mut csv = String::from("id,firstname,lastname,company_domain,icp_score\n");
    for (k, i) in leads.iter().enumerate() {
        let p = h.population.person(*i);
        csv.push_str(&format!(
            "p{i},{},{},{},{}\n",
            p.first_name,
            p.last_name,
            p.domain,
            90 - k
        ));
    }
    let file = dir.join("leads.csv");
    std::fs::write(&file, csv).expect("write csv");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_enrichd"));
        cmd.args(["--config", h.config_path.to_str().expect("utf-8")])
            .args(args);
        for (k, v) in &h.secrets {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run enrichd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json report")
    };
    let first = run(&["enrich", file.to_str().expect("utf-8"), "--format", "json"]);
    assert_eq!(first["totals"]["credits_charged"], 2);
    assert_eq!(first["totals"]["states"]["queued"], 3, "{first:#}");
    // The budget is raised: the queued leads go through, best ICP first.
    let text = std::fs::read_to_string(&h.config_path).expect("config");
    std::fs::write(
        &h.config_path,
        text.replace("credits = 2,", "credits = 100,"),
    )
    .expect("config");
    let second = run(&["enrich", "--pending", "--format", "json"]);
    assert_eq!(second["totals"]["leads"], 3, "{second:#}");
    assert_eq!(second["totals"]["credits_charged"], 3);
    let nothing = run(&["enrich", "--pending", "--format", "json"]);
    assert_eq!(nothing["totals"]["leads"], 0);
}

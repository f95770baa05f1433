//! `enrichd demo --crm salesforce` as a user runs it (the binary, on a copy
//! of the documented config.toml and mappings): the web-server connect flow
//! against the simulated org, the daemon's first sync pass over the Leads,
//! an edit and a creation reaching it as Outbound Messages, enrichd's own
//! writes coming back without a loop, and a report whose figures match the
//! demo's own database.

use std::path::Path;
use std::time::{Duration, Instant};

use enrichd::core::lead::WorkspaceId;
use serde_json::Value;

const LEADS: u64 = 150;

fn num(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {path} in the report:\n{v:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_salesforce_demo_connects_syncs_leads_reacts_to_outbound_messages_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("config.toml"), dir.path().join("config.toml")).expect("config");
    std::fs::create_dir_all(dir.path().join("mappings")).expect("mappings dir");
    for m in ["hubspot.toml", "salesforce.toml"] {
        std::fs::copy(
            repo.join("mappings").join(m),
            dir.path().join("mappings").join(m),
        )
        .expect("mapping");
    }

    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .args([
            "demo",
            "--crm",
            "salesforce",
            "--leads",
            &LEADS.to_string(),
            "--format",
            "json",
        ])
        .env_remove("ENRICHD_CONFIG")
        .output()
        .expect("run enrichd demo");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the report is not JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_eq!(r["crm"], "salesforce");

    // The derived config: Salesforce in place of HubSpot, on loopback.
    let derived = std::fs::read_to_string(dir.path().join(".enrichd/demo.toml"))
        .expect("the derived config is under .enrichd/");
    let t: toml::Table = derived
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .parse()
        .expect("demo.toml parses");
    let crm = &t["workspaces"][0]["crm"];
    assert_eq!(crm["kind"].as_str(), Some("salesforce"));
    assert!(
        crm["login_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "{crm:?}"
    );

    // Connected through the web-server flow with PKCE, tokens sealed, the
    // mapping's custom fields all present in the org.
    let c = &r["connect"];
    assert_eq!(c["auth"], "oauth", "{r:#}");
    assert_eq!(c["flow"], "web_server");
    assert_eq!(c["tokens_sealed"], true);
    assert_eq!(c["refresh_token"], true);
    assert!(c["org_id"].as_str().is_some_and(|o| o.starts_with("00D")));
    assert!(num(&r, "/connect/fields_checked") > 0);
    assert_eq!(
        c["fields_missing"].as_array().map(Vec::len),
        Some(0),
        "{c:#}"
    );

    // Every live Lead pulled; converted Leads never written.
    let leads = num(&r, "/leads");
    let live = num(&r, "/live_leads");
    assert_eq!(leads, LEADS);
    assert!(live < leads, "the org has converted Leads: {r:#}");
    assert_eq!(num(&r, "/converted_leads/leads"), leads - live);
    assert_eq!(num(&r, "/converted_leads/written"), 0);
    assert_eq!(r["first_pass"]["complete"], true, "{r:#}");
    assert_eq!(num(&r, "/first_pass/leads_pulled"), live);
    assert!(num(&r, "/first_pass/leads_written") > 0);

    // Values written with their Source, and what people typed left alone
    // and never charged.
    let written = num(&r, "/written/values");
    assert!(written > 0);
    assert_eq!(num(&r, "/written/values_without_source"), 0);
    let mut sum = 0;
    for (channel, sources) in r["written"]["by_channel"].as_object().expect("by channel") {
        for (source, n) in sources.as_object().expect("sources") {
            assert!(
                r["providers"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == source.as_str())),
                "{channel}: Source {source} is not a configured provider"
            );
            sum += n.as_u64().unwrap_or(0);
        }
    }
    assert_eq!(sum, written);
    let typed = num(&r, "/human_typed/emails") + num(&r, "/human_typed/phones");
    assert!(typed > 0);
    assert_eq!(num(&r, "/human_typed/unchanged"), typed);
    assert_eq!(num(&r, "/human_typed/charged"), 0);
    let before: u64 = ["full", "partial", "empty", "none"]
        .iter()
        .map(|k| r["statuses"][k]["before"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(before, live);
    assert!(
        r["statuses"]["full"]["after"].as_u64() > r["statuses"]["full"]["before"].as_u64(),
        "{:#}",
        r["statuses"]
    );

    // Outbound Messages: the edit of a complete Lead is handled and buys
    // and writes nothing; the created Lead is enriched and written back
    // once; every echo of enrichd's own writes is ignored (no loop).
    let wh = &r["webhooks"];
    assert_eq!(wh["edit"]["handled"], true, "{wh:#}");
    assert_eq!(num(&r, "/webhooks/edit/provider_calls"), 0);
    assert_eq!(num(&r, "/webhooks/edit/credits"), 0);
    assert_eq!(num(&r, "/webhooks/edit/enrichd_writes"), 0);
    let created = &wh["created"];
    assert_eq!(created["written"], true, "{wh:#}");
    assert!(
        created["values"].as_object().is_some_and(|v| !v.is_empty()),
        "{created:#}"
    );
    assert_eq!(num(&r, "/webhooks/created/enrichd_writes"), 1, "{wh:#}");
    let api = &r["salesforce_api"];
    let record_writes = num(&r, "/salesforce_api/record_writes");
    assert_eq!(
        record_writes,
        num(&r, "/salesforce_api/records_written"),
        "a Lead written twice: {api:#}"
    );
    assert_eq!(
        num(&r, "/webhooks/own_writes_ignored"),
        record_writes,
        "every write came back once and was ignored: {r:#}"
    );
    assert_eq!(num(&r, "/webhooks/rejected"), 0);
    assert!(num(&r, "/webhooks/deliveries") > 0);
    assert_eq!(wh["events"].get("pending"), None, "{wh:#}");

    // The org's limits: no owner change, no limit refusal, the allocation
    // as the org reports it equals the simulator's count.
    assert_eq!(num(&r, "/salesforce_api/owner_changes"), 0);
    assert_eq!(num(&r, "/salesforce_api/limit_refusals"), 0);
    assert_eq!(num(&r, "/salesforce_api/daily_allocation"), 100_000);
    assert_eq!(
        num(&r, "/salesforce_api/used_in_24h"),
        num(&r, "/salesforce_api/calls"),
        "{api:#}"
    );
    assert!(num(&r, "/salesforce_api/query_calls") >= 1);
    assert!(num(&r, "/salesforce_api/collection_calls") + num(&r, "/salesforce_api/bulk_jobs") > 0);
    assert!(num(&r, "/salesforce_api/tagged_writes") > 0);

    // Credits: the budget counter equals the demo database's ledger, one
    // charge per value written, and the stored leads are the live Leads.
    let db = dir.path().join(".enrichd/demo.db");
    let store = enrichd::store::open(&format!("sqlite://{}", db.display()))
        .await
        .expect("open the demo's database");
    let ws = WorkspaceId("acme".into());
    let ledger = store.ledger(&ws).await.expect("ledger");
    let ledger_sum: i64 = ledger.iter().map(|e| e.credits).sum();
    assert!(ledger_sum > 0);
    assert_eq!(r["credits"]["charged"].as_i64(), Some(ledger_sum));
    assert_eq!(num(&r, "/credits/ledger_entries"), ledger.len() as u64);
    assert_eq!(ledger.len() as u64, written, "one charge per value written");
    let stored = store
        .lead_page(&ws, None, 10_000)
        .await
        .expect("stored leads");
    assert_eq!(
        stored.len() as u64,
        live + 1,
        "the live Leads and the created one"
    );
    assert!(
        stored.iter().all(|l| l.id.as_str().starts_with("00Q")),
        "only Lead ids"
    );

    for (id, p) in r["provider_api"].as_object().expect("providers") {
        assert_eq!(p["rate_limited"].as_u64(), Some(0), "{id}");
        if let Some(limit) = p["limit_per_minute"].as_u64() {
            assert!(num(p, "/busiest_minute") <= limit, "{id}");
        }
    }
}

//! `enrichd status` through the real binary after a sync: connection,
//! coverage per audience, credits, and a dead letter with its reason.

use enrichd::crm::hubspot::sync::SyncOptions;
use enrichd::store::jobs::JobSpec;
use enrichd_sim::ProviderKind;
use enrichd_sim::SimOptions;
use enrichd_sim::hubspot::{HubSpotLimits, HubSpotOptions};

use crate::support::{FAST_LIMITS, HarnessBuilder, HubSpotSpec};

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_connection_coverage_credits_and_dead_letters() {
    let h = HarnessBuilder::new(120)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .workspace(
            r#"
providers = ["apollo"]
budget = { credits = 100000, period = "month" }
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "linkedin_url"]
"#,
        )
        .hubspot(HubSpotSpec {
            opts: HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited()),
            email_share: 0.0,
            crm_extra: String::new(),
            mapping: None,
        })
        .start()
        .await;
    h.connect_hubspot().await;
    h.hub()
        .sync(
            Some(&h.engine),
            SyncOptions {
                full: false,
                enrich: true,
                write: true,
            },
        )
        .await
        .expect("sync");
    // A job that failed for good.
    let (id, _) = h
        .store
        .enqueue(
            &h.ws.id,
            &JobSpec::new("bulk", serde_json::json!({})).max_attempts(1),
            1_000,
        )
        .await
        .unwrap();
    let claimed = h
        .store
        .claim("w-test", &[], 10, 60_000, 1_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        h.store
            .fail(
                id,
                "w-test",
                "HubSpot search answered 400: bad filter",
                2_000,
                1_500
            )
            .await
            .unwrap()
    );

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args([
            "--config",
            h.config_path.to_str().unwrap(),
            "status",
            "--format",
            "json",
        ])
        .envs(&h.secrets)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let w = &v[0];
    assert_eq!(w["workspace"], "t");
    assert_eq!(w["crm"]["state"], "connected");
    assert_eq!(w["crm"]["backfill_done"], true);
    assert_eq!(w["leads"], 120);
    let c = &w["coverage"]["everyone"];
    let sum =
        c["full"].as_u64().unwrap() + c["partial"].as_u64().unwrap() + c["empty"].as_u64().unwrap();
    assert_eq!(sum, 120, "{c}");
    assert!(c["full"].as_u64().unwrap() > 0, "{c}");
    // Coverage agrees with the statuses the engine recorded.
    let statuses = h.store.statuses(&h.ws.id).await.unwrap();
    let full = statuses
        .iter()
        .filter(|s| s.enrichment_status.as_deref() == Some("full"))
        .count() as u64;
    assert_eq!(c["full"].as_u64().unwrap(), full);
    let ledger: i64 = h
        .store
        .ledger(&h.ws.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.credits)
        .sum();
    assert_eq!(w["credits_charged"].as_i64().unwrap(), ledger);
    assert_eq!(w["queue"]["bulk"]["dead"], 1);
    let reason = w["dead_letters"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("bad filter"), "{reason}");

    let table = tokio::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(["--config", h.config_path.to_str().unwrap(), "status"])
        .envs(&h.secrets)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("audience everyone:"), "{text}");
    assert!(text.contains("dead letter: job"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_by_audience_runs_as_a_durable_job_and_writes_back() {
    let h = HarnessBuilder::new(90)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .workspace(
            r#"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]
"#,
        )
        .hubspot(HubSpotSpec {
            opts: HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited()),
            email_share: 0.0,
            crm_extra: String::new(),
            mapping: None,
        })
        .start()
        .await;
    h.connect_hubspot().await;
    // Pull only: the leads are stored, nothing enriched or written.
    h.hub()
        .sync(
            None,
            SyncOptions {
                full: false,
                enrich: false,
                write: false,
            },
        )
        .await
        .expect("pull");
    assert_eq!(h.hs().stats().records_updated, 0);
    assert_eq!(h.total_requests(), 0);

    let run = |args: &'static [&'static str]| {
        let mut all = vec!["--config", h.config_path.to_str().unwrap(), "bulk"];
        all.extend_from_slice(args);
        tokio::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
            .args(all)
            .envs(&h.secrets)
            .output()
    };
    let out = run(&["--audience", "everyone", "--format", "json"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "bulk");
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["progress"]["done"], v["progress"]["total"], "{v}");
    assert_eq!(v["progress"]["total"], 90, "{v}");
    assert!(h.total_requests() > 0, "providers were asked");
    let written = h.hs().stats().records_updated;
    assert!(written >= 45, "{written}");
    let ledger: i64 = h
        .store
        .ledger(&h.ws.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.credits)
        .sum();
    assert!(ledger > 0);

    // The same selection again: nothing left to find or write.
    let requests = h.total_requests();
    let out = run(&["--audience", "everyone", "--format", "json"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(h.total_requests(), requests, "complete leads cost no call");
    assert_eq!(h.hs().stats().records_updated, written, "nothing rewritten");

    // A bad selection is refused with what to do.
    let out = run(&["--audience", "nobody"]).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown audience"), "{err}");
}

#[tokio::test]
async fn leads_are_counted_by_status_in_one_statement_on_both_backends() {
    use enrichd::core::lead::{LeadId, WorkspaceId};
    use enrichd::store::{LeadState, LeadStatusRow, WriteOp};
    for db in [Some(crate::db::sqlite().await), crate::db::pg().await]
        .into_iter()
        .flatten()
    {
        let (a, b) = (WorkspaceId("a".into()), WorkspaceId("b".into()));
        let row = |id: &str, s: Option<&str>| {
            WriteOp::Status(LeadStatusRow {
                lead_id: LeadId(id.into()),
                state: LeadState::Done,
                enrichment_status: s.map(String::from),
                reason: String::new(),
                retry_at: None,
                updated_at: 1,
            })
        };
        let ops = [
            row("1", Some("full")),
            row("2", Some("full")),
            row("3", Some("partial")),
            row("4", None),
        ];
        db.store.apply(&a, &ops).await.unwrap();
        db.store.apply(&b, &ops[..1]).await.unwrap();
        let counts = db.store.status_counts(&a).await.unwrap();
        assert_eq!(
            counts,
            vec![
                ("full".to_string(), 2),
                ("none".to_string(), 1),
                ("partial".to_string(), 1)
            ],
            "{}",
            db.backend
        );
        assert_eq!(
            db.store.status_counts(&b).await.unwrap(),
            vec![("full".to_string(), 1)]
        );
    }
}

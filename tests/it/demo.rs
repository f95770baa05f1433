//! `enrichd demo` as a user runs it (the binary, on a copy of the documented
//! config.toml): the real connect flow against the simulated HubSpot, the
//! daemon's first sync pass, a webhook-triggered re-enrich, and a report
//! whose figures match the demo's own database.

use std::path::Path;
use std::time::{Duration, Instant};

use enrichd::core::lead::WorkspaceId;
use serde_json::Value;

const LEADS: u64 = 150;

fn num(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {path} in the report"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_connects_syncs_reacts_to_a_webhook_and_reports_what_it_did() {
    // The documented config and mapping, copied: the demo writes its
    // database and derived config next to the config it is given.
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("config.toml"), dir.path().join("config.toml")).expect("config");
    std::fs::create_dir_all(dir.path().join("mappings")).expect("mappings dir");
    std::fs::copy(
        repo.join("mappings/hubspot.toml"),
        dir.path().join("mappings/hubspot.toml"),
    )
    .expect("mapping");

    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .args(["demo", "--leads", &LEADS.to_string(), "--format", "json"])
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

    // Connected through the OAuth flow, tokens sealed, properties created.
    assert_eq!(r["connect"]["auth"], "oauth", "{r:#}");
    assert_eq!(r["connect"]["tokens_sealed"], true);
    assert!(num(&r, "/connect/properties_checked") > 0);
    assert_eq!(
        r["connect"]["properties_created"].as_array().map(Vec::len),
        r["connect"]["properties_checked"]
            .as_u64()
            .map(|n| n as usize),
        "a fresh portal has none of enrichd's properties"
    );

    // The daemon's first pass pulled every contact and wrote values back,
    // each with its Source, and left what people typed alone.
    assert_eq!(r["first_pass"]["complete"], true);
    assert_eq!(num(&r, "/first_pass/leads_pulled"), LEADS);
    assert!(num(&r, "/first_pass/contacts_written") > 0);
    let written = num(&r, "/written/values");
    assert!(written > 0);
    assert_eq!(num(&r, "/written/values_without_source"), 0);
    let by_channel = r["written"]["by_channel"].as_object().expect("by channel");
    let mut sum = 0;
    for (channel, sources) in by_channel {
        for (source, n) in sources.as_object().expect("sources") {
            assert!(!source.is_empty() && source != "-", "{channel}: {source}");
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
    let before: u64 = ["full", "partial", "empty", "none"]
        .iter()
        .map(|k| r["statuses"][k]["before"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(before, LEADS);
    assert!(
        r["statuses"]["full"]["after"].as_u64() > r["statuses"]["full"]["before"].as_u64(),
        "{:#}",
        r["statuses"]
    );

    // The webhooks: an edit of a complete contact buys nothing; a created
    // contact is enriched and written back.
    assert_eq!(
        r["webhooks"]["edit"]["handled"], true,
        "{:#}",
        r["webhooks"]
    );
    assert_eq!(num(&r, "/webhooks/edit/provider_calls"), 0);
    assert_eq!(num(&r, "/webhooks/edit/credits"), 0);
    let created = &r["webhooks"]["created"];
    assert_eq!(created["written"], true, "{:#}", r["webhooks"]);
    assert!(
        created["values"].as_object().is_some_and(|v| !v.is_empty()),
        "{created:#}"
    );
    assert!(num(&r, "/webhooks/own_writes_ignored") > 0);
    assert_eq!(num(&r, "/webhooks/rejected"), 0);
    assert_eq!(r["webhooks"]["events"].get("pending"), None);

    // Credits: the budget counter equals the demo database's ledger.
    let db = dir.path().join(".enrichd/demo.db");
    assert!(db.exists(), "the demo's database is under .enrichd/");
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

    // No 429 at the default scale, HubSpot's and the providers' limits kept.
    assert_eq!(num(&r, "/hubspot_api/rate_limited"), 0);
    assert!(num(&r, "/hubspot_api/busiest_10s") <= num(&r, "/hubspot_api/limit_10s"));
    assert!(
        num(&r, "/hubspot_api/busiest_search_second")
            <= num(&r, "/hubspot_api/limit_search_per_second")
    );
    for (id, p) in r["provider_api"].as_object().expect("providers") {
        assert_eq!(p["rate_limited"].as_u64(), Some(0), "{id}");
        if let Some(limit) = p["limit_per_minute"].as_u64() {
            assert!(num(p, "/busiest_minute") <= limit, "{id}");
        }
    }
}

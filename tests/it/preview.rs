//! `enrichd preview` and `--dry-run` against the simulators, through the
//! real binary: what a preview shows is exactly what a sync then writes,
//! and a preview (or a dry run) leaves every simulator, ledger and result
//! table as it found them.

use std::collections::BTreeMap;

use enrichd::core::lead::LeadId;
use enrichd::crm::hubspot::sync::SyncOptions;
use enrichd_sim::ProviderKind;
use enrichd_sim::SimOptions;
use enrichd_sim::hubspot::{HubSpotLimits, HubSpotOptions};

use crate::support::{FAST_LIMITS, Harness, HarnessBuilder, HubSpotSpec};

const WORKSPACE: &str = r#"
providers = ["apollo", "hunter"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "linkedin_url"]
"#;

async fn harness(size: usize, mapping: Option<&str>) -> Harness {
    HarnessBuilder::new(size)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .provider_with(
            "hunter",
            ProviderKind::Hunter,
            SimOptions::defaults(ProviderKind::Hunter).unlimited(),
            FAST_LIMITS,
        )
        .workspace(WORKSPACE)
        .hubspot(HubSpotSpec {
            opts: HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited()),
            email_share: 0.0,
            crm_extra: String::new(),
            mapping: mapping.map(String::from),
        })
        .start()
        .await
}

/// Everything a preview must leave untouched.
#[derive(Debug, PartialEq)]
struct Footprint {
    hs_writes: u64,
    hs_batch_updates: u64,
    hs_property_creates: u64,
    provider_requests: u64,
    ledger: usize,
    spend: usize,
    totals: enrichd::store::Totals,
    statuses: usize,
    written: usize,
    watermark: Option<i64>,
}

async fn footprint(h: &Harness, ids: &[LeadId]) -> Footprint {
    let s = h.hs().stats();
    Footprint {
        hs_writes: s.records_updated,
        hs_batch_updates: s.count("POST /crm/v3/objects/contacts/batch/update"),
        hs_property_creates: s.count("POST /crm/v3/properties/contacts"),
        provider_requests: h.total_requests(),
        ledger: h.store.ledger(&h.ws.id).await.unwrap().len(),
        spend: h.store.spend(&h.ws.id).await.unwrap().len(),
        totals: h.store.totals(&h.ws.id).await.unwrap(),
        statuses: h.store.statuses(&h.ws.id).await.unwrap().len(),
        written: h
            .store
            .written(&h.ws.id, ids)
            .await
            .unwrap()
            .values()
            .map(|m| m.len())
            .sum(),
        watermark: h
            .store
            .sync_state(&h.ws.id, "hubspot", "contacts")
            .await
            .unwrap()
            .watermark,
    }
}

async fn enrichd(h: &Harness, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config", h.config_path.to_str().unwrap()];
    all.extend_from_slice(args);
    tokio::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(&all)
        .envs(&h.secrets)
        .output()
        .await
        .expect("run enrichd")
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "enrichd failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(2000)
                .collect::<String>()
        )
    })
}

/// lead → field → proposed value, for the writes of a JSON preview.
fn proposed_writes(v: &serde_json::Value) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for lead in v["leads"].as_array().expect("leads") {
        for f in lead["fields"].as_array().expect("fields") {
            if f["action"] == "write" {
                out.entry(lead["lead_id"].as_str().unwrap().to_string())
                    .or_default()
                    .insert(
                        f["field"].as_str().unwrap().to_string(),
                        f["proposed"].as_str().unwrap().to_string(),
                    );
            }
        }
    }
    out
}

fn all_ids(h: &Harness) -> Vec<LeadId> {
    h.hs().contact_ids().into_iter().map(LeadId).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preview_writes_nothing_calls_nobody_and_shows_exactly_what_the_sync_writes() {
    let h = harness(300, None).await;
    h.connect_hubspot().await;
    let hub = h.hub();
    // Pull and enrich, but write nothing back yet.
    let r = hub
        .sync(
            Some(&h.engine),
            SyncOptions {
                full: false,
                enrich: true,
                write: false,
            },
        )
        .await
        .expect("sync");
    assert_eq!(r.pull.contacts, 300);
    let ids = all_ids(&h);
    let before = footprint(&h, &ids).await;
    assert!(before.totals.values > 100, "{before:?}");
    assert!(before.ledger > 100);
    assert_eq!(before.hs_writes, 0);

    let table = enrichd(&h, &["preview", "--estimate"]).await;
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(text.contains("Nothing is written"), "{text}");
    assert!(text.contains("enrichment_work_email_source"), "{text}");

    let stored = json_of(&enrichd(&h, &["preview", "--format", "json", "--estimate"]).await);
    let csv = enrichd(&h, &["preview", "--format", "csv"]).await;
    assert!(csv.status.success());
    let csv_rows = String::from_utf8_lossy(&csv.stdout).lines().count();
    let live = json_of(&enrichd(&h, &["preview", "--format", "json", "--live"]).await);

    // Zero writes, zero provider calls, zero ledger or result rows.
    let after = footprint(&h, &ids).await;
    assert_eq!(before, after, "a preview changed something");
    // The live preview only read: batch reads, no write of any kind.
    let s = h.hs().stats();
    assert!(
        s.count("POST /crm/v3/objects/contacts/batch/read") >= 3,
        "{:?}",
        s.by_endpoint
    );

    let summary = &stored["summary"];
    assert_eq!(summary["leads"], 300);
    assert_eq!(stored["records"], "stored");
    assert_eq!(live["records"], "live");
    assert_eq!(summary["credits_to_write"], 0);
    let emails = h
        .store
        .load_leads(&h.ws.id, &ids)
        .await
        .unwrap()
        .values()
        .filter(|l| {
            l.values
                .iter()
                .any(|v| v.channel == enrichd::core::channel::Channel::WorkEmail)
        })
        .count() as u64;
    assert_eq!(
        summary["writes_per_field"]["enrichment_work_email"], emails,
        "{summary}"
    );
    assert_eq!(
        summary["writes_per_field"]["enrichment_work_email_source"], emails,
        "a value never without its Source"
    );
    // One CSV row per lead and mapped field, plus the header.
    let fields = hub.settings.mapping.fields().len();
    assert_eq!(csv_rows, 300 * fields + 1);
    // The estimate covers the leads still missing a channel.
    let est = &summary["estimate"];
    assert!(est["leads_missing"].as_u64().unwrap() > 0, "{est}");
    assert!(
        est["credits_max"].as_i64().unwrap() >= est["credits_expected"].as_f64().unwrap() as i64
    );

    // Stored and live previews agree (nothing changed in HubSpot meanwhile).
    let proposed = proposed_writes(&stored);
    let mut live_p = proposed_writes(&live);
    for w in live_p.values_mut() {
        w.remove("enrichment_enriched_at");
    }
    let mut stored_p = proposed.clone();
    for w in stored_p.values_mut() {
        w.remove("enrichment_enriched_at");
    }
    assert_eq!(stored_p, live_p);

    // Now write: HubSpot receives exactly what the preview proposed.
    let r = hub
        .sync(
            Some(&h.engine),
            SyncOptions {
                full: true,
                enrich: false,
                write: true,
            },
        )
        .await
        .expect("sync with write-back");
    assert_eq!(r.write.records_written as usize, proposed.len(), "{r:?}");
    for (id, fields) in &proposed {
        let c = h.hs().contact(id).expect("contact");
        for (field, value) in fields {
            let got = c.get(field).unwrap_or_default();
            if field == "enrichment_enriched_at" {
                assert!(!got.is_empty(), "{id}: {field}");
            } else {
                assert_eq!(got, value, "{id}: {field}");
            }
        }
    }
    assert_eq!(
        h.hs().stats().records_updated,
        proposed.len() as u64,
        "no contact beyond the previewed ones was written"
    );
    // And once written, the preview has nothing left to propose.
    let again = json_of(&enrichd(&h, &["preview", "--format", "json", "--live"]).await);
    assert_eq!(again["summary"]["writes"], 0, "{}", again["summary"]);
}

const WITHOUT_LINKEDIN: &str = r#"
crm = "hubspot"
object = "contacts"
[channels.work_email]
field = "enrichment_work_email"
source_field = "enrichment_work_email_source"
[status]
field = "enrichment_status"
"#;

const WITH_LINKEDIN: &str = r#"
crm = "hubspot"
object = "contacts"
[channels.work_email]
field = "enrichment_work_email"
source_field = "enrichment_work_email_source"
[channels.linkedin_url]
field = "enrichment_linkedin_url"
source_field = "enrichment_linkedin_url_source"
[status]
field = "enrichment_status"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn adding_a_field_to_the_mapping_previews_exactly_the_new_writes() {
    let h = harness(200, Some(WITHOUT_LINKEDIN)).await;
    h.connect_hubspot().await;
    let hub = h.hub();
    enrichd::crm::hubspot::schema::ensure(&hub.client, &hub.settings.mapping, true)
        .await
        .expect("schema");
    hub.sync(
        Some(&h.engine),
        SyncOptions {
            full: false,
            enrich: true,
            write: true,
        },
    )
    .await
    .expect("sync");
    let ids = all_ids(&h);
    // Everything the first mapping calls for is written.
    let now = json_of(&enrichd(&h, &["preview", "--format", "json"]).await);
    assert_eq!(now["summary"]["writes"], 0, "{}", now["summary"]);

    let edited = h.config_path.with_file_name("edited.toml");
    std::fs::write(&edited, WITH_LINKEDIN).unwrap();
    let before = footprint(&h, &ids).await;
    let v = json_of(
        &enrichd(
            &h,
            &[
                "preview",
                "--format",
                "json",
                "--mapping",
                edited.to_str().unwrap(),
                "--changes-only",
            ],
        )
        .await,
    );
    assert_eq!(before, footprint(&h, &ids).await);
    let linkedin: BTreeMap<String, String> = h
        .store
        .load_leads(&h.ws.id, &ids)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(id, l)| {
            l.values
                .into_iter()
                .find(|v| v.channel == enrichd::core::channel::Channel::LinkedinUrl)
                .map(|v| (id.to_string(), v.value))
        })
        .collect();
    assert!(linkedin.len() > 20, "{}", linkedin.len());
    let proposed = proposed_writes(&v);
    let expected: BTreeMap<String, BTreeMap<String, String>> = linkedin
        .iter()
        .map(|(id, url)| {
            (
                id.clone(),
                BTreeMap::from([
                    ("enrichment_linkedin_url".to_string(), url.clone()),
                    (
                        "enrichment_linkedin_url_source".to_string(),
                        "apollo".to_string(),
                    ),
                ]),
            )
        })
        .collect();
    assert_eq!(proposed, expected, "exactly the new writes");
    assert_eq!(v["leads"].as_array().unwrap().len(), linkedin.len());
    assert_eq!(v["summary"]["leads"], 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_runs_of_sync_enrich_and_connect_change_nothing() {
    let h = harness(150, None).await;
    h.connect_hubspot().await;
    let ids = all_ids(&h);
    let before = footprint(&h, &ids).await;
    let grants = h.hs().stats().token_grants.clone();

    // The sync's dry run reads the contacts and previews, storing nothing.
    let v = json_of(
        &enrichd(
            &h,
            &["sync", "--once", "--dry-run", "--preview-format", "json"],
        )
        .await,
    );
    assert_eq!(v["summary"]["leads"], 150, "{}", v["summary"]);
    assert_eq!(v["records"], "live");
    let est = &v["summary"]["estimate"];
    assert_eq!(est["leads_missing"], 150, "{est}");
    assert!(est["calls"]["apollo"].as_f64().unwrap() > 100.0, "{est}");
    assert!(
        h.hs().stats().count("POST /crm/v3/objects/contacts/search")
            + h.hs().stats().count("GET /crm/v3/objects/contacts")
            > 0
    );
    assert_eq!(
        before,
        footprint(&h, &ids).await,
        "sync --dry-run changed something"
    );
    let stored = h.store.lead_page(&h.ws.id, None, 10).await.unwrap();
    assert!(stored.is_empty(), "no lead stored by a dry run");

    // enrich --dry-run over a file: the estimate, nothing stored or called.
    let file = h.config_path.with_file_name("leads.jsonl");
    let mut lines = String::new();
    for i in 0..20 {
        let l = h.lead(i);
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), serde_json::Value::String(l.id.to_string()));
        obj.extend(l.fields.clone());
        lines.push_str(&serde_json::Value::Object(obj).to_string());
        lines.push('\n');
    }
    std::fs::write(&file, lines).unwrap();
    let v = json_of(
        &enrichd(
            &h,
            &[
                "enrich",
                file.to_str().unwrap(),
                "--dry-run",
                "--format",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(v["summary"]["leads"], 20, "{}", v["summary"]);
    assert_eq!(v["summary"]["estimate"]["leads_missing"], 20);
    assert_eq!(
        before,
        footprint(&h, &ids).await,
        "enrich --dry-run changed something"
    );

    // connect --dry-run: no browser, no token grant, nothing stored.
    let out = enrichd(&h, &["connect", "hubspot", "--dry-run"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Dry run"), "{text}");
    assert!(text.contains("enrichment_work_email"), "{text}");
    assert_eq!(h.hs().stats().token_grants, grants);
    assert_eq!(before, footprint(&h, &ids).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_dry_run_lists_the_pending_migrations_and_applies_none() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/fresh.db", dir.path().display());
    let store = enrichd::store::open(&url).await.unwrap();
    let pending = store.pending_migrations().await.unwrap();
    let shipped = std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite"),
    )
    .unwrap()
    .count();
    assert!(shipped >= 3);
    assert_eq!(pending.len(), shipped, "{pending:?}");
    assert!(pending[0].starts_with("1 "), "{pending:?}");
    // Listing them applied nothing.
    assert_eq!(store.pending_migrations().await.unwrap(), pending);
    store.migrate().await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    for db in [Some(crate::db::sqlite().await), crate::db::pg().await]
        .into_iter()
        .flatten()
    {
        assert!(
            db.store.pending_migrations().await.unwrap().is_empty(),
            "{}",
            db.backend
        );
    }
}

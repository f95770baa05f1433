//! `enrichd check` against the live CRM schema, through the real binary and
//! the HubSpot simulator: every problem of a mapping is reported at once
//! (file, key, field, closest names), the command fails on any, passes on a
//! correct mapping, and never writes to HubSpot.

use std::process::Output;

use enrichd_sim::hubspot::HubSpotOptions;
use enrichd_sim::{ProviderKind, SimOptions};

use crate::support::{FAST_LIMITS, Harness, HarnessBuilder, HubSpotSpec};

const WORKSPACE: &str = r#"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "linkedin_url"]
"#;

/// A typo of the portal's `linkedin_url` property, and HubSpot's read-only
/// `createdate` as the enriched-at field; the rest are enrichd's own
/// properties, which the next sync would create.
const TYPO_AND_READ_ONLY: &str = r#"
crm = "hubspot"
object = "contacts"
[channels.work_email]
field = "enrichment_work_email"
source_field = "enrichment_work_email_source"
[channels.linkedin_url]
field = "linkedin_ulr"
source_field = "enrichment_linkedin_url_source"
[status]
field = "enrichment_status"
[enriched_at]
field = "createdate"
"#;

async fn harness(mapping: Option<&str>) -> Harness {
    HarnessBuilder::new(5)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .workspace(WORKSPACE)
        .hubspot(HubSpotSpec {
            opts: HubSpotOptions::defaults(),
            email_share: 0.0,
            crm_extra: String::new(),
            mapping: mapping.map(str::to_string),
        })
        .start()
        .await
}

/// Runs `enrichd check <args>` with the harness's config and secrets.
async fn check(h: &Harness, args: &[&str]) -> (Output, String) {
    let config = h.config_path.to_str().expect("utf-8 temp path");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(["--config", config, "check"])
        .args(args)
        .envs(&h.secrets)
        .output()
        .await
        .expect("run enrichd check");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// HubSpot saw reads only: no property or group created, no contact written.
fn assert_no_write(h: &Harness) {
    let stats = h.hs().stats();
    let writes: Vec<&String> = stats
        .by_endpoint
        .keys()
        .filter(|e| !e.starts_with("GET "))
        .collect();
    assert!(writes.is_empty(), "check wrote to HubSpot: {writes:?}");
    assert_eq!(stats.records_updated, 0);
    assert_eq!(stats.properties_written, 0);
    assert!(h.hs().property("enrichment_work_email").is_none());
    assert!(!h.hs().property_group_exists("enrichd"));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_a_typo_and_a_read_only_property_and_fails_without_writing() {
    let h = harness(Some(TYPO_AND_READ_ONLY)).await;
    h.connect_hubspot().await;
    h.hs().reset_stats();

    let (out, text) = check(&h, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{text}");
    let file = h
        .config_path
        .parent()
        .expect("config dir")
        .join("mappings/hubspot.toml");
    assert!(text.contains(&file.display().to_string()), "{text}");
    // Both keys, each with what is wrong.
    assert!(
        text.contains("key `channels.linkedin_url.field` = \"linkedin_ulr\""),
        "{text}"
    );
    assert!(text.contains("did you mean `linkedin_url`?"), "{text}");
    assert!(text.contains("closest existing: `linkedin_url`"), "{text}");
    assert!(
        text.contains("key `enriched_at.field` = \"createdate\""),
        "{text}"
    );
    assert!(text.contains("read-only"), "{text}");
    // Where the schema came from, and what the next sync would create.
    assert!(text.contains("GET /crm/v3/properties/contacts"), "{text}");
    assert!(text.contains("enrichment_linkedin_url_source"), "{text}");
    assert!(text.contains("2 mapping problems"), "{text}");

    let stats = h.hs().stats();
    assert_eq!(stats.count("GET /crm/v3/properties/contacts"), 1);
    assert_no_write(&h);

    // The same as JSON, for scripts: every problem with its key.
    let (out, text) = check(&h, &["--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["ok"], false);
    let ws = &v["workspaces"][0];
    assert_eq!(ws["state"], "checked");
    let keys: Vec<&str> = ws["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["key"].as_str())
        .collect();
    assert_eq!(keys, ["channels.linkedin_url.field", "enriched_at.field"]);
    assert_eq!(ws["problems"][0]["problem"]["kind"], "missing");
    assert_eq!(ws["problems"][0]["closest"][0], "linkedin_url");
    assert_eq!(ws["problems"][1]["problem"]["kind"], "read_only");
    assert_no_write(&h);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_a_correct_mapping_and_lists_what_sync_will_create() {
    // The shipped mapping on a portal without enrichd's properties yet:
    // create_properties is on, so they are for the next sync to create.
    let h = harness(None).await;
    h.connect_hubspot().await;
    h.hs().reset_stats();

    let (out, text) = check(&h, &["--offline"]).await;
    assert!(out.status.success(), "{text}");
    assert!(text.contains("--offline"), "{text}");
    assert_eq!(h.hs().stats().count("GET /crm/v3/properties/contacts"), 0);

    let (out, text) = check(&h, &[]).await;
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok: no problem"), "{text}");
    assert!(
        text.contains("the next sync creates 10 properties"),
        "{text}"
    );
    assert!(text.contains("enrichment_work_email_source"), "{text}");

    let (out, text) = check(&h, &["--format", "json"]).await;
    assert!(out.status.success(), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["ok"], true);
    assert_eq!(v["workspaces"][0]["problems"], serde_json::json!([]));
    assert_eq!(v["workspaces"][0]["checked"], 10);
    assert_no_write(&h);

    // Once sync created them, nothing is left to create.
    h.hub()
        .ensure_schema()
        .await
        .expect("create the properties");
    let (out, text) = check(&h, &[]).await;
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("the next sync creates"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_without_a_connection_prints_a_note_and_does_not_fail() {
    let h = harness(Some(TYPO_AND_READ_ONLY)).await;
    let (out, text) = check(&h, &[]).await;
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("not connected: run `enrichd connect hubspot --workspace t`"),
        "{text}"
    );
    assert_eq!(h.hs().stats().api_calls(), 0);
}

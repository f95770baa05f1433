//! The admin API (`/v1`) of `enrichd run` for a Salesforce workspace, the
//! daemon as a separate process against the Salesforce simulator: enrich
//! one Lead now (its value and Source written through Collections, the
//! owner never changed), a converted Lead refused with the reason and
//! nothing written, record Ids checked (400 for what is not a Lead Id of
//! the workspace), a bulk job by filter enriching exactly the Leads its
//! SOQL selects with progress to the total, a bulk job by ids reporting a
//! converted Lead per record, a bulk job by audience over the stored Leads,
//! filters SOQL cannot express refused with a 400 saying what and where (no
//! job queued), a preview in the mapping's Salesforce fields that changes
//! nothing, and an org whose daily allocation is used up failing the
//! attempt with what happens next and a retry no earlier than the pause.

use std::collections::BTreeSet;
use std::time::Duration;

use enrichd::core::channel::Channel;
use enrichd::core::lead::WorkspaceId;
use enrichd::crm::salesforce::sync::SyncOptions;
use enrichd_sim::salesforce::{SalesforceOptions, SeedSpec};
use enrichd_sim::{ProviderKind, SimOptions};
use serde_json::{Value, json};

use crate::support::{
    Daemon, FAST_LIMITS, Harness, HarnessBuilder, SalesforceSpec, eventually, free_port,
};

const WORKSPACE: &str = r#"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]
"#;

/// Stores the Leads without enriching or writing them: the daemon's first
/// pass then has nothing new, and only the jobs write.
const STORE_ONLY: SyncOptions = SyncOptions {
    full: true,
    enrich: false,
    write: false,
};

struct Setup {
    h: Harness,
    d: Daemon,
    port: u16,
    key: String,
}

/// A harness with 40 Leads (some converted), connected and stored, the
/// daemon up with its first sync pass over, and an API key of `t`.
async fn setup() -> Setup {
    let port = free_port();
    let mut spec = SalesforceSpec::new(SalesforceOptions::defaults());
    spec.seed = SeedSpec::new(40, 0);
    spec.seed.converted_share = 0.1;
    spec.crm_extra = "sync_interval_secs = 3600\n".into();
    let h = HarnessBuilder::new(60)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .workspace(WORKSPACE)
        .server(&format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nshutdown_grace_secs = 5"
        ))
        .salesforce(spec)
        .start()
        .await;
    h.connect_salesforce().await;
    h.salesforce_sync()
        .sync(None, STORE_ONLY)
        .await
        .expect("store the Leads");
    let key = create_key(&h);
    let d = Daemon::start(&h);
    d.wait_up(port).await;
    let passed = eventually(Duration::from_secs(30), || {
        d.logs().contains("sync pass done")
    })
    .await;
    assert!(passed, "no sync pass:\n{}", d.logs());
    Setup { h, d, port, key }
}

/// `enrichd apikey create --workspace t --format json` → the key.
fn create_key(h: &Harness) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .arg("--config")
        .arg(&h.config_path)
        .args(["apikey", "create", "--workspace", "t", "--format", "json"])
        .envs(&h.secrets)
        .output()
        .expect("run enrichd apikey");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("apikey JSON");
    v["key"].as_str().expect("key").to_string()
}

impl Setup {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut req = match method {
            "GET" => http.get(url),
            _ => http.post(url),
        }
        .bearer_auth(&self.key)
        .timeout(Duration::from_secs(70));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.expect("admin API answers");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    /// Polls the job until it is finished (done or dead).
    async fn finished_job(&self, id: i64, within: Duration) -> Value {
        let end = tokio::time::Instant::now() + within;
        loop {
            let (status, job) = self
                .call("GET", &format!("/v1/workspaces/t/jobs/{id}"), None)
                .await;
            assert_eq!(status, 200, "{job}");
            let state = job["state"].as_str().unwrap_or_default().to_string();
            if state == "done" || state == "dead" || tokio::time::Instant::now() > end {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn job_count(&self) -> usize {
        self.h
            .store
            .jobs(&WorkspaceId("t".into()), None, 100)
            .await
            .expect("jobs")
            .len()
    }

    /// Lead Ids (not converted) of the simulator.
    fn open_leads(&self) -> Vec<String> {
        let converted: BTreeSet<String> = self.h.sf().converted_lead_ids().into_iter().collect();
        self.h
            .sf()
            .lead_ids()
            .into_iter()
            .filter(|id| !converted.contains(id))
            .collect()
    }

    /// A converted Lead's Id (one is converted here when the seed has none).
    fn converted_lead(&self) -> String {
        if let Some(id) = self.h.sf().converted_lead_ids().first() {
            return id.clone();
        }
        let id = self.open_leads().pop().expect("a Lead");
        self.h.sf().convert_lead(&id).expect("convert");
        id
    }
}

fn text(h: &Harness, id: &str, field: &str) -> Option<String> {
    h.sf()
        .field(id, field)
        .and_then(|v| v.as_str().map(String::from))
}

/// Writes to `id` by enrichd (client=enrichd) in the simulator's history.
fn enrichd_writes(h: &Harness, id: &str) -> Vec<enrichd_sim::salesforce::WriteRecord> {
    h.sf()
        .history(id)
        .into_iter()
        .filter(|w| w.client.as_deref() == Some("enrichd"))
        .collect()
}

/// The population index of a Lead (Leads are people 0..n, matched by name
/// and company).
fn person_of(h: &Harness, id: &str) -> Option<usize> {
    let first = text(h, id, "FirstName")?;
    let last = text(h, id, "LastName")?;
    let company = text(h, id, "Company")?;
    (0..40).find(|&i| {
        let p = h.population.person(i);
        p.first_name == first && p.last_name == last && p.company_name == company
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn enrich_now_writes_a_lead_with_its_source_refuses_a_converted_lead_and_bad_ids() {
    let s = setup().await;
    let h = &s.h;

    // A Lead without an Email whose work email Apollo knows.
    let lead = s
        .open_leads()
        .into_iter()
        .find(|id| {
            text(h, id, "Email").is_none()
                && person_of(h, id)
                    .is_some_and(|i| h.usable_from("apollo", i, Channel::WorkEmail).is_some())
        })
        .expect("a Lead Apollo finds");
    let owner = h.sf().field(&lead, "OwnerId");
    assert!(owner.is_some());
    let (status, job) = s
        .post(
            &format!("/v1/workspaces/t/leads/{lead}/enrich?wait_secs=30"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{job}\n{}", s.d.logs());
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["result"]["found"], true, "{job}");
    assert_eq!(job["result"]["filled"][0]["channel"], "work_email", "{job}");
    let value = job["result"]["filled"][0]["value"]
        .as_str()
        .expect("value")
        .to_string();
    assert_eq!(
        text(h, &lead, "Enrichment_Work_Email__c").as_deref(),
        Some(value.as_str())
    );
    assert_eq!(
        text(h, &lead, "Work_Email_Source__c").as_deref(),
        Some("apollo")
    );
    assert_eq!(
        text(h, &lead, "Enrichment_Status__c").as_deref(),
        Some("Full")
    );
    assert_eq!(job["result"]["write_back"]["failed"], Value::Null, "{job}");
    // Written by enrichd through Collections; the owner never changed.
    let writes = enrichd_writes(h, &lead);
    assert!(!writes.is_empty());
    for w in &writes {
        assert_eq!(w.via, "collections", "{w:?}");
        assert!(w.owner_reassigned.is_none(), "{w:?}");
        assert!(w.changed.iter().all(|c| c.field != "OwnerId"), "{w:?}");
    }
    assert_eq!(h.sf().field(&lead, "OwnerId"), owner);

    // A converted Lead: done with the reason, nothing written, no credits.
    let converted = s.converted_lead();
    let (status, job) = s
        .post(
            &format!("/v1/workspaces/t/leads/{converted}/enrich?wait_secs=30"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{job}\n{}", s.d.logs());
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["result"]["state"], "failed", "{job}");
    let reason = job["result"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("converted") && reason.contains("never written"),
        "{job}"
    );
    assert_eq!(job["result"]["failures"][0]["id"], converted.as_str());
    assert_eq!(job["result"]["credits"], 0);
    assert!(enrichd_writes(h, &converted).is_empty());

    // A Lead deleted in Salesforce: done, and the result says so.
    let deleted = s
        .open_leads()
        .into_iter()
        .find(|id| *id != lead)
        .expect("another Lead");
    h.sf().delete_record(&deleted).expect("delete");
    let (status, job) = s
        .post(
            &format!("/v1/workspaces/t/leads/{deleted}/enrich?wait_secs=30"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["result"]["found"], false, "{job}");
    assert!(
        job["result"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Salesforce has no Lead"),
        "{job}"
    );
    assert!(enrichd_writes(h, &deleted).is_empty());

    // Ids that are not a Lead Id of the workspace: 400, what and what to
    // give instead, and no job queued.
    let jobs = s.job_count().await;
    for (bad, says) in [
        ("51", "not a Salesforce record Id"),
        ("001xx000003DGb2AAG", "not a Salesforce record Id"),
        ("00Q-x0000001abcEAA", "not a Salesforce record Id"),
        ("00Qxx0000001abcEA", "not a Salesforce record Id"),
        ("003xx000004TmiQAAS", "does not sync Contact records"),
    ] {
        let (status, body) = s
            .post(&format!("/v1/workspaces/t/leads/{bad}/enrich"), json!({}))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        let e = body["error"].as_str().unwrap_or_default();
        assert!(e.contains(says), "{bad}: {e}");
        assert!(e.contains("Lead (00Q…)"), "{bad}: {e}");
    }
    let (status, body) = s
        .post(
            "/v1/workspaces/t/bulk",
            json!({"ids": [lead.as_str(), "51"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("`ids[1]`: `51` is not a Salesforce record Id"),
        "{body}"
    );
    assert_eq!(s.job_count().await, jobs);
    // A 15-character Lead Id is one.
    let short = &lead[..15];
    let (status, body) = s
        .post(&format!("/v1/workspaces/t/leads/{short}/enrich"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_by_filter_enriches_exactly_the_matching_leads_and_inexpressible_filters_are_400() {
    let s = setup().await;
    let h = &s.h;

    // What SOQL cannot express: 400 with what and where, nothing queued.
    for (filter, says) in [
        (
            json!([{"property": "Company", "operator": "CONTAINS_TOKEN", "value": "acme"}]),
            "`filter[0]`.operator `CONTAINS_TOKEN` cannot be expressed in SOQL",
        ),
        (
            json!([{"property": "LeadSource", "operator": "EQ", "value": "Web"},
                   {"property": "lifecyclestage", "operator": "EQ", "value": "lead"}]),
            "`filter[1]`.property `lifecyclestage` is not a field of Lead",
        ),
        (
            json!([{"property": "Account.Name", "operator": "EQ", "value": "Acme"}]),
            "parent fields such as Account.Name cannot be filtered on",
        ),
        (
            json!([{"property": "IsConverted", "operator": "GT", "value": "false"}]),
            "`filter[0]`: Lead.IsConverted is a checkbox",
        ),
    ] {
        let (status, body) = s
            .post("/v1/workspaces/t/bulk", json!({ "filter": filter }))
            .await;
        assert_eq!(status, 400, "{filter}: {body}");
        let e = body["error"].as_str().unwrap_or_default();
        assert!(e.contains(says), "{filter}: {e}");
        assert!(e.starts_with("POST /v1/workspaces/t/bulk: "), "{e}");
    }
    assert_eq!(s.job_count().await, 0);

    // LeadSource = 'Web' (with a quote-bearing IN that matches nothing
    // else): exactly the open Leads from the web.
    let expected: BTreeSet<String> = s
        .open_leads()
        .into_iter()
        .filter(|id| text(h, id, "LeadSource").as_deref() == Some("Web"))
        .collect();
    assert!(!expected.is_empty());
    let (status, queued) = s
        .post(
            "/v1/workspaces/t/bulk",
            json!({"filter": [
                {"property": "leadsource", "operator": "IN", "values": ["Web", "O'Brien \\ Co"]},
                {"property": "LastName", "operator": "HAS_PROPERTY"},
            ]}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["job_id"].as_i64().expect("job id");
    let job = s.finished_job(id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "done", "{job}\n{}", s.d.logs());
    let n = expected.len() as i64;
    assert_eq!(job["progress"]["total"], n, "{job}");
    assert_eq!(job["progress"]["done"], n, "{job}");
    assert_eq!(job["result"]["leads"], n, "{job}");
    assert_eq!(job["result"]["missing"], 0, "{job}");
    assert_eq!(job["result"]["write_failures"], 0, "{job}");
    let written: BTreeSet<String> = h
        .sf()
        .lead_ids()
        .into_iter()
        .filter(|id| !enrichd_writes(h, id).is_empty())
        .collect();
    assert_eq!(written, expected);
    for id in &written {
        assert!(text(h, id, "Enrichment_Status__c").is_some(), "{id}");
        for w in enrichd_writes(h, id) {
            assert!(w.owner_reassigned.is_none(), "{w:?}");
        }
    }

    // By ids, one of them converted: reported per record, never written.
    let converted = s.converted_lead();
    let other = s
        .open_leads()
        .into_iter()
        .find(|id| !expected.contains(id))
        .expect("a Lead not from the web");
    let (status, queued) = s
        .post(
            "/v1/workspaces/t/bulk",
            json!({"ids": [converted.as_str(), other.as_str()]}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["job_id"].as_i64().expect("job id");
    let job = s.finished_job(id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "done", "{job}\n{}", s.d.logs());
    assert_eq!(job["progress"]["done"], 2, "{job}");
    assert_eq!(job["result"]["converted"], 1, "{job}");
    assert_eq!(job["result"]["enriched"], 1, "{job}");
    assert_eq!(job["result"]["failures"][0]["id"], converted.as_str());
    assert!(enrichd_writes(h, &converted).is_empty());
    assert!(!enrichd_writes(h, &other).is_empty());

    // By audience: every stored (open) Lead, each read again and written.
    let open = s.open_leads();
    let (status, queued) = s
        .post("/v1/workspaces/t/bulk", json!({"audience": "everyone"}))
        .await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["job_id"].as_i64().expect("job id");
    let job = s.finished_job(id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "done", "{job}\n{}", s.d.logs());
    assert_eq!(job["result"]["leads"], open.len() as i64, "{job}");
    assert_eq!(job["result"]["missing"], 0, "{job}");
    assert_eq!(job["progress"]["done"], open.len() as i64, "{job}");
    for id in &open {
        assert!(!enrichd_writes(h, id).is_empty(), "{id}");
    }
    assert!(enrichd_writes(h, &converted).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_org_fails_the_job_with_what_happens_and_retries_after_the_pause() {
    let s = setup().await;
    let h = &s.h;
    let lead = s.open_leads().pop().expect("a Lead");
    // The org's daily allocation is used up: the next call is refused.
    h.sf().set_daily_limit(h.sf().api_usage());
    let (status, queued) = s
        .post(&format!("/v1/workspaces/t/leads/{lead}/enrich"), json!({}))
        .await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["job_id"].as_i64().expect("job id");
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (status, job) = s
            .call("GET", &format!("/v1/workspaces/t/jobs/{id}"), None)
            .await;
        assert_eq!(status, 200, "{job}");
        if job["attempts"].as_i64().unwrap_or(0) >= 1 && job["last_error"].is_string() {
            break job;
        }
        assert!(tokio::time::Instant::now() < end, "{job}\n{}", s.d.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["state"], "queued", "{job}");
    let error = job["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("reading Lead records from Salesforce"),
        "{error}"
    );
    assert!(error.contains("paused until"), "{error}");
    assert!(error.contains("The job is retried after"), "{error}");
    // Not before the pause ends (at least a minute away).
    let retry = job["retry_at"].as_i64().expect("retry_at");
    assert!(
        retry >= chrono::Utc::now().timestamp_millis() + 50_000,
        "{job}"
    );
    assert!(enrichd_writes(h, &lead).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_preview_shows_salesforce_fields_and_changes_nothing() {
    let s = setup().await;
    let st = s.h.sf().stats();
    let ledger = s.h.store.ledger(&s.h.ws.id).await.expect("ledger");
    let (status, p) = s
        .post("/v1/workspaces/t/preview", json!({"limit": 5}))
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["records"], "stored", "{p}");
    assert_eq!(p["crm"], "salesforce", "{p}");
    assert_eq!(p["object"], "Lead", "{p}");
    let leads = p["leads"].as_array().expect("leads");
    assert_eq!(leads.len(), 5, "{p}");
    // Stored but not yet enriched or written: each would get its status,
    // in the Salesforce field the mapping names.
    let fields: BTreeSet<String> = leads
        .iter()
        .flat_map(|l| l["fields"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["field"].as_str().map(str::to_string))
        .collect();
    assert!(fields.contains("Enrichment_Status__c"), "{fields:?}");
    // Reads only: nothing written to Salesforce, nothing charged.
    let after = s.h.sf().stats();
    assert_eq!(after.collection_calls, st.collection_calls);
    assert_eq!(after.bulk_jobs, st.bulk_jobs);
    assert_eq!(s.h.store.ledger(&s.h.ws.id).await.expect("ledger"), ledger);
    drop(s.d);
}

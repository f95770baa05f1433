//! The admin API of `enrichd run` (`/v1`), with the daemon as a separate
//! process against the simulators: keys made by `enrichd apikey`, enrich
//! one lead now (the value lands in the HubSpot simulator), bulk jobs by
//! ids and by audience with progress and a Slack-compatible notification,
//! job status, a preview that changes nothing, workspace isolation (404 for
//! another workspace's routes and jobs, 401 without a valid key), and
//! SIGTERM releasing a job in hand. The key store runs on both backends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use enrichd::core::channel::Channel;
use enrichd::core::lead::{LeadId, WorkspaceId};
use enrichd::crm::hubspot::sync::SyncOptions;
use enrichd::store::jobs::JobState;
use enrichd::store::keys::{NewApiKey, hash_key};
use enrichd_sim::hubspot::{HubSpotLimits, HubSpotOptions};
use enrichd_sim::{ProviderKind, SimOptions};
use serde_json::{Value, json};

use crate::db::TestDb;
use crate::support::{
    Daemon, FAST_LIMITS, Harness, HarnessBuilder, HubSpotSpec, eventually, free_port,
};

// ---------------------------------------------------------------------------
// Helpers

/// An HTTP client for the daemon's `/v1` routes.
struct Api {
    port: u16,
    http: reqwest::Client,
}

impl Api {
    fn new(port: u16) -> Api {
        Api {
            port,
            http: reqwest::Client::new(),
        }
    }

    /// Status, JSON body (Null when not JSON) and the raw headers.
    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        }
        .timeout(Duration::from_secs(70));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.expect("admin API answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let (s, v, _) = self
            .call("GET", path, Some(&format!("Bearer {key}")), None)
            .await;
        (s, v)
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let (s, v, _) = self
            .call("POST", path, Some(&format!("Bearer {key}")), Some(body))
            .await;
        (s, v)
    }

    /// Polls the job until it is finished (done or dead).
    async fn finished_job(&self, ws: &str, id: i64, key: &str, within: Duration) -> Value {
        let end = tokio::time::Instant::now() + within;
        loop {
            let (status, job) = self
                .get(&format!("/v1/workspaces/{ws}/jobs/{id}"), key)
                .await;
            assert_eq!(status, 200, "{job}");
            let state = job["state"].as_str().unwrap_or_default().to_string();
            if state == "done" || state == "dead" || tokio::time::Instant::now() > end {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `enrichd <args>` on the harness's config: (success, stdout, stderr).
fn cli(h: &Harness, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .arg("--config")
        .arg(&h.config_path)
        .args(args)
        .envs(&h.secrets)
        .output()
        .expect("run enrichd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `enrichd apikey create --workspace <ws> --format json`: (key id, key).
fn create_key(h: &Harness, ws: &str) -> (String, String) {
    let (ok, out, err) = cli(
        h,
        &["apikey", "create", "--workspace", ws, "--format", "json"],
    );
    assert!(ok, "apikey create failed: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["workspace"], ws);
    (
        v["key_id"].as_str().expect("key id").to_string(),
        v["key"].as_str().expect("key").to_string(),
    )
}

/// A tiny receiver of notifications: the JSON bodies POSTed to the URL.
async fn notification_listener() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                sink.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, got)
}

fn notifications(got: &Arc<Mutex<Vec<Value>>>) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap_or("<no text>").to_string())
        .collect()
}

/// Waits until the daemon's first sync pass is over (nothing created in
/// the CRM after this is seen by a sync: the next pass is an hour away).
async fn first_sync_pass(d: &Daemon) {
    let done = eventually(Duration::from_secs(30), || {
        d.logs().contains("sync pass done")
    })
    .await;
    assert!(done, "no sync pass:\n{}", d.logs());
}

/// Creates contacts in the HubSpot simulator for the first `n` seniors
/// (from `from` on) Apollo has a usable work email for; their ids.
fn new_contacts(h: &Harness, from: usize, n: usize) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut i = from;
    while ids.len() < n {
        assert!(i < h.population.len(), "not enough people Apollo knows");
        let senior =
            ["c_suite", "vp", "director"].contains(&h.population.person(i).seniority.as_str());
        if senior && h.usable_from("apollo", i, Channel::WorkEmail).is_some() {
            let p = h.population.person(i).crm_fields();
            let props: Vec<(&str, &str)> = [
                "firstname",
                "lastname",
                "company",
                "jobtitle",
                "country",
                "seniority",
                "icp_score",
            ]
            .iter()
            .filter_map(|k| p.get(*k).and_then(|v| v.as_str()).map(|v| (*k, v)))
            .collect();
            let company = h
                .hs()
                .contact(&h.hs().contact_ids()[i])
                .and_then(|c| c.company_id.clone());
            ids.push(h.hs().create_contact(&props, company.as_deref()));
        }
        i += 1;
    }
    (ids, i)
}

// ---------------------------------------------------------------------------
// End to end with HubSpot

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_enriches_now_runs_bulk_jobs_by_ids_and_audience_and_notifies() {
    let started = std::time::Instant::now();
    let port = free_port();
    let (hook, got) = notification_listener().await;
    let size = 60;
    let h = HarnessBuilder::new(size)
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
        .workspace(&format!(
            r#"
providers = ["apollo", "hunter"]
budget = {{ credits = 10, period = "month" }}
notify_url = "{hook}"
[[workspaces.audiences]]
name = "seniors"
channels = ["work_email"]
filter = [{{ field = "seniority", in = ["c_suite", "vp", "director"] }}]
"#
        ))
        .server(&format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nshutdown_grace_secs = 5"
        ))
        .hubspot(HubSpotSpec {
            opts: HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited()),
            email_share: 0.0,
            crm_extra: "sync_interval_secs = 3600\n".into(),
            mapping: None,
        })
        .start()
        .await;
    h.connect_hubspot().await;
    // The seeded contacts are stored (not enriched): an audience selects
    // from stored leads. The daemon's first pass then has nothing new.
    h.hub()
        .sync(
            None,
            SyncOptions {
                full: true,
                enrich: false,
                write: false,
            },
        )
        .await
        .expect("store the contacts");
    let (_, key) = create_key(&h, "t");
    let mut d = Daemon::start(&h);
    d.wait_up(port).await;
    first_sync_pass(&d).await;
    let api = Api::new(port);

    // Enrich one lead now, waiting for it: the value is in HubSpot.
    let (one, next) = new_contacts(&h, 0, 1);
    let (status, job) = api
        .post(
            &format!("/v1/workspaces/t/leads/{}/enrich?wait_secs=30", one[0]),
            &key,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{job}\n{}", d.logs());
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["kind"], "enrich_lead");
    assert_eq!(job["result"]["found"], true, "{job}");
    assert_eq!(job["result"]["filled"][0]["channel"], "work_email", "{job}");
    let written = h
        .hs()
        .contact(&one[0])
        .and_then(|c| c.get("enrichment_work_email").map(String::from));
    assert!(written.is_some(), "not written back: {job}");
    assert_eq!(
        written.as_deref(),
        job["result"]["filled"][0]["value"].as_str()
    );

    // Without waiting: 202 and where to look.
    let (status, queued) = api
        .post(
            &format!("/v1/workspaces/t/leads/{}/enrich", one[0]),
            &key,
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let again = queued["job_id"].as_i64().expect("job id");
    assert_eq!(
        queued["status_url"],
        format!("/v1/workspaces/t/jobs/{again}")
    );
    let job = api
        .finished_job("t", again, &key, Duration::from_secs(20))
        .await;
    assert_eq!(job["state"], "done", "{job}");
    // Already enriched: nothing charged again.
    assert_eq!(job["result"]["credits"], 0, "{job}");

    // A contact HubSpot does not have: done, and the result says so.
    let (status, job) = api
        .post(
            "/v1/workspaces/t/leads/987654321/enrich?wait_secs=20",
            &key,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["result"]["found"], false, "{job}");
    assert!(
        job["result"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("HubSpot has no such contact"),
        "{job}"
    );

    // Bulk by ids: progress reaches the total, a notification arrives.
    let (ids, _) = new_contacts(&h, next, 5);
    let (status, accepted) = api
        .post("/v1/workspaces/t/bulk", &key, json!({ "ids": ids }))
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["kind"], "bulk");
    let bulk_ids = accepted["job_id"].as_i64().expect("job id");
    let job = api
        .finished_job("t", bulk_ids, &key, Duration::from_secs(30))
        .await;
    assert_eq!(job["state"], "done", "{job}\n{}", d.logs());
    assert_eq!(job["progress"], json!({"done": 5, "total": 5}), "{job}");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["last_error"], Value::Null);
    let r = &job["result"];
    assert_eq!(
        (r["leads"].as_i64(), r["enriched"].as_i64()),
        (Some(5), Some(5)),
        "{job}"
    );
    assert_eq!(r["queued"], 0, "{job}");
    assert!(r["credits"].as_i64().unwrap_or(0) >= 1, "{job}");
    assert!(
        ids.iter().all(|id| h
            .hs()
            .contact(id)
            .is_some_and(|c| c.get("enrichment_work_email").is_some())),
        "{job}"
    );
    let text = format!(
        "enrichd: bulk job {bulk_ids} in workspace t finished: 5 leads enriched, 0 queued for budget, {} credits",
        r["credits"]
    );
    let arrived = eventually(Duration::from_secs(10), || {
        notifications(&got).contains(&text)
    })
    .await;
    assert!(arrived, "{:?} (wanted {text})", notifications(&got));

    // Bulk by audience: the budget (10 credits, some spent) covers a few
    // members; the rest is queued, and the notification says so.
    let members = {
        let mut n = 0;
        let mut after: Option<LeadId> = None;
        loop {
            let page = h
                .store
                .lead_page(&h.ws.id, after.as_ref(), 500)
                .await
                .expect("leads");
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            n += page
                .iter()
                .filter(|l| {
                    !enrichd::core::audience::membership(l, &h.ws.audiences)
                        .audiences
                        .is_empty()
                })
                .count() as i64;
        }
        n
    };
    assert!(members > 5, "{members} seniors");
    let (status, accepted) = api
        .post(
            "/v1/workspaces/t/bulk",
            &key,
            json!({ "audience": "seniors" }),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let bulk_audience = accepted["job_id"].as_i64().expect("job id");
    let job = api
        .finished_job("t", bulk_audience, &key, Duration::from_secs(30))
        .await;
    assert_eq!(job["state"], "done", "{job}\n{}", d.logs());
    assert_eq!(
        job["progress"],
        json!({"done": members, "total": members}),
        "{job}"
    );
    let r = &job["result"];
    let (enriched, queued) = (
        r["enriched"].as_i64().unwrap_or(-1),
        r["queued"].as_i64().unwrap_or(-1),
    );
    assert_eq!(enriched + queued, members, "{job}");
    assert!(
        queued > 0,
        "the budget should not cover every senior: {job}"
    );
    let text = format!(
        "enrichd: bulk job {bulk_audience} in workspace t finished: {enriched} leads enriched, {queued} queued for budget, {} credits",
        r["credits"]
    );
    let arrived = eventually(Duration::from_secs(10), || {
        notifications(&got).contains(&text)
    })
    .await;
    assert!(arrived, "{:?} (wanted {text})", notifications(&got));

    // Bulk by CRM filter: HubSpot's search selects the contacts.
    let vps = h
        .hs()
        .contact_ids()
        .iter()
        .filter(|id| {
            h.hs()
                .contact(id)
                .is_some_and(|c| c.get("seniority") == Some("vp") && c.get("firstname").is_some())
        })
        .count() as i64;
    assert!(vps > 0);
    let searches = h.hs().stats().count("POST /crm/v3/objects/contacts/search");
    let (status, accepted) = api
        .post(
            "/v1/workspaces/t/bulk",
            &key,
            json!({"filter": [
                {"property": "seniority", "operator": "EQ", "value": "vp"},
                {"property": "firstname", "operator": "HAS_PROPERTY"},
            ]}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let bulk_filter = accepted["job_id"].as_i64().expect("job id");
    let job = api
        .finished_job("t", bulk_filter, &key, Duration::from_secs(30))
        .await;
    assert_eq!(job["state"], "done", "{job}\n{}", d.logs());
    assert_eq!(job["progress"], json!({"done": vps, "total": vps}), "{job}");
    let r = &job["result"];
    assert_eq!(
        r["enriched"].as_i64().unwrap_or(-1) + r["queued"].as_i64().unwrap_or(-1),
        vps,
        "{job}"
    );
    assert!(h.hs().stats().count("POST /crm/v3/objects/contacts/search") > searches);
    let arrived = eventually(Duration::from_secs(10), || {
        notifications(&got).iter().any(|t| {
            t.starts_with(&format!(
                "enrichd: bulk job {bulk_filter} in workspace t finished: "
            ))
        })
    })
    .await;
    assert!(arrived, "{:?}", notifications(&got));
    assert_eq!(notifications(&got).len(), 3, "{:?}", notifications(&got));

    // Bad requests are refused with what is wrong.
    for (body, says) in [
        (json!({}), "exactly one of `ids`, `audience` or `filter`"),
        (json!({"audience": "nobody"}), "unknown audience `nobody`"),
        (json!({"ids": ["12", "x"]}), "`ids[1]`"),
        (json!({"idz": ["1"]}), "unknown field `idz`"),
        (
            json!({"filter": [{"property": "country", "operator": "LIKE", "value": "x"}]}),
            "not a HubSpot search operator",
        ),
    ] {
        let (status, e) = api.post("/v1/workspaces/t/bulk", &key, body.clone()).await;
        assert_eq!(status, 400, "{body}: {e}");
        assert_eq!(e["code"], "bad_request");
        let msg = e["error"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{body}: {msg}");
        assert!(msg.contains("POST /v1/workspaces/t/bulk"), "{msg}");
    }
    let (status, e) = api
        .post(
            "/v1/workspaces/t/leads/51/enrich?wait_secs=61",
            &key,
            json!({}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("wait_secs"),
        "{e}"
    );
    let (status, e) = api
        .post("/v1/workspaces/t/leads/abc/enrich", &key, json!({}))
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("HubSpot contact id"),
        "{e}"
    );

    // A preview through the API changes nothing.
    let ledger = h.store.ledger(&h.ws.id).await.expect("ledger");
    let totals = h.store.totals(&h.ws.id).await.expect("totals");
    let statuses = h.store.statuses(&h.ws.id).await.expect("statuses");
    let hs = h.hs().stats();
    let provider_requests = h.total_requests();
    let (status, p) = api
        .post(
            "/v1/workspaces/t/preview",
            &key,
            json!({"audience": "seniors", "limit": 10, "estimate": true}),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["records"], "stored");
    assert_eq!(p["workspace"], "t");
    assert_eq!(p["leads"].as_array().map(Vec::len), Some(10), "{p}");
    let (status, all) = api.post("/v1/workspaces/t/preview", &key, json!({})).await;
    assert_eq!(status, 200, "{all}");
    let (status, e) = api
        .post("/v1/workspaces/t/preview", &key, json!({"limit": 0}))
        .await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(h.store.ledger(&h.ws.id).await.expect("ledger"), ledger);
    assert_eq!(h.store.totals(&h.ws.id).await.expect("totals"), totals);
    assert_eq!(
        h.store.statuses(&h.ws.id).await.expect("statuses"),
        statuses
    );
    let after = h.hs().stats();
    assert_eq!(
        (
            after.api_requests,
            after.records_updated,
            after.properties_written
        ),
        (hs.api_requests, hs.records_updated, hs.properties_written)
    );
    assert_eq!(h.total_requests(), provider_requests);

    // The key never reaches the logs.
    let status = d.terminate(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{}", d.logs());
    assert!(!d.logs().contains(&key), "the API key is in the logs");
    assert!(!d.logs().contains(&hook), "the notify_url is in the logs");
    if std::env::var_os("ENRICHD_SHOW_RUN_LOG").is_some() {
        eprintln!("{}", d.logs());
    }
    eprintln!(
        "admin_api_enriches_now_runs_bulk_jobs_by_ids_and_audience_and_notifies: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Isolation and authentication

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_keys_reach_only_their_own_workspace() {
    let port = free_port();
    let h = HarnessBuilder::new(10)
        .fast_provider(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo),
        )
        .workspace(
            r#"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]
"#,
        )
        .another_workspace(
            r#"id = "b"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]
"#,
        )
        .server(&format!(
            "listen = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 5"
        ))
        .start()
        .await;
    let (_, key_a) = create_key(&h, "t");
    let (_, key_b) = create_key(&h, "b");
    let (revoked_id, revoked) = create_key(&h, "t");
    let (ok, out, err) = cli(&h, &["apikey", "revoke", "--workspace", "t", &revoked_id]);
    assert!(ok, "{err}");
    assert!(out.contains(&revoked_id), "{out}");
    // Revoking again, or through another workspace, says why it cannot.
    let (ok, _, err) = cli(&h, &["apikey", "revoke", "--workspace", "b", &revoked_id]);
    assert!(!ok && err.contains("no such key"), "{err}");
    let (ok, _, err) = cli(&h, &["apikey", "revoke", "--workspace", "t", &revoked_id]);
    assert!(!ok && err.contains("revoked already"), "{err}");
    // The list shows ids and state, never a key.
    let (ok, out, err) = cli(&h, &["apikey", "list", "--workspace", "t"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&revoked_id) && out.contains("revoked"),
        "{out}"
    );
    assert!(!out.contains(&key_a) && !out.contains(&revoked), "{out}");
    let (ok, _, err) = cli(&h, &["apikey", "list", "--workspace", "nope"]);
    assert!(!ok && err.contains("unknown workspace `nope`"), "{err}");

    let d = Daemon::start(&h);
    d.wait_up(port).await;
    let api = Api::new(port);

    // Workspace b has a job.
    let (status, accepted) = api
        .post(
            "/v1/workspaces/b/bulk",
            &key_b,
            json!({"ids": ["x1", "x2"]}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job_b = accepted["job_id"].as_i64().expect("job id");
    let job = api
        .finished_job("b", job_b, &key_b, Duration::from_secs(20))
        .await;
    assert_eq!(job["state"], "done", "{job}");
    // No CRM and nothing stored under those ids: both missing.
    assert_eq!(job["result"]["missing"], 2, "{job}");

    // Key A on every route of b, and of a workspace that does not exist:
    // the same 404, so A cannot tell b exists.
    let routes = |ws: &str| {
        vec![
            (
                "POST",
                format!("/v1/workspaces/{ws}/leads/x1/enrich"),
                Some(json!({})),
            ),
            (
                "POST",
                format!("/v1/workspaces/{ws}/bulk"),
                Some(json!({"ids": ["x1"]})),
            ),
            ("GET", format!("/v1/workspaces/{ws}/jobs/{job_b}"), None),
            (
                "POST",
                format!("/v1/workspaces/{ws}/preview"),
                Some(json!({})),
            ),
        ]
    };
    let bearer_a = format!("Bearer {key_a}");
    for ((method, path, body), (_, ghost_path, _)) in routes("b").into_iter().zip(routes("ghost")) {
        let (status, e, _) = api.call(method, &path, Some(&bearer_a), body.clone()).await;
        assert_eq!(status, 404, "{method} {path}: {e}");
        assert_eq!(e["code"], "not_found");
        let (ghost_status, ghost, _) = api.call(method, &ghost_path, Some(&bearer_a), body).await;
        assert_eq!(ghost_status, 404);
        assert_eq!(
            e["error"].as_str().map(|s| s.replace("`b`", "`ghost`")),
            ghost["error"].as_str().map(String::from),
            "{method} {path}"
        );
    }
    // b's job through A's own workspace: not found, like a job that never was.
    let (status, e) = api
        .get(&format!("/v1/workspaces/t/jobs/{job_b}"), &key_a)
        .await;
    assert_eq!(status, 404, "{e}");
    let (_, never) = api.get("/v1/workspaces/t/jobs/999999", &key_a).await;
    assert_eq!(
        e["error"]
            .as_str()
            .map(|s| s.replace(&job_b.to_string(), "999999")),
        never["error"].as_str().map(String::from)
    );
    let (status, _) = api.get("/v1/workspaces/t/jobs/not-a-number", &key_a).await;
    assert_eq!(status, 404);
    // B's own view of it.
    let (status, job) = api
        .get(&format!("/v1/workspaces/b/jobs/{job_b}"), &key_b)
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["workspace"], "b");

    // No key, a bad key, a revoked key, another scheme: 401 on every route.
    for auth in [
        None,
        Some("Bearer ek_not_a_key".to_string()),
        Some(format!("Bearer {revoked}")),
        Some(format!("Basic {key_a}")),
        Some(key_a.clone()),
    ] {
        for (method, path, body) in
            routes("t")
                .into_iter()
                .chain([("GET", "/v1/whatever".to_string(), None)])
        {
            let (status, e, headers) = api.call(method, &path, auth.as_deref(), body).await;
            assert_eq!(status, 401, "{auth:?} {method} {path}: {e}");
            assert_eq!(e["code"], "unauthorized", "{e}");
            assert_eq!(
                headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer")
            );
            let msg = e["error"].as_str().unwrap_or_default();
            assert!(
                msg.contains("enrichd apikey create") || msg.contains("Bearer <key>"),
                "{msg}"
            );
            assert!(!msg.contains(&key_a), "the key is echoed: {msg}");
        }
    }
    // With a valid key, an unknown route is a 404 naming the routes.
    let (status, e) = api.get("/v1/whatever", &key_a).await;
    assert_eq!(status, 404, "{e}");
    assert!(
        e["error"].as_str().unwrap_or_default().contains("/bulk"),
        "{e}"
    );
    // A workspace without a CRM has nothing to preview.
    let (status, e) = api
        .post("/v1/workspaces/t/preview", &key_a, json!({}))
        .await;
    assert_eq!(status, 409, "{e}");
    for k in [&key_a, &key_b, &revoked] {
        assert!(!d.logs().contains(k.as_str()), "a key is in the logs");
    }
}

// ---------------------------------------------------------------------------
// Failures

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_is_retried_later_with_the_error_and_what_to_do() {
    let port = free_port();
    let h = HarnessBuilder::new(10)
        .fast_provider(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo),
        )
        .workspace(
            r#"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]
"#,
        )
        .server(&format!(
            "listen = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 5"
        ))
        .hubspot(HubSpotSpec {
            opts: HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited()),
            email_share: 0.0,
            crm_extra: "sync_interval_secs = 3600\n".into(),
            mapping: None,
        })
        .start()
        .await;
    // Never connected: every HubSpot call needs `enrichd connect hubspot`.
    let (_, key) = create_key(&h, "t");
    let d = Daemon::start(&h);
    d.wait_up(port).await;
    let api = Api::new(port);
    let id = h.hs().contact_ids()[0].clone();
    let (status, job) = api
        .post(
            &format!("/v1/workspaces/t/leads/{id}/enrich?wait_secs=2"),
            &key,
            json!({}),
        )
        .await;
    // Not finished: back in the queue for a later attempt.
    assert_eq!(status, 202, "{job}");
    let job_id = job["job_id"].as_i64().expect("job id");
    let failed = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(h.config_path.with_file_name("run.log"))
            .is_ok_and(|l| l.contains("job attempt failed; retrying"))
    })
    .await;
    assert!(failed, "{}", d.logs());
    let (_, job) = api
        .get(&format!("/v1/workspaces/t/jobs/{job_id}"), &key)
        .await;
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["dead_reason"], Value::Null);
    let error = job["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("reading contacts from HubSpot"), "{error}");
    assert!(error.contains("enrichd connect hubspot"), "{error}");
    let retry_at = job["retry_at"].as_i64().expect("retry time");
    assert!(
        retry_at >= job["updated_at"].as_i64().unwrap_or(0) + 5_000,
        "{job}"
    );
}

// ---------------------------------------------------------------------------
// Shutdown

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_the_bulk_job_in_hand_and_the_next_start_takes_it_up() {
    let port = free_port();
    let size = 600;
    let h = HarnessBuilder::new(size)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo)
                .unlimited()
                .with_latency(Duration::from_millis(200), Duration::from_millis(300)),
            FAST_LIMITS,
        )
        .engine("concurrency = 2")
        .workspace(
            r#"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]
"#,
        )
        .server(&format!(
            "listen = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 3"
        ))
        .start()
        .await;
    let rows: Vec<_> = h.leads(0..size).into_iter().map(|l| (l, 0.0)).collect();
    h.store
        .upsert_leads(&h.ws.id, &rows, chrono::Utc::now().timestamp_millis())
        .await
        .expect("store leads");
    let (_, key) = create_key(&h, "t");
    let mut d = Daemon::start(&h);
    d.wait_up(port).await;
    let api = Api::new(port);
    let ids: Vec<String> = (0..size).map(|i| Harness::lead_id(i).0).collect();
    let (status, accepted) = api
        .post("/v1/workspaces/t/bulk", &key, json!({ "ids": ids }))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_i64().expect("job id");
    // Running, with its total known, and far from done.
    let mut running = false;
    for _ in 0..100 {
        let (_, job) = api.get(&format!("/v1/workspaces/t/jobs/{id}"), &key).await;
        if job["state"] == "running" && job["progress"]["total"] == size {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running, "{}", d.logs());
    let t0 = std::time::Instant::now();
    let status = d.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", d.logs());
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert!(d.logs().contains("job released"), "{}", d.logs());

    // Back in the queue, the attempt given back, nobody holding it.
    let ws = WorkspaceId("t".into());
    let job = h
        .store
        .job_by_id(&ws, id)
        .await
        .expect("read")
        .expect("job");
    assert_eq!(job.state, JobState::Queued, "{job:?}");
    assert_eq!(job.attempts, 0, "{job:?}");
    assert_eq!(job.claimed_by, None);
    assert!(job.progress_done < job.progress_total, "{job:?}");

    // The next start takes it up again.
    let d2 = Daemon::start(&h);
    d2.wait_up(port).await;
    let again = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(h.config_path.with_file_name("run.log"))
            .is_ok_and(|l| l.contains("job started"))
    })
    .await;
    assert!(again, "{}", d2.logs());
    let job = h
        .store
        .job_by_id(&ws, id)
        .await
        .expect("read")
        .expect("job");
    assert_eq!(job.state, JobState::Running, "{job:?}");
    assert_eq!(job.attempts, 1, "{job:?}");
}

// ---------------------------------------------------------------------------
// notify_url

#[test]
fn notify_url_must_be_http_and_is_never_echoed() {
    let config = |url: &str| {
        format!(
            "[storage]\nurl = \"sqlite://x.db\"\n[[workspaces]]\nid = \"acme\"\nnotify_url = \"{url}\"\n"
        )
    };
    let load = |text: &str| {
        enrichd::config::Settings::from_str(
            std::path::Path::new("/etc/enrichd/config.toml"),
            text,
            &std::collections::BTreeMap::new(),
        )
    };
    let ok = load(&config("https://hooks.slack.com/services/T0/B0/sekrit")).expect("valid");
    let ws = ok.workspace("acme").expect("workspace");
    let url = ws.notify_url.as_ref().expect("notify_url");
    assert_eq!(
        url.expose(),
        "https://hooks.slack.com/services/T0/B0/sekrit"
    );
    assert!(!format!("{ws:?}").contains("sekrit"));
    for bad in ["ftp://sekrit@host/x", "hooks.slack.com/sekrit", "https://"] {
        let e = load(&config(bad)).expect_err(bad).to_string();
        assert!(e.contains("workspaces[0].notify_url"), "{e}");
        assert!(e.contains("not an http(s) URL"), "{e}");
        assert!(!e.contains("sekrit"), "the URL is echoed: {e}");
    }
}

// ---------------------------------------------------------------------------
// The key store, on both backends

macro_rules! key_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::db::sqlite().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::db::pg().await else {
                        return;
                    };
                    super::$name(&db).await;
                }
            )*
        }
    };
}

key_tests! {
    keys_are_found_by_hash_scoped_for_listing_and_revoked_per_workspace,
}

async fn keys_are_found_by_hash_scoped_for_listing_and_revoked_per_workspace(db: &TestDb) {
    let s = &db.store;
    let (a, b) = (WorkspaceId("a".into()), WorkspaceId("b".into()));
    let ka = NewApiKey::generate().expect("key");
    let kb = NewApiKey::generate().expect("key");
    s.create_api_key(&a, &ka.key_id, &ka.hash, 1_000)
        .await
        .expect("create");
    s.create_api_key(&b, &kb.key_id, &kb.hash, 2_000)
        .await
        .expect("create");

    let found = s.api_key_by_hash(&hash_key(&ka.key)).await.expect("find");
    let found = found.expect("key a");
    assert_eq!(
        (found.workspace.clone(), found.key_id.clone()),
        (a.clone(), ka.key_id.clone())
    );
    assert_eq!(found.created_at, 1_000);
    assert!(
        s.api_key_by_hash(&hash_key("ek_other"))
            .await
            .expect("find")
            .is_none()
    );
    // Only hashes are stored: the key itself finds nothing.
    assert!(s.api_key_by_hash(&ka.key).await.expect("find").is_none());

    let listed = s.api_keys(&a).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_id, ka.key_id);

    // b cannot revoke a's key; a can, once.
    assert!(
        !s.revoke_api_key(&b, &ka.key_id, 3_000)
            .await
            .expect("revoke")
    );
    assert!(s.api_key_by_hash(&ka.hash).await.expect("find").is_some());
    assert!(
        s.revoke_api_key(&a, &ka.key_id, 3_000)
            .await
            .expect("revoke")
    );
    assert!(
        !s.revoke_api_key(&a, &ka.key_id, 4_000)
            .await
            .expect("revoke")
    );
    assert!(s.api_key_by_hash(&ka.hash).await.expect("find").is_none());
    let listed = s.api_keys(&a).await.expect("list");
    assert_eq!(listed[0].revoked_at, Some(3_000));
    // b's key is untouched.
    assert!(s.api_key_by_hash(&kb.hash).await.expect("find").is_some());
    // The same hash twice is refused (ids of keys are unique too).
    assert!(
        s.create_api_key(&a, "key_dup", &kb.hash, 5_000)
            .await
            .is_err()
    );
}

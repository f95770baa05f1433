//! The async FullEnrich flow over real HTTP: submit, then the result by
//! signed callback or by polling; forged callbacks are refused.

use std::time::Duration;

use enrichd::store::JobState;
use enrichd_sim::{ProviderKind, ProviderProfile, SimChannel, SimOptions};

use crate::support::{Harness, HarnessBuilder, eventually};

const WS: &str = r#"providers = ["fullenrich"]
catch_all = "accept"
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "phone"]"#;

const GET: &str = "GET /contact/enrich/bulk/{id}";
const SUBMIT: &str = "POST /contact/enrich/bulk";

fn fullenrich(delay_ms: u64) -> SimOptions {
    SimOptions::defaults(ProviderKind::FullEnrich)
        .with_profile(ProviderProfile::perfect(&[
            SimChannel::WorkEmail,
            SimChannel::Phone,
        ]))
        .with_processing_delay(Duration::from_millis(delay_ms))
}

#[tokio::test]
async fn an_async_result_completes_the_lead_by_callback() {
    let h = HarnessBuilder::new(20)
        .provider("fullenrich", ProviderKind::FullEnrich, fullenrich(300))
        .workspace(WS)
        .engine("poll_interval_secs = 60")
        .callbacks()
        .start()
        .await;
    let report = h.run(h.leads(0..3)).await;
    for l in &report.leads {
        assert_eq!(l.filled.len(), 2, "{}: {}", l.lead_id, l.reason);
        assert!(l.filled.iter().all(|f| f.source == "fullenrich"));
    }
    let st = h.sim("fullenrich").stats();
    assert_eq!(st.count_endpoint(SUBMIT), 1, "three leads, one batch");
    assert_eq!(
        st.count_endpoint(GET),
        0,
        "the callback made polling unnecessary"
    );
    assert!(st.callbacks_sent >= 1);
    assert_eq!(report.totals.credits_charged, 3 * (1 + 10));
    let jobs = h.store.open_jobs(&h.ws.id).await.expect("jobs");
    assert!(jobs.is_empty(), "the job was applied: {jobs:?}");
}

#[tokio::test]
async fn an_async_result_completes_the_lead_by_polling_without_callbacks() {
    let h = HarnessBuilder::new(20)
        .provider("fullenrich", ProviderKind::FullEnrich, fullenrich(300))
        .workspace(WS)
        .start()
        .await;
    let report = h.run(h.leads(0..3)).await;
    for l in &report.leads {
        assert_eq!(l.filled.len(), 2, "{}: {}", l.lead_id, l.reason);
    }
    let st = h.sim("fullenrich").stats();
    assert!(
        st.count_endpoint(GET) >= 1,
        "the result must have been polled"
    );
    assert_eq!(st.callbacks_sent, 0, "no callback URL was given");
}

#[tokio::test]
async fn leads_are_batched_up_to_the_providers_batch_size() {
    let h = HarnessBuilder::new(150)
        .provider("fullenrich", ProviderKind::FullEnrich, fullenrich(200))
        .workspace(WS)
        .engine("concurrency = 200\nbatch_window_ms = 300")
        .callbacks()
        .start()
        .await;
    let report = h.run(h.leads(0..150)).await;
    assert_eq!(report.totals.values_found, 300);
    assert_eq!(
        h.sim("fullenrich").stats().count_endpoint(SUBMIT),
        2,
        "100 + 50 contacts"
    );
}

#[tokio::test]
async fn a_forged_callback_is_rejected_and_changes_nothing() {
    let h = HarnessBuilder::new(20)
        .provider("fullenrich", ProviderKind::FullEnrich, fullenrich(2500))
        .workspace(WS)
        .engine("poll_interval_secs = 60")
        .callbacks()
        .start()
        .await;
    let engine = h.engine.clone();
    let ws = h.ws.clone();
    let lead = h.lead(0);
    let run = tokio::spawn(async move { engine.enrich(&ws, vec![lead], Default::default()).await });
    let store = h.store.clone();
    let wid = h.ws.id.clone();
    let mut job = None;
    for _ in 0..100 {
        if let Some(j) = store
            .open_jobs(&wid)
            .await
            .expect("jobs")
            .into_iter()
            .next()
        {
            job = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = job.expect("the submission is recorded as a job");
    let base = h.callback_base.clone().expect("callbacks");
    let url = format!("{base}/callbacks/fullenrich/{}", job.token);
    let forged = serde_json::json!({
        "id": job.job_id, "name": "x", "status": "FINISHED", "cost": {"credits": 0},
        "data": [{"custom": {"enrichd_key": "p0"}, "contact_info": {
            "most_probable_work_email": {"email": "attacker@evil.example", "status": "DELIVERABLE"}}}]
    })
    .to_string();
    let http = reqwest::Client::new();
    let post = |url: String, sig: Option<String>, body: String| {
        let http = http.clone();
        async move {
            let mut rb = http
                .post(url)
                .header("content-type", "application/json")
                .body(body);
            if let Some(s) = sig {
                rb = rb.header("X-Signature-SHA1", s);
            }
            rb.send().await.expect("post").status().as_u16()
        }
    };
    // No signature, a wrong key, and a correctly signed body for another token.
    assert_eq!(post(url.clone(), None, forged.clone()).await, 401);
    let wrong = enrichd_sim::fullenrich_signature("not-the-key", forged.as_bytes());
    assert_eq!(post(url.clone(), Some(wrong), forged.clone()).await, 401);
    let signed =
        enrichd_sim::fullenrich_signature(h.sim("fullenrich").api_key(), forged.as_bytes());
    let other = format!("{base}/callbacks/fullenrich/{}", "0".repeat(32));
    assert_eq!(post(other, Some(signed), forged.clone()).await, 404);
    // Nothing changed: the job still waits, nothing stored, nothing charged.
    let j = h
        .store
        .job(&h.ws.id, "fullenrich", &job.job_id)
        .await
        .expect("job")
        .expect("exists");
    assert_eq!(j.state, JobState::Pending);
    assert!(
        h.store
            .values(&h.ws.id, &Harness::lead_id(0))
            .await
            .expect("values")
            .is_empty()
    );
    assert!(h.store.ledger(&h.ws.id).await.expect("ledger").is_empty());
    assert_eq!(
        h.engine
            .stats
            .callbacks_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // The genuine callback then completes the lead with the true values.
    let report = run.await.expect("join").expect("run");
    let l = &report.leads[0];
    assert_eq!(l.filled.len(), 2, "{}", l.reason);
    let p = h.population.person(0);
    assert!(l.filled.iter().any(|f| f.value == p.work_email));
    assert!(!l.filled.iter().any(|f| f.value.contains("evil")));
    assert!(eventually(Duration::from_secs(2), || true).await);
}

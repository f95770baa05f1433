//! FullEnrich: async bulk enrichment, polling, credits, signed webhooks with retries.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use common::*;
use enrichd_sim::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

const MS: fn(u64) -> Duration = Duration::from_millis;

async fn fe(f: impl FnOnce(SimOptions) -> SimOptions) -> SimServer {
    let o = SimOptions::defaults(ProviderKind::FullEnrich)
        .with_processing_delay(MS(300))
        .with_callback_retry_interval(MS(200));
    start(ProviderKind::FullEnrich, pop(), f(o)).await.unwrap()
}

async fn submit(s: &SimServer, body: &Value) -> Resp {
    send(json_body(
        client()
            .post(format!("{}/contact/enrich/bulk", s.base_url()))
            .bearer_auth(s.api_key()),
        body,
    ))
    .await
}

async fn get(s: &SimServer, id: &str) -> Resp {
    send(
        client()
            .get(format!("{}/contact/enrich/bulk/{id}", s.base_url()))
            .bearer_auth(s.api_key()),
    )
    .await
}

async fn wait_done(s: &SimServer, id: &str) -> Resp {
    let t = Instant::now();
    loop {
        let r = get(s, id).await;
        if r.status != 400 {
            return r;
        }
        assert_eq!(r.json()["code"], "error.enrichment.in_progress");
        assert!(t.elapsed() < Duration::from_secs(5), "never finished");
        tokio::time::sleep(MS(50)).await;
    }
}

fn contact(p: &Person, fields: &[&str]) -> Value {
    json!({
        "first_name": p.first_name, "last_name": p.last_name, "domain": p.domain,
        "enrich_fields": fields, "custom": { "crm_id": format!("c-{}", p.index) },
    })
}

const ALL: [&str; 3] = [
    "contact.work_emails",
    "contact.personal_emails",
    "contact.phones",
];

#[tokio::test]
async fn auth_and_validation_errors() {
    let s = fe(|o| o).await;
    assert!(s.base_url().ends_with("/api/v2"));
    let url = format!("{}/contact/enrich/bulk", s.base_url());
    let r = send(client().post(&url)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "error.authorization.not_set");
    let r = send(client().post(&url).header("authorization", s.api_key())).await;
    assert_eq!(r.json()["code"], "error.authorization.not_bearer");
    let r = send(client().post(&url).bearer_auth("nope")).await;
    assert_eq!(r.json()["code"], "error.api.key");
    assert!(r.json()["message"].is_string());

    let pop = pop();
    let p = pop.person(0);
    let cases = [
        json!({"name": "", "data": [contact(p, &ALL)]}),
        json!({"name": "x", "data": []}),
        json!({"name": "x", "data": [{"first_name": "A", "last_name": "B", "enrich_fields": ALL}]}),
        json!({"name": "x", "data": [{"linkedin_url": p.linkedin_url, "enrich_fields": []}]}),
        json!({"name": "x", "data": [{"linkedin_url": p.linkedin_url, "enrich_fields": ["contact.fax"]}]}),
        json!({"name": "x", "data": [{"linkedin_url": p.linkedin_url, "enrich_fields": ALL, "custom": {"a": "x".repeat(101)}}]}),
        json!({"name": "x", "webhook_url": "ftp://nope", "data": [contact(p, &ALL)]}),
        json!({"name": "x", "data": vec![contact(p, &ALL); 101]}),
        json!([1, 2]),
    ];
    for body in cases {
        let r = submit(&s, &body).await;
        assert_eq!(r.status, 400, "{body}");
        let code = r.json()["code"].as_str().unwrap().to_string();
        assert!(code.starts_with("error.enrichment."), "{code}");
    }
    let r = get(&s, "00000000-0000-4000-8000-000000000000").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "error.enrichment.not_found");
    assert_eq!(s.stats().credits_charged, 0);
}

#[tokio::test]
async fn submit_poll_finish_credits_and_reenrich() {
    let s = fe(|o| o).await;
    let pop = pop();
    // One person FullEnrich knows on all three channels, one it knows nothing about.
    let a = find(&pop, |p| {
        [
            SimChannel::WorkEmail,
            SimChannel::PersonalEmail,
            SimChannel::Phone,
        ]
        .iter()
        .all(|c| knows(&s, p.index, *c).is_some())
    });
    let b = find(&pop, |p| {
        [
            SimChannel::WorkEmail,
            SimChannel::PersonalEmail,
            SimChannel::Phone,
        ]
        .iter()
        .all(|c| knows(&s, p.index, *c).is_none())
    });
    let (pa, pb) = (pop.person(a), pop.person(b));
    let mut ca = contact(pa, &ALL);
    ca["linkedin_url"] = json!(pa.linkedin_url.replace("https://www.", "http://"));
    let body = json!({"name": "batch-1", "data": [ca, contact(pb, &["contact.work_emails"])]});
    let r = submit(&s, &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["enrichment_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    let r = get(&s, &id).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"code": "error.enrichment.in_progress", "message": "Enrichment not ready, try again in 30 seconds"})
    );
    let r = wait_done(&s, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "FINISHED");
    assert_eq!(v["name"], "batch-1");
    assert_eq!(v["id"], json!(id));
    assert_eq!(v["cost"]["credits"], 14);
    let d0 = &v["data"][0];
    assert_eq!(d0["custom"], json!({"crm_id": format!("c-{a}")}));
    let ci = &d0["contact_info"];
    let kw = knows(&s, a, SimChannel::WorkEmail).unwrap();
    assert_eq!(ci["most_probable_work_email"]["email"], json!(kw.value));
    let status = ci["most_probable_work_email"]["status"].as_str().unwrap();
    assert!(["DELIVERABLE", "HIGH_PROBABILITY", "CATCH_ALL"].contains(&status));
    assert_eq!(ci["work_emails"][0]["email"], json!(kw.value));
    assert_eq!(
        ci["most_probable_personal_email"]["email"],
        json!(knows(&s, a, SimChannel::PersonalEmail).unwrap().value)
    );
    let kp = knows(&s, a, SimChannel::Phone).unwrap();
    assert_eq!(
        ci["most_probable_phone"]["number"],
        json!(human_phone(&kp.value))
    );
    assert_eq!(ci["most_probable_phone"]["region"], json!(pa.country));
    assert_eq!(
        d0["profile"]["social_profiles"]["professional_network"]["url"],
        json!(pa.linkedin_url)
    );
    assert_eq!(v["data"][1]["contact_info"], json!({}));
    assert!(v["data"][1].get("profile").is_none());
    assert_eq!(s.stats().credits_charged, 14);

    // Same contacts, same inputs, new batch: not billed again.
    let r = submit(&s, &body).await;
    let id2 = r.json()["enrichment_id"].as_str().unwrap().to_string();
    assert_ne!(id, id2);
    let v = wait_done(&s, &id2).await.json();
    assert_eq!(v["cost"]["credits"], 0);
    assert_eq!(
        v["data"][0]["contact_info"]["most_probable_work_email"]["email"],
        json!(kw.value)
    );
    let st = s.stats();
    assert_eq!(st.credits_charged, 14);
    assert_eq!(st.count("POST /contact/enrich/bulk", 200), 2);
    assert!(st.count("GET /contact/enrich/bulk/{id}", 400) >= 2);
    assert!(st.calls_for(a) >= 4);
    let rec = st
        .log
        .iter()
        .find(|r| r.endpoint == "POST /contact/enrich/bulk")
        .unwrap();
    assert_eq!(rec.persons, vec![a, b]);
    assert_eq!(rec.channels.len(), 3);
}

#[tokio::test]
async fn credits_insufficient_answers_402() {
    let s = fe(|o| o.with_credits(Some(5))).await;
    let pop = pop();
    let a = find(&pop, |p| knows(&s, p.index, SimChannel::Phone).is_some());
    let r = submit(
        &s,
        &json!({"name": "poor", "data": [contact(pop.person(a), &["contact.phones"])]}),
    )
    .await;
    let id = r.json()["enrichment_id"].as_str().unwrap().to_string();
    let r = wait_done(&s, &id).await;
    assert_eq!(r.status, 402);
    let v = r.json();
    assert_eq!(v["status"], "CREDITS_INSUFFICIENT");
    assert_eq!(v["cost"]["credits"], 0);
    assert_eq!(v["data"][0]["contact_info"], json!({}));
    assert_eq!(s.credits(), Some(5));
}

#[tokio::test]
async fn rate_limit_has_no_retry_after_and_polling_counts() {
    let s = fe(|o| o.with_limits(vec![(Duration::from_secs(2), 2)])).await;
    get(&s, "a").await;
    get(&s, "b").await;
    let r = get(&s, "c").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json(),
        json!({"code": "error.rate.limit", "message": "Too many requests. Try again in 1m"})
    );
    assert!(r.header("retry-after").is_none());
    assert_eq!(s.stats().rate_limited, 1);
    assert_eq!(
        SimOptions::defaults(ProviderKind::FullEnrich).limits,
        vec![(Duration::from_secs(60), 60)]
    );
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, String, Bytes)>>>,
    fail_first: Arc<AtomicU32>,
}

async fn receive(
    State(rx): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let sig = headers
        .get("x-signature-sha1")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    rx.got
        .lock()
        .unwrap()
        .push((uri.path().to_string(), sig, body));
    if rx.fail_first.load(Ordering::SeqCst) > 0 {
        rx.fail_first.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

async fn receiver(fail_first: u32) -> (String, Receiver) {
    let rx = Receiver::default();
    rx.fail_first.store(fail_first, Ordering::SeqCst);
    let app = Router::new()
        .route("/batch", post(receive))
        .route("/contact", post(receive))
        .with_state(rx.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, rx)
}

fn hmac_hex(key: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn signed_webhooks_are_delivered_and_retried() {
    let s = fe(|o| o).await;
    let pop = pop();
    let (url, rx) = receiver(1).await;
    let people = [pop.person(1), pop.person(2), pop.person(3)];
    let body = json!({
        "name": "hooks",
        "webhook_url": format!("{url}/batch"),
        "webhook_events": { "contact_finished": format!("{url}/contact") },
        "data": people.iter().map(|p| contact(p, &ALL)).collect::<Vec<_>>(),
    });
    let r = submit(&s, &body).await;
    let id = r.json()["enrichment_id"].as_str().unwrap().to_string();
    // 3 contact webhooks + the batch one; the first delivery fails and is retried 200 ms later.
    let t = Instant::now();
    loop {
        let st = s.stats();
        if st.callbacks_sent >= 5 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "webhooks not delivered: {st:?}"
        );
        tokio::time::sleep(MS(25)).await;
    }
    let st = s.stats();
    assert_eq!(st.callbacks_sent, 5);
    assert_eq!(st.callbacks_failed, 1);
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 5);
    for (_, sig, b) in &got {
        assert_eq!(sig, &hmac_hex(s.api_key(), b), "bad signature");
        assert_eq!(sig, &fullenrich_signature(s.api_key(), b));
    }
    let contacts: Vec<Value> = got
        .iter()
        .filter(|(p, _, _)| p == "/contact")
        .map(|(_, _, b)| serde_json::from_slice(b).unwrap())
        .collect();
    // The failed first attempt was a contact webhook, retried: 4 contact posts, 3 distinct.
    assert_eq!(contacts.len(), 4);
    for c in &contacts {
        assert_eq!(c["status"], "IN_PROGRESS");
        assert_eq!(c["data"].as_array().unwrap().len(), 1);
    }
    let batch: Vec<Value> = got
        .iter()
        .filter(|(p, _, _)| p == "/batch")
        .map(|(_, _, b)| serde_json::from_slice(b).unwrap())
        .collect();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0]["status"], "FINISHED");
    // The webhook carries the same JSON as the GET result.
    let g = wait_done(&s, &id).await.json();
    assert_eq!(batch[0], g);
}

#[tokio::test]
async fn webhook_gives_up_after_five_retries() {
    let s = fe(|o| {
        o.with_processing_delay(MS(10))
            .with_callback_retry_interval(MS(30))
    })
    .await;
    let (url, rx) = receiver(100).await;
    let pop = pop();
    let body = json!({"name": "x", "webhook_url": format!("{url}/batch"), "data": [contact(pop.person(5), &ALL)]});
    submit(&s, &body).await;
    tokio::time::sleep(MS(600)).await;
    let st = s.stats();
    assert_eq!(st.callbacks_sent, 6);
    assert_eq!(st.callbacks_failed, 6);
    assert_eq!(rx.got.lock().unwrap().len(), 6);
}

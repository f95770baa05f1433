//! The process-wide metrics registry (`GET /metrics`) against real runs:
//! provider requests counted per account, endpoint and status as the
//! simulators saw them; credits charged per workspace as the run reports
//! them; HubSpot calls by path template; webhook deliveries accepted and
//! rejected by reason.
//!
//! The registry is global and the tests of this binary run in parallel, so
//! every check is a difference between before and after, on label values
//! only these tests use (account and workspace ids) where there are any.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use enrichd::clock::{ManualClock, SystemClock};
use enrichd::crm::hubspot::sync::SyncOptions;
use enrichd::crm::hubspot::webhook::{
    PATH, PortalRoute, SIGNATURE_V3_HEADER, TIMESTAMP_HEADER, WebhookState, normalize_uri, router,
    signature_v3,
};
use enrichd::crm::{CrmEvent, EventSink, Recorded, SinkFuture};
use enrichd::engine::{Engine, EngineOptions};
use enrichd::metrics::{CONTENT_TYPE, metrics};
use enrichd::secret::Secret;
use enrichd::store::StoreError;
use enrichd_sim::hubspot::{HubSpotLimits, HubSpotOptions};
use enrichd_sim::{
    Fault, FaultKind, FaultScope, ProviderKind, ProviderProfile, Quality, SimChannel, SimOptions,
};
use serde_json::{Value, json};

use crate::support::{Harness, HarnessBuilder, HubSpotSpec};

const REQUESTS: &str = "enrichd_api_requests_total";

/// The samples of `family` in rendered text whose labels include every
/// `name="value"` of `having`, as label text → value.
fn rendered(text: &str, family: &str, having: &[(&str, &str)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        if !labels.starts_with('{') {
            continue;
        }
        if having
            .iter()
            .all(|(n, v)| labels.contains(&format!("{n}=\"{v}\"")))
        {
            out.insert(labels.to_string(), value.parse().expect("a number"));
        }
    }
    out
}

/// Requests the simulator answered, per status.
fn sim_statuses(h: &Harness, account: &str) -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    for by_status in h.sim(account).stats().by_endpoint.values() {
        for (status, n) in by_status {
            *out.entry(*status).or_insert(0) += n;
        }
    }
    out
}

/// `account`'s requests in the registry by status label, over endpoints.
fn by_status(account: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, n) in rendered(&metrics().render(), REQUESTS, &[("api", account)]) {
        let status = labels
            .split("status=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a status label");
        *out.entry(status.to_string()).or_insert(0.0) += n;
    }
    out
}

#[tokio::test]
async fn a_run_counts_every_try_per_account_and_the_credits_it_charged() {
    let q = |c| Quality::new(c, 1.0, 1.0, 0.0);
    let ws_id = "metrics_run";
    let h = HarnessBuilder::new(40)
        .fast_provider(
            "metrics_apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).with_profile(ProviderProfile::uniform(&[
                (SimChannel::WorkEmail, q(0.5)),
                (SimChannel::LinkedinUrl, q(0.6)),
            ])),
        )
        .fast_provider(
            "metrics_prospeo",
            ProviderKind::Prospeo,
            SimOptions::defaults(ProviderKind::Prospeo).with_profile(ProviderProfile::uniform(&[
                (SimChannel::WorkEmail, q(0.8)),
                (SimChannel::Phone, q(0.5)),
            ])),
        )
        .workspace(
            r#"providers = ["metrics_apollo", "metrics_prospeo"]
catch_all = "strict"
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "phone", "linkedin_url"]"#,
        )
        .start()
        .await;
    // The same config with the workspace renamed: the harness always calls
    // it `t`, which other tests of this binary charge credits in too.
    let toml = std::fs::read_to_string(&h.config_path)
        .expect("config")
        .replace(
            "[[workspaces]]\nid = \"t\"",
            &format!("[[workspaces]]\nid = \"{ws_id}\""),
        );
    let settings = Arc::new(
        enrichd::config::Settings::from_str(&h.config_path, &toml, &h.secrets).expect("config"),
    );
    let engine = Arc::new(
        Engine::new(
            settings.clone(),
            h.store.clone(),
            Arc::new(SystemClock),
            EngineOptions::default(),
        )
        .expect("engine"),
    );
    let ws = settings.workspace(ws_id).expect("workspace").clone();

    // Two rate limits from Apollo and a server error from Prospeo: retried,
    // and counted under their own status.
    h.sim("metrics_apollo").inject(Fault {
        kind: FaultKind::RateLimited,
        scope: FaultScope::Next(2),
    });
    h.sim("metrics_prospeo").inject(Fault {
        kind: FaultKind::Status(503),
        scope: FaultScope::Next(1),
    });

    let accounts = ["metrics_apollo", "metrics_prospeo"];
    let before: Vec<BTreeMap<String, f64>> = accounts.iter().map(|a| by_status(a)).collect();
    let limited_before =
        metrics().counter_value("enrichd_rate_limited_total", &["metrics_apollo", "429"]);
    let waits_before: Vec<f64> = accounts
        .iter()
        .map(|a| metrics().counter_value("enrichd_limiter_wait_seconds_count", &[a]))
        .collect();
    let credits_before = metrics().counter_value("enrichd_credits_charged_total", &[ws_id]);

    let report = engine
        .enrich(&ws, h.leads(0..40), Default::default())
        .await
        .expect("run");

    let text = metrics().render();
    for (i, account) in accounts.iter().enumerate() {
        let seen = sim_statuses(&h, account);
        let sent: u64 = seen.values().sum();
        assert!(sent > 0, "{account} was asked nothing");
        assert_eq!(sent, h.sim(account).stats().requests);
        // Per status, exactly what the simulator answered (nothing failed
        // on the way: no "error").
        let after = by_status(account);
        let grew: BTreeMap<String, f64> = after
            .iter()
            .map(|(s, n)| (s.clone(), n - before[i].get(s).copied().unwrap_or(0.0)))
            .filter(|(_, n)| *n != 0.0)
            .collect();
        let expected: BTreeMap<String, f64> = seen
            .iter()
            .map(|(s, n)| (s.to_string(), *n as f64))
            .collect();
        assert_eq!(grew, expected, "{account}: requests by status");
        // The rendered text holds the same numbers, under the endpoint label.
        let samples = rendered(&text, REQUESTS, &[("api", account)]);
        assert_eq!(
            samples.values().sum::<f64>() - before[i].values().sum::<f64>(),
            sent as f64,
            "{samples:?}"
        );
        assert!(
            samples
                .keys()
                .all(|l| l.contains("endpoint=\"") && !l.contains("http")),
            "{samples:?}"
        );
        // Every try took the limiter first.
        let waits = metrics().counter_value("enrichd_limiter_wait_seconds_count", &[account])
            - waits_before[i];
        assert!(
            waits >= sent as f64,
            "{account}: {waits} limiter waits for {sent} tries"
        );
    }
    assert_eq!(
        seen_count(&h, "metrics_apollo", 429),
        2,
        "both injected rate limits were answered"
    );
    assert_eq!(
        metrics().counter_value("enrichd_rate_limited_total", &["metrics_apollo", "429"])
            - limited_before,
        2.0
    );
    assert!(
        text.contains(
            "\nenrichd_api_requests_total{api=\"metrics_apollo\",endpoint=\"POST /people/match\",status=\"429\"} "
        ),
        "{text}"
    );

    // Credits: what the run charged, in its workspace.
    let charged = report.totals.credits_charged;
    assert!(charged > 0, "the run found nothing to charge for");
    assert_eq!(
        metrics().counter_value("enrichd_credits_charged_total", &[ws_id]) - credits_before,
        charged as f64
    );
    assert!(text.contains(&format!(
        "\nenrichd_credits_charged_total{{workspace=\"{ws_id}\"}} "
    )));

    // A second run over the same leads: values found again are not charged
    // again, and the counter moves by what this run charged (if anything).
    let again = engine
        .enrich(&ws, h.leads(0..40), Default::default())
        .await
        .expect("run");
    assert_eq!(
        metrics().counter_value("enrichd_credits_charged_total", &[ws_id]) - credits_before,
        (charged + again.totals.credits_charged) as f64
    );
}

fn seen_count(h: &Harness, account: &str, status: u16) -> u64 {
    sim_statuses(h, account).get(&status).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn hubspot_calls_are_counted_by_path_template() {
    let opts = HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited());
    let h = HarnessBuilder::new(30)
        .fast_provider(
            "metrics_hs_apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo),
        )
        .workspace(
            r#"providers = ["metrics_hs_apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]"#,
        )
        .hubspot(HubSpotSpec {
            opts,
            email_share: 0.0,
            crm_extra: "private_app_token_env = \"HS_PRIVATE_APP_TOKEN\"\nportal_id = 62515\n"
                .into(),
            mapping: None,
        })
        .start()
        .await;
    h.connect_hubspot().await;
    let hub = h.hub();
    let snapshot = |calls: &BTreeMap<(String, u16), u64>| -> BTreeMap<(String, u16), f64> {
        calls
            .keys()
            .map(|(e, s)| {
                let status = if *s == 0 {
                    "error".to_string()
                } else {
                    s.to_string()
                };
                (
                    (e.clone(), *s),
                    metrics().counter_value(REQUESTS, &["hubspot", e, &status]),
                )
            })
            .collect()
    };
    // Endpoints are only known after the sync; other tests add to them in
    // parallel, so the registry must have grown by at least this client's calls.
    let total_before = metrics().sum(REQUESTS, &[("api", "hubspot")]);
    let r = hub
        .sync(
            None,
            SyncOptions {
                full: false,
                enrich: false,
                write: false,
            },
        )
        .await
        .expect("sync");
    assert_eq!(r.pull.contacts, 30);
    let calls = hub
        .client
        .stats
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(!calls.is_empty());
    let after = snapshot(&calls);
    let ours: u64 = calls.values().sum();
    assert!(metrics().sum(REQUESTS, &[("api", "hubspot")]) - total_before >= ours as f64);
    for ((endpoint, status), n) in &calls {
        assert!(
            after[&(endpoint.clone(), *status)] >= *n as f64,
            "{endpoint} {status}: {n} calls not in the registry"
        );
        // A path template: no query string, no record id, no token.
        assert!(
            !endpoint.contains('?')
                && endpoint
                    .split(['/', ' '])
                    .all(|seg| seg.is_empty() || !seg.chars().all(|c| c.is_ascii_digit())),
            "{endpoint}"
        );
    }
    let token = h.secrets["HS_PRIVATE_APP_TOKEN"].clone();
    let text = metrics().render();
    assert!(!text.contains(&token), "a token in the metrics");
    assert!(text.contains("api=\"hubspot\",endpoint=\"POST /crm/v3/objects/contacts/search\""));
    assert!(text.contains("\nenrichd_limiter_wait_seconds_count{api=\"hubspot\"} "));
}

// --- Webhooks ----------------------------------------------------------------

const PUBLIC: &str = "https://enrichd.example.com/webhooks/hubspot";
const SECRET: &str = "metrics-webhook-secret";
const NOW: i64 = 1_750_000_000_000;
const PORTAL: u64 = 91_234;

/// Keeps events in memory; fails every record while `fail` is set.
#[derive(Default)]
struct MemSink {
    events: std::sync::Mutex<Vec<CrmEvent>>,
    fail: AtomicBool,
}

impl EventSink for MemSink {
    fn record(&self, events: Vec<CrmEvent>) -> SinkFuture<'_> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Corrupt {
                    table: "crm_events",
                    message: "test sink refuses".into(),
                });
            }
            let mut stored = self.events.lock().unwrap_or_else(|e| e.into_inner());
            let mut r = Recorded::default();
            for e in events {
                if stored.iter().any(|s| s.dedupe_key == e.dedupe_key) {
                    r.duplicates += 1;
                } else {
                    stored.push(e);
                    r.inserted += 1;
                }
            }
            Ok(r)
        })
    }
}

fn deliveries(outcome: &str, reason: &str) -> f64 {
    metrics().counter_value(
        "enrichd_webhook_deliveries_total",
        &["hubspot", outcome, reason],
    )
}

fn events(outcome: &str) -> f64 {
    metrics().counter_value("enrichd_webhook_events_total", &["hubspot", outcome])
}

#[tokio::test]
async fn webhook_deliveries_are_counted_accepted_or_rejected_with_a_reason() {
    let sink = Arc::new(MemSink::default());
    let state = Arc::new(WebhookState {
        portals: [(
            PORTAL,
            PortalRoute {
                workspace: enrichd::core::lead::WorkspaceId("metrics_hooks".into()),
                secrets: vec![Secret::new(SECRET)],
            },
        )]
        .into_iter()
        .collect(),
        public_url: PUBLIC.into(),
        sink: sink.clone(),
        clock: Arc::new(ManualClock::new(NOW)),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    let http = reqwest::Client::new();
    let send = |body: Vec<u8>, ts: i64, secret: &'static str| {
        let ts = ts.to_string();
        let sig = signature_v3(secret, "POST", &normalize_uri(PUBLIC), &body, &ts);
        let req = http
            .post(format!("{base}{PATH}"))
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, ts)
            .header(SIGNATURE_V3_HEADER, sig)
            .body(body);
        async move { req.send().await.expect("send").status().as_u16() }
    };
    let event = |i: u64| {
        json!({"eventId": i, "subscriptionId": 1, "portalId": PORTAL, "occurredAt": 1_000 + i,
               "subscriptionType": "contact.creation", "attemptNumber": 0, "objectId": 500 + i})
    };
    let batch = |v: Vec<Value>| Value::Array(v).to_string().into_bytes();

    let accepted = deliveries("accepted", "");
    let signature = deliveries("rejected", "signature");
    let timestamp = deliveries("rejected", "timestamp");
    let malformed = deliveries("rejected", "malformed");
    let store = deliveries("rejected", "store");
    let (recorded, duplicate, rejected) =
        (events("recorded"), events("duplicate"), events("rejected"));

    // Good: two events and an element that is not an event.
    let good = batch(vec![event(1), event(2), json!(7)]);
    assert_eq!(send(good.clone(), NOW - 1_000, SECRET).await, 200);
    // The same again: accepted, its events duplicates.
    assert_eq!(send(good, NOW - 1_000, SECRET).await, 200);
    // Signed with another secret.
    assert_eq!(
        send(batch(vec![event(3)]), NOW, "not-the-secret").await,
        401
    );
    // Ten minutes old.
    assert_eq!(
        send(batch(vec![event(4)]), NOW - 600_000, SECRET).await,
        401
    );
    // Signed, but not an array of events.
    assert_eq!(send(b"{\"no\": 1}".to_vec(), NOW, SECRET).await, 400);
    // Signed, but the store is down.
    sink.fail.store(true, Ordering::SeqCst);
    assert_eq!(send(batch(vec![event(5)]), NOW, SECRET).await, 503);
    sink.fail.store(false, Ordering::SeqCst);

    // Other tests of this binary may deliver webhooks at the same time: at
    // least ours are counted.
    assert!(deliveries("accepted", "") - accepted >= 2.0);
    assert!(deliveries("rejected", "signature") - signature >= 1.0);
    assert!(deliveries("rejected", "timestamp") - timestamp >= 1.0);
    assert!(deliveries("rejected", "malformed") - malformed >= 1.0);
    assert!(deliveries("rejected", "store") - store >= 1.0);
    assert!(events("recorded") - recorded >= 2.0);
    assert!(events("duplicate") - duplicate >= 2.0);
    assert!(events("rejected") - rejected >= 2.0);
    assert_eq!(
        sink.events.lock().unwrap_or_else(|e| e.into_inner()).len(),
        2
    );

    let text = metrics().render();
    assert!(
        text.contains("\nenrichd_webhook_deliveries_total{crm=\"hubspot\",outcome=\"accepted\"} ")
    );
    assert!(text.contains(
        "\nenrichd_webhook_deliveries_total{crm=\"hubspot\",outcome=\"rejected\",reason=\"signature\"} "
    ));
    assert!(!text.contains(SECRET));
    assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
}

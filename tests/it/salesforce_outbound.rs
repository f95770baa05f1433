//! Salesforce Outbound Messages over HTTP (`POST
//! /webhooks/salesforce/{token}`) against the Salesforce simulator: a valid
//! message is recorded, then acknowledged; a redelivery is recorded once; a
//! wrong token or organisation is refused and changes nothing; a store
//! failure is a 503 and Salesforce redelivers the same notifications; the
//! route is mounted by `enrichd run`. The route is served in-process on
//! loopback except in the last test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use enrichd::clock::SystemClock;
use enrichd::core::lead::WorkspaceId;
use enrichd::crm::salesforce::CRM;
use enrichd::crm::salesforce::outbound::{ACK_BODY, OwnChangeRule, TokenRoute};
use enrichd::crm::salesforce::webhook::{OutboundState, router};
use enrichd::crm::{CrmEvent, EventSink, SinkFuture, StoreSink};
use enrichd::secret::Secret;
use enrichd::store::StoreError;
use enrichd::store::crm::{ConnectionRow, ConnectionState, StoredEvent};
use enrichd_sim::salesforce::{OutboundConfig, SalesforceOptions};
use enrichd_sim::{ProviderKind, SimOptions};

use crate::support::{
    Daemon, FAST_LIMITS, Harness, HarnessBuilder, SalesforceSpec, free_port, http_get,
};

const WORKSPACE: &str = r#"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]
"#;

/// Workspace `t`'s URL token (in-process tests).
const TOKEN: &str = "om-token-0123456789abcdef0123456789abcdef";
/// A second workspace with its own token, connected to another org.
const OTHER_TOKEN: &str = "om-token-fedcba9876543210fedcba9876543210";
const OTHER_ORG: &str = "00Dxx0000009ZZZEAA";
/// A third workspace's token; that workspace is not connected.
const UNCONNECTED_TOKEN: &str = "om-token-00000000000000000000000000000000";

/// The store sink, made to fail on demand.
struct FlakySink {
    inner: StoreSink,
    fail: AtomicBool,
}

impl EventSink for FlakySink {
    fn record(&self, events: Vec<CrmEvent>) -> SinkFuture<'_> {
        if self.fail.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(StoreError::Corrupt {
                    table: "crm_events",
                    message: "injected failure".into(),
                })
            });
        }
        self.inner.record(events)
    }
}

/// The Lead definition the simulator sends to `url`: the default fields,
/// `LastModifiedById` (for the own-change rule) and a session id.
fn lead_outbound(url: &str) -> OutboundConfig {
    let mut c = OutboundConfig::new("Lead", url);
    c.fields.push("LastModifiedById".into());
    c.send_session_id = true;
    c
}

struct Setup {
    h: Harness,
    base: String,
    sink: Arc<FlakySink>,
    user_id: String,
}

/// A harness whose simulator sends Lead Outbound Messages to the route,
/// connected, with the route served on loopback for workspace `t` and a
/// second workspace `other` (its own token, connected to [`OTHER_ORG`]).
async fn setup() -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let url = format!("{base}/webhooks/salesforce/{TOKEN}");
    let opts = SalesforceOptions::defaults().with_outbound(lead_outbound(&url));
    let h = HarnessBuilder::new(60)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .workspace(WORKSPACE)
        .salesforce(SalesforceSpec::new(opts))
        .start()
        .await;
    let connected = h.connect_salesforce().await;
    let other = WorkspaceId("other".into());
    h.store
        .save_connection(
            &other,
            &ConnectionRow {
                crm: CRM.into(),
                account: OTHER_ORG.into(),
                auth: "oauth".into(),
                sealed_access: None,
                sealed_refresh: None,
                expires_at: None,
                scopes: Vec::new(),
                state: ConnectionState::Connected,
                reason: String::new(),
                updated_at: 0,
            },
        )
        .await
        .expect("save the other connection");
    let sink = Arc::new(FlakySink {
        inner: StoreSink {
            store: h.store.clone(),
            clock: Arc::new(SystemClock),
        },
        fail: AtomicBool::new(false),
    });
    let state = OutboundState {
        routes: vec![
            TokenRoute {
                workspace: h.ws.id.clone(),
                token: Secret::new(TOKEN),
                org_id: String::new(),
            },
            TokenRoute {
                workspace: other,
                token: Secret::new(OTHER_TOKEN),
                org_id: String::new(),
            },
            TokenRoute {
                workspace: WorkspaceId("unconnected".into()),
                token: Secret::new(UNCONNECTED_TOKEN),
                org_id: String::new(),
            },
        ],
        store: h.store.clone(),
        sink: sink.clone(),
        clock: Arc::new(SystemClock),
    };
    let app = router(Arc::new(state));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Setup {
        h,
        base,
        sink,
        user_id: connected.user_id,
    }
}

/// POSTs `body` as Salesforce does; the status and the answer's text.
async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", "\"\"")
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// POSTs the head of a request announcing a `len`-byte body over a raw
/// connection and reads the answer before sending any of the body: the
/// route refuses on `Content-Length` alone. (A client still sending when
/// the server answers and closes may lose the answer to a reset; reqwest
/// reports a broken pipe then.)
async fn post_too_long(base: &str, token: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /webhooks/salesforce/{token} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// POSTs `mib` MiB of spaces with chunked transfer encoding (no
/// `Content-Length`) over a raw connection; the answer's status.
async fn post_chunked(base: &str, token: &str, mib: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /webhooks/salesforce/{token} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let chunk = vec![b' '; 1024 * 1024];
    for _ in 0..mib {
        // The server may answer and close before everything is sent.
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn events(h: &Harness, ws: &str) -> Vec<StoredEvent> {
    h.store
        .events(&WorkspaceId(ws.into()), CRM)
        .await
        .expect("read events")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_outbound_message_is_acknowledged_and_recorded_once() {
    let Setup {
        h, base, user_id, ..
    } = setup().await;
    let lead = h.sf().lead_ids()[3].clone();

    // A sales rep edits a Lead in the UI: the simulator sends the message.
    h.sf()
        .human_edit(&lead, &[("FirstName", "Renamed")], None)
        .expect("edit");
    h.sf().flush_outbound().await;
    let deliveries = h.sf().stats().outbound_deliveries;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert!(deliveries[0].acked, "{deliveries:?}");
    assert_eq!(deliveries[0].status, 200);
    let nid = deliveries[0].notification_ids[0].clone();

    let stored = events(&h, "t").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let e = &stored[0];
    assert_eq!(e.state, "pending");
    assert_eq!(e.event.dedupe_key, format!("om:{nid}"));
    assert_eq!(e.event.lead_id.as_str(), lead);
    assert_eq!(e.event.kind, "lead.outbound_message");
    assert_eq!(e.event.payload["fields"]["FirstName"], "Renamed");
    // The session id the message carried is a credential: not kept.
    let payload = e.event.payload.to_string();
    for t in h.sf().issued_tokens() {
        assert!(!payload.contains(&t), "a session id was recorded");
    }
    // Not enrichd's own change: the events handler will enrich it.
    let rule = OwnChangeRule {
        integration_user_id: Some(user_id.clone()),
    };
    assert_eq!(rule.own_change_event(&e.event), None);
    assert!(events(&h, "other").await.is_empty());

    // Salesforce redelivers (an Ack lost on the way): the same
    // notification Id is acknowledged again and recorded once.
    let (_, xml) = h.sf().outbound_envelope(&lead, None).expect("envelope");
    let fresh = xml
        .split("<Id>")
        .nth(1)
        .and_then(|s| s.split("</Id>").next())
        .expect("notification id")
        .to_string();
    let replay = xml.replace(&fresh, &nid);
    let url = format!("{base}/webhooks/salesforce/{TOKEN}");
    for _ in 0..2 {
        let (status, body) = post(&url, replay.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, ACK_BODY);
    }
    assert_eq!(
        events(&h, "t").await.len(),
        1,
        "a redelivery is recorded once"
    );
    // A new notification (another Id) is new work.
    let (status, _) = post(&url, xml).await;
    assert_eq!(status, 200);
    assert_eq!(events(&h, "t").await.len(), 2);

    // An edit by enrichd's integration user is recorded too, and the
    // recorded event says it is enrichd's own (process_events ignores it).
    h.sf()
        .human_edit(&lead, &[("Title", "VP")], Some(&user_id))
        .expect("edit as the integration user");
    h.sf().flush_outbound().await;
    assert!(h.sf().stats().outbound_deliveries.iter().all(|d| d.acked));
    let stored = events(&h, "t").await;
    assert_eq!(stored.len(), 3, "{stored:?}");
    let own = stored
        .iter()
        .filter(|e| rule.own_change_event(&e.event).is_some())
        .count();
    assert_eq!(own, 1, "{stored:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_or_organisation_is_refused_and_changes_nothing() {
    let Setup { h, base, .. } = setup().await;
    let lead = h.sf().lead_ids()[5].clone();
    let url = format!("{base}/webhooks/salesforce/{TOKEN}");
    let other_url = format!("{base}/webhooks/salesforce/{OTHER_TOKEN}");
    let (_, valid) = h.sf().outbound_envelope(&lead, None).expect("envelope");
    let (_, forged) = h
        .sf()
        .outbound_envelope(&lead, Some("00Dxx0000001BADEAA"))
        .expect("envelope");

    let refused: Vec<(String, String, u16, &str)> = vec![
        // A message from another org, on the right URL.
        (url.clone(), forged.clone(), 403, "organisation"),
        // The right org on another workspace's URL: that workspace is
        // connected to another org.
        (other_url.clone(), valid.clone(), 403, "organisation"),
        // Wrong, truncated, empty and missing tokens.
        (
            format!("{base}/webhooks/salesforce/not-the-token-0123456789"),
            valid.clone(),
            401,
            "token",
        ),
        (
            format!("{base}/webhooks/salesforce/{}", &TOKEN[..TOKEN.len() - 1]),
            valid.clone(),
            401,
            "token",
        ),
        (
            format!("{base}/webhooks/salesforce/%FF%FE"),
            valid.clone(),
            401,
            "token",
        ),
        (
            format!("{base}/webhooks/salesforce"),
            valid.clone(),
            401,
            "token",
        ),
        // A workspace not connected yet: no org to check against (503, so
        // Salesforce keeps retrying until it is).
        (
            format!("{base}/webhooks/salesforce/{UNCONNECTED_TOKEN}"),
            valid.clone(),
            503,
            "not connected",
        ),
        // Authenticated but not an Outbound Message.
        (url.clone(), "<a>".into(), 400, "XML"),
        (url.clone(), "<a/>".into(), 400, "Outbound Message"),
    ];
    for (u, body, want, says) in &refused {
        let (status, text) = post(u, body.clone()).await;
        assert_eq!(status, *want, "{u}: {text}");
        assert!(text.contains("<faultstring>"), "{u}: {text}");
        assert!(text.contains(says), "{u}: {text}");
        assert!(
            !text.contains(TOKEN) && !text.contains(OTHER_TOKEN),
            "{text}"
        );
    }
    // Too large: refused before reading (Content-Length), and when streamed.
    assert_eq!(post_too_long(&base, TOKEN, 4 * 1024 * 1024 + 1).await, 413);
    assert_eq!(post_chunked(&base, TOKEN, 5).await, 413);

    assert!(events(&h, "t").await.is_empty(), "refusals change nothing");
    assert!(events(&h, "other").await.is_empty());
    assert!(events(&h, "unconnected").await.is_empty());

    // The other workspace's own org on its own URL is recorded there only.
    let (_, theirs) = h
        .sf()
        .outbound_envelope(&lead, Some(OTHER_ORG))
        .expect("envelope");
    let (status, body) = post(&other_url, theirs).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(events(&h, "other").await.len(), 1);
    assert!(events(&h, "t").await.is_empty());
    // And the right org on the right URL is recorded.
    let (status, body) = post(&url, valid).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(events(&h, "t").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_failure_is_a_503_and_salesforce_redelivers_the_same_notifications() {
    let Setup { h, sink, .. } = setup().await;
    let lead = h.sf().lead_ids()[7].clone();
    sink.fail.store(true, Ordering::SeqCst);
    h.sf()
        .human_edit(&lead, &[("LastName", "Changed")], None)
        .expect("edit");
    // The simulator's own loop delivers it (a flush here could race that
    // delivery and force the retry at once).
    assert!(
        crate::support::eventually(Duration::from_secs(10), || {
            !h.sf().stats().outbound_deliveries.is_empty()
        })
        .await
    );
    let first = h.sf().stats().outbound_deliveries;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].status, 503);
    assert!(!first[0].acked);
    assert!(events(&h, "t").await.is_empty(), "nothing recorded, no Ack");
    assert_eq!(h.sf().outbound_pending(), 1, "Salesforce will retry");

    // The store is back: the retry carries the same notification Id.
    sink.fail.store(false, Ordering::SeqCst);
    h.sf().flush_outbound().await;
    let all = h.sf().stats().outbound_deliveries;
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[1].acked, "{all:?}");
    assert_eq!(all[1].notification_ids, first[0].notification_ids);
    assert_eq!(all[1].attempt, 2);
    let stored = events(&h, "t").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        stored[0].event.dedupe_key,
        format!("om:{}", first[0].notification_ids[0])
    );
    assert_eq!(h.sf().outbound_pending(), 0);
}

/// `enrichd run` with a Salesforce workspace: its first sync pass writes
/// every Lead back; a Lead created in Salesforce reaches enrichd as an
/// Outbound Message, which is acknowledged, recorded, and handled by the
/// events loop (enriched and written, no sync pass needed); a wrong token
/// is refused; the logs carry neither the URL token nor a session id.
#[tokio::test(flavor = "multi_thread")]
async fn enrichd_run_syncs_salesforce_and_handles_outbound_messages() {
    let port = free_port();
    // The harness has no way to add an environment variable, so the
    // workspace's token is read from one it sets (the connected app's
    // secret, 64 characters): only the URL matters here.
    let token = SalesforceOptions::defaults().client_secret;
    let url = format!("http://127.0.0.1:{port}/webhooks/salesforce/{token}");
    let mut spec =
        SalesforceSpec::new(SalesforceOptions::defaults().with_outbound(lead_outbound(&url)));
    spec.crm_extra =
        "outbound_token_env = \"SF_CLIENT_SECRET\"\nsync_interval_secs = 3600\n".into();
    let h = HarnessBuilder::new(40)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .workspace(WORKSPACE)
        .server(&format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nshutdown_grace_secs = 10"
        ))
        .salesforce(spec)
        .start()
        .await;
    h.connect_salesforce().await;
    let mut d = Daemon::start(&h);
    d.wait_up(port).await;

    // The first pass: every live Lead gets its status written.
    let live: Vec<String> = {
        let converted = h.sf().converted_lead_ids();
        h.sf()
            .lead_ids()
            .into_iter()
            .filter(|id| !converted.contains(id))
            .collect()
    };
    let status_of = |id: &str| {
        h.sf()
            .field(id, "Enrichment_Status__c")
            .filter(|v| !v.is_null())
    };
    let synced = crate::support::eventually(Duration::from_secs(60), || {
        live.iter().all(|id| status_of(id).is_some())
    })
    .await;
    assert!(
        synced,
        "the first Salesforce pass did not write back:\n{}",
        d.logs()
    );
    assert_eq!(
        h.sf().stats().owner_changes.len(),
        0,
        "a write changed an owner"
    );
    // The pass's own writes fire Outbound Messages too; they are recorded
    // and ignored as enrichd's own changes. Start from a clean slate.
    h.sf().flush_outbound().await;
    let before = events(&h, "t").await.len();
    h.sf().reset_stats();

    let lead = h
        .sf()
        .create_record(
            enrichd_sim::salesforce::SObject::Lead,
            &[
                ("FirstName", "Ada"),
                ("LastName", "Lovelace"),
                ("Company", "Analytical Engines"),
            ],
        )
        .expect("create a Lead");
    h.sf().flush_outbound().await;
    let deliveries = h.sf().stats().outbound_deliveries;
    assert!(
        deliveries.len() == 1 && deliveries[0].acked,
        "{deliveries:?}\n{}",
        d.logs()
    );
    let stored = events(&h, "t").await;
    assert_eq!(stored.len(), before + 1, "{stored:?}");
    let new = stored
        .iter()
        .find(|e| e.event.dedupe_key == format!("om:{}", deliveries[0].notification_ids[0]))
        .expect("the new Lead's notification");
    assert_eq!(new.event.lead_id.as_str(), lead);
    // The events loop, woken by the delivery, enriches and writes it.
    let written =
        crate::support::eventually(Duration::from_secs(30), || status_of(&lead).is_some()).await;
    assert!(
        written,
        "the Outbound Message did not lead to a write:\n{}",
        d.logs()
    );
    let mut state = String::new();
    for _ in 0..200 {
        state = events(&h, "t")
            .await
            .into_iter()
            .find(|e| e.event.lead_id.as_str() == lead)
            .map(|e| e.state)
            .unwrap_or_default();
        if state == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "done", "the new Lead's event:\n{}", d.logs());

    // enrichd's write fired a message of its own: recorded, then ignored
    // as enrichd's own change (no loop).
    h.sf().flush_outbound().await;
    let mut own = Vec::new();
    for _ in 0..200 {
        own = events(&h, "t")
            .await
            .into_iter()
            .filter(|e| e.event.lead_id.as_str() == lead && e.state != "done")
            .collect();
        if !own.is_empty() && own.iter().all(|e| e.state == "ignored") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !own.is_empty() && own.iter().all(|e| e.state == "ignored"),
        "{own:?}"
    );

    let recorded = events(&h, "t").await.len();
    let (_, xml) = h.sf().outbound_envelope(&lead, None).expect("envelope");
    let (status, _) = post(
        &format!("http://127.0.0.1:{port}/webhooks/salesforce/wrong-token-0123456789"),
        xml,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(events(&h, "t").await.len(), recorded);

    // The admin API's enrich-now serves a Salesforce workspace too: the
    // Lead is read again and is already enriched (nothing charged).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .arg("--config")
        .arg(&h.config_path)
        .args(["apikey", "create", "--workspace", "t", "--format", "json"])
        .envs(&h.secrets)
        .output()
        .expect("run enrichd apikey");
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).expect("apikey JSON");
    let key = key["key"].as_str().expect("key").to_string();
    let r = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/v1/workspaces/t/leads/{lead}/enrich?wait_secs=30"
        ))
        .bearer_auth(&key)
        .send()
        .await
        .expect("admin API");
    assert_eq!(r.status().as_u16(), 200);
    let job: serde_json::Value =
        serde_json::from_str(&r.text().await.unwrap_or_default()).expect("job JSON");
    assert_eq!(job["state"], "done", "{job}\n{}", d.logs());
    assert_eq!(job["result"]["found"], true, "{job}");
    assert_eq!(job["result"]["credits"], 0, "{job}");
    let jobs = h
        .store
        .jobs(&WorkspaceId("t".into()), None, 10)
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");

    let (status, metrics) = http_get(port, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("enrichd_webhook_deliveries_total")
                && l.contains("\"salesforce\"")
                && l.contains("\"accepted\"")),
        "{metrics}"
    );

    let status = d.terminate(Duration::from_secs(15));
    let logs = d.logs();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}:\n{logs}"
    );
    assert!(
        logs.contains("salesforce outbound message recorded"),
        "{logs}"
    );
    assert!(!logs.contains(&token), "the URL token is in the logs");
    for t in h.sf().issued_tokens() {
        assert!(!logs.contains(&t), "a token or session id is in the logs");
    }
}

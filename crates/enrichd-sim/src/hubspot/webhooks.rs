//! Webhook events (reference §5): building `contact.creation` / `contact.propertyChange`
//! events, the background delivery queue (batches of ≤ 100, v3 signatures, retries) and the v3
//! signature itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::mpsc;

use super::Shared;
use super::store::Source;
use super::time::now_ms;

/// HubSpot sends "up to 100" events per request.
pub(crate) const MAX_BATCH: usize = 100;
/// HubSpot retries up to 10 times over 24 hours; the simulator tries 3 times, 200 ms apart.
pub(crate) const ATTEMPTS: u32 = 3;
pub(crate) const RETRY_DELAY: Duration = Duration::from_millis(200);
/// HubSpot considers a delivery failed when the receiver does not answer within 5 s.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// `base64(HMAC-SHA256(secret, method + uri + body + timestamp))`: the
/// `X-HubSpot-Signature-v3` header (reference §5.4). `uri` is used as given (the caller
/// normalises it, as HubSpot's SDKs expect).
pub fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    match <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(method.as_bytes());
            mac.update(uri.as_bytes());
            mac.update(body);
            mac.update(timestamp.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// `hex(SHA-256(secret + body))`: the legacy `X-HubSpot-Signature` (version `v1`, reference
/// §5.4), which CRM-object subscriptions send next to the v3 signature.
pub fn sign_v1(secret: &str, body: &[u8]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(secret.as_bytes());
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The URI as HubSpot signs it: the percent-escapes listed in reference §5.4 decoded.
pub(crate) fn signed_uri(url: &str) -> String {
    const MAP: &[(&str, &str)] = &[
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut out = url.to_string();
    for (from, to) in MAP {
        out = out.replace(from, to);
        out = out.replace(&from.to_ascii_lowercase(), to);
    }
    out
}

/// The delivery queue (present when a webhook URL is configured).
pub(crate) struct Hooks {
    tx: mpsc::UnboundedSender<Value>,
    /// Events queued and not yet finally delivered (or given up on).
    pub pending: Arc<AtomicU64>,
}

impl Hooks {
    pub(crate) fn push(&self, events: Vec<Value>) {
        for e in events {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if self.tx.send(e).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Start the delivery task; returns the queue handle and the task.
pub(crate) fn start(sh: &Arc<Shared>) -> Option<(Hooks, tokio::task::JoinHandle<()>)> {
    let url = sh.opts.webhook_url.clone()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let pending = Arc::new(AtomicU64::new(0));
    let pend = pending.clone();
    let weak = Arc::downgrade(sh);
    let secret = sh.opts.effective_webhook_secret().to_string();
    let http = sh.http.clone();
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            for attempt in 0..ATTEMPTS {
                for e in batch.iter_mut() {
                    if let Some(o) = e.as_object_mut() {
                        o.insert("attemptNumber".into(), json!(attempt));
                    }
                }
                let body = serde_json::to_vec(&batch).unwrap_or_default();
                let status = post_signed(&http, &url, &secret, body, now_ms(), false)
                    .await
                    .unwrap_or(0);
                if let Some(sh) = weak.upgrade() {
                    sh.ctl().stats.webhook_deliveries.push((status, n));
                }
                if (200..300).contains(&status) {
                    break;
                }
                tracing::debug!(%url, attempt, status, "hubspot sim: webhook delivery failed");
                if attempt + 1 < ATTEMPTS {
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
            pend.fetch_sub(n as u64, Ordering::SeqCst);
        }
    });
    Some((Hooks { tx, pending }, task))
}

/// POST `body` signed with v3; returns the status (0 for a connection error or timeout).
pub(crate) async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    body: Vec<u8>,
    ts_ms: i64,
    omit_signature: bool,
) -> Result<u16, String> {
    post(
        http,
        url,
        secret,
        &body,
        body.clone(),
        ts_ms,
        omit_signature,
    )
    .await
}

/// POST `sent`, with a signature computed over `signed`.
pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    signed: &[u8],
    sent: Vec<u8>,
    ts_ms: i64,
    omit_signature: bool,
) -> Result<u16, String> {
    let ts = ts_ms.to_string();
    let mut rb = http
        .post(url)
        .timeout(TIMEOUT)
        .header("content-type", "application/json")
        .header("X-HubSpot-Request-Timestamp", &ts);
    if !omit_signature {
        let sig = sign_v3(secret, "POST", &signed_uri(url), signed, &ts);
        rb = rb
            .header("X-HubSpot-Signature-v3", sig)
            .header("X-HubSpot-Signature", sign_v1(secret, signed))
            .header("X-HubSpot-Signature-Version", "v1");
    }
    match rb.body(sent).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("webhook POST to {url} failed: {e}")),
    }
}

/// `changeSource` of a write.
fn change_source(s: Source) -> &'static str {
    match s {
        Source::CrmUi => "CRM_UI",
        Source::Integration => "INTEGRATION",
        Source::Api => "API",
        Source::Import => "IMPORT",
    }
}

/// Events for a contact write: `contact.creation` when `created`, and one
/// `contact.propertyChange` per subscribed property in `changed` (name, new value).
pub(crate) fn contact_events(
    sh: &Shared,
    object_id: u64,
    created: bool,
    changed: &[(String, String)],
    source: Source,
    at_ms: i64,
) -> Vec<Value> {
    let mut out = Vec::new();
    if sh.opts.webhook_url.is_none() {
        return out;
    }
    let source_id = (source == Source::Integration).then(|| sh.opts.app_id.to_string());
    let base = |sub_idx: usize, sub_type: &str| {
        let mut m = serde_json::Map::new();
        m.insert("eventId".into(), json!(sh.next_event_id()));
        m.insert("subscriptionId".into(), json!(subscription_id(sub_idx)));
        m.insert("portalId".into(), json!(sh.opts.portal_id));
        m.insert("appId".into(), json!(sh.opts.app_id));
        m.insert("occurredAt".into(), json!(at_ms));
        m.insert("subscriptionType".into(), json!(sub_type));
        m.insert("attemptNumber".into(), json!(0));
        m.insert("objectId".into(), json!(object_id));
        m
    };
    for (i, sub) in sh.opts.subscriptions.iter().enumerate() {
        match sub.event_type.as_str() {
            "contact.creation" if created => {
                let mut m = base(i, "contact.creation");
                m.insert("changeFlag".into(), json!("NEW"));
                m.insert("changeSource".into(), json!(change_source(source)));
                if let Some(s) = &source_id {
                    m.insert("sourceId".into(), json!(s));
                }
                out.push(Value::Object(m));
            }
            "contact.propertyChange" => {
                let Some(prop) = &sub.property else { continue };
                for (name, value) in changed {
                    if name != prop {
                        continue;
                    }
                    let mut m = base(i, "contact.propertyChange");
                    m.insert("propertyName".into(), json!(name));
                    m.insert("propertyValue".into(), json!(value));
                    m.insert("changeSource".into(), json!(change_source(source)));
                    if let Some(s) = &source_id {
                        m.insert("sourceId".into(), json!(s));
                    }
                    out.push(Value::Object(m));
                }
            }
            _ => {}
        }
    }
    out
}

/// The id of the i-th configured subscription.
pub(crate) fn subscription_id(i: usize) -> u64 {
    1_000_001 + i as u64
}

//! `POST /webhooks/hubspot`: signed HubSpot webhook deliveries
//! (reference hubspot.md §5, product §3.8).
//!
//! Order of work for a delivery:
//! 1. the v3 signature (`X-HubSpot-Signature-v3`, any header-name case) is
//!    checked over the raw body and the *public* URL of this endpoint
//!    (`WebhookState::public_url` + the request's query string, normalised
//!    per §5.4 step 2), with the millisecond timestamp inside ±5 minutes.
//!    Nothing in the body is looked at before that; any failure is `401`;
//! 2. the body is parsed: not a JSON array, or more than 100 events → `400`.
//!    A malformed *element* does not fail the batch: it is skipped with a
//!    reason (logged, counted as `rejected`), the rest goes on;
//! 3. each event must name a portal that is configured *and* trusts the
//!    secret that verified the signature; other events are skipped with a
//!    warning (`rejected`);
//! 4. the events are recorded through the [`EventSink`] (deduplicated there
//!    by [`dedupe_key`]; repeats inside one batch are collapsed here) and
//!    only then is `200 {"accepted":n,"duplicates":m,"rejected":k}` sent. A
//!    sink error is `503`, so HubSpot retries the delivery later.
//!
//! Legacy v1/v2 signatures are not accepted (product §3.8 asks for v3);
//! [`signature_v1`] and [`signature_v2`] exist only to reproduce HubSpot's
//! published test vectors and for simulators.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::core::lead::{LeadId, WorkspaceId};
use crate::core::value::UnixMillis;
use crate::crm::{CrmEvent, EventSink};
use crate::metrics::Rejection;
use crate::secret::Secret;

/// The route this module serves.
pub const PATH: &str = "/webhooks/hubspot";
/// v3 signature header (HubSpot writes `-v3` and `-V3`; `HeaderMap` lookups
/// are case-insensitive).
pub const SIGNATURE_V3_HEADER: &str = "x-hubspot-signature-v3";
/// Milliseconds since the epoch, as a decimal string.
pub const TIMESTAMP_HEADER: &str = "x-hubspot-request-timestamp";
/// A delivery older (or further in the future) than this is refused (§5.4 step 1).
pub const MAX_SKEW_MS: i64 = 300_000;
/// HubSpot sends at most 100 events per request (§5.2).
pub const MAX_EVENTS: usize = 100;
/// 100 events whose property values may each be long text; anything bigger
/// is refused (413) before the signature is even computed.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Standard base64; padding optional (HubSpot pads, proxies sometimes strip).
const B64_SIG: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------

/// Why a delivery's signature was refused. Messages never contain the
/// secret or the signature value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header X-HubSpot-Signature-v3 (only v3 signatures are accepted)")]
    MissingSignature,
    #[error("missing header X-HubSpot-Request-Timestamp")]
    MissingTimestamp,
    #[error("header X-HubSpot-Request-Timestamp is not an integer number of milliseconds")]
    BadTimestamp,
    #[error(
        "stale delivery: its timestamp is {age_ms} ms old, more than the {MAX_SKEW_MS} ms allowed \
         (a replay, or this host's clock is wrong)"
    )]
    Stale { age_ms: i64 },
    #[error(
        "delivery timestamp is {ahead_ms} ms in the future, more than the {MAX_SKEW_MS} ms \
         allowed (check this host's clock)"
    )]
    Future { ahead_ms: i64 },
    #[error("header X-HubSpot-Signature-v3 is not base64 of a 32-byte HMAC-SHA256")]
    MalformedSignature,
    #[error(
        "signature does not match: body, URL or secret differ (is the public URL of this \
         endpoint configured exactly as in the HubSpot app, and the app's client secret current?)"
    )]
    Mismatch,
    #[error("no HubSpot app secret is configured, so no delivery can be verified")]
    NoSecret,
}

/// Decodes exactly the escapes listed in reference §5.4 step 2 (hex digits
/// in either case) and leaves everything else, including other `%XX`
/// escapes, untouched. Idempotent: none of the decoded characters is `%`.
pub fn normalize_uri(uri: &str) -> String {
    let b = uri.as_bytes();
    let mut out = String::with_capacity(uri.len());
    let mut i = 0;
    let mut copied_to = 0;
    while i < b.len() {
        if let Some(c) = listed_escape(b, i) {
            // `i` and `i + 3` sit next to ASCII bytes: valid char boundaries.
            out.push_str(&uri[copied_to..i]);
            out.push(c);
            i += 3;
            copied_to = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&uri[copied_to..]);
    out
}

/// The character of a §5.4 escape starting at `b[i]`, if there is one.
fn listed_escape(b: &[u8], i: usize) -> Option<char> {
    let hex = |c: u8| (c as char).to_digit(16);
    if b.get(i) != Some(&b'%') {
        return None;
    }
    let code = hex(*b.get(i + 1)?)? << 4 | hex(*b.get(i + 2)?)?;
    match code {
        0x3A => Some(':'),
        0x2F => Some('/'),
        0x3F => Some('?'),
        0x40 => Some('@'),
        0x21 => Some('!'),
        0x24 => Some('$'),
        0x27 => Some('\''),
        0x28 => Some('('),
        0x29 => Some(')'),
        0x2A => Some('*'),
        0x2C => Some(','),
        0x3B => Some(';'),
        _ => None,
    }
}

/// HMAC-SHA256 keyed with the secret over `METHOD + uri + body + timestamp`
/// (§5.4 step 3). `uri` is used as given (see [`normalize_uri`]). `None`
/// only if the key were refused, which HMAC never does (any length is valid).
fn mac_v3(
    secret: &[u8],
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: &str,
) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    mac.update(method.to_ascii_uppercase().as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    Some(mac)
}

/// The v3 signature (standard base64 with padding) HubSpot would send.
/// `uri` is used exactly as given: pass it through [`normalize_uri`] first
/// when it comes from a request. (Empty only in the impossible case of
/// HMAC refusing a key; an empty string never verifies.)
pub fn signature_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    mac_v3(secret.as_bytes(), method, uri, body, timestamp)
        .map(|m| STANDARD.encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Legacy v1: `hex(SHA-256(secret + body))`. Not accepted by [`router`].
pub fn signature_v1(secret: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(body);
    hex(&h.finalize())
}

/// Legacy v2: `hex(SHA-256(secret + METHOD + uri + body))`. Not accepted by
/// [`router`].
pub fn signature_v2(secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(method.to_ascii_uppercase().as_bytes());
    h.update(uri.as_bytes());
    h.update(body);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a v3 signature. `public_uri` is the full URL HubSpot posted to
/// (scheme, host, path, query), as configured in the app, not as seen
/// behind a proxy; it is normalised here.
pub fn verify_v3(
    secret: &Secret,
    method: &str,
    public_uri: &str,
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    now_ms: i64,
) -> Result<(), SignatureError> {
    verify_v3_any(
        std::slice::from_ref(secret),
        method,
        public_uri,
        body,
        timestamp,
        signature,
        now_ms,
    )
    .map(|_| ())
}

/// [`verify_v3`] against several secrets (rotation: old and new client
/// secret both valid for a while). Returns the index of the secret that
/// matched. Header presence and the time window are checked first, once.
pub fn verify_v3_any(
    secrets: &[Secret],
    method: &str,
    public_uri: &str,
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    now_ms: i64,
) -> Result<usize, SignatureError> {
    let signature = signature.ok_or(SignatureError::MissingSignature)?;
    let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let age_ms = now_ms.saturating_sub(ts);
    if age_ms > MAX_SKEW_MS {
        return Err(SignatureError::Stale { age_ms });
    }
    // HubSpot's rule (and the Python SDK) only bounds the age, so a
    // timestamp far in the future passes there. We refuse it: the window is
    // what limits how long a captured delivery can be replayed, and a
    // future timestamp would stretch it by however far ahead it is. Five
    // minutes of clock skew either way is tolerated.
    if -age_ms > MAX_SKEW_MS {
        return Err(SignatureError::Future { ahead_ms: -age_ms });
    }
    let sig = B64_SIG
        .decode(signature.trim())
        .map_err(|_| SignatureError::MalformedSignature)?;
    if sig.len() != 32 {
        return Err(SignatureError::MalformedSignature);
    }
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let uri = normalize_uri(public_uri);
    secrets
        .iter()
        .position(|s| {
            mac_v3(s.expose().as_bytes(), method, &uri, body, timestamp)
                .is_some_and(|m| m.verify_slice(&sig).is_ok())
        })
        .ok_or(SignatureError::Mismatch)
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// One event of a delivery (§5.2).
#[derive(Debug, Clone, PartialEq)]
pub struct HubSpotEvent {
    /// Not unique on its own (see [`dedupe_key`]).
    pub event_id: u64,
    pub subscription_id: u64,
    /// The account (hub) the event is about: events are routed by it.
    pub portal_id: u64,
    /// Absent in some payloads; not needed for routing.
    pub app_id: Option<u64>,
    pub occurred_at: UnixMillis,
    /// e.g. `contact.propertyChange`; read from `subscriptionType`, or from
    /// `eventType` when only that is present.
    pub subscription_type: String,
    /// 0 on the first attempt; 0 when absent.
    pub attempt_number: u32,
    pub object_id: u64,
    pub property_name: Option<String>,
    pub property_value: Option<String>,
    pub change_source: Option<String>,
    pub change_flag: Option<String>,
    pub source_id: Option<String>,
    /// The element exactly as delivered.
    pub raw: Value,
}

/// Why a delivery body as a whole was refused (`400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is a JSON {0}, not an array of events")]
    NotArray(&'static str),
    #[error("the body holds {0} events; HubSpot sends at most {MAX_EVENTS} per request")]
    TooMany(usize),
}

/// An element of a batch that could not be read; the rest of the batch
/// is unaffected.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedEvent {
    /// Position in the delivered array (0-based).
    pub index: usize,
    pub reason: String,
    pub raw: Value,
}

/// A parsed delivery: the events that could be read, and the elements that
/// could not (with why). A malformed element never fails the batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedBatch {
    pub events: Vec<HubSpotEvent>,
    pub rejected: Vec<RejectedEvent>,
}

/// Parses a delivery body: a JSON array of at most [`MAX_EVENTS`] events.
/// The body must already be authenticated.
pub fn parse_events(body: &[u8]) -> Result<ParsedBatch, EventError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    let items = match v {
        Value::Array(items) => items,
        other => return Err(EventError::NotArray(json_kind(&other))),
    };
    if items.len() > MAX_EVENTS {
        return Err(EventError::TooMany(items.len()));
    }
    let mut batch = ParsedBatch::default();
    for (index, item) in items.into_iter().enumerate() {
        match parse_event(&item) {
            Ok(e) => batch.events.push(e),
            Err(reason) => batch.rejected.push(RejectedEvent {
                index,
                reason,
                raw: item,
            }),
        }
    }
    Ok(batch)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn parse_event(item: &Value) -> Result<HubSpotEvent, String> {
    let Value::Object(o) = item else {
        return Err(format!(
            "event is a JSON {}, not an object",
            json_kind(item)
        ));
    };
    let subscription_type = match (opt_str(o, "subscriptionType")?, opt_str(o, "eventType")?) {
        (Some(t), _) | (None, Some(t)) if !t.is_empty() => t,
        _ => return Err("missing `subscriptionType` (or `eventType`)".into()),
    };
    let attempt_number = match opt_u64(o, "attemptNumber")? {
        None => 0,
        Some(n) => u32::try_from(n).map_err(|_| "`attemptNumber` is out of range".to_string())?,
    };
    let occurred_at = req_u64(o, "occurredAt")?;
    let occurred_at =
        i64::try_from(occurred_at).map_err(|_| "`occurredAt` is out of range".to_string())?;
    Ok(HubSpotEvent {
        event_id: req_u64(o, "eventId")?,
        subscription_id: req_u64(o, "subscriptionId")?,
        portal_id: req_u64(o, "portalId")?,
        app_id: opt_u64(o, "appId")?,
        occurred_at,
        subscription_type,
        attempt_number,
        object_id: req_u64(o, "objectId")?,
        property_name: opt_str(o, "propertyName")?,
        property_value: opt_scalar(o, "propertyValue")?,
        change_source: opt_scalar(o, "changeSource")?,
        change_flag: opt_scalar(o, "changeFlag")?,
        source_id: opt_scalar(o, "sourceId")?,
        raw: item.clone(),
    })
}

/// A non-negative integer, as a JSON number or a decimal string.
fn opt_u64(o: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` is not a non-negative integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("`{key}` is not a non-negative integer")),
        Some(other) => Err(format!("`{key}` is a {}, not a number", json_kind(other))),
    }
}

fn req_u64(o: &Map<String, Value>, key: &str) -> Result<u64, String> {
    opt_u64(o, key)?.ok_or_else(|| format!("missing `{key}`"))
}

fn opt_str(o: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{key}` is a {}, not a string", json_kind(other))),
    }
}

/// A string; numbers and booleans are accepted and written as JSON text.
fn opt_scalar(o: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
        Some(other) => Err(format!("`{key}` is a {}, not a string", json_kind(other))),
    }
}

/// `eventId` alone is "not guaranteed to be unique" (§5.2), so the key is
/// `(subscriptionId, eventId, objectId, occurredAt, propertyName)` (§9),
/// written `<sub>:<event>:<object>:<occurredAt>:<property>` (property
/// last, so a `:` inside it cannot make two keys collide).
pub fn dedupe_key(e: &HubSpotEvent) -> String {
    format!(
        "{}:{}:{}:{}:{}",
        e.subscription_id,
        e.event_id,
        e.object_id,
        e.occurred_at,
        e.property_name.as_deref().unwrap_or("")
    )
}

pub fn to_crm_event(workspace: &WorkspaceId, e: &HubSpotEvent) -> CrmEvent {
    CrmEvent {
        workspace: workspace.clone(),
        crm: "hubspot".into(),
        dedupe_key: dedupe_key(e),
        lead_id: LeadId(e.object_id.to_string()),
        kind: e.subscription_type.clone(),
        property: e.property_name.clone(),
        value: e.property_value.clone(),
        occurred_at: e.occurred_at,
        payload: e.raw.clone(),
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A HubSpot account (portal) whose deliveries are accepted.
#[derive(Debug, Clone)]
pub struct PortalRoute {
    pub workspace: WorkspaceId,
    /// The app's client secret(s); several during a rotation.
    pub secrets: Vec<Secret>,
}

pub struct WebhookState {
    /// portalId → where its events go.
    pub portals: HashMap<u64, PortalRoute>,
    /// The public URI of this endpoint exactly as configured in the HubSpot
    /// app, e.g. `https://enrichd.example.com/webhooks/hubspot` (what HubSpot
    /// signed, whatever proxies sit in between). A query part, if any, is
    /// ignored: the request's own query string is appended.
    pub public_url: String,
    pub sink: Arc<dyn EventSink>,
    pub clock: Arc<dyn Clock>,
}

pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route(PATH, post(deliver))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// The URL HubSpot signed: the configured public URL (without any query of
/// its own) plus this request's query string.
fn signed_uri(public_url: &str, uri: &Uri) -> String {
    let base = public_url.split('?').next().unwrap_or(public_url);
    match uri.query() {
        Some(q) => format!("{base}?{q}"),
        None => base.to_string(),
    }
}

type Answer = (StatusCode, Json<Value>);

fn error(status: StatusCode, message: String) -> Answer {
    (status, Json(json!({ "error": message })))
}

/// The metrics label of a refused signature.
fn rejection(e: &SignatureError) -> Rejection {
    match e {
        SignatureError::MissingTimestamp
        | SignatureError::BadTimestamp
        | SignatureError::Stale { .. }
        | SignatureError::Future { .. } => Rejection::Timestamp,
        SignatureError::NoSecret => Rejection::NoPortal,
        SignatureError::MissingSignature
        | SignatureError::MalformedSignature
        | SignatureError::Mismatch => Rejection::Signature,
    }
}

async fn deliver(
    State(state): State<Arc<WebhookState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    // A header that is not visible ASCII is treated as present but invalid.
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));

    // 1. Signature, before anything in the body is trusted. Every distinct
    // secret is tried once (normally there is one app secret shared by all
    // portals).
    let mut secrets: Vec<Secret> = Vec::new();
    for route in state.portals.values() {
        for s in &route.secrets {
            if !secrets.contains(s) {
                secrets.push(s.clone());
            }
        }
    }
    let matched = match verify_v3_any(
        &secrets,
        "POST",
        &signed_uri(&state.public_url, &uri),
        &body,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_V3_HEADER),
        state.clock.now(),
    ) {
        Ok(i) => &secrets[i],
        Err(e) => {
            if e == SignatureError::NoSecret {
                tracing::error!(reason = %e, "hubspot webhook rejected: no portal configured");
            } else {
                tracing::warn!(reason = %e, bytes = body.len(), "hubspot webhook rejected");
            }
            crate::metrics::metrics().webhook_rejected("hubspot", rejection(&e));
            return error(StatusCode::UNAUTHORIZED, e.to_string());
        }
    };
    // Portals that trust the secret that signed this delivery.
    let trusted: HashSet<u64> = state
        .portals
        .iter()
        .filter(|(_, r)| r.secrets.contains(matched))
        .map(|(id, _)| *id)
        .collect();

    // 2. Body.
    let batch = match parse_events(&body) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(reason = %e, "hubspot webhook: bad body");
            crate::metrics::metrics().webhook_rejected("hubspot", Rejection::Malformed);
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let mut rejected = batch.rejected.len();
    for r in &batch.rejected {
        tracing::warn!(
            index = r.index,
            reason = %r.reason,
            "hubspot webhook: malformed event skipped"
        );
    }

    // 3. Route, collapsing repeats inside the batch.
    let mut seen = HashSet::new();
    let mut in_batch_duplicates = 0;
    let mut events = Vec::with_capacity(batch.events.len());
    for e in &batch.events {
        let route = match state.portals.get(&e.portal_id) {
            Some(r) if trusted.contains(&e.portal_id) => r,
            Some(_) => {
                tracing::warn!(
                    portal = e.portal_id,
                    event = e.event_id,
                    "hubspot webhook: event for a portal whose secret did not sign this delivery; skipped"
                );
                rejected += 1;
                continue;
            }
            None => {
                tracing::warn!(
                    portal = e.portal_id,
                    event = e.event_id,
                    "hubspot webhook: event for an unknown portal (not connected to any workspace); skipped"
                );
                rejected += 1;
                continue;
            }
        };
        let ev = to_crm_event(&route.workspace, e);
        if seen.insert((ev.workspace.clone(), ev.dedupe_key.clone())) {
            events.push(ev);
        } else {
            in_batch_duplicates += 1;
        }
    }

    // 4. Durable record, then the answer.
    let recorded = if events.is_empty() {
        crate::crm::Recorded::default()
    } else {
        let n = events.len();
        match state.sink.record(events).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, events = n, "hubspot webhook: could not record events");
                crate::metrics::metrics().webhook_rejected("hubspot", Rejection::Store);
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "could not record the events; retry later".into(),
                );
            }
        }
    };
    let duplicates = recorded.duplicates + in_batch_duplicates;
    tracing::info!(
        accepted = recorded.inserted,
        duplicates,
        rejected,
        "hubspot webhook delivery recorded"
    );
    let metrics = crate::metrics::metrics();
    metrics.webhook_accepted("hubspot");
    metrics.webhook_events(
        "hubspot",
        recorded.inserted as u64,
        duplicates as u64,
        rejected as u64,
    );
    (
        StatusCode::OK,
        Json(json!({
            "accepted": recorded.inserted,
            "duplicates": duplicates,
            "rejected": rejected,
        })),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::clock::ManualClock;
    use crate::crm::{Recorded, SinkFuture};
    use crate::store::StoreError;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URL: &str = "https://www.example.com/webhook_uri";
    const V3_BODY: &[u8] = b"{'example_field':'example_value'}";
    const V3_TS: &str = "1693657560000";
    const V3_SIG: &str = "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=";
    /// §5.2 example (HubSpot's signature test-vector body).
    const EXAMPLE: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;

    fn secret() -> Secret {
        Secret::new(SECRET)
    }

    fn now() -> i64 {
        V3_TS.parse().unwrap()
    }

    // --- signatures ---------------------------------------------------------

    #[test]
    fn v3_test_vector() {
        assert_eq!(signature_v3(SECRET, "POST", URL, V3_BODY, V3_TS), V3_SIG);
        // The method is upper-cased as HubSpot does.
        assert_eq!(signature_v3(SECRET, "post", URL, V3_BODY, V3_TS), V3_SIG);
        assert_eq!(
            verify_v3(
                &secret(),
                "POST",
                URL,
                V3_BODY,
                Some(V3_TS),
                Some(V3_SIG),
                now()
            ),
            Ok(())
        );
        // At both edges of the window.
        for at in [now() + MAX_SKEW_MS, now() - MAX_SKEW_MS] {
            assert_eq!(
                verify_v3(
                    &secret(),
                    "POST",
                    URL,
                    V3_BODY,
                    Some(V3_TS),
                    Some(V3_SIG),
                    at
                ),
                Ok(())
            );
        }
        // Without padding too.
        let unpadded = V3_SIG.trim_end_matches('=');
        assert_eq!(
            verify_v3(
                &secret(),
                "POST",
                URL,
                V3_BODY,
                Some(V3_TS),
                Some(unpadded),
                now()
            ),
            Ok(())
        );
    }

    #[test]
    fn v1_v2_test_vectors() {
        assert_eq!(
            signature_v1(SECRET, EXAMPLE.as_bytes()),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
        assert_eq!(
            signature_v1(SECRET, V3_BODY),
            "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
        );
        assert_eq!(
            signature_v2(SECRET, "GET", URL, b""),
            "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
        );
        assert_eq!(
            signature_v2(SECRET, "POST", URL, br#"{"example_field":"example_value"}"#),
            "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900"
        );
        assert_eq!(
            signature_v2(SECRET, "POST", URL, V3_BODY),
            "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"
        );
    }

    fn check(
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), SignatureError> {
        verify_v3(&secret(), "POST", URL, body, ts, sig, now_ms)
    }

    #[test]
    fn v3_rejections() {
        let ts = Some(V3_TS);
        let sig = Some(V3_SIG);
        // Stale (just over 5 minutes) and future (just over 5 minutes).
        assert_eq!(
            check(ts, sig, V3_BODY, now() + MAX_SKEW_MS + 1),
            Err(SignatureError::Stale {
                age_ms: MAX_SKEW_MS + 1
            })
        );
        assert_eq!(
            check(ts, sig, V3_BODY, now() - MAX_SKEW_MS - 1),
            Err(SignatureError::Future {
                ahead_ms: MAX_SKEW_MS + 1
            })
        );
        // Tampered body.
        assert_eq!(
            check(ts, sig, b"{'example_field':'example_valuE'}", now()),
            Err(SignatureError::Mismatch)
        );
        // Wrong secret.
        assert_eq!(
            verify_v3(
                &Secret::new("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"),
                "POST",
                URL,
                V3_BODY,
                ts,
                sig,
                now()
            ),
            Err(SignatureError::Mismatch)
        );
        // Another URL, method, or timestamp (inside the window) → mismatch.
        assert_eq!(
            verify_v3(
                &secret(),
                "POST",
                "https://www.example.com/other",
                V3_BODY,
                ts,
                sig,
                now()
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_v3(&secret(), "PUT", URL, V3_BODY, ts, sig, now()),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some("1693657560001"), sig, V3_BODY, now()),
            Err(SignatureError::Mismatch)
        );
        // Missing headers.
        assert_eq!(
            check(ts, None, V3_BODY, now()),
            Err(SignatureError::MissingSignature)
        );
        assert_eq!(
            check(None, sig, V3_BODY, now()),
            Err(SignatureError::MissingTimestamp)
        );
        // Timestamp not an integer (seconds with a fraction, text, empty).
        for bad in ["1693657560.000", "yesterday", "", "1e12"] {
            assert_eq!(
                check(Some(bad), sig, V3_BODY, now()),
                Err(SignatureError::BadTimestamp)
            );
        }
        // Signature not base64, or base64 of the wrong length (hex v2-style).
        for bad in [
            "not base64!!",
            "",
            "AAAA",
            "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e",
        ] {
            assert_eq!(
                check(ts, Some(bad), V3_BODY, now()),
                Err(SignatureError::MalformedSignature),
                "{bad}"
            );
        }
        // No secret at all.
        assert_eq!(
            verify_v3_any(&[], "POST", URL, V3_BODY, ts, sig, now()),
            Err(SignatureError::NoSecret)
        );
        // Messages never carry the secret or the signature.
        for e in [SignatureError::Mismatch, SignatureError::MalformedSignature] {
            let m = e.to_string();
            assert!(!m.contains(SECRET) && !m.contains(V3_SIG), "{m}");
        }
    }

    #[test]
    fn v3_secret_rotation() {
        let secrets = [Secret::new("old-secret"), secret()];
        assert_eq!(
            verify_v3_any(
                &secrets,
                "POST",
                URL,
                V3_BODY,
                Some(V3_TS),
                Some(V3_SIG),
                now()
            ),
            Ok(1)
        );
        assert_eq!(
            verify_v3_any(
                &secrets[..1],
                "POST",
                URL,
                V3_BODY,
                Some(V3_TS),
                Some(V3_SIG),
                now()
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn uri_normalisation() {
        assert_eq!(
            normalize_uri(
                "https://x.io/h?a=%3A%2F%3F%40%21%24%27%28%29%2A%2C%3B&b=%3a%2f%3f%40%2a%2c%3b"
            ),
            "https://x.io/h?a=:/?@!$'()*,;&b=:/?@*,;"
        );
        // Everything else is left alone, including other escapes, a
        // double-escaped `%253A`, a truncated escape and non-ASCII text.
        for same in [
            "https://x.io/h?q=a%20b%2Bc%3Dd%26e%25",
            "https://x.io/h?q=%253A",
            "https://x.io/h?q=%3",
            "https://x.io/h?q=%",
            "https://x.io/h?q=%zz%3",
            "https://x.io/ü?q=é",
            "",
        ] {
            assert_eq!(normalize_uri(same), same);
        }
        assert_eq!(normalize_uri("%3A%3a%3"), "::%3");
        assert_eq!(normalize_uri("ü%40ü"), "ü@ü");
        // Idempotent.
        let once = normalize_uri("https://x.io/h?u=https%3A%2F%2Fa.b%2Fc%253A");
        assert_eq!(once, "https://x.io/h?u=https://a.b/c%253A");
        assert_eq!(normalize_uri(&once), once);
        // verify_v3 normalises the URI it is given.
        let signed = signature_v3(SECRET, "POST", "https://x.io/h?u=a:b", V3_BODY, V3_TS);
        assert_eq!(
            verify_v3(
                &secret(),
                "POST",
                "https://x.io/h?u=a%3Ab",
                V3_BODY,
                Some(V3_TS),
                Some(&signed),
                now()
            ),
            Ok(())
        );
    }

    // --- events -------------------------------------------------------------

    #[test]
    fn parses_the_reference_example() {
        let b = parse_events(EXAMPLE.as_bytes()).unwrap();
        assert!(b.rejected.is_empty());
        let e = &b.events[0];
        assert_eq!(
            (e.event_id, e.subscription_id, e.portal_id, e.app_id),
            (1, 12345, 62515, Some(54321))
        );
        assert_eq!(e.occurred_at, 1564113600000);
        assert_eq!(e.subscription_type, "contact.creation");
        assert_eq!((e.attempt_number, e.object_id), (0, 123));
        assert_eq!(e.change_source.as_deref(), Some("CRM"));
        assert_eq!(e.change_flag.as_deref(), Some("NEW"));
        assert_eq!(
            (e.property_name.clone(), e.property_value.clone()),
            (None, None)
        );
        assert_eq!(e.source_id, None);
        assert_eq!(e.raw["appId"], 54321);
        assert_eq!(dedupe_key(e), "12345:1:123:1564113600000:");

        let c = to_crm_event(&WorkspaceId("acme".into()), e);
        assert_eq!(c.workspace.as_str(), "acme");
        assert_eq!(c.crm, "hubspot");
        assert_eq!(c.lead_id.as_str(), "123");
        assert_eq!(c.kind, "contact.creation");
        assert_eq!(c.occurred_at, 1564113600000);
        assert_eq!(c.payload, e.raw);
        assert_eq!(c.dedupe_key, dedupe_key(e));
    }

    #[test]
    fn property_change_and_event_type_alias() {
        let body = br#"[{"eventId":"7","subscriptionId":2,"portalId":3,"occurredAt":4,"eventType":"contact.propertyChange","attemptNumber":2,"objectId":"55","propertyName":"email","propertyValue":"a@b.io","changeSource":"CRM_UI","sourceId":"userId:1"}]"#;
        let b = parse_events(body).unwrap();
        assert!(b.rejected.is_empty(), "{:?}", b.rejected);
        let e = &b.events[0];
        assert_eq!(e.subscription_type, "contact.propertyChange");
        assert_eq!((e.event_id, e.object_id, e.attempt_number), (7, 55, 2));
        assert_eq!(e.app_id, None);
        assert_eq!(e.property_name.as_deref(), Some("email"));
        assert_eq!(e.property_value.as_deref(), Some("a@b.io"));
        assert_eq!(e.source_id.as_deref(), Some("userId:1"));
        assert_eq!(dedupe_key(e), "2:7:55:4:email");
        let c = to_crm_event(&WorkspaceId("w".into()), e);
        assert_eq!(
            (c.property.as_deref(), c.value.as_deref()),
            (Some("email"), Some("a@b.io"))
        );
        // Same event id, other property → another key.
        let mut other = e.clone();
        other.property_name = Some("firstname".into());
        assert_ne!(dedupe_key(&other), dedupe_key(e));
    }

    fn event_json(i: u64) -> Value {
        json!({"eventId": i, "subscriptionId": 1, "portalId": 62515, "occurredAt": 1_000 + i,
               "subscriptionType": "contact.creation", "attemptNumber": 0, "objectId": 100 + i,
               "appId": 9})
    }

    #[test]
    fn batch_limits() {
        let hundred = Value::Array((0..100).map(event_json).collect()).to_string();
        assert_eq!(parse_events(hundred.as_bytes()).unwrap().events.len(), 100);
        let too_many = Value::Array((0..101).map(event_json).collect()).to_string();
        assert_eq!(
            parse_events(too_many.as_bytes()),
            Err(EventError::TooMany(101))
        );
        assert_eq!(parse_events(b"[]").unwrap(), ParsedBatch::default());
        assert_eq!(parse_events(b"{}"), Err(EventError::NotArray("object")));
        assert!(matches!(parse_events(b"[1,"), Err(EventError::NotJson(_))));
        assert!(matches!(parse_events(b""), Err(EventError::NotJson(_))));
    }

    #[test]
    fn malformed_elements_do_not_fail_the_batch() {
        let body = json!([
            event_json(1),
            5,
            {"eventId": 2, "subscriptionId": 1, "portalId": 62515, "occurredAt": 1,
             "objectId": 3},
            {"eventId": -1, "subscriptionId": 1, "portalId": 62515, "occurredAt": 1,
             "subscriptionType": "contact.creation", "objectId": 3},
            {"eventId": 3, "subscriptionId": 1, "portalId": 62515, "occurredAt": 1,
             "subscriptionType": "contact.creation", "objectId": {"id": 3}},
            {"eventId": 4, "subscriptionId": 1, "occurredAt": 1,
             "subscriptionType": "contact.creation", "objectId": 3},
            {"eventId": 5, "subscriptionId": 1, "portalId": 62515, "occurredAt": 1,
             "subscriptionType": "contact.propertyChange", "objectId": 3, "propertyName": 12},
            event_json(2),
        ])
        .to_string();
        let b = parse_events(body.as_bytes()).unwrap();
        assert_eq!(
            b.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let reasons: Vec<(usize, &str)> = b
            .rejected
            .iter()
            .map(|r| (r.index, r.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (1, "event is a JSON number, not an object"),
                (2, "missing `subscriptionType` (or `eventType`)"),
                (3, "`eventId` is not a non-negative integer"),
                (4, "`objectId` is a object, not a number"),
                (5, "missing `portalId`"),
                (6, "`propertyName` is a number, not a string"),
            ]
        );
        assert_eq!(b.rejected[0].raw, json!(5));
    }

    // --- HTTP ---------------------------------------------------------------

    const PUBLIC: &str = "https://enrichd.example.com/webhooks/hubspot";
    const NOW: i64 = 1_750_000_000_000;

    /// Collects events in memory, deduplicated by (workspace, key).
    #[derive(Default)]
    struct MemSink {
        events: Mutex<Vec<CrmEvent>>,
        fail: AtomicBool,
    }

    impl MemSink {
        fn stored(&self) -> Vec<CrmEvent> {
            self.events.lock().unwrap().clone()
        }
    }

    impl EventSink for MemSink {
        fn record(&self, events: Vec<CrmEvent>) -> SinkFuture<'_> {
            Box::pin(async move {
                if self.fail.load(Ordering::SeqCst) {
                    return Err(StoreError::Db {
                        op: "record crm events",
                        source: sqlx::Error::PoolTimedOut,
                    });
                }
                let mut stored = self.events.lock().unwrap();
                let mut r = Recorded::default();
                for e in events {
                    if stored
                        .iter()
                        .any(|s| s.workspace == e.workspace && s.dedupe_key == e.dedupe_key)
                    {
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

    struct Server {
        base: String,
        sink: Arc<MemSink>,
        client: reqwest::Client,
    }

    async fn serve(portals: Vec<(u64, &str, Vec<&str>)>) -> Server {
        let sink = Arc::new(MemSink::default());
        let state = Arc::new(WebhookState {
            portals: portals
                .into_iter()
                .map(|(id, ws, secrets)| {
                    (
                        id,
                        PortalRoute {
                            workspace: WorkspaceId(ws.into()),
                            secrets: secrets.into_iter().map(Secret::new).collect(),
                        },
                    )
                })
                .collect(),
            public_url: PUBLIC.into(),
            sink: sink.clone(),
            clock: Arc::new(ManualClock::new(NOW)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        Server {
            base: format!("http://{addr}"),
            sink,
            client: reqwest::Client::new(),
        }
    }

    fn default_portals() -> Vec<(u64, &'static str, Vec<&'static str>)> {
        vec![(62515, "acme", vec![SECRET]), (777, "globex", vec![SECRET])]
    }

    struct Delivery {
        query: &'static str,
        body: Vec<u8>,
        ts: Option<String>,
        sig: Option<String>,
        sig_header: &'static str,
    }

    /// A delivery signed as HubSpot would sign it for `PUBLIC` + query.
    fn signed(body: &[u8], query: &'static str, secret: &str, ts: i64) -> Delivery {
        let uri = format!("{PUBLIC}{query}");
        let ts = ts.to_string();
        Delivery {
            query,
            body: body.to_vec(),
            sig: Some(signature_v3(
                secret,
                "POST",
                &normalize_uri(&uri),
                body,
                &ts,
            )),
            ts: Some(ts),
            sig_header: "X-HubSpot-Signature-v3",
        }
    }

    impl Server {
        async fn send(&self, d: &Delivery) -> (u16, Value) {
            let mut req = self
                .client
                .post(format!("{}{PATH}{}", self.base, d.query))
                .header("content-type", "application/json")
                .body(d.body.clone());
            if let Some(ts) = &d.ts {
                req = req.header("X-HubSpot-Request-Timestamp", ts);
            }
            if let Some(sig) = &d.sig {
                req = req.header(d.sig_header, sig);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
    }

    fn batch(events: &[Value]) -> Vec<u8> {
        Value::Array(events.to_vec()).to_string().into_bytes()
    }

    #[tokio::test]
    async fn valid_delivery_is_recorded_then_acknowledged() {
        let s = serve(default_portals()).await;
        let mut other_portal = event_json(3);
        other_portal["portalId"] = json!(777);
        let body = batch(&[event_json(1), event_json(2), other_portal]);
        let (status, answer) = s.send(&signed(&body, "", SECRET, NOW - 1_000)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer,
            json!({"accepted": 3, "duplicates": 0, "rejected": 0})
        );
        let stored = s.sink.stored();
        assert_eq!(stored.len(), 3);
        assert_eq!(stored[0].workspace.as_str(), "acme");
        assert_eq!(stored[0].lead_id.as_str(), "101");
        assert_eq!(stored[0].kind, "contact.creation");
        assert_eq!(stored[2].workspace.as_str(), "globex");
    }

    #[tokio::test]
    async fn example_body_with_upper_case_header_and_query() {
        let s = serve(default_portals()).await;
        // The query is part of what HubSpot signs, after normalisation.
        let mut d = signed(EXAMPLE.as_bytes(), "?src=a%3Ab%2Fc", SECRET, NOW);
        d.sig_header = "X-HubSpot-Signature-V3";
        let (status, answer) = s.send(&d).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["accepted"], 1);
        assert_eq!(s.sink.stored()[0].dedupe_key, "12345:1:123:1564113600000:");
        // Signed without the query → refused.
        let mut d = signed(EXAMPLE.as_bytes(), "", SECRET, NOW);
        d.query = "?src=x";
        assert_eq!(s.send(&d).await.0, 401);
    }

    #[tokio::test]
    async fn bad_signatures_are_401_and_record_nothing() {
        let s = serve(default_portals()).await;
        let body = batch(&[event_json(1)]);
        // Tampered body.
        let mut d = signed(&body, "", SECRET, NOW);
        d.body = batch(&[event_json(2)]);
        let (status, answer) = s.send(&d).await;
        assert_eq!(status, 401);
        assert!(answer["error"].as_str().unwrap().contains("does not match"));
        // Wrong secret.
        assert_eq!(
            s.send(&signed(&body, "", "not-the-secret", NOW)).await.0,
            401
        );
        // Stale and future timestamps.
        let (status, answer) = s
            .send(&signed(&body, "", SECRET, NOW - MAX_SKEW_MS - 1))
            .await;
        assert_eq!(status, 401);
        assert!(answer["error"].as_str().unwrap().contains("stale"));
        assert_eq!(
            s.send(&signed(&body, "", SECRET, NOW + MAX_SKEW_MS + 1))
                .await
                .0,
            401
        );
        // Missing headers.
        let mut d = signed(&body, "", SECRET, NOW);
        d.sig = None;
        assert_eq!(s.send(&d).await.0, 401);
        let mut d = signed(&body, "", SECRET, NOW);
        d.ts = None;
        assert_eq!(s.send(&d).await.0, 401);
        // Signature not base64.
        let mut d = signed(&body, "", SECRET, NOW);
        d.sig = Some("%%%".into());
        assert_eq!(s.send(&d).await.0, 401);
        // A bad body with a bad signature is 401, not 400 (nothing parsed).
        let mut d = signed(b"not json", "", SECRET, NOW);
        d.sig = Some(V3_SIG.into());
        assert_eq!(s.send(&d).await.0, 401);
        // The answer never echoes the secret or the signature.
        let d = signed(&body, "", "not-the-secret", NOW);
        let (_, answer) = s.send(&d).await;
        let text = answer.to_string();
        assert!(!text.contains(SECRET) && !text.contains(d.sig.as_deref().unwrap()));
        assert!(s.sink.stored().is_empty());
    }

    #[tokio::test]
    async fn redelivery_counts_as_duplicates() {
        let s = serve(default_portals()).await;
        let body = batch(&[event_json(1), event_json(2)]);
        let (status, answer) = s.send(&signed(&body, "", SECRET, NOW)).await;
        assert_eq!((status, answer["accepted"].clone()), (200, json!(2)));
        // HubSpot retries with a new timestamp and attemptNumber.
        let mut again = event_json(1);
        again["attemptNumber"] = json!(1);
        let body = batch(&[again, event_json(3), event_json(3)]);
        let (status, answer) = s.send(&signed(&body, "", SECRET, NOW + 60_000)).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer,
            json!({"accepted": 1, "duplicates": 2, "rejected": 0})
        );
        assert_eq!(s.sink.stored().len(), 3);
    }

    #[tokio::test]
    async fn bad_bodies_after_a_good_signature() {
        let s = serve(default_portals()).await;
        let (status, answer) = s.send(&signed(b"{\"a\":1}", "", SECRET, NOW)).await;
        assert_eq!(status, 400);
        assert!(answer["error"].as_str().unwrap().contains("not an array"));
        let body = Value::Array((0..101).map(event_json).collect()).to_string();
        let (status, answer) = s.send(&signed(body.as_bytes(), "", SECRET, NOW)).await;
        assert_eq!(status, 400);
        assert!(answer["error"].as_str().unwrap().contains("101 events"));
        assert_eq!(s.send(&signed(b"[", "", SECRET, NOW)).await.0, 400);
        // Malformed elements and unknown portals are skipped, the rest kept.
        let mut unknown = event_json(9);
        unknown["portalId"] = json!(424242);
        let body = batch(&[event_json(1), json!("junk"), unknown]);
        let (status, answer) = s.send(&signed(&body, "", SECRET, NOW)).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer,
            json!({"accepted": 1, "duplicates": 0, "rejected": 2})
        );
        assert_eq!(s.sink.stored().len(), 1);
        // An empty batch is fine.
        let (status, answer) = s.send(&signed(b"[]", "", SECRET, NOW)).await;
        assert_eq!((status, answer["accepted"].clone()), (200, json!(0)));
    }

    #[tokio::test]
    async fn events_only_go_to_portals_that_trust_the_signing_secret() {
        let s = serve(vec![
            (62515, "acme", vec!["secret-a-old", "secret-a"]),
            (777, "globex", vec!["secret-b"]),
        ])
        .await;
        let mut globex = event_json(2);
        globex["portalId"] = json!(777);
        let body = batch(&[event_json(1), globex]);
        // Signed with acme's (rotated-in) secret: the globex event is refused.
        let (status, answer) = s.send(&signed(&body, "", "secret-a", NOW)).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer,
            json!({"accepted": 1, "duplicates": 0, "rejected": 1})
        );
        let stored = s.sink.stored();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].workspace.as_str(), "acme");
        // The old secret still works during the rotation.
        let body = batch(&[event_json(5)]);
        assert_eq!(s.send(&signed(&body, "", "secret-a-old", NOW)).await.0, 200);
    }

    #[tokio::test]
    async fn sink_failure_is_503_so_hubspot_retries() {
        let s = serve(default_portals()).await;
        s.sink.fail.store(true, Ordering::SeqCst);
        let body = batch(&[event_json(1)]);
        let d = signed(&body, "", SECRET, NOW);
        let (status, answer) = s.send(&d).await;
        assert_eq!(status, 503, "{answer}");
        assert!(s.sink.stored().is_empty());
        // The retry, once the store is back, is recorded.
        s.sink.fail.store(false, Ordering::SeqCst);
        let (status, answer) = s.send(&d).await;
        assert_eq!((status, answer["accepted"].clone()), (200, json!(1)));
    }

    #[tokio::test]
    async fn no_portal_configured_is_401() {
        let s = serve(vec![]).await;
        let body = batch(&[event_json(1)]);
        let (status, answer) = s.send(&signed(&body, "", SECRET, NOW)).await;
        assert_eq!(status, 401);
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("no HubSpot app secret")
        );
    }
}

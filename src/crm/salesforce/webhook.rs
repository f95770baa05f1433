//! `POST /webhooks/salesforce/{token}`: Salesforce Outbound Messages
//! (reference salesforce.md §7.1, product §3.8). The pure work (reading
//! the SOAP, the token and org checks, events, the Ack) is in
//! [`super::outbound`]; this is the HTTP route around it.
//!
//! Order of work for a delivery:
//! 1. the URL's token is looked up among every Salesforce workspace's
//!    `outbound_token` with [`find_route`] (constant time, every token
//!    compared): that is what picks the workspace. Nothing else, not even
//!    the body, is read before that; a wrong or missing token is `401`
//!    with a SOAP fault and nothing is recorded;
//! 2. the body is read up to [`MAX_BODY`] bytes (a larger `Content-Length`
//!    is refused without reading anything, `413`), then parsed: not an
//!    Outbound Message → `400`;
//! 3. the message's `OrganizationId` must be the org the workspace is
//!    connected to: the connection row's `account`, read now (so
//!    `enrichd connect salesforce` while the daemon runs is honoured).
//!    Another org → `403`; a workspace not connected yet → `503` (there is
//!    nothing to check against; Salesforce keeps retrying for 24 h);
//! 4. one [`CrmEvent`] per notification ([`to_crm_events`], dedupe key
//!    `om:<notification Id>`), recorded through the [`EventSink`] — a
//!    redelivery is a duplicate there and recorded once — and only then the
//!    SOAP Ack ([`ACK_BODY`], `200`). A sink error is `503`: no Ack, so
//!    Salesforce redelivers. Notifications that cannot be read (another
//!    object, no Id) are skipped with a warning and the rest acknowledged:
//!    a retry would not make them readable.
//!
//! **enrichd's own changes** ([`super::outbound::OwnChangeRule`]): every
//! notification is recorded as `pending`, own changes included; the
//! handler of recorded events (`process_events`) finishes those whose
//! `LastModifiedById` is the integration user as `ignored`, with the rule's
//! reason, using [`super::outbound::OwnChangeRule::own_change_event`] on
//! the recorded event (its payload carries the fields). The route does not
//! decide it because the integration user's Id is inside the sealed
//! session (this route holds no cipher, and the user changes with a
//! reconnect), and because the store has no "record as ignored" in one
//! statement: recording then finishing would race the woken events loop.
//!
//! Nothing here logs the URL (it carries the token) or the `SessionId`
//! (never copied out of the body by [`parse`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;

use super::outbound::{
    ACK_BODY, CONTENT_TYPE, MAX_BODY, OutboundError, PATH, TokenRoute, check_org, fault_body,
    find_route, parse, to_crm_events,
};
use crate::clock::Clock;
use crate::config::Settings;
use crate::config::crm::CrmSettings;
use crate::crm::{EventSink, Recorded};
use crate::metrics::Rejection;
use crate::store::Store;

/// The route with its token segment (axum syntax).
pub const ROUTE: &str = "/webhooks/salesforce/{token}";

/// What the route needs.
pub struct OutboundState {
    /// One per Salesforce workspace with an `outbound_token`. `org_id` is
    /// not used by the route (left empty by [`outbound_state`]): the
    /// connected org is read from the store at each delivery.
    pub routes: Vec<TokenRoute>,
    /// Where the connected org of a workspace is read.
    pub store: Arc<dyn Store>,
    pub sink: Arc<dyn EventSink>,
    pub clock: Arc<dyn Clock>,
}

/// The routes of every Salesforce workspace of `settings` that has an
/// `outbound_token`. Workspaces sharing a token would make deliveries go to
/// the first of them: that is warned about here (the token is not logged).
pub fn outbound_state(
    settings: &Settings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn EventSink>,
) -> OutboundState {
    let mut routes: Vec<TokenRoute> = Vec::new();
    for ws in &settings.workspaces {
        let Some(CrmSettings::Salesforce(s)) = &ws.crm else {
            continue;
        };
        let Some(token) = s.outbound_token.clone() else {
            tracing::info!(
                workspace = %ws.id,
                "no outbound_token_env for this Salesforce workspace: its Outbound Messages are refused (the scheduled pull still reads every change)"
            );
            continue;
        };
        if let Some(first) = routes.iter().find(|r| r.token == token) {
            tracing::warn!(
                workspace = %ws.id,
                first = %first.workspace,
                "two Salesforce workspaces share one outbound token: Outbound Messages go to the first; give each workspace its own"
            );
        }
        routes.push(TokenRoute {
            workspace: ws.id.clone(),
            token,
            org_id: String::new(),
        });
    }
    OutboundState {
        routes,
        store,
        sink,
        clock,
    }
}

/// `POST /webhooks/salesforce/{token}`, and `POST /webhooks/salesforce`
/// (no token: always refused, with a fault that says why).
pub fn router(state: Arc<OutboundState>) -> Router {
    Router::new()
        .route(ROUTE, post(deliver))
        .route(PATH, post(no_token))
        .with_state(state)
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error("the request body could not be read: {0}")]
    Body(String),
    #[error(
        "this workspace is not connected to Salesforce yet, so the organisation cannot be checked; run `enrichd connect salesforce`"
    )]
    NotConnected,
    #[error("could not {0}; retry later")]
    Store(&'static str),
}

impl DeliveryError {
    fn status(&self) -> StatusCode {
        match self {
            DeliveryError::Outbound(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            DeliveryError::Body(_) => StatusCode::BAD_REQUEST,
            DeliveryError::NotConnected | DeliveryError::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The metrics label.
    fn rejection(&self) -> Rejection {
        match self {
            DeliveryError::Outbound(OutboundError::BadToken | OutboundError::NoToken) => {
                Rejection::Token
            }
            DeliveryError::Outbound(OutboundError::WrongOrg { .. }) => Rejection::Organization,
            DeliveryError::NotConnected => Rejection::NotConnected,
            DeliveryError::Outbound(
                OutboundError::TooLarge(_)
                | OutboundError::Xml(_)
                | OutboundError::Shape(_)
                | OutboundError::TooMany(_),
            )
            | DeliveryError::Body(_) => Rejection::Malformed,
            DeliveryError::Store(_) => Rejection::Store,
        }
    }

    /// The answer: the status and a SOAP fault Salesforce shows in its
    /// outbound-message queue as the failure reason.
    fn answer(&self) -> Response {
        let status = self.status();
        let body = fault_body(&self.to_string(), status.is_client_error());
        (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
    }
}

fn refuse(e: DeliveryError) -> Response {
    let metrics = crate::metrics::metrics();
    metrics.webhook_rejected(super::CRM, e.rejection());
    match &e {
        DeliveryError::Store(_) => {
            tracing::error!(reason = %e, "salesforce outbound message refused");
        }
        DeliveryError::Outbound(OutboundError::NoToken) => {
            tracing::error!(reason = %e, "salesforce outbound message refused");
        }
        _ => tracing::warn!(reason = %e, "salesforce outbound message refused"),
    }
    e.answer()
}

async fn no_token(State(state): State<Arc<OutboundState>>) -> Response {
    // Same answer as a wrong token (or as no token configured at all).
    let e = match find_route("", &state.routes) {
        Err(OutboundError::NoToken) => OutboundError::NoToken,
        _ => OutboundError::BadToken,
    };
    refuse(e.into())
}

/// Reads at most `cap` bytes; more is [`OutboundError::TooLarge`].
async fn read_capped(
    headers: &HeaderMap,
    body: Body,
    cap: usize,
) -> Result<Vec<u8>, DeliveryError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(n) = declared
        && n > cap
    {
        return Err(OutboundError::TooLarge(n).into());
    }
    let mut out: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(cap));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DeliveryError::Body(e.to_string()))?;
        let total = out.len().saturating_add(chunk.len());
        if total > cap {
            return Err(OutboundError::TooLarge(total).into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn deliver(
    State(state): State<Arc<OutboundState>>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // 1. The token picks the workspace; nothing else is looked at before.
    // An undecodable segment is just a wrong token (its text, which may be
    // the token, is never echoed or logged).
    let presented = token.map(|Path(t)| t).unwrap_or_default();
    let route = match find_route(&presented, &state.routes) {
        Ok(r) => r,
        Err(e) => return refuse(e.into()),
    };
    let ws = &route.workspace;

    // 2. Body, bounded, then the SOAP.
    let body = match read_capped(&headers, body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return refuse(e),
    };
    let msg = match parse(&body) {
        Ok(m) => m,
        Err(e) => return refuse(e.into()),
    };

    // 3. The connected org of that workspace.
    let org = match state.store.connection(ws, super::CRM).await {
        Ok(Some(c)) if !c.account.trim().is_empty() => c.account,
        Ok(_) => return refuse(DeliveryError::NotConnected),
        Err(e) => {
            tracing::error!(workspace = %ws, error = %e, "salesforce outbound message: cannot read the connection");
            return refuse(DeliveryError::Store("read the Salesforce connection"));
        }
    };
    if let Err(e) = check_org(&msg, &org) {
        tracing::warn!(workspace = %ws, "salesforce outbound message from another organisation");
        return refuse(e.into());
    }
    for r in &msg.rejected {
        tracing::warn!(
            workspace = %ws,
            index = r.index,
            notification = r.id.as_deref().unwrap_or(""),
            reason = %r.reason,
            "salesforce outbound message: notification skipped"
        );
    }

    // 4. Durable record, then the Ack.
    let events = to_crm_events(ws, &msg, state.clock.now());
    let in_message_duplicates = msg.notifications.len().saturating_sub(events.len());
    let recorded = if events.is_empty() {
        Recorded::default()
    } else {
        let n = events.len();
        match state.sink.record(events).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(workspace = %ws, error = %e, events = n, "salesforce outbound message: could not record the notifications");
                return refuse(DeliveryError::Store("record the notifications"));
            }
        }
    };
    let duplicates = recorded.duplicates + in_message_duplicates;
    tracing::info!(
        workspace = %ws,
        accepted = recorded.inserted,
        duplicates,
        rejected = msg.rejected.len(),
        action = msg.action_id.as_deref().unwrap_or(""),
        "salesforce outbound message recorded"
    );
    let metrics = crate::metrics::metrics();
    metrics.webhook_accepted(super::CRM);
    metrics.webhook_events(
        super::CRM,
        recorded.inserted as u64,
        duplicates as u64,
        msg.rejected.len() as u64,
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        ACK_BODY,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_labels() {
        let cases: Vec<(DeliveryError, u16, Rejection)> = vec![
            (OutboundError::BadToken.into(), 401, Rejection::Token),
            (OutboundError::NoToken.into(), 401, Rejection::Token),
            (
                OutboundError::WrongOrg {
                    got: "00Dxx0000001BAD".into(),
                    expected: "00Dxx0000001gPL".into(),
                }
                .into(),
                403,
                Rejection::Organization,
            ),
            (OutboundError::TooLarge(9).into(), 413, Rejection::Malformed),
            (
                OutboundError::Xml("x".into()).into(),
                400,
                Rejection::Malformed,
            ),
            (
                DeliveryError::Body("reset".into()),
                400,
                Rejection::Malformed,
            ),
            (DeliveryError::NotConnected, 503, Rejection::NotConnected),
            (DeliveryError::Store("record"), 503, Rejection::Store),
        ];
        for (e, status, label) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.rejection(), label, "{e}");
            let r = e.answer();
            assert_eq!(r.status().as_u16(), status);
            assert_eq!(
                r.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
                Some(CONTENT_TYPE.as_bytes())
            );
        }
    }

    #[tokio::test]
    async fn bodies_are_capped() {
        let mut h = HeaderMap::new();
        assert_eq!(
            read_capped(&h, Body::from("abc"), 3).await.ok(),
            Some(b"abc".to_vec())
        );
        assert!(matches!(
            read_capped(&h, Body::from("abcd"), 3).await,
            Err(DeliveryError::Outbound(OutboundError::TooLarge(4)))
        ));
        h.insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        assert!(matches!(
            read_capped(&h, Body::from("a"), 3).await,
            Err(DeliveryError::Outbound(OutboundError::TooLarge(1000)))
        ));
    }
}

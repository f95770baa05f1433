//! `POST /callbacks/<account>/<token>`: async providers deliver results here.
//! Nothing in a delivery is trusted before its signature is checked against
//! the raw body; the token in the URL must name a job of that account with
//! the same job id. The result is stored durably before the answer, so a
//! provider retrying a failed delivery is harmless and a crash loses nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use crate::store::{JobState, WriteOp};

use super::Engine;

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/callbacks/{account}/{token}", post(deliver))
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(engine)
}

async fn deliver(
    State(engine): State<Arc<Engine>>,
    Path((account, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let reject = |status, why: &'static str| {
        engine
            .stats
            .callbacks_rejected
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(account = %account, reason = why, "callback rejected");
        (status, why)
    };
    let Some(finder) = engine.clients.get(&account).and_then(|c| c.finder.clone()) else {
        return reject(StatusCode::NOT_FOUND, "unknown provider account");
    };
    let hdrs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let envelope = match finder.authenticate_callback(&hdrs, &body) {
        Ok(e) => e,
        Err(_) => return reject(StatusCode::UNAUTHORIZED, "signature check failed"),
    };
    let job = match engine.store.job_by_token(&token).await {
        Ok(Some((ws, job))) if job.account == account && job.job_id == envelope.job_id => (ws, job),
        Ok(_) => return reject(StatusCode::NOT_FOUND, "no such job"),
        Err(e) => {
            tracing::error!(error = %e, "callback: store unavailable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "store unavailable, retry later",
            );
        }
    };
    let (ws, job) = job;
    if job.state == JobState::Done {
        // Applied already (a provider retrying a delivery it thinks failed,
        // e.g. to a process that stopped): nothing to store or hand over.
        engine
            .stats
            .callbacks_accepted
            .fetch_add(1, Ordering::Relaxed);
        return (StatusCode::OK, "ok (already applied)");
    }
    if !envelope.finished {
        engine
            .stats
            .callbacks_accepted
            .fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::OK,
            "ok (partial result ignored; waiting for the batch)",
        );
    }
    let op = WriteOp::JobState {
        account: account.clone(),
        job_id: job.job_id.clone(),
        state: JobState::Received,
        result: Some(body.to_vec()),
    };
    if let Err(e) = engine.writer.write(&ws, vec![op]).await {
        tracing::error!(error = %e, "callback: could not store the result");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "could not store the result, retry later",
        );
    }
    engine.hub.deliver(&account, &job.job_id, envelope.body);
    engine
        .stats
        .callbacks_accepted
        .fetch_add(1, Ordering::Relaxed);
    (StatusCode::OK, "ok")
}

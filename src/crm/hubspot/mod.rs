//! HubSpot: OAuth or private-app auth, the API client under HubSpot's limits,
//! incremental pull, the property schema, batched write-back and signed
//! webhooks (reference: shared/reference/hubspot.md).
//!
//! Same shape as every CRM connector: `auth` (connect, tokens), `client`
//! (every call: limits, retries, errors), `pull` (backfill and incremental
//! sync), `schema` (check and create properties), `write` (batched
//! write-back), `webhook` (signed change notifications), `sync` (one pass:
//! pull → enrich → write back).

use crate::core::lead::WorkspaceId;
use crate::store::StoreError;

pub mod auth;
pub mod backfill;
pub mod client;
pub mod limits;
pub mod pull;
pub mod schema;
mod seen;
pub mod sync;
pub mod webhook;
pub mod write;

/// Everything that can go wrong talking to HubSpot, with where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum HubSpotError {
    #[error(
        "workspace `{workspace}` is not connected to HubSpot; run `enrichd connect hubspot --workspace {workspace}`"
    )]
    NotConnected { workspace: WorkspaceId },
    #[error(
        "HubSpot connection of workspace `{workspace}` needs reconnecting: {reason}. Run `enrichd connect hubspot --workspace {workspace}`"
    )]
    ReconnectRequired {
        workspace: WorkspaceId,
        reason: String,
    },
    #[error("HubSpot authentication: {message} ({hint})")]
    Auth { message: String, hint: String },
    #[error(
        "HubSpot {endpoint}: the app lacks the scope(s) {scopes:?}; add them to the app (or the private app's settings) and run `enrichd connect hubspot` again"
    )]
    MissingScopes {
        endpoint: String,
        scopes: Vec<String>,
    },
    #[error(
        "HubSpot {endpoint}: the portal's daily API limit is used up; enrichd resumes after {until} (the portal's midnight)"
    )]
    DailyLimit { endpoint: String, until: String },
    #[error("HubSpot {endpoint} answered {status} {category}: {message}")]
    Api {
        endpoint: String,
        status: u16,
        category: String,
        message: String,
        body: serde_json::Value,
    },
    #[error("HubSpot {endpoint}: {message}")]
    Transport { endpoint: String, message: String },
    #[error("HubSpot {endpoint}: unexpected answer: {message}")]
    Decode { endpoint: String, message: String },
    #[error("HubSpot schema: {0}")]
    Schema(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HubSpotError {
    /// True when nothing will work until a person acts (reconnect, scopes,
    /// configuration): a sync stops instead of retrying.
    pub fn needs_a_person(&self) -> bool {
        matches!(
            self,
            HubSpotError::NotConnected { .. }
                | HubSpotError::ReconnectRequired { .. }
                | HubSpotError::Auth { .. }
                | HubSpotError::MissingScopes { .. }
                | HubSpotError::Schema(_)
        )
    }
}

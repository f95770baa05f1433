//! Salesforce (reference: shared/reference/salesforce.md, cited as §n below).
//!
//! Same shape as `crm::hubspot`. The I/O layer:
//!
//! - [`auth`]: `enrichd connect salesforce` (web-server flow with PKCE and
//!   state and a loopback callback, or the JWT bearer flow), revocation,
//!   and [`auth::Tokens`]: the sealed session (access token bound to its
//!   `instance_url`), one refresh at a time per connection, rotated refresh
//!   tokens persisted before the new access token is used, "reconnect
//!   required" on `invalid_grant`.
//! - [`client`]: every API call — the daily budget gate, the per-org
//!   concurrency semaphore, the session, `Sforce-Call-Options`,
//!   `Sforce-Limit-Info` observed on every answer, refresh-and-retry on
//!   `INVALID_SESSION_ID`, `REQUEST_LIMIT_EXCEEDED` → a typed pause,
//!   transient failures retried with back-off, metrics.
//!
//! The pure, HTTP-free building blocks they (and the pull loop, the
//! write-back runner and the webhook route that come next) call:
//!
//! - [`soql`]: the incremental query on `(SystemModstamp, Id)` with a
//!   lookback and an upper bound at the sync's start, SOQL literals, the
//!   Bulk 2.0 query job (§2).
//! - [`records`]: a query page's records → stored [`crate::core::lead::Lead`]s,
//!   converted Leads skipped, each record's keyset position (§2.1, §2.3).
//! - [`limits`]: `Sforce-Limit-Info`, the daily budget with its stop share
//!   and resume, pauses on `REQUEST_LIMIT_EXCEEDED`, the concurrent
//!   long-running request cap (§6.2–§6.4).
//! - [`errors`]: error bodies and what to do about each (§6.1, §1.3).
//! - [`mod@write`]: sObject Collections bodies of ≤ 200 records and their
//!   per-record results, the write headers, Bulk 2.0 ingest (job JSON, CSV,
//!   job states, failed results) (§3).
//! - [`outbound`]: Outbound Messages: a hand-written SOAP reader, the org
//!   and URL-token checks, dedupe keys, the Ack, own-change recognition (§7.1).
//! - [`jwt`]: the JWT bearer assertion, RS256 (§1.5).
//! - [`oauth`]: login hosts, the authorize URL, token-response parsing,
//!   token-endpoint form bodies (§1.1–§1.4, §1.7).
//! - [`datetime`]: Salesforce datetime text ↔ `UnixMillis`.
//!
//! Nothing in those reads a clock, sends a request or touches the store:
//! times come in as `UnixMillis`, answers as bytes or JSON values.
//!
//! The pass, on top of them (I/O):
//!
//! - [`pull`]: one object's incremental pull (SOQL window and keyset,
//!   `nextRecordsUrl` paging with the batch-size header, converted Leads
//!   left out, lookback repeats skipped), `Id IN` re-reads, the watermark
//!   committed by the sync.
//! - [`writeback`]: Collections requests in flight, Bulk 2.0 ingest jobs,
//!   per-record outcomes with retries.
//! - [`sync`]: a pass (pull → bounded queue → page workers → writer →
//!   commit) and the handling of recorded Outbound-Message events.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::core::lead::WorkspaceId;
use crate::core::value::UnixMillis;
use crate::store::StoreError;

pub mod auth;
pub mod client;
pub mod datetime;
pub mod errors;
pub mod jwt;
pub mod limits;
pub mod oauth;
pub mod outbound;
pub mod pull;
pub mod records;
pub mod soql;
pub mod sync;
pub mod webhook;
pub mod write;
pub mod writeback;

/// The CRM name in stored rows and [`crate::crm::CrmEvent::crm`].
pub const CRM: &str = "salesforce";

/// REST API version enrichd pins (peers pin v59.0–v62.0, §intro; v62.0 is
/// Airbyte's). Every path builder takes the version from here.
pub const API_VERSION: &str = "v62.0";

/// The `/services/data/vXX.X` prefix of every data path (§2.1).
pub fn data_path(rest: &str) -> String {
    let rest = rest.trim_start_matches('/');
    format!("/services/data/{API_VERSION}/{rest}")
}

/// Everything that can go wrong talking to Salesforce, with where and what
/// to do. No variant ever carries a token, a secret or a URL with one.
#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    #[error(
        "workspace `{workspace}` is not connected to Salesforce; run `enrichd connect salesforce --workspace {workspace}`"
    )]
    NotConnected { workspace: WorkspaceId },
    #[error(
        "the Salesforce connection of workspace `{workspace}` needs reconnecting: {reason}. Run `enrichd connect salesforce --workspace {workspace}`"
    )]
    ReconnectRequired {
        workspace: WorkspaceId,
        reason: String,
    },
    #[error("Salesforce authentication: {message} ({hint})")]
    Auth { message: String, hint: String },
    /// The org is paused (daily share reached, or `REQUEST_LIMIT_EXCEEDED`):
    /// nothing was lost, the caller keeps its work and tries again after
    /// `until`.
    #[error("Salesforce {endpoint} not sent: the org is paused until {until_text}: {reason}")]
    Paused {
        endpoint: String,
        until: UnixMillis,
        until_text: String,
        reason: limits::PauseReason,
    },
    /// A classified failure (status, code, redacted message, hint).
    #[error("{0}")]
    Api(Box<errors::ApiFailure>),
    #[error("Salesforce {endpoint}: {message}")]
    Transport { endpoint: String, message: String },
    #[error("Salesforce {endpoint}: unexpected answer: {message}")]
    Decode { endpoint: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SalesforceError {
    /// True when nothing will work until a person acts (reconnect,
    /// credentials, configuration, permissions): a sync stops instead of
    /// retrying.
    pub fn needs_a_person(&self) -> bool {
        match self {
            SalesforceError::NotConnected { .. }
            | SalesforceError::ReconnectRequired { .. }
            | SalesforceError::Auth { .. } => true,
            SalesforceError::Api(f) => f.class.needs_a_person(),
            _ => false,
        }
    }

    /// When the org may be called again, for a pause.
    pub fn paused_until(&self) -> Option<UnixMillis> {
        match self {
            SalesforceError::Paused { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// The classified failure, for an API error.
    pub fn failure(&self) -> Option<&errors::ApiFailure> {
        match self {
            SalesforceError::Api(f) => Some(f),
            _ => None,
        }
    }
}

/// The sObject types enrichd reads and writes (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SObject {
    Lead,
    Contact,
}

impl SObject {
    pub const ALL: [SObject; 2] = [SObject::Lead, SObject::Contact];

    /// The API name (`attributes.type`, `FROM …`, Bulk `object`).
    pub const fn as_str(self) -> &'static str {
        match self {
            SObject::Lead => "Lead",
            SObject::Contact => "Contact",
        }
    }

    /// `Lead` / `Contact`, case-insensitively (Salesforce API names are).
    pub fn parse(s: &str) -> Option<SObject> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// The key prefix of record Ids of this type (`00Q` Lead, `003` Contact).
    pub const fn id_prefix(self) -> &'static str {
        match self {
            SObject::Lead => "00Q",
            SObject::Contact => "003",
        }
    }

    /// The type a record Id belongs to, from its key prefix.
    pub fn of_id(id: &str) -> Option<SObject> {
        Self::ALL
            .into_iter()
            .find(|o| id.get(..3) == Some(o.id_prefix()))
    }
}

impl fmt::Display for SObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Salesforce record Id: 15 case-sensitive or 18 case-safe alphanumeric
/// characters.
pub fn is_record_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether two Ids name the same record: the first 15 characters compared
/// case-sensitively (an 18-character Id is the 15-character one plus a
/// case-safe suffix; §7.1 recommends this comparison for OrganizationId).
pub fn same_id(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    is_record_id(a) && is_record_id(b) && a.get(..15) == b.get(..15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sobject_names_and_prefixes() {
        assert_eq!(SObject::parse("lead"), Some(SObject::Lead));
        assert_eq!(SObject::parse(" Contact "), Some(SObject::Contact));
        assert_eq!(SObject::parse("Account"), None);
        assert_eq!(SObject::of_id("00Qxx0000001abcEAA"), Some(SObject::Lead));
        assert_eq!(SObject::of_id("003xx000004TmiQAAS"), Some(SObject::Contact));
        assert_eq!(SObject::of_id("001xx"), None);
        assert_eq!(SObject::of_id(""), None);
        assert_eq!(data_path("/query"), "/services/data/v62.0/query");
    }

    #[test]
    fn ids_compare_on_their_first_15_characters() {
        assert!(same_id("00Dxx0000001gPLEAY", "00Dxx0000001gPL"));
        assert!(same_id("00Dxx0000001gPL", "00Dxx0000001gPLEAY"));
        assert!(!same_id("00Dxx0000001gpl", "00Dxx0000001gPL"));
        assert!(!same_id("00Dxx0000001gPL", "00Dxx0000001gPM"));
        assert!(!same_id("", ""));
        assert!(!same_id("00D-x0000001gPL", "00D-x0000001gPL"));
        assert!(is_record_id("003xx000004TmiQAAS"));
        assert!(!is_record_id("003xx000004TmiQAA"));
    }
}

//! What the Salesforce simulator observed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One request as the simulator saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SfCall {
    /// Arrival, since server start (real time).
    pub at: Duration,
    /// `"GET /services/data/vXX.X/query"` (version, ids and locators replaced by placeholders).
    pub endpoint: String,
    pub status: u16,
    /// Counted against `DailyApiRequests`.
    pub counted: bool,
    /// Rows returned (queries) or records submitted (writes).
    pub records: usize,
}

/// An owner change made by the assignment rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerChange {
    pub id: String,
    pub old_owner: String,
    pub new_owner: String,
    /// `client=` of the write that triggered it.
    pub client: Option<String>,
    /// `"rest"`, `"collections"`, `"bulk"`.
    pub via: String,
}

/// One Outbound Message POST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OmDelivery {
    pub endpoint_url: String,
    /// Notification ids in the message.
    pub notification_ids: Vec<String>,
    /// HTTP status (0: connection error or timeout).
    pub status: u16,
    /// The answer was a SOAP `<Ack>true</Ack>`.
    pub acked: bool,
    /// 1 for the first attempt of every notification in it, then 2, 3, …
    pub attempt: u32,
}

/// Counters and the call log.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SalesforceStats {
    /// Every request, `/_sim` control calls included, both hosts.
    pub requests: u64,
    /// Per endpoint (see [`SfCall::endpoint`]), any status.
    pub by_endpoint: BTreeMap<String, u64>,
    /// Per endpoint and status: `"GET /services/data/vXX.X/query 200"`.
    pub by_endpoint_status: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    /// Calls counted against `DailyApiRequests` (since the last stats reset).
    pub api_calls: u64,
    /// 401 answers (`INVALID_SESSION_ID`).
    pub unauthorized: u64,
    /// 403 `REQUEST_LIMIT_EXCEEDED` answers: (daily, concurrent).
    pub limit_exceeded_daily: u64,
    pub limit_exceeded_concurrent: u64,
    /// Max long-running requests in flight at once.
    pub max_long_running_in_flight: u32,
    /// Query calls (query/queryAll first pages) and locator follow-ups.
    pub query_calls: u64,
    pub query_more_calls: u64,
    /// Records returned by query calls (all pages).
    pub rows_returned: u64,
    /// sObject Collections update calls that reached validation, and records in them.
    pub collection_calls: u64,
    pub collection_records: u64,
    /// Single-record PATCH calls.
    pub single_updates: u64,
    /// Per-record results of API writes (collections, single PATCH, Bulk rows; not REST creates,
    /// UI edits or `/_sim` changes): `"success"` or the statusCode.
    pub write_results: BTreeMap<String, u64>,
    /// Bulk 2.0 ingest jobs created, records processed and failed.
    pub bulk_jobs: u64,
    pub bulk_records_processed: u64,
    pub bulk_records_failed: u64,
    /// Owner changes by the assignment rule.
    pub owner_changes: Vec<OwnerChange>,
    /// `client=` values of `Sforce-Call-Options` on write calls (`"<none>"` when absent).
    pub call_options_clients: BTreeMap<String, u64>,
    /// `Sforce-Duplicate-Rule-Header` values on write calls (`"<none>"` when absent).
    pub duplicate_rule_headers: BTreeMap<String, u64>,
    /// `Sforce-Auto-Assign` values on write calls (`"<none>"` when absent).
    pub auto_assign_headers: BTreeMap<String, u64>,
    /// Successful token grants per grant_type (`authorization_code`, `refresh_token`,
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer`).
    pub token_grants: BTreeMap<String, u64>,
    /// Token endpoint refusals per `error`.
    pub token_errors: BTreeMap<String, u64>,
    /// Tokens revoked through `/services/oauth2/revoke` (each access or refresh token counted).
    pub tokens_revoked: u64,
    /// Outbound Message POSTs.
    pub outbound_deliveries: Vec<OmDelivery>,
    /// The call log (omitted by `GET /_sim/stats` unless `?log=true`).
    #[serde(default)]
    pub log: Vec<SfCall>,
}

impl SalesforceStats {
    /// Requests to `endpoint`, any status.
    pub fn count(&self, endpoint: &str) -> u64 {
        self.by_endpoint.get(endpoint).copied().unwrap_or(0)
    }
    /// Per-record write results with this statusCode (`"success"` for successes).
    pub fn write_result(&self, code: &str) -> u64 {
        self.write_results.get(code).copied().unwrap_or(0)
    }
    /// Outbound deliveries acknowledged.
    pub fn outbound_acked(&self) -> usize {
        self.outbound_deliveries.iter().filter(|d| d.acked).count()
    }
}

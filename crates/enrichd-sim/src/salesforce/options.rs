//! Configuration of the Salesforce simulator: the org, the connected app, limits, Outbound
//! Messages and faults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time::make_id;

/// The concurrent long-running request limit (reference §6.4): requests that take at least
/// `threshold` count as long-running; when `max` of them are in flight, a further request is
/// refused with 403 `REQUEST_LIMIT_EXCEEDED` ("ConcurrentRequests (Concurrent API Requests)
/// Limit exceeded."). Only latency makes a request long-running, so set
/// [`SalesforceOptions::latency`] ≥ `threshold` to exercise it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongRunning {
    /// Salesforce: 20 s.
    pub threshold: Duration,
    /// Salesforce: 25 (production, sandbox), 5 (Developer Edition, trial).
    pub max: u32,
}

/// Which Lead/Contact changes fire an Outbound Message: the workflow rule's evaluation
/// criteria. Real rules see the record and the running user, never the HTTP headers of the
/// call, so a rule cannot tell enrichd's writes apart by `Sforce-Call-Options`; what an admin
/// can do is exclude the integration user (`$User.Id <> '005…'`) or require that a field
/// changed (`ISCHANGED(Email)`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundRule {
    /// Fire on create (every rule evaluation type does).
    pub on_create: bool,
    /// "created, and every time it's edited": fire on updates too (any user, UI or API).
    pub on_edit: bool,
    /// Don't fire for changes made by these users (ids, 15 or 18 characters): models a rule
    /// criterion on the running user.
    pub exclude_user_ids: Vec<String>,
    /// Fire on an edit only when one of these fields changed (ISCHANGED criteria); empty = any
    /// edit, even one that changed nothing.
    pub changed_fields: Vec<String>,
}

impl Default for OutboundRule {
    fn default() -> Self {
        OutboundRule {
            on_create: true,
            on_edit: true,
            exclude_user_ids: Vec::new(),
            changed_fields: Vec::new(),
        }
    }
}

/// One Outbound Message definition (Setup → Outbound Messages + the workflow rule or flow
/// that sends it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundConfig {
    /// `"Lead"` or `"Contact"`.
    pub object: String,
    /// Where the SOAP notifications are POSTed.
    pub endpoint_url: String,
    /// Fields sent in `<sObject>` (Id is always sent first).
    pub fields: Vec<String>,
    /// "Send Session ID": put an API session id of the sending user in `<SessionId>`.
    pub send_session_id: bool,
    pub rule: OutboundRule,
}

impl OutboundConfig {
    /// A Lead or Contact message to `url` with Id, Email, FirstName, LastName, Company (Lead),
    /// SystemModstamp, fired on create and every edit.
    pub fn new(object: &str, url: impl Into<String>) -> Self {
        let mut fields = vec!["Email", "FirstName", "LastName"];
        if object.eq_ignore_ascii_case("lead") {
            fields.push("Company");
        }
        fields.push("SystemModstamp");
        OutboundConfig {
            object: object.to_string(),
            endpoint_url: url.into(),
            fields: fields.into_iter().map(str::to_string).collect(),
            send_session_id: false,
            rule: OutboundRule::default(),
        }
    }
}

/// How a collection item naming a field that does not exist (or is hidden) is answered. The
/// reference does not say; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnknownFieldMode {
    /// That record fails with `INVALID_FIELD` in its result; the others proceed (default).
    PerRecord,
    /// The whole request fails with 400 `[{"errorCode":"INVALID_FIELD",…}]`.
    WholeRequest,
}

/// An active duplicate rule (§3.1): saving a record whose `field` equals (case-insensitively)
/// the same field of another record of `object` is refused with `DUPLICATES_DETECTED` ("Use
/// one of these records?"). An *alert* rule (`block: false`) lets the save through when the
/// call sends `Sforce-Duplicate-Rule-Header: allowSave=true`; a *block* rule never does. Bulk
/// jobs carry no header, so alert rules refuse their duplicates too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateRule {
    pub object: String,
    pub field: String,
    pub block: bool,
}

/// How the simulated org and connected app behave.
#[derive(Clone, Debug)]
pub struct SalesforceOptions {
    /// 18-character org id (`00D…`).
    pub org_id: String,
    /// Consumer key of the connected app (`client_id`, the JWT `iss`).
    pub client_id: String,
    /// Consumer secret.
    pub client_secret: String,
    /// The connected app's callback URLs; `redirect_uri` must equal one. Empty: any URL.
    pub callback_urls: Vec<String>,
    /// "Require Secret for Web Server Flow" / for the refresh flow. When false a request
    /// without `client_secret` is accepted (a wrong secret is still refused).
    pub require_client_secret: bool,
    /// Scopes the app may grant (`api refresh_token id` …); requested scopes outside this list
    /// are refused with `invalid_scope`.
    pub app_scopes: Vec<String>,
    /// The integration user's username (OAuth logins and the JWT `sub` resolve to it).
    pub username: String,
    /// Session timeout, counted from the last API call made with the access token.
    pub session_timeout: Duration,
    /// Refresh Token Rotation: every refresh returns a new refresh token and invalidates the
    /// old one (which then answers `invalid_grant`).
    pub rotate_refresh_tokens: bool,
    /// Public key of the certificate uploaded to the connected app, DER
    /// (SubjectPublicKeyInfo or PKCS#1 RSAPublicKey). None: the JWT bearer flow is refused.
    pub jwt_public_key: Option<Vec<u8>>,
    /// The JWT `aud` accepted; None: the login host's base URL (`http://127.0.0.1:PORT`).
    pub jwt_audience: Option<String>,
    /// The furthest in the future a JWT `exp` may be (Salesforce: 3 minutes). A 30 s
    /// allowance for clock skew is added.
    pub jwt_max_lifetime: Duration,
    /// `DailyApiRequests` Max: the rolling-24 h allocation.
    pub daily_api_requests: u64,
    /// `DailyBulkApiBatches` Max: with it used up (rolling 24 h), creating an ingest job is
    /// refused (400 `EXCEEDEDQUOTA`).
    pub daily_bulk_batches: u64,
    pub long_running: Option<LongRunning>,
    /// Slept before answering every API call (after the limit decision).
    pub latency: Duration,
    /// Query locators expire after this much inactivity (sim time; Salesforce: 15 min).
    pub query_locator_ttl: Duration,
    /// Open query cursors per user; opening one more drops the oldest (Salesforce: 10).
    pub max_open_cursors: usize,
    /// The org has an active Lead assignment rule (runs on REST writes without
    /// `Sforce-Auto-Assign: FALSE`).
    pub assignment_rule_active: bool,
    /// Custom fields (API names, on both Lead and Contact) the org does not have, or the
    /// integration user cannot see: absent from describe, refused by queries and writes.
    pub omit_fields: Vec<String>,
    pub unknown_field_mode: UnknownFieldMode,
    /// None by default (no duplicate rule active).
    pub duplicate_rule: Option<DuplicateRule>,
    pub outbound: Vec<OutboundConfig>,
    /// First retry of an unacknowledged Outbound Message after this (sim time), doubling up to
    /// 2 h; dropped 24 h after the first attempt.
    pub outbound_retry_base: Duration,
    /// Timeout of one Outbound Message POST.
    pub outbound_timeout: Duration,
    /// How long (real time) a Bulk 2.0 ingest job stays `UploadComplete`, and then
    /// `InProgress`, before its rows are processed (after [`Self::bulk_job_duration`]).
    pub bulk_processing_delay: Duration,
    /// How long (sim time) a Bulk 2.0 ingest job then stays `InProgress` before its rows are
    /// processed: the job completes only once the sim clock has moved this far
    /// ([`SalesforceSim::advance`](super::SalesforceSim::advance)); until then it can be
    /// aborted with every row unprocessed. Zero (default): no wait. A very large value keeps
    /// jobs running "forever".
    pub bulk_job_duration: Duration,
    /// API version reported in job infos and `/services/data/`.
    pub latest_api_version: String,
}

impl SalesforceOptions {
    pub fn defaults() -> Self {
        SalesforceOptions {
            org_id: make_id("00D", 1_234_567),
            client_id: "3MVG9enrichdSimConsumerKey.x7Qe0bT2Wz8kLq1VhGmN4pRs6YtUcAaDdFf".into(),
            client_secret: "8C1E4F7A2B5D3906E1F2A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7F".into(),
            callback_urls: Vec::new(),
            require_client_secret: true,
            app_scopes: [
                "api",
                "refresh_token",
                "offline_access",
                "id",
                "openid",
                "web",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            username: "integration@acme-enrichd.example".into(),
            session_timeout: Duration::from_secs(2 * 3600),
            rotate_refresh_tokens: false,
            jwt_public_key: None,
            jwt_audience: None,
            jwt_max_lifetime: Duration::from_secs(180),
            daily_api_requests: 100_000,
            daily_bulk_batches: 15_000,
            long_running: None,
            latency: Duration::ZERO,
            query_locator_ttl: Duration::from_secs(15 * 60),
            max_open_cursors: 10,
            assignment_rule_active: true,
            omit_fields: Vec::new(),
            unknown_field_mode: UnknownFieldMode::PerRecord,
            duplicate_rule: None,
            outbound: Vec::new(),
            outbound_retry_base: Duration::from_secs(15),
            outbound_timeout: Duration::from_secs(10),
            bulk_processing_delay: Duration::from_millis(30),
            bulk_job_duration: Duration::ZERO,
            latest_api_version: "62.0".into(),
        }
    }
    pub fn with_latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }
    pub fn with_daily_limit(mut self, n: u64) -> Self {
        self.daily_api_requests = n;
        self
    }
    pub fn with_rotation(mut self, on: bool) -> Self {
        self.rotate_refresh_tokens = on;
        self
    }
    pub fn with_session_timeout(mut self, d: Duration) -> Self {
        self.session_timeout = d;
        self
    }
    pub fn with_jwt_public_key(mut self, der: Vec<u8>) -> Self {
        self.jwt_public_key = Some(der);
        self
    }
    /// The JWT public key from PEM text: `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo) or `BEGIN RSA
    /// PUBLIC KEY` (PKCS#1). Invalid PEM leaves no key configured (JWT grants are then refused).
    pub fn with_jwt_public_key_pem(mut self, pem: &str) -> Self {
        use base64::Engine;
        let b64: String = pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----") && !l.is_empty())
            .collect();
        self.jwt_public_key = base64::engine::general_purpose::STANDARD.decode(b64).ok();
        self
    }
    pub fn with_omitted_fields(mut self, fields: &[&str]) -> Self {
        self.omit_fields = fields.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn with_outbound(mut self, cfg: OutboundConfig) -> Self {
        self.outbound.push(cfg);
        self
    }
    pub fn with_long_running(mut self, threshold: Duration, max: u32) -> Self {
        self.long_running = Some(LongRunning { threshold, max });
        self
    }
    pub fn with_callback_urls(mut self, urls: &[&str]) -> Self {
        self.callback_urls = urls.iter().map(|s| s.to_string()).collect();
        self
    }
}

impl Default for SalesforceOptions {
    fn default() -> Self {
        Self::defaults()
    }
}

/// A fault to inject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SalesforceFault {
    /// The next `count` API calls whose path starts with `path_prefix` (e.g.
    /// `/services/data/v62.0/query`, or `/services/oauth2/token` on the login host) answer
    /// `status` with Salesforce's error array. `error_code` defaults per status (400
    /// `QUERY_TIMEOUT`, 401 `INVALID_SESSION_ID`, 403 `REQUEST_LIMIT_EXCEEDED`, 404
    /// `NOT_FOUND`, 500 `UNKNOWN_EXCEPTION`, 503 `SERVER_UNAVAILABLE`, others `UNKNOWN_EXCEPTION`);
    /// on the token endpoint the body is `{"error","error_description"}` instead (default
    /// `error`: 400 `invalid_grant`, 429/503 `rate_limit_exceeded`). Faulted API calls count
    /// against the allocation (except 401/403), as the real errors would.
    Status {
        path_prefix: String,
        status: u16,
        count: u32,
        error_code: Option<String>,
        message: Option<String>,
    },
    /// Writes (single PATCH, collections, Bulk) of these record ids fail per record with
    /// `status_code` (e.g. `UNABLE_TO_LOCK_ROW`) `times` times each (`u32::MAX`: always).
    FailRecords {
        ids: Vec<String>,
        status_code: String,
        times: u32,
    },
    /// The next `count` Bulk ingest jobs that start processing (and whose header is valid)
    /// process only their first `processed` rows, then end `Failed` with `error_message`
    /// (default `"InternalServerError : the batch was retried too many times"`); the other
    /// rows are listed by `unprocessedrecords/`. `processed: 0` fails the whole job.
    FailBulkJobs {
        processed: u32,
        count: u32,
        error_message: Option<String>,
    },
}

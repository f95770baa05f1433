//! Every Salesforce API call goes through [`SalesforceClient::call`]
//! (reference §6, §1.3):
//!
//! 1. **Concurrency**: a per-org semaphore of
//!    [`ConcurrencyPolicy::permits`](super::limits::ConcurrencyPolicy::permits)
//!    held for the whole request, retries included (§6.4). Without a
//!    configured `org_kind` it starts at the Developer/trial size and grows
//!    to the production size once `Sforce-Limit-Info` shows a production
//!    allocation (≥ 100,000 calls).
//! 2. **Daily budget**: [`DailyBudget::gate`] before every try. A paused org
//!    answers [`SalesforceError::Paused`] with the time it may be called
//!    again: nothing is sent and the caller keeps its work. After the pause
//!    one probe call goes through; its `Sforce-Limit-Info` resumes the org
//!    (below the resume share) or keeps it paused.
//! 3. **Session**: from [`Tokens`]; the request goes to the session's
//!    `instance_url` + `path` (a path only: never a URL, so the token never
//!    goes to another host), with `Authorization: Bearer` and
//!    `Sforce-Call-Options: client=enrichd` (so enrichd recognises its own
//!    changes, §3.1).
//! 4. **Every answer** (errors too): `Sforce-Limit-Info` is fed to the
//!    budget (§6.2), the call counted in the metrics (`api` = `salesforce`,
//!    secret-free endpoint templates).
//! 5. **Failures**, classified by [`errors::classify`]: 401
//!    `INVALID_SESSION_ID` → one new session (single-flight in [`Tokens`]),
//!    the call once more; `REQUEST_LIMIT_EXCEEDED` (daily) → the org is
//!    paused ([`DailyBudget::request_limit_exceeded`]) and the caller gets
//!    [`SalesforceError::Paused`]; the concurrent-requests variant → back-off
//!    with jitter and retry; 429/5xx/`UNABLE_TO_LOCK_ROW`/network →
//!    exponential back-off (backon) honouring `Retry-After`, up to
//!    `max_retries`; anything else → [`SalesforceError::Api`] with the
//!    redacted message and what to do.
//!
//! Paths are written against [`super::API_VERSION`] by the pure builders;
//! the client rewrites that prefix to the configured `api_version`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::Settings;
use crate::config::Workspace;
use crate::config::crm::{CrmSettings, SalesforceSettings};
use crate::core::value::UnixMillis;
use crate::crm::schema::CrmSchema;
use crate::crypto::TokenCipher;
use crate::secret::Secret;
use crate::store::Store;

use super::auth::{Session, Tokens, http_client, without_url};
use super::errors::{Api, ApiFailure, ErrorClass};
use super::limits::{
    ApiUsage, DailyBudget, Gate, LIMIT_INFO_HEADER, OrgKind, PauseReason, concurrent_backoff_ms,
    parse_limit_info, parse_limits_resource,
};
use super::{API_VERSION, SObject, SalesforceError};

/// Largest answer read (a query page of 2,000 records is a few MB; Bulk
/// result CSVs are read by phase 2 in parts if they grow).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Concurrent-request refusals retried per call.
const MAX_CONCURRENT_RETRIES: u32 = 8;

/// HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Put,
    Delete,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// A request body.
#[derive(Clone, Debug)]
pub enum Body {
    Json(Value),
    /// Bulk API 2.0 upload (`text/csv`).
    Csv(String),
}

/// One API request: a path on the instance (starting with `/`, query
/// included), a body, extra headers.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<Body>,
    /// Extra headers (e.g. `write::write_headers`, `Sforce-Query-Options`).
    pub headers: Vec<(&'static str, String)>,
    /// For messages: REST or Bulk.
    pub api: Api,
    /// Whether transient failures (network, 5xx) are retried. Off for a
    /// request that must not run twice.
    pub retry: bool,
}

impl Request {
    pub fn new(method: Method, path: impl Into<String>) -> Request {
        Request {
            method,
            path: path.into(),
            body: None,
            headers: Vec::new(),
            api: Api::Rest,
            retry: true,
        }
    }
    pub fn get(path: impl Into<String>) -> Request {
        Request::new(Method::Get, path)
    }
    pub fn json(method: Method, path: impl Into<String>, body: Value) -> Request {
        Request {
            body: Some(Body::Json(body)),
            ..Request::new(method, path)
        }
    }
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }
    pub fn headers(mut self, h: impl IntoIterator<Item = (&'static str, String)>) -> Request {
        self.headers.extend(h);
        self
    }
    pub fn bulk(mut self) -> Request {
        self.api = Api::Bulk;
        self
    }
    pub fn no_retry(mut self) -> Request {
        self.retry = false;
        self
    }
}

/// A successful answer (2xx).
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// The secret-free endpoint template the call was counted under.
    pub endpoint: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    /// `Sforce-Limit-Info` of this answer.
    pub usage: Option<ApiUsage>,
}

impl Answer {
    /// The body as JSON (an empty body is `null`).
    pub fn json(&self) -> Result<Value, SalesforceError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| SalesforceError::Decode {
            endpoint: self.endpoint.clone(),
            message: format!("status {} with a body that is not JSON: {e}", self.status),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// Counters for reports, tests and metrics.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// (endpoint, status) → tries (status 0: no answer).
    pub calls: Mutex<BTreeMap<(String, u16), u64>>,
    pub retries: AtomicU64,
    /// 401 `INVALID_SESSION_ID` answers that led to a new session.
    pub session_renewals: AtomicU64,
    /// Calls refused because the org was paused.
    pub paused: AtomicU64,
    /// `REQUEST_LIMIT_EXCEEDED` answers (both kinds).
    pub limit_exceeded: AtomicU64,
}

impl ClientStats {
    pub fn total(&self) -> u64 {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
    pub fn by_endpoint(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((e, _), n) in self.calls.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            *out.entry(e.clone()).or_insert(0) += n;
        }
        out
    }
    fn count(&self, endpoint: &str, status: u16) {
        crate::metrics::metrics().api_request(
            "salesforce",
            endpoint,
            (status != 0).then_some(status),
        );
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((endpoint.to_string(), status))
            .or_insert(0) += 1;
    }
}

/// The API client of one workspace's Salesforce org.
pub struct SalesforceClient {
    pub settings: Arc<SalesforceSettings>,
    pub tokens: Tokens,
    budget: Mutex<DailyBudget>,
    permits: Arc<Semaphore>,
    /// The permits were sized for a production org (no more growth).
    sized: AtomicBool,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    pub stats: ClientStats,
}

impl SalesforceClient {
    pub fn new(
        settings: Arc<SalesforceSettings>,
        tokens: Tokens,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> SalesforceClient {
        let kind = settings.org_kind.unwrap_or(OrgKind::DeveloperOrTrial);
        let permits = settings.concurrency.permits(kind) as usize;
        SalesforceClient {
            budget: Mutex::new(DailyBudget::new(settings.budget)),
            permits: Arc::new(Semaphore::new(permits.max(1))),
            sized: AtomicBool::new(
                settings.org_kind.is_some() || kind == OrgKind::ProductionOrSandbox,
            ),
            settings,
            tokens,
            clock,
            http,
            stats: ClientStats::default(),
        }
    }

    /// The workspace's Salesforce client as configured (`None` when the
    /// workspace has no Salesforce CRM). Tokens are opened with the master
    /// key of `settings` (an error when it is malformed; a missing key is
    /// reported at the first call).
    pub fn open(
        settings: &Settings,
        ws: &Arc<Workspace>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<SalesforceClient>, SalesforceError> {
        let Some(CrmSettings::Salesforce(s)) = &ws.crm else {
            return Ok(None);
        };
        let cipher = match &settings.master_key {
            Some(k) => Some(Arc::new(
                TokenCipher::from_key_text(&settings.master_key_env, k.expose()).map_err(|e| {
                    SalesforceError::Auth {
                        message: e.to_string(),
                        hint: "create a key with `enrichd keygen`".into(),
                    }
                })?,
            )),
            None => None,
        };
        let http = http_client(s.timeout)?;
        let tokens = Tokens::new(
            ws.id.clone(),
            s.clone(),
            store,
            cipher,
            clock.clone(),
            http.clone(),
        );
        Ok(Some(SalesforceClient::new(s.clone(), tokens, clock, http)))
    }

    /// The usage last reported by `Sforce-Limit-Info` (or `/limits`), and when.
    pub fn usage(&self) -> Option<(ApiUsage, UnixMillis)> {
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .usage()
    }

    /// Until when and why the org is paused, if it is.
    pub fn paused(&self) -> Option<(UnixMillis, PauseReason)> {
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .paused()
    }

    /// Requests enrichd may have in flight to the org now.
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }

    /// The current session (connecting nothing new): the org, user and
    /// instance enrichd talks to.
    pub async fn session(&self) -> Result<Session, SalesforceError> {
        self.tokens.session(None).await
    }

    /// `path` with the configured API version instead of
    /// [`super::API_VERSION`].
    pub fn versioned(&self, path: &str) -> String {
        let built = format!("/services/data/{API_VERSION}/");
        match path.strip_prefix(&built) {
            Some(rest) if self.settings.api_version != API_VERSION => {
                format!("/services/data/{}/{rest}", self.settings.api_version)
            }
            _ => path.to_string(),
        }
    }

    /// A data path (`sobjects/Lead/describe`) under the configured version.
    pub fn data_path(&self, rest: &str) -> String {
        self.settings.data_path(rest)
    }

    fn observe(&self, usage: ApiUsage) {
        let now = self.clock.now();
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(usage, now);
        if !self.sized.load(Ordering::Relaxed)
            && OrgKind::from_daily_max(usage.max) == OrgKind::ProductionOrSandbox
            && !self.sized.swap(true, Ordering::Relaxed)
        {
            let c = &self.settings.concurrency;
            let more = c
                .permits(OrgKind::ProductionOrSandbox)
                .saturating_sub(c.permits(OrgKind::DeveloperOrTrial));
            self.permits.add_permits(more as usize);
        }
    }

    fn paused_error(
        &self,
        endpoint: &str,
        until: UnixMillis,
        reason: PauseReason,
    ) -> SalesforceError {
        self.stats.paused.fetch_add(1, Ordering::Relaxed);
        SalesforceError::Paused {
            endpoint: endpoint.to_string(),
            until,
            until_text: chrono::DateTime::from_timestamp_millis(until)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| until.to_string()),
            reason,
        }
    }

    /// One API call (see the module documentation).
    pub async fn call(&self, req: Request) -> Result<Answer, SalesforceError> {
        let path = self.versioned(&req.path);
        let endpoint = endpoint_label(req.method, &path);
        if !path.starts_with('/') || path.starts_with("//") {
            return Err(SalesforceError::Decode {
                endpoint,
                message: "the request path does not start with a single `/`".into(),
            });
        }
        let waited = Instant::now();
        let _permit =
            self.permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| SalesforceError::Transport {
                    endpoint: endpoint.clone(),
                    message: "the client is shutting down".into(),
                })?;
        crate::metrics::metrics().limiter_waited("salesforce", waited.elapsed());
        let mut delays = {
            use backon::BackoffBuilder as _;
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(30))
                .with_max_times(if req.retry {
                    self.settings.max_retries as usize
                } else {
                    0
                })
                .with_jitter()
                .build()
        };
        let mut stale: Option<Secret> = None;
        let mut renewed = false;
        let mut concurrent = 0u32;
        // This call is the paused org's probe: its retries (a renewed
        // session, a transient failure) are the same probe, not gated again.
        let mut probing = false;
        loop {
            let gate = if probing {
                Gate::Go
            } else {
                self.budget
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .gate(self.clock.now())
            };
            match gate {
                Gate::Go => {}
                Gate::Probe => {
                    probing = true;
                    tracing::info!(endpoint, "Salesforce org paused: probing with this call")
                }
                Gate::Wait { until, reason } => {
                    return Err(self.paused_error(&endpoint, until, reason));
                }
            }
            let session = self.tokens.session(stale.as_ref()).await?;
            let url = format!("{}{}", session.instance_url, path);
            let mut rb = match req.method {
                Method::Get => self.http.get(&url),
                Method::Post => self.http.post(&url),
                Method::Patch => self.http.patch(&url),
                Method::Put => self.http.put(&url),
                Method::Delete => self.http.delete(&url),
            }
            .bearer_auth(session.access.expose());
            if !req
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("sforce-call-options"))
            {
                rb = rb.header(
                    "Sforce-Call-Options",
                    format!("client={}", super::write::CLIENT_NAME),
                );
            }
            for (k, v) in &req.headers {
                rb = rb.header(*k, v);
            }
            rb = match &req.body {
                Some(Body::Json(v)) => rb
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(v.to_string()),
                Some(Body::Csv(c)) => rb
                    .header(reqwest::header::CONTENT_TYPE, "text/csv")
                    .body(c.clone()),
                None => rb,
            };
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.stats.count(&endpoint, 0);
                    let what = if e.is_timeout() {
                        format!("no answer within {} s", self.settings.timeout.as_secs())
                    } else {
                        format!("request failed: {}", without_url(&e))
                    };
                    match delays.next() {
                        Some(d) => {
                            self.retry_wait(&endpoint, &what, d).await;
                            continue;
                        }
                        None => {
                            return Err(SalesforceError::Transport {
                                endpoint,
                                message: what,
                            });
                        }
                    }
                }
            };
            let status = resp.status().as_u16();
            self.stats.count(&endpoint, status);
            let headers = resp.headers().clone();
            let usage = headers
                .get(LIMIT_INFO_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_limit_info);
            if let Some(u) = usage {
                self.observe(u);
            }
            let retry_after = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = match read_body(resp).await {
                Ok(b) => b,
                Err(what) => match delays.next() {
                    Some(d) => {
                        self.retry_wait(&endpoint, &what, d).await;
                        continue;
                    }
                    None => {
                        return Err(SalesforceError::Transport {
                            endpoint,
                            message: what,
                        });
                    }
                },
            };
            if (200..300).contains(&status) {
                return Ok(Answer {
                    status,
                    endpoint,
                    headers,
                    body,
                    usage,
                });
            }
            let failure = ApiFailure::new(req.api, &endpoint, status, &body);
            match failure.class {
                ErrorClass::InvalidSession if !renewed => {
                    renewed = true;
                    self.stats.session_renewals.fetch_add(1, Ordering::Relaxed);
                    stale = Some(session.access);
                    tracing::debug!(endpoint, "Salesforce session expired: renewing once");
                }
                ErrorClass::RequestLimitExceeded => {
                    self.stats.limit_exceeded.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::metrics().rate_limited("salesforce", "REQUEST_LIMIT_EXCEEDED");
                    let now = self.clock.now();
                    let (until, reason) = {
                        let mut b = self.budget.lock().unwrap_or_else(|e| e.into_inner());
                        b.request_limit_exceeded(now);
                        b.paused()
                            .unwrap_or((now, PauseReason::RequestLimitExceeded))
                    };
                    tracing::warn!(
                        endpoint,
                        until,
                        "Salesforce REQUEST_LIMIT_EXCEEDED: org paused"
                    );
                    return Err(self.paused_error(&endpoint, until, reason));
                }
                ErrorClass::ConcurrentLimit if concurrent < MAX_CONCURRENT_RETRIES => {
                    self.stats.limit_exceeded.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::metrics().rate_limited("salesforce", "ConcurrentRequests");
                    let wait = Duration::from_millis(concurrent_backoff_ms(concurrent, jitter()));
                    concurrent += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        endpoint,
                        wait_ms = wait.as_millis() as u64,
                        "Salesforce concurrent-request limit: backing off"
                    );
                    tokio::time::sleep(wait).await;
                }
                ErrorClass::Transient => match delays.next() {
                    Some(d) => {
                        let wait = retry_after.unwrap_or(d).min(Duration::from_secs(60));
                        self.retry_wait(&endpoint, &failure.to_string(), wait).await;
                    }
                    None => return Err(SalesforceError::Api(Box::new(failure))),
                },
                _ => return Err(SalesforceError::Api(Box::new(failure))),
            }
        }
    }

    async fn retry_wait(&self, endpoint: &str, what: &str, wait: Duration) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            endpoint,
            wait_ms = wait.as_millis() as u64,
            "Salesforce: {what}; retrying"
        );
        tokio::time::sleep(wait).await;
    }

    /// `GET path` → JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, SalesforceError> {
        self.call(Request::get(path)).await?.json()
    }

    /// `GET /sobjects/{object}/describe` → the object's schema (§4).
    pub async fn describe(&self, object: SObject) -> Result<CrmSchema, SalesforceError> {
        let a = self
            .call(Request::get(
                self.data_path(&format!("sobjects/{object}/describe")),
            ))
            .await?;
        let v = a.json()?;
        let mut schema = crate::crm::schema::from_salesforce_describe(&v).map_err(|e| {
            SalesforceError::Decode {
                endpoint: a.endpoint.clone(),
                message: e.to_string(),
            }
        })?;
        schema.endpoint = a.endpoint;
        Ok(schema)
    }

    /// `GET /limits` → `DailyApiRequests` (also fed to the budget; §6.3).
    pub async fn limits(&self) -> Result<ApiUsage, SalesforceError> {
        let a = self.call(Request::get(self.data_path("limits"))).await?;
        let v = a.json()?;
        let u = parse_limits_resource(&v).ok_or_else(|| SalesforceError::Decode {
            endpoint: a.endpoint.clone(),
            message: "no DailyApiRequests with Max and Remaining".into(),
        })?;
        self.observe(u);
        Ok(u)
    }
}

/// A uniform number in [0, 1) for back-off jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > MAX_BODY {
                    return Err(format!("answer larger than {MAX_BODY} bytes"));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(format!("answer cut off: {}", without_url(&e))),
        }
    }
}

/// `GET /services/data/v62.0/sobjects/Lead/{id}` from method and path: the
/// query string is dropped (it holds SOQL with values) and record ids,
/// job ids and query locators become `{id}`, so endpoints group and carry
/// nothing secret.
pub fn endpoint_label(method: Method, path: &str) -> String {
    let p = path.split(['?', '#']).next().unwrap_or(path);
    let segs: Vec<&str> = p
        .split('/')
        .map(|seg| {
            if seg.len() >= 15 && seg.bytes().any(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                seg
            }
        })
        .collect();
    format!("{} {}", method.as_str(), segs.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_labels_carry_no_ids_or_queries() {
        assert_eq!(
            endpoint_label(
                Method::Get,
                "/services/data/v62.0/query?q=SELECT+Id+FROM+Lead+WHERE+Email='a@b.c'"
            ),
            "GET /services/data/v62.0/query"
        );
        assert_eq!(
            endpoint_label(
                Method::Get,
                "/services/data/v62.0/query/01gxx0000000001AAA-2000"
            ),
            "GET /services/data/v62.0/query/{id}"
        );
        assert_eq!(
            endpoint_label(
                Method::Patch,
                "/services/data/v62.0/sobjects/Lead/00Q5e00000AbCdEAAF"
            ),
            "PATCH /services/data/v62.0/sobjects/Lead/{id}"
        );
        assert_eq!(
            endpoint_label(
                Method::Get,
                "/services/data/v62.0/jobs/ingest/7505e000000AbCdAAK/unprocessedrecords/"
            ),
            "GET /services/data/v62.0/jobs/ingest/{id}/unprocessedrecords/"
        );
    }
}

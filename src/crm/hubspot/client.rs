//! Every HubSpot API call goes through [`HubSpotClient::call`]: the portal's
//! limits (general, search, daily), an access token from [`Tokens`], a
//! timeout, and the answer classified (reference/hubspot.md §4, §6):
//!
//! - 2xx and 207 are answers; the general bucket adapts to
//!   `X-HubSpot-RateLimit-Max` and slows down when `-Remaining` runs out.
//! - 429 branches on `policyName`: `TEN_SECONDLY_ROLLING` pauses the general
//!   bucket, `SECONDLY` (search) the search bucket, `DAILY` parks the portal
//!   until its midnight; `Retry-After` is honoured when present. The call is
//!   then retried: a rate limit never loses work.
//! - 401 `EXPIRED_AUTHENTICATION`: one forced refresh, then the call again.
//! - 403 `MISSING_SCOPES` names the scopes; 423 waits 2 s; 477 honours
//!   `Retry-After`; 5xx and network failures back off and retry.
//! - Other 4xx are returned to the caller as [`HubSpotError::Api`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::crm::HubSpotSettings;
use crate::core::value::UnixMillis;
use crate::secret::Secret;

use super::HubSpotError;
use super::auth::Tokens;
use super::limits::{Bucket, BucketKind, Daily};

/// Largest answer read (a page of 200 contacts is well under 1 MB).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Headroom under HubSpot's limits (clock skew, network jitter).
pub const HEADROOM: f64 = 0.98;
/// The search window is one second: 2% of it (20 ms) is less than the
/// jitter between taking a permit and the request arriving on a busy
/// machine, so search keeps 5% (a 50 ms margin per window).
pub const SEARCH_HEADROOM: f64 = 0.95;
/// Rate-limit answers retried per call before giving up (each waits for the
/// window, so this is minutes, not a hot loop).
const MAX_RATE_LIMITED: u32 = 30;

/// An answer: status (2xx or 207) and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// Counters for reports and metrics.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// (endpoint, status) → calls, 429s included.
    pub calls: Mutex<BTreeMap<(String, u16), u64>>,
    pub rate_limited: AtomicU64,
    pub retries: AtomicU64,
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
    /// One try (`status` 0: no answer), here and in the process metrics.
    fn count(&self, endpoint: &str, status: u16) {
        crate::metrics::metrics().api_request("hubspot", endpoint, (status != 0).then_some(status));
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((endpoint.to_string(), status))
            .or_insert(0) += 1;
    }
}

pub struct HubSpotClient {
    pub settings: Arc<HubSpotSettings>,
    pub tokens: Tokens,
    pub general: Bucket,
    pub search: Bucket,
    daily: Daily,
    /// The portal is parked (daily limit) until this time.
    parked_until: Mutex<Option<UnixMillis>>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    pub stats: ClientStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
}

enum Verdict {
    Done(Answer),
    /// Try again after waiting (rate limit, lock, 5xx); counts as a retry.
    Again(Duration, bool),
    Refresh,
    Fail(HubSpotError),
}

impl HubSpotClient {
    pub fn new(
        settings: Arc<HubSpotSettings>,
        tokens: Tokens,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> HubSpotClient {
        let l = settings.limits;
        HubSpotClient {
            general: Bucket::new(l.ten_secondly, Duration::from_secs(10), HEADROOM),
            search: Bucket::new(l.search_per_second, Duration::from_secs(1), SEARCH_HEADROOM),
            daily: Daily::new(l.daily),
            parked_until: Mutex::new(None),
            settings,
            tokens,
            clock,
            http,
            stats: ClientStats::default(),
        }
    }

    /// A reqwest client fit for HubSpot calls (no redirects: an API answer
    /// never legitimately redirects, and following one could leak the token).
    pub fn http(timeout: Duration) -> Result<reqwest::Client, HubSpotError> {
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| HubSpotError::Transport {
                endpoint: "client".into(),
                message: format!("cannot build the HTTP client: {e}"),
            })
    }

    fn day_of(&self, at: UnixMillis) -> i64 {
        let offset = i64::from(self.settings.daily_reset_offset.local_minus_utc()) * 1000;
        (at + offset).div_euclid(86_400_000)
    }

    fn next_midnight(&self, at: UnixMillis) -> UnixMillis {
        let offset = i64::from(self.settings.daily_reset_offset.local_minus_utc()) * 1000;
        (self.day_of(at) + 1) * 86_400_000 - offset
    }

    fn park(&self, endpoint: &str) -> HubSpotError {
        let until = self.next_midnight(self.clock.now());
        *self.parked_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
        tracing::warn!(
            endpoint,
            until,
            "HubSpot daily limit reached: portal parked"
        );
        HubSpotError::DailyLimit {
            endpoint: endpoint.to_string(),
            until: chrono::DateTime::from_timestamp_millis(until)
                .map(|d| d.to_rfc3339())
                .unwrap_or_else(|| until.to_string()),
        }
    }

    /// One API call. `path` starts with `/` and may carry a query string.
    pub async fn call(
        &self,
        bucket: BucketKind,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, HubSpotError> {
        let endpoint = endpoint_label(method, path);
        let url = format!("{}{}", self.settings.api_url, path);
        let mut stale: Option<Secret> = None;
        let mut refreshed = false;
        let mut transient = 0u32;
        let mut limited = 0u32;
        loop {
            let parked = *self.parked_until.lock().unwrap_or_else(|e| e.into_inner());
            if parked.is_some_and(|until| until > self.clock.now()) {
                return Err(self.park(&endpoint));
            }
            let waited = Instant::now();
            match bucket {
                BucketKind::General => self.general.acquire().await,
                BucketKind::GeneralSpare => self.general.acquire_spare().await,
                BucketKind::Search => self.search.acquire().await,
                BucketKind::Exempt => {}
            }
            crate::metrics::metrics().limiter_waited("hubspot", waited.elapsed());
            if !self.daily.take(self.day_of(self.clock.now())) {
                return Err(self.park(&endpoint));
            }
            let token = self.tokens.access(stale.as_ref()).await?;
            let mut req = match method {
                Method::Get => self.http.get(&url),
                Method::Post => self.http.post(&url),
                Method::Patch => self.http.patch(&url),
            }
            .bearer_auth(token.expose());
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            let verdict = match req.send().await {
                Err(e) => {
                    let what = if e.is_timeout() {
                        format!("no answer within {} s", self.settings.timeout.as_secs())
                    } else {
                        format!("request failed: {}", without_url(&e))
                    };
                    self.stats.count(&endpoint, 0);
                    if transient < self.settings.max_retries {
                        Verdict::Again(backoff(transient), true)
                    } else {
                        Verdict::Fail(HubSpotError::Transport {
                            endpoint: endpoint.clone(),
                            message: what,
                        })
                    }
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    self.stats.count(&endpoint, status);
                    let headers = resp.headers().clone();
                    let bytes = read_body(resp).await;
                    self.classify(
                        bucket, &endpoint, status, &headers, bytes, refreshed, transient, limited,
                    )
                }
            };
            match verdict {
                Verdict::Done(a) => return Ok(a),
                Verdict::Fail(e) => return Err(e),
                Verdict::Refresh => {
                    refreshed = true;
                    stale = Some(token);
                }
                Verdict::Again(wait, is_transient) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    if is_transient {
                        transient += 1;
                    } else {
                        limited += 1;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn classify(
        &self,
        bucket: BucketKind,
        endpoint: &str,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        bytes: Result<Vec<u8>, String>,
        refreshed: bool,
        transient: u32,
        limited: u32,
    ) -> Verdict {
        if matches!(bucket, BucketKind::General | BucketKind::GeneralSpare) {
            self.adapt(headers);
        }
        let retry_after = header_u64(headers, "retry-after").map(Duration::from_secs);
        let bytes = match bytes {
            Ok(b) => b,
            Err(m) => {
                return if transient < self.settings.max_retries {
                    Verdict::Again(backoff(transient), true)
                } else {
                    Verdict::Fail(HubSpotError::Transport {
                        endpoint: endpoint.into(),
                        message: m,
                    })
                };
            }
        };
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) if (200..300).contains(&status) => {
                    return if transient < self.settings.max_retries {
                        Verdict::Again(backoff(transient), true)
                    } else {
                        Verdict::Fail(HubSpotError::Decode {
                            endpoint: endpoint.into(),
                            message: format!("status {status} with a body that is not JSON: {e}"),
                        })
                    };
                }
                Err(_) => {
                    Value::String(String::from_utf8_lossy(&bytes).chars().take(300).collect())
                }
            }
        };
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        match status {
            200..=299 => Verdict::Done(Answer { status, body }),
            401 if !refreshed => Verdict::Refresh,
            403 if text("category") == "MISSING_SCOPES" => {
                let scopes = body
                    .pointer("/errors/0/context/requiredGranularScopes")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                Verdict::Fail(HubSpotError::MissingScopes {
                    endpoint: endpoint.into(),
                    scopes,
                })
            }
            429 => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                let policy = text("policyName");
                crate::metrics::metrics().rate_limited("hubspot", policy_label(&policy));
                let message = text("message");
                if policy == "DAILY" || message.contains("daily limit") {
                    return Verdict::Fail(self.park(endpoint));
                }
                if limited >= MAX_RATE_LIMITED {
                    return Verdict::Fail(HubSpotError::Api {
                        endpoint: endpoint.into(),
                        status,
                        category: policy,
                        message,
                        body,
                    });
                }
                let secondly = policy == "SECONDLY"
                    || message.contains("secondly limit")
                    || bucket == BucketKind::Search;
                let (b, default_wait) = if secondly {
                    (&self.search, Duration::from_secs(1))
                } else {
                    let interval = header_u64(headers, "x-hubspot-ratelimit-interval-milliseconds")
                        .map(Duration::from_millis)
                        .unwrap_or(Duration::from_secs(10));
                    // A rolling window frees a slot as its oldest request
                    // ages out; without Retry-After, wait a tenth of it.
                    (&self.general, interval / 10)
                };
                let wait = retry_after.unwrap_or(default_wait);
                b.pause_until(Instant::now() + wait);
                tracing::debug!(
                    endpoint,
                    policy,
                    wait_ms = wait.as_millis() as u64,
                    "HubSpot 429"
                );
                Verdict::Again(Duration::ZERO, false)
            }
            423 if transient < self.settings.max_retries => {
                Verdict::Again(Duration::from_secs(2), true)
            }
            477 if transient < self.settings.max_retries => {
                let wait = retry_after.unwrap_or(Duration::from_secs(30));
                if wait > Duration::from_secs(120) {
                    return Verdict::Fail(HubSpotError::Api {
                        endpoint: endpoint.into(),
                        status,
                        category: "MIGRATION_IN_PROGRESS".into(),
                        message: format!(
                            "the portal is being migrated; retry after {} s",
                            wait.as_secs()
                        ),
                        body,
                    });
                }
                Verdict::Again(wait, true)
            }
            500..=599 if transient < self.settings.max_retries => {
                Verdict::Again(retry_after.unwrap_or(backoff(transient)), true)
            }
            _ => Verdict::Fail(HubSpotError::Api {
                endpoint: endpoint.into(),
                status,
                category: [text("category"), text("errorType")]
                    .into_iter()
                    .find(|c| !c.is_empty())
                    .unwrap_or_default(),
                message: text("message"),
                body,
            }),
        }
    }

    /// Adopts the announced limit; when the window is nearly used up, waits
    /// one slot before the next request.
    fn adapt(&self, headers: &reqwest::header::HeaderMap) {
        let max = header_u64(headers, "x-hubspot-ratelimit-max");
        let remaining = header_u64(headers, "x-hubspot-ratelimit-remaining");
        if let Some(max) = max
            && max > 0
        {
            let configured = u64::from(self.settings.limits.ten_secondly);
            // Never above what is configured: the header may describe a
            // bigger allowance shared with other apps.
            self.general
                .set_limit(u32::try_from(max.min(configured)).unwrap_or(u32::MAX));
        }
        if let Some(0) = remaining {
            self.general
                .pause_until(Instant::now() + self.general.slot());
        }
        if let Some(0) = header_u64(headers, "x-hubspot-ratelimit-daily-remaining") {
            self.park("daily remaining 0");
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * 2u64.pow(attempt.min(6)))
}

fn header_u64(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
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

/// reqwest errors print their URL; ours carry no secret, but keep messages short.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "");
    }
    s.trim().trim_end_matches(['(', ')']).trim().to_string()
}

/// A 429's `policyName` as a metrics label: HubSpot's names, anything else
/// folded (the body is not ours to trust with label cardinality).
fn policy_label(policy: &str) -> &'static str {
    match policy {
        "TEN_SECONDLY_ROLLING" => "TEN_SECONDLY_ROLLING",
        "SECONDLY" => "SECONDLY",
        "DAILY" => "DAILY",
        "" => "none",
        _ => "other",
    }
}

/// `POST /crm/v3/objects/contacts/search` from method and path (query and
/// object ids left out so endpoints group).
pub fn endpoint_label(method: Method, path: &str) -> String {
    let p = path.split('?').next().unwrap_or(path);
    let p: Vec<&str> = p
        .split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
                "{id}"
            } else {
                seg
            }
        })
        .collect();
    let m = match method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Patch => "PATCH",
    };
    format!("{m} {}", p.join("/"))
}

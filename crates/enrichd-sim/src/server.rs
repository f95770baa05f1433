//! The generic simulator server: HTTP plumbing, auth/limit/latency/fault pipeline, credits,
//! statistics and the `/_sim` control endpoints shared by every simulated provider.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

use crate::hash::H;
use crate::population::{Population, SimChannel};
use crate::providers;
use crate::quality::ProviderProfile;

/// The simulated providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProviderKind {
    FullEnrich,
    Apollo,
    Hunter,
    Pdl,
    ZeroBounce,
    Prospeo,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 6] = [
        ProviderKind::FullEnrich,
        ProviderKind::Apollo,
        ProviderKind::Hunter,
        ProviderKind::Pdl,
        ProviderKind::ZeroBounce,
        ProviderKind::Prospeo,
    ];

    /// Lower-case name: "fullenrich", "apollo", "hunter", "pdl", "zerobounce", "prospeo".
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::FullEnrich => "fullenrich",
            ProviderKind::Apollo => "apollo",
            ProviderKind::Hunter => "hunter",
            ProviderKind::Pdl => "pdl",
            ProviderKind::ZeroBounce => "zerobounce",
            ProviderKind::Prospeo => "prospeo",
        }
    }

    /// The path prefix of the provider's base URL.
    pub fn path_prefix(self) -> &'static str {
        match self {
            ProviderKind::FullEnrich => "/api/v2",
            ProviderKind::Apollo => "/api/v1",
            ProviderKind::Hunter => "/v2",
            ProviderKind::Pdl => "",
            ProviderKind::ZeroBounce => "/v2",
            ProviderKind::Prospeo => "",
        }
    }

    /// The provider's documented rate limits (fixed windows, per API key):
    /// FullEnrich 60/min (all endpoints, polling included); Apollo 1,000/min (paid plans);
    /// Hunter 15/s and 500/min (email finder); PDL 1,000/min (paid, fixed 60-s window);
    /// ZeroBounce 80,000 per 10 s (validate); Prospeo 30/s, 1,800/min, 500,000/day (Pro plan,
    /// enrich endpoints, from Prospeo's help centre "API Rate Limits"; not in the reference, so
    /// treat as unverified).
    pub fn default_limits(self) -> Vec<(Duration, u32)> {
        let s = Duration::from_secs;
        match self {
            ProviderKind::FullEnrich => vec![(s(60), 60)],
            ProviderKind::Apollo => vec![(s(60), 1000)],
            ProviderKind::Hunter => vec![(s(1), 15), (s(60), 500)],
            ProviderKind::Pdl => vec![(s(60), 1000)],
            ProviderKind::ZeroBounce => vec![(s(10), 80_000)],
            ProviderKind::Prospeo => vec![(s(1), 30), (s(60), 1800), (s(86_400), 500_000)],
        }
    }
}

/// How a simulator behaves.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Hashing namespace + label; default = the kind's lower-case name. Two simulators of the
    /// same kind with different names know different things.
    pub name: String,
    /// Default `"sim-<name>-key"`.
    pub api_key: String,
    /// Uniform min..max per request (deterministic jitter); default zero.
    pub latency: (Duration, Duration),
    /// Fixed windows opening at the first request of each window, per API key; default = the
    /// provider's documented limits ([`ProviderKind::default_limits`]).
    pub limits: Vec<(Duration, u32)>,
    /// Provider credit balance; None = unlimited.
    pub credits: Option<i64>,
    pub profile: ProviderProfile,
    /// FullEnrich async completion delay after submit; default 2 s.
    pub processing_delay: Duration,
    /// FullEnrich webhook retry interval; default 60 s.
    pub callback_retry_interval: Duration,
    /// PDL free plan returns true/false instead of values.
    pub pdl_free_plan: bool,
}

impl SimOptions {
    pub fn defaults(kind: ProviderKind) -> SimOptions {
        let name = kind.name().to_string();
        SimOptions {
            api_key: format!("sim-{name}-key"),
            name,
            latency: (Duration::ZERO, Duration::ZERO),
            limits: kind.default_limits(),
            credits: None,
            profile: ProviderProfile::default_for(kind),
            processing_delay: Duration::from_secs(2),
            callback_retry_interval: Duration::from_secs(60),
            pdl_free_plan: false,
        }
    }

    /// Apollo on the free plan: enrichment endpoints limited to 50/min, 200/hour and 600/day
    /// (docs.apollo.io/reference/rate-limits; paid plans: 1,000/min, no hourly/daily cap).
    pub fn apollo_free_plan() -> SimOptions {
        let s = Duration::from_secs;
        SimOptions::defaults(ProviderKind::Apollo).with_limits(vec![
            (s(60), 50),
            (s(3600), 200),
            (s(86_400), 600),
        ])
    }

    /// PDL on the free plan: 100/min and `true`/`false` instead of contact values.
    pub fn pdl_free() -> SimOptions {
        let mut o = SimOptions::defaults(ProviderKind::Pdl)
            .with_limits(vec![(Duration::from_secs(60), 100)]);
        o.pdl_free_plan = true;
        o
    }

    /// Prospeo's Starter plan on enrich endpoints: 5/s, 300/min, 2,000/day (help centre; the
    /// real daily window is rolling, simulated as fixed).
    pub fn prospeo_starter_plan() -> SimOptions {
        let s = Duration::from_secs;
        SimOptions::defaults(ProviderKind::Prospeo).with_limits(vec![
            (s(1), 5),
            (s(60), 300),
            (s(86_400), 2000),
        ])
    }

    pub fn with_name(mut self, name: &str) -> SimOptions {
        self.name = name.to_string();
        self
    }
    pub fn with_api_key(mut self, key: &str) -> SimOptions {
        self.api_key = key.to_string();
        self
    }
    pub fn with_latency(mut self, min: Duration, max: Duration) -> SimOptions {
        self.latency = (min, max);
        self
    }
    pub fn with_limits(mut self, limits: Vec<(Duration, u32)>) -> SimOptions {
        self.limits = limits;
        self
    }
    /// No rate limit at all.
    pub fn unlimited(mut self) -> SimOptions {
        self.limits.clear();
        self
    }
    pub fn with_credits(mut self, credits: Option<i64>) -> SimOptions {
        self.credits = credits;
        self
    }
    pub fn with_profile(mut self, profile: ProviderProfile) -> SimOptions {
        self.profile = profile;
        self
    }
    pub fn with_processing_delay(mut self, d: Duration) -> SimOptions {
        self.processing_delay = d;
        self
    }
    pub fn with_callback_retry_interval(mut self, d: Duration) -> SimOptions {
        self.callback_retry_interval = d;
        self
    }
}

/// What a simulator observed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Every API request received, including rejected ones (not the `/_sim` control calls).
    pub requests: u64,
    /// "POST /people/match" -> status -> count (paths relative to the base URL, ids as {id}).
    pub by_endpoint: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Answers signalling a rate limit (429, or Hunter's 403).
    pub rate_limited: u64,
    /// Provider credits billed in total.
    pub credits_charged: i64,
    pub max_in_flight: u32,
    /// FullEnrich webhook delivery attempts (each retry counts).
    pub callbacks_sent: u64,
    /// Attempts that failed (non-2xx or connection error).
    pub callbacks_failed: u64,
    pub log: Vec<CallRecord>,
}

/// One API request as the simulator saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallRecord {
    /// Arrival, in ms since server start ([`SimServer::arrival_unix_ms`] gives the wall clock).
    pub at_ms: u64,
    pub endpoint: String,
    pub status: u16,
    /// Persons the request was about (matched).
    pub persons: Vec<usize>,
    /// Channels asked, where the API says.
    pub channels: Vec<SimChannel>,
    /// Credits billed by this answer (FullEnrich bills when the batch is processed: 0 here).
    pub charged: i64,
}

impl Stats {
    /// Max number of requests received in any sliding window of that length.
    pub fn max_in_window(&self, window: Duration) -> u32 {
        let w = window.as_millis() as u64;
        let mut t: Vec<u64> = self.log.iter().map(|r| r.at_ms).collect();
        t.sort_unstable();
        let mut best = 0usize;
        let mut j = 0usize;
        for i in 0..t.len() {
            if j < i {
                j = i;
            }
            while j < t.len() && t[j] < t[i] + w.max(1) {
                j += 1;
            }
            best = best.max(j - i);
        }
        best as u32
    }

    /// Number of requests that were about this person.
    pub fn calls_for(&self, person: usize) -> usize {
        self.log
            .iter()
            .filter(|r| r.persons.contains(&person))
            .count()
    }

    /// Requests to `endpoint` ("POST /people/match") answered with `status`.
    pub fn count(&self, endpoint: &str, status: u16) -> u64 {
        self.by_endpoint
            .get(endpoint)
            .and_then(|m| m.get(&status))
            .copied()
            .unwrap_or(0)
    }

    /// Requests to `endpoint`, any status.
    pub fn count_endpoint(&self, endpoint: &str) -> u64 {
        self.by_endpoint
            .get(endpoint)
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }
}

/// A fault to inject.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub scope: FaultScope,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FaultKind {
    /// That status with the provider's documented body for it (e.g. 500/502/503).
    Status(u16),
    /// 200 with a truncated JSON body.
    MalformedBody,
    /// Sleep this long before answering normally.
    Delay(Duration),
    /// The provider's rate-limit answer.
    RateLimited,
    /// The provider's out-of-credits answer.
    OutOfCredits,
    /// The provider's bad-key answer.
    AuthError,
    /// Hunter's 202 "still processing" (FullEnrich: GET answers `error.enrichment.in_progress`);
    /// ignored by the other providers.
    Processing,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FaultScope {
    /// The next n API requests (that pass auth and the rate limiter).
    Next(u32),
    Always,
    /// Requests about this person.
    Person(usize),
}

// ---------------------------------------------------------------------------------------------
// Internals shared with the provider modules.

pub(crate) struct ActiveFault {
    fault: Fault,
    remaining: Option<u32>,
}

pub(crate) struct St {
    pub stats: Stats,
    pub faults: Vec<ActiveFault>,
    pub credits: Option<i64>,
    windows: HashMap<(String, usize), (Instant, u32)>,
    /// Billing dedupe keys (Hunter emails, Prospeo records, FullEnrich contact+channel).
    pub billed: HashMap<String, String>,
    pub fullenrich: providers::fullenrich::FeState,
}

pub(crate) struct Shared {
    pub kind: ProviderKind,
    pub pop: Arc<Population>,
    pub opts: SimOptions,
    pub started: Instant,
    /// The wall clock at `started` (what [`CallRecord::at_ms`] counts from).
    pub started_wall: SystemTime,
    st: Mutex<St>,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
    seq: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
    pub http: reqwest::Client,
    api: Box<dyn Api>,
}

/// Outcome of a billing attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Charge {
    Billed(i64),
    Free,
    Insufficient,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn profile(&self) -> &ProviderProfile {
        &self.opts.profile
    }

    pub(crate) fn name(&self) -> &str {
        &self.opts.name
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    /// Bill `amount` credits if the balance covers it.
    pub(crate) fn charge(&self, amount: i64) -> bool {
        let mut st = self.lock();
        Self::charge_locked(&mut st, amount)
    }

    pub(crate) fn charge_locked(st: &mut St, amount: i64) -> bool {
        if amount <= 0 {
            return true;
        }
        if let Some(b) = st.credits {
            if b < amount {
                return false;
            }
            st.credits = Some(b - amount);
        }
        st.stats.credits_charged += amount;
        true
    }

    /// Bill `amount` unless `dedupe` was billed before (then free).
    pub(crate) fn charge_once(&self, dedupe: String, amount: i64) -> Charge {
        let mut st = self.lock();
        if st.billed.contains_key(&dedupe) {
            return Charge::Free;
        }
        if !Self::charge_locked(&mut st, amount) {
            return Charge::Insufficient;
        }
        st.billed.insert(dedupe, String::new());
        Charge::Billed(amount)
    }

    pub(crate) fn has_billed(&self, dedupe: &str) -> bool {
        self.lock().billed.contains_key(dedupe)
    }

    pub(crate) fn credits(&self) -> Option<i64> {
        self.lock().credits
    }

    pub(crate) fn spawn<F>(self: &Arc<Self>, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let h = tokio::spawn(fut);
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(h.abort_handle());
    }

    fn abort_tasks(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
    }

    fn check_limits(&self, key: &str, now: Instant) -> LimitInfo {
        let mut st = self.lock();
        let mut windows = Vec::with_capacity(self.opts.limits.len());
        let mut exceeded = None;
        for (i, (dur, max)) in self.opts.limits.iter().enumerate() {
            let e = st.windows.entry((key.to_string(), i)).or_insert((now, 0));
            if now >= e.0 + *dur {
                *e = (now, 0);
            }
            if e.1 >= *max && exceeded.is_none() {
                exceeded = Some(i);
            }
            windows.push(WindowInfo {
                dur: *dur,
                max: *max,
                used: e.1,
                reset_at: e.0 + *dur,
            });
        }
        if exceeded.is_none() {
            for (i, w) in windows.iter_mut().enumerate() {
                if let Some(e) = st.windows.get_mut(&(key.to_string(), i)) {
                    e.1 += 1;
                    w.used = e.1;
                }
            }
        }
        LimitInfo { windows, exceeded }
    }

    /// The first injected fault matching a request about `persons` (consuming a `Next` count).
    pub(crate) fn fault_for(&self, persons: &[usize]) -> Option<FaultKind> {
        let mut st = self.lock();
        let mut hit = None;
        for (i, af) in st.faults.iter_mut().enumerate() {
            let matches = match af.fault.scope {
                FaultScope::Next(_) => af.remaining.is_some_and(|n| n > 0),
                FaultScope::Always => true,
                FaultScope::Person(p) => persons.contains(&p),
            };
            if matches {
                if let Some(n) = af.remaining.as_mut() {
                    *n = n.saturating_sub(1);
                }
                hit = Some((i, af.fault.kind.clone()));
                break;
            }
        }
        st.faults
            .retain(|af| !matches!(af.fault.scope, FaultScope::Next(_)) || af.remaining != Some(0));
        hit.map(|(_, k)| k)
    }
}

/// One fixed window's state as seen by a request.
#[derive(Clone, Debug)]
pub(crate) struct WindowInfo {
    pub dur: Duration,
    pub max: u32,
    pub used: u32,
    pub reset_at: Instant,
}

impl WindowInfo {
    pub(crate) fn remaining(&self) -> u32 {
        self.max.saturating_sub(self.used)
    }
    /// Seconds until the window resets, rounded up (at least 1).
    pub(crate) fn reset_secs(&self, now: Instant) -> u64 {
        let d = self.reset_at.saturating_duration_since(now);
        (d.as_millis() as u64).div_ceil(1000).max(1)
    }
    pub(crate) fn reset_wall(&self, now: Instant) -> SystemTime {
        SystemTime::now() + self.reset_at.saturating_duration_since(now)
    }
    /// "second", "minute", "hour", "day", "month", else the length in ms (e.g. "2000ms").
    pub(crate) fn label(&self) -> String {
        match self.dur.as_secs() {
            1 => "second".into(),
            60 => "minute".into(),
            3600 => "hour".into(),
            86_400 => "day".into(),
            2_592_000 => "month".into(),
            _ => format!("{}ms", self.dur.as_millis()),
        }
    }
}

/// The limiter's view of one request.
#[derive(Clone, Debug)]
pub(crate) struct LimitInfo {
    pub windows: Vec<WindowInfo>,
    /// The first window that refused the request.
    pub exceeded: Option<usize>,
}

impl LimitInfo {
    /// The window to blame in a rate-limit answer (the exceeded one, else the first one, else a
    /// synthetic one-minute window).
    pub(crate) fn blamed(&self) -> WindowInfo {
        self.exceeded
            .and_then(|i| self.windows.get(i))
            .or_else(|| self.windows.first())
            .cloned()
            .unwrap_or(WindowInfo {
                dur: Duration::from_secs(60),
                max: 0,
                used: 0,
                reset_at: Instant::now() + Duration::from_secs(60),
            })
    }
    /// The window whose length is closest to (and at most) `max_len`, else the shortest.
    pub(crate) fn window_upto(&self, max_len: Duration) -> Option<&WindowInfo> {
        self.windows
            .iter()
            .filter(|w| w.dur <= max_len)
            .max_by_key(|w| w.dur)
    }
}

/// A parsed API request.
pub(crate) struct Req {
    pub method: Method,
    /// Relative to the provider prefix, without trailing slash.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// First non-empty value of a query parameter (trimmed).
    pub(crate) fn q(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .find(|v| !v.is_empty())
            .map(str::to_string)
    }
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The body as JSON (None when empty or not JSON).
    pub(crate) fn json(&self) -> Option<Value> {
        if self.body.is_empty() {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }
}

pub(crate) enum ReplyBody {
    Json(Value),
    Text(String),
    RawJson(String),
}

/// An answer plus what the stats need to know about it.
pub(crate) struct Reply {
    pub status: u16,
    pub body: ReplyBody,
    pub headers: Vec<(String, String)>,
    pub persons: Vec<usize>,
    pub channels: Vec<SimChannel>,
    pub charged: i64,
    pub rate_limited: bool,
}

impl Reply {
    pub(crate) fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            body: ReplyBody::Json(v),
            headers: Vec::new(),
            persons: Vec::new(),
            channels: Vec::new(),
            charged: 0,
            rate_limited: false,
        }
    }
    pub(crate) fn text(status: u16, s: &str) -> Reply {
        Reply {
            body: ReplyBody::Text(s.to_string()),
            ..Reply::json(status, Value::Null)
        }
    }
    pub(crate) fn raw_json(status: u16, s: &str) -> Reply {
        Reply {
            body: ReplyBody::RawJson(s.to_string()),
            ..Reply::json(status, Value::Null)
        }
    }
    pub(crate) fn header(mut self, k: &str, v: impl ToString) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub(crate) fn about(mut self, persons: Vec<usize>, channels: Vec<SimChannel>) -> Reply {
        self.persons = persons;
        self.channels = channels;
        self
    }
    pub(crate) fn limited(mut self) -> Reply {
        self.rate_limited = true;
        self
    }

    fn into_response(self) -> Response {
        let (ctype, bytes) = match self.body {
            ReplyBody::Json(v) => (
                "application/json",
                serde_json::to_vec(&v).unwrap_or_default(),
            ),
            ReplyBody::Text(s) => ("text/plain; charset=utf-8", s.into_bytes()),
            ReplyBody::RawJson(s) => ("application/json", s.into_bytes()),
        };
        let mut resp = Response::new(Body::from(bytes));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }
}

/// How a request presented its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyCheck {
    Missing,
    /// Present but not in the expected form (FullEnrich: not "Bearer ...").
    Malformed,
    Given(String),
}

/// A routed endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// "POST /people/match" (ids replaced by {id}).
    pub endpoint: String,
    pub id: u8,
    pub param: Option<String>,
}

impl Route {
    pub(crate) fn new(endpoint: &str, id: u8) -> Route {
        Route {
            endpoint: endpoint.to_string(),
            id,
            param: None,
        }
    }
}

pub(crate) type BoxFut<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// One simulated provider API.
pub(crate) trait Api: Send + Sync + 'static {
    fn route(&self, method: &Method, path: &str) -> Result<Route, Reply>;
    fn key(&self, req: &Req) -> KeyCheck;
    fn auth_error(&self, kc: &KeyCheck) -> Reply;
    fn rate_limited(&self, ctx: &Ctx, window: &WindowInfo) -> Reply;
    fn status_error(&self, status: u16) -> Reply;
    fn out_of_credits(&self) -> Reply;
    /// Answer for the Processing fault (None = answer normally).
    fn processing(&self, _ctx: &Ctx) -> Option<Reply> {
        None
    }
    /// A prefix of a typical success body (for the MalformedBody fault).
    fn malformed(&self) -> Reply;
    /// Headers added to every answer after auth (rate-limit / credit headers).
    fn decorate(&self, _ctx: &Ctx, _reply: &mut Reply) {}
    fn serve<'a>(&'a self, ctx: &'a Ctx, req: &'a Req) -> BoxFut<'a>;
}

/// Per-request context handed to the provider code.
pub(crate) struct Ctx {
    pub sh: Arc<Shared>,
    pub route: Route,
    pub limit: LimitInfo,
    pub seq: u64,
    pub now: Instant,
}

impl Ctx {
    pub(crate) fn pop(&self) -> &Population {
        &self.sh.pop
    }

    /// Apply the first matching injected fault, if any. `None` = answer normally (after any
    /// Delay fault slept).
    pub(crate) async fn gate(&self, persons: &[usize]) -> Option<Reply> {
        let kind = self.sh.fault_for(persons)?;
        let api = &self.sh.api;
        match kind {
            FaultKind::Delay(d) => {
                tokio::time::sleep(d).await;
                None
            }
            FaultKind::Status(s) => Some(api.status_error(s)),
            FaultKind::MalformedBody => Some(api.malformed()),
            FaultKind::RateLimited => {
                let w = self.limit.blamed();
                Some(api.rate_limited(self, &w).limited())
            }
            FaultKind::OutOfCredits => Some(api.out_of_credits()),
            FaultKind::AuthError => Some(api.auth_error(&KeyCheck::Given(String::new()))),
            FaultKind::Processing => api.processing(self),
        }
        .map(|r| r.about(persons.to_vec(), Vec::new()))
    }

    /// Deterministic per-request hash.
    pub(crate) fn h(&self) -> H {
        H::new(self.sh.pop.seed()).s(self.sh.name()).n(self.seq)
    }
}

// ---------------------------------------------------------------------------------------------
// Server.

struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(sh: &'a Shared) -> InFlight<'a> {
        let n = sh.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        sh.max_in_flight.fetch_max(n, Ordering::SeqCst);
        InFlight(sh)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

const BODY_LIMIT: usize = 16 * 1024 * 1024;

async fn entry(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let full_path = parts.uri.path().to_string();
    if let Some(rest) = full_path.strip_prefix("/_sim/") {
        let bytes = axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .unwrap_or_default();
        return control(&sh, &parts.method, rest, &bytes);
    }
    let arrival = Instant::now();
    let _guard = InFlight::enter(&sh);
    sh.lock().stats.requests += 1;
    let query = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let prefix = sh.kind.path_prefix();
    let rel = full_path
        .strip_prefix(prefix)
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .map(|r| r.trim_end_matches('/').to_string());
    let method = parts.method.clone();
    let (endpoint, reply) = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Err(_) => (
            format!("{} {}", method, full_path),
            sh.api.status_error(413),
        ),
        Ok(bytes) => {
            let req = Req {
                method: parts.method,
                path: rel.clone().unwrap_or_default(),
                query,
                headers: parts.headers,
                body: bytes,
            };
            pipeline(&sh, req, rel.is_some(), &full_path, arrival).await
        }
    };
    let status = reply.status;
    {
        let mut st = sh.lock();
        *st.stats
            .by_endpoint
            .entry(endpoint.clone())
            .or_default()
            .entry(status)
            .or_default() += 1;
        if reply.rate_limited {
            st.stats.rate_limited += 1;
        }
        let at_ms = arrival.saturating_duration_since(sh.started).as_millis() as u64;
        st.stats.log.push(CallRecord {
            at_ms,
            endpoint,
            status,
            persons: reply.persons.clone(),
            channels: reply.channels.clone(),
            charged: reply.charged,
        });
    }
    reply.into_response()
}

async fn pipeline(
    sh: &Arc<Shared>,
    req: Req,
    under_prefix: bool,
    full_path: &str,
    arrival: Instant,
) -> (String, Reply) {
    let route = if under_prefix {
        sh.api.route(&req.method, &req.path)
    } else {
        Err(sh.api.status_error(404))
    };
    let route = match route {
        Ok(r) => r,
        Err(reply) => return (format!("{} {}", req.method, full_path), reply),
    };
    let endpoint = route.endpoint.clone();
    // Auth comes first.
    let key = match sh.api.key(&req) {
        KeyCheck::Given(k) if k == sh.opts.api_key => k,
        other => return (endpoint, sh.api.auth_error(&other)),
    };
    // Then the rate limiter, counting at arrival.
    let limit = sh.check_limits(&key, arrival);
    let ctx = Ctx {
        sh: sh.clone(),
        route,
        limit,
        seq: sh.next_seq(),
        now: arrival,
    };
    if ctx.limit.exceeded.is_some() {
        let w = ctx.limit.blamed();
        let mut r = sh.api.rate_limited(&ctx, &w).limited();
        sh.api.decorate(&ctx, &mut r);
        return (endpoint, r);
    }
    // Latency (deterministic jitter), after counting.
    let (lo, hi) = sh.opts.latency;
    if hi > Duration::ZERO || lo > Duration::ZERO {
        let span = hi.saturating_sub(lo);
        let d = lo + span.mul_f64(ctx.h().s("latency").unit());
        tokio::time::sleep(d).await;
    }
    let mut reply = sh.api.serve(&ctx, &req).await;
    sh.api.decorate(&ctx, &mut reply);
    (endpoint, reply)
}

fn control(sh: &Arc<Shared>, method: &Method, path: &str, body: &[u8]) -> Response {
    let ok = || {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    };
    let bad = |msg: String| Reply::json(400, json!({ "error": msg })).into_response();
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "stats") => {
            Reply::json(200, serde_json::to_value(snapshot(sh)).unwrap_or_default()).into_response()
        }
        ("POST", "stats/reset") => {
            sh.lock().stats = Stats::default();
            sh.max_in_flight.store(0, Ordering::SeqCst);
            ok()
        }
        ("POST", "faults") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => {
                inject(sh, f);
                ok()
            }
            Err(e) => bad(e.to_string()),
        },
        ("DELETE", "faults") => {
            sh.lock().faults.clear();
            ok()
        }
        ("GET", "credits") => Reply::json(200, json!({ "credits": sh.credits() })).into_response(),
        ("PUT", "credits") | ("POST", "credits") => match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                sh.lock().credits = v.get("credits").and_then(Value::as_i64);
                ok()
            }
            Err(e) => bad(e.to_string()),
        },
        _ => Reply::json(404, json!({ "error": "unknown simulator control path" })).into_response(),
    }
}

fn inject(sh: &Shared, fault: Fault) {
    let remaining = match fault.scope {
        FaultScope::Next(n) => Some(n),
        _ => None,
    };
    if remaining == Some(0) {
        return;
    }
    sh.lock().faults.push(ActiveFault { fault, remaining });
}

fn snapshot(sh: &Shared) -> Stats {
    let mut s = sh.lock().stats.clone();
    s.max_in_flight = sh.max_in_flight.load(Ordering::SeqCst);
    s
}

/// A running simulator bound to 127.0.0.1 on an ephemeral port.
pub struct SimServer {
    sh: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

/// Start a simulator of `kind` over `population`, bound to 127.0.0.1:0.
pub async fn start(
    kind: ProviderKind,
    population: Arc<Population>,
    opts: SimOptions,
) -> std::io::Result<SimServer> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(std::io::Error::other)?;
    let sh = Arc::new(Shared {
        kind,
        pop: population,
        st: Mutex::new(St {
            stats: Stats::default(),
            faults: Vec::new(),
            credits: opts.credits,
            windows: HashMap::new(),
            billed: HashMap::new(),
            fullenrich: Default::default(),
        }),
        opts,
        started: Instant::now(),
        started_wall: SystemTime::now(),
        in_flight: AtomicU32::new(0),
        max_in_flight: AtomicU32::new(0),
        seq: AtomicU64::new(0),
        tasks: Mutex::new(Vec::new()),
        http,
        api: providers::api_for(kind),
    });
    let app = Router::new().fallback(entry).with_state(sh.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    tracing::debug!(provider = kind.name(), %addr, "simulator started");
    Ok(SimServer {
        sh,
        addr,
        shutdown: Some(tx),
        join: Some(join),
    })
}

impl SimServer {
    /// Exactly what a client puts as the provider base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, self.sh.kind.path_prefix())
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:P` (where `/_sim/...` lives).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn kind(&self) -> ProviderKind {
        self.sh.kind
    }
    pub fn name(&self) -> &str {
        self.sh.name()
    }
    pub fn api_key(&self) -> &str {
        &self.sh.opts.api_key
    }
    pub fn options(&self) -> &SimOptions {
        &self.sh.opts
    }
    pub fn population(&self) -> &Arc<Population> {
        &self.sh.pop
    }
    pub fn stats(&self) -> Stats {
        snapshot(&self.sh)
    }
    /// The wall-clock time [`CallRecord::at_ms`] counts from: a call's arrival is
    /// `started_at() + at_ms` (to compare the log with times another process recorded).
    pub fn started_at(&self) -> SystemTime {
        self.sh.started_wall
    }
    /// A call's arrival as unix milliseconds (wall clock).
    pub fn arrival_unix_ms(&self, call: &CallRecord) -> i64 {
        let base = self
            .sh
            .started_wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        base + call.at_ms as i64
    }
    pub fn reset_stats(&self) {
        self.sh.lock().stats = Stats::default();
        self.sh.max_in_flight.store(0, Ordering::SeqCst);
    }
    pub fn inject(&self, fault: Fault) {
        inject(&self.sh, fault);
    }
    pub fn clear_faults(&self) {
        self.sh.lock().faults.clear();
    }
    pub fn set_credits(&self, credits: Option<i64>) {
        self.sh.lock().credits = credits;
    }
    pub fn credits(&self) -> Option<i64> {
        self.sh.credits()
    }
    /// Graceful shutdown (at most ~2 s), background tasks (FullEnrich batches, webhooks) aborted.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(j) = self.join.take() {
            let abort = j.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), j)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.sh.abort_tasks();
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(j) = self.join.take() {
            j.abort();
        }
        self.sh.abort_tasks();
    }
}

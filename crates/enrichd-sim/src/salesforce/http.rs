//! HTTP plumbing: the two hosts, routing, the auth → allocation → concurrency → latency →
//! fault pipeline, Salesforce's error array, `Sforce-Limit-Info`, statistics and the `/_sim`
//! control endpoints.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::oauth::{self, Who};
use super::options::SalesforceFault;
use super::schema::Obj;
use super::stats::{SalesforceStats, SfCall};
use super::{Shared, bulk, outbound, rest};

const BODY_LIMIT: usize = 160 * 1024 * 1024;
const DAY_MS: i64 = 86_400_000;

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// `login.salesforce.com` (or test / My Domain): OAuth only.
    Login,
    /// The `instance_url`: the REST API.
    Instance,
}

#[derive(Clone)]
pub(crate) struct Ctx {
    pub sh: Arc<Shared>,
    pub host: Host,
}

/// A parsed request.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub(crate) fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Form fields of an `application/x-www-form-urlencoded` body, then the query string.
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        let mut f: Vec<(String, String)> = url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect();
        f.extend(self.query.iter().cloned());
        f
    }
}

pub(crate) enum RBody {
    Json(Value),
    /// Pre-serialised JSON (query pages).
    RawJson(String),
    Text(&'static str, String),
    Empty,
}

/// An answer plus what the statistics need.
pub(crate) struct Reply {
    pub status: u16,
    pub body: RBody,
    pub headers: Vec<(String, String)>,
    /// Rows returned / records submitted.
    pub records: usize,
}

impl Reply {
    pub(crate) fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            body: RBody::Json(v),
            headers: Vec::new(),
            records: 0,
        }
    }
    pub(crate) fn raw_json(status: u16, s: String) -> Reply {
        Reply {
            body: RBody::RawJson(s),
            ..Reply::json(status, Value::Null)
        }
    }
    pub(crate) fn text(status: u16, ctype: &'static str, s: String) -> Reply {
        Reply {
            body: RBody::Text(ctype, s),
            ..Reply::json(status, Value::Null)
        }
    }
    pub(crate) fn empty(status: u16) -> Reply {
        Reply {
            body: RBody::Empty,
            ..Reply::json(status, Value::Null)
        }
    }
    pub(crate) fn header(mut self, k: &str, v: impl ToString) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub(crate) fn records(mut self, n: usize) -> Reply {
        self.records = n;
        self
    }

    fn into_response(self) -> Response {
        let (ctype, bytes) = match self.body {
            RBody::Json(v) => (
                Some("application/json;charset=UTF-8"),
                serde_json::to_vec(&v).unwrap_or_default(),
            ),
            RBody::RawJson(s) => (Some("application/json;charset=UTF-8"), s.into_bytes()),
            RBody::Text(c, s) => (Some(c), s.into_bytes()),
            RBody::Empty => (None, Vec::new()),
        };
        let mut resp = Response::new(Body::from(bytes));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Some(c) = ctype
            && let Ok(v) = HeaderValue::from_str(c)
        {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
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

/// `[{"message":…,"errorCode":…}]`.
pub(crate) fn sf_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, json!([{"message": message, "errorCode": code}]))
}

/// `[{"message":…,"errorCode":…,"fields":[…]}]`.
pub(crate) fn sf_error_fields(status: u16, code: &str, message: &str, fields: &[String]) -> Reply {
    Reply::json(
        status,
        json!([{"message": message, "errorCode": code, "fields": fields}]),
    )
}

pub(crate) fn not_found() -> Reply {
    sf_error(404, "NOT_FOUND", "The requested resource does not exist")
}

pub(crate) fn invalid_session() -> Reply {
    sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        .header("WWW-Authenticate", "Token")
}

/// The request body as JSON, or Salesforce's 400 `JSON_PARSER_ERROR`.
pub(crate) fn body_json(req: &Req) -> Result<Value, Reply> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(sf_error(
            400,
            "JSON_PARSER_ERROR",
            "The request body is either invalid or incomplete.",
        ));
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        sf_error(
            400,
            "JSON_PARSER_ERROR",
            &format!(
                "Unexpected character ('{}'): was expecting a valid JSON value at [line:{}, column:{}]",
                req.body
                    .get(e.column().saturating_sub(1))
                    .map(|b| char::from(*b))
                    .unwrap_or(' '),
                e.line(),
                e.column()
            ),
        )
    })
}

/// A REST route on the instance host.
#[derive(Clone, Debug)]
pub(crate) enum H {
    Versions,
    Resources,
    Limits,
    SObjects,
    Query { all: bool },
    QueryMore { locator: String, offset: usize },
    Describe(Obj),
    SObjectInfo(Obj),
    Get(Obj, String),
    Patch(Obj, String),
    Create(Obj),
    Collections,
    BulkCreate,
    BulkList,
    BulkGet(String),
    BulkPatch(String),
    BulkDelete(String),
    BulkUpload(String),
    BulkResults(String, bulk::Which),
}

pub(crate) struct Route {
    pub endpoint: String,
    pub h: H,
    pub version: String,
}

/// `v62.0` → valid (31.0 and later; 21.0–30.0 were retired).
fn version_ok(v: &str) -> bool {
    let Some(num) = v.strip_prefix('v') else {
        return false;
    };
    let Some((maj, min)) = num.split_once('.') else {
        return false;
    };
    matches!((maj.parse::<u32>(), min.parse::<u32>()), (Ok(m), Ok(_)) if (31..=99).contains(&m))
}

/// Route an instance-host path (None: 404).
pub(crate) fn route(method: &Method, path: &str) -> Option<Route> {
    let m = method.as_str();
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    let r = |e: &str, h: H, v: &str| {
        Some(Route {
            endpoint: format!("{m} /services/data/vXX.X{e}"),
            h,
            version: v.to_string(),
        })
    };
    match segs.as_slice() {
        ["services", "data"] if m == "GET" => Some(Route {
            endpoint: "GET /services/data".into(),
            h: H::Versions,
            version: String::new(),
        }),
        ["services", "data", v, rest @ ..] if version_ok(v) => match (m, rest) {
            ("GET", []) => r("", H::Resources, v),
            ("GET", ["limits"]) => r("/limits", H::Limits, v),
            ("GET", ["sobjects"]) => r("/sobjects", H::SObjects, v),
            ("GET", ["query"]) => r("/query", H::Query { all: false }, v),
            ("GET", ["queryAll"]) => r("/queryAll", H::Query { all: true }, v),
            ("GET", [kind @ ("query" | "queryAll"), loc]) => {
                let (locator, offset) = loc.rsplit_once('-')?;
                let offset = offset.parse().ok()?;
                r(
                    &format!("/{kind}/{{locator}}"),
                    H::QueryMore {
                        locator: locator.to_string(),
                        offset,
                    },
                    v,
                )
            }
            ("GET", ["sobjects", ty, "describe"]) => {
                let o = Obj::parse(ty)?;
                r(
                    &format!("/sobjects/{}/describe", o.name()),
                    H::Describe(o),
                    v,
                )
            }
            ("GET", ["sobjects", ty]) => {
                let o = Obj::parse(ty)?;
                r(&format!("/sobjects/{}", o.name()), H::SObjectInfo(o), v)
            }
            ("POST", ["sobjects", ty]) => {
                let o = Obj::parse(ty)?;
                r(&format!("/sobjects/{}", o.name()), H::Create(o), v)
            }
            ("GET", ["sobjects", ty, id]) => {
                let o = Obj::parse(ty)?;
                r(
                    &format!("/sobjects/{}/{{id}}", o.name()),
                    H::Get(o, id.to_string()),
                    v,
                )
            }
            ("PATCH", ["sobjects", ty, id]) => {
                let o = Obj::parse(ty)?;
                r(
                    &format!("/sobjects/{}/{{id}}", o.name()),
                    H::Patch(o, id.to_string()),
                    v,
                )
            }
            ("PATCH", ["composite", "sobjects"]) => r("/composite/sobjects", H::Collections, v),
            ("POST", ["jobs", "ingest"]) => r("/jobs/ingest", H::BulkCreate, v),
            ("GET", ["jobs", "ingest"]) => r("/jobs/ingest", H::BulkList, v),
            ("GET", ["jobs", "ingest", id]) => {
                r("/jobs/ingest/{id}", H::BulkGet(id.to_string()), v)
            }
            ("PATCH", ["jobs", "ingest", id]) => {
                r("/jobs/ingest/{id}", H::BulkPatch(id.to_string()), v)
            }
            ("DELETE", ["jobs", "ingest", id]) => {
                r("/jobs/ingest/{id}", H::BulkDelete(id.to_string()), v)
            }
            ("PUT", ["jobs", "ingest", id, "batches"]) => r(
                "/jobs/ingest/{id}/batches",
                H::BulkUpload(id.to_string()),
                v,
            ),
            ("GET", ["jobs", "ingest", id, which]) => {
                let w = bulk::Which::parse(which)?;
                r(
                    &format!("/jobs/ingest/{{id}}/{which}"),
                    H::BulkResults(id.to_string(), w),
                    v,
                )
            }
            _ => None,
        },
        _ => None,
    }
}

/// Every request enters here (both hosts).
pub(crate) async fn entry(State(ctx): State<Ctx>, req: Request) -> Response {
    let sh = ctx.sh.clone();
    let arrival = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let method = parts.method.clone();
    let mut counted = false;
    let (endpoint, reply) = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Err(_) => (
            format!("{method} {path}"),
            sf_error(413, "REQUEST_ENTITY_TOO_LARGE", "Request body too large"),
        ),
        Ok(bytes) => {
            // `POST …?_HttpMethod=PATCH` for clients behind proxies that block PATCH (§3.2).
            let method_override = (ctx.host == Host::Instance
                && parts.method == Method::POST
                && query
                    .iter()
                    .any(|(k, v)| k == "_HttpMethod" && v.eq_ignore_ascii_case("PATCH")))
            .then_some(Method::PATCH);
            let req = Req {
                method: method_override.unwrap_or(parts.method),
                path: path.clone(),
                query,
                headers: parts.headers,
                body: bytes,
            };
            if let Some(rest) = path.strip_prefix("/_sim/") {
                (
                    format!("{method} /_sim/{}", rest.trim_end_matches('/')),
                    control(&sh, &req, rest.trim_end_matches('/')).await,
                )
            } else {
                match ctx.host {
                    Host::Login => match oauth::route(&req) {
                        Some((endpoint, h)) => {
                            let reply = match take_status_fault(&sh, &req.path) {
                                Some(f) => oauth::fault_reply(&f),
                                None => oauth::handle(&sh, h, &req),
                            };
                            (endpoint, reply)
                        }
                        None => (format!("{method} {path} (login host)"), not_found()),
                    },
                    Host::Instance => match route(&req.method, &path) {
                        None => (format!("{method} {path}"), not_found()),
                        Some(r) => {
                            let (reply, c) = api_pipeline(&sh, &r, &req).await;
                            counted = c;
                            (r.endpoint, reply)
                        }
                    },
                }
            }
        }
    };
    record(&sh, arrival, endpoint, counted, &reply);
    reply.into_response()
}

fn record(sh: &Shared, arrival: Instant, endpoint: String, counted: bool, reply: &Reply) {
    let mut c = sh.ctl();
    let s = &mut c.stats;
    s.requests += 1;
    *s.by_endpoint.entry(endpoint.clone()).or_default() += 1;
    *s.by_endpoint_status
        .entry(format!("{endpoint} {}", reply.status))
        .or_default() += 1;
    *s.by_status.entry(reply.status).or_default() += 1;
    if counted {
        s.api_calls += 1;
    }
    if reply.status == 401 {
        s.unauthorized += 1;
    }
    s.log.push(SfCall {
        at: arrival.saturating_duration_since(sh.started),
        endpoint,
        status: reply.status,
        counted,
        records: reply.records,
    });
}

/// Decrements the long-running in-flight count when the request ends.
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut c = self.0.ctl();
        c.long_running = c.long_running.saturating_sub(1);
    }
}

/// The allocation and concurrency decision: Ok((usage incl. this call, max, in-flight
/// guard)) or the 403 answer (not counted).
fn admit(sh: &Shared) -> Result<(u64, u64, Option<InFlight<'_>>), Reply> {
    let now = sh.clock.now_ms();
    let mut c = sh.ctl();
    while c.usage.front().is_some_and(|t| *t <= now - DAY_MS) {
        c.usage.pop_front();
    }
    let max = c.daily_max;
    let used = c.usage.len() as u64;
    if used >= max {
        c.stats.limit_exceeded_daily += 1;
        return Err(sf_error(
            403,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        )
        .header("Sforce-Limit-Info", format!("api-usage={used}/{max}")));
    }
    let mut guard = None;
    if let Some(lr) = sh.opts.long_running.as_ref()
        && sh.opts.latency >= lr.threshold
    {
        if c.long_running >= lr.max {
            c.stats.limit_exceeded_concurrent += 1;
            return Err(sf_error(
                403,
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
            )
            .header("Sforce-Limit-Info", format!("api-usage={used}/{max}")));
        }
        c.long_running += 1;
        c.stats.max_long_running_in_flight = c.stats.max_long_running_in_flight.max(c.long_running);
        guard = Some(InFlight(sh));
    }
    c.usage.push_back(now);
    Ok((used + 1, max, guard))
}

/// Returns the reply and whether the call counted against the daily allocation.
async fn api_pipeline(sh: &Arc<Shared>, r: &Route, req: &Req) -> (Reply, bool) {
    if matches!(r.h, H::Versions) {
        return (rest::versions(sh), false);
    }
    let who = match oauth::authenticate(sh, req) {
        Some(w) => w,
        None => {
            sleep_latency(sh).await;
            return (invalid_session(), false);
        }
    };
    let (used, max, guard) = match admit(sh) {
        Ok(x) => x,
        Err(reply) => {
            sleep_latency(sh).await;
            return (reply, false);
        }
    };
    let _guard = guard;
    sleep_latency(sh).await;
    let reply = match take_status_fault(sh, &req.path) {
        Some(f) => {
            let reply = fault_reply(&f);
            if matches!(reply.status, 401 | 403) {
                // As the real answers: not counted, no usage header.
                sh.ctl().usage.pop_back();
                return (reply, false);
            }
            reply
        }
        None => dispatch(sh, r, req, &who).await,
    };
    (
        reply.header("Sforce-Limit-Info", format!("api-usage={used}/{max}")),
        true,
    )
}

async fn sleep_latency(sh: &Shared) {
    if !sh.opts.latency.is_zero() {
        tokio::time::sleep(sh.opts.latency).await;
    }
}

async fn dispatch(sh: &Arc<Shared>, r: &Route, req: &Req, who: &Who) -> Reply {
    let v = r.version.as_str();
    match &r.h {
        H::Versions => rest::versions(sh),
        H::Resources => rest::resources(v),
        H::Limits => rest::limits(sh),
        H::SObjects => rest::sobjects(v),
        H::Query { all } => rest::query(sh, req, v, *all, who),
        H::QueryMore { locator, offset } => rest::query_more(sh, v, locator, *offset),
        H::Describe(o) => rest::describe(sh, *o, v),
        H::SObjectInfo(o) => rest::sobject_info(*o, v),
        H::Get(o, id) => rest::get(sh, req, *o, id, v),
        H::Patch(o, id) => rest::patch(sh, req, *o, id, who),
        H::Create(o) => rest::create(sh, req, *o, who),
        H::Collections => rest::collections(sh, req, who),
        H::BulkCreate => bulk::create(sh, req, v, who),
        H::BulkList => bulk::list(sh, v),
        H::BulkGet(id) => bulk::get(sh, id),
        H::BulkPatch(id) => bulk::patch(sh, req, id),
        H::BulkDelete(id) => bulk::delete(sh, id),
        H::BulkUpload(id) => bulk::upload(sh, req, id),
        H::BulkResults(id, w) => bulk::results(sh, id, *w),
    }
}

/// A `Status` fault that applies to this path (consumes one).
fn take_status_fault(sh: &Shared, path: &str) -> Option<SalesforceFault> {
    let mut c = sh.ctl();
    let mut hit = None;
    for f in c.faults.iter_mut() {
        if let SalesforceFault::Status {
            path_prefix, count, ..
        } = f
            && *count > 0
            && path.starts_with(path_prefix.as_str())
        {
            *count -= 1;
            hit = Some(f.clone());
            break;
        }
    }
    c.faults
        .retain(|f| !matches!(f, SalesforceFault::Status { count: 0, .. }));
    hit
}

/// The REST answer for a `Status` fault.
fn fault_reply(f: &SalesforceFault) -> Reply {
    let SalesforceFault::Status {
        status,
        error_code,
        message,
        ..
    } = f
    else {
        return sf_error(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred.");
    };
    let (code, msg) = match status {
        400 => (
            "QUERY_TIMEOUT",
            "Your query request was running for too long.",
        ),
        401 => ("INVALID_SESSION_ID", "Session expired or invalid"),
        403 => ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
        404 => ("NOT_FOUND", "The requested resource does not exist"),
        503 => (
            "SERVER_UNAVAILABLE",
            "Server is temporarily unavailable; please try again later.",
        ),
        _ => (
            "UNKNOWN_EXCEPTION",
            "An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-123456789)",
        ),
    };
    let reply = sf_error(
        *status,
        error_code.as_deref().unwrap_or(code),
        message.as_deref().unwrap_or(msg),
    );
    if *status == 401 {
        reply.header("WWW-Authenticate", "Token")
    } else {
        reply
    }
}

/// FailRecords: should this write of `id` fail, and with which statusCode? Consumes one.
pub(crate) fn take_record_fault(sh: &Shared, id: &str) -> Option<String> {
    let mut c = sh.ctl();
    let (left, code) = c.fail.get_mut(id).map(|e| (&mut e.0, e.1.clone()))?;
    if *left == 0 {
        return None;
    }
    if *left != u32::MAX {
        *left -= 1;
    }
    Some(code)
}

pub(crate) fn inject(sh: &Shared, f: SalesforceFault) {
    let mut c = sh.ctl();
    match f {
        SalesforceFault::FailRecords {
            ids,
            status_code,
            times,
        } => {
            if times > 0 {
                for id in ids {
                    let key = super::time::to_id18(id.trim()).unwrap_or(id);
                    c.fail.insert(key, (times, status_code.clone()));
                }
            }
        }
        SalesforceFault::Status { count: 0, .. } => {}
        other => c.faults.push(other),
    }
}

fn ctl_err(status: u16, m: impl Into<String>) -> Reply {
    Reply::json(status, json!({"error": m.into()}))
}

fn map_of_strings(v: &Value) -> Vec<(String, Value)> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// `/_sim/*` (both hosts).
async fn control(sh: &Arc<Shared>, req: &Req, path: &str) -> Reply {
    let ok = || Reply::empty(204);
    let body = || serde_json::from_slice::<Value>(&req.body).unwrap_or(Value::Null);
    let segs: Vec<&str> = path.split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["stats"]) => {
            let mut s: SalesforceStats = sh.ctl().stats.clone();
            if req.q("log") != Some("true") {
                s.log.clear();
            }
            Reply::json(200, serde_json::to_value(s).unwrap_or_default())
        }
        ("POST", ["stats", "reset"]) => {
            sh.ctl().stats = SalesforceStats::default();
            ok()
        }
        ("GET", ["clock"]) => Reply::json(
            200,
            json!({"now_ms": sh.clock.now_ms(), "offset_ms": sh.clock.offset_ms(),
                   "now": super::time::sf_datetime(sh.clock.now_ms())}),
        ),
        ("POST", ["clock", "advance"]) => {
            let b = body();
            let ms = b["ms"]
                .as_i64()
                .or_else(|| b["seconds"].as_i64().map(|s| s * 1000))
                .unwrap_or(0);
            sh.clock.advance(ms);
            sh.outbound_wake();
            Reply::json(200, json!({"now_ms": sh.clock.now_ms()}))
        }
        ("GET", ["limits"]) => {
            let now = sh.clock.now_ms();
            let c = sh.ctl();
            let used = c.usage.iter().filter(|t| **t > now - DAY_MS).count();
            Reply::json(
                200,
                json!({"daily_api_requests": c.daily_max, "used": used}),
            )
        }
        ("PUT" | "POST", ["limits"]) => {
            let b = body();
            match b["daily_api_requests"].as_u64() {
                Some(n) => {
                    sh.ctl().daily_max = n;
                    ok()
                }
                None => ctl_err(400, "expected {\"daily_api_requests\": n}"),
            }
        }
        ("POST", ["limits", "reset-usage"]) => {
            sh.ctl().usage.clear();
            ok()
        }
        ("POST", ["faults"]) => match serde_json::from_slice::<SalesforceFault>(&req.body) {
            Ok(f) => {
                inject(sh, f);
                ok()
            }
            Err(e) => ctl_err(400, e.to_string()),
        },
        ("DELETE", ["faults"]) => {
            let mut c = sh.ctl();
            c.faults.clear();
            c.fail.clear();
            ok()
        }
        ("POST", ["sessions", "expire"]) => {
            sh.auth().expire_all();
            ok()
        }
        ("POST", ["refresh-tokens", "revoke"]) => {
            sh.auth().revoke_all_refresh();
            ok()
        }
        ("GET", ["records", id]) => match sh.record_view(id) {
            Some(v) => Reply::json(200, Value::Object(v)),
            None => ctl_err(404, "no such record"),
        },
        ("GET", ["records", id, "history"]) => Reply::json(
            200,
            serde_json::to_value(sh.history(id)).unwrap_or_default(),
        ),
        ("POST", ["records", id, "edit"]) => {
            let b = body();
            let user = b["_user"].as_str().map(str::to_string);
            let fields: Vec<(String, Value)> = map_of_strings(&b)
                .into_iter()
                .filter(|(k, _)| k != "_user")
                .collect();
            match sh.human_edit(id, &fields, user.as_deref()) {
                Ok(()) => ok(),
                Err(e) => ctl_err(400, e),
            }
        }
        ("POST", ["records", id, "convert"]) => match sh.convert_lead(id) {
            Ok(()) => ok(),
            Err(e) => ctl_err(400, e),
        },
        ("POST", ["records", id, "delete"]) => match sh.delete_record(id) {
            Ok(()) => ok(),
            Err(e) => ctl_err(400, e),
        },
        ("POST", ["records", ty]) => {
            let Some(obj) = Obj::parse(ty) else {
                return ctl_err(404, "unknown object");
            };
            let b = body();
            match sh.create_record(obj, &map_of_strings(&b)) {
                Ok(id) => Reply::json(201, json!({"id": id})),
                Err(e) => ctl_err(400, e),
            }
        }
        ("POST", ["outbound", "flush"]) => {
            outbound::flush(sh).await;
            ok()
        }
        ("GET", ["outbound"]) => Reply::json(200, outbound::pending_json(sh)),
        _ => ctl_err(404, "unknown simulator control path"),
    }
}

//! HTTP plumbing: routing, the auth → limiter → latency → fault → scope pipeline, HubSpot's
//! error shapes, statistics and the `/_sim` control endpoints.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::limits::{Decision, Policy};
use super::oauth::{self, Who};
use super::options::{HubSpotFault, HubSpotLimits};
use super::stats::{Bucket, HsCall, HubSpotStats};
use super::store::Obj;
use super::time::now_ms;
use super::{Shared, objects, properties, search};

const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// A parsed request.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// First value of a query parameter, trimmed (None when absent or empty).
    pub(crate) fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .find(|v| !v.is_empty())
    }
    /// Every value of a parameter, comma lists split (`properties=a,b&properties=c`).
    pub(crate) fn q_list(&self, name: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) enum RBody {
    Json(Value),
    Html(String),
    Empty,
}

/// An answer plus what the statistics need.
pub(crate) struct Reply {
    pub status: u16,
    pub body: RBody,
    pub headers: Vec<(String, String)>,
    /// Batch inputs (stats).
    pub inputs: usize,
    /// `policyName` of a 429 (stats).
    pub policy: Option<&'static str>,
}

impl Reply {
    pub(crate) fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            body: RBody::Json(v),
            headers: Vec::new(),
            inputs: 0,
            policy: None,
        }
    }
    pub(crate) fn empty(status: u16) -> Reply {
        Reply {
            body: RBody::Empty,
            ..Reply::json(status, Value::Null)
        }
    }
    pub(crate) fn html(status: u16, s: String) -> Reply {
        Reply {
            body: RBody::Html(s),
            ..Reply::json(status, Value::Null)
        }
    }
    pub(crate) fn header(mut self, k: &str, v: impl ToString) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub(crate) fn inputs(mut self, n: usize) -> Reply {
        self.inputs = n;
        self
    }

    fn into_response(self) -> Response {
        let (ctype, bytes) = match self.body {
            RBody::Json(v) => (
                Some("application/json;charset=utf-8"),
                serde_json::to_vec(&v).unwrap_or_default(),
            ),
            RBody::Html(s) => (Some("text/html;charset=utf-8"), s.into_bytes()),
            RBody::Empty => (None, Vec::new()),
        };
        let mut resp = Response::new(Body::from(bytes));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Some(c) = ctype {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(c));
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

/// `{"status":"error","message","correlationId","category"}` plus extra fields.
pub(crate) fn error_with(
    sh: &Shared,
    status: u16,
    category: &str,
    message: &str,
    extra: Vec<(&str, Value)>,
) -> Reply {
    let mut m = serde_json::Map::new();
    m.insert("status".into(), json!("error"));
    m.insert("message".into(), json!(message));
    m.insert("correlationId".into(), json!(sh.uuid()));
    for (k, v) in extra {
        m.insert(k.into(), v);
    }
    m.insert("category".into(), json!(category));
    Reply::json(status, Value::Object(m))
}

pub(crate) fn error(sh: &Shared, status: u16, category: &str, message: &str) -> Reply {
    error_with(sh, status, category, message, Vec::new())
}

/// 400 VALIDATION_ERROR.
pub(crate) fn invalid(sh: &Shared, message: &str) -> Reply {
    error(sh, 400, "VALIDATION_ERROR", message)
}

/// The request body as JSON, or HubSpot's 400 for malformed input.
pub(crate) fn body_json(sh: &Shared, req: &Req) -> Result<Value, Reply> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            sh,
            "Invalid input JSON on line 1, column 1: No content to map due to end-of-input",
        ));
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        invalid(
            sh,
            &format!(
                "Invalid input JSON on line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

/// Which handler serves a route.
#[derive(Clone, Debug)]
pub(crate) enum H {
    Authorize,
    Token(&'static str),
    Revoke,
    Introspect,
    V1AccessToken(String),
    V1RefreshGet(String),
    V1RefreshDelete(String),
    List(Obj),
    Create(Obj),
    Get(Obj, String),
    Patch(Obj, String),
    Search(Obj),
    BatchRead(Obj),
    BatchUpdate(Obj),
    PropList(Obj),
    PropCreate(Obj),
    PropGet(Obj, String),
    PropPatch(Obj, String),
    PropBatchCreate(Obj),
    GroupList(Obj),
    GroupCreate(Obj),
    GroupGet(Obj, String),
    AssocBatchRead(Obj, Obj),
    AssocList(Obj, String, Obj),
    AccountDetails,
}

pub(crate) struct Route {
    pub endpoint: String,
    pub h: H,
    pub bucket: Bucket,
    pub scope: Option<&'static str>,
}

fn rt(endpoint: String, h: H, bucket: Bucket, scope: Option<&'static str>) -> Option<Route> {
    Some(Route {
        endpoint,
        h,
        bucket,
        scope,
    })
}

fn objects_route(m: &str, base: &str, obj: Obj, rest: &[&str]) -> Option<Route> {
    let g = Bucket::General;
    let (r, w) = (Some(obj.read_scope()), Some(obj.write_scope()));
    match (m, rest) {
        ("GET", []) => rt(format!("GET {base}"), H::List(obj), g, r),
        ("POST", []) => rt(format!("POST {base}"), H::Create(obj), g, w),
        ("POST", ["search"]) => rt(
            format!("POST {base}/search"),
            H::Search(obj),
            Bucket::Search,
            r,
        ),
        ("POST", ["batch", "read"]) => {
            rt(format!("POST {base}/batch/read"), H::BatchRead(obj), g, r)
        }
        ("POST", ["batch", "update"]) => rt(
            format!("POST {base}/batch/update"),
            H::BatchUpdate(obj),
            g,
            w,
        ),
        ("GET", [id]) => rt(
            format!("GET {base}/{{id}}"),
            H::Get(obj, id.to_string()),
            g,
            r,
        ),
        ("PATCH", [id]) => rt(
            format!("PATCH {base}/{{id}}"),
            H::Patch(obj, id.to_string()),
            g,
            w,
        ),
        _ => None,
    }
}

fn properties_route(m: &str, base: &str, obj: Obj, rest: &[&str]) -> Option<Route> {
    let g = Bucket::General;
    let (r, w) = (
        Some(obj.schema_read_scope()),
        Some(obj.schema_write_scope()),
    );
    match (m, rest) {
        ("GET", []) => rt(format!("GET {base}"), H::PropList(obj), g, r),
        ("POST", []) => rt(format!("POST {base}"), H::PropCreate(obj), g, w),
        ("POST", ["batch", "create"]) => rt(
            format!("POST {base}/batch/create"),
            H::PropBatchCreate(obj),
            g,
            w,
        ),
        ("GET", ["groups"]) => rt(format!("GET {base}/groups"), H::GroupList(obj), g, r),
        ("POST", ["groups"]) => rt(format!("POST {base}/groups"), H::GroupCreate(obj), g, w),
        ("GET", ["groups", name]) => rt(
            format!("GET {base}/groups/{{name}}"),
            H::GroupGet(obj, name.to_string()),
            g,
            r,
        ),
        ("GET", [name]) => rt(
            format!("GET {base}/{{name}}"),
            H::PropGet(obj, name.to_string()),
            g,
            r,
        ),
        ("PATCH", [name]) => rt(
            format!("PATCH {base}/{{name}}"),
            H::PropPatch(obj, name.to_string()),
            g,
            w,
        ),
        _ => None,
    }
}

/// Route a request (None: unknown path or method).
pub(crate) fn route(method: &Method, path: &str) -> Option<Route> {
    let m = method.as_str();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let t = Bucket::Token;
    match segs.as_slice() {
        ["oauth", "authorize"] if m == "GET" => {
            rt("GET /oauth/authorize".into(), H::Authorize, t, None)
        }
        ["oauth", v @ ("v1" | "v3" | "2026-03"), "token"] if m == "POST" => {
            let ver: &'static str = match *v {
                "v1" => "v1",
                "v3" => "v3",
                _ => "2026-03",
            };
            rt(format!("POST /oauth/{ver}/token"), H::Token(ver), t, None)
        }
        ["oauth", v @ ("v3" | "2026-03"), "token", "revoke"] if m == "POST" => {
            rt(format!("POST /oauth/{v}/token/revoke"), H::Revoke, t, None)
        }
        ["oauth", v @ ("v3" | "2026-03"), "token", "introspect"] if m == "POST" => rt(
            format!("POST /oauth/{v}/token/introspect"),
            H::Introspect,
            t,
            None,
        ),
        ["oauth", "v1", "access-tokens", tok] if m == "GET" => rt(
            "GET /oauth/v1/access-tokens/{token}".into(),
            H::V1AccessToken(tok.to_string()),
            t,
            None,
        ),
        ["oauth", "v1", "refresh-tokens", tok] if m == "GET" => rt(
            "GET /oauth/v1/refresh-tokens/{token}".into(),
            H::V1RefreshGet(tok.to_string()),
            t,
            None,
        ),
        ["oauth", "v1", "refresh-tokens", tok] if m == "DELETE" => rt(
            "DELETE /oauth/v1/refresh-tokens/{token}".into(),
            H::V1RefreshDelete(tok.to_string()),
            t,
            None,
        ),
        ["crm", "v3", "objects", ty, rest @ ..] => {
            objects_route(m, &format!("/crm/v3/objects/{ty}"), Obj::parse(ty)?, rest)
        }
        ["crm", "objects", "2026-03", ty, rest @ ..] => objects_route(
            m,
            &format!("/crm/objects/2026-03/{ty}"),
            Obj::parse(ty)?,
            rest,
        ),
        ["crm", "v3", "properties", ty, rest @ ..] => properties_route(
            m,
            &format!("/crm/v3/properties/{ty}"),
            Obj::parse(ty)?,
            rest,
        ),
        ["crm", "properties", "2026-03", ty, rest @ ..] => properties_route(
            m,
            &format!("/crm/properties/2026-03/{ty}"),
            Obj::parse(ty)?,
            rest,
        ),
        ["crm", "v4", "associations", f, to, "batch", "read"] if m == "POST" => {
            let (fo, tobj) = (Obj::parse(f)?, Obj::parse(to)?);
            rt(
                format!("POST /crm/v4/associations/{f}/{to}/batch/read"),
                H::AssocBatchRead(fo, tobj),
                Bucket::Exempt,
                Some(fo.read_scope()),
            )
        }
        ["crm", "associations", "2026-03", f, to, "batch", "read"] if m == "POST" => {
            let (fo, tobj) = (Obj::parse(f)?, Obj::parse(to)?);
            rt(
                format!("POST /crm/associations/2026-03/{f}/{to}/batch/read"),
                H::AssocBatchRead(fo, tobj),
                Bucket::Exempt,
                Some(fo.read_scope()),
            )
        }
        ["crm", "v4", "objects", f, id, "associations", to] if m == "GET" => {
            let (fo, tobj) = (Obj::parse(f)?, Obj::parse(to)?);
            rt(
                format!("GET /crm/v4/objects/{f}/{{id}}/associations/{to}"),
                H::AssocList(fo, id.to_string(), tobj),
                Bucket::Exempt,
                Some(fo.read_scope()),
            )
        }
        ["account-info", "v3", "details"] if m == "GET" => rt(
            "GET /account-info/v3/details".into(),
            H::AccountDetails,
            Bucket::General,
            None,
        ),
        _ => None,
    }
}

/// Every request enters here.
pub(crate) async fn entry(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let arrival = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let method = parts.method.clone();
    let (endpoint, bucket, reply) = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Err(_) => (
            format!("{method} {path}"),
            Bucket::General,
            error(&sh, 413, "VALIDATION_ERROR", "Request body too large"),
        ),
        Ok(bytes) => {
            let req = Req {
                method: parts.method,
                path: path.clone(),
                query,
                headers: parts.headers,
                body: bytes,
            };
            if let Some(rest) = path.strip_prefix("/_sim/") {
                (
                    format!("{method} /_sim/{rest}"),
                    Bucket::Sim,
                    control(&sh, &req, rest.trim_end_matches('/')),
                )
            } else {
                match route(&req.method, &path) {
                    None => (
                        format!("{method} {path}"),
                        Bucket::General,
                        error(
                            &sh,
                            404,
                            "OBJECT_NOT_FOUND",
                            &format!("Unable to route {method} {path}: no such endpoint"),
                        ),
                    ),
                    Some(r) => {
                        let reply = if r.bucket == Bucket::Token {
                            token_pipeline(&sh, &r, &req)
                        } else {
                            api_pipeline(&sh, &r, &req, arrival).await
                        };
                        (r.endpoint, r.bucket, reply)
                    }
                }
            }
        }
    };
    record(&sh, arrival, endpoint, bucket, &reply);
    reply.into_response()
}

fn record(sh: &Shared, arrival: Instant, endpoint: String, bucket: Bucket, reply: &Reply) {
    let mut c = sh.ctl();
    let s = &mut c.stats;
    s.requests += 1;
    *s.by_endpoint.entry(endpoint.clone()).or_default() += 1;
    *s.by_status.entry(reply.status).or_default() += 1;
    if let Some(p) = reply.policy {
        *s.rate_limited.entry(p.to_string()).or_default() += 1;
    }
    if !matches!(bucket, Bucket::Sim | Bucket::Token) {
        s.api_requests += 1;
    }
    s.log.push(HsCall {
        at: arrival.saturating_duration_since(sh.started),
        endpoint,
        status: reply.status,
        bucket,
        inputs: reply.inputs,
    });
}

fn token_pipeline(sh: &Arc<Shared>, r: &Route, req: &Req) -> Reply {
    if let Some(status) = take_status_fault(sh, &req.path) {
        return status_error(sh, status);
    }
    if matches!(r.h, H::Token(_)) && take_token_fault(sh) {
        let mut rep = Reply::json(
            429,
            json!({"status": "error", "message": "You have reached your rate limit."}),
        )
        .header("Retry-After", 1);
        rep.policy = Some("TOKEN_ENDPOINT");
        return rep;
    }
    oauth::handle(sh, r, req)
}

async fn api_pipeline(sh: &Arc<Shared>, r: &Route, req: &Req, arrival: Instant) -> Reply {
    let who = match oauth::authenticate(sh, req) {
        Ok(w) => w,
        Err(rep) => {
            if !sh.opts.latency.is_zero() {
                tokio::time::sleep(sh.opts.latency).await;
            }
            return rep;
        }
    };
    let decision = sh.ctl().limiter.check(r.bucket, arrival, now_ms());
    if !sh.opts.latency.is_zero() {
        tokio::time::sleep(sh.opts.latency).await;
    }
    let mut reply = if let Some((policy, retry)) = decision.limited {
        rate_limited(sh, policy, retry)
    } else if let Some(status) = take_status_fault(sh, &req.path) {
        status_error(sh, status)
    } else if let Some(scope) = r.scope.filter(|s| !who.has(s)) {
        missing_scopes(sh, scope)
    } else {
        dispatch(sh, r, req, &who)
    };
    decorate(&mut reply, &decision, &who, r.bucket);
    reply
}

fn dispatch(sh: &Arc<Shared>, r: &Route, req: &Req, _who: &Who) -> Reply {
    match &r.h {
        H::List(o) => objects::list(sh, req, *o),
        H::Create(o) => objects::create(sh, req, *o),
        H::Get(o, id) => objects::get(sh, req, *o, id),
        H::Patch(o, id) => objects::patch(sh, req, *o, id),
        H::Search(o) => search::search(sh, req, *o),
        H::BatchRead(o) => objects::batch_read(sh, req, *o),
        H::BatchUpdate(o) => objects::batch_update(sh, req, *o),
        H::AssocBatchRead(f, t) => objects::assoc_batch_read(sh, req, *f, *t),
        H::AssocList(f, id, t) => objects::assoc_list(sh, *f, id, *t),
        H::PropList(o) => properties::list(sh, req, *o),
        H::PropCreate(o) => properties::create(sh, req, *o),
        H::PropGet(o, n) => properties::get(sh, *o, n),
        H::PropPatch(o, n) => properties::patch(sh, req, *o, n),
        H::PropBatchCreate(o) => properties::batch_create(sh, req, *o),
        H::GroupList(o) => properties::groups(sh, *o),
        H::GroupCreate(o) => properties::group_create(sh, req, *o),
        H::GroupGet(o, n) => properties::group_get(sh, *o, n),
        H::AccountDetails => Reply::json(
            200,
            json!({"portalId": sh.opts.portal_id, "accountType": "STANDARD", "timeZone": "UTC",
                   "companyCurrency": "USD", "additionalCurrencies": [], "utcOffset": "+00:00",
                   "utcOffsetMilliseconds": 0, "uiDomain": "app.hubspot.com",
                   "dataHostingLocation": "na1"}),
        ),
        _ => error(sh, 404, "OBJECT_NOT_FOUND", "Unknown endpoint"),
    }
}

/// Rate-limit headers (§4.2): general responses carry the ten-secondly trio; private-app
/// calls the daily pair when a daily limit is set; search none.
fn decorate(reply: &mut Reply, d: &Decision, who: &Who, bucket: Bucket) {
    if bucket == Bucket::Search {
        return;
    }
    if let Some((max, rem)) = d.window {
        reply.headers.push((
            "X-HubSpot-RateLimit-Interval-Milliseconds".into(),
            "10000".into(),
        ));
        reply
            .headers
            .push(("X-HubSpot-RateLimit-Max".into(), max.to_string()));
        reply
            .headers
            .push(("X-HubSpot-RateLimit-Remaining".into(), rem.to_string()));
    }
    if who.private
        && let Some((max, rem)) = d.daily
    {
        reply
            .headers
            .push(("X-HubSpot-RateLimit-Daily".into(), max.to_string()));
        reply.headers.push((
            "X-HubSpot-RateLimit-Daily-Remaining".into(),
            rem.to_string(),
        ));
    }
}

pub(crate) fn rate_limited(sh: &Shared, policy: Policy, retry_after: u64) -> Reply {
    let mut r = Reply::json(
        429,
        json!({"status": "error", "message": policy.message(), "errorType": "RATE_LIMIT",
               "correlationId": sh.uuid(), "policyName": policy.name(), "requestId": sh.uuid()}),
    );
    if sh.opts.retry_after_on_429 {
        r = r.header("Retry-After", retry_after);
    }
    r.policy = Some(policy.name());
    r
}

pub(crate) fn missing_scopes(sh: &Shared, scope: &str) -> Reply {
    error_with(
        sh,
        403,
        "MISSING_SCOPES",
        "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
        vec![(
            "errors",
            json!([{"message": "One or more of the following scopes are required.",
                    "context": {"requiredGranularScopes": [scope]}}]),
        )],
    )
}

/// The body HubSpot sends with `status` (for [`HubSpotFault::Status`]).
pub(crate) fn status_error(sh: &Shared, status: u16) -> Reply {
    match status {
        429 => rate_limited(sh, Policy::TenSecondly, 1),
        400 => invalid(sh, "There was a problem with the request."),
        401 => oauth::not_authenticated(sh),
        403 => missing_scopes(sh, "crm.objects.contacts.read"),
        404 => error(sh, 404, "OBJECT_NOT_FOUND", "resource not found"),
        409 => error(
            sh,
            409,
            "CONFLICT",
            "Conflict: the object was modified concurrently.",
        ),
        423 => error(
            sh,
            423,
            "LOCKED",
            "The resource is locked by another request; retry after 2 seconds.",
        ),
        477 => error(
            sh,
            477,
            "MIGRATION_IN_PROGRESS",
            "This account is being migrated; retry later.",
        )
        .header("Retry-After", 2),
        s if s >= 500 => error(
            sh,
            s,
            "INTERNAL_ERROR",
            "An internal error occurred. Please retry the request.",
        ),
        s => error(sh, s, "ERROR", "The request failed."),
    }
}

pub(crate) fn inject(sh: &Shared, f: HubSpotFault) {
    let mut c = sh.ctl();
    match f {
        HubSpotFault::FailRecords {
            ids,
            times,
            transient,
        } => {
            if times > 0 {
                for id in ids {
                    c.fail.insert(id.trim().to_string(), (times, transient));
                }
            }
        }
        HubSpotFault::TokenRateLimited { count: 0 } | HubSpotFault::Status { count: 0, .. } => {}
        other => c.faults.push(other),
    }
}

fn take_status_fault(sh: &Shared, path: &str) -> Option<u16> {
    let mut c = sh.ctl();
    let mut hit = None;
    for f in c.faults.iter_mut() {
        if let HubSpotFault::Status {
            path_prefix,
            status,
            count,
        } = f
            && *count > 0
            && path.starts_with(path_prefix.as_str())
        {
            *count -= 1;
            hit = Some(*status);
            break;
        }
    }
    c.faults.retain(|f| {
        !matches!(
            f,
            HubSpotFault::Status { count: 0, .. } | HubSpotFault::TokenRateLimited { count: 0 }
        )
    });
    hit
}

fn take_token_fault(sh: &Shared) -> bool {
    let mut c = sh.ctl();
    let mut hit = false;
    for f in c.faults.iter_mut() {
        if let HubSpotFault::TokenRateLimited { count } = f
            && *count > 0
        {
            *count -= 1;
            hit = true;
            break;
        }
    }
    c.faults
        .retain(|f| !matches!(f, HubSpotFault::TokenRateLimited { count: 0 }));
    hit
}

/// FailRecords: should this write of `id` fail, and transiently? Consumes one attempt.
pub(crate) fn take_record_fault(sh: &Shared, id: &str) -> Option<bool> {
    let mut c = sh.ctl();
    let (left, transient) = c.fail.get_mut(id).map(|e| (&mut e.0, e.1))?;
    if *left == 0 {
        return None;
    }
    if *left != u32::MAX {
        *left -= 1;
    }
    Some(transient)
}

fn control(sh: &Arc<Shared>, req: &Req, path: &str) -> Reply {
    let ok = || Reply::empty(204);
    let bad = |m: String| Reply::json(400, json!({"status": "error", "message": m}));
    match (req.method.as_str(), path) {
        ("GET", "stats") => {
            let mut s: HubSpotStats = sh.ctl().stats.clone();
            if req.q("log") != Some("true") {
                s.log.clear();
            }
            Reply::json(200, serde_json::to_value(s).unwrap_or_default())
        }
        ("POST", "stats/reset") => {
            sh.ctl().stats = HubSpotStats::default();
            ok()
        }
        ("GET", "limits") => Reply::json(
            200,
            serde_json::to_value(sh.ctl().limiter.limits.clone()).unwrap_or_default(),
        ),
        ("PUT" | "POST", "limits") => match serde_json::from_slice::<HubSpotLimits>(&req.body) {
            Ok(l) => {
                sh.ctl().limiter.limits = l;
                ok()
            }
            Err(e) => bad(e.to_string()),
        },
        ("POST", "faults") => match serde_json::from_slice::<HubSpotFault>(&req.body) {
            Ok(f) => {
                inject(sh, f);
                ok()
            }
            Err(e) => bad(e.to_string()),
        },
        ("DELETE", "faults") => {
            let mut c = sh.ctl();
            c.faults.clear();
            c.fail.clear();
            ok()
        }
        ("POST", "expire-access-tokens") => {
            sh.auth().expire_all(now_ms());
            ok()
        }
        ("POST", "revoke-refresh-tokens") => {
            sh.auth().refresh.clear();
            ok()
        }
        (m, p) if p.starts_with("contacts/") => {
            let rest = &p["contacts/".len()..];
            let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
            match (m, action) {
                ("GET", "") => {
                    let st = sh.store();
                    match st
                        .contacts
                        .index_of(id)
                        .and_then(|i| st.contact_view(i, sh.opts.app_id))
                    {
                        Some(v) => Reply::json(200, serde_json::to_value(v).unwrap_or_default()),
                        None => Reply::json(
                            404,
                            json!({"status": "error", "message": "no such contact"}),
                        ),
                    }
                }
                ("POST", "human-edit") => {
                    match serde_json::from_slice::<serde_json::Map<String, Value>>(&req.body) {
                        Ok(m) => {
                            let props: Vec<(String, String)> = m
                                .into_iter()
                                .map(|(k, v)| match v {
                                    Value::String(s) => (k, s),
                                    Value::Null => (k, String::new()),
                                    other => (k, other.to_string()),
                                })
                                .collect();
                            let refs: Vec<(&str, &str)> = props
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_str()))
                                .collect();
                            sh.human_edit(id, &refs);
                            ok()
                        }
                        Err(e) => bad(e.to_string()),
                    }
                }
                _ => Reply::json(
                    404,
                    json!({"status": "error", "message": "unknown control path"}),
                ),
            }
        }
        _ => Reply::json(
            404,
            json!({"status": "error", "message": "unknown simulator control path"}),
        ),
    }
}

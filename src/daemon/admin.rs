//! The admin HTTP API of `enrichd run`, under `/v1`.
//!
//! Every request carries `Authorization: Bearer <key>`, a per-workspace key
//! made by `enrichd apikey create` (stored as its SHA-256 only). A missing,
//! unknown or revoked key is a 401. Every route is scoped
//! `/v1/workspaces/{ws}/...`; a key reaches its own workspace only: for any
//! other workspace the answer is the 404 a missing workspace gets, so a key
//! never learns whether another workspace (or its jobs) exists.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/workspaces/{ws}/leads/{id}/enrich[?wait_secs=N]` | enqueue `enrich_lead` (one open job per lead) → 202 `{job_id}`; with `wait_secs` (≤ 60) wait for it and answer its state (200 once finished) |
//! | `POST /v1/workspaces/{ws}/bulk` | `{"ids": [...]}`, `{"audience": "..."}` or `{"filter": [{"property", "operator", "value"}]}` (HubSpot search's shape; on Salesforce a SOQL `WHERE`, checked against the objects' describe) → enqueue `bulk` → 202 `{job_id}` |
//! | `GET /v1/workspaces/{ws}/jobs/{id}` | state, attempts, progress, last error or dead reason, result |
//! | `POST /v1/workspaces/{ws}/preview` | `{"audience", "ids", "limit", "estimate", "changes_only"}` (all optional) → the preview JSON of stored records; changes nothing |
//!
//! The work itself is done by the job workers (`super::worker`): the API
//! only validates, enqueues (idempotently) and reads. Lead ids are checked
//! as the workspace's CRM spells them (HubSpot: numbers; Salesforce: 15 or
//! 18 characters with a Lead `00Q` or Contact `003` prefix of an object the
//! workspace syncs), and a filter on Salesforce is refused with a 400 when
//! SOQL cannot express it (`super::salesforce_filter`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::worker::{BULK, ENRICH_LEAD, FilterRule, Selection};
use crate::clock::Clock;
use crate::config::crm::CrmSettings;
use crate::config::{Settings, Workspace};
use crate::core::lead::{LeadId, WorkspaceId};
use crate::crm::salesforce::sync::SalesforceSync;
use crate::crm::salesforce::{SObject, is_record_id};
use crate::crm::schema::CrmSchema;
use crate::preview::run::{Filter, Options, PreviewError, Scope, preview_stored};
use crate::store::Store;
use crate::store::jobs::{Job, JobSpec, JobState};
use crate::store::keys::hash_key;

/// `wait_secs` above this is refused.
pub const MAX_WAIT_SECS: u64 = 60;
/// Ids in one bulk request.
pub const MAX_BULK_IDS: usize = 100_000;
/// Filters in one bulk request (HubSpot allows 6 per group; a search that
/// passes 10,000 results adds one, `hs_object_id GT`).
pub const MAX_FILTERS: usize = 5;
/// Values of one `IN` / `NOT_IN` filter.
const MAX_FILTER_VALUES: usize = 100;
/// The job's filters as JSON, at most (HubSpot refuses a search body over
/// 3,000 characters; the rest of the body needs the difference).
const MAX_FILTER_CHARS: usize = 2_000;
/// Leads a preview lists when no limit is given, and the most it may ask.
const PREVIEW_DEFAULT_LIMIT: usize = 100;
const PREVIEW_MAX_LIMIT: usize = 10_000;
/// How often a waiting request looks at its job.
const WAIT_POLL: Duration = Duration::from_millis(100);
/// Request bodies above this are refused (100,000 ids fit).
const BODY_LIMIT: usize = 8 * 1024 * 1024;

const OPERATORS: [&str; 13] = [
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
];

/// What the admin routes read and write.
pub struct Admin {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Wakes the job workers when a job is enqueued.
    pub wake: Arc<Notify>,
    /// Salesforce connectors (the daemon's), whose describes check a bulk
    /// filter before it is queued.
    pub salesforce: BTreeMap<WorkspaceId, Arc<SalesforceSync>>,
}

/// The `/v1` routes.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/v1/workspaces/{ws}/leads/{id}/enrich", post(enrich_lead))
        .route("/v1/workspaces/{ws}/bulk", post(bulk))
        .route("/v1/workspaces/{ws}/jobs/{id}", get(job_status))
        .route("/v1/workspaces/{ws}/preview", post(preview))
        .route("/v1", any(unknown_route))
        .route("/v1/{*rest}", any(unknown_route))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(admin)
}

/// An error answer: `{"error": "...", "code": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// The store failed: logged in full, answered without its details.
    fn store(what: &str, e: &crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "admin API: {what}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "enrichd cannot {what} right now (database error); try again shortly, and see the logs of `enrichd run` if it persists"
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({ "error": self.message, "code": self.code }));
        let mut r = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type ApiResult = Result<Response, ApiError>;

/// The answer for a workspace the key does not reach — the same whether
/// the workspace exists or not.
fn no_workspace(ws: &str) -> ApiError {
    ApiError::not_found(format!(
        "workspace `{ws}` not found (an API key reaches only its own workspace: /v1/workspaces/<its id>/...)"
    ))
}

impl Admin {
    /// The workspace of the request: the key must be valid and of `ws`.
    async fn authorize(&self, headers: &HeaderMap, ws: &str) -> Result<Arc<Workspace>, ApiError> {
        let key = bearer(headers)?;
        let row = self
            .store
            .api_key_by_hash(&hash_key(key))
            .await
            .map_err(|e| ApiError::store("check the API key", &e))?;
        let Some(row) = row else {
            return Err(ApiError::unauthorized(
                "invalid or revoked API key; create one with `enrichd apikey create --workspace <id>`",
            ));
        };
        if row.workspace.as_str() != ws {
            return Err(no_workspace(ws));
        }
        self.settings
            .workspace(ws)
            .cloned()
            .ok_or_else(|| no_workspace(ws))
    }

    /// Enqueues `spec` and wakes the workers: 202 with the job id.
    async fn enqueue(&self, ws: &Workspace, spec: JobSpec) -> Result<(i64, bool), ApiError> {
        let (id, created) = self
            .store
            .enqueue(&ws.id, &spec, self.clock.now())
            .await
            .map_err(|e| ApiError::store("enqueue the job", &e))?;
        self.wake.notify_one();
        tracing::info!(workspace = %ws.id, job = id, kind = %spec.kind, created, "admin API: job enqueued");
        Ok((id, created))
    }

    async fn job(&self, ws: &Workspace, id: i64) -> Result<Option<Job>, ApiError> {
        self.store
            .job_by_id(&ws.id, id)
            .await
            .map_err(|e| ApiError::store("read the job", &e))
    }
}

/// The key of `Authorization: Bearer <key>`.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::unauthorized(
            "missing API key: send `Authorization: Bearer <key>` (create a key with `enrichd apikey create --workspace <id>`)",
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let text = value.to_str().map_err(|_| {
        ApiError::unauthorized(
            "the Authorization header is not readable text: send `Authorization: Bearer <key>`",
        )
    })?;
    let (scheme, key) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <key>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <key>`",
        ));
    }
    Ok(key.trim())
}

/// What the job route (and a finished wait) answers.
pub fn job_json(job: &Job) -> Value {
    let dead = job.state == JobState::Dead;
    let error = (!job.last_error.is_empty()).then_some(job.last_error.as_str());
    json!({
        "job_id": job.id,
        "workspace": job.workspace.as_str(),
        "kind": job.kind,
        "state": job.state.as_str(),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "progress": { "done": job.progress_done, "total": job.progress_total },
        "last_error": if dead { None } else { error },
        "dead_reason": if dead { error } else { None },
        "retry_at": (job.state == JobState::Queued && job.attempts > 0).then_some(job.run_after),
        "result": job.result,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "finished_at": job.finished_at,
    })
}

fn accepted(ws: &Workspace, id: i64, created: bool, kind: &str) -> Response {
    let url = format!("/v1/workspaces/{}/jobs/{id}", ws.id);
    let mut r = (
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "job_id": id,
            "kind": kind,
            "created": created,
            "status_url": url,
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A lead id the workspace's CRM could hold.
fn check_lead_id(ws: &Workspace, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(format!(
            "`{}` is not a lead id (1 to 128 printable characters)",
            id.escape_debug()
        ));
    }
    if matches!(ws.crm, Some(CrmSettings::HubSpot(_))) && !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{}` is not a HubSpot contact id: workspace {} reads leads from HubSpot, whose ids are numbers (hs_object_id), e.g. 51",
            id.escape_debug(),
            ws.id
        ));
    }
    if let Some(CrmSettings::Salesforce(sf)) = &ws.crm {
        let synced: Vec<SObject> = sf.objects.iter().map(|o| o.object).collect();
        let names = synced
            .iter()
            .map(|o| format!("{o} ({}…)", o.id_prefix()))
            .collect::<Vec<_>>()
            .join(", ");
        let object = SObject::of_id(id).filter(|_| is_record_id(id));
        return match object {
            Some(o) if synced.contains(&o) => Ok(()),
            Some(o) => Err(format!(
                "`{id}` is a {o} Id, and workspace {} does not sync {o} records (it syncs {names}); add the object to [workspaces.crm] or give the Id of a record it syncs",
                ws.id
            )),
            None => Err(format!(
                "`{}` is not a Salesforce record Id of a record workspace {} syncs: Ids are 15 or 18 letters and digits, starting with the object's prefix ({names}), e.g. 00Q5g00000AbCdEEAV",
                id.escape_debug(),
                ws.id
            )),
        };
    }
    Ok(())
}

/// `POST /v1/workspaces/{ws}/leads/{id}/enrich[?wait_secs=N]`
async fn enrich_lead(
    State(a): State<Arc<Admin>>,
    Path((ws, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let ws = a.authorize(&headers, &ws).await?;
    let route = format!("POST /v1/workspaces/{}/leads/{{id}}/enrich", ws.id);
    check_lead_id(&ws, &id).map_err(|e| ApiError::bad_request(format!("{route}: {e}")))?;
    let wait =
        wait_secs(query.as_deref()).map_err(|e| ApiError::bad_request(format!("{route}: {e}")))?;
    let spec = JobSpec::new(ENRICH_LEAD, json!({ "lead_id": id })).dedupe(id.clone());
    let (job_id, created) = a.enqueue(&ws, spec).await?;
    if wait == 0 {
        return Ok(accepted(&ws, job_id, created, ENRICH_LEAD));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let job = a.job(&ws, job_id).await?.ok_or_else(|| {
            ApiError::not_found(format!("job {job_id} not found in workspace {}", ws.id))
        })?;
        if !job.state.is_open() {
            return Ok((StatusCode::OK, axum::Json(job_json(&job))).into_response());
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok((StatusCode::ACCEPTED, axum::Json(job_json(&job))).into_response());
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// `wait_secs` from the query (0 when absent).
fn wait_secs(query: Option<&str>) -> Result<u64, String> {
    let mut wait = 0;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "wait_secs" => {
                wait = v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n <= MAX_WAIT_SECS)
                    .ok_or_else(|| {
                        format!(
                            "wait_secs must be a whole number of seconds from 0 to {MAX_WAIT_SECS}, not `{}`",
                            v.escape_debug()
                        )
                    })?;
            }
            other => {
                return Err(format!(
                    "unknown query parameter `{}` (the only one is wait_secs)",
                    other.escape_debug()
                ));
            }
        }
    }
    Ok(wait)
}

/// The body of `POST .../bulk` as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    pub ids: Option<Vec<Value>>,
    pub audience: Option<String>,
    pub filter: Option<Vec<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(alias = "propertyName")]
    property: String,
    operator: String,
    value: Option<Value>,
    #[serde(alias = "highValue")]
    high_value: Option<Value>,
    values: Option<Vec<Value>>,
}

/// A JSON body as `T`, with the path of what is wrong.
fn parse_body<T: serde::de::DeserializeOwned>(
    route: &str,
    body: &[u8],
    example: &str,
) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        ApiError::bad_request(format!(
            "{route}: the JSON body is not valid{at}: {}; expected e.g. {example}",
            e.into_inner()
        ))
    })
}

/// An id or filter value: text, or a number or boolean written as text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `POST /v1/workspaces/{ws}/bulk`
async fn bulk(
    State(a): State<Arc<Admin>>,
    Path(ws): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let ws = a.authorize(&headers, &ws).await?;
    let route = format!("POST /v1/workspaces/{}/bulk", ws.id);
    let example = match ws.crm {
        Some(CrmSettings::Salesforce(_)) => {
            r#"{"ids": ["00Q5g00000AbCdEEAV"]}, {"audience": "<name>"} or {"filter": [{"property": "LeadSource", "operator": "EQ", "value": "Web"}]}"#
        }
        _ => {
            r#"{"ids": ["51", "52"]}, {"audience": "<name>"} or {"filter": [{"property": "lifecyclestage", "operator": "EQ", "value": "lead"}]}"#
        }
    };
    let raw: BulkBody = parse_body(&route, &body, example)?;
    let bad = |m: String| ApiError::bad_request(format!("{route}: {m}"));
    let (selection, dedupe) = bulk_selection(&ws, raw, example).map_err(bad)?;
    if let (Selection::Filter(rules), Some(sf)) = (&selection, a.salesforce.get(&ws.id)) {
        check_salesforce_filter(sf, rules).await.map_err(bad)?;
    }
    let payload = serde_json::to_value(&selection).map_err(|e| bad(e.to_string()))?;
    let (id, created) = a
        .enqueue(&ws, JobSpec::new(BULK, payload).dedupe(dedupe))
        .await?;
    Ok(accepted(&ws, id, created, BULK))
}

/// A bulk selection as sent (API body or `enrichd bulk` options), checked
/// against the workspace: the selection and its dedupe key (an identical
/// selection while its job is open is the same job).
pub fn bulk_selection(
    ws: &Workspace,
    raw: BulkBody,
    example: &str,
) -> Result<(Selection, String), String> {
    let given = [
        raw.ids.is_some(),
        raw.audience.is_some(),
        raw.filter.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given != 1 {
        return Err(format!(
            "give exactly one of `ids`, `audience` or `filter` ({given} given), e.g. {example}"
        ));
    }
    let chosen = if let Some(ids) = raw.ids {
        let ids = bulk_ids(ws, &ids)?;
        let key = format!("ids:{}", digest(&ids.join(",")));
        (Selection::Ids(ids), key)
    } else if let Some(name) = raw.audience {
        if !ws.audiences.iter().any(|x| x.name == name) {
            let known: Vec<&str> = ws.audiences.iter().map(|x| x.name.as_str()).collect();
            return Err(format!(
                "unknown audience `{}` in workspace {} (configured: {})",
                name.escape_debug(),
                ws.id,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        let key = format!("audience:{name}");
        (Selection::Audience(name), key)
    } else {
        if ws.crm.is_none() {
            return Err(format!(
                "a CRM filter needs a CRM, and workspace {} has none; select leads by `ids` or `audience` instead",
                ws.id
            ));
        }
        let salesforce = matches!(ws.crm, Some(CrmSettings::Salesforce(_)));
        let rules = filter_rules(raw.filter.unwrap_or_default(), salesforce)?;
        let text = serde_json::to_string(&rules).unwrap_or_default();
        let key = format!("filter:{}", digest(&text));
        (Selection::Filter(rules), key)
    };
    Ok(chosen)
}

/// The ids of a bulk request: valid, deduplicated, sorted.
fn bulk_ids(ws: &Workspace, ids: &[Value]) -> Result<Vec<String>, String> {
    if ids.is_empty() {
        return Err("`ids` is empty: give at least one lead id".into());
    }
    if ids.len() > MAX_BULK_IDS {
        return Err(format!(
            "`ids` has {} ids; at most {MAX_BULK_IDS} per request (split the list, or select by `audience` or `filter`)",
            ids.len()
        ));
    }
    let mut out = BTreeSet::new();
    for (i, v) in ids.iter().enumerate() {
        let id = scalar(v)
            .filter(|_| !v.is_boolean())
            .ok_or_else(|| format!("`ids[{i}]` is not an id (a string or a number)"))?;
        check_lead_id(ws, id.trim()).map_err(|e| format!("`ids[{i}]`: {e}"))?;
        out.insert(id.trim().to_string());
    }
    Ok(out.into_iter().collect())
}

/// A Salesforce filter against the objects' describes (cached by the
/// connector): what SOQL cannot express is refused with where. When the
/// describe cannot be read now (org paused, not connected) the job is
/// queued anyway and the worker checks it again.
async fn check_salesforce_filter(sf: &SalesforceSync, rules: &[FilterRule]) -> Result<(), String> {
    let mut described = Vec::new();
    for object in sf.objects() {
        match sf.describe(object).await {
            Ok(s) => described.push((object, s)),
            Err(e) => {
                tracing::warn!(workspace = %sf.ws.id, object = %object, error = %e, "admin API: cannot describe the object to check a bulk filter; the job checks it when it runs");
                return Ok(());
            }
        }
    }
    let objects: Vec<(SObject, &CrmSchema)> = described.iter().map(|(o, s)| (*o, &**s)).collect();
    super::salesforce_filter::plan(&objects, rules).map(|_| ())
}

/// Checked search filters: HubSpot search's rules, or for a Salesforce
/// workspace what SOQL can express (field API names, no token search).
fn filter_rules(raw: Vec<RawRule>, salesforce: bool) -> Result<Vec<FilterRule>, String> {
    if raw.is_empty() || raw.len() > MAX_FILTERS {
        return Err(format!(
            "`filter` has {} conditions; give 1 to {MAX_FILTERS} (they are ANDed)",
            raw.len()
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let at = format!("`filter[{i}]`");
        let p = r.property.trim();
        if !salesforce
            && (p.is_empty()
                || p.len() > 100
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        {
            return Err(format!(
                "{at}.property `{}` is not a HubSpot property name (letters, digits, _ and .)",
                p.escape_debug()
            ));
        }
        let op = r.operator.trim().to_ascii_uppercase();
        if salesforce && !super::salesforce_filter::OPERATORS.contains(&op.as_str()) {
            return Err(format!(
                "{at}.operator `{}` cannot be expressed in SOQL for Salesforce (one of {})",
                r.operator.escape_debug(),
                super::salesforce_filter::OPERATORS.join(", ")
            ));
        }
        if !OPERATORS.contains(&op.as_str()) {
            return Err(format!(
                "{at}.operator `{}` is not a HubSpot search operator (one of {})",
                r.operator.escape_debug(),
                OPERATORS.join(", ")
            ));
        }
        let one = |v: Option<&Value>, key: &str| -> Result<String, String> {
            let v = v.ok_or_else(|| format!("{at}: operator {op} needs `{key}`"))?;
            scalar(v).ok_or_else(|| format!("{at}.{key} must be a string, number or boolean"))
        };
        let none = |v: bool, key: &str| -> Result<(), String> {
            if v {
                Err(format!("{at}: operator {op} takes no `{key}`"))
            } else {
                Ok(())
            }
        };
        let mut rule = FilterRule {
            property: p.to_string(),
            operator: op.clone(),
            value: None,
            high_value: None,
            values: None,
        };
        match op.as_str() {
            "HAS_PROPERTY" | "NOT_HAS_PROPERTY" => {
                none(r.value.is_some(), "value")?;
                none(r.high_value.is_some(), "high_value")?;
                none(r.values.is_some(), "values")?;
            }
            "IN" | "NOT_IN" => {
                none(r.value.is_some(), "value")?;
                none(r.high_value.is_some(), "high_value")?;
                let values = r
                    .values
                    .ok_or_else(|| format!("{at}: operator {op} needs `values` (a list)"))?;
                if values.is_empty() || values.len() > MAX_FILTER_VALUES {
                    return Err(format!(
                        "{at}.values has {} values; give 1 to {MAX_FILTER_VALUES}",
                        values.len()
                    ));
                }
                let mut list = Vec::with_capacity(values.len());
                for (j, v) in values.iter().enumerate() {
                    list.push(scalar(v).ok_or_else(|| {
                        format!("{at}.values[{j}] must be a string, number or boolean")
                    })?);
                }
                rule.values = Some(list);
            }
            "BETWEEN" => {
                none(r.values.is_some(), "values")?;
                rule.value = Some(one(r.value.as_ref(), "value")?);
                rule.high_value = Some(one(r.high_value.as_ref(), "high_value")?);
            }
            _ => {
                none(r.values.is_some(), "values")?;
                none(r.high_value.is_some(), "high_value")?;
                rule.value = Some(one(r.value.as_ref(), "value")?);
            }
        }
        if salesforce {
            super::salesforce_filter::check_rule(i, &rule)?;
        }
        out.push(rule);
    }
    let n = serde_json::to_string(&out).map_or(0, |s| s.len());
    if salesforce && n > MAX_FILTER_CHARS {
        return Err(format!(
            "`filter` is too long ({n} characters of filters; at most {MAX_FILTER_CHARS}, so the SOQL query stays far below Salesforce's URL limit)"
        ));
    }
    if n > MAX_FILTER_CHARS {
        return Err(format!(
            "`filter` is too long for HubSpot search ({n} characters of filters; at most {MAX_FILTER_CHARS}, as a search body is limited to 3,000)"
        ));
    }
    Ok(out)
}

fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `GET /v1/workspaces/{ws}/jobs/{id}`
async fn job_status(
    State(a): State<Arc<Admin>>,
    Path((ws, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let ws = a.authorize(&headers, &ws).await?;
    let missing = || {
        ApiError::not_found(format!(
            "job `{}` not found in workspace {}",
            id.escape_debug(),
            ws.id
        ))
    };
    let Ok(n) = id.parse::<i64>() else {
        return Err(missing());
    };
    let job = a.job(&ws, n).await?.ok_or_else(missing)?;
    Ok(axum::Json(job_json(&job)).into_response())
}

/// The body of `POST .../preview`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    audience: Option<String>,
    ids: Option<Vec<Value>>,
    limit: Option<usize>,
    #[serde(default)]
    estimate: bool,
    #[serde(default)]
    changes_only: bool,
}

/// `POST /v1/workspaces/{ws}/preview`: reads only.
async fn preview(
    State(a): State<Arc<Admin>>,
    Path(ws): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let ws = a.authorize(&headers, &ws).await?;
    let route = format!("POST /v1/workspaces/{}/preview", ws.id);
    let bad = |m: String| ApiError::bad_request(format!("{route}: {m}"));
    let raw: PreviewBody = if body.iter().all(u8::is_ascii_whitespace) {
        PreviewBody::default()
    } else {
        parse_body(
            &route,
            &body,
            r#"{"audience": "<name>", "ids": ["51"], "limit": 100, "estimate": true, "changes_only": false}"#,
        )?
    };
    // The mapping writes go through, and the workspace as enrichment sees
    // it: a Salesforce workspace through its first object's view (its
    // identity fields are that object's field names), as a sync pass and
    // `enrichd preview` see it.
    let (view, mapping, mapping_file) = match &ws.crm {
        Some(CrmSettings::HubSpot(h)) => (
            ws.clone(),
            h.mapping.clone(),
            h.mapping_file.display().to_string(),
        ),
        Some(CrmSettings::Salesforce(s)) => match s.objects.first() {
            Some(o) => (
                crate::crm::salesforce::sync::object_workspace(&ws, s, o.object),
                o.mapping.clone(),
                o.mapping_file.display().to_string(),
            ),
            None => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "no_mapping",
                    format!(
                        "{route}: workspace {} maps no Salesforce object, so nothing would be written back; add a mapping to its [workspaces.crm] section",
                        ws.id
                    ),
                ));
            }
        },
        None => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_crm",
                format!(
                    "{route}: workspace {} has no CRM, so nothing would be written back; add a [workspaces.crm] section to the config",
                    ws.id
                ),
            ));
        }
    };
    let limit = raw.limit.unwrap_or(PREVIEW_DEFAULT_LIMIT);
    if limit == 0 || limit > PREVIEW_MAX_LIMIT {
        return Err(bad(format!(
            "`limit` must be 1 to {PREVIEW_MAX_LIMIT} (default {PREVIEW_DEFAULT_LIMIT}), not {limit}"
        )));
    }
    let ids = match &raw.ids {
        Some(ids) if ids.is_empty() => {
            return Err(bad(
                "`ids` is empty: leave it out to preview every stored lead".into(),
            ));
        }
        Some(ids) => bulk_ids(&ws, ids).map_err(bad)?,
        None => Vec::new(),
    };
    let opts = Options {
        filter: Filter {
            audience: raw.audience,
            ids: ids.into_iter().map(LeadId).collect(),
            limit: Some(limit),
            only_changes: raw.changes_only,
        },
        estimate: raw.estimate,
    };
    let p = preview_stored(
        Scope {
            settings: &a.settings,
            ws: &view,
            mapping: &mapping,
            mapping_file: &mapping_file,
            store: &*a.store,
            now: a.clock.now(),
        },
        &opts,
        None,
    )
    .await
    .map_err(|e| match e {
        PreviewError::Usage(m) => bad(m),
        PreviewError::Store(e) => ApiError::store("read the stored leads", &e),
        PreviewError::Crm(m) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "crm", format!("{route}: {m}"))
        }
    })?;
    Ok(axum::Json(p).into_response())
}

/// Any other `/v1` path: 401 without a valid key, else 404.
async fn unknown_route(State(a): State<Arc<Admin>>, headers: HeaderMap) -> ApiResult {
    let key = bearer(&headers)?;
    let known = a
        .store
        .api_key_by_hash(&hash_key(key))
        .await
        .map_err(|e| ApiError::store("check the API key", &e))?;
    if known.is_none() {
        return Err(ApiError::unauthorized(
            "invalid or revoked API key; create one with `enrichd apikey create --workspace <id>`",
        ));
    }
    Err(ApiError::not_found(
        "no such route; the admin API has POST /v1/workspaces/<id>/leads/<lead>/enrich, POST /v1/workspaces/<id>/bulk, GET /v1/workspaces/<id>/jobs/<job> and POST /v1/workspaces/<id>/preview",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys_are_read_strictly() {
        let mut h = HeaderMap::new();
        assert_eq!(
            bearer(&h).map_err(|e| e.status),
            Err(StatusCode::UNAUTHORIZED)
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer ek_abc"),
        );
        assert_eq!(bearer(&h).ok(), Some("ek_abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer   ek_abc "),
        );
        assert_eq!(bearer(&h).ok(), Some("ek_abc"));
        for bad in ["Basic ek_abc", "ek_abc", "Bearer ", "Bearer"] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert!(bearer(&h).is_err(), "{bad}");
        }
    }

    #[test]
    fn wait_secs_is_bounded_and_typos_are_named() {
        assert_eq!(wait_secs(None), Ok(0));
        assert_eq!(wait_secs(Some("wait_secs=30")), Ok(30));
        assert!(wait_secs(Some("wait_secs=61")).is_err());
        assert!(wait_secs(Some("wait_secs=-1")).is_err());
        let e = wait_secs(Some("wait=5")).err().unwrap_or_default();
        assert!(e.contains("unknown query parameter `wait`"), "{e}");
    }

    fn rule(v: Value) -> RawRule {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn filters_are_checked_against_hubspot_search_rules() {
        let ok = filter_rules(
            vec![
                rule(json!({"property": "country", "operator": "eq", "value": "US"})),
                rule(
                    json!({"propertyName": "numemployees", "operator": "BETWEEN", "value": 10, "highValue": 50}),
                ),
                rule(
                    json!({"property": "seniority", "operator": "IN", "values": ["vp", "director"]}),
                ),
                rule(json!({"property": "email", "operator": "NOT_HAS_PROPERTY"})),
            ],
            false,
        );
        let ok = ok.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok[0].operator, "EQ");
        assert_eq!(ok[1].high_value.as_deref(), Some("50"));
        for (bad, says) in [
            (
                json!({"property": "country", "operator": "LIKE", "value": "x"}),
                "not a HubSpot search operator",
            ),
            (
                json!({"property": "country", "operator": "EQ"}),
                "needs `value`",
            ),
            (
                json!({"property": "a b", "operator": "EQ", "value": "x"}),
                "not a HubSpot property name",
            ),
            (
                json!({"property": "c", "operator": "IN", "values": []}),
                "give 1 to",
            ),
            (
                json!({"property": "c", "operator": "HAS_PROPERTY", "value": "x"}),
                "takes no `value`",
            ),
        ] {
            let e = filter_rules(vec![rule(bad)], false)
                .err()
                .unwrap_or_default();
            assert!(e.contains(says), "{e}");
        }
        let six = (0..6)
            .map(|_| rule(json!({"property": "c", "operator": "HAS_PROPERTY"})))
            .collect();
        assert!(filter_rules(six, false).is_err());
        assert!(filter_rules(Vec::new(), false).is_err());
    }

    #[test]
    fn salesforce_filters_are_checked_against_what_soql_expresses() {
        let ok = filter_rules(
            vec![
                rule(json!({"property": "LeadSource", "operator": "eq", "value": "Web"})),
                rule(json!({"property": "Industry__c", "operator": "IN", "values": ["a", "b"]})),
            ],
            true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok[0].operator, "EQ");
        for (bad, says) in [
            (
                json!({"property": "Company", "operator": "CONTAINS_TOKEN", "value": "x"}),
                "`filter[0]`.operator `CONTAINS_TOKEN` cannot be expressed in SOQL",
            ),
            (
                json!({"property": "Account.Name", "operator": "EQ", "value": "x"}),
                "parent fields such as Account.Name",
            ),
            (
                json!({"property": "Lead Source", "operator": "EQ", "value": "x"}),
                "not a Salesforce field API name",
            ),
            (
                json!({"property": "LeadSource", "operator": "EQ", "value": "a\u{1}"}),
                "control character",
            ),
        ] {
            let e = filter_rules(vec![rule(bad)], true)
                .err()
                .unwrap_or_default();
            assert!(e.contains(says), "{e}");
        }
    }
}

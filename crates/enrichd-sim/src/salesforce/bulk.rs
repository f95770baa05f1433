//! Bulk API 2.0 ingest (§3.6): create a job, upload one CSV, close it, the job processes in the
//! background, then successful/failed/unprocessed results as CSV.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Shared;
use super::http::{Reply, Req, body_json, not_found, sf_error};
use super::oauth::Who;
use super::rest::{apply_update, fault_message, write_meta};
use super::schema::Obj;
use super::store::{RecordError, Resolve, Val, WriteCtx, csv_to_val};
use super::time::{make_id, sf_datetime};

/// Which result set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    Successful,
    Failed,
    Unprocessed,
}

impl Which {
    pub(crate) fn parse(s: &str) -> Option<Which> {
        match s {
            "successfulResults" => Some(Which::Successful),
            "failedResults" => Some(Which::Failed),
            "unprocessedrecords" => Some(Which::Unprocessed),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Open => "Open",
            State::UploadComplete => "UploadComplete",
            State::InProgress => "InProgress",
            State::JobComplete => "JobComplete",
            State::Failed => "Failed",
            State::Aborted => "Aborted",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Job {
    id: String,
    object: Obj,
    operation: String,
    state: State,
    created_ms: i64,
    modstamp_ms: i64,
    user: usize,
    client: Option<String>,
    assign: bool,
    line_ending: String,
    delimiter_name: String,
    delimiter: char,
    version: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    uploaded: bool,
    /// Rows of the upload (kept when the rows are taken for processing).
    row_count: usize,
    successful: Vec<(String, Vec<String>)>,
    failed: Vec<(String, String, Vec<String>)>,
    unprocessed: Vec<Vec<String>>,
    error_message: Option<String>,
    processing_ms: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Jobs {
    map: HashMap<String, Job>,
    next: u64,
}

fn delimiter(name: &str) -> Option<char> {
    Some(match name {
        "COMMA" => ',',
        "TAB" => '\t',
        "PIPE" => '|',
        "SEMICOLON" => ';',
        "CARET" => '^',
        "BACKQUOTE" => '`',
        _ => return None,
    })
}

fn info(j: &Job, full: bool) -> Value {
    let mut v = json!({
        "id": j.id,
        "operation": j.operation,
        "object": j.object.name(),
        "createdById": "",
        "createdDate": sf_datetime(j.created_ms),
        "systemModstamp": sf_datetime(j.modstamp_ms),
        "state": j.state.name(),
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": j.version.trim_start_matches('v').parse::<f64>().unwrap_or(62.0),
        "contentUrl": format!("services/data/{}/jobs/ingest/{}/batches", j.version, j.id),
        "lineEnding": j.line_ending,
        "columnDelimiter": j.delimiter_name,
    });
    if full {
        v["jobType"] = json!("V2Ingest");
        v["externalIdFieldName"] = Value::Null;
        v["numberRecordsProcessed"] = json!(j.successful.len() + j.failed.len());
        v["numberRecordsFailed"] = json!(j.failed.len());
        v["retries"] = json!(0);
        v["totalProcessingTime"] = json!(j.processing_ms);
        v["apiActiveProcessingTime"] = json!(j.processing_ms);
        v["apexProcessingTime"] = json!(0);
        if let Some(e) = &j.error_message {
            v["errorMessage"] = json!(e);
        }
    }
    v
}

fn with_user(sh: &Shared, mut v: Value, user: usize) -> Value {
    if let Some(u) = sh.store().users.get(user) {
        v["createdById"] = json!(u.id);
    }
    v
}

pub(crate) fn create(sh: &Arc<Shared>, req: &Req, version: &str, who: &Who) -> Reply {
    let meta = write_meta(sh, req);
    let body = match body_json(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let obj_name = body["object"].as_str().unwrap_or("");
    let Some(object) = Obj::parse(obj_name) else {
        return sf_error(
            400,
            "INVALIDENTITY",
            &format!("Entity '{obj_name}' is not supported by the Bulk API."),
        );
    };
    let operation = body["operation"].as_str().unwrap_or("");
    match operation {
        "update" | "insert" => {}
        "upsert" | "delete" | "hardDelete" => {
            return sf_error(
                400,
                "INVALIDJOB",
                &format!(
                    "The simulator does not support operation '{operation}' (only insert and update)"
                ),
            );
        }
        _ => {
            return sf_error(
                400,
                "INVALIDJOB",
                &format!("InvalidJob : Invalid operation: {operation}"),
            );
        }
    }
    if let Some(ct) = body["contentType"].as_str()
        && ct != "CSV"
    {
        return sf_error(
            400,
            "INVALIDJOB",
            &format!("InvalidJob : Invalid contentType: {ct}"),
        );
    }
    let line_ending = body["lineEnding"].as_str().unwrap_or("LF").to_string();
    if line_ending != "LF" && line_ending != "CRLF" {
        return sf_error(
            400,
            "INVALIDJOB",
            &format!("InvalidJob : Invalid lineEnding: {line_ending}"),
        );
    }
    let delimiter_name = body["columnDelimiter"]
        .as_str()
        .unwrap_or("COMMA")
        .to_string();
    let Some(delim) = delimiter(&delimiter_name) else {
        return sf_error(
            400,
            "INVALIDJOB",
            &format!("InvalidJob : Invalid columnDelimiter: {delimiter_name}"),
        );
    };
    // Bulk API 2.0 runs an assignment rule only when the job names one (assignmentRuleId);
    // the Sforce-Auto-Assign header does not apply.
    let assign = body["assignmentRuleId"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
        && sh.opts.assignment_rule_active;
    // DailyBulkApiBatches used up: no new job (ExceededQuota; status and code are a choice).
    let max_batches = sh.opts.daily_bulk_batches;
    if batches_used(sh) >= max_batches {
        return sf_error(
            400,
            "EXCEEDEDQUOTA",
            &format!(
                "ExceededQuota : The job or batch you tried to create exceeds the allowed number for the past 24-hour period ({max_batches} batches)."
            ),
        );
    }
    let now = sh.clock.now_ms();
    let job = {
        let mut jobs = sh.jobs();
        jobs.next += 1;
        let id = make_id("750", jobs.next);
        let j = Job {
            id: id.clone(),
            object,
            operation: operation.to_string(),
            state: State::Open,
            created_ms: now,
            modstamp_ms: now,
            user: who.user,
            client: meta.client,
            assign,
            line_ending,
            delimiter_name,
            delimiter: delim,
            version: version.to_string(),
            header: Vec::new(),
            rows: Vec::new(),
            uploaded: false,
            row_count: 0,
            successful: Vec::new(),
            failed: Vec::new(),
            unprocessed: Vec::new(),
            error_message: None,
            processing_ms: 0,
        };
        let v = info(&j, false);
        jobs.map.insert(id, j);
        v
    };
    sh.ctl().stats.bulk_jobs += 1;
    Reply::json(200, with_user(sh, job, who.user))
}

pub(crate) fn list(sh: &Shared, _v: &str) -> Reply {
    let jobs = sh.jobs();
    let mut recs: Vec<(i64, Value)> = jobs
        .map
        .values()
        .map(|j| (j.created_ms, info(j, false)))
        .collect();
    recs.sort_by_key(|(t, _)| *t);
    let recs: Vec<Value> = recs.into_iter().map(|(_, v)| v).collect();
    Reply::json(
        200,
        json!({"done": true, "records": recs, "nextRecordsUrl": null}),
    )
}

pub(crate) fn get(sh: &Shared, id: &str) -> Reply {
    let (v, user) = {
        let jobs = sh.jobs();
        let Some(j) = jobs.map.get(id) else {
            return not_found();
        };
        (info(j, true), j.user)
    };
    Reply::json(200, with_user(sh, v, user))
}

/// RFC 4180 CSV with a configurable delimiter (quotes, doubled quotes, CRLF or LF).
pub(crate) fn parse_csv(text: &str, delim: char) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cell.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                cell.push(c);
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() => in_quotes = true,
            c if c == delim => row.push(std::mem::take(&mut cell)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            c => cell.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quoted field".into());
    }
    if any {
        row.push(cell);
        rows.push(row);
    }
    Ok(rows)
}

fn csv_cell(out: &mut String, s: &str, always_quote: bool) {
    if always_quote || s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

pub(crate) fn upload(sh: &Shared, req: &Req, id: &str) -> Reply {
    let ctype = req.header("content-type").unwrap_or("");
    if !ctype.to_ascii_lowercase().starts_with("text/csv") {
        return sf_error(
            400,
            "INVALIDCONTENTTYPE",
            &format!("Unsupported content type: {ctype}; text/csv is required"),
        );
    }
    let text = match std::str::from_utf8(&req.body) {
        Ok(t) => t,
        Err(_) => return sf_error(400, "INVALIDBATCH", "InvalidBatch : CSV is not valid UTF-8"),
    };
    let mut jobs = sh.jobs();
    let Some(j) = jobs.map.get_mut(id) else {
        return not_found();
    };
    if j.uploaded {
        return sf_error(
            400,
            "BULK_API_ERROR",
            &format!(
                "Found multiple contents for job: <{id}>, please 'Close' / 'Abort' / 'Delete' the current Job then create a new Job and make sure you only do 'PUT' once on a given Job."
            ),
        );
    }
    if j.state != State::Open {
        return sf_error(
            409,
            "INVALIDJOBSTATE",
            &format!("Job {id} is not in the Open state"),
        );
    }
    let mut rows = match parse_csv(text, j.delimiter) {
        Ok(r) => r,
        Err(e) => return sf_error(400, "INVALIDBATCH", &format!("InvalidBatch : {e}")),
    };
    if rows.is_empty() {
        return sf_error(400, "INVALIDBATCH", "InvalidBatch : empty CSV");
    }
    j.header = rows
        .remove(0)
        .into_iter()
        .map(|h| h.trim().to_string())
        .collect();
    rows.retain(|r| !(r.len() == 1 && r[0].is_empty()));
    j.row_count = rows.len();
    j.rows = rows;
    j.uploaded = true;
    let n = j.rows.len();
    drop(jobs);
    Reply::empty(201).records(n)
}

pub(crate) fn patch(sh: &Arc<Shared>, req: &Req, id: &str) -> Reply {
    let body = match body_json(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let want = body["state"].as_str().unwrap_or("");
    let now = sh.clock.now_ms();
    let (v, user, start) = {
        let mut jobs = sh.jobs();
        let Some(j) = jobs.map.get_mut(id) else {
            return not_found();
        };
        let start = match (want, j.state) {
            ("UploadComplete", State::Open) => {
                j.state = State::UploadComplete;
                true
            }
            ("Aborted", State::Open | State::UploadComplete | State::InProgress) => {
                j.state = State::Aborted;
                j.unprocessed = std::mem::take(&mut j.rows);
                false
            }
            _ => {
                return sf_error(
                    400,
                    "INVALIDJOBSTATE",
                    &format!("Invalid state transition from {} to {want}", j.state.name()),
                );
            }
        };
        j.modstamp_ms = now;
        (info(j, false), j.user, start)
    };
    if start {
        let sh2 = sh.clone();
        let id2 = id.to_string();
        let h = tokio::spawn(async move { process(sh2, id2).await });
        sh.track(h.abort_handle());
    }
    Reply::json(200, with_user(sh, v, user))
}

pub(crate) fn delete(sh: &Shared, id: &str) -> Reply {
    let mut jobs = sh.jobs();
    let Some(j) = jobs.map.get(id) else {
        return not_found();
    };
    if matches!(j.state, State::Open | State::InProgress) {
        return sf_error(
            400,
            "INVALIDJOBSTATE",
            &format!("Job {id} cannot be deleted in state {}", j.state.name()),
        );
    }
    jobs.map.remove(id);
    Reply::empty(204)
}

/// The background processing of a closed job: `UploadComplete` for
/// [`SalesforceOptions::bulk_processing_delay`](super::SalesforceOptions::bulk_processing_delay)
/// (real time), then `InProgress` for that delay again and, on the sim clock,
/// [`SalesforceOptions::bulk_job_duration`](super::SalesforceOptions::bulk_job_duration); only
/// then are the rows taken and processed. A job aborted before that keeps every row as
/// unprocessed and writes nothing.
async fn process(sh: Arc<Shared>, id: String) {
    let delay = sh.opts.bulk_processing_delay;
    tokio::time::sleep(delay).await;
    {
        let mut jobs = sh.jobs();
        let Some(j) = jobs.map.get_mut(&id) else {
            return;
        };
        if j.state != State::UploadComplete {
            return;
        }
        j.state = State::InProgress;
        j.modstamp_ms = sh.clock.now_ms();
    }
    tokio::time::sleep(delay).await;
    // The job's own processing time, on the sim clock (tests advance it).
    let hold = i64::try_from(sh.opts.bulk_job_duration.as_millis()).unwrap_or(i64::MAX);
    if hold > 0 {
        let until = sh.clock.now_ms().saturating_add(hold);
        while sh.clock.now_ms() < until {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let aborted = sh
                .jobs()
                .map
                .get(&id)
                .is_none_or(|j| j.state != State::InProgress);
            if aborted {
                return;
            }
        }
    }
    let taken = {
        let mut jobs = sh.jobs();
        let Some(j) = jobs.map.get_mut(&id) else {
            return;
        };
        if j.state != State::InProgress {
            return;
        }
        (
            j.object,
            j.operation.clone(),
            j.header.clone(),
            std::mem::take(&mut j.rows),
            WriteCtx {
                user: j.user,
                client: j.client.clone(),
                via: "bulk",
                assign: j.assign,
                now: 0,
            },
        )
    };
    let started = std::time::Instant::now();
    let (obj, operation, header, mut rows, mut ctx) = taken;
    ctx.now = sh.clock.now_ms();
    // Header check: an unknown column fails the whole job.
    let unknown = {
        let st = sh.store();
        let schema = &st.table(obj).schema;
        header.iter().find(|h| schema.idx(h).is_none()).cloned()
    };
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    let mut error_message = None;
    let mut unprocessed = Vec::new();
    if let Some(h) = unknown {
        error_message = Some(format!("InvalidBatch : Field name not found : {h}"));
        unprocessed = rows;
    } else if operation == "update" && !header.iter().any(|h| h.eq_ignore_ascii_case("id")) {
        error_message = Some("InvalidBatch : Field name not found : Id".to_string());
        unprocessed = rows;
    } else {
        // An injected job failure: the first `processed` rows, then Failed.
        if let Some((processed, message)) = take_job_fault(&sh) {
            let keep = (processed as usize).min(rows.len());
            unprocessed = rows.split_off(keep);
            error_message = Some(message);
        }
        for row in rows {
            match process_row(&sh, obj, &operation, &header, &row, &ctx) {
                Ok(rid) => successful.push((rid, row)),
                Err((rid, e)) => {
                    *sh.ctl()
                        .stats
                        .write_results
                        .entry(e.status_code.clone())
                        .or_default() += 1;
                    let err = format!("{}:{}:{} --", e.status_code, e.message, e.fields.join(","));
                    failed.push((rid, err, row));
                }
            }
        }
    }
    let n = successful.len() + failed.len();
    {
        let mut c = sh.ctl();
        c.stats.bulk_records_processed += n as u64;
        c.stats.bulk_records_failed += failed.len() as u64;
        if n > 0 {
            let batches = n.div_ceil(ROWS_PER_BATCH) as u64;
            let now = sh.clock.now_ms();
            c.bulk_usage.push_back((now, batches));
        }
    }
    let mut jobs = sh.jobs();
    if let Some(j) = jobs.map.get_mut(&id) {
        // Aborted while its rows were being processed: it stays Aborted, and what was
        // processed is reported as such.
        if j.state != State::Aborted {
            j.state = if error_message.is_some() {
                State::Failed
            } else {
                State::JobComplete
            };
            j.error_message = error_message;
        }
        j.successful = successful;
        j.failed = failed;
        j.unprocessed.extend(unprocessed);
        j.processing_ms = started.elapsed().as_millis() as i64;
        j.modstamp_ms = sh.clock.now_ms();
    }
}

/// Rows per Bulk "batch" (`DailyBulkApiBatches` counts one per started 10,000 records).
const ROWS_PER_BATCH: usize = 10_000;

/// A [`SalesforceFault::FailBulkJobs`](super::SalesforceFault::FailBulkJobs) for the job
/// about to be processed (consumes one): how many rows to process and the job's
/// `errorMessage`.
fn take_job_fault(sh: &Shared) -> Option<(u32, String)> {
    use super::SalesforceFault;
    let mut c = sh.ctl();
    let mut hit = None;
    for f in c.faults.iter_mut() {
        if let SalesforceFault::FailBulkJobs {
            processed,
            count,
            error_message,
        } = f
            && *count > 0
        {
            *count -= 1;
            hit = Some((
                *processed,
                error_message.clone().unwrap_or_else(|| {
                    "InternalServerError : the batch was retried too many times".to_string()
                }),
            ));
            break;
        }
    }
    c.faults
        .retain(|f| !matches!(f, SalesforceFault::FailBulkJobs { count: 0, .. }));
    hit
}

/// Bulk batches used in the rolling 24 h window (sim clock).
pub(crate) fn batches_used(sh: &Shared) -> u64 {
    let now = sh.clock.now_ms();
    sh.ctl()
        .bulk_usage
        .iter()
        .filter(|(t, _)| *t > now - 86_400_000)
        .map(|(_, n)| *n)
        .sum()
}

/// What a test sees of an ingest job ([`super::SalesforceSim::bulk_jobs`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BulkJobView {
    pub id: String,
    /// `"Lead"` or `"Contact"`.
    pub object: String,
    /// `Open`, `UploadComplete`, `InProgress`, `JobComplete`, `Failed` or `Aborted`.
    pub state: String,
    /// Rows uploaded.
    pub rows: usize,
    pub successful: usize,
    pub failed: usize,
    pub unprocessed: usize,
    pub error_message: Option<String>,
}

/// Every ingest job, oldest first.
pub(crate) fn views(sh: &Shared) -> Vec<BulkJobView> {
    let jobs = sh.jobs();
    let mut out: Vec<(i64, String, BulkJobView)> = jobs
        .map
        .values()
        .map(|j| {
            (
                j.created_ms,
                j.id.clone(),
                BulkJobView {
                    id: j.id.clone(),
                    object: j.object.name().to_string(),
                    state: j.state.name().to_string(),
                    rows: j.row_count,
                    successful: j.successful.len(),
                    failed: j.failed.len(),
                    unprocessed: j.unprocessed.len(),
                    error_message: j.error_message.clone(),
                },
            )
        })
        .collect();
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out.into_iter().map(|(_, _, v)| v).collect()
}

fn process_row(
    sh: &Shared,
    obj: Obj,
    operation: &str,
    header: &[String],
    row: &[String],
    ctx: &WriteCtx,
) -> Result<String, (String, RecordError)> {
    let cell = |k: usize| row.get(k).map(String::as_str).unwrap_or("");
    let id_col = header.iter().position(|h| h.eq_ignore_ascii_case("id"));
    // The target record (update).
    let target = if operation == "update" {
        let id = id_col.map(cell).unwrap_or("");
        if id.is_empty() {
            return Err((
                String::new(),
                RecordError::new(
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                    vec![],
                ),
            ));
        }
        let i = match sh.store().resolve_for_update(obj, id) {
            Resolve::Ok(i) => i,
            Resolve::Err(e) => {
                let rid = match e.status_code.as_str() {
                    "CANNOT_UPDATE_CONVERTED_LEAD" | "ENTITY_IS_DELETED" => id.to_string(),
                    _ => String::new(),
                };
                return Err((rid, e));
            }
        };
        let id18 = sh.store().table(obj).recs[i as usize].id.clone();
        if let Some(code) = super::http::take_record_fault(sh, &id18) {
            let msg = fault_message(&code);
            return Err((id18, RecordError::new(&code, msg, vec![])));
        }
        Some((i, id18))
    } else {
        None
    };
    let rid = target.as_ref().map(|t| t.1.clone()).unwrap_or_default();
    let mut vals: Vec<(usize, Val)> = Vec::new();
    {
        let st = sh.store();
        let t = st.table(obj);
        for (k, h) in header.iter().enumerate() {
            if Some(k) == id_col {
                continue;
            }
            let Some(fi) = t.schema.idx(h) else {
                continue;
            };
            let def = t.schema.def(fi);
            let writable = if operation == "insert" {
                def.createable
            } else {
                def.updateable
            };
            let v = match csv_to_val(def, cell(k)) {
                Ok(None) => continue,
                Ok(Some(v)) => v,
                Err(e) => return Err((rid, e)),
            };
            if !writable {
                return Err((
                    rid,
                    RecordError::new(
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        format!(
                            "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                            def.name
                        ),
                        vec![def.name.to_string()],
                    ),
                ));
            }
            if let Err(e) = super::store::check_value(def, &v) {
                return Err((rid, e));
            }
            vals.push((fi, v));
        }
        if let Err(e) = st.check_refs(obj, &vals) {
            return Err((rid, e));
        }
    }
    super::rest::dup_check(sh, obj, target.as_ref().map(|t| t.0), &vals, false)
        .map_err(|e| (rid.clone(), e))?;
    let mut c = ctx.clone();
    c.now = sh.clock.now_ms();
    match target {
        Some((i, id18)) => {
            apply_update(sh, obj, i, &vals, &c);
            Ok(id18)
        }
        None => {
            let missing = sh.store().missing_required(obj, &vals);
            if !missing.is_empty() {
                return Err((
                    String::new(),
                    RecordError::new(
                        "REQUIRED_FIELD_MISSING",
                        format!("Required fields are missing: [{}]", missing.join(", ")),
                        missing,
                    ),
                ));
            }
            let id = sh.create_with(obj, &vals, &c);
            *sh.ctl()
                .stats
                .write_results
                .entry("success".into())
                .or_default() += 1;
            Ok(id)
        }
    }
}

pub(crate) fn results(sh: &Shared, id: &str, which: Which) -> Reply {
    let jobs = sh.jobs();
    let Some(j) = jobs.map.get(id) else {
        return not_found();
    };
    let d = j.delimiter;
    let nl = if j.line_ending == "CRLF" {
        "\r\n"
    } else {
        "\n"
    };
    let mut out = String::new();
    let push_row = |out: &mut String, pre: &[&str], cells: &[String]| {
        let mut first = true;
        for p in pre {
            if !first {
                out.push(d);
            }
            first = false;
            csv_cell(out, p, true);
        }
        for c in cells {
            if !first {
                out.push(d);
            }
            first = false;
            csv_cell(out, c, false);
        }
        out.push_str(nl);
    };
    match which {
        Which::Successful => {
            push_row(&mut out, &["sf__Id", "sf__Created"], &j.header);
            let created = if j.operation == "insert" {
                "true"
            } else {
                "false"
            };
            for (rid, row) in &j.successful {
                push_row(&mut out, &[rid, created], row);
            }
        }
        Which::Failed => {
            push_row(&mut out, &["sf__Id", "sf__Error"], &j.header);
            for (rid, err, row) in &j.failed {
                push_row(&mut out, &[rid, err], row);
            }
        }
        Which::Unprocessed => {
            push_row(&mut out, &[], &j.header);
            for row in &j.unprocessed {
                push_row(&mut out, &[], row);
            }
        }
    }
    Reply::text(200, "text/csv", out)
}

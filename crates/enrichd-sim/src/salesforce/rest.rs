//! REST resources on the instance host: versions, limits, describe, query/queryAll with query
//! locators, record GET/PATCH/POST and sObject Collections update.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::http::{Reply, Req, body_json, not_found, sf_error, sf_error_fields};
use super::oauth::Who;
use super::schema::Obj;
use super::soql::{self, Sel};
use super::stats::OwnerChange;
use super::store::{RecordError, Resolve, Val, WriteCtx};
use super::time::{make_id, to_id18};
use super::{Shared, outbound};

/// Collections accept at most this many records.
pub(crate) const MAX_COLLECTION: usize = 200;

/// An open query cursor.
#[derive(Debug)]
pub(crate) struct Cursor {
    obj: Obj,
    rows: Arc<Vec<u32>>,
    fields: Arc<Vec<Sel>>,
    batch: usize,
    last_used: i64,
}

/// Query cursors, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    map: HashMap<String, Cursor>,
    order: VecDeque<String>,
    next: u64,
}

/// The write headers of a call (§3.1), recorded in the statistics.
#[derive(Clone, Debug)]
pub(crate) struct WriteMeta {
    pub client: Option<String>,
    pub assign: bool,
    /// `Sforce-Duplicate-Rule-Header: allowSave=true`.
    pub allow_save: bool,
}

/// Read (and record) `Sforce-Call-Options`, `Sforce-Auto-Assign` and
/// `Sforce-Duplicate-Rule-Header`.
pub(crate) fn write_meta(sh: &Shared, req: &Req) -> WriteMeta {
    let client = req.header("sforce-call-options").and_then(|h| {
        h.split(',').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim().eq_ignore_ascii_case("client")).then(|| v.trim().to_string())
        })
    });
    let auto = req.header("sforce-auto-assign").map(str::trim);
    let assign = sh.opts.assignment_rule_active
        && !auto.is_some_and(|v| v.eq_ignore_ascii_case("false") || v == "0");
    let dup = req.header("sforce-duplicate-rule-header").map(str::trim);
    let allow_save = dup.is_some_and(|h| {
        h.split(',').any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("allowSave") && v.trim().eq_ignore_ascii_case("true")
            })
        })
    });
    let mut c = sh.ctl();
    let s = &mut c.stats;
    *s.call_options_clients
        .entry(client.clone().unwrap_or_else(|| "<none>".into()))
        .or_default() += 1;
    *s.auto_assign_headers
        .entry(auto.unwrap_or("<none>").to_string())
        .or_default() += 1;
    *s.duplicate_rule_headers
        .entry(dup.unwrap_or("<none>").to_string())
        .or_default() += 1;
    WriteMeta {
        client,
        assign,
        allow_save,
    }
}

pub(crate) fn versions(sh: &Shared) -> Reply {
    let latest: u32 = sh
        .opts
        .latest_api_version
        .split('.')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(62);
    let v: Vec<Value> = (latest.saturating_sub(4)..=latest)
        .map(|n| {
            json!({"label": format!("API v{n}.0"), "url": format!("/services/data/v{n}.0"), "version": format!("{n}.0")})
        })
        .collect();
    Reply::json(200, Value::Array(v))
}

pub(crate) fn resources(v: &str) -> Reply {
    let b = format!("/services/data/{v}");
    Reply::json(
        200,
        json!({"sobjects": format!("{b}/sobjects"), "query": format!("{b}/query"),
               "queryAll": format!("{b}/queryAll"), "limits": format!("{b}/limits"),
               "composite": format!("{b}/composite"), "jobs": format!("{b}/jobs")}),
    )
}

pub(crate) fn limits(sh: &Shared) -> Reply {
    let now = sh.clock.now_ms();
    let c = sh.ctl();
    let used = c.usage.iter().filter(|t| **t > now - 86_400_000).count() as u64;
    let bulk_used: u64 = c
        .bulk_usage
        .iter()
        .filter(|(t, _)| *t > now - 86_400_000)
        .map(|(_, n)| *n)
        .sum();
    let max = c.daily_max;
    let bmax = sh.opts.daily_bulk_batches;
    let lr = sh.opts.long_running.as_ref().map(|l| l.max).unwrap_or(25);
    Reply::json(
        200,
        json!({
            "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
            "ConcurrentSyncReportRuns": {"Max": 20, "Remaining": 20},
            "DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)},
            "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
            "DailyBulkApiBatches": {"Max": bmax, "Remaining": bmax.saturating_sub(bulk_used)},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DailyDeliveredPlatformEvents": {"Max": 10000, "Remaining": 10000},
            "DailyStreamingApiEvents": {"Max": 10000, "Remaining": 10000},
            "DataStorageMB": {"Max": 5, "Remaining": 5},
            "HourlyLongTermIdMapping": {"Max": 100000, "Remaining": 100000},
            "ConcurrentLongRunningApiRequests": {"Max": lr, "Remaining": lr.saturating_sub(c.long_running)},
        }),
    )
}

pub(crate) fn sobjects(v: &str) -> Reply {
    let objs: Vec<Value> = Obj::ALL
        .iter()
        .map(|o| {
            let b = format!("/services/data/{v}/sobjects/{}", o.name());
            json!({"name": o.name(), "label": o.name(), "keyPrefix": o.prefix(), "custom": false,
                   "queryable": true, "updateable": true, "createable": true,
                   "urls": {"sobject": b, "describe": format!("{b}/describe"), "rowTemplate": format!("{b}/{{ID}}")}})
        })
        .collect();
    Reply::json(
        200,
        json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": objs}),
    )
}

pub(crate) fn sobject_info(o: Obj, v: &str) -> Reply {
    let b = format!("/services/data/{v}/sobjects/{}", o.name());
    Reply::json(
        200,
        json!({"objectDescribe": {"name": o.name(), "label": o.name(), "keyPrefix": o.prefix(),
               "custom": false, "queryable": true, "updateable": true, "createable": true,
               "urls": {"sobject": b, "describe": format!("{b}/describe"), "rowTemplate": format!("{b}/{{ID}}")}},
               "recentItems": []}),
    )
}

pub(crate) fn describe(sh: &Shared, o: Obj, v: &str) -> Reply {
    let st = sh.store();
    Reply::json(200, st.table(o).schema.describe(v, &sh.instance_url))
}

/// `Sforce-Query-Options: batchSize=N`: clamped to 200..=2000 (default 2000).
fn batch_size(req: &Req) -> usize {
    req.header("sforce-query-options")
        .and_then(|h| {
            h.split(',').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("batchSize")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
        })
        .map(|n| n.clamp(200, 2000))
        .unwrap_or(2000)
}

/// Render one page of a result as Salesforce's JSON.
fn render_page(
    sh: &Shared,
    obj: Obj,
    rows: &[u32],
    fields: &[Sel],
    v: &str,
    total: usize,
    next: Option<String>,
) -> String {
    let st = sh.store();
    let t = st.table(obj);
    let name = obj.name();
    let mut out = String::with_capacity(64 + rows.len() * (96 + fields.len() * 40));
    out.push_str("{\"totalSize\":");
    out.push_str(&total.to_string());
    out.push_str(",\"done\":");
    out.push_str(if next.is_some() { "false" } else { "true" });
    if let Some(n) = &next {
        out.push_str(",\"nextRecordsUrl\":");
        super::store::push_json_str(&mut out, n);
    }
    out.push_str(",\"records\":[");
    let names: Vec<String> = fields
        .iter()
        .map(|sel| {
            // A parent renders under its relationship name (`Account`).
            let name = match sel {
                Sel::Field(fi) => t.schema.def(*fi).name,
                Sel::Parent { via, .. } => {
                    let d = t.schema.def(*via);
                    d.relationship_name.unwrap_or(d.name)
                }
            };
            let mut s = String::new();
            super::store::push_json_str(&mut s, name);
            s.push(':');
            s
        })
        .collect();
    for (k, &i) in rows.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str("{\"attributes\":{\"type\":\"");
        out.push_str(name);
        out.push_str("\",\"url\":\"/services/data/");
        out.push_str(v);
        out.push_str("/sobjects/");
        out.push_str(name);
        out.push('/');
        out.push_str(&t.recs[i as usize].id);
        out.push_str("\"}");
        for (sel, n) in fields.iter().zip(&names) {
            out.push(',');
            out.push_str(n);
            match sel {
                Sel::Field(fi) => t.push_value(&mut out, i, *fi),
                Sel::Parent { via, fields } => {
                    let parent = t.recs[i as usize].vals[*via].text();
                    st.accounts.push_parent(&mut out, parent, fields, v);
                }
            }
        }
        out.push('}');
    }
    out.push_str("]}");
    out
}

pub(crate) fn query(sh: &Shared, req: &Req, v: &str, all: bool, _who: &Who) -> Reply {
    let Some(q) = req.q("q").filter(|q| !q.trim().is_empty()) else {
        return sf_error(400, "MALFORMED_QUERY", "A query string has to be specified");
    };
    let parsed = {
        let st = sh.store();
        soql::parse(q, |o| &st.table(o).schema, &st.accounts).map(|pq| {
            let rows = soql::execute(&pq, st.table(pq.obj), all);
            (pq, rows)
        })
    };
    let (pq, rows) = match parsed {
        Ok(x) => x,
        Err(e) => return sf_error(400, e.code, &e.message),
    };
    {
        let mut c = sh.ctl();
        c.stats.query_calls += 1;
    }
    if pq.count_only {
        return Reply::json(
            200,
            json!({"totalSize": rows.len(), "done": true, "records": []}),
        );
    }
    let mut batch = batch_size(req);
    // Two or more long-text fields cap the batch at 200.
    {
        let st = sh.store();
        let t = st.table(pq.obj);
        let long = pq
            .fields
            .iter()
            .flat_map(|sel| match sel {
                Sel::Field(fi) => vec![t.schema.def(*fi)],
                Sel::Parent { fields, .. } => {
                    fields.iter().map(|fi| st.accounts.def(*fi)).collect()
                }
            })
            .filter(|d| d.ty == "textarea" && d.length > 255)
            .count();
        if long >= 2 {
            batch = batch.min(200);
        }
    }
    let total = rows.len();
    let first: Vec<u32> = rows.iter().take(batch).copied().collect();
    let next = if total > batch {
        let now = sh.clock.now_ms();
        let mut cur = sh.cursors();
        cur.next += 1;
        let loc = make_id("01g", cur.next);
        cur.map.insert(
            loc.clone(),
            Cursor {
                obj: pq.obj,
                rows: Arc::new(rows),
                fields: Arc::new(pq.fields.clone()),
                batch,
                last_used: now,
            },
        );
        cur.order.push_back(loc.clone());
        while cur.order.len() > sh.opts.max_open_cursors.max(1) {
            if let Some(old) = cur.order.pop_front() {
                cur.map.remove(&old);
            }
        }
        Some(format!("/services/data/{v}/query/{loc}-{batch}"))
    } else {
        None
    };
    let body = render_page(sh, pq.obj, &first, &pq.fields, v, total, next);
    sh.ctl().stats.rows_returned += first.len() as u64;
    Reply::raw_json(200, body).records(first.len())
}

pub(crate) fn query_more(sh: &Shared, v: &str, locator: &str, offset: usize) -> Reply {
    let now = sh.clock.now_ms();
    let ttl = sh.opts.query_locator_ttl.as_millis() as i64;
    let found = {
        let mut cur = sh.cursors();
        match cur.map.get_mut(locator) {
            Some(c) if now - c.last_used <= ttl && offset <= c.rows.len() => {
                c.last_used = now;
                Some((c.obj, c.rows.clone(), c.fields.clone(), c.batch))
            }
            Some(_) | None => None,
        }
    };
    let Some((obj, rows, fields, batch)) = found else {
        return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
    };
    sh.ctl().stats.query_more_calls += 1;
    let end = (offset + batch).min(rows.len());
    let page = &rows[offset..end];
    let next = (end < rows.len()).then(|| format!("/services/data/{v}/query/{locator}-{end}"));
    let body = render_page(sh, obj, page, &fields, v, rows.len(), next);
    sh.ctl().stats.rows_returned += page.len() as u64;
    Reply::raw_json(200, body).records(page.len())
}

pub(crate) fn get(sh: &Shared, req: &Req, o: Obj, id: &str, v: &str) -> Reply {
    let st = sh.store();
    let t = st.table(o);
    let Some(i) = t.index_of(id).filter(|i| !t.is_deleted(*i)) else {
        return not_found();
    };
    let mut m = t.view(i, v);
    if let Some(fl) = req.q("fields") {
        let mut keep = Map::new();
        if let Some(a) = m.remove("attributes") {
            keep.insert("attributes".into(), a);
        }
        for f in fl.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let Some(fi) = t.schema.idx(f) else {
                return sf_error(
                    400,
                    "INVALID_FIELD",
                    &format!(
                        "No such column '{f}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                        o.name()
                    ),
                );
            };
            keep.insert(t.schema.def(fi).name.to_string(), t.value_json(i, fi));
        }
        m = keep;
    }
    Reply::json(200, Value::Object(m))
}

/// Converted values of one record's fields, or its errors (all field errors are reported).
fn convert_fields(
    sh: &Shared,
    obj: Obj,
    fields: &[(String, Value)],
    create: bool,
) -> Result<Vec<(usize, Val)>, Vec<RecordError>> {
    let st = sh.store();
    let t = st.table(obj);
    let mut vals = Vec::with_capacity(fields.len());
    let mut errs = Vec::new();
    for (k, v) in fields {
        match t.convert(k, v, create) {
            Ok(x) => vals.push(x),
            Err(e) => errs.push(e),
        }
    }
    if errs.is_empty()
        && let Err(e) = st.check_refs(obj, &vals)
    {
        errs.push(e);
    }
    if errs.is_empty() { Ok(vals) } else { Err(errs) }
}

/// The duplicate rule's verdict on saving `vals` to record `i` (None: a create).
pub(crate) fn dup_check(
    sh: &Shared,
    obj: Obj,
    i: Option<u32>,
    vals: &[(usize, Val)],
    allow_save: bool,
) -> Result<(), RecordError> {
    let Some(rule) = sh.opts.duplicate_rule.as_ref() else {
        return Ok(());
    };
    if allow_save && !rule.block {
        return Ok(());
    }
    if sh.store().table(obj).is_duplicate(i, vals) {
        return Err(RecordError::new(
            "DUPLICATES_DETECTED",
            "Use one of these records?",
            vec![],
        ));
    }
    Ok(())
}

/// Apply a validated update and do everything that follows it (statistics, owner changes,
/// Outbound Messages).
pub(crate) fn apply_update(sh: &Shared, obj: Obj, i: u32, vals: &[(usize, Val)], ctx: &WriteCtx) {
    let (id, applied, notes) = {
        let mut st = sh.store();
        let applied = st.apply(obj, i, vals, ctx);
        let id = st.table(obj).recs[i as usize].id.clone();
        let notes = outbound::on_change(sh, &st, obj, i, false, &applied.changed, ctx.user);
        (id, applied, notes)
    };
    outbound::enqueue(sh, notes);
    let mut c = sh.ctl();
    // Only API writes count as write results (UI edits and conversions by `/_sim` do not).
    if matches!(ctx.via, "rest" | "collections" | "bulk") {
        *c.stats.write_results.entry("success".into()).or_default() += 1;
    }
    if let Some((old, new)) = applied.owner_reassigned {
        c.stats.owner_changes.push(OwnerChange {
            id,
            old_owner: old,
            new_owner: new,
            client: ctx.client.clone(),
            via: ctx.via.to_string(),
        });
    }
}

fn count_failure(sh: &Shared, code: &str) {
    *sh.ctl()
        .stats
        .write_results
        .entry(code.to_string())
        .or_default() += 1;
}

fn object_fields(v: &Value) -> Option<Vec<(String, Value)>> {
    v.as_object().map(|m| {
        m.iter()
            .filter(|(k, _)| k.as_str() != "attributes")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

/// `PATCH /sobjects/{Type}/{id}` → 204.
pub(crate) fn patch(sh: &Shared, req: &Req, o: Obj, id: &str, who: &Who) -> Reply {
    let meta = write_meta(sh, req);
    sh.ctl().stats.single_updates += 1;
    let body = match body_json(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(fields) = object_fields(&body) else {
        return sf_error(
            400,
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of sObject from START_ARRAY value",
        );
    };
    if to_id18(id).is_err() {
        return sf_error(
            404,
            "NOT_FOUND",
            &format!("Provided external ID field does not exist or is not accessible: {id}"),
        );
    }
    let i = {
        let st = sh.store();
        match st.resolve_for_update(o, id) {
            Resolve::Ok(i) => i,
            Resolve::Err(e) => {
                drop(st);
                count_failure(sh, &e.status_code);
                return match e.status_code.as_str() {
                    "INVALID_CROSS_REFERENCE_KEY" | "MALFORMED_ID" => not_found(),
                    "ENTITY_IS_DELETED" => sf_error(404, "ENTITY_IS_DELETED", "entity is deleted"),
                    code => sf_error_fields(400, code, &e.message, &e.fields),
                };
            }
        }
    };
    if let Some(code) = super::http::take_record_fault(sh, &sh.store().table(o).recs[i as usize].id)
    {
        count_failure(sh, &code);
        return sf_error(400, &code, &fault_message(&code));
    }
    let vals = match convert_fields(sh, o, &fields, false) {
        Ok(v) => v,
        Err(errs) => {
            for e in &errs {
                count_failure(sh, &e.status_code);
            }
            let arr: Vec<Value> = errs
                .iter()
                .map(|e| json!({"message": e.message, "errorCode": e.status_code, "fields": e.fields}))
                .collect();
            return Reply::json(400, Value::Array(arr));
        }
    };
    if let Err(e) = dup_check(sh, o, Some(i), &vals, meta.allow_save) {
        count_failure(sh, &e.status_code);
        return sf_error_fields(400, &e.status_code, &e.message, &e.fields);
    }
    let ctx = WriteCtx {
        user: who.user,
        client: meta.client,
        via: "rest",
        assign: meta.assign,
        now: sh.clock.now_ms(),
    };
    apply_update(sh, o, i, &vals, &ctx);
    Reply::empty(204).records(1)
}

pub(crate) fn fault_message(code: &str) -> String {
    match code {
        "UNABLE_TO_LOCK_ROW" => "unable to obtain exclusive access to this record".into(),
        "DUPLICATES_DETECTED" => "Use one of these records?".into(),
        "FIELD_CUSTOM_VALIDATION_EXCEPTION" => "Validation rule failed".into(),
        other => format!("{other} (injected fault)"),
    }
}

/// `POST /sobjects/{Type}` → 201 `{"id","success","errors"}`.
pub(crate) fn create(sh: &Shared, req: &Req, o: Obj, who: &Who) -> Reply {
    let meta = write_meta(sh, req);
    let body = match body_json(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(fields) = object_fields(&body) else {
        return sf_error(
            400,
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of sObject from START_ARRAY value",
        );
    };
    let vals = match convert_fields(sh, o, &fields, true) {
        Ok(v) => v,
        Err(errs) => {
            let arr: Vec<Value> = errs
                .iter()
                .map(|e| json!({"message": e.message, "errorCode": e.status_code, "fields": e.fields}))
                .collect();
            return Reply::json(400, Value::Array(arr));
        }
    };
    let missing = sh.store().missing_required(o, &vals);
    if !missing.is_empty() {
        return sf_error_fields(
            400,
            "REQUIRED_FIELD_MISSING",
            &format!("Required fields are missing: [{}]", missing.join(", ")),
            &missing,
        );
    }
    if let Err(e) = dup_check(sh, o, None, &vals, meta.allow_save) {
        return sf_error_fields(400, &e.status_code, &e.message, &e.fields);
    }
    let ctx = WriteCtx {
        user: who.user,
        client: meta.client,
        via: "create",
        assign: meta.assign,
        now: sh.clock.now_ms(),
    };
    let id = sh.create_with(o, &vals, &ctx);
    Reply::json(201, json!({"id": id, "success": true, "errors": []}))
}

/// `PATCH /composite/sobjects` (§3.3).
pub(crate) fn collections(sh: &Shared, req: &Req, who: &Who) -> Reply {
    let meta = write_meta(sh, req);
    let body = match body_json(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let all_or_none = body["allOrNone"].as_bool().unwrap_or(false);
    let Some(records) = body["records"].as_array() else {
        return sf_error(
            400,
            "JSON_PARSER_ERROR",
            "Cannot deserialize the request: 'records' is required and must be an array",
        );
    };
    if records.len() > MAX_COLLECTION {
        return sf_error(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        );
    }
    {
        let mut c = sh.ctl();
        c.stats.collection_calls += 1;
        c.stats.collection_records += records.len() as u64;
    }
    // Validate every record.
    let mut prepared: Vec<Result<Prepared, Vec<RecordError>>> = Vec::with_capacity(records.len());
    for r in records {
        prepared.push(prepare_record(sh, r, meta.allow_save));
    }
    if sh.opts.unknown_field_mode == super::options::UnknownFieldMode::WholeRequest
        && let Some(e) = prepared.iter().find_map(|p| match p {
            Err(errs) => errs.iter().find(|e| e.status_code == "INVALID_FIELD"),
            _ => None,
        })
    {
        return sf_error(400, "INVALID_FIELD", &e.message);
    }
    let any_err = prepared.iter().any(Result::is_err);
    let now = sh.clock.now_ms();
    let ctx = WriteCtx {
        user: who.user,
        client: meta.client.clone(),
        via: "collections",
        assign: meta.assign,
        now,
    };
    let mut out = Vec::with_capacity(prepared.len());
    for p in prepared {
        match p {
            Ok((obj, i, vals)) => {
                if all_or_none && any_err {
                    count_failure(sh, "ALL_OR_NONE_OPERATION_ROLLED_BACK");
                    out.push(json!({"success": false, "errors": [{
                        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                        "fields": []}]}));
                } else {
                    apply_update(sh, obj, i, &vals, &ctx);
                    let id = sh.store().table(obj).recs[i as usize].id.clone();
                    out.push(json!({"id": id, "success": true, "errors": []}));
                }
            }
            Err(errs) => {
                for e in &errs {
                    count_failure(sh, &e.status_code);
                }
                // Failed records carry no id (as in the reference's example): clients match
                // results to requests by position.
                out.push(json!({"success": false,
                    "errors": serde_json::to_value(&errs).unwrap_or_default()}));
            }
        }
    }
    Reply::json(200, Value::Array(out)).records(records.len())
}

/// A validated collection item: object, record index, converted values.
type Prepared = (Obj, u32, Vec<(usize, Val)>);

/// One collection item: its object, record and converted values, or its errors.
fn prepare_record(sh: &Shared, r: &Value, allow_save: bool) -> Result<Prepared, Vec<RecordError>> {
    let Some(ty) = r["attributes"]["type"].as_str() else {
        return Err(vec![RecordError::new(
            "INVALID_TYPE",
            "Must send a concrete entity type.",
            vec![],
        )]);
    };
    let Some(obj) = Obj::parse(ty) else {
        return Err(vec![RecordError::new(
            "INVALID_TYPE",
            format!("sObject type '{ty}' is not supported."),
            vec![],
        )]);
    };
    let id = r
        .get("id")
        .or_else(|| r.get("Id"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if id.is_empty() {
        return Err(vec![RecordError::new(
            "MISSING_ARGUMENT",
            "Id not specified in an update call",
            vec![],
        )]);
    }
    let i = match sh.store().resolve_for_update(obj, id) {
        Resolve::Ok(i) => i,
        Resolve::Err(e) => return Err(vec![e]),
    };
    let id18 = sh.store().table(obj).recs[i as usize].id.clone();
    if let Some(code) = super::http::take_record_fault(sh, &id18) {
        let msg = fault_message(&code);
        return Err(vec![RecordError::new(&code, msg, vec![])]);
    }
    let fields: Vec<(String, Value)> = r
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "attributes" | "id" | "Id"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let vals = convert_fields(sh, obj, &fields, false)?;
    dup_check(sh, obj, Some(i), &vals, allow_save).map_err(|e| vec![e])?;
    Ok((obj, i, vals))
}

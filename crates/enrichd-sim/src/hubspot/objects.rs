//! CRM object endpoints (reference §2): list, get, create, PATCH, batch read, batch update and
//! the v4 association reads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value, json};

use super::Shared;
use super::http::{Reply, Req, body_json, error, error_with, invalid, take_record_fault};
use super::schema::{Kind, PropDef, Schema, Special};
use super::store::{COMPANY_FIRST_ID, CONTACT_FIRST_ID, Obj, ObjStore, Source, Store};
use super::time::{iso_ms, now_ms, parse_datetime};
use super::webhooks;

/// Max inputs of a CRM batch request (reference §2.4).
pub(crate) const BATCH_MAX: usize = 100;
/// Max inputs of a v4 association batch read. Not in the reference; 1,000 matches HubSpot's
/// v4 associations documentation.
pub(crate) const ASSOC_BATCH_MAX: usize = 1000;

// ------------------------------------------------------------------------------ selection

/// `hs_object_id`, `createdate` and the modified date: always returned.
pub(crate) fn always(schema: &Schema) -> Vec<u16> {
    [Special::ObjectId, Special::Created, Special::Modified]
        .iter()
        .filter_map(|s| schema.special(*s))
        .collect()
}

/// Requested known properties plus the always-included ones; `defaults` when none requested.
pub(crate) fn select(schema: &Schema, requested: &[String], defaults: &[&str]) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    let names: Vec<&str> = if requested.is_empty() {
        defaults.to_vec()
    } else {
        requested.iter().map(String::as_str).collect()
    };
    for n in names {
        if let Some(i) = schema.idx(n)
            && !out.contains(&i)
        {
            out.push(i);
        }
    }
    for i in always(schema) {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// List/get defaults (reference §2.1).
pub(crate) fn list_defaults(obj: Obj) -> &'static [&'static str] {
    match obj {
        Obj::Contact => &["firstname", "lastname", "email"],
        Obj::Company => &["name", "domain"],
    }
}

/// Names of known properties among `requested` (for `propertiesWithHistory`).
fn known(schema: &Schema, requested: &[String]) -> Vec<u16> {
    let mut out = Vec::new();
    for n in requested {
        if let Some(i) = schema.idx(n)
            && !out.contains(&i)
        {
            out.push(i);
        }
    }
    out
}

fn wire_hist_value(def: &PropDef, v: &str) -> String {
    match def.kind {
        Kind::Datetime => v
            .parse::<i64>()
            .map(iso_ms)
            .unwrap_or_else(|_| v.to_string()),
        _ => v.to_string(),
    }
}

/// `propertiesWithHistory` of a record: newest first.
fn history_json(os: &ObjStore, idx: usize, props: &[u16], app_id: u64) -> Value {
    let mut m = Map::new();
    for &p in props {
        let def = os.schema.def(p);
        let mut h: Vec<Value> = os
            .history_of(idx, p)
            .into_iter()
            .map(|h| {
                let mut e = Map::new();
                e.insert("value".into(), json!(wire_hist_value(def, &h.value)));
                e.insert("timestamp".into(), json!(iso_ms(h.at_ms)));
                e.insert("sourceType".into(), json!(h.source.name()));
                if h.source == Source::Integration {
                    e.insert("sourceId".into(), json!(app_id.to_string()));
                }
                Value::Object(e)
            })
            .collect();
        h.reverse();
        m.insert(def.name.clone(), Value::Array(h));
    }
    Value::Object(m)
}

/// The association types of a contact→company (or company→contact) primary association.
fn assoc_types(from: Obj) -> Value {
    match from {
        Obj::Contact => json!([
            {"category": "HUBSPOT_DEFINED", "typeId": 279, "label": null},
            {"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"}
        ]),
        Obj::Company => json!([
            {"category": "HUBSPOT_DEFINED", "typeId": 280, "label": null},
            {"category": "HUBSPOT_DEFINED", "typeId": 2, "label": "Primary"}
        ]),
    }
}

/// Ids of the objects of type `to` associated with record `idx` of `from`.
fn associated(st: &Store, from: Obj, idx: usize, to: Obj) -> Vec<u64> {
    match (from, to) {
        (Obj::Contact, Obj::Company) => st
            .contacts
            .recs
            .get(idx)
            .and_then(|r| r.company)
            .map(|c| vec![COMPANY_FIRST_ID + u64::from(c)])
            .unwrap_or_default(),
        (Obj::Company, Obj::Contact) => st
            .companies
            .members
            .get(idx)
            .map(|m| m.iter().map(|&c| CONTACT_FIRST_ID + u64::from(c)).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `associations` query values understood for `obj`.
fn assoc_targets(obj: Obj, req: &Req) -> Vec<(String, Obj)> {
    let mut out: Vec<(String, Obj)> = Vec::new();
    for a in req.q_list("associations") {
        if let Some(t) = Obj::parse(&a)
            && t != obj
            && !out.iter().any(|(_, o)| *o == t)
        {
            out.push((t.plural().to_string(), t));
        }
    }
    out
}

/// Full record JSON for list/get.
fn full_record(
    st: &Store,
    obj: Obj,
    idx: usize,
    props: &[u16],
    hist: &[u16],
    assocs: &[(String, Obj)],
    app_id: u64,
) -> Value {
    let os = st.of(obj);
    let Some(rec) = os.recs.get(idx) else {
        return Value::Null;
    };
    let mut m = os.record_json(rec, props);
    if !hist.is_empty() {
        m.insert(
            "propertiesWithHistory".into(),
            history_json(os, idx, hist, app_id),
        );
    }
    let mut am = Map::new();
    for (name, to) in assocs {
        let ids = associated(st, obj, idx, *to);
        if ids.is_empty() {
            continue;
        }
        let ty = format!("{}_to_{}", obj.singular(), to.singular());
        let results: Vec<Value> = ids
            .iter()
            .map(|i| json!({"id": i.to_string(), "type": ty}))
            .collect();
        am.insert(name.clone(), json!({"results": results}));
    }
    if !am.is_empty() {
        m.insert("associations".into(), Value::Object(am));
    }
    Value::Object(m)
}

// --------------------------------------------------------------------------------- cursor

/// HubSpot's list cursor: base64 of `"<id>\n"`, percent-encoded as in HubSpot's examples
/// (`NTI1Cg%3D%3D`).
pub(crate) fn encode_cursor(id: u64) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{id}\n"))
        .replace('=', "%3D")
}

/// Accepts the cursor as sent, percent-decoded (once or more), with or without padding.
pub(crate) fn decode_cursor(s: &str) -> Option<u64> {
    let mut s = s.trim().to_string();
    for _ in 0..3 {
        if !s.contains('%') {
            break;
        }
        s = url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())?;
    }
    let t = s.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .ok()?;
    String::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn parse_limit(sh: &Shared, v: Option<&str>, default: usize, max: usize) -> Result<usize, Reply> {
    let Some(v) = v else {
        return Ok(default);
    };
    match v.parse::<i64>() {
        Ok(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Ok(n) if n > max as i64 => Err(invalid(
            sh,
            &format!("limit must be less than or equal to {max}, but was {n}"),
        )),
        _ => Err(invalid(
            sh,
            &format!("limit must be a positive integer, but was '{v}'"),
        )),
    }
}

// ----------------------------------------------------------------------------------- list

pub(crate) fn list(sh: &Arc<Shared>, req: &Req, obj: Obj) -> Reply {
    let hist_req = req.q_list("propertiesWithHistory");
    let max = if hist_req.is_empty() { 100 } else { 50 };
    let limit = match parse_limit(sh, req.q("limit"), 10, max) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let start_id = match req.q("after") {
        None => obj.first_id(),
        Some(a) => match decode_cursor(a) {
            Some(id) => id,
            None => return invalid(sh, &format!("Invalid paging cursor: after='{a}'")),
        },
    };
    if req.q("archived") == Some("true") {
        return Reply::json(200, json!({"results": []}));
    }
    let st = sh.store();
    let os = st.of(obj);
    let props = select(&os.schema, &req.q_list("properties"), list_defaults(obj));
    let hist = known(&os.schema, &hist_req);
    let assocs = assoc_targets(obj, req);
    let start = usize::try_from(start_id.saturating_sub(obj.first_id()))
        .unwrap_or(usize::MAX)
        .min(os.recs.len());
    let end = start.saturating_add(limit).min(os.recs.len());
    let results: Vec<Value> = (start..end)
        .map(|i| full_record(&st, obj, i, &props, &hist, &assocs, sh.opts.app_id))
        .collect();
    let mut body = Map::new();
    body.insert("results".into(), Value::Array(results));
    if end < os.recs.len() {
        let after = encode_cursor(os.recs[end].id);
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &req.query {
            if k != "after" {
                ser.append_pair(k, v);
            }
        }
        let mut q = ser.finish();
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str("after=");
        q.push_str(&after);
        let link = format!("{}{}?{}", sh.base_url, req.path, q);
        body.insert(
            "paging".into(),
            json!({"next": {"after": after, "link": link}}),
        );
    }
    Reply::json(200, Value::Object(body))
}

/// Resolve an id (or an `idProperty` value).
fn resolve(os: &ObjStore, id: &str, id_property: Option<&str>) -> Option<usize> {
    match id_property {
        Some(p) if p != "hs_object_id" => os.find_by(p, id),
        _ => os.index_of(id),
    }
}

pub(crate) fn get(sh: &Arc<Shared>, req: &Req, obj: Obj, id: &str) -> Reply {
    if req.q("archived") == Some("true") {
        return error(sh, 404, "OBJECT_NOT_FOUND", "resource not found");
    }
    let st = sh.store();
    let os = st.of(obj);
    let Some(idx) = resolve(os, id, req.q("idProperty")) else {
        drop(st);
        return error(sh, 404, "OBJECT_NOT_FOUND", "resource not found");
    };
    let props = select(&os.schema, &req.q_list("properties"), list_defaults(obj));
    let hist = known(&os.schema, &req.q_list("propertiesWithHistory"));
    let assocs = assoc_targets(obj, req);
    Reply::json(
        200,
        full_record(&st, obj, idx, &props, &hist, &assocs, sh.opts.app_id),
    )
}

// --------------------------------------------------------------------------------- writes

/// One refused property value.
pub(crate) struct PropErr {
    pub name: String,
    pub code: &'static str,
    pub message: String,
}

fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Normalise one value for its definition (datetimes/dates to epoch ms).
fn normalize(def: &PropDef, raw: &str) -> Result<String, (&'static str, String)> {
    if raw.is_empty() {
        return Ok(String::new());
    }
    match def.kind {
        Kind::String => Ok(raw.to_string()),
        Kind::Number => {
            let t = raw.trim();
            if t.parse::<f64>().is_ok_and(f64::is_finite) {
                Ok(t.to_string())
            } else if t.contains('.') {
                Err(("INVALID_FLOAT", format!("{raw} was not a valid float.")))
            } else {
                Err(("INVALID_LONG", format!("{raw} was not a valid long.")))
            }
        }
        Kind::Datetime => parse_datetime(raw).map(|ms| ms.to_string()).ok_or((
            "INVALID_DATE",
            format!("{raw} is not a valid datetime: use epoch milliseconds or ISO-8601."),
        )),
        Kind::Date => match parse_datetime(raw) {
            Some(ms) if ms.rem_euclid(86_400_000) == 0 => Ok(ms.to_string()),
            Some(_) => Err((
                "INVALID_DATE",
                format!("{raw} is not midnight UTC: date values must be at midnight UTC."),
            )),
            None => Err((
                "INVALID_DATE",
                format!("{raw} is not a valid date: use YYYY-MM-DD or epoch milliseconds."),
            )),
        },
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            v @ ("true" | "false") => Ok(v.to_string()),
            _ => Err((
                "INVALID_BOOLEAN",
                format!("{raw} was not a valid boolean: use true or false."),
            )),
        },
        Kind::Enum => {
            let parts: Vec<&str> = if def.multi() {
                raw.split(';').filter(|p| !p.is_empty()).collect()
            } else {
                vec![raw]
            };
            for p in parts {
                if !def.options.iter().any(|o| o.value == p) {
                    let labels: Vec<&str> = def.options.iter().map(|o| o.label.as_str()).collect();
                    return Err((
                        "INVALID_OPTION",
                        format!(
                            "{p} was not one of the allowed options: [{}]",
                            labels.join(", ")
                        ),
                    ));
                }
            }
            Ok(raw.to_string())
        }
    }
}

/// Validate a `properties` object; errors are appended to `errs`.
pub(crate) fn validate(
    schema: &Schema,
    props: &Map<String, Value>,
    errs: &mut Vec<PropErr>,
) -> Vec<(u16, String)> {
    let mut out = Vec::with_capacity(props.len());
    for (name, v) in props {
        let push = |errs: &mut Vec<PropErr>, code: &'static str, message: String| {
            if !errs.iter().any(|e| e.name == *name && e.code == code) {
                errs.push(PropErr {
                    name: name.clone(),
                    code,
                    message,
                });
            }
        };
        let Some(p) = schema.idx(name) else {
            push(
                errs,
                "PROPERTY_DOESNT_EXIST",
                format!("Property \"{name}\" does not exist"),
            );
            continue;
        };
        let def = schema.def(p);
        if def.read_only_value {
            push(
                errs,
                "READ_ONLY_VALUE",
                format!("\"{name}\" is a read only property; its value cannot be set."),
            );
            continue;
        }
        match normalize(def, &value_string(v)) {
            Ok(s) => out.push((p, s)),
            Err((code, message)) => push(errs, code, message),
        }
    }
    out
}

/// HubSpot's 400 for invalid property values: the JSON array embedded in `message`, plus an
/// `errors` array.
pub(crate) fn property_errors(sh: &Shared, errs: &[PropErr]) -> Reply {
    let portal = sh.opts.portal_id;
    let entries: Vec<String> = errs
        .iter()
        .map(|e| {
            let m = Value::String(e.message.clone()).to_string();
            format!(
                "{{\"isValid\":false,\"message\":{m},\"error\":\"{}\",\"name\":{},\"localizedErrorMessage\":{m},\"portalId\":{portal}}}",
                e.code,
                Value::String(e.name.clone())
            )
        })
        .collect();
    let message = format!("Property values were not valid: [{}]", entries.join(","));
    let details: Vec<Value> = errs
        .iter()
        .map(|e| json!({"message": e.message, "code": e.code, "context": {"propertyName": [e.name]}}))
        .collect();
    error_with(
        sh,
        400,
        "VALIDATION_ERROR",
        &message,
        vec![("errors", Value::Array(details))],
    )
}

/// Resolve `;`-prefixed multi-checkbox appends against the current value.
fn merge_appends(os: &ObjStore, idx: usize, values: &mut [(u16, String)]) {
    for (p, v) in values.iter_mut() {
        if !v.starts_with(';') || !os.schema.def(*p).multi() {
            continue;
        }
        let cur = os
            .recs
            .get(idx)
            .and_then(|r| r.raw(*p))
            .map(|x| x.to_string())
            .unwrap_or_default();
        let mut parts: Vec<&str> = cur.split(';').filter(|s| !s.is_empty()).collect();
        for n in v.split(';').filter(|s| !s.is_empty()) {
            if !parts.contains(&n) {
                parts.push(n);
            }
        }
        *v = parts.join(";");
    }
}

/// One record write: (record index, values, objectWriteTraceId).
type WriteItem = (usize, Vec<(u16, String)>, Option<String>);

/// Write values to records under one lock; returns each record's JSON (written properties +
/// the always-included ones) and queues webhook events.
fn apply(sh: &Shared, obj: Obj, items: Vec<WriteItem>, source: Source) -> Vec<Value> {
    let now = now_ms();
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(items.len());
    let mut written = 0u64;
    let n = items.len() as u64;
    {
        let mut st = sh.store();
        for (idx, mut values, trace) in items {
            merge_appends(st.of(obj), idx, &mut values);
            written += values.len() as u64;
            let changed = st.write(obj, idx, &values, source, now);
            let os = st.of(obj);
            let Some(rec) = os.recs.get(idx) else {
                continue;
            };
            if obj == Obj::Contact && !changed.is_empty() {
                let named: Vec<(String, String)> = changed
                    .iter()
                    .map(|(p, v)| (os.schema.def(*p).name.clone(), v.clone()))
                    .collect();
                events.extend(webhooks::contact_events(
                    sh, rec.id, false, &named, source, now,
                ));
            }
            let mut props: Vec<u16> = values.iter().map(|(p, _)| *p).collect();
            for a in always(&os.schema) {
                if !props.contains(&a) {
                    props.push(a);
                }
            }
            let mut m = os.record_json(rec, &props);
            if let Some(t) = trace {
                m.insert("objectWriteTraceId".into(), json!(t));
            }
            results.push(Value::Object(m));
        }
    }
    {
        let mut c = sh.ctl();
        c.stats.records_updated += n;
        c.stats.properties_written += written;
    }
    sh.emit(events);
    results
}

fn stamp(mut m: Map<String, Value>, started: i64) -> Value {
    m.insert("startedAt".into(), json!(iso_ms(started)));
    m.insert("completedAt".into(), json!(iso_ms(now_ms())));
    Value::Object(m)
}

fn id_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn inputs_of(sh: &Shared, body: &Value) -> Result<Vec<Value>, Reply> {
    match body.get("inputs") {
        Some(Value::Array(a)) => Ok(a.clone()),
        _ => Err(invalid(
            sh,
            "Invalid input JSON on line 1, column 1: Missing required creator property 'inputs'",
        )),
    }
}

fn too_many(sh: &Shared, n: usize, max: usize) -> Reply {
    invalid(
        sh,
        &format!("Batch input limit exceeded: {n} inputs were provided, the maximum is {max}."),
    )
    .inputs(n)
}

pub(crate) fn batch_update(sh: &Arc<Shared>, req: &Req, obj: Obj) -> Reply {
    let started = now_ms();
    let body = match body_json(sh, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let inputs = match inputs_of(sh, &body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let n = inputs.len();
    if n > BATCH_MAX {
        return too_many(sh, n, BATCH_MAX);
    }
    struct In {
        id: String,
        id_property: Option<String>,
        trace: Option<String>,
        props: Map<String, Value>,
    }
    let mut parsed = Vec::with_capacity(n);
    for (i, inp) in inputs.iter().enumerate() {
        let Some(id) = id_string(inp.get("id")) else {
            return invalid(
                sh,
                &format!("Invalid input JSON: inputs[{i}].id is required"),
            )
            .inputs(n);
        };
        let props = match inp.get("properties") {
            Some(Value::Object(m)) => m.clone(),
            _ => {
                return invalid(
                    sh,
                    &format!("Invalid input JSON: inputs[{i}].properties is required"),
                )
                .inputs(n);
            }
        };
        parsed.push(In {
            id,
            id_property: inp
                .get("idProperty")
                .and_then(Value::as_str)
                .map(str::to_string),
            trace: inp
                .get("objectWriteTraceId")
                .and_then(Value::as_str)
                .map(str::to_string),
            props,
        });
    }
    let mut seen = HashSet::new();
    let mut dups: Vec<String> = Vec::new();
    for p in &parsed {
        if !seen.insert(p.id.clone()) && !dups.contains(&p.id) {
            dups.push(p.id.clone());
        }
    }
    if !dups.is_empty() {
        return error_with(
            sh,
            400,
            "VALIDATION_ERROR",
            &format!(
                "Duplicate IDs found in batch input: [{}]. IDs must be unique",
                dups.join(", ")
            ),
            vec![("context", json!({"ids": dups}))],
        )
        .inputs(n);
    }
    // Property validation rejects the whole batch; then ids resolve.
    let mut errs = Vec::new();
    let mut resolved = Vec::with_capacity(n);
    {
        let st = sh.store();
        let os = st.of(obj);
        for p in &parsed {
            let values = validate(&os.schema, &p.props, &mut errs);
            resolved.push((resolve(os, &p.id, p.id_property.as_deref()), values));
        }
    }
    if !errs.is_empty() {
        return property_errors(sh, &errs).inputs(n);
    }
    let mut errors = Vec::new();
    let mut items = Vec::new();
    for (p, (idx, values)) in parsed.into_iter().zip(resolved) {
        let mut ctx = Map::new();
        ctx.insert("ids".into(), json!([p.id]));
        if let Some(t) = &p.trace {
            ctx.insert("objectWriteTraceId".into(), json!([t]));
        }
        let Some(idx) = idx else {
            errors.push(json!({"status": "error", "category": "OBJECT_NOT_FOUND",
                "message": format!("Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.", obj.upper()),
                "context": ctx, "errors": [], "links": {}}));
            continue;
        };
        if obj == Obj::Contact
            && let Some(transient) = take_record_fault(sh, &p.id)
        {
            errors.push(record_fault_error(sh, transient, ctx));
            continue;
        }
        items.push((idx, values, p.trace));
    }
    let results = apply(sh, obj, items, Source::Integration);
    let mut m = Map::new();
    m.insert("status".into(), json!("COMPLETE"));
    m.insert("results".into(), Value::Array(results));
    let status = if errors.is_empty() {
        200
    } else {
        m.insert("numErrors".into(), json!(errors.len()));
        m.insert("errors".into(), Value::Array(errors));
        207
    };
    Reply::json(status, stamp(m, started)).inputs(n)
}

/// The 207 entry of a [`HubSpotFault::FailRecords`](super::HubSpotFault) input.
fn record_fault_error(sh: &Shared, transient: bool, ctx: Map<String, Value>) -> Value {
    if transient {
        json!({"status": "error", "category": "RATE_LIMITS",
               "message": "The record is locked by a concurrent update. Retry the request in a few seconds.",
               "context": ctx, "errors": [], "links": {}})
    } else {
        let msg = "Email address is invalid".to_string();
        let inner = format!(
            "Property values were not valid: [{{\"isValid\":false,\"message\":{m},\"error\":\"INVALID_EMAIL\",\"name\":\"email\",\"localizedErrorMessage\":{m},\"portalId\":{p}}}]",
            m = Value::String(msg.clone()),
            p = sh.opts.portal_id
        );
        json!({"status": "error", "category": "VALIDATION_ERROR", "message": inner,
               "context": ctx,
               "errors": [{"message": msg, "code": "INVALID_EMAIL", "context": {"propertyName": ["email"]}}],
               "links": {}})
    }
}

pub(crate) fn patch(sh: &Arc<Shared>, req: &Req, obj: Obj, id: &str) -> Reply {
    let body = match body_json(sh, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(props) = body.get("properties").and_then(Value::as_object) else {
        return invalid(
            sh,
            "Invalid input JSON on line 1, column 1: Missing required creator property 'properties'",
        )
        .inputs(1);
    };
    let mut errs = Vec::new();
    let (idx, values) = {
        let st = sh.store();
        let os = st.of(obj);
        (
            resolve(os, id, req.q("idProperty")),
            validate(&os.schema, props, &mut errs),
        )
    };
    if !errs.is_empty() {
        return property_errors(sh, &errs).inputs(1);
    }
    let Some(idx) = idx else {
        return error(sh, 404, "OBJECT_NOT_FOUND", "resource not found").inputs(1);
    };
    let mut results = apply(sh, obj, vec![(idx, values, None)], Source::Integration);
    Reply::json(200, results.pop().unwrap_or(Value::Null)).inputs(1)
}

pub(crate) fn create(sh: &Arc<Shared>, req: &Req, obj: Obj) -> Reply {
    let body = match body_json(sh, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let empty = Map::new();
    let props = body
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut errs = Vec::new();
    let now = now_ms();
    let mut company = None;
    let values = {
        let st = sh.store();
        let os = st.of(obj);
        let values = validate(&os.schema, props, &mut errs);
        if errs.is_empty()
            && obj == Obj::Contact
            && let Some(email) = props.get("email").map(value_string)
            && !email.is_empty()
            && let Some(existing) = os.find_by("email", &email)
        {
            let eid = os.recs[existing].id;
            drop(st);
            return error_with(
                sh,
                409,
                "CONFLICT",
                &format!("Contact already exists. Existing ID: {eid}"),
                vec![],
            )
            .inputs(1);
        }
        if let Some(Value::Array(assocs)) = body.get("associations") {
            for a in assocs {
                let to = a.get("to").and_then(|t| id_string(t.get("id")));
                if let Some(ci) = to.and_then(|t| st.companies.index_of(&t))
                    && obj == Obj::Contact
                {
                    company = Some(ci as u32);
                }
            }
        }
        values
    };
    if !errs.is_empty() {
        return property_errors(sh, &errs).inputs(1);
    }
    let idx = match obj {
        Obj::Contact => {
            let id = sh.create_contact(&values, company, Source::Integration, now);
            id.saturating_sub(CONTACT_FIRST_ID) as usize
        }
        Obj::Company => sh
            .store()
            .create(obj, &values, None, Source::Integration, now),
    };
    {
        let mut c = sh.ctl();
        c.stats.records_updated += 1;
        c.stats.properties_written += values.len() as u64;
    }
    let st = sh.store();
    let os = st.of(obj);
    let Some(rec) = os.recs.get(idx) else {
        drop(st);
        return error(sh, 500, "INTERNAL_ERROR", "created record vanished");
    };
    let mut props: Vec<u16> = values.iter().map(|(p, _)| *p).collect();
    for a in always(&os.schema) {
        if !props.contains(&a) {
            props.push(a);
        }
    }
    Reply::json(201, Value::Object(os.record_json(rec, &props))).inputs(1)
}

// ----------------------------------------------------------------------------- batch read

pub(crate) fn batch_read(sh: &Arc<Shared>, req: &Req, obj: Obj) -> Reply {
    let started = now_ms();
    let body = match body_json(sh, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let inputs = match inputs_of(sh, &body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let n = inputs.len();
    if n > BATCH_MAX {
        return too_many(sh, n, BATCH_MAX);
    }
    let list = |k: &str| -> Vec<String> {
        body.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let requested = list("properties");
    let hist_req = list("propertiesWithHistory");
    let id_property = body
        .get("idProperty")
        .and_then(Value::as_str)
        .filter(|p| *p != "hs_object_id");
    let mut ids = Vec::with_capacity(n);
    for (i, inp) in inputs.iter().enumerate() {
        match id_string(inp.get("id")) {
            Some(id) => ids.push(id),
            None => {
                return invalid(
                    sh,
                    &format!("Invalid input JSON: inputs[{i}].id is required"),
                )
                .inputs(n);
            }
        }
    }
    let st = sh.store();
    let os = st.of(obj);
    let props = select(&os.schema, &requested, list_defaults(obj));
    let hist = known(&os.schema, &hist_req);
    // Resolve: by id, or by one scan for an idProperty.
    let mut found: Vec<Option<usize>> = vec![None; n];
    match id_property {
        None => {
            for (k, id) in ids.iter().enumerate() {
                found[k] = os.index_of(id);
            }
        }
        Some(p) => {
            if let Some(pi) = os.schema.idx(p) {
                let wanted: HashMap<String, usize> = ids
                    .iter()
                    .enumerate()
                    .map(|(k, v)| (v.to_lowercase(), k))
                    .collect();
                for (k, i) in os.find_many(pi, &wanted) {
                    // every input with that value
                    for (kk, id) in ids.iter().enumerate() {
                        if id.to_lowercase() == ids[k].to_lowercase() && found[kk].is_none() {
                            found[kk] = Some(i);
                        }
                    }
                }
            }
        }
    }
    let mut results = Vec::new();
    let mut done = HashSet::new();
    let mut missing: Vec<String> = Vec::new();
    for (k, f) in found.iter().enumerate() {
        match f {
            Some(i) => {
                if done.insert(*i) {
                    results.push(full_record(
                        &st,
                        obj,
                        *i,
                        &props,
                        &hist,
                        &[],
                        sh.opts.app_id,
                    ));
                }
            }
            None => {
                if !missing.contains(&ids[k]) {
                    missing.push(ids[k].clone());
                }
            }
        }
    }
    drop(st);
    let mut m = Map::new();
    m.insert("status".into(), json!("COMPLETE"));
    m.insert("results".into(), Value::Array(results));
    let status = if missing.is_empty() {
        200
    } else {
        m.insert("numErrors".into(), json!(1));
        m.insert(
            "errors".into(),
            json!([{"status": "error", "category": "OBJECT_NOT_FOUND",
                "message": format!("Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.", obj.upper()),
                "context": {"ids": missing}, "errors": [], "links": {}}]),
        );
        207
    };
    Reply::json(status, stamp(m, started)).inputs(n)
}

// --------------------------------------------------------------------------- associations

pub(crate) fn assoc_batch_read(sh: &Arc<Shared>, req: &Req, from: Obj, to: Obj) -> Reply {
    let started = now_ms();
    let body = match body_json(sh, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let inputs = match inputs_of(sh, &body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let n = inputs.len();
    if n > ASSOC_BATCH_MAX {
        return too_many(sh, n, ASSOC_BATCH_MAX);
    }
    let st = sh.store();
    let os = st.of(from);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut done = HashSet::new();
    for (i, inp) in inputs.iter().enumerate() {
        let Some(id) = id_string(inp.get("id")) else {
            drop(st);
            return invalid(
                sh,
                &format!("Invalid input JSON: inputs[{i}].id is required"),
            )
            .inputs(n);
        };
        if !done.insert(id.clone()) {
            continue;
        }
        let ids = os
            .index_of(&id)
            .map(|idx| associated(&st, from, idx, to))
            .unwrap_or_default();
        if ids.is_empty() {
            errors.push(json!({"status": "error", "category": "OBJECT_NOT_FOUND",
                "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                "message": format!("No {} is associated with {} {id}.", to.singular(), from.singular()),
                "context": {"fromObjectId": [id], "fromObjectType": [from.singular()],
                            "toObjectType": [to.singular()]},
                "errors": [], "links": {}}));
            continue;
        }
        let tos: Vec<Value> = ids
            .iter()
            .map(|t| json!({"toObjectId": t, "associationTypes": assoc_types(from)}))
            .collect();
        results.push(json!({"from": {"id": id}, "to": tos}));
    }
    drop(st);
    let mut m = Map::new();
    m.insert("status".into(), json!("COMPLETE"));
    m.insert("results".into(), Value::Array(results));
    let status = if errors.is_empty() {
        200
    } else {
        m.insert("numErrors".into(), json!(errors.len()));
        m.insert("errors".into(), Value::Array(errors));
        207
    };
    Reply::json(status, stamp(m, started)).inputs(n)
}

pub(crate) fn assoc_list(sh: &Arc<Shared>, from: Obj, id: &str, to: Obj) -> Reply {
    let st = sh.store();
    let ids = st
        .of(from)
        .index_of(id)
        .map(|idx| associated(&st, from, idx, to))
        .unwrap_or_default();
    let results: Vec<Value> = ids
        .iter()
        .map(|t| json!({"toObjectId": t, "associationTypes": assoc_types(from)}))
        .collect();
    Reply::json(200, json!({"results": results}))
}

//! CRM search (reference §2.3): validation of the request limits, filters ANDed within a
//! group and ORed across groups, one sort, offset paging with the 10,000-result cap, and the
//! search index delay. Scans the records in place (no per-call copies).

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::Shared;
use super::http::{Reply, Req, body_json, invalid};
use super::objects::{always, select};
use super::schema::{Kind, Special};
use super::store::{COMPANY_FIRST_ID, Obj, ObjStore, Record};
use super::time::{now_ms, parse_datetime};

/// Max request body, in characters.
pub(crate) const BODY_MAX: usize = 3000;
pub(crate) const MAX_GROUPS: usize = 5;
pub(crate) const MAX_FILTERS_PER_GROUP: usize = 6;
pub(crate) const MAX_FILTERS: usize = 18;
pub(crate) const MAX_LIMIT: u64 = 200;
/// No query can page beyond this many results.
pub(crate) const RESULT_CAP: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    In,
    NotIn,
    Has,
    NotHas,
    ContainsToken,
    NotContainsToken,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "EQ" => Op::Eq,
            "NEQ" => Op::Neq,
            "LT" => Op::Lt,
            "LTE" => Op::Lte,
            "GT" => Op::Gt,
            "GTE" => Op::Gte,
            "BETWEEN" => Op::Between,
            "IN" => Op::In,
            "NOT_IN" => Op::NotIn,
            "HAS_PROPERTY" => Op::Has,
            "NOT_HAS_PROPERTY" => Op::NotHas,
            "CONTAINS_TOKEN" => Op::ContainsToken,
            "NOT_CONTAINS_TOKEN" => Op::NotContainsToken,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Prop(u16),
    /// `associations.company` (contacts).
    AssocCompany,
    /// Unknown property: behaves as "no value".
    Unknown,
}

/// A comparison operand.
#[derive(Clone, Debug, Default)]
struct Operand {
    num: f64,
    raw: String,
    lower: String,
}

struct Filter {
    target: Target,
    op: Op,
    numeric: bool,
    /// Enumerations compare case-sensitively.
    exact: bool,
    value: Operand,
    high: Operand,
    values: Vec<Operand>,
}

fn val_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn operand(
    sh: &Shared,
    prop: &str,
    kind: Option<Kind>,
    numeric: bool,
    raw: &str,
) -> Result<Operand, Reply> {
    let num = if numeric {
        let parsed = match kind {
            Some(Kind::Datetime | Kind::Date) => parse_datetime(raw).map(|v| v as f64),
            _ => raw.trim().parse::<f64>().ok(),
        };
        match parsed {
            Some(n) => n,
            None => {
                return Err(invalid(
                    sh,
                    &format!("'{raw}' is not a valid value for property '{prop}'"),
                ));
            }
        }
    } else {
        0.0
    };
    Ok(Operand {
        num,
        raw: raw.to_string(),
        lower: raw.to_lowercase(),
    })
}

fn parse_filter(sh: &Shared, os: &ObjStore, f: &Value) -> Result<Filter, Reply> {
    let Some(name) = f.get("propertyName").and_then(Value::as_str) else {
        return Err(invalid(
            sh,
            "Invalid input JSON: filters[].propertyName is required",
        ));
    };
    let Some(opname) = f.get("operator").and_then(Value::as_str) else {
        return Err(invalid(
            sh,
            "Invalid input JSON: filters[].operator is required",
        ));
    };
    let Some(op) = Op::parse(opname) else {
        return Err(invalid(
            sh,
            &format!("Invalid input JSON: unknown operator '{opname}'"),
        ));
    };
    let (target, kind) = if os.obj == Obj::Contact
        && matches!(name, "associations.company" | "associations.companies")
    {
        (Target::AssocCompany, Some(Kind::Number))
    } else {
        match os.schema.idx(name) {
            Some(p) => (Target::Prop(p), Some(os.schema.def(p).kind)),
            None => (Target::Unknown, None),
        }
    };
    let numeric =
        kind.is_some_and(Kind::numeric) && !matches!(op, Op::ContainsToken | Op::NotContainsToken);
    let exact = kind == Some(Kind::Enum);
    let mut flt = Filter {
        target,
        op,
        numeric,
        exact,
        value: Operand::default(),
        high: Operand::default(),
        values: Vec::new(),
    };
    let need = |k: &str| -> Result<String, Reply> {
        f.get(k).and_then(val_str).ok_or_else(|| {
            invalid(
                sh,
                &format!("Operator {opname} on property '{name}' requires a '{k}'"),
            )
        })
    };
    match op {
        Op::Has | Op::NotHas => {}
        Op::In | Op::NotIn => {
            let Some(arr) = f.get("values").and_then(Value::as_array) else {
                return Err(invalid(
                    sh,
                    &format!("Operator {opname} on property '{name}' requires 'values'"),
                ));
            };
            for v in arr {
                let Some(s) = val_str(v) else {
                    return Err(invalid(sh, "Invalid input JSON: values must be strings"));
                };
                flt.values.push(operand(sh, name, kind, numeric, &s)?);
            }
        }
        Op::Between => {
            flt.value = operand(sh, name, kind, numeric, &need("value")?)?;
            flt.high = operand(sh, name, kind, numeric, &need("highValue")?)?;
        }
        _ => flt.value = operand(sh, name, kind, numeric, &need("value")?)?,
    }
    Ok(flt)
}

/// Case-insensitive equality against an already lower-cased operand.
fn ci_eq(stored: &str, lower: &str) -> bool {
    if stored.is_ascii() && lower.is_ascii() {
        stored.eq_ignore_ascii_case(lower)
    } else {
        stored.to_lowercase() == lower
    }
}

/// `*` wildcard match.
fn glob(pat: &str, text: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == text;
    }
    let mut rest = text;
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() {
            continue;
        }
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(pos) => rest = &rest[pos + p.len()..],
                None => return false,
            }
        }
    }
    true
}

fn contains_token(stored: &str, lower: &str) -> bool {
    let s = stored.to_lowercase();
    if glob(lower, &s) {
        return true;
    }
    s.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|t| !t.is_empty())
        .any(|t| glob(lower, t))
}

fn matches(os: &ObjStore, rec: &Record, f: &Filter) -> bool {
    if f.numeric {
        let v = match f.target {
            Target::Prop(p) => os.num(rec, p),
            Target::AssocCompany => rec
                .company
                .map(|c| (COMPANY_FIRST_ID + u64::from(c)) as f64),
            Target::Unknown => None,
        };
        return match (f.op, v) {
            (Op::Has, v) => v.is_some(),
            (Op::NotHas, v) => v.is_none(),
            (Op::Neq, None) | (Op::NotIn, None) => true,
            (_, None) => false,
            (Op::Eq, Some(v)) => v == f.value.num,
            (Op::Neq, Some(v)) => v != f.value.num,
            (Op::Lt, Some(v)) => v < f.value.num,
            (Op::Lte, Some(v)) => v <= f.value.num,
            (Op::Gt, Some(v)) => v > f.value.num,
            (Op::Gte, Some(v)) => v >= f.value.num,
            (Op::Between, Some(v)) => v >= f.value.num && v <= f.high.num,
            (Op::In, Some(v)) => f.values.iter().any(|o| o.num == v),
            (Op::NotIn, Some(v)) => !f.values.iter().any(|o| o.num == v),
            (Op::ContainsToken | Op::NotContainsToken, Some(_)) => false,
        };
    }
    let v = match f.target {
        Target::Prop(p) => os.value(rec, p),
        Target::AssocCompany => rec
            .company
            .map(|c| (COMPANY_FIRST_ID + u64::from(c)).to_string().into()),
        Target::Unknown => None,
    };
    let v = v.as_deref().filter(|s| !s.is_empty());
    let eq = |s: &str, o: &Operand| {
        if f.exact {
            s == o.raw
        } else {
            ci_eq(s, &o.lower)
        }
    };
    let cmp = |s: &str, o: &Operand| -> Ordering {
        if f.exact {
            s.cmp(&o.raw)
        } else {
            s.to_lowercase().cmp(&o.lower)
        }
    };
    // String IN/NOT_IN: the stored value lower-cased against the values as given (the
    // documented "values must be lowercase" quirk); enumerations exactly.
    let in_list = |s: &str| {
        if f.exact {
            f.values.iter().any(|o| s == o.raw)
        } else {
            let l = s.to_lowercase();
            f.values.iter().any(|o| l == o.raw)
        }
    };
    match (f.op, v) {
        (Op::Has, v) => v.is_some(),
        (Op::NotHas, v) => v.is_none(),
        (Op::Neq | Op::NotIn | Op::NotContainsToken, None) => true,
        (_, None) => false,
        (Op::Eq, Some(s)) => eq(s, &f.value),
        (Op::Neq, Some(s)) => !eq(s, &f.value),
        (Op::Lt, Some(s)) => cmp(s, &f.value) == Ordering::Less,
        (Op::Lte, Some(s)) => cmp(s, &f.value) != Ordering::Greater,
        (Op::Gt, Some(s)) => cmp(s, &f.value) == Ordering::Greater,
        (Op::Gte, Some(s)) => cmp(s, &f.value) != Ordering::Less,
        (Op::Between, Some(s)) => {
            cmp(s, &f.value) != Ordering::Less && cmp(s, &f.high) != Ordering::Greater
        }
        (Op::In, Some(s)) => in_list(s),
        (Op::NotIn, Some(s)) => !in_list(s),
        (Op::ContainsToken, Some(s)) => contains_token(s, &f.value.lower),
        (Op::NotContainsToken, Some(s)) => !contains_token(s, &f.value.lower),
    }
}

/// Free-text `query`: every query word must prefix a word of a searchable property.
fn query_matches(rec: &Record, fields: &[u16], words: &[String]) -> bool {
    words.iter().all(|w| {
        fields.iter().any(|&p| {
            rec.raw(p).is_some_and(|v| {
                v.to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|t| t.starts_with(w.as_str()))
            })
        })
    })
}

/// Sort only the first `k` elements into place (the rest is dropped): paging never needs
/// more than `after + limit` ≤ 10,000 of them.
fn top_k<T>(v: &mut Vec<T>, k: usize, cmp: impl Fn(&T, &T) -> Ordering) {
    if k == 0 {
        v.clear();
        return;
    }
    if v.len() > k {
        v.select_nth_unstable_by(k - 1, &cmp);
        v.truncate(k);
    }
    v.sort_unstable_by(cmp);
}

fn search_defaults(obj: Obj) -> &'static [&'static str] {
    match obj {
        Obj::Contact => &[
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname",
        ],
        Obj::Company => &[
            "createdate",
            "domain",
            "hs_lastmodifieddate",
            "hs_object_id",
            "name",
        ],
    }
}

fn searchable(obj: Obj) -> &'static [&'static str] {
    match obj {
        Obj::Contact => &[
            "firstname",
            "lastname",
            "email",
            "phone",
            "mobilephone",
            "company",
            "website",
        ],
        Obj::Company => &["name", "domain", "website", "phone"],
    }
}

fn as_u64(v: Option<&Value>) -> Result<Option<u64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{n} is not a non-negative integer")),
        Some(Value::String(s)) => {
            let t = s.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse::<u64>()
                .map(Some)
                .map_err(|_| format!("'{s}' is not an integer"))
        }
        Some(other) => Err(format!("{other} is not an integer")),
    }
}

pub(crate) fn search(sh: &Arc<Shared>, req: &Req, obj: Obj) -> Reply {
    let chars = String::from_utf8_lossy(&req.body).chars().count();
    if chars > BODY_MAX {
        return invalid(
            sh,
            &format!("The search request body is {chars} characters; the maximum is {BODY_MAX}."),
        );
    }
    let body = match body_json(sh, req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !body.is_object() {
        return invalid(sh, "Invalid input JSON: expected an object");
    }
    let groups: Vec<Value> = match body.get("filterGroups") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return invalid(sh, "Invalid input JSON: filterGroups must be an array"),
    };
    if groups.len() > MAX_GROUPS {
        return invalid(
            sh,
            &format!(
                "Too many filter groups: {} were provided, the maximum is {MAX_GROUPS}.",
                groups.len()
            ),
        );
    }
    let mut total_filters = 0usize;
    for g in &groups {
        let n = g
            .get("filters")
            .and_then(Value::as_array)
            .map(Vec::len)
            .unwrap_or(0);
        if n > MAX_FILTERS_PER_GROUP {
            return invalid(
                sh,
                &format!(
                    "Too many filters in a filter group: {n} were provided, the maximum is {MAX_FILTERS_PER_GROUP}."
                ),
            );
        }
        total_filters += n;
    }
    if total_filters > MAX_FILTERS {
        return invalid(
            sh,
            &format!(
                "Too many filters: {total_filters} were provided across all filter groups, the maximum is {MAX_FILTERS}."
            ),
        );
    }
    let sorts: Vec<Value> = match body.get("sorts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return invalid(sh, "Invalid input JSON: sorts must be an array"),
    };
    if sorts.len() > 1 {
        return invalid(
            sh,
            &format!(
                "Too many sorts: {} were provided, only one sort is supported.",
                sorts.len()
            ),
        );
    }
    let limit = match as_u64(body.get("limit")) {
        Ok(l) => l.unwrap_or(10),
        Err(e) => return invalid(sh, &format!("Invalid limit: {e}")),
    };
    if limit > MAX_LIMIT {
        return invalid(
            sh,
            &format!("limit must be less than or equal to {MAX_LIMIT}, but was {limit}"),
        );
    }
    let after = match as_u64(body.get("after")) {
        Ok(a) => a.unwrap_or(0),
        Err(e) => return invalid(sh, &format!("Invalid after: {e}; it must be an integer.")),
    };
    if after.saturating_add(limit) > RESULT_CAP {
        return invalid(
            sh,
            &format!(
                "Paging beyond {RESULT_CAP} results is not supported: after={after}, limit={limit}."
            ),
        );
    }
    let requested: Vec<String> = body
        .get("properties")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let words: Vec<String> = body
        .get("query")
        .and_then(Value::as_str)
        .map(|q| q.split_whitespace().map(str::to_lowercase).collect())
        .unwrap_or_default();

    let st = sh.store();
    let os = st.of(obj);
    // Parse filters against the schema.
    let mut parsed: Vec<Vec<Filter>> = Vec::with_capacity(groups.len());
    for g in &groups {
        let mut fs = Vec::new();
        for f in g
            .get("filters")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            match parse_filter(sh, os, f) {
                Ok(x) => fs.push(x),
                Err(r) => return r,
            }
        }
        parsed.push(fs);
    }
    let sort: Option<(Target, bool)> = sorts.first().map(|s| {
        let (name, desc) = match s {
            Value::String(n) => match n.strip_prefix('-') {
                Some(rest) => (rest.to_string(), true),
                None => (n.clone(), false),
            },
            other => (
                other
                    .get("propertyName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                other.get("direction").and_then(Value::as_str) == Some("DESCENDING"),
            ),
        };
        let t = os
            .schema
            .idx(&name)
            .map(Target::Prop)
            .unwrap_or(Target::Unknown);
        (t, desc)
    });
    let id_asc = match sort {
        None => true,
        Some((Target::Prop(p), false)) => os.schema.def(p).special == Some(Special::ObjectId),
        Some((Target::Unknown, _)) => true,
        _ => false,
    };
    let fields: Vec<u16> = searchable(obj)
        .iter()
        .filter_map(|n| os.schema.idx(n))
        .collect();
    let delay = sh.opts.search_index_delay.as_millis() as i64;
    let horizon = if delay > 0 {
        now_ms() - delay
    } else {
        i64::MAX
    };
    let hit = |rec: &Record| -> bool {
        if rec.changed_wall_ms > horizon {
            return false;
        }
        if !words.is_empty() && !query_matches(rec, &fields, &words) {
            return false;
        }
        parsed.is_empty() || parsed.iter().any(|g| g.iter().all(|f| matches(os, rec, f)))
    };
    let start = after as usize;
    let end = start + limit as usize;
    let mut total = 0usize;
    let mut page: Vec<usize> = Vec::with_capacity(limit as usize);
    if id_asc {
        for (i, rec) in os.recs.iter().enumerate() {
            if hit(rec) {
                if total >= start && total < end {
                    page.push(i);
                }
                total += 1;
            }
        }
    } else if let Some((target, desc)) = sort {
        let numeric = matches!(target, Target::Prop(p) if os.schema.def(p).kind.numeric());
        if numeric {
            let Target::Prop(p) = target else {
                return invalid(sh, "bad sort");
            };
            let mut keyed: Vec<(f64, u32)> = Vec::new();
            for (i, rec) in os.recs.iter().enumerate() {
                if hit(rec) {
                    keyed.push((os.num(rec, p).unwrap_or(f64::NEG_INFINITY), i as u32));
                }
            }
            total = keyed.len();
            top_k(&mut keyed, end, |a, b| {
                let o = a.0.total_cmp(&b.0);
                (if desc { o.reverse() } else { o }).then(a.1.cmp(&b.1))
            });
            page = keyed
                .iter()
                .skip(start)
                .take(limit as usize)
                .map(|k| k.1 as usize)
                .collect();
        } else {
            let mut keyed: Vec<(Option<String>, u32)> = Vec::new();
            for (i, rec) in os.recs.iter().enumerate() {
                if hit(rec) {
                    let k = match target {
                        Target::Prop(p) => os.value(rec, p).map(|v| v.to_lowercase()),
                        _ => None,
                    };
                    keyed.push((k, i as u32));
                }
            }
            total = keyed.len();
            top_k(&mut keyed, end, |a, b| {
                let o = a.0.cmp(&b.0);
                (if desc { o.reverse() } else { o }).then(a.1.cmp(&b.1))
            });
            page = keyed
                .iter()
                .skip(start)
                .take(limit as usize)
                .map(|k| k.1 as usize)
                .collect();
        }
    }
    let props = if requested.is_empty() {
        select(&os.schema, &[], search_defaults(obj))
    } else {
        let mut p = select(&os.schema, &requested, &[]);
        for a in always(&os.schema) {
            if !p.contains(&a) {
                p.push(a);
            }
        }
        p
    };
    let results: Vec<Value> = page
        .iter()
        .filter_map(|&i| os.recs.get(i))
        .map(|rec| Value::Object(os.record_json(rec, &props)))
        .collect();
    drop(st);
    let mut m = Map::new();
    m.insert("total".into(), json!(total));
    m.insert("results".into(), Value::Array(results));
    if (end as u64) < total as u64 {
        m.insert("paging".into(), json!({"next": {"after": end.to_string()}}));
    }
    Reply::json(200, Value::Object(m))
}

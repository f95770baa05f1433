//! The org's data: users, Leads and Contacts, the (SystemModstamp, Id) index, field validation
//! for writes, and the per-record write history.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::account::{ACCOUNT, Accounts};
use super::schema::{FieldSpec, Kind, Obj, Schema};
use super::seed::{SalesforceData, SeedRecord};
use super::time::{make_id, parse_date, parse_datetime, push_sf_datetime, sf_date, to_second};

/// A stored field value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    Null,
    Text(Box<str>),
    Bool(bool),
    Num(f64),
    /// Epoch ms.
    Dt(i64),
    /// Days since the epoch.
    Date(i64),
}

impl Val {
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Val::Text(s) => Some(s),
            _ => None,
        }
    }
    /// As a JSON value (datetimes in Salesforce's rendering).
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Text(s) => Value::String(s.to_string()),
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => num_json(*n),
            Val::Dt(ms) => {
                let mut s = String::new();
                push_sf_datetime(&mut s, *ms);
                Value::String(s)
            }
            Val::Date(d) => Value::String(sf_date(*d)),
        }
    }
    /// As plain text (CSV cells, SOAP elements); None for null.
    pub(crate) fn to_plain(&self) -> Option<String> {
        match self {
            Val::Null => None,
            Val::Text(s) => Some(s.to_string()),
            Val::Bool(b) => Some(b.to_string()),
            Val::Num(n) => Some(num_json(*n).to_string()),
            Val::Dt(ms) => {
                let mut s = String::new();
                push_sf_datetime(&mut s, *ms);
                Some(s)
            }
            Val::Date(d) => Some(sf_date(*d)),
        }
    }
}

fn num_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Append a stored value as JSON (datetimes in Salesforce's rendering).
pub(crate) fn push_val(out: &mut String, v: &Val) {
    match v {
        Val::Null => out.push_str("null"),
        Val::Text(s) => push_json_str(out, s),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Num(n) => out.push_str(&num_json(*n).to_string()),
        Val::Dt(ms) => {
            out.push('"');
            push_sf_datetime(out, *ms);
            out.push('"');
        }
        Val::Date(d) => {
            out.push('"');
            out.push_str(&sf_date(*d));
            out.push('"');
        }
    }
}

/// Append `s` as a JSON string literal.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One record.
#[derive(Clone, Debug)]
pub(crate) struct Rec {
    pub id: String,
    /// Indexed like the object's field table.
    pub vals: Vec<Val>,
}

/// All records of one object.
#[derive(Debug)]
pub(crate) struct Table {
    pub schema: Schema,
    pub recs: Vec<Rec>,
    pub by_id: HashMap<String, u32>,
    /// (SystemModstamp ms, record index); record indices grow with ids, so this is
    /// (SystemModstamp, Id) order.
    pub index: BTreeSet<(i64, u32)>,
    next_n: u64,
    /// The duplicate rule's field and how many records hold each (lower-cased) value.
    pub dup: Option<(usize, HashMap<String, u32>)>,
}

/// A user of the org.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SfUser {
    pub id: String,
    pub username: String,
    pub name: String,
}

/// A per-field failure of a write, as Salesforce reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    #[serde(rename = "statusCode")]
    pub status_code: String,
    pub message: String,
    pub fields: Vec<String>,
}

impl RecordError {
    pub(crate) fn new(code: &str, message: impl Into<String>, fields: Vec<String>) -> Self {
        RecordError {
            status_code: code.to_string(),
            message: message.into(),
            fields,
        }
    }
}

/// One field changed by a write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// One write to a record (history kept for tests).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteRecord {
    /// Sim time of the write, epoch ms.
    pub at_ms: i64,
    /// The user the write ran as.
    pub user_id: String,
    /// `client=` of `Sforce-Call-Options` (None: header absent, or a UI/sim edit).
    pub client: Option<String>,
    /// `"rest"` (single PATCH), `"collections"`, `"bulk"`, `"ui"` (a `/_sim` human edit),
    /// `"create"`, `"convert"`.
    pub via: String,
    /// Fields whose value changed (a write that changes nothing still bumps the timestamps).
    pub changed: Vec<FieldChange>,
    /// (old owner, new owner) when the assignment rule reassigned the record.
    pub owner_reassigned: Option<(String, String)>,
}

/// Who writes, how.
#[derive(Clone, Debug)]
pub(crate) struct WriteCtx {
    pub user: usize,
    pub client: Option<String>,
    pub via: &'static str,
    /// Run the Lead assignment rule.
    pub assign: bool,
    pub now: i64,
}

/// What an applied write did.
#[derive(Clone, Debug)]
pub(crate) struct Applied {
    pub changed: Vec<FieldChange>,
    pub owner_reassigned: Option<(String, String)>,
}

/// Why an id cannot be written.
pub(crate) enum Resolve {
    Ok(u32),
    Err(RecordError),
}

#[derive(Debug)]
pub(crate) struct Store {
    pub leads: Table,
    pub contacts: Table,
    /// The parents of Contacts (`AccountId`).
    pub accounts: Accounts,
    /// `users[0]` is the integration user; the rest are sales reps.
    pub users: Vec<SfUser>,
    pub history: HashMap<String, Vec<WriteRecord>>,
    /// Round-robin position of the assignment rule.
    rr: usize,
}

impl Table {
    fn new(obj: Obj, omit: &[String]) -> Table {
        Table {
            schema: Schema::build(obj, omit),
            recs: Vec::new(),
            by_id: HashMap::new(),
            index: BTreeSet::new(),
            next_n: 1,
            dup: None,
        }
    }

    pub(crate) fn index_of(&self, id: &str) -> Option<u32> {
        if id.len() == 18
            && let Some(&i) = self.by_id.get(id)
        {
            return Some(i);
        }
        let id18 = super::time::to_id18(id).ok()?;
        self.by_id.get(&id18).copied()
    }

    pub(crate) fn modstamp(&self, i: u32) -> i64 {
        match self.recs[i as usize].vals[self.schema.sys.modstamp] {
            Val::Dt(ms) => ms,
            _ => 0,
        }
    }

    /// Set SystemModstamp (and keep the index in step).
    pub(crate) fn set_modstamp(&mut self, i: u32, ms: i64) {
        let old = self.modstamp(i);
        self.index.remove(&(old, i));
        self.recs[i as usize].vals[self.schema.sys.modstamp] = Val::Dt(ms);
        self.index.insert((ms, i));
    }

    pub(crate) fn is_deleted(&self, i: u32) -> bool {
        matches!(
            self.recs[i as usize].vals[self.schema.sys.is_deleted],
            Val::Bool(true)
        )
    }

    pub(crate) fn is_converted(&self, i: u32) -> bool {
        self.schema
            .sys
            .is_converted
            .is_some_and(|c| matches!(self.recs[i as usize].vals[c], Val::Bool(true)))
    }

    fn dup_adjust(&mut self, v: &Val, delta: i32) {
        if let (Some((_, counts)), Val::Text(t)) = (self.dup.as_mut(), v) {
            let e = counts.entry(t.to_lowercase()).or_default();
            *e = e.saturating_add_signed(delta);
        }
    }

    /// Whether saving `vals` on record `i` (None: a new record) would duplicate another
    /// record under the duplicate rule.
    pub(crate) fn is_duplicate(&self, i: Option<u32>, vals: &[(usize, Val)]) -> bool {
        let Some((fi, counts)) = self.dup.as_ref() else {
            return false;
        };
        let Some(Val::Text(v)) = vals.iter().find(|(f, _)| f == fi).map(|(_, v)| v) else {
            return false;
        };
        let key = v.to_lowercase();
        let mut n = counts.get(&key).copied().unwrap_or(0);
        if let Some(i) = i
            && let Val::Text(cur) = &self.recs[i as usize].vals[*fi]
            && cur.to_lowercase() == key
        {
            n = n.saturating_sub(1);
        }
        n > 0
    }

    /// Derived fields: Name (FirstName LastName), Email_Domain__c (formula).
    fn recompute(&mut self, i: u32) {
        let s = self.schema.sys;
        let r = &mut self.recs[i as usize];
        let first = r.vals[s.first].text().unwrap_or("").to_string();
        let last = r.vals[s.last].text().unwrap_or("").to_string();
        let name = format!("{first} {last}").trim().to_string();
        r.vals[s.name] = Val::Text(name.into());
        if let Some(ed) = s.email_domain {
            r.vals[ed] = match r.vals[s.email].text().and_then(|e| e.split_once('@')) {
                Some((_, d)) => Val::Text(d.into()),
                None => Val::Null,
            };
        }
    }

    /// Append a record; returns its index.
    fn push(&mut self, mut vals: Vec<Val>, created: i64, modified: i64, modstamp: i64) -> u32 {
        let id = make_id(self.schema.obj.prefix(), self.next_n);
        self.next_n += 1;
        let s = self.schema.sys;
        vals[s.id] = Val::Text(id.clone().into());
        vals[s.created] = Val::Dt(created);
        vals[s.last_modified] = Val::Dt(modified);
        vals[s.modstamp] = Val::Dt(modstamp);
        if vals[s.is_deleted].is_null() {
            vals[s.is_deleted] = Val::Bool(false);
        }
        if let Some((fi, _)) = self.dup {
            let v = vals[fi].clone();
            self.dup_adjust(&v, 1);
        }
        let i = self.recs.len() as u32;
        self.recs.push(Rec {
            id: id.clone(),
            vals,
        });
        self.by_id.insert(id, i);
        self.index.insert((modstamp, i));
        self.recompute(i);
        i
    }

    /// Validate and convert one JSON field value for a write (`create`: createable instead of
    /// updateable).
    pub(crate) fn convert(
        &self,
        name: &str,
        v: &Value,
        create: bool,
    ) -> Result<(usize, Val), RecordError> {
        let obj = self.schema.obj.name();
        let Some(fi) = self.schema.idx(name) else {
            return Err(RecordError::new(
                "INVALID_FIELD",
                format!("No such column '{name}' on sobject of type {obj}"),
                vec![],
            ));
        };
        let def = self.schema.def(fi);
        if (create && !def.createable) || (!create && !def.updateable) {
            return Err(RecordError::new(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    def.name
                ),
                vec![def.name.to_string()],
            ));
        }
        let val = json_to_val(def, v)?;
        check_value(def, &val)?;
        Ok((fi, val))
    }

    /// A record as a JSON object of every visible field (for `/_sim` and GET by id).
    pub(crate) fn view(&self, i: u32, version: &str) -> Map<String, Value> {
        let mut m = Map::new();
        let obj = self.schema.obj.name();
        let r = &self.recs[i as usize];
        m.insert(
            "attributes".into(),
            serde_json::json!({"type": obj, "url": format!("/services/data/{version}/sobjects/{obj}/{}", r.id)}),
        );
        for (fi, def) in self.schema.fields.iter().enumerate() {
            if !self.schema.visible[fi] {
                continue;
            }
            m.insert(def.name.to_string(), self.value_json(i, fi));
        }
        m
    }

    /// One field's value as JSON (the compound Address as an object).
    pub(crate) fn value_json(&self, i: u32, fi: usize) -> Value {
        let def = self.schema.def(fi);
        if def.kind() == Kind::Address {
            let mut s = String::new();
            self.push_address(&mut s, i, def);
            return serde_json::from_str(&s).unwrap_or(Value::Null);
        }
        self.recs[i as usize].vals[fi].to_json()
    }

    /// Append one field's value as JSON to `out` (the query hot path).
    pub(crate) fn push_value(&self, out: &mut String, i: u32, fi: usize) {
        let def = self.schema.def(fi);
        match &self.recs[i as usize].vals[fi] {
            Val::Null if def.kind() == Kind::Address => self.push_address(out, i, def),
            v => push_val(out, v),
        }
    }

    fn push_address(&self, out: &mut String, i: u32, def: &FieldSpec) {
        let pre = if def.name == "Address" {
            ""
        } else {
            def.name.trim_end_matches("Address")
        };
        let part = |n: &str| {
            self.schema
                .idx(&format!("{pre}{n}"))
                .map(|fi| self.recs[i as usize].vals[fi].to_json())
                .unwrap_or(Value::Null)
        };
        let v = serde_json::json!({
            "city": part("City"), "country": part("Country"), "geocodeAccuracy": null,
            "latitude": null, "longitude": null, "postalCode": part("PostalCode"),
            "state": part("State"), "street": part("Street"),
        });
        let all_null = v
            .as_object()
            .is_some_and(|o| o.values().all(Value::is_null));
        if all_null {
            out.push_str("null");
        } else {
            out.push_str(&v.to_string());
        }
    }
}

/// JSON value → stored value for a field, with Salesforce's deserialisation errors.
pub(crate) fn json_to_val(def: &FieldSpec, v: &Value) -> Result<Val, RecordError> {
    let parse_err = |got: &str| {
        RecordError::new(
            "JSON_PARSER_ERROR",
            format!(
                "Cannot deserialize instance of {} from {got} value {} or request may be missing a required field",
                def.soql_type_name(),
                v
            ),
            vec![def.name.to_string()],
        )
    };
    Ok(match (def.kind(), v) {
        (_, Value::Null) => Val::Null,
        (Kind::Text, Value::String(s)) => {
            if s.is_empty() {
                Val::Null
            } else {
                Val::Text(s.as_str().into())
            }
        }
        (Kind::Text, Value::Number(n)) => Val::Text(n.to_string().into()),
        (Kind::Text, Value::Bool(b)) => Val::Text(b.to_string().into()),
        (Kind::Bool, Value::Bool(b)) => Val::Bool(*b),
        (Kind::Bool, Value::String(s)) if s.eq_ignore_ascii_case("true") => Val::Bool(true),
        (Kind::Bool, Value::String(s)) if s.eq_ignore_ascii_case("false") => Val::Bool(false),
        (Kind::Num, Value::Number(n)) => Val::Num(n.as_f64().unwrap_or(0.0)),
        (Kind::Num, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(n) => Val::Num(n),
            Err(_) => return Err(parse_err("VALUE_STRING")),
        },
        (Kind::DateTime, Value::String(s)) => {
            match parse_datetime(s).or_else(|| parse_date(s).map(|d| d * 86_400_000)) {
                Some(ms) => Val::Dt(ms),
                None => return Err(parse_err("VALUE_STRING")),
            }
        }
        (Kind::Date, Value::String(s)) => {
            match parse_date(s).or_else(|| parse_datetime(s).map(|ms| ms.div_euclid(86_400_000))) {
                Some(d) => Val::Date(d),
                None => return Err(parse_err("VALUE_STRING")),
            }
        }
        (_, Value::String(_)) => return Err(parse_err("VALUE_STRING")),
        (_, Value::Number(_)) => return Err(parse_err("VALUE_NUMBER_INT")),
        (_, Value::Bool(_)) => return Err(parse_err("VALUE_TRUE")),
        (_, Value::Array(_)) => return Err(parse_err("START_ARRAY")),
        (_, Value::Object(_)) => return Err(parse_err("START_OBJECT")),
    })
}

/// Bulk CSV cell → stored value: `""` leaves the field unchanged (None), `#N/A` sets null.
pub(crate) fn csv_to_val(def: &FieldSpec, cell: &str) -> Result<Option<Val>, RecordError> {
    if cell.is_empty() {
        return Ok(None);
    }
    if cell == "#N/A" {
        return Ok(Some(Val::Null));
    }
    let v = match def.kind() {
        Kind::Text => Value::String(cell.to_string()),
        Kind::Bool | Kind::Num | Kind::DateTime | Kind::Date => Value::String(cell.to_string()),
        Kind::Address => Value::String(cell.to_string()),
    };
    json_to_val(def, &v).map(Some)
}

/// Field-level validation of a converted value (lengths, emails, restricted picklists,
/// required fields).
pub(crate) fn check_value(def: &FieldSpec, val: &Val) -> Result<(), RecordError> {
    let f = || vec![def.name.to_string()];
    match val {
        Val::Null if !def.nillable && def.ty != "boolean" => {
            return Err(RecordError::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", def.name),
                f(),
            ));
        }
        Val::Null => {}
        Val::Text(s) => {
            let n = s.chars().count();
            if def.has_length() && n > def.length as usize {
                return Err(RecordError::new(
                    "STRING_TOO_LONG",
                    format!(
                        "{}: data value too large: {} (max length={})",
                        def.label, s, def.length
                    ),
                    f(),
                ));
            }
            if def.ty == "email" && !valid_email(s) {
                return Err(RecordError::new(
                    "INVALID_EMAIL_ADDRESS",
                    format!("{}: invalid email address: {}", def.label, s),
                    f(),
                ));
            }
            if def.ty == "picklist" && def.restricted && !def.picklist.iter().any(|p| p.0 == &**s) {
                return Err(RecordError::new(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    format!(
                        "{}: bad value for restricted picklist field: {}",
                        def.label, s
                    ),
                    f(),
                ));
            }
            if def.ty == "reference" && super::time::to_id18(s).is_err() {
                return Err(RecordError::new(
                    "MALFORMED_ID",
                    format!("{}: id value of incorrect type: {}", def.label, s),
                    f(),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Salesforce's email check, approximately: one `@`, a non-empty local part without spaces, a
/// dotted domain.
fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c == ',' || c == ';')
}

impl Store {
    /// Build the org from seed data; `integration_username` becomes user 0.
    pub(crate) fn build(
        data: SalesforceData,
        integration_username: &str,
        omit: &[String],
        dup: Option<&super::options::DuplicateRule>,
    ) -> Store {
        let mut users = vec![SfUser {
            id: make_id("005", 1),
            username: integration_username.to_string(),
            name: "Integration User".into(),
        }];
        for (k, u) in data.users.iter().enumerate() {
            users.push(SfUser {
                id: make_id("005", k as u64 + 2),
                username: u.username.clone(),
                name: u.name.clone(),
            });
        }
        let mut st = Store {
            leads: Table::new(Obj::Lead, omit),
            contacts: Table::new(Obj::Contact, omit),
            accounts: Accounts::new(),
            users,
            history: HashMap::new(),
            rr: 0,
        };
        if let Some(rule) = dup
            && let Some(obj) = Obj::parse(&rule.object)
        {
            let t = st.table_mut(obj);
            if let Some(fi) = t.schema.idx(&rule.field) {
                t.dup = Some((fi, HashMap::new()));
            }
        }
        let mut account_ids = Vec::with_capacity(data.accounts.len());
        for a in &data.accounts {
            let owner = st.seed_owner(a.owner);
            let creator = st.seed_owner(usize::MAX);
            let times = (a.created_ms, a.last_modified_ms, a.modstamp_ms);
            account_ids.push(st.accounts.push(&a.fields, times, &owner, &creator));
        }
        for (obj, recs) in [(Obj::Lead, data.leads), (Obj::Contact, data.contacts)] {
            for r in recs {
                let account = r
                    .account
                    .filter(|_| obj == Obj::Contact)
                    .and_then(|k| account_ids.get(k).cloned());
                st.seed(obj, r, account);
            }
        }
        st
    }

    /// The id of sales rep `rep` (user `rep + 1`); the integration user when there is no such
    /// rep.
    fn seed_owner(&self, rep: usize) -> String {
        self.users
            .get(rep.saturating_add(1))
            .or_else(|| self.users.first())
            .map(|u| u.id.clone())
            .unwrap_or_default()
    }

    fn seed(&mut self, obj: Obj, r: SeedRecord, account: Option<String>) {
        let owner = self.seed_owner(r.owner);
        let creator = self.users.first().map(|u| u.id.clone()).unwrap_or_default();
        let t = self.table_mut(obj);
        let s = t.schema.sys;
        let mut vals = vec![Val::Null; t.schema.fields.len()];
        for (k, v) in &r.fields {
            let Some(fi) = t.schema.idx(k) else {
                continue;
            };
            let def = t.schema.def(fi);
            if let Ok(val) = json_to_val(def, &Value::String(v.clone())) {
                vals[fi] = val;
            }
        }
        // Booleans are never null.
        for (fi, def) in t.schema.fields.iter().enumerate() {
            if def.kind() == Kind::Bool && vals[fi].is_null() {
                vals[fi] = Val::Bool(false);
            }
        }
        vals[s.owner] = Val::Text(owner.into());
        vals[s.created_by] = Val::Text(creator.clone().into());
        vals[s.last_modified_by] = Val::Text(creator.into());
        vals[s.is_deleted] = Val::Bool(r.deleted);
        if let (Some(a), Some(fi)) = (account, t.schema.idx("AccountId")) {
            vals[fi] = Val::Text(a.into());
        }
        if let (Some(c), Some(cd)) = (s.is_converted, s.converted_date) {
            vals[c] = Val::Bool(r.converted);
            if r.converted {
                vals[cd] = Val::Date(r.last_modified_ms.div_euclid(86_400_000));
            }
        }
        t.push(
            vals,
            to_second(r.created_ms),
            to_second(r.last_modified_ms),
            to_second(r.modstamp_ms),
        );
    }

    pub(crate) fn table(&self, obj: Obj) -> &Table {
        match obj {
            Obj::Lead => &self.leads,
            Obj::Contact => &self.contacts,
        }
    }
    pub(crate) fn table_mut(&mut self, obj: Obj) -> &mut Table {
        match obj {
            Obj::Lead => &mut self.leads,
            Obj::Contact => &mut self.contacts,
        }
    }

    /// Find a record by id, any object.
    pub(crate) fn locate(&self, id: &str) -> Option<(Obj, u32)> {
        let obj = Obj::of_id(id)?;
        self.table(obj).index_of(id).map(|i| (obj, i))
    }

    pub(crate) fn user_index(&self, id: &str) -> Option<usize> {
        let id18 = super::time::to_id18(id).ok()?;
        self.users.iter().position(|u| u.id == id18)
    }

    /// Resolve the target of an update: malformed → `MALFORMED_ID`; another object's id →
    /// `MALFORMED_ID`; unknown → `INVALID_CROSS_REFERENCE_KEY`; in the recycle bin →
    /// `ENTITY_IS_DELETED`; a converted Lead → `CANNOT_UPDATE_CONVERTED_LEAD`.
    pub(crate) fn resolve_for_update(&self, obj: Obj, id: &str) -> Resolve {
        let name = obj.name();
        let Ok(id18) = super::time::to_id18(id) else {
            return Resolve::Err(RecordError::new(
                "MALFORMED_ID",
                format!("malformed id {id}"),
                vec![],
            ));
        };
        if !id18.starts_with(obj.prefix()) {
            return Resolve::Err(RecordError::new(
                "MALFORMED_ID",
                format!("{name} ID: id value of incorrect type: {id}"),
                vec!["Id".into()],
            ));
        }
        let t = self.table(obj);
        let Some(i) = t.by_id.get(&id18).copied() else {
            return Resolve::Err(RecordError::new(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                vec![],
            ));
        };
        if t.is_deleted(i) {
            return Resolve::Err(RecordError::new(
                "ENTITY_IS_DELETED",
                "entity is deleted",
                vec![],
            ));
        }
        if t.is_converted(i) {
            return Resolve::Err(RecordError::new(
                "CANNOT_UPDATE_CONVERTED_LEAD",
                "cannot reference converted lead",
                vec![],
            ));
        }
        Resolve::Ok(i)
    }

    /// Check references in converted values (OwnerId must be a user, a reference to Account
    /// such as `Contact.AccountId` an Account of the org).
    pub(crate) fn check_refs(&self, obj: Obj, vals: &[(usize, Val)]) -> Result<(), RecordError> {
        let schema = &self.table(obj).schema;
        let owner = schema.sys.owner;
        for (fi, v) in vals {
            let Val::Text(s) = v else {
                continue;
            };
            let def = schema.def(*fi);
            let bad = if *fi == owner {
                self.user_index(s).is_none()
            } else if def.reference_to == [ACCOUNT] {
                self.accounts.index_of(s).is_none()
            } else {
                false
            };
            if bad {
                return Err(RecordError::new(
                    "INVALID_CROSS_REFERENCE_KEY",
                    "invalid cross reference id",
                    vec![def.name.to_string()],
                ));
            }
        }
        Ok(())
    }

    /// The assignment rule's pick: the next sales rep in round-robin order other than
    /// `current` (the integration user is never assigned).
    fn assignee(&mut self, current: &str) -> Option<String> {
        let reps: Vec<String> = self.users.iter().skip(1).map(|u| u.id.clone()).collect();
        if reps.is_empty() {
            return None;
        }
        for _ in 0..reps.len() {
            let cand = reps[self.rr % reps.len()].clone();
            self.rr += 1;
            if cand != current {
                return Some(cand);
            }
        }
        None
    }

    /// Apply validated values to a record: changes, LastModifiedDate/SystemModstamp/
    /// LastModifiedById (always, even when nothing changed, as a DML update does), the
    /// assignment rule, derived fields and the history.
    pub(crate) fn apply(
        &mut self,
        obj: Obj,
        i: u32,
        vals: &[(usize, Val)],
        ctx: &WriteCtx,
    ) -> Applied {
        let user_id = self
            .users
            .get(ctx.user)
            .map(|u| u.id.clone())
            .unwrap_or_default();
        let now = to_second(ctx.now);
        let mut changed = Vec::new();
        let reassign = if ctx.assign && obj == Obj::Lead {
            let owner_fi = self.leads.schema.sys.owner;
            let cur = self.leads.recs[i as usize].vals[owner_fi]
                .text()
                .unwrap_or("")
                .to_string();
            // An explicit OwnerId in the same write is overridden by the rule, as in Salesforce.
            self.assignee(&cur).map(|n| (cur, n))
        } else {
            None
        };
        let t = self.table_mut(obj);
        let s = t.schema.sys;
        for (fi, v) in vals {
            let old = t.recs[i as usize].vals[*fi].clone();
            if old != *v {
                if t.dup.as_ref().is_some_and(|(d, _)| d == fi) {
                    t.dup_adjust(&old, -1);
                    t.dup_adjust(v, 1);
                }
                changed.push(FieldChange {
                    field: t.schema.def(*fi).name.to_string(),
                    old: old.to_json(),
                    new: v.to_json(),
                });
                t.recs[i as usize].vals[*fi] = v.clone();
            }
        }
        let mut owner_reassigned = None;
        if let Some((cur, new)) = reassign {
            let actual = t.recs[i as usize].vals[s.owner]
                .text()
                .unwrap_or("")
                .to_string();
            if actual != new {
                changed.push(FieldChange {
                    field: "OwnerId".into(),
                    old: Value::String(actual),
                    new: Value::String(new.clone()),
                });
                t.recs[i as usize].vals[s.owner] = Val::Text(new.clone().into());
                owner_reassigned = Some((cur, new));
            }
        }
        t.recs[i as usize].vals[s.last_modified] = Val::Dt(now);
        t.recs[i as usize].vals[s.last_modified_by] = Val::Text(user_id.clone().into());
        t.set_modstamp(i, now);
        t.recompute(i);
        let id = t.recs[i as usize].id.clone();
        self.history.entry(id).or_default().push(WriteRecord {
            at_ms: now,
            user_id,
            client: ctx.client.clone(),
            via: ctx.via.to_string(),
            changed: changed.clone(),
            owner_reassigned: owner_reassigned.clone(),
        });
        Applied {
            changed,
            owner_reassigned,
        }
    }

    /// Create a record from validated values (required fields checked by the caller);
    /// returns its index.
    pub(crate) fn create(&mut self, obj: Obj, vals: &[(usize, Val)], ctx: &WriteCtx) -> u32 {
        let user_id = self
            .users
            .get(ctx.user)
            .map(|u| u.id.clone())
            .unwrap_or_default();
        let now = to_second(ctx.now);
        let default_owner = if ctx.assign && obj == Obj::Lead {
            self.assignee("")
        } else {
            None
        };
        let t = self.table_mut(obj);
        let s = t.schema.sys;
        let mut row = vec![Val::Null; t.schema.fields.len()];
        for (fi, def) in t.schema.fields.iter().enumerate() {
            if def.kind() == Kind::Bool {
                row[fi] = Val::Bool(false);
            }
        }
        if obj == Obj::Lead
            && let Some(st) = t.schema.idx("Status")
        {
            row[st] = Val::Text("Open - Not Contacted".into());
        }
        for (fi, v) in vals {
            row[*fi] = v.clone();
        }
        if row[s.owner].is_null() || default_owner.is_some() {
            row[s.owner] = Val::Text(default_owner.unwrap_or_else(|| user_id.clone()).into());
        }
        row[s.created_by] = Val::Text(user_id.clone().into());
        row[s.last_modified_by] = Val::Text(user_id.clone().into());
        let i = t.push(row, now, now, now);
        let changed: Vec<FieldChange> = vals
            .iter()
            .map(|(fi, v)| FieldChange {
                field: t.schema.def(*fi).name.to_string(),
                old: Value::Null,
                new: v.to_json(),
            })
            .collect();
        let id = t.recs[i as usize].id.clone();
        self.history.entry(id).or_default().push(WriteRecord {
            at_ms: now,
            user_id,
            client: ctx.client.clone(),
            via: ctx.via.to_string(),
            changed,
            owner_reassigned: None,
        });
        i
    }

    /// Required fields a create lacks.
    pub(crate) fn missing_required(&self, obj: Obj, vals: &[(usize, Val)]) -> Vec<String> {
        let need: &[&str] = match obj {
            Obj::Lead => &["LastName", "Company"],
            Obj::Contact => &["LastName"],
        };
        let t = self.table(obj);
        need.iter()
            .filter(|n| {
                let fi = t.schema.idx(n);
                !vals.iter().any(|(f, v)| Some(*f) == fi && !v.is_null())
            })
            .map(|n| n.to_string())
            .collect()
    }
}

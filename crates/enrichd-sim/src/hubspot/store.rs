//! The portal's records: contacts and companies with compact property storage, per-property
//! history and the primary contact → company association.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::schema::{Kind, Schema, Special};
use super::seed::HubSpotData;
use super::time::{iso_ms, ymd};

/// Interned or owned property value.
pub(crate) type Val = Arc<str>;

/// First contact id.
pub(crate) const CONTACT_FIRST_ID: u64 = 101;
/// First company id.
pub(crate) const COMPANY_FIRST_ID: u64 = 9_000_001;

/// The two object types the simulator holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Obj {
    Contact,
    Company,
}

impl Obj {
    /// `contacts` / `companies`.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Obj::Contact => "contacts",
            Obj::Company => "companies",
        }
    }
    /// `contact` / `company`.
    pub(crate) fn singular(self) -> &'static str {
        match self {
            Obj::Contact => "contact",
            Obj::Company => "company",
        }
    }
    /// `CONTACT` / `COMPANY` (batch error messages).
    pub(crate) fn upper(self) -> &'static str {
        match self {
            Obj::Contact => "CONTACT",
            Obj::Company => "COMPANY",
        }
    }
    pub(crate) fn first_id(self) -> u64 {
        match self {
            Obj::Contact => CONTACT_FIRST_ID,
            Obj::Company => COMPANY_FIRST_ID,
        }
    }
    /// `contacts`, `contact`, `0-1` → Contact; `companies`, `company`, `0-2` → Company.
    pub(crate) fn parse(s: &str) -> Option<Obj> {
        match s.to_ascii_lowercase().as_str() {
            "contacts" | "contact" | "0-1" => Some(Obj::Contact),
            "companies" | "company" | "0-2" => Some(Obj::Company),
            _ => None,
        }
    }
    /// Read scope of the records.
    pub(crate) fn read_scope(self) -> &'static str {
        match self {
            Obj::Contact => "crm.objects.contacts.read",
            Obj::Company => "crm.objects.companies.read",
        }
    }
    pub(crate) fn write_scope(self) -> &'static str {
        match self {
            Obj::Contact => "crm.objects.contacts.write",
            Obj::Company => "crm.objects.companies.write",
        }
    }
    pub(crate) fn schema_read_scope(self) -> &'static str {
        match self {
            Obj::Contact => "crm.schemas.contacts.read",
            Obj::Company => "crm.schemas.companies.read",
        }
    }
    pub(crate) fn schema_write_scope(self) -> &'static str {
        match self {
            Obj::Contact => "crm.schemas.contacts.write",
            Obj::Company => "crm.schemas.companies.write",
        }
    }
}

/// Who made a change (HubSpot's `sourceType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Source {
    Import,
    Integration,
    CrmUi,
    Api,
}

impl Source {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Source::Import => "IMPORT",
            Source::Integration => "INTEGRATION",
            Source::CrmUi => "CRM_UI",
            Source::Api => "API",
        }
    }
}

/// One record. Property values are stored non-empty, sorted by property index.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub id: u64,
    pub props: Vec<(u16, Val)>,
    pub created_ms: i64,
    pub modified_ms: i64,
    /// Wall-clock ms of the last write (search index delay); `i64::MIN` for seeded records.
    pub changed_wall_ms: i64,
    /// Contacts: index of the primary associated company.
    pub company: Option<u32>,
}

impl Record {
    pub(crate) fn raw(&self, prop: u16) -> Option<&Val> {
        self.props
            .binary_search_by_key(&prop, |(p, _)| *p)
            .ok()
            .map(|i| &self.props[i].1)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Hist {
    pub value: Val,
    pub source: Source,
    pub at_ms: i64,
}

/// One change of a property value, oldest first in [`ContactView::history`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub value: String,
    /// `IMPORT` (seed), `INTEGRATION` (API writes), `CRM_UI` (human edits), `API`
    /// (`create_contact`).
    pub source_type: String,
    /// The app id for API writes.
    pub source_id: Option<String>,
    pub at_ms: i64,
}

/// A contact as the simulator holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactView {
    pub id: String,
    /// Every non-empty value, plus `hs_object_id`, `createdate`, `lastmodifieddate` (epoch-ms
    /// strings, like every datetime value here) and `associatedcompanyid` when associated.
    pub properties: BTreeMap<String, String>,
    /// Per property, oldest first (the wire's `propertiesWithHistory` is newest first). Seeded
    /// values appear as one `IMPORT` change at the creation time.
    pub history: BTreeMap<String, Vec<Change>>,
    pub company_id: Option<String>,
}

impl ContactView {
    /// A property value (None when absent or empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }
}

/// A company as the simulator holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyView {
    pub id: String,
    /// Every non-empty value plus `hs_object_id`, `createdate`, `hs_lastmodifieddate` (ms).
    pub properties: BTreeMap<String, String>,
    /// Contacts whose primary company this is, ascending.
    pub contact_ids: Vec<String>,
}

/// The records of one object type.
pub(crate) struct ObjStore {
    pub obj: Obj,
    pub schema: Schema,
    pub recs: Vec<Record>,
    history: HashMap<u32, Vec<(u16, Hist)>>,
    /// Companies: contact indices associated with each company.
    pub members: Vec<Vec<u32>>,
}

/// A value as read by search / views.
impl ObjStore {
    fn new(obj: Obj, schema: Schema) -> ObjStore {
        ObjStore {
            obj,
            schema,
            recs: Vec::new(),
            history: HashMap::new(),
            members: Vec::new(),
        }
    }

    /// Index of a record by its id string.
    pub(crate) fn index_of(&self, id: &str) -> Option<usize> {
        let n: u64 = id.trim().parse().ok()?;
        let i = n.checked_sub(self.obj.first_id())?;
        let i = usize::try_from(i).ok()?;
        (i < self.recs.len()).then_some(i)
    }

    /// Index of the first record whose `prop` equals `value` case-insensitively (idProperty).
    pub(crate) fn find_by(&self, prop: &str, value: &str) -> Option<usize> {
        let p = self.schema.idx(prop)?;
        if self.schema.def(p).special == Some(Special::ObjectId) {
            return self.index_of(value);
        }
        let v = value.trim().to_lowercase();
        self.recs
            .iter()
            .position(|r| r.raw(p).is_some_and(|x| x.to_lowercase() == v))
    }

    /// Indices of records whose `prop` value (lower-cased) is in `wanted`.
    pub(crate) fn find_many(
        &self,
        prop: u16,
        wanted: &HashMap<String, usize>,
    ) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, r) in self.recs.iter().enumerate() {
            if let Some(v) = r.raw(prop)
                && let Some(k) = wanted.get(&v.to_lowercase())
            {
                out.push((*k, i));
            }
        }
        out
    }

    /// The value of a property in the simulator's internal form (datetimes as epoch-ms
    /// strings). None when empty.
    pub(crate) fn value<'a>(&self, rec: &'a Record, prop: u16) -> Option<Cow<'a, str>> {
        match self.schema.def(prop).special {
            Some(Special::ObjectId) => Some(Cow::Owned(rec.id.to_string())),
            Some(Special::Created) => Some(Cow::Owned(rec.created_ms.to_string())),
            Some(Special::Modified) => Some(Cow::Owned(rec.modified_ms.to_string())),
            Some(Special::AssocCompany) => rec
                .company
                .map(|c| Cow::Owned((COMPANY_FIRST_ID + u64::from(c)).to_string())),
            None => rec.raw(prop).map(|v| Cow::Borrowed(&**v)),
        }
    }

    /// The value as HubSpot puts it on the wire (datetimes ISO-8601, dates `YYYY-MM-DD`).
    pub(crate) fn wire<'a>(&self, rec: &'a Record, prop: u16) -> Option<Cow<'a, str>> {
        let def = self.schema.def(prop);
        let v = self.value(rec, prop)?;
        match def.kind {
            Kind::Datetime => match v.parse::<i64>() {
                Ok(ms) => Some(Cow::Owned(iso_ms(ms))),
                Err(_) => Some(v),
            },
            Kind::Date => match v.parse::<i64>() {
                Ok(ms) => Some(Cow::Owned(ymd(ms))),
                Err(_) => Some(v),
            },
            _ => Some(v),
        }
    }

    /// Numeric value (numbers; datetimes/dates as epoch ms) without allocating for the
    /// computed properties.
    pub(crate) fn num(&self, rec: &Record, prop: u16) -> Option<f64> {
        match self.schema.def(prop).special {
            Some(Special::ObjectId) => Some(rec.id as f64),
            Some(Special::Created) => Some(rec.created_ms as f64),
            Some(Special::Modified) => Some(rec.modified_ms as f64),
            Some(Special::AssocCompany) => rec
                .company
                .map(|c| (COMPANY_FIRST_ID + u64::from(c)) as f64),
            None => rec.raw(prop).and_then(|v| v.trim().parse::<f64>().ok()),
        }
    }

    /// `{id, properties, createdAt, updatedAt, archived}` with the given properties (requested
    /// ones without a value are `null`).
    pub(crate) fn record_json(&self, rec: &Record, props: &[u16]) -> Map<String, Value> {
        let mut p = Map::new();
        for &i in props {
            let v = self
                .wire(rec, i)
                .map(|v| Value::String(v.into_owned()))
                .unwrap_or(Value::Null);
            p.insert(self.schema.def(i).name.clone(), v);
        }
        let mut m = Map::new();
        m.insert("id".into(), json!(rec.id.to_string()));
        m.insert("properties".into(), Value::Object(p));
        m.insert("createdAt".into(), json!(iso_ms(rec.created_ms)));
        m.insert("updatedAt".into(), json!(iso_ms(rec.modified_ms)));
        m.insert("archived".into(), json!(false));
        m
    }

    /// History of one property, oldest first (a seeded value appears as an IMPORT change).
    pub(crate) fn history_of(&self, idx: usize, prop: u16) -> Vec<Hist> {
        let Some(rec) = self.recs.get(idx) else {
            return Vec::new();
        };
        let mut out: Vec<Hist> = self
            .history
            .get(&(idx as u32))
            .map(|h| {
                h.iter()
                    .filter(|(p, _)| *p == prop)
                    .map(|(_, x)| x.clone())
                    .collect()
            })
            .unwrap_or_default();
        if out.is_empty() {
            let def = self.schema.def(prop);
            if def.special.is_some() {
                if let Some(v) = self.value(rec, prop) {
                    out.push(Hist {
                        value: Arc::from(&*v),
                        source: Source::Import,
                        at_ms: rec.created_ms,
                    });
                }
            } else if let Some(v) = rec.raw(prop) {
                out.push(Hist {
                    value: v.clone(),
                    source: Source::Import,
                    at_ms: rec.created_ms,
                });
            }
        }
        out
    }

    /// Set one stored value, recording history. Returns whether it changed.
    pub(crate) fn set(
        &mut self,
        idx: usize,
        prop: u16,
        value: &str,
        source: Source,
        at_ms: i64,
    ) -> bool {
        let Some(rec) = self.recs.get_mut(idx) else {
            return false;
        };
        let pos = rec.props.binary_search_by_key(&prop, |(p, _)| *p);
        let old: Option<Val> = pos.ok().map(|i| rec.props[i].1.clone());
        if old.as_deref().unwrap_or("") == value {
            return false;
        }
        let created = rec.created_ms;
        let new_val: Val = Arc::from(value);
        match (pos, value.is_empty()) {
            (Ok(i), true) => {
                rec.props.remove(i);
            }
            (Ok(i), false) => rec.props[i].1 = new_val.clone(),
            (Err(i), false) => rec.props.insert(i, (prop, new_val.clone())),
            (Err(_), true) => {}
        }
        let h = self.history.entry(idx as u32).or_default();
        if !h.iter().any(|(p, _)| *p == prop)
            && let Some(o) = old
        {
            h.push((
                prop,
                Hist {
                    value: o,
                    source: Source::Import,
                    at_ms: created,
                },
            ));
        }
        h.push((
            prop,
            Hist {
                value: new_val,
                source,
                at_ms,
            },
        ));
        true
    }

    /// Every property with a value, in the simulator's form, by name.
    pub(crate) fn all_values(&self, rec: &Record) -> BTreeMap<String, String> {
        (0..self.schema.defs.len() as u16)
            .filter_map(|p| {
                self.value(rec, p)
                    .map(|v| (self.schema.def(p).name.clone(), v.into_owned()))
            })
            .collect()
    }

    /// Properties with a recorded history entry for this record.
    fn history_props(&self, idx: usize) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .history
            .get(&(idx as u32))
            .map(|h| h.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default();
        if let Some(r) = self.recs.get(idx) {
            v.extend(r.props.iter().map(|(p, _)| *p));
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Both object stores.
pub(crate) struct Store {
    pub contacts: ObjStore,
    pub companies: ObjStore,
}

impl Store {
    pub(crate) fn of(&self, obj: Obj) -> &ObjStore {
        match obj {
            Obj::Contact => &self.contacts,
            Obj::Company => &self.companies,
        }
    }

    pub(crate) fn of_mut(&mut self, obj: Obj) -> &mut ObjStore {
        match obj {
            Obj::Contact => &mut self.contacts,
            Obj::Company => &mut self.companies,
        }
    }

    /// Build from seed data (values are interned: repeated names, titles, countries share one
    /// allocation).
    pub(crate) fn build(data: HubSpotData, now_ms: i64) -> Store {
        let mut contacts = ObjStore::new(Obj::Contact, Schema::contacts());
        let mut companies = ObjStore::new(Obj::Company, Schema::companies());
        let mut intern: HashMap<String, Val> = HashMap::new();
        let mut iv = |s: String| -> Val {
            if let Some(v) = intern.get(&s) {
                return v.clone();
            }
            let v: Val = Arc::from(s.as_str());
            intern.insert(s, v.clone());
            v
        };
        let company_created = data
            .contacts
            .iter()
            .map(|c| c.created_at_ms)
            .min()
            .unwrap_or(now_ms)
            - 86_400_000;
        let n_companies = data.companies.len();
        for (i, c) in data.companies.into_iter().enumerate() {
            let mut props: Vec<(u16, Val)> = Vec::new();
            let mut put = |schema: &mut Schema, k: &str, v: String| {
                if v.is_empty() {
                    return;
                }
                let p = schema.ensure_string_prop(k, now_ms);
                if schema.def(p).read_only_value {
                    return;
                }
                props.retain(|(q, _)| *q != p);
                props.push((p, Arc::from(v.as_str())));
            };
            put(&mut companies.schema, "name", c.name);
            put(&mut companies.schema, "domain", c.domain);
            for (k, v) in c.properties {
                put(&mut companies.schema, &k, v);
            }
            props.sort_by_key(|(p, _)| *p);
            props.shrink_to_fit();
            companies.recs.push(Record {
                id: COMPANY_FIRST_ID + i as u64,
                props,
                created_ms: company_created,
                modified_ms: company_created,
                changed_wall_ms: i64::MIN,
                company: None,
            });
        }
        companies.members = vec![Vec::new(); n_companies];
        contacts.recs.reserve(data.contacts.len());
        for (i, c) in data.contacts.into_iter().enumerate() {
            let mut props: Vec<(u16, Val)> = Vec::with_capacity(c.properties.len());
            for (k, v) in c.properties {
                if v.is_empty() {
                    continue;
                }
                let p = contacts.schema.ensure_string_prop(&k, now_ms);
                if contacts.schema.def(p).read_only_value {
                    continue;
                }
                props.push((p, iv(v)));
            }
            props.sort_by_key(|(p, _)| *p);
            props.shrink_to_fit();
            let company = c.company.filter(|&k| k < n_companies).map(|k| k as u32);
            if let Some(k) = company {
                companies.members[k as usize].push(i as u32);
            }
            contacts.recs.push(Record {
                id: CONTACT_FIRST_ID + i as u64,
                props,
                created_ms: c.created_at_ms,
                modified_ms: c.modified_at_ms.max(c.created_at_ms),
                changed_wall_ms: i64::MIN,
                company,
            });
        }
        Store {
            contacts,
            companies,
        }
    }

    /// Apply values to a record: returns the properties whose value changed (index, new
    /// value). `lastmodifieddate` moves to `now_ms` only when something changed.
    pub(crate) fn write(
        &mut self,
        obj: Obj,
        idx: usize,
        values: &[(u16, String)],
        source: Source,
        now_ms: i64,
    ) -> Vec<(u16, String)> {
        let os = self.of_mut(obj);
        let mut changed = Vec::new();
        for (p, v) in values {
            if os.set(idx, *p, v, source, now_ms) {
                changed.push((*p, v.clone()));
            }
        }
        if !changed.is_empty()
            && let Some(r) = os.recs.get_mut(idx)
        {
            r.modified_ms = now_ms;
            r.changed_wall_ms = now_ms;
        }
        changed
    }

    /// Create a record (contacts: with an optional primary company index). Returns its index.
    pub(crate) fn create(
        &mut self,
        obj: Obj,
        values: &[(u16, String)],
        company: Option<u32>,
        source: Source,
        now_ms: i64,
    ) -> usize {
        let os = self.of_mut(obj);
        let idx = os.recs.len();
        os.recs.push(Record {
            id: obj.first_id() + idx as u64,
            props: Vec::new(),
            created_ms: now_ms,
            modified_ms: now_ms,
            changed_wall_ms: now_ms,
            company: None,
        });
        for (p, v) in values {
            os.set(idx, *p, v, source, now_ms);
        }
        if obj == Obj::Company {
            self.companies.members.push(Vec::new());
        }
        if obj == Obj::Contact
            && let Some(c) = company
        {
            self.associate(idx, c);
        }
        idx
    }

    /// Make `company` the primary company of contact `idx`.
    pub(crate) fn associate(&mut self, idx: usize, company: u32) {
        if (company as usize) >= self.companies.recs.len() {
            return;
        }
        let Some(rec) = self.contacts.recs.get_mut(idx) else {
            return;
        };
        if let Some(old) = rec.company
            && let Some(m) = self.companies.members.get_mut(old as usize)
        {
            m.retain(|&x| x as usize != idx);
        }
        rec.company = Some(company);
        if let Some(m) = self.companies.members.get_mut(company as usize) {
            let pos = m.partition_point(|&x| (x as usize) < idx);
            m.insert(pos, idx as u32);
        }
    }

    pub(crate) fn contact_view(&self, idx: usize, app_id: u64) -> Option<ContactView> {
        let os = &self.contacts;
        let rec = os.recs.get(idx)?;
        let mut history = BTreeMap::new();
        for p in os.history_props(idx) {
            let h: Vec<Change> = os
                .history_of(idx, p)
                .into_iter()
                .map(|h| Change {
                    value: h.value.to_string(),
                    source_type: h.source.name().to_string(),
                    source_id: (h.source == Source::Integration).then(|| app_id.to_string()),
                    at_ms: h.at_ms,
                })
                .collect();
            if !h.is_empty() {
                history.insert(os.schema.def(p).name.clone(), h);
            }
        }
        Some(ContactView {
            id: rec.id.to_string(),
            properties: os.all_values(rec),
            history,
            company_id: rec
                .company
                .map(|c| (COMPANY_FIRST_ID + u64::from(c)).to_string()),
        })
    }

    pub(crate) fn company_view(&self, idx: usize) -> Option<CompanyView> {
        let os = &self.companies;
        let rec = os.recs.get(idx)?;
        Some(CompanyView {
            id: rec.id.to_string(),
            properties: os.all_values(rec),
            contact_ids: os
                .members
                .get(idx)
                .map(|m| {
                    m.iter()
                        .map(|&c| (CONTACT_FIRST_ID + u64::from(c)).to_string())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

//! Accounts: the parents of Contacts (`Contact.AccountId`, relationship `Account`). They are
//! read only through parent relationship fields of a query (`SELECT Account.Name FROM
//! Contact`) and through the simulator's own API; Account is not a top-level sObject of the
//! simulator (no `FROM Account`, describe or writes).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::fields::account_fields;
use super::schema::{FieldSpec, Kind};
use super::store::{Rec, Val, json_to_val, push_json_str, push_val};
use super::time::{make_id, to_id18, to_second};

/// The Account object's name and id prefix.
pub(crate) const ACCOUNT: &str = "Account";
pub(crate) const ACCOUNT_PREFIX: &str = "001";

/// Every Account of the org.
#[derive(Debug)]
pub(crate) struct Accounts {
    pub fields: &'static [FieldSpec],
    by_lower: HashMap<String, usize>,
    pub recs: Vec<Rec>,
    by_id: HashMap<String, u32>,
}

impl Accounts {
    pub(crate) fn new() -> Accounts {
        let fields = account_fields();
        let by_lower = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.to_ascii_lowercase(), i))
            .collect();
        Accounts {
            fields,
            by_lower,
            recs: Vec::new(),
            by_id: HashMap::new(),
        }
    }

    /// Field index by API name, case-insensitively.
    pub(crate) fn idx(&self, name: &str) -> Option<usize> {
        self.by_lower.get(&name.to_ascii_lowercase()).copied()
    }

    pub(crate) fn def(&self, fi: usize) -> &'static FieldSpec {
        &self.fields[fi]
    }

    /// Record index by id (15 or 18 characters).
    pub(crate) fn index_of(&self, id: &str) -> Option<u32> {
        if !id.starts_with(ACCOUNT_PREFIX) {
            return None;
        }
        let id18 = to_id18(id).ok()?;
        self.by_id.get(&id18).copied()
    }

    /// Append an Account from text values (unknown fields and values that do not convert are
    /// ignored); returns its id.
    pub(crate) fn push(
        &mut self,
        fields: &[(String, String)],
        times: (i64, i64, i64),
        owner: &str,
        creator: &str,
    ) -> String {
        let n = self.recs.len() as u64 + 1;
        let id = make_id(ACCOUNT_PREFIX, n);
        let mut vals = vec![Val::Null; self.fields.len()];
        for (fi, def) in self.fields.iter().enumerate() {
            if def.kind() == Kind::Bool {
                vals[fi] = Val::Bool(false);
            }
        }
        for (k, v) in fields {
            if let Some(fi) = self.idx(k)
                && let Ok(val) = json_to_val(self.def(fi), &Value::String(v.clone()))
            {
                vals[fi] = val;
            }
        }
        let (created, modified, modstamp) = times;
        let mut set = |name: &str, v: Val| {
            if let Some(fi) = self.by_lower.get(&name.to_ascii_lowercase()) {
                vals[*fi] = v;
            }
        };
        set("Id", Val::Text(id.as_str().into()));
        set("OwnerId", Val::Text(owner.into()));
        set("CreatedById", Val::Text(creator.into()));
        set("LastModifiedById", Val::Text(creator.into()));
        set("CreatedDate", Val::Dt(to_second(created)));
        set("LastModifiedDate", Val::Dt(to_second(modified)));
        set("SystemModstamp", Val::Dt(to_second(modstamp.max(modified))));
        let i = self.recs.len() as u32;
        self.recs.push(Rec {
            id: id.clone(),
            vals,
        });
        self.by_id.insert(id.clone(), i);
        id
    }

    /// An Account as a JSON object of every field (for `/_sim` and [`super::SalesforceSim::record`]).
    pub(crate) fn view(&self, i: u32, version: &str) -> Map<String, Value> {
        let r = &self.recs[i as usize];
        let mut m = Map::new();
        m.insert(
            "attributes".into(),
            json!({"type": ACCOUNT, "url": format!("/services/data/{version}/sobjects/{ACCOUNT}/{}", r.id)}),
        );
        for (fi, def) in self.fields.iter().enumerate() {
            m.insert(def.name.to_string(), r.vals[fi].to_json());
        }
        m
    }

    /// Append the parent object of a relationship field as a query renders it: `null` when
    /// the reference is null (or names no Account), otherwise `{"attributes":{"type":"Account",
    /// "url":…},"Name":…,…}` with `fields` in SELECT order.
    pub(crate) fn push_parent(
        &self,
        out: &mut String,
        id: Option<&str>,
        fields: &[usize],
        version: &str,
    ) {
        let Some(i) = id.and_then(|id| self.index_of(id)) else {
            out.push_str("null");
            return;
        };
        let r = &self.recs[i as usize];
        out.push_str("{\"attributes\":{\"type\":\"");
        out.push_str(ACCOUNT);
        out.push_str("\",\"url\":\"/services/data/");
        out.push_str(version);
        out.push_str("/sobjects/");
        out.push_str(ACCOUNT);
        out.push('/');
        out.push_str(&r.id);
        out.push_str("\"}");
        for &fi in fields {
            out.push(',');
            push_json_str(out, self.def(fi).name);
            out.push(':');
            push_val(out, &r.vals[fi]);
        }
        out.push('}');
    }
}

//! Query pages (§2.1) → records → stored [`Lead`]s.
//!
//! A page is `{"totalSize","done","nextRecordsUrl"?,"records":[…]}`; each
//! record has `attributes` (`type`, `url`), its fields (nulls included),
//! datetimes as `2026-05-01T07:25:37.000+0000`, and parent relationships
//! as nested objects (`"Account": {"attributes":…, "Name": "Acme"}`).
//!
//! A record becomes a [`Lead`] exactly as the HubSpot connector makes one
//! (`crm::hubspot::pull`): the record Id as [`crate::core::lead::LeadId`],
//! every non-null field under its API name, parents flattened as
//! `Account.Name`. Converted Leads (`IsConverted = true`, §2.3) are never
//! turned into leads: they cannot be updated. Identity is then read
//! through the workspace's [`IdentityFields`]; [`identity_fields`] gives
//! the Salesforce names (a Contact's company comes from its Account).
//!
//! A malformed record (no Id, no SystemModstamp, another type) is set
//! aside with a reason and the rest of the page goes on. `nextRecordsUrl`
//! is only followed when it is a path under `/services/data/` on the same
//! instance, so the access token never goes elsewhere.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::SObject;
use super::datetime;
use super::soql::{Keyset, SoqlError, select_fields};
use crate::core::channel::Channel;
use crate::core::lead::{IdentityFields, Lead};
use crate::core::mapping::Mapping;
use crate::core::value::UnixMillis;

/// Standard consent fields (§5, §9 "respect `HasOptedOutOfEmail` /
/// `DoNotCall`"); the wiring may add them to a query's fields.
pub const CONSENT_FIELDS: &[&str] = &["HasOptedOutOfEmail", "DoNotCall"];

/// Why a page could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("Salesforce query answer: {0}")]
    Decode(String),
    #[error(
        "Salesforce query answer: nextRecordsUrl `{0}` is not a path under /services/data/ (not followed)"
    )]
    BadNextUrl(String),
}

/// One record of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct SfRecord {
    pub object: SObject,
    pub id: String,
    pub modstamp: UnixMillis,
    /// Leads only; false for Contacts.
    pub converted: bool,
    /// Every field, parents flattened (`Account.Name`), nulls kept.
    pub fields: BTreeMap<String, Value>,
}

impl SfRecord {
    /// The record's position in `(SystemModstamp, Id)` order.
    pub fn keyset(&self) -> Keyset {
        Keyset {
            modstamp: self.modstamp,
            id: self.id.clone(),
        }
    }

    /// The stored lead; `None` for a converted Lead.
    pub fn to_lead(&self) -> Option<Lead> {
        if self.converted {
            return None;
        }
        let mut lead = Lead::new(self.id.clone());
        for (k, v) in &self.fields {
            if !v.is_null() {
                lead.fields.insert(k.clone(), v.clone());
            }
        }
        Some(lead)
    }
}

/// The `SystemModstamp` of a stored lead (as read when it was pulled).
pub fn stored_modstamp(lead: &Lead) -> Option<UnixMillis> {
    lead.fields
        .get("SystemModstamp")
        .and_then(Value::as_str)
        .and_then(datetime::parse)
}

/// Whether a record read again is the very version already stored: same
/// `SystemModstamp` *and* the same values (the lookback re-reads the last
/// minutes of the previous pass by design, §2.3). The caller skips it, so a
/// record is handled once per change, not once per read. The values are
/// compared too because `SystemModstamp` has whole seconds: a person's
/// edit in the same second as enrichd's own write keeps the stamp, and
/// must not be taken for the version already handled.
pub fn is_repeat(record: &SfRecord, stored: Option<&Lead>) -> bool {
    let Some(stored) = stored else {
        return false;
    };
    stored_modstamp(stored) == Some(record.modstamp)
        && record
            .fields
            .iter()
            .all(|(k, v)| match stored.fields.get(k) {
                Some(s) => s == v,
                None => v.is_null(),
            })
}

/// A record set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRecord {
    pub index: usize,
    pub id: Option<String>,
    pub reason: String,
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    pub total_size: Option<u64>,
    pub done: bool,
    /// The next page's path (only while `done` is false).
    pub next_records_url: Option<String>,
    pub records: Vec<SfRecord>,
    pub skipped: Vec<SkippedRecord>,
}

impl QueryPage {
    /// The position after the page's last readable record: where a query
    /// restarts. `None` when no record could be read (the caller must not
    /// restart from the same position again: that would loop).
    pub fn last_keyset(&self) -> Option<Keyset> {
        self.records.iter().map(SfRecord::keyset).max()
    }

    /// The page's leads (converted Leads left out) and how many were
    /// converted.
    pub fn leads(&self) -> (Vec<Lead>, usize) {
        let mut converted = 0;
        let mut out = Vec::with_capacity(self.records.len());
        for r in &self.records {
            match r.to_lead() {
                Some(l) => out.push(l),
                None => converted += 1,
            }
        }
        (out, converted)
    }
}

/// Whether `url` may be followed: a relative path under `/services/data/`
/// with no scheme, host, `..` or `//`.
pub fn is_safe_next_url(url: &str) -> bool {
    url.starts_with("/services/data/")
        && !url.contains("//")
        && !url.contains("..")
        && !url.contains('\\')
        && !url.contains('@')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn flatten(prefix: &str, o: &Map<String, Value>, out: &mut BTreeMap<String, Value>) {
    for (k, v) in o {
        if k == "attributes" {
            continue;
        }
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(inner) if prefix.split('.').count() < 4 => flatten(&key, inner, out),
            Value::Object(_) | Value::Array(_) => {}
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

fn as_bool(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn record(v: &Value, expected: SObject) -> Result<SfRecord, (Option<String>, String)> {
    let o = v
        .as_object()
        .ok_or((None, "not a JSON object".to_string()))?;
    let id = o
        .get("Id")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| super::is_record_id(s))
        .map(String::from);
    let Some(id) = id else {
        return Err((None, "no valid `Id`".into()));
    };
    let fail = |why: String| (Some(id.clone()), why);
    if let Some(t) = v.pointer("/attributes/type").and_then(Value::as_str)
        && SObject::parse(t) != Some(expected)
    {
        return Err(fail(format!("a `{t}` record in a {expected} query")));
    }
    let modstamp = o
        .get("SystemModstamp")
        .and_then(Value::as_str)
        .and_then(datetime::parse)
        .ok_or_else(|| fail("no valid `SystemModstamp`".into()))?;
    let converted = match expected {
        SObject::Lead => as_bool(o.get("IsConverted")).unwrap_or(false),
        SObject::Contact => false,
    };
    let mut fields = BTreeMap::new();
    flatten("", o, &mut fields);
    Ok(SfRecord {
        object: expected,
        id,
        modstamp,
        converted,
        fields,
    })
}

/// Parses a query (or queryAll, or query-more) page for `expected` records.
pub fn parse_query_page(body: &[u8], expected: SObject) -> Result<QueryPage, PageError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| PageError::Decode(format!("not JSON: {e}")))?;
    let records = v
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| PageError::Decode("no `records` array".into()))?;
    let done = as_bool(v.get("done")).unwrap_or(true);
    let next_records_url = if done {
        None
    } else {
        let u = v
            .get("nextRecordsUrl")
            .and_then(Value::as_str)
            .map(str::trim)
            .ok_or_else(|| {
                PageError::Decode("`done` is false but there is no nextRecordsUrl".into())
            })?;
        if !is_safe_next_url(u) {
            return Err(PageError::BadNextUrl(u.chars().take(200).collect()));
        }
        Some(u.to_string())
    };
    let mut page = QueryPage {
        total_size: v.get("totalSize").and_then(Value::as_u64),
        done,
        next_records_url,
        records: Vec::with_capacity(records.len()),
        skipped: Vec::new(),
    };
    for (index, r) in records.iter().enumerate() {
        match record(r, expected) {
            Ok(rec) => page.records.push(rec),
            Err((id, reason)) => page.skipped.push(SkippedRecord { index, id, reason }),
        }
    }
    Ok(page)
}

/// Salesforce field names for a lead's identity (§5). Leads carry their
/// company and country; a Contact's company is its Account's
/// (`Account.Name`, `Account.Website`) and its country `MailingCountry`.
/// There is no standard LinkedIn field: when the mapping writes the
/// `linkedin_url` channel, that field is read as the LinkedIn URL. No
/// standard ICP score either (left blank: not read).
pub fn identity_fields(object: SObject, mapping: Option<&Mapping>) -> IdentityFields {
    let (company_name, company_domain, country) = match object {
        SObject::Lead => ("Company", "Website", "Country"),
        SObject::Contact => ("Account.Name", "Account.Website", "MailingCountry"),
    };
    let linkedin = mapping
        .and_then(|m| m.channels.get(&Channel::LinkedinUrl))
        .map(|r| r.value.field.clone())
        .unwrap_or_default();
    IdentityFields {
        first_name: "FirstName".into(),
        last_name: "LastName".into(),
        full_name: "Name".into(),
        company_domain: company_domain.into(),
        company_name: company_name.into(),
        linkedin_url: linkedin,
        email: "Email".into(),
        job_title: "Title".into(),
        country: country.into(),
        phone: "Phone".into(),
        icp_score: String::new(),
    }
}

/// The SELECT list of a pull: the identity columns, the identity fields,
/// the mapped fields (what enrichd compares before writing) and `extra`
/// (audience conditions, configured fields).
pub fn query_fields(
    object: SObject,
    identity: &IdentityFields,
    mapping: Option<&Mapping>,
    extra: &[String],
) -> Result<Vec<String>, SoqlError> {
    let mapped = mapping.map(Mapping::fields).unwrap_or_default();
    select_fields(
        object,
        identity
            .names()
            .chain(mapped)
            .chain(extra.iter().map(String::as_str)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::lead::Identity;

    /// The reference's page (§2.1), completed.
    const PAGE: &str = r#"{ "totalSize": 4200, "done": false,
  "nextRecordsUrl": "/services/data/v62.0/query/01gxx0000000001AAA-2000",
  "records": [ {"attributes": {"type": "Contact", "url": "/services/data/v62.0/sobjects/Contact/003xx000004TmiQAAS"},
                "Id": "003xx000004TmiQAAS", "Email": "jane@acme.com", "Phone": "+1 415 555 0100",
                "MobilePhone": "+1 415 555 0199", "SystemModstamp": "2026-05-01T07:25:37.000+0000",
                "FirstName": "Jane", "LastName": "Doe", "Title": null, "MailingCountry": "US",
                "Account": {"attributes": {"type": "Account"}, "Name": "Acme", "Website": "https://www.acme.com/about"}},
               {"attributes": {"type": "Contact"}, "Id": "003xx000004TmiRAAS", "SystemModstamp": "2026-05-01T07:25:37.000+0000", "Account": null},
               {"attributes": {"type": "Contact"}, "Id": "003xx000004TmiSAAS"},
               {"attributes": {"type": "Lead"}, "Id": "00Qxx0000001abcEAA", "SystemModstamp": "2026-05-01T07:25:37.000+0000"},
               {"Email": "no id"},
               7 ] }"#;

    #[test]
    fn a_contact_page() {
        let p = parse_query_page(PAGE.as_bytes(), SObject::Contact).unwrap();
        assert_eq!(p.total_size, Some(4200));
        assert!(!p.done);
        assert_eq!(
            p.next_records_url.as_deref(),
            Some("/services/data/v62.0/query/01gxx0000000001AAA-2000")
        );
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.skipped.len(), 4);
        assert!(p.skipped[0].reason.contains("SystemModstamp"));
        assert_eq!(p.skipped[0].id.as_deref(), Some("003xx000004TmiSAAS"));
        assert!(
            p.skipped[1]
                .reason
                .contains("`Lead` record in a Contact query")
        );
        let r = &p.records[0];
        assert_eq!(r.modstamp, 1_777_620_337_000);
        assert_eq!(r.fields["Account.Name"], "Acme");
        assert!(!r.fields.contains_key("attributes"));
        assert!(!r.fields.contains_key("Account.attributes.type"));
        assert_eq!(
            p.last_keyset(),
            Some(Keyset {
                modstamp: 1_777_620_337_000,
                id: "003xx000004TmiRAAS".into()
            })
        );
        let (leads, converted) = p.leads();
        assert_eq!(converted, 0);
        let lead = &leads[0];
        assert_eq!(lead.id.as_str(), "003xx000004TmiQAAS");
        assert!(!lead.fields.contains_key("Title"), "nulls are left out");
        let f = identity_fields(SObject::Contact, None);
        let id = Identity::from_lead(lead, &f);
        assert_eq!(id.first_name.as_deref(), Some("Jane"));
        assert_eq!(id.full_name.as_deref(), Some("Jane Doe"));
        assert_eq!(id.company_name.as_deref(), Some("Acme"));
        assert_eq!(id.domain.as_deref(), Some("acme.com"));
        assert_eq!(id.email.as_deref(), Some("jane@acme.com"));
    }

    #[test]
    fn converted_leads_are_never_leads() {
        let body = r#"{"totalSize":2,"done":true,"records":[
            {"attributes":{"type":"Lead"},"Id":"00Qxx0000001abcEAA","SystemModstamp":"2026-05-01T07:25:37.000+0000","IsConverted":true,"Company":"Acme","LastName":"Roe"},
            {"attributes":{"type":"Lead"},"Id":"00Qxx0000001abdEAA","SystemModstamp":"2026-05-01T07:25:38.000+0000","IsConverted":false,"Company":"Acme","LastName":"Poe","Website":"acme.io"}]}"#;
        let p = parse_query_page(body.as_bytes(), SObject::Lead).unwrap();
        assert!(p.done && p.next_records_url.is_none());
        assert!(p.records[0].converted && !p.records[1].converted);
        let (leads, converted) = p.leads();
        assert_eq!((leads.len(), converted), (1, 1));
        assert_eq!(leads[0].id.as_str(), "00Qxx0000001abdEAA");
        // The keyset still moves past the converted one.
        assert_eq!(p.last_keyset().unwrap().modstamp, 1_777_620_338_000);
        let id = Identity::from_lead(&leads[0], &identity_fields(SObject::Lead, None));
        assert_eq!(id.company_name.as_deref(), Some("Acme"));
        assert_eq!(id.domain.as_deref(), Some("acme.io"));
    }

    #[test]
    fn repeats_within_the_lookback_are_recognised() {
        let body = r#"{"done":true,"records":[{"attributes":{"type":"Lead"},"Id":"00Qxx0000001abcEAA","SystemModstamp":"2026-05-01T07:25:37.000+0000","IsConverted":false}]}"#;
        let p = parse_query_page(body.as_bytes(), SObject::Lead).unwrap();
        let r = &p.records[0];
        let stored = r.to_lead().unwrap();
        assert_eq!(stored_modstamp(&stored), Some(r.modstamp));
        assert!(is_repeat(r, Some(&stored)));
        assert!(!is_repeat(r, None));
        let older =
            Lead::new("00Qxx0000001abcEAA").with("SystemModstamp", "2026-05-01T07:25:36.000+0000");
        assert!(!is_repeat(r, Some(&older)));
        let odd = Lead::new("00Qxx0000001abcEAA").with("SystemModstamp", 5);
        assert!(!is_repeat(r, Some(&odd)));
    }

    /// A person's edit in the same second as the version stored keeps the
    /// SystemModstamp (whole seconds): it is not a repeat.
    #[test]
    fn an_edit_within_the_same_second_is_not_a_repeat() {
        let read = |title: &str| {
            let body = format!(
                r#"{{"done":true,"records":[{{"attributes":{{"type":"Lead"}},"Id":"00Qxx0000001abcEAA","SystemModstamp":"2026-05-01T07:25:37.000+0000","IsConverted":false,"Title":"{title}","Phone":null}}]}}"#
            );
            parse_query_page(body.as_bytes(), SObject::Lead).unwrap()
        };
        let before = read("Engineer");
        let stored = before.records[0].to_lead().unwrap();
        assert!(
            is_repeat(&before.records[0], Some(&stored)),
            "the same version"
        );
        let after = read("VP Sales");
        assert_eq!(after.records[0].modstamp, before.records[0].modstamp);
        assert!(
            !is_repeat(&after.records[0], Some(&stored)),
            "an edit in the same second"
        );
    }

    #[test]
    fn bad_pages() {
        for (body, want) in [
            (&b"nope"[..], "not JSON"),
            (b"{}", "no `records`"),
            (br#"{"records":{}}"#, "no `records`"),
            (br#"{"done":false,"records":[]}"#, "no nextRecordsUrl"),
        ] {
            let e = parse_query_page(body, SObject::Lead).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
        for evil in [
            "https://evil.example/services/data/x",
            "//evil.example/services/data/x",
            "/services/data/../../x",
            "/services/data/x@evil",
            "/other/path",
        ] {
            let body = format!(r#"{{"done":false,"nextRecordsUrl":"{evil}","records":[]}}"#);
            assert!(
                matches!(
                    parse_query_page(body.as_bytes(), SObject::Lead),
                    Err(PageError::BadNextUrl(_))
                ),
                "{evil}"
            );
        }
        let empty = parse_query_page(
            br#"{"totalSize":0,"done":true,"records":[]}"#,
            SObject::Lead,
        )
        .unwrap();
        assert_eq!(empty.last_keyset(), None);
    }

    #[test]
    fn identity_and_query_fields() {
        let m = crate::config::mapping::parse_mapping(
            std::path::Path::new("mappings/salesforce.toml"),
            include_str!("../../../mappings/salesforce.toml"),
        )
        .ok();
        assert!(m.is_some());
        let f = identity_fields(SObject::Lead, m.as_ref());
        assert_eq!(f.linkedin_url, "Enrichment_LinkedIn_URL__c");
        let q = query_fields(SObject::Lead, &f, m.as_ref(), &["Industry".to_string()]).unwrap();
        assert_eq!(&q[..3], &["Id", "SystemModstamp", "IsConverted"]);
        for want in [
            "FirstName",
            "LastName",
            "Company",
            "Website",
            "Email",
            "Title",
            "Country",
            "Phone",
            "Industry",
        ] {
            assert!(q.iter().any(|x| x == want), "{want} in {q:?}");
        }
        let c = identity_fields(SObject::Contact, None);
        assert_eq!(c.company_name, "Account.Name");
        assert_eq!(c.linkedin_url, "");
        let q = query_fields(SObject::Contact, &c, None, &[]).unwrap();
        assert!(q.contains(&"Account.Name".to_string()));
        assert!(!q.contains(&"IsConverted".to_string()));
    }
}

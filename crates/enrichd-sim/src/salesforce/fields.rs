//! The Lead and Contact field tables, read from the describe fixtures
//! enrichd's tests use (`fixtures/salesforce/{lead,contact}_describe.json`,
//! embedded at build time), so the simulator's schema and the fixtures can
//! never drift apart; the Account table (the parent of `Contact.AccountId`,
//! readable only through relationship fields) from `account_fields.json` next
//! to this file, a subset of Account's standard fields in the same describe
//! shape. Parsed once per process; the strings live for the process (a
//! handful of kilobytes).

use std::sync::OnceLock;

use serde_json::Value;

use super::schema::FieldSpec;

const LEAD_DESCRIBE: &str = include_str!("../../../../fixtures/salesforce/lead_describe.json");
const CONTACT_DESCRIBE: &str =
    include_str!("../../../../fixtures/salesforce/contact_describe.json");
const ACCOUNT_FIELDS: &str = include_str!("account_fields.json");

pub(crate) fn lead_fields() -> &'static [FieldSpec] {
    static FIELDS: OnceLock<Vec<FieldSpec>> = OnceLock::new();
    FIELDS.get_or_init(|| parse(LEAD_DESCRIBE))
}

pub(crate) fn contact_fields() -> &'static [FieldSpec] {
    static FIELDS: OnceLock<Vec<FieldSpec>> = OnceLock::new();
    FIELDS.get_or_init(|| parse(CONTACT_DESCRIBE))
}

pub(crate) fn account_fields() -> &'static [FieldSpec] {
    static FIELDS: OnceLock<Vec<FieldSpec>> = OnceLock::new();
    FIELDS.get_or_init(|| parse(ACCOUNT_FIELDS))
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// The fixtures are part of this repository and checked by the tests; a
/// field that cannot be read is left out rather than stopping the process.
fn parse(describe: &str) -> Vec<FieldSpec> {
    let Ok(doc) = serde_json::from_str::<Value>(describe) else {
        return Vec::new();
    };
    let fields = doc.get("fields").and_then(Value::as_array);
    fields.into_iter().flatten().filter_map(field).collect()
}

fn field(f: &Value) -> Option<FieldSpec> {
    let text = |k: &str| f.get(k).and_then(Value::as_str).map(leak);
    let num = |k: &str| {
        f.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    let flag = |k: &str| f.get(k).and_then(Value::as_bool).unwrap_or(false);
    let picklist: Vec<(&'static str, &'static str, bool)> = f
        .get("picklistValues")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let value = p.get("value").and_then(Value::as_str)?;
            let label = p.get("label").and_then(Value::as_str).unwrap_or(value);
            let default = p
                .get("defaultValue")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Some((leak(value), leak(label), default))
        })
        .collect();
    let reference_to: Vec<&'static str> = f
        .get("referenceTo")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak)
        .collect();
    Some(FieldSpec {
        name: text("name")?,
        label: text("label").unwrap_or(""),
        ty: text("type")?,
        length: num("length"),
        byte_length: num("byteLength"),
        precision: num("precision"),
        digits: num("digits"),
        soap_type: text("soapType").unwrap_or("xsd:string"),
        updateable: flag("updateable"),
        createable: flag("createable"),
        nillable: flag("nillable"),
        custom: flag("custom"),
        calculated: flag("calculated"),
        formula: text("calculatedFormula"),
        compound: text("compoundFieldName"),
        extra_type_info: text("extraTypeInfo"),
        defaulted_on_create: flag("defaultedOnCreate"),
        filterable: flag("filterable"),
        sortable: flag("sortable"),
        groupable: flag("groupable"),
        aggregatable: flag("aggregatable"),
        id_lookup: flag("idLookup"),
        name_field: flag("nameField"),
        permissionable: flag("permissionable"),
        search_prefilterable: flag("searchPrefilterable"),
        help: text("inlineHelpText"),
        picklist: Box::leak(picklist.into_boxed_slice()),
        restricted: flag("restrictedPicklist"),
        reference_to: Box::leak(reference_to.into_boxed_slice()),
        relationship_name: text("relationshipName"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_fixture_field_is_read() {
        assert_eq!(super::lead_fields().len(), 64);
        assert_eq!(super::contact_fields().len(), 62);
        assert_eq!(super::account_fields().len(), 23);
        let status = super::lead_fields()
            .iter()
            .find(|f| f.name == "Enrichment_Status__c")
            .expect("custom status field");
        assert!(
            status.restricted && status.picklist.len() == 3,
            "{status:?}"
        );
    }
}

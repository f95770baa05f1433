//! The contact properties a mapping writes (reference/hubspot.md §3): each
//! must exist with a compatible type and be writable, by the generic rules
//! of [`crate::crm::schema`] (one set of rules for `enrichd check`, connect
//! and sync). Properties are read with `GET /crm/v3/properties/contacts`
//! ([`live_schema`]). Missing ones that are not likely typos are created in
//! the `enrichd` property group when `create_properties` is on and the app
//! has `crm.schemas.contacts.write`; otherwise the error lists every
//! problem with its mapping key and what to do.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::core::mapping::{CrmKind, FieldRole, Mapping};
use crate::crm::schema::{CrmField, CrmSchema, FieldKind, check_mapping, mapped_fields};

use super::HubSpotError;
use super::client::{HubSpotClient, Method};
use super::limits::BucketKind;

pub const GROUP: &str = "enrichd";
/// Where the contact properties are read.
pub const PROPERTIES: &str = "GET /crm/v3/properties/contacts";

/// A property as HubSpot describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    pub label: String,
    /// `type`: string, number, enumeration, bool, date, datetime, …
    pub kind: String,
    pub field_type: String,
    /// `modificationMetadata.readOnlyValue`, or calculated.
    pub read_only: bool,
    pub calculated: bool,
    pub hubspot_defined: bool,
    pub options: Vec<String>,
}

/// What `ensure` found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SchemaReport {
    pub checked: Vec<String>,
    pub created: Vec<String>,
    /// Problems nobody can fix automatically (wrong type, read-only).
    pub problems: Vec<String>,
}

/// Mapped fields with their role (value, Source, status, enriched-at) and
/// channel (empty for status and enriched-at).
pub fn mapped(mapping: &Mapping) -> Vec<(String, FieldRole, String)> {
    mapped_fields(mapping)
        .into_iter()
        .map(|m| {
            (
                m.rule.field.clone(),
                m.role,
                m.channel.map(|c| c.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

/// The definition enrichd creates for a missing property.
pub fn definition(name: &str, role: FieldRole, channel: &str) -> Value {
    let label_channel = channel.replace('_', " ");
    match role {
        FieldRole::Value => {
            json!({"groupName": GROUP, "name": name, "label": format!("enrichd: {label_channel}"),
            "type": "string", "fieldType": "text", "formField": false,
            "description": format!("The {label_channel} enrichd found (see its Source property)")})
        }
        FieldRole::Source => {
            json!({"groupName": GROUP, "name": name, "label": format!("enrichd: {label_channel} source"),
            "type": "string", "fieldType": "text", "formField": false,
            "description": format!("Which provider supplied the {label_channel}")})
        }
        FieldRole::Status => {
            json!({"groupName": GROUP, "name": name, "label": "enrichd: enrichment status",
            "type": "enumeration", "fieldType": "select", "formField": false,
            "description": "Full: every configured channel found; Partial: some; Empty: none",
            "options": [
                {"label": "Full", "value": "Full", "displayOrder": 0, "hidden": false},
                {"label": "Partial", "value": "Partial", "displayOrder": 1, "hidden": false},
                {"label": "Empty", "value": "Empty", "displayOrder": 2, "hidden": false}]})
        }
        FieldRole::EnrichedAt => {
            json!({"groupName": GROUP, "name": name, "label": "enrichd: enriched at",
            "type": "datetime", "fieldType": "date", "formField": false,
            "description": "When enrichd last wrote a value"})
        }
    }
}

/// The contact properties in a `GET /crm/v3/properties/contacts` answer.
pub fn parse_properties(body: &Value) -> BTreeMap<String, Property> {
    let mut out = BTreeMap::new();
    for p in body
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let b = |k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
        let name = s("name");
        if name.is_empty() {
            continue;
        }
        let field_type = s("fieldType");
        let calculated = b("calculated") || field_type == "calculation_equation";
        out.insert(
            name.clone(),
            Property {
                name,
                label: s("label"),
                kind: s("type"),
                field_type,
                read_only: p
                    .pointer("/modificationMetadata/readOnlyValue")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    || calculated,
                calculated,
                hubspot_defined: b("hubspotDefined"),
                options: p
                    .get("options")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o.get("value").and_then(Value::as_str).map(String::from))
                    .collect(),
            },
        );
    }
    out
}

impl Property {
    /// The property in CRM-neutral terms.
    pub fn to_field(&self) -> CrmField {
        let kind = match (self.kind.as_str(), self.field_type.as_str()) {
            (_, "calculation_equation") => FieldKind::Other(format!("{}/calculation", self.kind)),
            ("string", "text") => FieldKind::Text,
            ("string", "textarea") => FieldKind::TextArea,
            ("string", "phonenumber") | ("phone_number", _) => FieldKind::Phone,
            ("enumeration", "booleancheckbox") | ("bool", _) => FieldKind::Boolean,
            ("enumeration", _) => FieldKind::Enumeration,
            ("datetime", _) => FieldKind::DateTime,
            ("date", _) => FieldKind::Date,
            ("number", _) => FieldKind::Number,
            (k, t) => FieldKind::Other(format!("{k}/{t}")),
        };
        CrmField {
            name: self.name.clone(),
            label: self.label.clone(),
            kind,
            crm_type: format!("{}/{}", self.kind, self.field_type),
            length: None,
            updateable: !self.read_only,
            calculated: self.calculated,
            nillable: true,
            custom: !self.hubspot_defined,
            options: self.options.clone(),
            restricted: self.kind == "enumeration",
        }
    }
}

/// The portal's contact properties as a [`CrmSchema`].
pub fn schema_from(properties: &BTreeMap<String, Property>) -> CrmSchema {
    CrmSchema::new(
        CrmKind::Hubspot,
        "contacts",
        PROPERTIES,
        properties.values().map(Property::to_field),
    )
}

/// Reads the portal's contact properties (a GET: no write).
pub async fn properties(
    client: &HubSpotClient,
) -> Result<BTreeMap<String, Property>, HubSpotError> {
    let a = client
        .call(
            BucketKind::General,
            Method::Get,
            "/crm/v3/properties/contacts",
            None,
        )
        .await?;
    Ok(parse_properties(&a.body))
}

/// The portal's contact schema, read live (a GET: no write). A missing
/// `crm.schemas.contacts.read` scope is a [`HubSpotError::Schema`] saying so.
pub async fn live_schema(client: &HubSpotClient) -> Result<CrmSchema, HubSpotError> {
    match properties(client).await {
        Ok(p) => Ok(schema_from(&p)),
        Err(HubSpotError::MissingScopes { .. }) => Err(HubSpotError::Schema(
            "enrichd cannot read the contact property definitions (GET /crm/v3/properties/contacts): the app lacks the scope crm.schemas.contacts.read. Add it to the app and run `enrichd connect hubspot` again".into(),
        )),
        Err(e) => Err(e),
    }
}

/// Checks every mapped property with the generic rules
/// ([`crate::crm::schema::check_mapping`]) and, when the check finds no
/// problem, creates the missing ones (if `create`). A mapping with a problem
/// creates nothing.
pub async fn ensure(
    client: &HubSpotClient,
    mapping: &Mapping,
    create: bool,
) -> Result<SchemaReport, HubSpotError> {
    let schema = live_schema(client).await?;
    let check = check_mapping(mapping, &client.settings.mapping_file, &schema, create);
    let mut report = SchemaReport {
        checked: check.checked.clone(),
        ..SchemaReport::default()
    };
    if !check.problems.is_empty() {
        report.problems = check.problems.iter().map(ToString::to_string).collect();
        return Err(HubSpotError::Schema(format!(
            "{} problem{} with the mapped contact properties (run `enrichd check` to see them all):\n  {}",
            report.problems.len(),
            if report.problems.len() == 1 { "" } else { "s" },
            report.problems.join("\n  ")
        )));
    }
    if check.to_create.is_empty() {
        return Ok(report);
    }
    let missing: Vec<(String, FieldRole, String)> = mapped(mapping)
        .into_iter()
        .filter(|(field, _, _)| check.to_create.contains(field))
        .collect();
    let names = check.to_create.join(", ");
    let group = json!({"name": GROUP, "label": "enrichd", "displayOrder": -1});
    match client
        .call(
            BucketKind::General,
            Method::Post,
            "/crm/v3/properties/contacts/groups",
            Some(&group),
        )
        .await
    {
        Ok(_) | Err(HubSpotError::Api { status: 409, .. }) => {}
        Err(HubSpotError::MissingScopes { .. }) => {
            return Err(HubSpotError::Schema(format!(
                "missing contact properties: {names}; enrichd may not create them: the app lacks the scope crm.schemas.contacts.write. Add the scope (then `enrichd connect hubspot`), or create the properties by hand in HubSpot (Settings → Properties)"
            )));
        }
        Err(e) => return Err(e),
    }
    for (field, role, channel) in &missing {
        let def = definition(field, *role, channel);
        match client
            .call(
                BucketKind::General,
                Method::Post,
                "/crm/v3/properties/contacts",
                Some(&def),
            )
            .await
        {
            Ok(_) => report.created.push(field.clone()),
            Err(HubSpotError::Api { status: 409, .. }) => {}
            Err(HubSpotError::MissingScopes { .. }) => {
                return Err(HubSpotError::Schema(format!(
                    "missing contact properties: {names}; the app lacks the scope crm.schemas.contacts.write to create them"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::mapping::parse_mapping;
    use crate::crm::schema::ProblemKind;

    const HUBSPOT_MAPPING: &str = include_str!("../../../mappings/hubspot.toml");

    fn prop(name: &str, label: &str, kind: &str, field_type: &str, read_only: bool) -> Value {
        json!({"name": name, "label": label, "type": kind, "fieldType": field_type,
               "options": [], "calculated": false, "hubspotDefined": true,
               "modificationMetadata": {"archivable": false, "readOnlyDefinition": true,
                                        "readOnlyValue": read_only}})
    }

    fn standard() -> Vec<Value> {
        vec![
            prop("email", "Email", "string", "text", false),
            prop("phone", "Phone Number", "string", "phonenumber", false),
            prop("hs_object_id", "Record ID", "number", "number", true),
            prop("createdate", "Create Date", "datetime", "date", true),
            prop("linkedin_url", "LinkedIn URL", "string", "text", false),
            prop("birthday", "Birthday", "date", "date", false),
        ]
    }

    fn schema(results: Vec<Value>) -> CrmSchema {
        schema_from(&parse_properties(&json!({ "results": results })))
    }

    fn mapping(text: &str) -> Mapping {
        match parse_mapping(Path::new("mappings/hubspot.toml"), text) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn properties_become_a_schema_with_read_only_and_kinds() {
        let s = schema(standard());
        assert_eq!(s.endpoint, PROPERTIES);
        let id = s.get("hs_object_id").expect("hs_object_id");
        assert!(!id.updateable);
        assert_eq!(id.kind, FieldKind::Number);
        assert_eq!(
            s.get("phone").map(|f| f.kind.clone()),
            Some(FieldKind::Phone)
        );
        assert!(s.get("email").is_some_and(|f| f.updateable && !f.custom));
        assert!(s.get("Email").is_none(), "HubSpot names are exact");
    }

    #[test]
    fn the_properties_enrichd_creates_pass_the_check() {
        let m = mapping(HUBSPOT_MAPPING);
        let mut results = standard();
        for (field, role, channel) in mapped(&m) {
            let mut def = definition(&field, role, &channel);
            def["modificationMetadata"] = json!({"readOnlyValue": false});
            results.push(def);
        }
        let c = check_mapping(
            &m,
            Path::new("mappings/hubspot.toml"),
            &schema(results),
            false,
        );
        assert!(c.is_ok(), "{:#?}", c.problems);
        assert!(c.to_create.is_empty());
    }

    #[test]
    fn the_shipped_mapping_on_a_fresh_portal_creates_everything() {
        let m = mapping(HUBSPOT_MAPPING);
        let c = check_mapping(
            &m,
            Path::new("mappings/hubspot.toml"),
            &schema(standard()),
            true,
        );
        assert!(c.is_ok(), "{:#?}", c.problems);
        assert_eq!(c.to_create.len(), m.fields().len());
    }

    #[test]
    fn read_only_typo_and_date_are_problems_with_keys() {
        let m = mapping(
            "crm = \"hubspot\"\nobject = \"contacts\"\n[channels.linkedin_url]\nfield = \"linkedin_ulr\"\nsource_field = \"enrichment_linkedin_url_source\"\n[channels.phone]\nfield = \"phone\"\nsource_field = \"hs_object_id\"\n[enriched_at]\nfield = \"birthday\"\n",
        );
        let c = check_mapping(
            &m,
            Path::new("mappings/hubspot.toml"),
            &schema(standard()),
            true,
        );
        let got: Vec<(&str, &ProblemKind)> = c
            .problems
            .iter()
            .map(|p| (p.key.as_str(), &p.problem))
            .collect();
        assert_eq!(got.len(), 3, "{:#?}", c.problems);
        assert_eq!(got[0].0, "channels.phone.source_field");
        assert_eq!(got[0].1, &ProblemKind::ReadOnly { calculated: false });
        assert_eq!(got[1].0, "channels.linkedin_url.field");
        assert_eq!(got[1].1, &ProblemKind::Missing { likely_typo: true });
        assert_eq!(c.problems[1].closest, ["linkedin_url"]);
        assert_eq!(got[2].0, "enriched_at.field");
        assert!(matches!(got[2].1, ProblemKind::WrongType { .. }));
        assert_eq!(c.to_create, ["enrichment_linkedin_url_source"]);
    }

    #[test]
    fn an_enumeration_source_must_list_the_providers() {
        let mut src = prop(
            "lead_source_provider",
            "Source",
            "enumeration",
            "select",
            false,
        );
        src["options"] = json!([{"label": "Apollo", "value": "apollo"}]);
        let mut results = standard();
        results.push(src);
        let m = mapping(
            "crm = \"hubspot\"\nobject = \"contacts\"\n[channels.work_email]\nfield = \"email\"\nsource_field = \"lead_source_provider\"\npolicy = \"if_empty\"\n",
        );
        let opts = crate::crm::schema::CheckOptions {
            can_create: false,
            providers: vec!["apollo".into(), "hunter".into()],
        };
        let c = crate::crm::schema::check_mapping_with(
            &m,
            Path::new("mappings/hubspot.toml"),
            &schema(results),
            &opts,
        );
        assert_eq!(c.problems.len(), 1, "{:#?}", c.problems);
        assert_eq!(
            c.problems[0].problem,
            ProblemKind::MissingOptions {
                missing: vec!["hunter".into()]
            }
        );
        assert!(c.problems[0].hint.contains("Settings → Properties"));
    }
}

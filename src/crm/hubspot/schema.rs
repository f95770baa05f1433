//! The contact properties a mapping writes (reference/hubspot.md §3): each
//! must exist with a compatible type and be writable. Missing ones are
//! created in the `enrichd` property group when the app has
//! `crm.schemas.contacts.write`; otherwise the error lists what is missing
//! and the scope needed.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::core::mapping::{FieldRole, Mapping};

use super::HubSpotError;
use super::client::{HubSpotClient, Method};
use super::limits::BucketKind;

pub const GROUP: &str = "enrichd";

/// A property as HubSpot describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    pub kind: String,
    pub field_type: String,
    pub read_only: bool,
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

/// Mapped fields with their role (value, Source, status, enriched-at).
pub fn mapped(mapping: &Mapping) -> Vec<(String, FieldRole, String)> {
    let mut out = Vec::new();
    for (ch, rule) in &mapping.channels {
        out.push((rule.value.field.clone(), FieldRole::Value, ch.to_string()));
        if let Some(s) = &rule.source {
            out.push((s.field.clone(), FieldRole::Source, ch.to_string()));
        }
    }
    if let Some(s) = &mapping.status {
        out.push((s.field.clone(), FieldRole::Status, String::new()));
    }
    if let Some(s) = &mapping.enriched_at {
        out.push((s.field.clone(), FieldRole::EnrichedAt, String::new()));
    }
    out
}

/// Whether a property of `kind` can hold what enrichd writes in `role`.
pub fn compatible(role: FieldRole, p: &Property) -> Result<(), String> {
    let ok = match role {
        FieldRole::Value => p.kind == "string" || p.kind == "phone_number",
        FieldRole::Source => p.kind == "string" || p.kind == "enumeration",
        FieldRole::Status => {
            p.kind == "string"
                || p.kind == "enumeration"
                    && ["Full", "Partial", "Empty"]
                        .iter()
                        .all(|o| p.options.iter().any(|x| x == o))
        }
        FieldRole::EnrichedAt => {
            matches!(p.kind.as_str(), "datetime" | "date" | "string" | "number")
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "property `{}` is of type {}/{} but enrichd writes {} there ({})",
            p.name,
            p.kind,
            p.field_type,
            role.as_str(),
            match role {
                FieldRole::Value => "needs a string (text) property",
                FieldRole::Source => "needs a string or an enumeration listing every provider",
                FieldRole::Status =>
                    "needs a string, or an enumeration with options Full, Partial, Empty",
                FieldRole::EnrichedAt => "needs a datetime property",
            }
        ))
    }
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

/// Reads the portal's contact properties.
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
    let mut out = BTreeMap::new();
    for p in a
        .body
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let name = s("name");
        if name.is_empty() {
            continue;
        }
        out.insert(
            name.clone(),
            Property {
                name,
                kind: s("type"),
                field_type: s("fieldType"),
                read_only: p
                    .pointer("/modificationMetadata/readOnlyValue")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    || p.get("calculated")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
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
    Ok(out)
}

/// Checks every mapped property and creates the missing ones (if `create`).
pub async fn ensure(
    client: &HubSpotClient,
    mapping: &Mapping,
    create: bool,
) -> Result<SchemaReport, HubSpotError> {
    let existing = match properties(client).await {
        Err(HubSpotError::MissingScopes { .. }) => {
            return Err(HubSpotError::Schema(
                "enrichd cannot read the contact property definitions: the app lacks the scope crm.schemas.contacts.read. Add it to the app and run `enrichd connect hubspot` again".into(),
            ));
        }
        other => other?,
    };
    let mut report = SchemaReport::default();
    let mut missing = Vec::new();
    for (field, role, channel) in mapped(mapping) {
        report.checked.push(field.clone());
        match existing.get(&field) {
            Some(p) => {
                if let Err(m) = compatible(role, p) {
                    report.problems.push(m);
                } else if p.read_only {
                    report.problems.push(format!(
                        "property `{field}` is read-only in HubSpot; map the {} to a writable property",
                        role.as_str()
                    ));
                }
            }
            None => missing.push((field, role, channel)),
        }
    }
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|m| m.0.clone()).collect();
        if !create {
            return Err(HubSpotError::Schema(format!(
                "missing contact properties: {}; create them in HubSpot (Settings → Properties) or set create_properties = true with the scope crm.schemas.contacts.write",
                names.join(", ")
            )));
        }
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
                    "missing contact properties: {}; enrichd may not create them: the app lacks the scope crm.schemas.contacts.write. Add the scope (then `enrichd connect hubspot`) or create the properties by hand",
                    names.join(", ")
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
                        "missing contact properties: {}; the app lacks the scope crm.schemas.contacts.write to create them",
                        names.join(", ")
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }
    if !report.problems.is_empty() {
        return Err(HubSpotError::Schema(report.problems.join("; ")));
    }
    Ok(report)
}

//! A bulk job's filter ([`FilterRule`]s, the shape of HubSpot's search,
//! which the admin API takes for every CRM) as a SOQL condition over a
//! Salesforce object. Pure: the object's describe comes in as a
//! [`CrmSchema`], nothing here sends a request.
//!
//! | operator | SOQL |
//! |---|---|
//! | `EQ` `NEQ` `LT` `LTE` `GT` `GTE` | `F = v`, `F != v`, `F < v`, … |
//! | `BETWEEN` | `(F >= v AND F <= high)` |
//! | `IN` / `NOT_IN` | `F IN (v, …)` / `F NOT IN (v, …)` |
//! | `HAS_PROPERTY` / `NOT_HAS_PROPERTY` | `F != null` / `F = null` |
//! | `CONTAINS_TOKEN` / `NOT_CONTAINS_TOKEN` | refused: HubSpot's token search has no SOQL equivalent |
//!
//! A literal is written as the field's type needs it: strings quoted with
//! SOQL's escapes ([`soql::quote`]), numbers and booleans bare, dates
//! `YYYY-MM-DD`, datetimes ISO-8601 in UTC (a HubSpot-style value in epoch
//! milliseconds is accepted for both). Field names are checked against
//! API-name syntax before the describe is consulted and written in the
//! describe's spelling, so no input changes the query's shape.

use crate::crm::salesforce::SObject;
use crate::crm::salesforce::soql;
use crate::crm::schema::{CrmField, CrmSchema, FieldKind};

use super::worker::FilterRule;

/// The operators a Salesforce filter takes.
pub const OPERATORS: [&str; 11] = [
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
];

/// Salesforce types a SOQL WHERE cannot compare.
const NOT_FILTERABLE: [&str; 5] = ["address", "location", "base64", "json", "anytype"];

/// Long text areas (over 255 characters) cannot be filtered in SOQL.
const MAX_FILTERABLE_TEXTAREA: u32 = 255;

/// Checks that need no describe: the operator and the field name of rule
/// `index`. The error says which rule and what to use instead.
pub fn check_rule(index: usize, rule: &FilterRule) -> Result<(), String> {
    let at = format!("`filter[{index}]`");
    if !soql::is_field_name(&rule.property) || rule.property.contains('.') {
        return Err(format!(
            "{at}.property `{}` is not a Salesforce field API name (letters, digits and underscores, e.g. LeadSource or Industry__c); parent fields such as Account.Name cannot be filtered on",
            rule.property.escape_debug()
        ));
    }
    if !OPERATORS.contains(&rule.operator.as_str()) {
        return Err(format!(
            "{at}.operator {} cannot be expressed in SOQL for Salesforce (it is HubSpot's token search); use one of {}",
            rule.operator,
            OPERATORS.join(", ")
        ));
    }
    for v in rule
        .value
        .iter()
        .chain(rule.high_value.iter())
        .chain(rule.values.iter().flatten())
    {
        soql::escape(v).map_err(|e| format!("{at}: {e}"))?;
    }
    Ok(())
}

/// Why a filter does not apply to an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// The object has no such field (with the closest names it has).
    NoField { message: String },
    /// The field exists but the rule cannot be expressed on it.
    Bad(String),
}

impl RuleError {
    pub fn message(&self) -> &str {
        match self {
            RuleError::NoField { message } | RuleError::Bad(message) => message,
        }
    }
}

/// The SOQL condition (the rules ANDed) of `rules` on `object`, whose
/// describe is `schema`.
pub fn condition(
    object: SObject,
    schema: &CrmSchema,
    rules: &[FilterRule],
) -> Result<String, RuleError> {
    let mut parts = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        check_rule(i, rule).map_err(RuleError::Bad)?;
        let at = format!("`filter[{i}]`");
        let Some(field) = schema.get(&rule.property) else {
            let close = crate::crm::schema::closest(&rule.property, schema, 3);
            return Err(RuleError::NoField {
                message: format!(
                    "{at}.property `{}` is not a field of {object}{} (field API names, as in Setup → Object Manager → {object} → Fields & Relationships)",
                    rule.property,
                    if close.is_empty() {
                        String::new()
                    } else {
                        format!("; closest: {}", close.join(", "))
                    }
                ),
            });
        };
        parts.push(rule_condition(&at, object, field, rule).map_err(RuleError::Bad)?);
    }
    Ok(parts.join(" AND "))
}

fn rule_condition(
    at: &str,
    object: SObject,
    field: &CrmField,
    rule: &FilterRule,
) -> Result<String, String> {
    let name = &field.name;
    let ty = field.crm_type.to_ascii_lowercase();
    if NOT_FILTERABLE.contains(&ty.as_str())
        || (field.kind == FieldKind::TextArea
            && field.length.is_some_and(|l| l > MAX_FILTERABLE_TEXTAREA))
    {
        return Err(format!(
            "{at}: {object}.{name} is a {} field, which SOQL cannot filter on; filter on another field",
            field.crm_type
        ));
    }
    let op = rule.operator.as_str();
    if field.kind == FieldKind::Boolean
        && !matches!(
            op,
            "EQ" | "NEQ" | "IN" | "NOT_IN" | "HAS_PROPERTY" | "NOT_HAS_PROPERTY"
        )
    {
        return Err(format!(
            "{at}: {object}.{name} is a checkbox (true or false), which {op} cannot compare; use EQ or NEQ"
        ));
    }
    let lit = |key: &str, v: Option<&String>| -> Result<String, String> {
        let v = v.ok_or_else(|| format!("{at}: operator {op} needs `{key}`"))?;
        literal(field, v)
            .map_err(|why| format!("{at}.{key}: {why} ({object}.{name} is {})", a_type(field)))
    };
    Ok(match op {
        "HAS_PROPERTY" => format!("{name} != null"),
        "NOT_HAS_PROPERTY" => format!("{name} = null"),
        "IN" | "NOT_IN" => {
            let values = rule
                .values
                .as_ref()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{at}: operator {op} needs `values` (a list)"))?;
            let mut list = Vec::with_capacity(values.len());
            for (j, v) in values.iter().enumerate() {
                list.push(literal(field, v).map_err(|why| {
                    format!(
                        "{at}.values[{j}]: {why} ({object}.{name} is {})",
                        a_type(field)
                    )
                })?);
            }
            let not = if op == "NOT_IN" { "NOT " } else { "" };
            format!("{name} {not}IN ({})", list.join(", "))
        }
        "BETWEEN" => format!(
            "({name} >= {} AND {name} <= {})",
            lit("value", rule.value.as_ref())?,
            lit("high_value", rule.high_value.as_ref())?
        ),
        _ => {
            let sym = match op {
                "EQ" => "=",
                "NEQ" => "!=",
                "LT" => "<",
                "LTE" => "<=",
                "GT" => ">",
                "GTE" => ">=",
                other => {
                    return Err(format!(
                        "{at}.operator {other} cannot be expressed in SOQL; use one of {}",
                        OPERATORS.join(", ")
                    ));
                }
            };
            format!("{name} {sym} {}", lit("value", rule.value.as_ref())?)
        }
    })
}

/// "a number field", for messages.
fn a_type(field: &CrmField) -> String {
    match field.kind {
        FieldKind::Number => "a number field".into(),
        FieldKind::Boolean => "a checkbox (true or false)".into(),
        FieldKind::Date => "a date field (YYYY-MM-DD)".into(),
        FieldKind::DateTime => "a date/time field (e.g. 2026-05-01T12:00:00Z)".into(),
        _ => format!("a {} field", field.crm_type),
    }
}

/// `v` as a SOQL literal for `field`.
fn literal(field: &CrmField, v: &str) -> Result<String, String> {
    let t = v.trim();
    match field.kind {
        FieldKind::Number => t
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(|n| n.to_string())
            .ok_or_else(|| format!("`{}` is not a number", v.escape_debug())),
        FieldKind::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" => Ok("true".into()),
            "false" => Ok("false".into()),
            _ => Err(format!("`{}` is not true or false", v.escape_debug())),
        },
        FieldKind::Date => {
            if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
                return Ok(d.format("%Y-%m-%d").to_string());
            }
            t.parse::<i64>()
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .ok_or_else(|| {
                    format!(
                        "`{}` is not a date (YYYY-MM-DD, or epoch milliseconds)",
                        v.escape_debug()
                    )
                })
        }
        FieldKind::DateTime => {
            let ms = chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.timestamp_millis())
                .or_else(|| t.parse::<i64>().ok());
            ms.and_then(|ms| soql::datetime(ms).ok()).ok_or_else(|| {
                format!(
                    "`{}` is not a date and time (ISO-8601 such as 2026-05-01T12:00:00Z, or epoch milliseconds)",
                    v.escape_debug()
                )
            })
        }
        _ => soql::quote(v).map_err(|e| e.to_string()),
    }
}

/// The filter over a workspace's objects: the condition per object it
/// applies to, and the objects it does not apply to with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub queries: Vec<(SObject, String)>,
    pub skipped: Vec<(SObject, String)>,
}

/// Plans `rules` over `objects` (each with its describe): an object that
/// lacks a filtered field is skipped (and said so); a rule that cannot be
/// expressed on a field that exists, or a filter that applies to no
/// object, is an error.
pub fn plan(objects: &[(SObject, &CrmSchema)], rules: &[FilterRule]) -> Result<Plan, String> {
    let mut out = Plan::default();
    for (object, schema) in objects {
        match condition(*object, schema, rules) {
            Ok(c) => out.queries.push((*object, c)),
            Err(RuleError::NoField { message }) => out.skipped.push((*object, message)),
            Err(RuleError::Bad(m)) => return Err(m),
        }
    }
    if out.queries.is_empty() {
        let why: Vec<&str> = out.skipped.iter().map(|(_, m)| m.as_str()).collect();
        return Err(if why.is_empty() {
            "the workspace syncs no Salesforce object to filter".into()
        } else {
            why.join("; ")
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> CrmSchema {
        let describe = json!({
            "name": "Lead",
            "fields": [
                {"name": "LeadSource", "label": "Lead Source", "type": "picklist", "length": 255},
                {"name": "Company", "label": "Company", "type": "string", "length": 255},
                {"name": "NumberOfEmployees", "label": "Employees", "type": "int"},
                {"name": "HasOptedOutOfEmail", "label": "Email Opt Out", "type": "boolean"},
                {"name": "CreatedDate", "label": "Created", "type": "datetime"},
                {"name": "Birth__c", "label": "Birth", "type": "date"},
                {"name": "Address", "label": "Address", "type": "address"},
                {"name": "Notes__c", "label": "Notes", "type": "textarea", "length": 32768},
            ]
        });
        crate::crm::schema::from_salesforce_describe(&describe).unwrap_or_else(|e| panic!("{e}"))
    }

    fn rule(property: &str, operator: &str, value: Option<&str>) -> FilterRule {
        FilterRule {
            property: property.into(),
            operator: operator.into(),
            value: value.map(String::from),
            high_value: None,
            values: None,
        }
    }

    #[test]
    fn rules_become_typed_escaped_soql() {
        let s = schema();
        let mut between = rule("numberofemployees", "BETWEEN", Some("10"));
        between.high_value = Some("50".into());
        let mut in_ = rule("LeadSource", "IN", None);
        in_.values = Some(vec!["Web".into(), "O'Brien\\".into()]);
        let rules = vec![
            rule("Company", "EQ", Some("Acme' OR Name != '")),
            between,
            in_,
            rule("HasOptedOutOfEmail", "NEQ", Some("TRUE")),
            rule("CreatedDate", "GTE", Some("2026-05-01T12:00:00+02:00")),
            rule("Birth__c", "LT", Some("2000-01-31")),
            rule("Company", "NOT_HAS_PROPERTY", None),
        ];
        let c = condition(SObject::Lead, &s, &rules).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            c,
            "Company = 'Acme\\' OR Name != \\'' AND (NumberOfEmployees >= 10 AND NumberOfEmployees <= 50) \
             AND LeadSource IN ('Web', 'O\\'Brien\\\\') AND HasOptedOutOfEmail != true \
             AND CreatedDate >= 2026-05-01T10:00:00Z AND Birth__c < 2000-01-31 AND Company = null"
        );
    }

    #[test]
    fn what_soql_cannot_express_is_refused_with_where() {
        let s = schema();
        for (r, says) in [
            (
                rule("Company", "CONTAINS_TOKEN", Some("acme")),
                "`filter[0]`.operator CONTAINS_TOKEN cannot be expressed in SOQL",
            ),
            (
                rule("Account.Name", "EQ", Some("x")),
                "parent fields such as Account.Name",
            ),
            (
                rule("lifecyclestage", "EQ", Some("lead")),
                "not a field of Lead",
            ),
            (
                rule("NumberOfEmployees", "GT", Some("many")),
                "`filter[0]`.value: `many` is not a number (Lead.NumberOfEmployees is a number field)",
            ),
            (
                rule("HasOptedOutOfEmail", "GT", Some("true")),
                "use EQ or NEQ",
            ),
            (
                rule("Address", "HAS_PROPERTY", None),
                "SOQL cannot filter on",
            ),
            (rule("Notes__c", "EQ", Some("x")), "SOQL cannot filter on"),
            (rule("Company", "EQ", Some("a\u{1}b")), "control character"),
        ] {
            let e = condition(SObject::Lead, &s, &[r])
                .err()
                .map(|e| e.message().to_string());
            let e = e.unwrap_or_default();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_plan_skips_objects_without_the_field_and_fails_when_none_is_left() {
        let lead = schema();
        let contact = crate::crm::schema::from_salesforce_describe(&json!({
            "name": "Contact",
            "fields": [{"name": "LeadSource", "label": "Lead Source", "type": "picklist"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let objects = [(SObject::Lead, &lead), (SObject::Contact, &contact)];
        let p = plan(&objects, &[rule("Company", "EQ", Some("Acme"))]).unwrap_or_default();
        assert_eq!(
            p.queries,
            vec![(SObject::Lead, "Company = 'Acme'".to_string())]
        );
        assert_eq!(p.skipped.len(), 1);
        let both = plan(&objects, &[rule("LeadSource", "EQ", Some("Web"))]).unwrap_or_default();
        assert_eq!(both.queries.len(), 2);
        let e = plan(&objects, &[rule("Nope__c", "EQ", Some("x"))])
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("not a field of Lead") && e.contains("not a field of Contact"),
            "{e}"
        );
    }
}

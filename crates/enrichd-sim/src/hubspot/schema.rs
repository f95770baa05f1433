//! Property definitions and groups (reference §3): the HubSpot-defined contact and company
//! properties enrichd uses, the seeded custom ones, and validation of new definitions.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::time::iso_ms;

/// How values of a property are interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Number,
    Datetime,
    Date,
    Enum,
    Bool,
}

impl Kind {
    /// Compared numerically in search (datetimes as epoch ms).
    pub(crate) fn numeric(self) -> bool {
        matches!(self, Kind::Number | Kind::Datetime | Kind::Date)
    }
}

/// Properties whose value is computed from the record rather than stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    ObjectId,
    Created,
    Modified,
    AssocCompany,
}

/// One option of an enumeration property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyOption {
    pub label: String,
    pub value: String,
    pub display_order: i64,
    pub hidden: bool,
}

/// A property definition as the simulator holds it (see [`HubSpotSim::property`](super::HubSpotSim::property)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyView {
    pub name: String,
    pub label: String,
    /// `string`, `number`, `enumeration`, `bool`, `date`, `datetime`, `phone_number`.
    pub property_type: String,
    pub field_type: String,
    pub group_name: String,
    pub description: String,
    pub options: Vec<PropertyOption>,
    pub display_order: i64,
    pub hidden: bool,
    pub form_field: bool,
    pub has_unique_value: bool,
    pub hubspot_defined: bool,
    pub read_only_value: bool,
    pub read_only_definition: bool,
    /// Optional creation fields the client sent (`textDisplayHint`, `dataSensitivity`, …).
    pub extra: BTreeMapJson,
}

/// Extra JSON fields of a property, by name.
pub type BTreeMapJson = std::collections::BTreeMap<String, Value>;

#[derive(Clone, Debug)]
pub(crate) struct PropDef {
    pub name: String,
    pub label: String,
    pub ptype: String,
    pub field_type: String,
    pub group: String,
    pub description: String,
    pub options: Vec<PropertyOption>,
    pub display_order: i64,
    pub hidden: bool,
    pub form_field: bool,
    pub has_unique_value: bool,
    pub hubspot_defined: bool,
    pub read_only_value: bool,
    pub read_only_definition: bool,
    pub archivable: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub kind: Kind,
    pub special: Option<Special>,
    pub extra: Map<String, Value>,
}

/// Optional creation fields echoed back as given.
const EXTRA_FIELDS: &[&str] = &[
    "textDisplayHint",
    "numberDisplayHint",
    "showCurrencySymbol",
    "dataSensitivity",
    "referencedObjectType",
    "currencyPropertyName",
    "calculationFormula",
];

impl PropDef {
    pub(crate) fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("updatedAt".into(), json!(iso_ms(self.updated_ms)));
        m.insert("createdAt".into(), json!(iso_ms(self.created_ms)));
        m.insert("name".into(), json!(self.name));
        m.insert("label".into(), json!(self.label));
        m.insert("type".into(), json!(self.ptype));
        m.insert("fieldType".into(), json!(self.field_type));
        m.insert("description".into(), json!(self.description));
        m.insert("groupName".into(), json!(self.group));
        let options: Vec<Value> = self
            .options
            .iter()
            .map(|o| {
                json!({"label": o.label, "value": o.value, "displayOrder": o.display_order,
                       "hidden": o.hidden})
            })
            .collect();
        m.insert("options".into(), Value::Array(options));
        m.insert("displayOrder".into(), json!(self.display_order));
        m.insert("calculated".into(), json!(false));
        m.insert("externalOptions".into(), json!(false));
        m.insert("hasUniqueValue".into(), json!(self.has_unique_value));
        m.insert("hidden".into(), json!(self.hidden));
        if self.hubspot_defined {
            m.insert("hubspotDefined".into(), json!(true));
        }
        m.insert(
            "modificationMetadata".into(),
            json!({"archivable": self.archivable, "readOnlyDefinition": self.read_only_definition,
                   "readOnlyValue": self.read_only_value}),
        );
        m.insert("formField".into(), json!(self.form_field));
        if !self.extra.contains_key("dataSensitivity") {
            m.insert("dataSensitivity".into(), json!("non_sensitive"));
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        m.insert("archived".into(), json!(false));
        Value::Object(m)
    }

    pub(crate) fn view(&self) -> PropertyView {
        PropertyView {
            name: self.name.clone(),
            label: self.label.clone(),
            property_type: self.ptype.clone(),
            field_type: self.field_type.clone(),
            group_name: self.group.clone(),
            description: self.description.clone(),
            options: self.options.clone(),
            display_order: self.display_order,
            hidden: self.hidden,
            form_field: self.form_field,
            has_unique_value: self.has_unique_value,
            hubspot_defined: self.hubspot_defined,
            read_only_value: self.read_only_value,
            read_only_definition: self.read_only_definition,
            extra: self.extra.clone().into_iter().collect(),
        }
    }

    /// Multi-valued enumeration (values separated by `;`).
    pub(crate) fn multi(&self) -> bool {
        self.kind == Kind::Enum && self.field_type == "checkbox"
    }
}

/// A property group.
#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub name: String,
    pub label: String,
    pub display_order: i64,
}

impl Group {
    pub(crate) fn json(&self) -> Value {
        json!({"name": self.name, "label": self.label, "displayOrder": self.display_order,
               "archived": false})
    }
}

/// The properties and groups of one object type.
#[derive(Clone, Debug)]
pub(crate) struct Schema {
    pub defs: Vec<PropDef>,
    by_name: HashMap<String, u16>,
    pub groups: Vec<Group>,
}

/// When HubSpot "created" its own properties (2019-08-06T02:41:52.261Z).
const HUBSPOT_EPOCH_MS: i64 = 1_565_059_312_261;

struct D {
    name: &'static str,
    label: &'static str,
    ptype: &'static str,
    field_type: &'static str,
    description: &'static str,
    special: Option<Special>,
    read_only: bool,
    custom: bool,
}

const fn d(
    name: &'static str,
    label: &'static str,
    ptype: &'static str,
    field_type: &'static str,
    description: &'static str,
) -> D {
    D {
        name,
        label,
        ptype,
        field_type,
        description,
        special: None,
        read_only: false,
        custom: false,
    }
}

const fn ro(mut x: D, special: Option<Special>) -> D {
    x.read_only = true;
    x.special = special;
    x
}

const fn custom(mut x: D) -> D {
    x.custom = true;
    x
}

const CONTACT_PROPS: &[D] = &[
    d(
        "firstname",
        "First Name",
        "string",
        "text",
        "A contact's first name",
    ),
    d(
        "lastname",
        "Last Name",
        "string",
        "text",
        "A contact's last name",
    ),
    d(
        "email",
        "Email",
        "string",
        "text",
        "A contact's email address",
    ),
    d(
        "phone",
        "Phone Number",
        "string",
        "phonenumber",
        "A contact's primary phone number",
    ),
    d(
        "mobilephone",
        "Mobile Phone Number",
        "string",
        "phonenumber",
        "A contact's mobile phone number",
    ),
    d(
        "company",
        "Company Name",
        "string",
        "text",
        "Name of the contact's company. This can be set independently from the name property on the contact's associated company.",
    ),
    d(
        "jobtitle",
        "Job Title",
        "string",
        "text",
        "A contact's job title",
    ),
    d(
        "country",
        "Country/Region",
        "string",
        "text",
        "The contact's country/region of residence.",
    ),
    d(
        "website",
        "Website URL",
        "string",
        "text",
        "Associated company website.",
    ),
    d(
        "lifecyclestage",
        "Lifecycle Stage",
        "enumeration",
        "radio",
        "The qualification of contacts to sales readiness.",
    ),
    ro(
        d(
            "hs_object_id",
            "Record ID",
            "number",
            "number",
            "The unique ID for this record. This value is set automatically by HubSpot.",
        ),
        Some(Special::ObjectId),
    ),
    ro(
        d(
            "createdate",
            "Create Date",
            "datetime",
            "date",
            "The date that a contact entered the system",
        ),
        Some(Special::Created),
    ),
    ro(
        d(
            "lastmodifieddate",
            "Last Modified Date",
            "datetime",
            "date",
            "Most recent timestamp of any property update for a contact.",
        ),
        Some(Special::Modified),
    ),
    ro(
        d(
            "associatedcompanyid",
            "Primary Associated Company ID",
            "number",
            "number",
            "HubSpot defined ID of a contact's primary associated company in HubSpot.",
        ),
        Some(Special::AssocCompany),
    ),
    custom(d(
        "icp_score",
        "ICP Score",
        "number",
        "number",
        "Ideal-customer-profile fit, 0-99",
    )),
    custom(d(
        "seniority",
        "Seniority",
        "string",
        "text",
        "c_suite, vp, director, manager or individual_contributor",
    )),
    custom(d(
        "linkedin_url",
        "LinkedIn URL",
        "string",
        "text",
        "The contact's LinkedIn profile URL",
    )),
];

const COMPANY_PROPS: &[D] = &[
    d(
        "name",
        "Company name",
        "string",
        "text",
        "The name of the company or organization.",
    ),
    d(
        "domain",
        "Company Domain Name",
        "string",
        "text",
        "The domain name of the company or organization",
    ),
    d(
        "country",
        "Country/Region",
        "string",
        "text",
        "The country/region in which the company or organization is located.",
    ),
    d(
        "numberofemployees",
        "Number of Employees",
        "number",
        "number",
        "The total number of employees who work for the company or organization",
    ),
    ro(
        d(
            "hs_object_id",
            "Record ID",
            "number",
            "number",
            "The unique ID for this record. This value is set automatically by HubSpot.",
        ),
        Some(Special::ObjectId),
    ),
    ro(
        d(
            "createdate",
            "Create Date",
            "datetime",
            "date",
            "The date the company or organization was added to the database",
        ),
        Some(Special::Created),
    ),
    ro(
        d(
            "hs_lastmodifieddate",
            "Last Modified Date",
            "datetime",
            "date",
            "Most recent timestamp of any property update for this company. This includes HubSpot internal properties, which can be visible or hidden. This property is updated automatically.",
        ),
        Some(Special::Modified),
    ),
];

const LIFECYCLE: &[(&str, &str)] = &[
    ("Subscriber", "subscriber"),
    ("Lead", "lead"),
    ("Marketing Qualified Lead", "marketingqualifiedlead"),
    ("Sales Qualified Lead", "salesqualifiedlead"),
    ("Opportunity", "opportunity"),
    ("Customer", "customer"),
    ("Evangelist", "evangelist"),
    ("Other", "other"),
];

/// `string` → `string`; `datetime`/`dateTime` → `datetime`; …; None for unknown or internal
/// types.
pub(crate) fn kind_of(ptype: &str) -> Option<(Kind, &'static str)> {
    Some(match ptype {
        "string" => (Kind::String, "string"),
        "number" => (Kind::Number, "number"),
        "enumeration" => (Kind::Enum, "enumeration"),
        "bool" => (Kind::Bool, "bool"),
        "date" => (Kind::Date, "date"),
        "datetime" | "dateTime" => (Kind::Datetime, "datetime"),
        "phone_number" => (Kind::String, "phone_number"),
        _ => return None,
    })
}

/// Valid `fieldType`s per `type` (reference §3.2).
fn field_types(ptype: &str) -> &'static [&'static str] {
    match ptype {
        "string" => &[
            "text",
            "textarea",
            "html",
            "phonenumber",
            "file",
            "calculation_equation",
        ],
        "number" => &["number", "calculation_equation"],
        "enumeration" => &[
            "select",
            "radio",
            "checkbox",
            "booleancheckbox",
            "calculation_equation",
        ],
        "bool" => &["booleancheckbox", "calculation_equation"],
        "date" | "datetime" => &["date"],
        "phone_number" => &["phonenumber"],
        _ => &[],
    }
}

impl Schema {
    fn build(list: &[D], group: &str, group_label: &str) -> Schema {
        let mut s = Schema {
            defs: Vec::new(),
            by_name: HashMap::new(),
            groups: vec![Group {
                name: group.to_string(),
                label: group_label.to_string(),
                display_order: 0,
            }],
        };
        for (i, x) in list.iter().enumerate() {
            let (kind, ptype) = kind_of(x.ptype).unwrap_or((Kind::String, "string"));
            let options = if x.name == "lifecyclestage" {
                LIFECYCLE
                    .iter()
                    .enumerate()
                    .map(|(k, (l, v))| PropertyOption {
                        label: l.to_string(),
                        value: v.to_string(),
                        display_order: k as i64,
                        hidden: false,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            s.add(PropDef {
                name: x.name.to_string(),
                label: x.label.to_string(),
                ptype: ptype.to_string(),
                field_type: x.field_type.to_string(),
                group: group.to_string(),
                description: x.description.to_string(),
                options,
                display_order: if x.custom { -1 } else { i as i64 },
                hidden: false,
                form_field: !x.read_only,
                has_unique_value: false,
                hubspot_defined: !x.custom,
                read_only_value: x.read_only,
                read_only_definition: !x.custom,
                archivable: x.custom,
                created_ms: HUBSPOT_EPOCH_MS,
                updated_ms: HUBSPOT_EPOCH_MS,
                kind,
                special: x.special,
                extra: Map::new(),
            });
        }
        s
    }

    pub(crate) fn contacts() -> Schema {
        Self::build(CONTACT_PROPS, "contactinformation", "Contact information")
    }

    pub(crate) fn companies() -> Schema {
        Self::build(COMPANY_PROPS, "companyinformation", "Company information")
    }

    pub(crate) fn idx(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn def(&self, i: u16) -> &PropDef {
        &self.defs[usize::from(i)]
    }

    pub(crate) fn get(&self, name: &str) -> Option<&PropDef> {
        self.idx(name).map(|i| self.def(i))
    }

    pub(crate) fn add(&mut self, def: PropDef) -> u16 {
        let i = self.defs.len() as u16;
        self.by_name.insert(def.name.clone(), i);
        self.defs.push(def);
        i
    }

    /// The property used as watermark (`lastmodifieddate` / `hs_lastmodifieddate`).
    pub(crate) fn special(&self, sp: Special) -> Option<u16> {
        self.defs
            .iter()
            .position(|d| d.special == Some(sp))
            .map(|i| i as u16)
    }

    /// A plain custom string property (used for unknown seed property names).
    pub(crate) fn ensure_string_prop(&mut self, name: &str, now_ms: i64) -> u16 {
        if let Some(i) = self.idx(name) {
            return i;
        }
        let group = self
            .groups
            .first()
            .map(|g| g.name.clone())
            .unwrap_or_default();
        self.add(PropDef {
            name: name.to_string(),
            label: name.to_string(),
            ptype: "string".into(),
            field_type: "text".into(),
            group,
            description: String::new(),
            options: Vec::new(),
            display_order: -1,
            hidden: false,
            form_field: false,
            has_unique_value: false,
            hubspot_defined: false,
            read_only_value: false,
            read_only_definition: false,
            archivable: true,
            created_ms: now_ms,
            updated_ms: now_ms,
            kind: Kind::String,
            special: None,
            extra: Map::new(),
        })
    }

    pub(crate) fn group_exists(&self, name: &str) -> bool {
        self.groups.iter().any(|g| g.name == name)
    }
}

/// Why a property definition was refused: HTTP status, category, message.
pub(crate) type DefError = (u16, &'static str, String);

fn missing(field: &str) -> DefError {
    (
        400,
        "VALIDATION_ERROR",
        format!(
            "Invalid input JSON on line 1, column 1: Missing required creator property '{field}'"
        ),
    )
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 100
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn parse_options(v: Option<&Value>) -> Result<Vec<PropertyOption>, DefError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let Some(arr) = v.as_array() else {
        return Err((
            400,
            "VALIDATION_ERROR",
            "Invalid input JSON: options must be an array".into(),
        ));
    };
    let mut out: Vec<PropertyOption> = Vec::with_capacity(arr.len());
    for (i, o) in arr.iter().enumerate() {
        let label = o.get("label").and_then(Value::as_str);
        let value = o.get("value").and_then(Value::as_str);
        let (Some(label), Some(value)) = (label, value) else {
            return Err((
                400,
                "VALIDATION_ERROR",
                format!("Option {i} is missing its label or value"),
            ));
        };
        if out.iter().any(|x| x.value == value) {
            return Err((
                400,
                "VALIDATION_ERROR",
                format!("Duplicate option value '{value}'"),
            ));
        }
        out.push(PropertyOption {
            label: label.to_string(),
            value: value.to_string(),
            display_order: o
                .get("displayOrder")
                .and_then(Value::as_i64)
                .unwrap_or(i as i64),
            hidden: o.get("hidden").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    Ok(out)
}

fn check_type(ptype: &str, field_type: &str) -> Result<(Kind, &'static str), DefError> {
    let Some((kind, wire)) = kind_of(ptype) else {
        return Err((
            400,
            "VALIDATION_ERROR",
            format!("Invalid property type '{ptype}'"),
        ));
    };
    if !field_types(wire).contains(&field_type) {
        return Err((
            400,
            "VALIDATION_ERROR",
            format!("Invalid fieldType '{field_type}' for property type '{wire}'"),
        ));
    }
    Ok((kind, wire))
}

fn str_field<'a>(body: &'a Value, k: &str) -> Result<Option<&'a str>, DefError> {
    match body.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err((
            400,
            "VALIDATION_ERROR",
            format!("Invalid input JSON: '{k}' must be a string"),
        )),
    }
}

/// Validate a `PropertyCreate` body against the schema (409 for an existing name).
pub(crate) fn parse_create(
    schema: &Schema,
    body: &Value,
    now_ms: i64,
) -> Result<PropDef, DefError> {
    if !body.is_object() {
        return Err((
            400,
            "VALIDATION_ERROR",
            "Invalid input JSON: expected an object".into(),
        ));
    }
    let req = |k: &str| -> Result<String, DefError> {
        match str_field(body, k)? {
            Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
            _ => Err(missing(k)),
        }
    };
    let name = req("name")?;
    let label = req("label")?;
    let ptype = req("type")?;
    let field_type = req("fieldType")?;
    let group = req("groupName")?;
    if !valid_name(&name) {
        return Err((
            400,
            "VALIDATION_ERROR",
            format!(
                "Property name '{name}' is invalid: it must start with a lowercase letter and contain only lowercase letters, numbers and underscores"
            ),
        ));
    }
    if schema.idx(&name).is_some() {
        return Err((
            409,
            "OBJECT_ALREADY_EXISTS",
            format!("Property named '{name}' already exists."),
        ));
    }
    let (kind, wire) = check_type(&ptype, &field_type)?;
    if !schema.group_exists(&group) {
        return Err((
            400,
            "VALIDATION_ERROR",
            format!("Property group '{group}' does not exist."),
        ));
    }
    let mut options = parse_options(body.get("options"))?;
    if kind == Kind::Enum && field_type == "booleancheckbox" && options.is_empty() {
        options = vec![
            PropertyOption {
                label: "Yes".into(),
                value: "true".into(),
                display_order: 0,
                hidden: false,
            },
            PropertyOption {
                label: "No".into(),
                value: "false".into(),
                display_order: 1,
                hidden: false,
            },
        ];
    }
    let flag = |k: &str| body.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut extra = Map::new();
    for k in EXTRA_FIELDS {
        if let Some(v) = body.get(*k).filter(|v| !v.is_null()) {
            extra.insert(k.to_string(), v.clone());
        }
    }
    Ok(PropDef {
        name,
        label,
        ptype: wire.to_string(),
        field_type,
        group,
        description: str_field(body, "description")?.unwrap_or("").to_string(),
        options,
        display_order: body
            .get("displayOrder")
            .and_then(Value::as_i64)
            .unwrap_or(-1),
        hidden: flag("hidden"),
        form_field: flag("formField"),
        has_unique_value: flag("hasUniqueValue"),
        hubspot_defined: false,
        read_only_value: false,
        read_only_definition: false,
        archivable: true,
        created_ms: now_ms,
        updated_ms: now_ms,
        kind,
        special: None,
        extra,
    })
}

/// Apply a `PropertyUpdate` body (label, description, groupName, options, displayOrder,
/// hidden, formField, type + fieldType) to a custom property.
pub(crate) fn apply_patch(
    schema: &Schema,
    def: &mut PropDef,
    body: &Value,
    now_ms: i64,
) -> Result<(), DefError> {
    if !body.is_object() {
        return Err((
            400,
            "VALIDATION_ERROR",
            "Invalid input JSON: expected an object".into(),
        ));
    }
    if def.read_only_definition {
        return Err((
            400,
            "VALIDATION_ERROR",
            format!(
                "Property '{}' is a HubSpot-defined property whose definition cannot be modified.",
                def.name
            ),
        ));
    }
    let ptype = str_field(body, "type")?.unwrap_or(&def.ptype).to_string();
    let field_type = str_field(body, "fieldType")?
        .unwrap_or(&def.field_type)
        .to_string();
    let (kind, wire) = check_type(&ptype, &field_type)?;
    if let Some(g) = str_field(body, "groupName")? {
        if !schema.group_exists(g) {
            return Err((
                400,
                "VALIDATION_ERROR",
                format!("Property group '{g}' does not exist."),
            ));
        }
        def.group = g.to_string();
    }
    if body.get("options").is_some() {
        def.options = parse_options(body.get("options"))?;
    }
    if let Some(l) = str_field(body, "label")? {
        def.label = l.to_string();
    }
    if let Some(l) = str_field(body, "description")? {
        def.description = l.to_string();
    }
    if let Some(n) = body.get("displayOrder").and_then(Value::as_i64) {
        def.display_order = n;
    }
    if let Some(b) = body.get("hidden").and_then(Value::as_bool) {
        def.hidden = b;
    }
    if let Some(b) = body.get("formField").and_then(Value::as_bool) {
        def.form_field = b;
    }
    def.kind = kind;
    def.ptype = wire.to_string();
    def.field_type = field_type;
    def.updated_ms = now_ms;
    Ok(())
}

/// Validate a group body: `name*`, `label*`, `displayOrder?`.
pub(crate) fn parse_group(schema: &Schema, body: &Value) -> Result<Group, DefError> {
    let name = match str_field(body, "name")? {
        Some(s) if !s.trim().is_empty() => s.to_string(),
        _ => return Err(missing("name")),
    };
    let label = match str_field(body, "label")? {
        Some(s) if !s.trim().is_empty() => s.to_string(),
        _ => return Err(missing("label")),
    };
    if !valid_name(&name) {
        return Err((
            400,
            "VALIDATION_ERROR",
            format!("Property group name '{name}' is invalid"),
        ));
    }
    if schema.group_exists(&name) {
        return Err((
            409,
            "OBJECT_ALREADY_EXISTS",
            format!("Property group named '{name}' already exists."),
        ));
    }
    Ok(Group {
        name,
        label,
        display_order: body
            .get("displayOrder")
            .and_then(Value::as_i64)
            .unwrap_or(-1),
    })
}

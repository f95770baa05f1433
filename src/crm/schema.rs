//! CRM schemas and the check of a mapping against them.
//!
//! A [`CrmSchema`] is what a CRM says about the fields of one object (the
//! HubSpot properties API, a Salesforce sObject describe), reduced to what
//! enrichd needs: name, label, kind, length, whether the API user may write
//! it, and the options of an enumeration. [`check_mapping`] compares a
//! mapping with it and returns every problem at once, each naming the
//! mapping file, the key, the field, what is wrong, the closest existing
//! field names and what to do. Pure: the connectors read the schema
//! (`crm::hubspot::schema::live_schema`; Salesforce:
//! [`from_salesforce_describe`] over `GET …/sobjects/<Object>/describe`).
//!
//! The rules, per role of a mapped field (fields under policy `never` are
//! only required to exist: enrichd never writes them):
//!
//! | role | accepted kinds | minimum length (when the CRM has one) |
//! |---|---|---|
//! | work / personal email | text, long text, email | [`EMAIL_MIN`] (80, Salesforce's own Email fields) |
//! | phone | text, long text, phone | [`PHONE_MIN`] (16: `+` and 15 digits, E.164) |
//! | LinkedIn URL | text, long text, URL | [`LINKEDIN_MIN`] (128: `https://www.linkedin.com/in/` and a 100-character slug) |
//! | Source | text, long text, or an enumeration (options: every configured provider id; `id_and_date` needs text) | longest provider id, [`SOURCE_MIN`] when unknown (+11 for `id_and_date`) |
//! | status | text, long text, or an enumeration with `Full`, `Partial`, `Empty` | [`STATUS_MIN`] (`Partial`) |
//! | enriched at | datetime; date (Salesforce only: a HubSpot date takes midnight UTC only); number with `epoch_millis`; text | 24 (`iso8601`) or 13 (`epoch_millis`) |
//!
//! A field that is not updateable (HubSpot `readOnlyValue`, calculated;
//! Salesforce `updateable: false`, formula fields) is a problem. A missing
//! field is a problem with the closest names; on HubSpot with
//! `create_properties = true` it is instead listed in
//! [`SchemaCheck::to_create`] (the next sync creates it), unless an existing
//! field is within a typo's distance of it ([`likely_typo`]): a likely typo
//! is always a problem. Salesforce fields are never created by enrichd: the
//! hint gives the admin steps.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::core::channel::Channel;
use crate::core::mapping::{
    CrmKind, DateFormat, FieldRole, FieldRule, Mapping, Policy, SourceFormat,
};

/// Shortest email field accepted: Salesforce's standard Email fields hold
/// 80 characters, and addresses longer than that are vanishingly rare.
pub const EMAIL_MIN: u32 = 80;
/// Shortest phone field accepted: E.164 is `+` and at most 15 digits.
pub const PHONE_MIN: u32 = 16;
/// Shortest LinkedIn URL field accepted: `https://www.linkedin.com/in/`
/// (28 characters) and a custom profile slug of up to 100.
pub const LINKEDIN_MIN: u32 = 128;
/// Shortest Source field accepted when the providers are not known.
pub const SOURCE_MIN: u32 = 20;
/// Shortest status field accepted (`Partial`).
pub const STATUS_MIN: u32 = 7;
/// The statuses enrichd writes.
pub const STATUSES: [&str; 3] = ["Full", "Partial", "Empty"];

/// What values a field holds, in CRM-neutral words.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Single-line text (HubSpot `string/text`, Salesforce `string`).
    Text,
    /// Multi-line text (HubSpot `string/textarea`, Salesforce `textarea`).
    TextArea,
    /// A fixed list of options (HubSpot `enumeration`, Salesforce `picklist`).
    Enumeration,
    /// Salesforce `email` (validated as an address).
    Email,
    /// HubSpot `phonenumber`, Salesforce `phone`.
    Phone,
    /// Salesforce `url`.
    Url,
    DateTime,
    Date,
    Number,
    Boolean,
    /// Anything else, with the CRM's own type word (`reference`, `json`, …).
    Other(String),
}

impl FieldKind {
    fn words(&self) -> String {
        match self {
            FieldKind::Text => "text".into(),
            FieldKind::TextArea => "long text".into(),
            FieldKind::Enumeration => "enumeration (picklist)".into(),
            FieldKind::Email => "email".into(),
            FieldKind::Phone => "phone".into(),
            FieldKind::Url => "URL".into(),
            FieldKind::DateTime => "date/time".into(),
            FieldKind::Date => "date".into(),
            FieldKind::Number => "number".into(),
            FieldKind::Boolean => "checkbox (boolean)".into(),
            FieldKind::Other(t) => t.clone(),
        }
    }

    fn texty(&self) -> bool {
        matches!(self, FieldKind::Text | FieldKind::TextArea)
    }
}

/// One field of a CRM object, as far as enrichd cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrmField {
    /// HubSpot internal name, Salesforce API name (canonical case).
    pub name: String,
    pub label: String,
    pub kind: FieldKind,
    /// The CRM's own type words, for messages (`string/phonenumber`,
    /// `picklist`).
    pub crm_type: String,
    /// Maximum characters (Salesforce `length`); `None` when the CRM has no
    /// limit enrichd could reach (HubSpot strings hold 65,536).
    pub length: Option<u32>,
    /// Whether the API user may write it.
    pub updateable: bool,
    /// Computed by the CRM (formula, calculated property): never writable.
    pub calculated: bool,
    /// Whether it may be emptied (Salesforce `nillable`). enrichd never
    /// writes an empty value, so it is informative only.
    pub nillable: bool,
    /// Created by the customer (Salesforce `__c`, HubSpot not
    /// `hubspotDefined`).
    pub custom: bool,
    /// Option values of an enumeration / picklist (active ones).
    pub options: Vec<String>,
    /// Whether a value outside `options` is refused (HubSpot enumerations;
    /// Salesforce restricted picklists).
    pub restricted: bool,
}

impl CrmField {
    /// A writable single-line text field without length limit (tests,
    /// simple schemas).
    pub fn text(name: impl Into<String>, label: impl Into<String>) -> Self {
        CrmField {
            name: name.into(),
            label: label.into(),
            kind: FieldKind::Text,
            crm_type: "text".into(),
            length: None,
            updateable: true,
            calculated: false,
            nillable: true,
            custom: true,
            options: Vec::new(),
            restricted: false,
        }
    }
}

/// The fields of one CRM object. HubSpot names are matched exactly,
/// Salesforce API names case-insensitively (as Salesforce does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrmSchema {
    pub crm: CrmKind,
    /// `contacts` (HubSpot), `Lead` / `Contact` (Salesforce).
    pub object: String,
    /// The API call it was read with, for messages
    /// (`GET /crm/v3/properties/contacts`).
    pub endpoint: String,
    /// By lookup key (exact name on HubSpot, lower case on Salesforce).
    fields: BTreeMap<String, CrmField>,
}

impl CrmSchema {
    pub fn new(
        crm: CrmKind,
        object: impl Into<String>,
        endpoint: impl Into<String>,
        fields: impl IntoIterator<Item = CrmField>,
    ) -> Self {
        let mut s = CrmSchema {
            crm,
            object: object.into(),
            endpoint: endpoint.into(),
            fields: BTreeMap::new(),
        };
        for f in fields {
            s.fields.insert(s.key(&f.name), f);
        }
        s
    }

    fn key(&self, name: &str) -> String {
        match self.crm {
            CrmKind::Hubspot => name.to_string(),
            CrmKind::Salesforce => name.to_ascii_lowercase(),
        }
    }

    /// The field called `name` (case-insensitively on Salesforce).
    pub fn get(&self, name: &str) -> Option<&CrmField> {
        self.fields.get(&self.key(name))
    }

    pub fn fields(&self) -> impl Iterator<Item = &CrmField> {
        self.fields.values()
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn crm_name(&self) -> &'static str {
        crm_name(self.crm)
    }

    /// "HubSpot contact property", "Salesforce Lead field".
    fn field_word(&self) -> String {
        match self.crm {
            CrmKind::Hubspot => "HubSpot contact property".into(),
            CrmKind::Salesforce => format!("Salesforce {} field", self.object),
        }
    }
}

fn crm_name(c: CrmKind) -> &'static str {
    match c {
        CrmKind::Hubspot => "HubSpot",
        CrmKind::Salesforce => "Salesforce",
    }
}

/// What is wrong with a mapped field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProblemKind {
    /// No field of that name (on Salesforce: or hidden from the API user by
    /// field-level security).
    Missing {
        /// An existing field is within a typo's distance.
        likely_typo: bool,
    },
    /// The field exists but the API user may not write it.
    ReadOnly {
        /// A formula / calculated field.
        calculated: bool,
    },
    /// The field cannot hold what enrichd writes there.
    WrongType { found: String, expected: String },
    /// The field is shorter than the longest value enrichd may write.
    TooShort { length: u32, needed: u32 },
    /// A restricted enumeration lacks options enrichd writes.
    MissingOptions { missing: Vec<String> },
    /// The mapping is for another CRM or object than the schema read.
    WrongTarget { expected: String, found: String },
}

/// One problem of one mapped field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaProblem {
    /// The mapping file.
    pub file: PathBuf,
    pub crm: CrmKind,
    pub object: String,
    /// Where the schema was read (`GET /crm/v3/properties/contacts`).
    pub endpoint: String,
    /// The mapping key, e.g. `channels.phone.field`, `status.field`.
    pub key: String,
    /// The field the mapping names.
    pub field: String,
    pub role: Option<FieldRole>,
    pub channel: Option<Channel>,
    pub problem: ProblemKind,
    /// Existing fields with a similar name or label, closest first.
    pub closest: Vec<String>,
    /// What to do.
    pub hint: String,
    /// The problem in words (without file, key, closest names and hint).
    pub message: String,
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: key `{}` = \"{}\": {}",
            self.file.display(),
            self.key,
            self.field,
            self.message
        )?;
        if !self.closest.is_empty() {
            let names: Vec<String> = self.closest.iter().map(|c| format!("`{c}`")).collect();
            write!(f, "; closest existing: {}", names.join(", "))?;
        }
        write!(f, ". Fix: {}", self.hint)
    }
}

/// The outcome of checking a mapping against a schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SchemaCheck {
    /// Every mapped field, in the mapping's order.
    pub checked: Vec<String>,
    pub problems: Vec<SchemaProblem>,
    /// Missing fields enrichd creates itself (HubSpot `create_properties`):
    /// the next sync creates them.
    pub to_create: Vec<String>,
}

impl SchemaCheck {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What the check knows beyond the mapping and the schema.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// enrichd may create missing fields (HubSpot `create_properties`;
    /// ignored for Salesforce, whose fields an admin creates).
    pub can_create: bool,
    /// The provider ids that may appear as a Source (the workspace's
    /// accounts): a restricted enumeration must list them all, and a text
    /// Source must hold the longest. Empty: not checked / [`SOURCE_MIN`].
    pub providers: Vec<String>,
}

/// One field the mapping writes, with its key in the mapping file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedField<'a> {
    /// `channels.work_email.source_field`, `status.field`, …
    pub key: String,
    pub rule: &'a FieldRule,
    pub role: FieldRole,
    pub channel: Option<Channel>,
}

/// Every field a mapping writes with its key, in the order of
/// [`Mapping::fields`].
pub fn mapped_fields(mapping: &Mapping) -> Vec<MappedField<'_>> {
    let mut out = Vec::new();
    for (&ch, rule) in &mapping.channels {
        out.push(MappedField {
            key: format!("channels.{ch}.field"),
            rule: &rule.value,
            role: FieldRole::Value,
            channel: Some(ch),
        });
        if let Some(s) = &rule.source {
            out.push(MappedField {
                key: format!("channels.{ch}.source_field"),
                rule: s,
                role: FieldRole::Source,
                channel: Some(ch),
            });
        }
    }
    if let Some(s) = &mapping.status {
        out.push(MappedField {
            key: "status.field".into(),
            rule: s,
            role: FieldRole::Status,
            channel: None,
        });
    }
    if let Some(s) = &mapping.enriched_at {
        out.push(MappedField {
            key: "enriched_at.field".into(),
            rule: s,
            role: FieldRole::EnrichedAt,
            channel: None,
        });
    }
    out
}

/// Checks every field `mapping` (read from `file`) writes against `schema`.
/// `can_create`: missing fields that are not likely typos go to
/// [`SchemaCheck::to_create`] (HubSpot only).
pub fn check_mapping(
    mapping: &Mapping,
    file: &Path,
    schema: &CrmSchema,
    can_create: bool,
) -> SchemaCheck {
    check_mapping_with(
        mapping,
        file,
        schema,
        &CheckOptions {
            can_create,
            providers: Vec::new(),
        },
    )
}

/// [`check_mapping`] with the workspace's providers (Source options and
/// lengths).
pub fn check_mapping_with(
    mapping: &Mapping,
    file: &Path,
    schema: &CrmSchema,
    opts: &CheckOptions,
) -> SchemaCheck {
    let mut out = SchemaCheck::default();
    let problem = |key: &str,
                   field: &str,
                   m: Option<&MappedField<'_>>,
                   problem: ProblemKind,
                   message: String,
                   closest: Vec<String>,
                   hint: String| SchemaProblem {
        file: file.to_path_buf(),
        crm: schema.crm,
        object: schema.object.clone(),
        endpoint: schema.endpoint.clone(),
        key: key.to_string(),
        field: field.to_string(),
        role: m.map(|m| m.role),
        channel: m.and_then(|m| m.channel),
        problem,
        closest,
        hint,
        message,
    };
    if mapping.crm != schema.crm {
        out.problems.push(problem(
            "crm",
            mapping.crm.as_str(),
            None,
            ProblemKind::WrongTarget {
                expected: schema.crm.as_str().into(),
                found: mapping.crm.as_str().into(),
            },
            format!(
                "the mapping writes to {} but the workspace's CRM is {}",
                crm_name(mapping.crm),
                schema.crm_name()
            ),
            Vec::new(),
            format!(
                "set `crm = \"{}\"` in {} or point [workspaces.crm] `mapping` at a {} mapping",
                schema.crm.as_str(),
                file.display(),
                schema.crm_name()
            ),
        ));
        return out;
    }
    if !mapping.object.eq_ignore_ascii_case(&schema.object) {
        out.problems.push(problem(
            "object",
            &mapping.object,
            None,
            ProblemKind::WrongTarget {
                expected: schema.object.clone(),
                found: mapping.object.clone(),
            },
            format!(
                "the mapping writes {} records but the schema read is that of {} ({})",
                mapping.object, schema.object, schema.endpoint
            ),
            Vec::new(),
            format!(
                "set `object = \"{}\"` in {} or use a mapping for {}",
                schema.object,
                file.display(),
                mapping.object
            ),
        ));
        return out;
    }
    let can_create = opts.can_create && schema.crm == CrmKind::Hubspot;
    for m in mapped_fields(mapping) {
        let name = m.rule.field.as_str();
        out.checked.push(name.to_string());
        let Some(f) = schema.get(name) else {
            let typo = likely_typo(name, schema);
            if can_create && !typo {
                out.to_create.push(name.to_string());
                continue;
            }
            let closest = closest(name, schema, 3);
            let (message, hint) = missing_words(&m, name, schema, file, typo, &closest, opts);
            out.problems.push(problem(
                &m.key,
                name,
                Some(&m),
                ProblemKind::Missing { likely_typo: typo },
                message,
                closest,
                hint,
            ));
            continue;
        };
        if m.rule.policy == Policy::Never {
            // Never written: it only has to exist.
            continue;
        }
        if let Some((kind, message, hint)) = field_problem(&m, f, mapping, file, schema, opts) {
            out.problems.push(problem(
                &m.key,
                name,
                Some(&m),
                kind,
                message,
                Vec::new(),
                hint,
            ));
        }
    }
    out
}

/// What enrichd writes in the field, in words.
fn what(m: &MappedField<'_>, mapping: &Mapping) -> String {
    match (m.role, m.channel) {
        (FieldRole::Value, Some(c)) => format!("the {} value", channel_words(c)),
        (FieldRole::Source, Some(c)) => format!(
            "the {} Source ({})",
            channel_words(c),
            match mapping.source_format {
                SourceFormat::Id => "a provider id such as `apollo`",
                SourceFormat::IdAndDate => "a provider id and a day, such as `apollo 2026-03-14`",
            }
        ),
        (FieldRole::Status, _) => "the enrichment status (Full, Partial or Empty)".into(),
        (FieldRole::EnrichedAt, _) => format!(
            "the enriched-at time ({})",
            match mapping.enriched_at_format {
                DateFormat::Iso8601 => "ISO 8601, such as `2026-03-14T12:00:00.000Z`",
                DateFormat::EpochMillis => "epoch milliseconds, such as `1773489600000`",
            }
        ),
        (r, None) => r.as_str().to_string(),
    }
}

fn channel_words(c: Channel) -> &'static str {
    match c {
        Channel::WorkEmail => "work email",
        Channel::PersonalEmail => "personal email",
        Channel::Phone => "phone",
        Channel::LinkedinUrl => "LinkedIn URL",
    }
}

/// The kind of field to create for a role, in the CRM's own words.
fn advice(m: &MappedField<'_>, crm: CrmKind) -> String {
    match (crm, m.role, m.channel) {
        (CrmKind::Hubspot, FieldRole::Value, Some(Channel::Phone)) => {
            "field type \"Phone number\" or \"Single-line text\"".into()
        }
        (CrmKind::Hubspot, FieldRole::Value, _) => "field type \"Single-line text\"".into(),
        (CrmKind::Hubspot, FieldRole::Source, _) => {
            "field type \"Single-line text\" (or \"Dropdown select\" with one option per provider id)"
                .into()
        }
        (CrmKind::Hubspot, FieldRole::Status, _) => {
            "field type \"Dropdown select\" with options Full, Partial, Empty (or \"Single-line text\")"
                .into()
        }
        (CrmKind::Hubspot, FieldRole::EnrichedAt, _) => {
            "field type \"Date and time picker\"".into()
        }
        (CrmKind::Salesforce, FieldRole::Value, Some(c)) if c.is_email() => {
            format!("data type Email, {EMAIL_MIN} characters")
        }
        (CrmKind::Salesforce, FieldRole::Value, Some(Channel::Phone)) => {
            "data type Phone, 40 characters".into()
        }
        (CrmKind::Salesforce, FieldRole::Value, _) => {
            "data type URL, 255 characters".into()
        }
        (CrmKind::Salesforce, FieldRole::Source, _) => {
            "data type Text, length 80, or a Picklist with one value per provider id".into()
        }
        (CrmKind::Salesforce, FieldRole::Status, _) => {
            "data type Picklist with the values Full, Partial, Empty, or Text, length 20".into()
        }
        (CrmKind::Salesforce, FieldRole::EnrichedAt, _) => "data type Date/Time".into(),
    }
}

/// Salesforce's admin path to a new field of `object`.
fn salesforce_new_field(object: &str) -> String {
    format!("Setup → Object Manager → {object} → Fields & Relationships → New")
}

fn missing_words(
    m: &MappedField<'_>,
    name: &str,
    schema: &CrmSchema,
    file: &Path,
    typo: bool,
    closest: &[String],
    opts: &CheckOptions,
) -> (String, String) {
    let message = match schema.crm {
        CrmKind::Hubspot => format!(
            "no HubSpot contact property is called `{name}` ({} lists {} properties)",
            schema.endpoint,
            schema.len()
        ),
        CrmKind::Salesforce => format!(
            "no field `{name}` on {} ({} lists {} fields visible to the API user)",
            schema.object,
            schema.endpoint,
            schema.len()
        ),
    };
    let create = match schema.crm {
        CrmKind::Hubspot => {
            let auto = if opts.can_create {
                String::new()
            } else {
                " (or set `create_properties = true` in [workspaces.crm], with the scope \
                 crm.schemas.contacts.write, and the next sync creates it)"
                    .into()
            };
            format!(
                "create it in HubSpot: Settings → Properties → Create property, object Contact, \
                 internal name `{name}`, {}{auto}",
                advice(m, CrmKind::Hubspot)
            )
        }
        CrmKind::Salesforce => {
            let standard_note = match m.channel {
                Some(Channel::LinkedinUrl) | Some(Channel::PersonalEmail)
                    if m.role == FieldRole::Value =>
                {
                    " (Salesforce has no standard LinkedIn or personal-email field: it must be a custom field)"
                }
                _ => "",
            };
            let custom_name = name
                .strip_suffix("__c")
                .or_else(|| name.strip_suffix("__C"))
                .unwrap_or(name);
            let not_standard = if name.to_ascii_lowercase().ends_with("__c") {
                String::new()
            } else {
                format!(
                    "{} has no standard field `{name}` (custom API names end in __c); ",
                    schema.object
                )
            };
            format!(
                "{not_standard}create the custom field{standard_note}: {}, {}, Field Name \
                 `{custom_name}` (Salesforce adds __c), then grant the integration user Read and \
                 Edit in its field-level security; if the field exists, the API user cannot see \
                 it: grant field-level security",
                salesforce_new_field(&schema.object),
                advice(m, CrmKind::Salesforce)
            )
        }
    };
    let hint = match (typo, closest.first()) {
        (true, Some(c)) => {
            let not_created = if opts.can_create && schema.crm == CrmKind::Hubspot {
                " (enrichd does not create a property this close to an existing one)"
            } else {
                ""
            };
            format!(
                "did you mean `{c}`? Correct `{}` in {}{not_created}; if you do mean a new field, {create}",
                m.key,
                file.display()
            )
        }
        _ => format!(
            "{create}; or correct `{}` in {} to name an existing field",
            m.key,
            file.display()
        ),
    };
    (message, hint)
}

/// The problem of an existing field enrichd writes, if any.
fn field_problem(
    m: &MappedField<'_>,
    f: &CrmField,
    mapping: &Mapping,
    file: &Path,
    schema: &CrmSchema,
    opts: &CheckOptions,
) -> Option<(ProblemKind, String, String)> {
    let what = what(m, mapping);
    let elsewhere = format!(
        "set `{}` to another field that can hold {what}, e.g. a new custom one ({})",
        m.key,
        advice(m, schema.crm)
    );
    if !f.updateable {
        let (message, hint) = match (schema.crm, f.calculated) {
            (_, true) => (
                format!(
                    "the {} `{}` is calculated (a formula), so nobody can write it",
                    schema.field_word(),
                    f.name
                ),
                elsewhere,
            ),
            (CrmKind::Hubspot, false) => (
                format!(
                    "the {} `{}` is read-only (its value is set by HubSpot)",
                    schema.field_word(),
                    f.name
                ),
                elsewhere,
            ),
            (CrmKind::Salesforce, false) if f.custom => (
                format!(
                    "the {} `{}` is not updateable by the API user",
                    schema.field_word(),
                    f.name
                ),
                format!(
                    "grant the integration user Edit on it (Setup → Object Manager → {} → Fields & \
                     Relationships → {} → Set Field-Level Security), or {elsewhere}",
                    schema.object, f.label
                ),
            ),
            (CrmKind::Salesforce, false) => (
                format!(
                    "the {} `{}` is not updateable (set by Salesforce, or read-only for the API user)",
                    schema.field_word(),
                    f.name
                ),
                elsewhere,
            ),
        };
        return Some((
            ProblemKind::ReadOnly {
                calculated: f.calculated,
            },
            message,
            hint,
        ));
    }
    let wrong = |expected: &str, hint: String| {
        Some((
            ProblemKind::WrongType {
                found: f.crm_type.clone(),
                expected: expected.to_string(),
            },
            format!(
                "the {} `{}` is of type {} but {what} needs {expected}",
                schema.field_word(),
                f.name,
                if f.crm_type == f.kind.words() {
                    f.crm_type.clone()
                } else {
                    format!("{} ({})", f.crm_type, f.kind.words())
                }
            ),
            hint,
        ))
    };
    let short = |needed: u32| -> Option<(ProblemKind, String, String)> {
        let length = f.length?;
        if length >= needed {
            return None;
        }
        let hint = match schema.crm {
            CrmKind::Salesforce => format!(
                "raise its length to at least {needed} (Setup → Object Manager → {} → Fields & \
                 Relationships → {} → Edit), or {elsewhere}",
                schema.object, f.label
            ),
            CrmKind::Hubspot => format!("lengthen it to at least {needed}, or {elsewhere}"),
        };
        Some((
            ProblemKind::TooShort { length, needed },
            format!(
                "the {} `{}` holds at most {length} characters but {what} may need {needed}",
                schema.field_word(),
                f.name
            ),
            hint,
        ))
    };
    let missing_options = |wanted: &[String]| -> Option<(ProblemKind, String, String)> {
        if !f.restricted {
            return None;
        }
        let missing: Vec<String> = wanted
            .iter()
            .filter(|w| !f.options.iter().any(|o| o == *w))
            .cloned()
            .collect();
        if missing.is_empty() {
            return None;
        }
        let list = missing.join(", ");
        let hint = match schema.crm {
            CrmKind::Hubspot => format!(
                "add the option(s) {list} to it (Settings → Properties → {} → Field type options; \
                 the option's internal value must be exactly that), or make it a single-line text \
                 property",
                f.label
            ),
            CrmKind::Salesforce => format!(
                "add the value(s) {list} to the picklist (Setup → Object Manager → {} → Fields & \
                 Relationships → {} → Values → New), or clear \"Restrict picklist to the values \
                 defined in the value set\"",
                schema.object, f.label
            ),
        };
        Some((
            ProblemKind::MissingOptions { missing },
            format!(
                "the {} `{}` is a restricted enumeration without the option(s) {list} that enrichd writes as {what}",
                schema.field_word(),
                f.name
            ),
            hint,
        ))
    };
    match (m.role, m.channel) {
        (FieldRole::Value, Some(c)) => {
            let fits = f.kind.texty()
                || match c {
                    Channel::WorkEmail | Channel::PersonalEmail => f.kind == FieldKind::Email,
                    Channel::Phone => f.kind == FieldKind::Phone,
                    Channel::LinkedinUrl => f.kind == FieldKind::Url,
                };
            if !fits {
                let expected = match c {
                    Channel::WorkEmail | Channel::PersonalEmail => "an email or text field",
                    Channel::Phone => "a phone or text field",
                    Channel::LinkedinUrl => "a URL or text field",
                };
                return wrong(expected, elsewhere);
            }
            short(match c {
                Channel::WorkEmail | Channel::PersonalEmail => EMAIL_MIN,
                Channel::Phone => PHONE_MIN,
                Channel::LinkedinUrl => LINKEDIN_MIN,
            })
        }
        (FieldRole::Value, None) => None,
        (FieldRole::Source, _) => {
            let date = mapping.source_format == SourceFormat::IdAndDate;
            if f.kind.texty() {
                let longest = opts
                    .providers
                    .iter()
                    .map(|p| u32::try_from(p.chars().count()).unwrap_or(u32::MAX))
                    .max()
                    .unwrap_or(SOURCE_MIN);
                return short(longest.saturating_add(if date { 11 } else { 0 }));
            }
            if f.kind == FieldKind::Enumeration {
                if date && f.restricted {
                    return wrong(
                        "a text field (source_format = \"id_and_date\" writes the day too, which no option holds)",
                        format!(
                            "set `source_format = \"id\"` in {}, or {elsewhere}",
                            file.display()
                        ),
                    );
                }
                return missing_options(&opts.providers);
            }
            wrong("a text field or an enumeration of provider ids", elsewhere)
        }
        (FieldRole::Status, _) => {
            if f.kind.texty() {
                return short(STATUS_MIN);
            }
            if f.kind == FieldKind::Enumeration {
                let wanted: Vec<String> = STATUSES.iter().map(|s| s.to_string()).collect();
                return missing_options(&wanted);
            }
            wrong(
                "a text field or an enumeration with Full, Partial, Empty",
                elsewhere,
            )
        }
        (FieldRole::EnrichedAt, _) => {
            let format = mapping.enriched_at_format;
            match &f.kind {
                FieldKind::DateTime => None,
                FieldKind::Date if schema.crm == CrmKind::Salesforce => None,
                FieldKind::Date => wrong(
                    "a datetime property (a HubSpot date property accepts only midnight UTC, and enrichd writes the time of day)",
                    elsewhere,
                ),
                FieldKind::Number if format == DateFormat::EpochMillis => None,
                FieldKind::Number => wrong(
                    "a datetime or text field (a number holds epoch_millis only)",
                    format!(
                        "set `format = \"epoch_millis\"` under [enriched_at] in {}, or {elsewhere}",
                        file.display()
                    ),
                ),
                k if k.texty() => short(match format {
                    DateFormat::Iso8601 => 24,
                    DateFormat::EpochMillis => 13,
                }),
                _ => wrong("a datetime, date, number or text field", elsewhere),
            }
        }
    }
}

// ---------------------------------------------------------------- names

/// Lower case, `__c` dropped, letters and digits only: `Enrichment_Phone__c`
/// and the label "Enrichment Phone" both become `enrichmentphone`.
fn squash(s: &str) -> String {
    let lower = s.trim().to_lowercase();
    let base = lower.strip_suffix("__c").unwrap_or(&lower);
    base.chars().filter(|c| c.is_alphanumeric()).collect()
}

/// Optimal string alignment distance (Levenshtein with adjacent
/// transpositions counted as one edit).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return n.max(m);
    }
    let w = m + 1;
    let mut d = vec![0usize; (n + 1) * w];
    for i in 0..=n {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(m + 1) {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[n * w + m]
}

/// The smallest distance between `name` and a field's name or label
/// (case-insensitive; underscores, spaces and `__c` ignored too).
fn field_distance(name: &str, f: &CrmField) -> usize {
    let q = squash(name);
    let raw = distance(&name.to_lowercase(), &f.name.to_lowercase());
    let by_name = distance(&q, &squash(&f.name));
    let by_label = if f.label.is_empty() {
        usize::MAX
    } else {
        distance(&q, &squash(&f.label))
    };
    raw.min(by_name).min(by_label)
}

/// Edits within which a name is a likely typo of another: one for names of
/// up to five letters and digits, two beyond.
fn typo_edits(name: &str) -> usize {
    if squash(name).chars().count() <= 5 {
        1
    } else {
        2
    }
}

/// Whether an existing field's name is within a typo's distance of `name`
/// (which itself is missing): the mapping most likely misspells it. Labels
/// are not compared here (a HubSpot portal may well have a property
/// labelled like one enrichd creates under another internal name); they
/// only rank [`closest`].
pub fn likely_typo(name: &str, schema: &CrmSchema) -> bool {
    let limit = typo_edits(name);
    let q = squash(name);
    let lower = name.to_lowercase();
    schema.fields().any(|f| {
        distance(&lower, &f.name.to_lowercase()) <= limit || distance(&q, &squash(&f.name)) <= limit
    })
}

/// Up to `n` existing field names plausibly meant by `name`, closest first:
/// edit distance on names and labels (case-insensitive, underscores and
/// `__c` ignored) within a third of the name's length (at least one), or a
/// name or label that contains the other (five characters or more).
pub fn closest(name: &str, schema: &CrmSchema, n: usize) -> Vec<String> {
    let q = squash(name);
    let len = q.chars().count();
    let limit = (len / 3).max(1);
    let mut scored: Vec<(usize, &str)> = schema
        .fields()
        .filter_map(|f| {
            let d = field_distance(name, f);
            if d <= limit {
                return Some((d, f.name.as_str()));
            }
            let contains = |other: &str| {
                let o = squash(other);
                let (short, long) = if o.len() < q.len() {
                    (&o, &q)
                } else {
                    (&q, &o)
                };
                short.chars().count() >= 5 && long.contains(short.as_str())
            };
            if contains(&f.name) || (!f.label.is_empty() && contains(&f.label)) {
                let diff = len.abs_diff(squash(&f.name).chars().count());
                return Some((limit + 1 + diff, f.name.as_str()));
            }
            None
        })
        .collect();
    scored.sort();
    let mut seen = BTreeSet::new();
    scored
        .into_iter()
        .filter(|(_, name)| seen.insert(*name))
        .take(n)
        .map(|(_, name)| name.to_string())
        .collect()
}

// ---------------------------------------------------------------- Salesforce

/// A Salesforce describe answer enrichd cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescribeError {
    #[error(
        "Salesforce describe answer: {0}; expected the JSON of GET /services/data/vXX.X/sobjects/<Object>/describe (an object with `name` and `fields`)"
    )]
    Shape(String),
    #[error(
        "Salesforce describe of {object}: field #{index} has no `name`; the answer is not a describe result"
    )]
    FieldWithoutName { object: String, index: usize },
}

/// An sObject describe (`GET /services/data/vXX.X/sobjects/Lead/describe`,
/// reference/salesforce.md §4) → the object's schema: per field `name`,
/// `label`, `type`, `length`, `updateable`, `calculated`, `nillable`,
/// `custom`, `restrictedPicklist` and the active `picklistValues`.
pub fn from_salesforce_describe(json: &Value) -> Result<CrmSchema, DescribeError> {
    let obj = json
        .as_object()
        .ok_or_else(|| DescribeError::Shape("not a JSON object".into()))?;
    let object = obj
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| DescribeError::Shape("no object `name`".into()))?
        .to_string();
    let fields = obj
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| DescribeError::Shape(format!("no `fields` array for {object}")))?;
    let endpoint = format!(
        "GET {}",
        json.pointer("/urls/describe")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("/services/data/vXX.X/sobjects/{object}/describe"))
    );
    let mut out = Vec::with_capacity(fields.len());
    for (index, f) in fields.iter().enumerate() {
        let s = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("");
        let b = |k: &str| f.get(k).and_then(Value::as_bool).unwrap_or(false);
        let name = s("name");
        if name.is_empty() {
            return Err(DescribeError::FieldWithoutName {
                object: object.clone(),
                index,
            });
        }
        let ty = s("type");
        let kind = match ty {
            "string" | "combobox" => FieldKind::Text,
            "textarea" => FieldKind::TextArea,
            "email" => FieldKind::Email,
            "phone" => FieldKind::Phone,
            "url" => FieldKind::Url,
            "picklist" => FieldKind::Enumeration,
            "datetime" => FieldKind::DateTime,
            "date" => FieldKind::Date,
            "double" | "int" | "long" | "currency" | "percent" => FieldKind::Number,
            "boolean" => FieldKind::Boolean,
            other => FieldKind::Other(other.to_string()),
        };
        let length = f
            .get("length")
            .and_then(Value::as_u64)
            .filter(|&l| l > 0)
            .map(|l| u32::try_from(l).unwrap_or(u32::MAX));
        let calculated = b("calculated");
        let options = f
            .get("picklistValues")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|o| o.get("active").and_then(Value::as_bool).unwrap_or(true))
            .filter_map(|o| o.get("value").and_then(Value::as_str).map(str::to_string))
            .collect();
        out.push(CrmField {
            name: name.to_string(),
            label: s("label").to_string(),
            kind,
            crm_type: ty.to_string(),
            length,
            updateable: b("updateable") && !calculated,
            calculated,
            nillable: b("nillable"),
            custom: b("custom") || name.to_ascii_lowercase().ends_with("__c"),
            options,
            restricted: b("restrictedPicklist"),
        });
    }
    Ok(CrmSchema::new(CrmKind::Salesforce, object, endpoint, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mapping::parse_mapping;

    const SALESFORCE_MAPPING: &str = include_str!("../../mappings/salesforce.toml");
    const LEAD: &str = include_str!("../../fixtures/salesforce/lead_describe.json");
    const CONTACT: &str = include_str!("../../fixtures/salesforce/contact_describe.json");
    const FILE: &str = "mappings/salesforce.toml";

    fn describe(text: &str) -> CrmSchema {
        let v: Value = serde_json::from_str(text).expect("fixture is JSON");
        from_salesforce_describe(&v).expect("fixture is a describe")
    }

    fn mapping(text: &str) -> Mapping {
        match parse_mapping(Path::new(FILE), text) {
            Ok(m) => m,
            Err(e) => panic!("mapping refused:\n{e}"),
        }
    }

    /// A Salesforce Lead mapping with `lines` (TOML) as its channels.
    fn lead_mapping(lines: &str) -> Mapping {
        mapping(&format!("crm = \"salesforce\"\nobject = \"Lead\"\n{lines}"))
    }

    fn check(m: &Mapping, s: &CrmSchema) -> SchemaCheck {
        check_mapping(m, Path::new(FILE), s, false)
    }

    fn only(c: &SchemaCheck) -> &SchemaProblem {
        assert_eq!(c.problems.len(), 1, "{:#?}", c.problems);
        &c.problems[0]
    }

    #[test]
    fn the_shipped_salesforce_mapping_fits_the_lead_describe() {
        let m = mapping(SALESFORCE_MAPPING);
        let s = describe(LEAD);
        assert_eq!(s.object, "Lead");
        let c = check(&m, &s);
        assert!(c.is_ok(), "{:#?}", c.problems);
        assert!(c.to_create.is_empty());
        assert_eq!(c.checked.len(), m.fields().len());
        assert!(c.checked.len() >= 10, "{:?}", c.checked);
    }

    #[test]
    fn the_shipped_salesforce_mapping_fits_the_contact_describe_too() {
        let m = mapping(&SALESFORCE_MAPPING.replace("object = \"Lead\"", "object = \"Contact\""));
        assert_eq!(m.object, "Contact");
        let c = check(&m, &describe(CONTACT));
        assert!(c.is_ok(), "{:#?}", c.problems);
    }

    #[test]
    fn a_mapping_for_another_object_is_one_problem_naming_both() {
        let m = mapping(SALESFORCE_MAPPING);
        let c = check(&m, &describe(CONTACT));
        let p = only(&c);
        assert_eq!(p.key, "object");
        assert!(matches!(p.problem, ProblemKind::WrongTarget { .. }));
        assert!(p.to_string().contains("Contact"), "{p}");
    }

    #[test]
    fn describe_reads_types_lengths_updateable_and_picklists() {
        let s = describe(LEAD);
        let email = s.get("Email").expect("Email");
        assert_eq!(
            (email.kind.clone(), email.length),
            (FieldKind::Email, Some(80))
        );
        assert!(email.updateable && !email.custom);
        let phone = s.get("Phone").expect("Phone");
        assert_eq!(
            (phone.kind.clone(), phone.length),
            (FieldKind::Phone, Some(40))
        );
        let formula = s.get("Email_Domain__c").expect("formula field");
        assert!(formula.calculated && !formula.updateable && formula.custom);
        let name = s.get("Name").expect("Name");
        assert!(!name.updateable, "Name is compound, not updateable");
        let status = s.get("Enrichment_Status__c").expect("status");
        assert_eq!(status.kind, FieldKind::Enumeration);
        assert!(status.restricted);
        assert_eq!(status.options, ["Full", "Partial", "Empty"]);
        assert_eq!(
            s.get("Enriched_At__c").map(|f| f.kind.clone()),
            Some(FieldKind::DateTime)
        );
        assert!(
            s.endpoint.starts_with("GET /services/data/v"),
            "{}",
            s.endpoint
        );
        assert!(
            s.endpoint.ends_with("/sobjects/Lead/describe"),
            "{}",
            s.endpoint
        );
        // There is no standard LinkedIn or personal-email field.
        assert!(
            s.fields()
                .all(|f| f.custom || !f.name.to_lowercase().contains("linkedin"))
        );
    }

    #[test]
    fn salesforce_names_are_matched_case_insensitively() {
        let m = lead_mapping(
            "[channels.phone]\nfield = \"enrichment_phone__C\"\nsource_field = \"PHONE_SOURCE__C\"\n",
        );
        let c = check(&m, &describe(LEAD));
        assert!(c.is_ok(), "{:#?}", c.problems);
        // HubSpot names are exact.
        let hs = CrmSchema::new(
            CrmKind::Hubspot,
            "contacts",
            "GET /crm/v3/properties/contacts",
            [CrmField::text("phone", "Phone Number")],
        );
        assert!(hs.get("phone").is_some());
        assert!(hs.get("Phone").is_none());
    }

    #[test]
    fn a_text_20_email_field_is_too_short() {
        let m = lead_mapping(
            "[channels.work_email]\nfield = \"Secondary_Email__c\"\nsource_field = \"Work_Email_Source__c\"\n",
        );
        let c = check(&m, &describe(LEAD));
        let p = only(&c);
        assert_eq!(p.key, "channels.work_email.field");
        assert_eq!(
            p.problem,
            ProblemKind::TooShort {
                length: 20,
                needed: EMAIL_MIN
            }
        );
        let line = p.to_string();
        assert!(
            line.contains(FILE) && line.contains("Secondary_Email__c"),
            "{line}"
        );
        assert!(line.contains("at least 80"), "{line}");
    }

    #[test]
    fn a_formula_field_is_read_only() {
        let m = lead_mapping(
            "[channels.work_email]\nfield = \"Enrichment_Work_Email__c\"\nsource_field = \"Email_Domain__c\"\n",
        );
        let c = check(&m, &describe(LEAD));
        let p = only(&c);
        assert_eq!(p.key, "channels.work_email.source_field");
        assert_eq!(p.problem, ProblemKind::ReadOnly { calculated: true });
        assert!(p.to_string().contains("formula"), "{p}");
    }

    #[test]
    fn a_system_field_is_read_only() {
        let m = lead_mapping(
            "[channels.phone]\nfield = \"Phone\"\nsource_field = \"Phone_Source__c\"\n[enriched_at]\nfield = \"LastModifiedDate\"\n",
        );
        let c = check(&m, &describe(LEAD));
        let p = only(&c);
        assert_eq!(p.key, "enriched_at.field");
        assert_eq!(p.problem, ProblemKind::ReadOnly { calculated: false });
    }

    #[test]
    fn a_typo_is_missing_with_the_right_closest_name() {
        let m = lead_mapping(
            "[channels.phone]\nfield = \"Enrichment_Phnoe__c\"\nsource_field = \"Phone_Source__c\"\n",
        );
        let s = describe(LEAD);
        // Even when creating were allowed, Salesforce fields are never created.
        let c = check_mapping(&m, Path::new(FILE), &s, true);
        let p = only(&c);
        assert_eq!(p.key, "channels.phone.field");
        assert_eq!(p.problem, ProblemKind::Missing { likely_typo: true });
        assert_eq!(
            p.closest.first().map(String::as_str),
            Some("Enrichment_Phone__c")
        );
        assert!(c.to_create.is_empty());
        let line = p.to_string();
        assert!(
            line.contains("did you mean `Enrichment_Phone__c`"),
            "{line}"
        );
    }

    #[test]
    fn a_missing_salesforce_custom_field_says_how_to_create_it() {
        let m = lead_mapping(
            "[channels.linkedin_url]\nfield = \"LinkedIn_Profile__c\"\nsource_field = \"LinkedIn_URL_Source__c\"\n",
        );
        let c = check(&m, &describe(LEAD));
        let p = only(&c);
        assert_eq!(p.problem, ProblemKind::Missing { likely_typo: false });
        assert!(
            p.hint
                .contains("Setup → Object Manager → Lead → Fields & Relationships → New"),
            "{}",
            p.hint
        );
        assert!(p.hint.contains("data type URL"), "{}", p.hint);
        assert!(
            p.hint
                .contains("no standard LinkedIn or personal-email field"),
            "{}",
            p.hint
        );
        assert!(p.hint.contains("field-level security"), "{}", p.hint);
    }

    #[test]
    fn a_missing_standard_looking_salesforce_name_says_custom_names_end_in_c() {
        let m = lead_mapping(
            "[channels.personal_email]\nfield = \"PersonalEmail\"\nsource_field = \"Personal_Email_Source__c\"\n",
        );
        let c = check(&m, &describe(LEAD));
        let p = only(&c);
        assert!(p.hint.contains("custom API names end in __c"), "{}", p.hint);
        assert!(p.hint.contains("data type Email"), "{}", p.hint);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let m = lead_mapping(
            r#"
[channels.work_email]
field = "Secondary_Email__c"
source_field = "Email_Domain__c"
[channels.phone]
field = "Enrichment_Phnoe__c"
source_field = "Phone_Source__c"
[channels.linkedin_url]
field = "Enrichment_Work_Email__c"
source_field = "LinkedIn_URL_Source__c"
[status]
field = "NumberOfEmployees"
[enriched_at]
field = "CreatedDate"
"#,
        );
        let c = check(&m, &describe(LEAD));
        let keys: Vec<&str> = c.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "channels.work_email.field",
                "channels.work_email.source_field",
                "channels.phone.field",
                "channels.linkedin_url.field",
                "status.field",
                "enriched_at.field",
            ]
        );
        // An email field cannot take a LinkedIn URL; a number no status.
        assert!(matches!(
            c.problems[3].problem,
            ProblemKind::WrongType { .. }
        ));
        assert!(matches!(
            c.problems[4].problem,
            ProblemKind::WrongType { .. }
        ));
    }

    #[test]
    fn a_phone_into_an_email_field_is_the_wrong_type() {
        let m = lead_mapping(
            "[channels.phone]\nfield = \"Email\"\nsource_field = \"Phone_Source__c\"\n",
        );
        let p = only(&check(&m, &describe(LEAD))).clone();
        match &p.problem {
            ProblemKind::WrongType { found, expected } => {
                assert_eq!(found, "email");
                assert!(expected.contains("phone"), "{expected}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_restricted_source_picklist_must_list_every_provider() {
        let m = lead_mapping(
            "[channels.work_email]\nfield = \"Enrichment_Work_Email__c\"\nsource_field = \"Work_Email_Source__c\"\n",
        );
        let s = describe(LEAD);
        // Without the providers, nothing to compare.
        assert!(check(&m, &s).is_ok());
        let opts = CheckOptions {
            can_create: false,
            providers: vec!["apollo".into(), "acme_data".into()],
        };
        let c = check_mapping_with(&m, Path::new(FILE), &s, &opts);
        let p = only(&c);
        assert_eq!(
            p.problem,
            ProblemKind::MissingOptions {
                missing: vec!["acme_data".into()]
            }
        );
        assert!(p.hint.contains("Values → New"), "{}", p.hint);
        // An unrestricted picklist takes any value.
        let mut loose = s.clone();
        let key = "work_email_source__c".to_string();
        if let Some(f) = loose.fields.get_mut(&key) {
            f.restricted = false;
        }
        assert!(check_mapping_with(&m, Path::new(FILE), &loose, &opts).is_ok());
    }

    #[test]
    fn id_and_date_sources_need_text_long_enough() {
        let m = lead_mapping(
            "source_format = \"id_and_date\"\n[channels.work_email]\nfield = \"Enrichment_Work_Email__c\"\nsource_field = \"Work_Email_Source__c\"\n[channels.phone]\nfield = \"Phone\"\nsource_field = \"Jigsaw\"\n",
        );
        let c = check(&m, &describe(LEAD));
        assert_eq!(c.problems.len(), 2, "{:#?}", c.problems);
        assert!(matches!(
            c.problems[0].problem,
            ProblemKind::WrongType { .. }
        ));
        // Jigsaw is Text(20): 20 + " YYYY-MM-DD" does not fit.
        assert_eq!(
            c.problems[1].problem,
            ProblemKind::TooShort {
                length: 20,
                needed: SOURCE_MIN + 11
            }
        );
    }

    #[test]
    fn status_enumerations_need_full_partial_empty() {
        let mut s = describe(LEAD);
        if let Some(f) = s.fields.get_mut("enrichment_status__c") {
            f.options = vec!["Full".into(), "Empty".into()];
        }
        let m = lead_mapping(
            "[channels.phone]\nfield = \"Phone\"\nsource_field = \"Phone_Source__c\"\n[status]\nfield = \"Enrichment_Status__c\"\n",
        );
        let p = only(&check(&m, &s)).clone();
        assert_eq!(
            p.problem,
            ProblemKind::MissingOptions {
                missing: vec!["Partial".into()]
            }
        );
    }

    #[test]
    fn fields_under_policy_never_need_only_exist() {
        let m = lead_mapping(
            "[channels.phone]\nfield = \"Phone\"\nsource_field = \"Phone_Source__c\"\n[enriched_at]\nfield = \"CreatedDate\"\npolicy = \"never\"\n",
        );
        assert!(check(&m, &describe(LEAD)).is_ok());
    }

    #[test]
    fn closest_names_are_plausible_only() {
        let s = describe(LEAD);
        assert_eq!(
            closest("Enrichment_Phnoe__c", &s, 3)[0],
            "Enrichment_Phone__c"
        );
        // By label: Jigsaw is "Data.com Key".
        assert_eq!(closest("datacom_key", &s, 1), ["Jigsaw"]);
        assert_eq!(closest("mobile_phone", &s, 1), ["MobilePhone"]);
        assert!(closest("Zodiac_Sign__c", &s, 3).is_empty());
        assert!(closest("Qq", &s, 3).is_empty());
        assert!(likely_typo("Enrichment_Phnoe__c", &s));
        assert!(likely_typo("mobile_phone", &s));
        assert!(!likely_typo("LinkedIn_Profile__c", &s));
        // A label alone does not make a typo: "Data.com Key" is Jigsaw.
        assert!(!likely_typo("datacom_key", &s));
    }

    #[test]
    fn hubspot_creates_missing_fields_but_not_likely_typos() {
        let s = CrmSchema::new(
            CrmKind::Hubspot,
            "contacts",
            "GET /crm/v3/properties/contacts",
            [
                CrmField::text("email", "Email"),
                CrmField::text("linkedin_url", "LinkedIn URL"),
            ],
        );
        let m = mapping(
            "crm = \"hubspot\"\nobject = \"contacts\"\n[channels.work_email]\nfield = \"enrichment_work_email\"\nsource_field = \"enrichment_work_email_source\"\n[channels.linkedin_url]\nfield = \"linkedin_ulr\"\nsource_field = \"enrichment_linkedin_url_source\"\n",
        );
        let c = check_mapping(&m, Path::new("mappings/hubspot.toml"), &s, true);
        assert_eq!(
            c.to_create,
            [
                "enrichment_work_email",
                "enrichment_work_email_source",
                "enrichment_linkedin_url_source"
            ]
        );
        let p = only(&c);
        assert_eq!(p.key, "channels.linkedin_url.field");
        assert_eq!(p.closest, ["linkedin_url"]);
        // Without create, all four are problems, with the HubSpot steps.
        let c = check_mapping(&m, Path::new("mappings/hubspot.toml"), &s, false);
        assert_eq!(c.problems.len(), 4);
        assert!(
            c.problems[0].hint.contains("Settings → Properties"),
            "{}",
            c.problems[0].hint
        );
        assert!(
            c.problems[0].hint.contains("create_properties = true"),
            "{}",
            c.problems[0].hint
        );
    }

    #[test]
    fn describe_errors_say_what_is_wrong() {
        let e = from_salesforce_describe(&serde_json::json!([1])).expect_err("array");
        assert!(e.to_string().contains("describe"), "{e}");
        let e =
            from_salesforce_describe(&serde_json::json!({"name": "Lead"})).expect_err("no fields");
        assert!(e.to_string().contains("`fields`"), "{e}");
        let e = from_salesforce_describe(
            &serde_json::json!({"name": "Lead", "fields": [{"type": "string"}]}),
        )
        .expect_err("no name");
        assert!(e.to_string().contains("field #0"), "{e}");
    }

    #[test]
    fn distance_counts_transpositions_once() {
        assert_eq!(distance("email", "emial"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}

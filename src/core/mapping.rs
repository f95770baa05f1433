//! Write-back mapping and the decision of what to write to one CRM record.
//!
//! A [`Mapping`] says, per channel, which CRM field receives the value and
//! which receives its Source, and which fields receive the enrichment status
//! and the time of the last enrichment; every field has an overwrite
//! [`Policy`] that protects values a person typed. [`decide`] compares a
//! record's current fields with what enrichd holds and returns one
//! [`FieldDecision`] per mapped field: the preview prints them, write-back
//! sends [`changes`]. Pure: the caller passes the record, the values, what
//! enrichd wrote before and the time.
//!
//! The rules, each tested below:
//! - `never` never writes; `if_empty` writes only an empty field;
//!   `if_enriched_by_us` writes an empty field or one still holding what
//!   enrichd last wrote there; `always` writes unless the field already holds
//!   the value.
//! - Values are compared in their canonical form (case of an email, spacing
//!   of a phone, spelling of a LinkedIn URL, an instant as epoch ms or ISO
//!   8601), so a field holding `John@X.com` is unchanged by `john@x.com`.
//! - A value is never written without its Source: when the Source field may
//!   not be written, neither is the value. A Source is written only with its
//!   value, or to correct the Source of a value enrichd itself wrote; never
//!   for a value enrichd did not supply.
//! - The enriched-at field is written only when some channel value is, so a
//!   pass with nothing new writes nothing: applying every write and deciding
//!   again yields no write.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::status::EnrichmentStatus;
use super::usable::{canonical_linkedin, normalise_email, normalise_phone};
use super::value::{ChannelValue, UnixMillis};

/// Which CRM a mapping writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrmKind {
    Hubspot,
    Salesforce,
}

impl CrmKind {
    pub const ALL: [CrmKind; 2] = [CrmKind::Hubspot, CrmKind::Salesforce];

    pub const fn as_str(self) -> &'static str {
        match self {
            CrmKind::Hubspot => "hubspot",
            CrmKind::Salesforce => "salesforce",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
    pub fn expected() -> &'static str {
        "hubspot, salesforce"
    }
}

impl fmt::Display for CrmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When enrichd may write a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Never write it (the mapping documents the field but leaves it alone).
    Never,
    /// Write only when the field is empty.
    IfEmpty,
    /// Write when the field is empty or still holds what enrichd last wrote
    /// there; a value someone else put there is kept.
    IfEnrichedByUs,
    /// Write whenever the value differs.
    Always,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::Never,
        Policy::IfEmpty,
        Policy::IfEnrichedByUs,
        Policy::Always,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Policy::Never => "never",
            Policy::IfEmpty => "if_empty",
            Policy::IfEnrichedByUs => "if_enriched_by_us",
            Policy::Always => "always",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
    pub fn expected() -> &'static str {
        "never, if_empty, if_enriched_by_us, always"
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a stored value is written into its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// As stored (already normalised: lower-case email, E.164 phone,
    /// canonical LinkedIn URL).
    None,
    /// Lower case (emails).
    Lowercase,
    /// E.164, e.g. `+14155552671` (phones).
    E164,
    /// National format, e.g. `(415) 555-2671`. Not implemented yet: the
    /// usability rules have no national formatter, so it writes E.164 (the
    /// config loader refuses it until it exists).
    National,
    /// `https://www.linkedin.com/in/<slug>`.
    CanonicalLinkedin,
}

impl Transform {
    pub const ALL: [Transform; 5] = [
        Transform::None,
        Transform::Lowercase,
        Transform::E164,
        Transform::National,
        Transform::CanonicalLinkedin,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Transform::None => "none",
            Transform::Lowercase => "lowercase",
            Transform::E164 => "e164",
            Transform::National => "national",
            Transform::CanonicalLinkedin => "canonical_linkedin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The form a channel's values are stored in.
    pub const fn natural(c: Channel) -> Transform {
        match c {
            Channel::WorkEmail | Channel::PersonalEmail => Transform::Lowercase,
            Channel::Phone => Transform::E164,
            Channel::LinkedinUrl => Transform::CanonicalLinkedin,
        }
    }

    /// Whether the transform makes sense for `c`'s values.
    pub fn fits(self, c: Channel) -> bool {
        self == Transform::None
            || match c {
                Channel::WorkEmail | Channel::PersonalEmail => self == Transform::Lowercase,
                Channel::Phone => matches!(self, Transform::E164 | Transform::National),
                Channel::LinkedinUrl => self == Transform::CanonicalLinkedin,
            }
    }

    /// The transforms that fit `c`, for error messages.
    pub fn expected_for(c: Channel) -> String {
        Self::ALL
            .into_iter()
            .filter(|t| t.fits(c))
            .map(Transform::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `value` as written into the field. A value the transform cannot read
    /// is written trimmed, as stored.
    pub fn apply(self, value: &str) -> String {
        let v = value.trim();
        match self {
            Transform::None => v.to_string(),
            Transform::Lowercase => v.to_lowercase(),
            // National formatting is left for later (see the variant): E.164.
            Transform::E164 | Transform::National => {
                normalise_phone(v, None).unwrap_or_else(|_| v.to_string())
            }
            Transform::CanonicalLinkedin => canonical_linkedin(v).unwrap_or_else(|_| v.to_string()),
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the enriched-at time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateFormat {
    /// Milliseconds since the epoch, e.g. `1773489600000` (HubSpot datetime).
    EpochMillis,
    /// ISO 8601 in UTC, e.g. `2026-03-14T12:00:00.000Z` (Salesforce DateTime).
    Iso8601,
}

impl DateFormat {
    pub const ALL: [DateFormat; 2] = [DateFormat::EpochMillis, DateFormat::Iso8601];

    pub const fn as_str(self) -> &'static str {
        match self {
            DateFormat::EpochMillis => "epoch_millis",
            DateFormat::Iso8601 => "iso8601",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
    pub fn expected() -> &'static str {
        "epoch_millis, iso8601"
    }
    /// The natural format of a CRM's datetime fields.
    pub const fn default_for(crm: CrmKind) -> DateFormat {
        match crm {
            CrmKind::Hubspot => DateFormat::EpochMillis,
            CrmKind::Salesforce => DateFormat::Iso8601,
        }
    }

    pub fn format(self, t: UnixMillis) -> String {
        match self {
            DateFormat::EpochMillis => t.to_string(),
            DateFormat::Iso8601 => DateTime::from_timestamp_millis(t)
                .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
                .unwrap_or_else(|| t.to_string()),
        }
    }
}

impl fmt::Display for DateFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a Source is written into a Source field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// The connector id, e.g. `apollo` (fits an enumeration field with one
    /// option per provider).
    #[default]
    Id,
    /// The connector id and the UTC day the value was found, e.g.
    /// `apollo 2026-03-14` (text fields only).
    IdAndDate,
}

impl SourceFormat {
    pub const ALL: [SourceFormat; 2] = [SourceFormat::Id, SourceFormat::IdAndDate];

    pub const fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Id => "id",
            SourceFormat::IdAndDate => "id_and_date",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
    pub fn expected() -> &'static str {
        "id, id_and_date"
    }

    pub fn format(self, v: &ChannelValue) -> String {
        match self {
            SourceFormat::Id => v.source.as_str().to_string(),
            SourceFormat::IdAndDate => match DateTime::from_timestamp_millis(v.found_at) {
                Some(d) => format!("{} {}", v.source, d.format("%Y-%m-%d")),
                None => v.source.as_str().to_string(),
            },
        }
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One CRM field enrichd writes and when it may.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRule {
    /// The CRM's internal name (HubSpot property name, Salesforce API name).
    pub field: String,
    pub policy: Policy,
    pub transform: Transform,
}

impl FieldRule {
    pub fn new(field: impl Into<String>, policy: Policy) -> Self {
        FieldRule {
            field: field.into(),
            policy,
            transform: Transform::None,
        }
    }
    pub fn transform(mut self, t: Transform) -> Self {
        self.transform = t;
        self
    }
}

/// Where one channel goes: its value and, optionally, its Source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRule {
    pub value: FieldRule,
    pub source: Option<FieldRule>,
}

/// A destination's write-back mapping. Field names are distinct (the config
/// loader refuses a field written by two rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub crm: CrmKind,
    /// The CRM object written: `contacts` (HubSpot), `Lead` or `Contact`
    /// (Salesforce).
    pub object: String,
    pub channels: BTreeMap<Channel, ChannelRule>,
    /// Receives `Full` / `Partial` / `Empty`.
    pub status: Option<FieldRule>,
    /// Receives the time of the pass that wrote a channel value.
    pub enriched_at: Option<FieldRule>,
    pub enriched_at_format: DateFormat,
    pub source_format: SourceFormat,
}

impl Mapping {
    /// Every CRM field the mapping writes, in a stable order (per channel
    /// value then Source, then status, then enriched-at): the properties a
    /// pull must read and a schema check must find.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for rule in self.channels.values() {
            out.push(rule.value.field.as_str());
            if let Some(s) = &rule.source {
                out.push(s.field.as_str());
            }
        }
        out.extend(self.status.iter().map(|r| r.field.as_str()));
        out.extend(self.enriched_at.iter().map(|r| r.field.as_str()));
        out
    }
}

/// The current values of a record's fields (`None`, empty or blank = empty).
pub type CrmFields = BTreeMap<String, Option<String>>;

/// Per field, the last value enrichd wrote there.
pub type WrittenByUs = BTreeMap<String, String>;

/// What a field receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldRole {
    /// A channel's value.
    Value,
    /// A channel's Source.
    Source,
    Status,
    EnrichedAt,
}

impl FieldRole {
    pub const fn as_str(self) -> &'static str {
        match self {
            FieldRole::Value => "value",
            FieldRole::Source => "source",
            FieldRole::Status => "status",
            FieldRole::EnrichedAt => "enriched_at",
        }
    }
}

/// Why a field is not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The field already holds the value (compared in canonical form).
    Unchanged,
    /// Policy `if_empty` or `if_enriched_by_us`, and the field holds a value
    /// enrichd did not write.
    HumanValue,
    /// Policy `if_empty`, and the field holds what enrichd wrote before.
    NotEmpty,
    /// Policy `never`.
    PolicyNever,
    /// Nothing is stored for the channel (or the lead has no status).
    NoValue,
    /// The stored value came from the CRM record itself, not from enrichd.
    FromCrm,
    /// The value is not written, so its Source is not written either.
    SourceWithoutValue,
    /// The value would be written but its Source field may not be, and a
    /// value is never written without its Source.
    SourceProtected,
    /// The value field already holds the value but enrichd did not write it
    /// there, so no Source is claimed for it.
    ValueNotOurs,
    /// Enriched-at: no channel value is written in this pass.
    NoChannelWritten,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Unchanged => "already holds this value",
            SkipReason::HumanValue => {
                "holds a value enrichd did not write, which the policy protects"
            }
            SkipReason::NotEmpty => "not empty (policy if_empty)",
            SkipReason::PolicyNever => "policy never: enrichd does not write this field",
            SkipReason::NoValue => "enrichd holds no value for it",
            SkipReason::FromCrm => "the value came from the CRM record, not from a provider",
            SkipReason::SourceWithoutValue => {
                "its value is not written, so neither is its Source"
            }
            SkipReason::SourceProtected => {
                "its Source field may not be written, and a value is never written without its Source"
            }
            SkipReason::ValueNotOurs => {
                "the value field holds this value but enrichd did not write it, so no Source is claimed"
            }
            SkipReason::NoChannelWritten => "no channel value is written in this pass",
        })
    }
}

/// Write the proposed value, or skip the field and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Write,
    Skip(SkipReason),
}

impl Action {
    pub fn is_write(self) -> bool {
        self == Action::Write
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Write => f.write_str("write"),
            Action::Skip(r) => write!(f, "skip: {r}"),
        }
    }
}

/// The decision for one mapped field of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDecision {
    pub field: String,
    pub role: FieldRole,
    /// The channel of a value or Source field.
    pub channel: Option<Channel>,
    pub policy: Policy,
    /// The field's current value, trimmed; `None` when empty.
    pub current: Option<String>,
    /// What enrichd would write (shown on skips too); `None` when it holds
    /// nothing for the field.
    pub proposed: Option<String>,
    /// The Source (as written) of the channel's stored value.
    pub source: Option<String>,
    pub action: Action,
}

/// Decides every mapped field of one record. `values` are the lead's stored
/// usable values, `status` its enrichment status (`None`: in no audience),
/// `ours` what enrichd last wrote to each field, `now` the time written to
/// the enriched-at field.
pub fn decide(
    mapping: &Mapping,
    record: &CrmFields,
    values: &BTreeMap<Channel, ChannelValue>,
    status: Option<EnrichmentStatus>,
    ours: &WrittenByUs,
    now: UnixMillis,
) -> Vec<FieldDecision> {
    let mut out = Vec::new();
    let mut value_written = false;
    for (&channel, rule) in &mapping.channels {
        let (value, source) = decide_channel(
            channel,
            rule,
            mapping.source_format,
            record,
            values.get(&channel),
            ours,
        );
        value_written |= value.action.is_write();
        out.push(value);
        out.extend(source);
    }
    if let Some(rule) = &mapping.status {
        let proposed = status.map(|s| s.to_string());
        out.push(decide_plain(
            rule,
            FieldRole::Status,
            record,
            ours,
            proposed,
        ));
    }
    if let Some(rule) = &mapping.enriched_at {
        let proposed = Some(mapping.enriched_at_format.format(now));
        let mut d = decide_plain(rule, FieldRole::EnrichedAt, record, ours, proposed);
        if !value_written && d.action != Action::Skip(SkipReason::PolicyNever) {
            d.action = Action::Skip(SkipReason::NoChannelWritten);
        }
        out.push(d);
    }
    out
}

/// Field → new value, for the writes only.
pub fn changes(decisions: &[FieldDecision]) -> BTreeMap<String, String> {
    decisions
        .iter()
        .filter(|d| d.action.is_write())
        .filter_map(|d| Some((d.field.clone(), d.proposed.clone()?)))
        .collect()
}

/// Applies the writes to `record` and records them in `ours`: what the CRM
/// and enrichd's memory hold once a write-back succeeded.
pub fn apply(decisions: &[FieldDecision], record: &mut CrmFields, ours: &mut WrittenByUs) {
    for (field, value) in changes(decisions) {
        record.insert(field.clone(), Some(value.clone()));
        ours.insert(field, value);
    }
}

/// How two values of a field are compared.
#[derive(Clone, Copy)]
enum Norm {
    Channel(Channel),
    /// Trimmed, case-insensitive (Sources, statuses).
    Text,
    /// An instant: epoch ms or ISO 8601 (HubSpot reads a datetime back as
    /// ISO 8601 whatever was written).
    Instant,
}

impl Norm {
    fn of(role: FieldRole) -> Norm {
        match role {
            FieldRole::EnrichedAt => Norm::Instant,
            _ => Norm::Text,
        }
    }

    fn canon(self, s: &str) -> String {
        let t = s.trim();
        match self {
            Norm::Channel(c) if c.is_email() => {
                normalise_email(t).unwrap_or_else(|_| t.to_lowercase())
            }
            Norm::Channel(Channel::Phone) => {
                normalise_phone(t, None).unwrap_or_else(|_| t.to_string())
            }
            Norm::Channel(_) => canonical_linkedin(t).unwrap_or_else(|_| t.to_string()),
            Norm::Text => t.to_lowercase(),
            Norm::Instant => parse_instant(t).map_or_else(|| t.to_string(), |ms| ms.to_string()),
        }
    }

    fn same(self, a: &str, b: &str) -> bool {
        a == b || self.canon(a) == self.canon(b)
    }
}

/// Epoch milliseconds from `1773489600000`, `2026-03-14T12:00:00Z`,
/// `2026-03-14T12:00:00.000+0000` (Salesforce) or `2026-03-14` (midnight UTC).
fn parse_instant(s: &str) -> Option<UnixMillis> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(d.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

/// The field's value, trimmed; `None` when absent, null or blank.
fn current_of<'a>(record: &'a CrmFields, field: &str) -> Option<&'a str> {
    record
        .get(field)?
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Whether `policy` lets enrichd replace `current` (already known to differ
/// from the proposed value).
fn allowed(
    policy: Policy,
    norm: Norm,
    current: Option<&str>,
    ours: Option<&str>,
) -> Result<(), SkipReason> {
    let is_ours = || matches!((current, ours), (Some(c), Some(o)) if norm.same(c, o));
    match (policy, current) {
        (Policy::Never, _) => Err(SkipReason::PolicyNever),
        (Policy::Always, _) | (_, None) => Ok(()),
        (Policy::IfEmpty, Some(_)) if is_ours() => Err(SkipReason::NotEmpty),
        (Policy::IfEnrichedByUs, Some(_)) if is_ours() => Ok(()),
        (Policy::IfEmpty | Policy::IfEnrichedByUs, Some(_)) => Err(SkipReason::HumanValue),
    }
}

/// A field with no companion: status or enriched-at.
fn decide_plain(
    rule: &FieldRule,
    role: FieldRole,
    record: &CrmFields,
    ours: &WrittenByUs,
    proposed: Option<String>,
) -> FieldDecision {
    let norm = Norm::of(role);
    let current = current_of(record, &rule.field);
    let action = match &proposed {
        _ if rule.policy == Policy::Never => Action::Skip(SkipReason::PolicyNever),
        None => Action::Skip(SkipReason::NoValue),
        Some(p) if current.is_some_and(|c| norm.same(c, p)) => Action::Skip(SkipReason::Unchanged),
        Some(_) => match allowed(
            rule.policy,
            norm,
            current,
            ours.get(&rule.field).map(String::as_str),
        ) {
            Ok(()) => Action::Write,
            Err(r) => Action::Skip(r),
        },
    };
    FieldDecision {
        field: rule.field.clone(),
        role,
        channel: None,
        policy: rule.policy,
        current: current.map(str::to_string),
        proposed,
        source: None,
        action,
    }
}

/// A channel's value field and, when mapped, its Source field.
fn decide_channel(
    channel: Channel,
    rule: &ChannelRule,
    source_format: SourceFormat,
    record: &CrmFields,
    stored: Option<&ChannelValue>,
    ours: &WrittenByUs,
) -> (FieldDecision, Option<FieldDecision>) {
    let norm = Norm::Channel(channel);
    let vr = &rule.value;
    let current = current_of(record, &vr.field);
    let our_value = ours.get(&vr.field).map(String::as_str);
    let proposed = stored.map(|v| vr.transform.apply(&v.value));
    let source_text = stored.map(|v| source_format.format(v));
    let action = match (stored, &proposed) {
        _ if vr.policy == Policy::Never => Action::Skip(SkipReason::PolicyNever),
        (None, _) | (_, None) => Action::Skip(SkipReason::NoValue),
        (Some(v), _) if v.source.is_crm() => Action::Skip(SkipReason::FromCrm),
        (_, Some(p)) if current.is_some_and(|c| norm.same(c, p)) => {
            Action::Skip(SkipReason::Unchanged)
        }
        _ => match allowed(vr.policy, norm, current, our_value) {
            Ok(()) => Action::Write,
            Err(r) => Action::Skip(r),
        },
    };
    let mut value = FieldDecision {
        field: vr.field.clone(),
        role: FieldRole::Value,
        channel: Some(channel),
        policy: vr.policy,
        current: current.map(str::to_string),
        proposed,
        source: source_text.clone(),
        action,
    };
    let Some(sr) = &rule.source else {
        return (value, None);
    };

    let s_current = current_of(record, &sr.field);
    let s_same = matches!((s_current, &source_text), (Some(c), Some(p)) if Norm::Text.same(c, p));
    // May the Source field take the value's Source?
    let s_allowed = if sr.policy == Policy::Never {
        Err(SkipReason::PolicyNever)
    } else if s_same {
        Ok(())
    } else {
        allowed(
            sr.policy,
            Norm::Text,
            s_current,
            ours.get(&sr.field).map(String::as_str),
        )
    };
    let value_is_ours = matches!((current, our_value), (Some(c), Some(o)) if norm.same(c, o));
    let s_action = match value.action {
        // Written together, even when the Source field already holds it, so
        // a value never reaches the CRM without its Source.
        Action::Write => match s_allowed {
            Ok(()) => Action::Write,
            Err(r) => {
                value.action = Action::Skip(SkipReason::SourceProtected);
                Action::Skip(r)
            }
        },
        // The value is in place: correct its Source only if enrichd put the
        // value there.
        Action::Skip(SkipReason::Unchanged) => {
            if s_same {
                Action::Skip(SkipReason::Unchanged)
            } else if !value_is_ours {
                Action::Skip(SkipReason::ValueNotOurs)
            } else {
                match s_allowed {
                    Ok(()) => Action::Write,
                    Err(r) => Action::Skip(r),
                }
            }
        }
        Action::Skip(_) => Action::Skip(SkipReason::SourceWithoutValue),
    };
    let source = FieldDecision {
        field: sr.field.clone(),
        role: FieldRole::Source,
        channel: Some(channel),
        policy: sr.policy,
        current: s_current.map(str::to_string),
        proposed: source_text.clone(),
        source: source_text,
        action: s_action,
    };
    (value, Some(source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::value::{Source, Verification};

    const NOW: UnixMillis = 1_773_489_600_000; // 2026-03-14T12:00:00Z

    fn cv(channel: Channel, value: &str, source: &str) -> ChannelValue {
        ChannelValue {
            channel,
            value: value.into(),
            source: Source(source.into()),
            verification: Verification::Verified,
            found_at: NOW - 86_400_000,
            verified_at: None,
        }
    }

    fn field_name(c: Channel) -> String {
        format!("enrichment_{c}")
    }

    fn rule(c: Channel, policy: Policy) -> ChannelRule {
        ChannelRule {
            value: FieldRule::new(field_name(c), policy).transform(Transform::natural(c)),
            source: Some(FieldRule::new(format!("enrichment_{c}_source"), policy)),
        }
    }

    /// The shipped HubSpot mapping, with every value under `policy`.
    fn mapping(policy: Policy) -> Mapping {
        Mapping {
            crm: CrmKind::Hubspot,
            object: "contacts".into(),
            channels: Channel::ALL.iter().map(|&c| (c, rule(c, policy))).collect(),
            status: Some(FieldRule::new("enrichment_status", Policy::Always)),
            enriched_at: Some(FieldRule::new("enrichment_enriched_at", Policy::Always)),
            enriched_at_format: DateFormat::EpochMillis,
            source_format: SourceFormat::Id,
        }
    }

    fn record(pairs: &[(&str, &str)]) -> CrmFields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    fn values(vs: &[ChannelValue]) -> BTreeMap<Channel, ChannelValue> {
        vs.iter().map(|v| (v.channel, v.clone())).collect()
    }

    fn find<'a>(ds: &'a [FieldDecision], field: &str) -> &'a FieldDecision {
        ds.iter()
            .find(|d| d.field == field)
            .unwrap_or_else(|| panic!("no decision for {field}: {ds:#?}"))
    }

    fn action(ds: &[FieldDecision], field: &str) -> Action {
        find(ds, field).action
    }

    fn skip(r: SkipReason) -> Action {
        Action::Skip(r)
    }

    const WE: &str = "enrichment_work_email";
    const WES: &str = "enrichment_work_email_source";

    fn email() -> BTreeMap<Channel, ChannelValue> {
        values(&[cv(Channel::WorkEmail, "john@x.com", "apollo")])
    }

    /// Decides, applies the writes, decides again: the second pass must
    /// write nothing. Returns the first pass.
    fn decide_twice(
        m: &Mapping,
        rec: &CrmFields,
        vals: &BTreeMap<Channel, ChannelValue>,
        status: Option<EnrichmentStatus>,
        ours: &WrittenByUs,
    ) -> Vec<FieldDecision> {
        let first = decide(m, rec, vals, status, ours, NOW);
        let (mut rec2, mut ours2) = (rec.clone(), ours.clone());
        apply(&first, &mut rec2, &mut ours2);
        for now in [NOW, NOW + 3_600_000] {
            let again = decide(m, &rec2, vals, status, &ours2, now);
            assert!(
                changes(&again).is_empty(),
                "not idempotent: {:?} after {:?}",
                changes(&again),
                changes(&first)
            );
        }
        first
    }

    #[test]
    fn an_empty_record_receives_every_value_with_its_source_status_and_time() {
        let m = mapping(Policy::IfEnrichedByUs);
        let vals = values(&[
            cv(Channel::WorkEmail, "john@x.com", "apollo"),
            cv(Channel::PersonalEmail, "john@gmail.com", "pdl"),
            cv(Channel::Phone, "+14155552671", "fullenrich"),
            cv(
                Channel::LinkedinUrl,
                "https://www.linkedin.com/in/john-doe",
                "apollo",
            ),
        ]);
        let ds = decide_twice(
            &m,
            &CrmFields::new(),
            &vals,
            Some(EnrichmentStatus::Full),
            &WrittenByUs::new(),
        );
        assert!(ds.iter().all(|d| d.action.is_write()), "{ds:#?}");
        let c = changes(&ds);
        assert_eq!(c.len(), 10);
        assert_eq!(c[WE], "john@x.com");
        assert_eq!(c[WES], "apollo");
        assert_eq!(c["enrichment_phone"], "+14155552671");
        assert_eq!(c["enrichment_phone_source"], "fullenrich");
        assert_eq!(c["enrichment_status"], "Full");
        assert_eq!(c["enrichment_enriched_at"], NOW.to_string());
        assert_eq!(
            m.fields().len(),
            10,
            "fields() names every written field once"
        );
        assert!(m.fields().iter().all(|f| c.contains_key(*f)));
    }

    #[test]
    fn a_human_email_is_kept_under_if_empty_and_if_enriched_by_us() {
        let rec = record(&[(WE, "John.Doe@Personal.com")]);
        for policy in [Policy::IfEmpty, Policy::IfEnrichedByUs] {
            let ds = decide_twice(&mapping(policy), &rec, &email(), None, &WrittenByUs::new());
            assert_eq!(action(&ds, WE), skip(SkipReason::HumanValue), "{policy}");
            assert_eq!(action(&ds, WES), skip(SkipReason::SourceWithoutValue));
            assert_eq!(
                action(&ds, "enrichment_enriched_at"),
                skip(SkipReason::NoChannelWritten)
            );
            assert_eq!(
                find(&ds, WE).current.as_deref(),
                Some("John.Doe@Personal.com")
            );
            assert_eq!(find(&ds, WE).proposed.as_deref(), Some("john@x.com"));
        }
        // Something enrichd wrote earlier does not make a human value ours.
        let ours: WrittenByUs = [(WE.to_string(), "old@x.com".to_string())].into();
        let ds = decide(
            &mapping(Policy::IfEnrichedByUs),
            &rec,
            &email(),
            None,
            &ours,
            NOW,
        );
        assert_eq!(action(&ds, WE), skip(SkipReason::HumanValue));
    }

    #[test]
    fn a_human_email_is_overwritten_under_always_with_its_source() {
        let rec = record(&[(WE, "john.doe@personal.com"), (WES, "typed by hand")]);
        let ds = decide_twice(
            &mapping(Policy::Always),
            &rec,
            &email(),
            None,
            &WrittenByUs::new(),
        );
        assert_eq!(action(&ds, WE), Action::Write);
        assert_eq!(action(&ds, WES), Action::Write);
        assert_eq!(changes(&ds)[WES], "apollo");
        assert_eq!(action(&ds, "enrichment_enriched_at"), Action::Write);
    }

    #[test]
    fn if_enriched_by_us_replaces_what_enrichd_wrote_before() {
        let rec = record(&[(WE, " Old@X.com "), (WES, "hunter")]);
        let ours: WrittenByUs = [
            (WE.to_string(), "old@x.com".to_string()),
            (WES.to_string(), "hunter".to_string()),
        ]
        .into();
        let ds = decide_twice(
            &mapping(Policy::IfEnrichedByUs),
            &rec,
            &email(),
            None,
            &ours,
        );
        assert_eq!(action(&ds, WE), Action::Write);
        assert_eq!(action(&ds, WES), Action::Write);
        // if_empty does not, even for enrichd's own value.
        let ds = decide_twice(&mapping(Policy::IfEmpty), &rec, &email(), None, &ours);
        assert_eq!(action(&ds, WE), skip(SkipReason::NotEmpty));
        assert_eq!(action(&ds, WES), skip(SkipReason::SourceWithoutValue));
    }

    #[test]
    fn if_empty_treats_blank_as_empty() {
        let rec = record(&[(WE, "   "), (WES, "")]);
        let ds = decide_twice(
            &mapping(Policy::IfEmpty),
            &rec,
            &email(),
            None,
            &WrittenByUs::new(),
        );
        assert_eq!(action(&ds, WE), Action::Write);
        assert_eq!(action(&ds, WES), Action::Write);
        assert_eq!(find(&ds, WE).current, None);
    }

    #[test]
    fn never_writes_nothing() {
        let ds = decide_twice(
            &mapping(Policy::Never),
            &CrmFields::new(),
            &email(),
            None,
            &WrittenByUs::new(),
        );
        assert_eq!(action(&ds, WE), skip(SkipReason::PolicyNever));
        assert_eq!(action(&ds, WES), skip(SkipReason::SourceWithoutValue));
        let mut m = mapping(Policy::Always);
        m.status = Some(FieldRule::new("enrichment_status", Policy::Never));
        let ds = decide(
            &m,
            &CrmFields::new(),
            &email(),
            Some(EnrichmentStatus::Full),
            &WrittenByUs::new(),
            NOW,
        );
        assert_eq!(
            action(&ds, "enrichment_status"),
            skip(SkipReason::PolicyNever)
        );
    }

    #[test]
    fn nothing_stored_means_nothing_written() {
        let rec = record(&[(WE, "john@x.com")]);
        let ds = decide_twice(
            &mapping(Policy::Always),
            &rec,
            &BTreeMap::new(),
            None,
            &WrittenByUs::new(),
        );
        assert_eq!(action(&ds, WE), skip(SkipReason::NoValue));
        assert_eq!(find(&ds, WE).proposed, None);
        assert_eq!(action(&ds, WES), skip(SkipReason::SourceWithoutValue));
        assert_eq!(action(&ds, "enrichment_status"), skip(SkipReason::NoValue));
        assert!(changes(&ds).is_empty());
    }

    #[test]
    fn a_value_from_the_crm_is_not_written_back_nor_given_a_source() {
        let vals = values(&[cv(Channel::Phone, "+14155552671", Source::CRM)]);
        let ds = decide_twice(
            &mapping(Policy::Always),
            &CrmFields::new(),
            &vals,
            None,
            &WrittenByUs::new(),
        );
        assert_eq!(action(&ds, "enrichment_phone"), skip(SkipReason::FromCrm));
        assert_eq!(
            action(&ds, "enrichment_phone_source"),
            skip(SkipReason::SourceWithoutValue)
        );
    }

    #[test]
    fn equality_is_by_canonical_form() {
        let vals = values(&[
            cv(Channel::WorkEmail, "john@x.com", "apollo"),
            cv(Channel::Phone, "+14155552671", "apollo"),
            cv(
                Channel::LinkedinUrl,
                "https://www.linkedin.com/in/john-doe",
                "apollo",
            ),
        ]);
        let rec = record(&[
            (WE, "John@X.com"),
            (WES, "Apollo"),
            ("enrichment_phone", "+1 (415) 555-2671"),
            ("enrichment_phone_source", "apollo"),
            (
                "enrichment_linkedin_url",
                "http://uk.linkedin.com/in/John-Doe/",
            ),
            ("enrichment_linkedin_url_source", "apollo"),
            ("enrichment_status", "full"),
        ]);
        let ds = decide_twice(
            &mapping(Policy::Always),
            &rec,
            &vals,
            Some(EnrichmentStatus::Full),
            &WrittenByUs::new(),
        );
        for f in [
            WE,
            WES,
            "enrichment_phone",
            "enrichment_phone_source",
            "enrichment_linkedin_url",
            "enrichment_linkedin_url_source",
            "enrichment_status",
        ] {
            assert_eq!(action(&ds, f), skip(SkipReason::Unchanged), "{f}");
        }
        assert_eq!(
            action(&ds, "enrichment_enriched_at"),
            skip(SkipReason::NoChannelWritten)
        );
        assert!(changes(&ds).is_empty());
    }

    #[test]
    fn the_proposed_value_is_transformed() {
        let mut m = mapping(Policy::Always);
        m.channels.insert(
            Channel::WorkEmail,
            ChannelRule {
                value: FieldRule::new(WE, Policy::Always).transform(Transform::Lowercase),
                source: None,
            },
        );
        let vals = values(&[
            cv(Channel::WorkEmail, "John@X.com", "apollo"),
            cv(Channel::Phone, "+1 415 555 2671", "apollo"),
            cv(Channel::LinkedinUrl, "linkedin.com/in/John-Doe/", "apollo"),
        ]);
        let c = changes(&decide(
            &m,
            &CrmFields::new(),
            &vals,
            None,
            &WrittenByUs::new(),
            NOW,
        ));
        assert_eq!(c[WE], "john@x.com");
        assert_eq!(c["enrichment_phone"], "+14155552671");
        assert_eq!(
            c["enrichment_linkedin_url"],
            "https://www.linkedin.com/in/john-doe"
        );
        assert!(!c.contains_key(WES), "no Source field mapped");
        assert_eq!(Transform::None.apply(" A@B.co "), "A@B.co");
        assert_eq!(Transform::National.apply("+14155552671"), "+14155552671");
    }

    #[test]
    fn the_source_of_our_unchanged_value_is_corrected() {
        // enrichd wrote john@x.com from hunter; now apollo supplied it.
        let rec = record(&[(WE, "john@x.com"), (WES, "hunter")]);
        let ours: WrittenByUs = [
            (WE.to_string(), "john@x.com".to_string()),
            (WES.to_string(), "hunter".to_string()),
        ]
        .into();
        let ds = decide_twice(
            &mapping(Policy::IfEnrichedByUs),
            &rec,
            &email(),
            None,
            &ours,
        );
        assert_eq!(action(&ds, WE), skip(SkipReason::Unchanged));
        assert_eq!(action(&ds, WES), Action::Write);
        assert_eq!(changes(&ds)[WES], "apollo");
        assert_eq!(
            action(&ds, "enrichment_enriched_at"),
            skip(SkipReason::NoChannelWritten),
            "a Source correction is not a new value"
        );
        // ... but not over a Source a person typed under if_enriched_by_us.
        let rec = record(&[(WE, "john@x.com"), (WES, "trade show")]);
        let ds = decide_twice(
            &mapping(Policy::IfEnrichedByUs),
            &rec,
            &email(),
            None,
            &ours,
        );
        assert_eq!(action(&ds, WES), skip(SkipReason::HumanValue));
    }

    #[test]
    fn no_source_is_claimed_for_a_value_enrichd_did_not_write() {
        // A person typed the same address enrichd found.
        let rec = record(&[(WE, "John@X.com")]);
        for policy in Policy::ALL {
            let ds = decide_twice(&mapping(policy), &rec, &email(), None, &WrittenByUs::new());
            if policy != Policy::Never {
                assert_eq!(action(&ds, WE), skip(SkipReason::Unchanged), "{policy}");
                assert_eq!(action(&ds, WES), skip(SkipReason::ValueNotOurs), "{policy}");
            }
            assert!(changes(&ds).is_empty(), "{policy}");
        }
    }

    #[test]
    fn a_value_is_never_written_without_its_source() {
        // The value field is empty but a person typed into the Source field.
        let rec = record(&[(WES, "trade show")]);
        let ds = decide_twice(
            &mapping(Policy::IfEnrichedByUs),
            &rec,
            &email(),
            None,
            &WrittenByUs::new(),
        );
        assert_eq!(action(&ds, WE), skip(SkipReason::SourceProtected));
        assert_eq!(action(&ds, WES), skip(SkipReason::HumanValue));
        assert!(!changes(&ds).contains_key(WE));
        // A Source field under `never` blocks its value.
        let mut m = mapping(Policy::Always);
        if let Some(r) = m.channels.get_mut(&Channel::WorkEmail) {
            r.source = Some(FieldRule::new(WES, Policy::Never));
        }
        let ds = decide_twice(&m, &CrmFields::new(), &email(), None, &WrittenByUs::new());
        assert_eq!(action(&ds, WE), skip(SkipReason::SourceProtected));
        assert_eq!(action(&ds, WES), skip(SkipReason::PolicyNever));
        // The Source goes with its value even when the field already holds it.
        let rec = record(&[(WES, "apollo")]);
        let ds = decide_twice(
            &mapping(Policy::IfEmpty),
            &rec,
            &email(),
            None,
            &WrittenByUs::new(),
        );
        assert_eq!(action(&ds, WE), Action::Write);
        assert_eq!(action(&ds, WES), Action::Write);
    }

    #[test]
    fn status_is_written_when_it_differs() {
        let m = mapping(Policy::IfEnrichedByUs);
        let rec = record(&[("enrichment_status", "Partial")]);
        let ds = decide_twice(
            &m,
            &rec,
            &BTreeMap::new(),
            Some(EnrichmentStatus::Full),
            &WrittenByUs::new(),
        );
        assert_eq!(action(&ds, "enrichment_status"), Action::Write);
        assert_eq!(changes(&ds)["enrichment_status"], "Full");
        let ds = decide_twice(
            &m,
            &rec,
            &BTreeMap::new(),
            Some(EnrichmentStatus::Partial),
            &WrittenByUs::new(),
        );
        assert_eq!(
            action(&ds, "enrichment_status"),
            skip(SkipReason::Unchanged)
        );
        // Under if_enriched_by_us a status someone else set is kept.
        let mut m2 = m.clone();
        m2.status = Some(FieldRule::new("enrichment_status", Policy::IfEnrichedByUs));
        let ds = decide_twice(
            &m2,
            &rec,
            &BTreeMap::new(),
            Some(EnrichmentStatus::Full),
            &WrittenByUs::new(),
        );
        assert_eq!(
            action(&ds, "enrichment_status"),
            skip(SkipReason::HumanValue)
        );
    }

    #[test]
    fn enriched_at_only_moves_with_a_written_value() {
        let m = mapping(Policy::IfEnrichedByUs);
        let rec = record(&[("enrichment_enriched_at", "1000")]);
        let ds = decide_twice(&m, &rec, &BTreeMap::new(), None, &WrittenByUs::new());
        assert_eq!(
            action(&ds, "enrichment_enriched_at"),
            skip(SkipReason::NoChannelWritten)
        );
        let ds = decide_twice(&m, &rec, &email(), None, &WrittenByUs::new());
        assert_eq!(changes(&ds)["enrichment_enriched_at"], NOW.to_string());

        let mut iso = m.clone();
        iso.enriched_at_format = DateFormat::Iso8601;
        let ds = decide_twice(&iso, &rec, &email(), None, &WrittenByUs::new());
        assert_eq!(
            changes(&ds)["enrichment_enriched_at"],
            "2026-03-14T12:00:00.000Z"
        );
    }

    #[test]
    fn a_datetime_read_back_in_iso_form_is_still_ours() {
        // enrichd wrote epoch ms; HubSpot returns the property as ISO 8601.
        let mut m = mapping(Policy::IfEnrichedByUs);
        m.enriched_at = Some(FieldRule::new(
            "enrichment_enriched_at",
            Policy::IfEnrichedByUs,
        ));
        let ours: WrittenByUs = [(
            "enrichment_enriched_at".to_string(),
            "1773403200000".to_string(),
        )]
        .into();
        for read_back in [
            "2026-03-13T12:00:00Z",
            "2026-03-13T12:00:00.000Z",
            "2026-03-13T12:00:00.000+0000",
        ] {
            let rec = record(&[("enrichment_enriched_at", read_back)]);
            let ds = decide(&m, &rec, &email(), None, &ours, NOW);
            assert_eq!(
                action(&ds, "enrichment_enriched_at"),
                Action::Write,
                "{read_back}"
            );
        }
        let rec = record(&[("enrichment_enriched_at", "2026-03-14T12:00:00Z")]);
        let ds = decide(&m, &rec, &email(), None, &ours, NOW);
        assert_eq!(
            action(&ds, "enrichment_enriched_at"),
            skip(SkipReason::Unchanged)
        );
        assert_eq!(parse_instant("2026-03-14"), Some(NOW - 12 * 3_600_000));
    }

    #[test]
    fn source_format_with_date() {
        let v = cv(Channel::WorkEmail, "john@x.com", "apollo");
        assert_eq!(SourceFormat::Id.format(&v), "apollo");
        assert_eq!(SourceFormat::IdAndDate.format(&v), "apollo 2026-03-13");
        assert_eq!(DateFormat::Iso8601.format(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(DateFormat::EpochMillis.format(NOW), "1773489600000");
    }

    #[test]
    fn names_round_trip_and_reasons_read_as_text() {
        for p in Policy::ALL {
            assert_eq!(Policy::parse(p.as_str()), Some(p));
            assert!(Policy::expected().contains(p.as_str()));
        }
        for t in Transform::ALL {
            assert_eq!(Transform::parse(t.as_str()), Some(t));
        }
        for c in Channel::ALL {
            assert!(Transform::natural(c).fits(c));
            assert!(Transform::None.fits(c));
        }
        assert!(!Transform::Lowercase.fits(Channel::Phone));
        assert_eq!(
            Transform::expected_for(Channel::Phone),
            "none, e164, national"
        );
        let reasons = [
            SkipReason::Unchanged,
            SkipReason::HumanValue,
            SkipReason::NotEmpty,
            SkipReason::PolicyNever,
            SkipReason::NoValue,
            SkipReason::FromCrm,
            SkipReason::SourceWithoutValue,
            SkipReason::SourceProtected,
            SkipReason::ValueNotOurs,
            SkipReason::NoChannelWritten,
        ];
        let texts: std::collections::BTreeSet<String> =
            reasons.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), reasons.len(), "distinct texts");
        assert_eq!(
            Action::Skip(SkipReason::Unchanged).to_string(),
            "skip: already holds this value"
        );
        assert_eq!(
            serde_json::to_value(Policy::IfEnrichedByUs).ok(),
            Some(serde_json::json!("if_enriched_by_us"))
        );
    }

    // ------------------------------------------------ randomized properties

    /// A small deterministic generator (Knuth's MMIX LCG).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
            xs[self.below(xs.len())].clone()
        }
        fn chance(&mut self, num: u64, den: u64) -> bool {
            self.next() % den < num
        }
    }

    /// Spellings a channel's field may hold: two distinct values in several
    /// forms, plus junk.
    fn pool(c: Channel) -> &'static [&'static str] {
        match c {
            Channel::WorkEmail | Channel::PersonalEmail => &[
                "ann@acme.com",
                "Ann@Acme.com",
                "bob@acme.com",
                "not an email",
            ],
            Channel::Phone => &[
                "+14155552671",
                "+1 (415) 555-2671",
                "+442079460958",
                "call me",
            ],
            Channel::LinkedinUrl => &[
                "https://www.linkedin.com/in/ann-lee",
                "linkedin.com/in/Ann-Lee/",
                "https://www.linkedin.com/in/bob-ray",
                "n/a",
            ],
        }
    }

    const SOURCES: &[&str] = &["apollo", "hunter", "APOLLO", "trade show"];
    const STATUSES: &[&str] = &["Full", "partial", "Empty", "hot lead"];
    const TIMES: &[&str] = &["1000", "1970-01-01T00:00:01.000Z", "yesterday"];

    fn random_case(
        g: &mut Lcg,
    ) -> (
        Mapping,
        CrmFields,
        BTreeMap<Channel, ChannelValue>,
        Option<EnrichmentStatus>,
        WrittenByUs,
    ) {
        let mut channels = BTreeMap::new();
        for c in Channel::ALL {
            if g.chance(3, 4) {
                let fits: Vec<Transform> =
                    Transform::ALL.into_iter().filter(|t| t.fits(c)).collect();
                let value =
                    FieldRule::new(field_name(c), g.pick(&Policy::ALL)).transform(g.pick(&fits));
                let source = g.chance(3, 4).then(|| {
                    FieldRule::new(format!("enrichment_{c}_source"), g.pick(&Policy::ALL))
                });
                channels.insert(c, ChannelRule { value, source });
            }
        }
        let m = Mapping {
            crm: CrmKind::Hubspot,
            object: "contacts".into(),
            channels,
            status: g
                .chance(3, 4)
                .then(|| FieldRule::new("enrichment_status", g.pick(&Policy::ALL))),
            enriched_at: g
                .chance(3, 4)
                .then(|| FieldRule::new("enrichment_enriched_at", g.pick(&Policy::ALL))),
            enriched_at_format: g.pick(&DateFormat::ALL),
            source_format: g.pick(&SourceFormat::ALL),
        };
        let mut vals = BTreeMap::new();
        for c in Channel::ALL {
            if g.chance(2, 3) {
                let v = g.pick(&pool(c)[..3]);
                let s = g.pick(&["apollo", "hunter", Source::CRM]);
                vals.insert(c, cv(c, v, s));
            }
        }
        let status = g.pick(&[
            None,
            Some(EnrichmentStatus::Full),
            Some(EnrichmentStatus::Partial),
            Some(EnrichmentStatus::Empty),
        ]);
        let mut rec = CrmFields::new();
        let mut ours = WrittenByUs::new();
        let mut fill = |g: &mut Lcg, field: String, pool: &[&str]| {
            let cur = match g.below(5) {
                0 => None,
                1 => Some(String::new()),
                2 => Some("  ".to_string()),
                _ => Some(g.pick(pool).to_string()),
            };
            if g.chance(1, 5) {
                // The same value enrichd wrote.
                if let Some(c) = &cur {
                    ours.insert(field.clone(), c.clone());
                }
            } else if g.chance(1, 2) {
                ours.insert(field.clone(), g.pick(pool).to_string());
            }
            if g.chance(4, 5) {
                rec.insert(field, cur);
            }
        };
        for c in Channel::ALL {
            fill(g, field_name(c), pool(c));
            fill(g, format!("enrichment_{c}_source"), SOURCES);
        }
        fill(g, "enrichment_status".into(), STATUSES);
        fill(g, "enrichment_enriched_at".into(), TIMES);
        (m, rec, vals, status, ours)
    }

    fn norm_of(d: &FieldDecision) -> Norm {
        match (d.role, d.channel) {
            (FieldRole::Value, Some(c)) => Norm::Channel(c),
            (role, _) => Norm::of(role),
        }
    }

    #[test]
    fn random_records_keep_human_values_sources_and_idempotence() {
        let mut g = Lcg(0x5eed_2026);
        let mut writes = 0usize;
        for case in 0..20_000 {
            let (m, rec, vals, status, ours) = random_case(&mut g);
            let ds = decide(&m, &rec, &vals, status, &ours, NOW);
            let ctx = || format!("case {case}: {m:#?}\n{rec:#?}\n{vals:#?}\n{ours:#?}\n{ds:#?}");
            assert_eq!(ds.len(), m.fields().len(), "{}", ctx());

            for d in ds.iter().filter(|d| d.action.is_write()) {
                writes += 1;
                let cur = current_of(&rec, &d.field);
                let is_ours = matches!(
                    (cur, ours.get(&d.field)),
                    (Some(c), Some(o)) if norm_of(d).same(c, o)
                );
                // Rewriting what the field already holds (a Source sent
                // along with its value) changes nothing.
                let no_op = matches!(
                    (cur, &d.proposed),
                    (Some(c), Some(p)) if norm_of(d).same(c, p)
                );
                // (a) no value someone else put there is overwritten.
                match d.policy {
                    Policy::Never => panic!("wrote under never: {}", ctx()),
                    Policy::IfEmpty => assert!(cur.is_none() || no_op, "{}", ctx()),
                    Policy::IfEnrichedByUs => {
                        assert!(cur.is_none() || is_ours || no_op, "{}", ctx())
                    }
                    Policy::Always => {}
                }
                assert!(d.proposed.is_some(), "{}", ctx());
            }

            // (c) a value never without its Source; a Source only with its
            // value or for enrichd's own unchanged value.
            for (c, r) in &m.channels {
                let v = find(&ds, &r.value.field);
                if v.action.is_write() {
                    let stored = vals.get(c).unwrap_or_else(|| panic!("{}", ctx()));
                    assert!(!stored.source.is_crm(), "{}", ctx());
                }
                let Some(sr) = &r.source else { continue };
                let s = find(&ds, &sr.field);
                if v.action.is_write() {
                    assert!(s.action.is_write(), "value without Source: {}", ctx());
                    let stored = vals.get(c).map(|v| m.source_format.format(v));
                    assert_eq!(s.proposed, stored, "{}", ctx());
                }
                if s.action.is_write() && !v.action.is_write() {
                    assert_eq!(v.action, skip(SkipReason::Unchanged), "{}", ctx());
                    let cur = current_of(&rec, &r.value.field);
                    let our = ours.get(&r.value.field);
                    assert!(
                        matches!((cur, our), (Some(a), Some(b)) if Norm::Channel(*c).same(a, b)),
                        "Source for a value enrichd did not write: {}",
                        ctx()
                    );
                }
            }
            let any_value = ds
                .iter()
                .any(|d| d.role == FieldRole::Value && d.action.is_write());
            if let Some(r) = &m.enriched_at {
                assert!(
                    !find(&ds, &r.field).action.is_write() || any_value,
                    "{}",
                    ctx()
                );
            }

            // (b) idempotent.
            let (mut rec2, mut ours2) = (rec.clone(), ours.clone());
            apply(&ds, &mut rec2, &mut ours2);
            for now in [NOW, NOW + 60_000] {
                let again = decide(&m, &rec2, &vals, status, &ours2, now);
                assert!(
                    changes(&again).is_empty(),
                    "second pass writes {:?}: {}",
                    changes(&again),
                    ctx()
                );
            }
        }
        assert!(writes > 10_000, "the generator exercises writes: {writes}");
    }
}

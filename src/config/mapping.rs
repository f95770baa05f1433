//! A mapping file (`mappings/hubspot.toml`) → validated [`Mapping`]. The raw
//! structures mirror the file (unknown keys refused); words (channel names,
//! policies, transforms, formats) are read as spanned strings so that every
//! bad one is reported at once, each with its key and line.
//!
//! Per-audience overrides (`[audiences.<name>.channels.<channel>]` with
//! `policy`, `source_policy`, `transform`) become [`Mapping::overrides`] in
//! file order; a workspace's mapping is loaded with [`load_mapping_for`],
//! which also requires every override's audience to be one of the
//! workspace's.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Problem, line_of, parse_toml};
use crate::core::channel::Channel;
use crate::core::mapping::{
    AudienceOverride, ChannelOverride, ChannelRule, CrmKind, DateFormat, FieldRule, Mapping,
    Policy, SourceFormat, Transform,
};

/// The mapping files enrichd ships: (path in the repository, text).
pub const BUILTIN_MAPPINGS: [(&str, &str); 2] = [
    (
        "mappings/hubspot.toml",
        include_str!("../../mappings/hubspot.toml"),
    ),
    (
        "mappings/salesforce.toml",
        include_str!("../../mappings/salesforce.toml"),
    ),
];

const DOCUMENTED: &str = "see the comments in the shipped mappings/hubspot.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    crm: Spanned<String>,
    object: Spanned<String>,
    source_format: Option<Spanned<String>>,
    #[serde(default)]
    channels: BTreeMap<String, RawChannel>,
    status: Option<RawStatus>,
    enriched_at: Option<RawEnrichedAt>,
    #[serde(default)]
    audiences: BTreeMap<String, RawAudienceOverride>,
}

/// `[audiences.<name>]`: how the leads of one audience are written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudienceOverride {
    #[serde(default)]
    channels: BTreeMap<String, RawChannelOverride>,
}

/// `[audiences.<name>.channels.<channel>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannelOverride {
    policy: Option<Spanned<String>>,
    source_policy: Option<Spanned<String>>,
    transform: Option<Spanned<String>>,
}

/// The channel and audience names with their places in the file (read
/// separately: with spanned keys in [`RawMapping`] the key path of other
/// errors would lose the names).
#[derive(Debug, Default, Deserialize)]
struct Names {
    #[serde(default)]
    channels: BTreeMap<Spanned<String>, serde::de::IgnoredAny>,
    #[serde(default)]
    audiences: BTreeMap<Spanned<String>, AudienceNames>,
}

#[derive(Debug, Default, Deserialize)]
struct AudienceNames {
    #[serde(default)]
    channels: BTreeMap<Spanned<String>, serde::de::IgnoredAny>,
}

/// Where names are in the file.
type Spans = BTreeMap<String, Range<usize>>;

fn spans<V>(m: BTreeMap<Spanned<String>, V>) -> Spans {
    m.into_keys()
        .map(|k| (k.get_ref().clone(), k.span()))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    field: Spanned<String>,
    source_field: Option<Spanned<String>>,
    policy: Option<Spanned<String>>,
    source_policy: Option<Spanned<String>>,
    transform: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    field: Spanned<String>,
    policy: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnrichedAt {
    field: Spanned<String>,
    policy: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
}

/// Reads and validates the mapping file at `path`.
pub fn load_mapping(path: &Path) -> Result<Mapping, ConfigError> {
    load(path, None)
}

/// Reads and validates the mapping file at `path` for a workspace whose
/// audiences are named `audiences`: an override of any other audience is a
/// problem too.
pub fn load_mapping_for(path: &Path, audiences: &[String]) -> Result<Mapping, ConfigError> {
    load(path, Some(audiences))
}

fn load(path: &Path, audiences: Option<&[String]>) -> Result<Mapping, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::one(
            path,
            Problem::new("", format!("cannot read the mapping file: {e}")).hint(
                "set `mapping` in the workspace's [workspaces.crm] section to an existing file, \
                 e.g. \"mappings/hubspot.toml\"",
            ),
        )
    })?;
    parse(path, &text, audiences)
}

/// Validates mapping text as if read from `path`; every problem is reported.
pub fn parse_mapping(path: &Path, text: &str) -> Result<Mapping, ConfigError> {
    parse(path, text, None)
}

/// [`parse_mapping`] for a workspace whose audiences are named `audiences`.
pub fn parse_mapping_for(
    path: &Path,
    text: &str,
    audiences: &[String],
) -> Result<Mapping, ConfigError> {
    parse(path, text, Some(audiences))
}

fn parse(path: &Path, text: &str, audiences: Option<&[String]>) -> Result<Mapping, ConfigError> {
    let raw: RawMapping = parse_toml(path, text).map_err(|mut e| {
        for p in &mut e.problems {
            // `policy.$__serde_spanned_private_value` → `policy`.
            if let Some(i) = p.key.find(".$__serde_spanned") {
                p.key.truncate(i);
            }
            if p.message.starts_with("unknown field") {
                p.hint = Some(format!("check the spelling; {DOCUMENTED}"));
            }
        }
        e
    })?;
    let names = toml::from_str::<Names>(text).unwrap_or_default();
    let mut v = Validator {
        text,
        problems: Vec::new(),
        targets: Vec::new(),
        names: spans(names.channels),
        audience_names: names
            .audiences
            .into_iter()
            .map(|(k, a)| (k.get_ref().clone(), (k.span(), spans(a.channels))))
            .collect(),
        audiences,
    };
    let mapping = v.mapping(raw);
    match mapping {
        Some(m) if v.problems.is_empty() => Ok(m),
        _ => {
            let mut problems = v.problems;
            if problems.is_empty() {
                problems.push(Problem::new("", "invalid mapping"));
            }
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(ConfigError {
                file: path.to_path_buf(),
                problems,
            })
        }
    }
}

/// A CRM field the mapping writes, for the duplicate check.
struct Target {
    key: String,
    field: String,
    span: Range<usize>,
    /// The channel table it is in, to name a Source equal to its value field.
    channel: Option<String>,
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    targets: Vec<Target>,
    /// Where each channel table's name is.
    names: Spans,
    /// Where each override's audience name is, and its channel names.
    audience_names: BTreeMap<String, (Range<usize>, Spans)>,
    /// The workspace's audiences, when the mapping is loaded for one.
    audiences: Option<&'a [String]>,
}

impl<'a> Validator<'a> {
    fn err(
        &mut self,
        key: &str,
        span: impl Into<Option<Range<usize>>>,
        msg: String,
        hint: impl Into<String>,
    ) {
        let mut p = Problem::new(key, msg).hint(hint);
        p.line = span.into().map(|s| line_of(self.text, s.start));
        self.problems.push(p);
    }

    /// A word from a fixed list: `None` (with a problem) when unknown.
    fn word<T>(
        &mut self,
        key: &str,
        s: &Spanned<String>,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Option<T> {
        let r = parse(s.get_ref().trim());
        if r.is_none() {
            self.err(
                key,
                s.span(),
                format!("unknown {what} `{}`", s.get_ref()),
                format!("use one of: {expected}"),
            );
        }
        r
    }

    fn policy(
        &mut self,
        key: &str,
        s: &Option<Spanned<String>>,
        default: Policy,
    ) -> Option<Policy> {
        match s {
            None => Some(default),
            Some(s) => {
                let expected = format!("{} ({DOCUMENTED})", Policy::expected());
                self.word(key, s, "policy", Policy::parse, &expected)
            }
        }
    }

    /// A CRM field name; recorded for the duplicate check.
    fn field(
        &mut self,
        key: &str,
        s: &Spanned<String>,
        crm: Option<CrmKind>,
        channel: Option<&str>,
    ) -> Option<String> {
        let name = s.get_ref().trim();
        let ok = match crm {
            _ if name.is_empty() => {
                self.err(
                    key,
                    s.span(),
                    "the field name is empty".into(),
                    "name the CRM field that receives it",
                );
                return None;
            }
            Some(CrmKind::Hubspot) => hubspot_name(name),
            Some(CrmKind::Salesforce) => salesforce_name(name),
            None => true,
        };
        if !ok {
            let (what, hint) = match crm {
                Some(CrmKind::Salesforce) => (
                    "a Salesforce field API name",
                    "use the field's API name (letters, digits and underscores), \
                     e.g. Enrichment_Work_Email__c, not its label",
                ),
                _ => (
                    "a HubSpot internal property name",
                    "use the property's internal name (lower-case letters, digits and \
                     underscores), e.g. enrichment_work_email, not its label",
                ),
            };
            self.err(key, s.span(), format!("`{name}` is not {what}"), hint);
            return None;
        }
        self.targets.push(Target {
            key: key.to_string(),
            field: name.to_string(),
            span: s.span(),
            channel: channel.map(str::to_string),
        });
        Some(name.to_string())
    }

    fn mapping(&mut self, raw: RawMapping) -> Option<Mapping> {
        let crm = self.word("crm", &raw.crm, "CRM", CrmKind::parse, CrmKind::expected());
        let object = raw.object.get_ref().trim().to_string();
        let objects: &[&str] = match crm {
            Some(CrmKind::Hubspot) => &["contacts"],
            Some(CrmKind::Salesforce) => &["Lead", "Contact"],
            None => &[],
        };
        if crm.is_some() && !objects.contains(&object.as_str()) {
            self.err(
                "object",
                raw.object.span(),
                format!(
                    "enrichd does not write `{object}` records to {}",
                    raw.crm.get_ref()
                ),
                format!("use one of: {}", objects.join(", ")),
            );
        }
        let source_format = match &raw.source_format {
            None => Some(SourceFormat::default()),
            Some(s) => self.word(
                "source_format",
                s,
                "source format",
                SourceFormat::parse,
                SourceFormat::expected(),
            ),
        };

        let mut channels = BTreeMap::new();
        let mut channels_ok = true;
        if raw.channels.is_empty() {
            self.problems.push(
                Problem::new("channels", "no channel is mapped: nothing would be written").hint(
                    format!(
                        "add a [channels.<name>] table for one of: {}",
                        Channel::expected()
                    ),
                ),
            );
        }
        for (name, rc) in &raw.channels {
            let key = format!("channels.{name}");
            let channel = name.parse::<Channel>().ok();
            if channel.is_none() {
                let span = self.names.get(name).cloned();
                self.err(
                    &key,
                    span,
                    format!("unknown channel `{name}`"),
                    format!("use one of: {}", Channel::expected()),
                );
            }
            match (self.channel(&key, channel, rc, crm), channel) {
                (Some(rule), Some(c)) => {
                    channels.insert(c, rule);
                }
                _ => channels_ok = false,
            }
        }

        let status = raw.status.as_ref().and_then(|s| {
            let field = self.field("status.field", &s.field, crm, None);
            let policy = self.policy("status.policy", &s.policy, Policy::Always);
            Some(FieldRule::new(field?, policy?))
        });
        let status_ok = raw.status.is_none() || status.is_some();

        let mut enriched_at_format = crm.map(DateFormat::default_for);
        let enriched_at = raw.enriched_at.as_ref().and_then(|e| {
            let field = self.field("enriched_at.field", &e.field, crm, None);
            let policy = self.policy("enriched_at.policy", &e.policy, Policy::Always);
            if let Some(f) = &e.format {
                enriched_at_format = self.word(
                    "enriched_at.format",
                    f,
                    "date format",
                    DateFormat::parse,
                    DateFormat::expected(),
                );
            }
            Some(FieldRule::new(field?, policy?))
        });
        let enriched_at_ok = raw.enriched_at.is_none() || enriched_at.is_some();

        self.duplicates();
        let overrides = self.overrides(&raw);
        if !(channels_ok && status_ok && enriched_at_ok) {
            return None;
        }
        Some(Mapping {
            crm: crm?,
            object,
            channels,
            status,
            enriched_at,
            enriched_at_format: enriched_at_format?,
            source_format: source_format?,
            overrides,
        })
    }

    /// The `[audiences.<name>]` tables, in file order. Problems are
    /// recorded; the overrides returned are the valid ones.
    fn overrides(&mut self, raw: &RawMapping) -> Vec<AudienceOverride> {
        let mut order: Vec<(&String, &RawAudienceOverride)> = raw.audiences.iter().collect();
        order.sort_by_key(|(name, _)| {
            self.audience_names
                .get(*name)
                .map_or(usize::MAX, |(span, _)| span.start)
        });
        let mut out = Vec::new();
        for (name, ra) in order {
            let key = format!("audiences.{name}");
            let (span, channel_spans) = self
                .audience_names
                .get(name)
                .cloned()
                .map_or((None, Spans::new()), |(s, c)| (Some(s), c));
            let mut ok = true;
            if name.trim().is_empty() {
                self.err(
                    &key,
                    span.clone(),
                    "the audience name is empty".into(),
                    "name one of the workspace's audiences, e.g. [audiences.customers.channels.phone]",
                );
                ok = false;
            } else if let Some(configured) = self.audiences
                && !configured.contains(name)
            {
                let hint = if configured.is_empty() {
                    format!(
                        "the workspace has no audiences: add a [[workspaces.audiences]] named \
                         \"{name}\" to the config, or remove [{key}]"
                    )
                } else {
                    format!(
                        "configured audiences: {}; use one of them or remove [{key}]",
                        configured.join(", ")
                    )
                };
                self.err(
                    &key,
                    span.clone(),
                    format!("audience `{name}` is not one of the workspace's audiences"),
                    hint,
                );
                ok = false;
            }
            if ra.channels.is_empty() {
                self.err(
                    &key,
                    span.clone(),
                    "the override changes no channel".into(),
                    format!(
                        "add a [{key}.channels.<channel>] table setting policy, source_policy or \
                         transform, or remove [{key}]"
                    ),
                );
                ok = false;
            }
            let mut channels = BTreeMap::new();
            for (cname, rc) in &ra.channels {
                let ckey = format!("{key}.channels.{cname}");
                let cspan = channel_spans.get(cname).cloned();
                match self.channel_override(&ckey, cname, cspan, rc, raw) {
                    Some((c, co)) => {
                        channels.insert(c, co);
                    }
                    None => ok = false,
                }
            }
            if ok {
                out.push(AudienceOverride {
                    audience: name.clone(),
                    channels,
                });
            }
        }
        out
    }

    /// One `[audiences.<name>.channels.<channel>]` table.
    fn channel_override(
        &mut self,
        key: &str,
        name: &str,
        span: Option<Range<usize>>,
        rc: &RawChannelOverride,
        raw: &RawMapping,
    ) -> Option<(Channel, ChannelOverride)> {
        let Ok(channel) = name.parse::<Channel>() else {
            self.err(
                key,
                span,
                format!("unknown channel `{name}`"),
                format!("use one of: {}", Channel::expected()),
            );
            return None;
        };
        let Some(base) = raw
            .channels
            .iter()
            .find_map(|(k, rc)| (k.parse::<Channel>().ok() == Some(channel)).then_some(rc))
        else {
            self.err(
                key,
                span,
                format!(
                    "channel `{channel}` is not mapped: an override changes how a mapped \
                     channel is written"
                ),
                format!("add a [channels.{channel}] table, or remove [{key}]"),
            );
            return None;
        };
        if rc.policy.is_none() && rc.source_policy.is_none() && rc.transform.is_none() {
            self.err(
                key,
                span,
                "the override sets nothing".into(),
                "set `policy`, `source_policy` or `transform`, or remove the table",
            );
            return None;
        }
        let expected = format!("{} ({DOCUMENTED})", Policy::expected());
        let policy = match &rc.policy {
            None => Some(None),
            Some(p) => self
                .word(
                    &format!("{key}.policy"),
                    p,
                    "policy",
                    Policy::parse,
                    &expected,
                )
                .map(Some),
        };
        let skey = format!("{key}.source_policy");
        let source_policy = match (&rc.source_policy, &base.source_field) {
            (None, _) => Some(None),
            (Some(sp), None) => {
                self.err(
                    &skey,
                    sp.span(),
                    format!("`source_policy` but [channels.{channel}] has no `source_field`"),
                    format!(
                        "add the `source_field` to [channels.{channel}], or remove \
                         `source_policy` here"
                    ),
                );
                None
            }
            (Some(sp), Some(_)) => match self.word(&skey, sp, "policy", Policy::parse, &expected) {
                Some(Policy::Never) => {
                    self.err(
                        &skey,
                        sp.span(),
                        "a Source field under policy `never` would keep its value from ever \
                             being written (a value is never written without its Source)"
                            .into(),
                        "to not write this channel for the audience, set `policy = \"never\"`",
                    );
                    None
                }
                p => p.map(Some),
            },
        };
        let transform = match &rc.transform {
            None => Some(None),
            Some(t) => self
                .transform(&format!("{key}.transform"), t, Some(channel))
                .map(Some),
        };
        Some((
            channel,
            ChannelOverride {
                policy: policy?,
                source_policy: source_policy?,
                transform: transform?,
            },
        ))
    }

    fn channel(
        &mut self,
        key: &str,
        channel: Option<Channel>,
        rc: &RawChannel,
        crm: Option<CrmKind>,
    ) -> Option<ChannelRule> {
        let field = self.field(&format!("{key}.field"), &rc.field, crm, Some(key));
        let policy = self.policy(&format!("{key}.policy"), &rc.policy, Policy::IfEnrichedByUs);
        let transform = match (&rc.transform, channel) {
            (None, Some(c)) => Some(Transform::natural(c)),
            (None, None) => None,
            (Some(t), c) => self.transform(&format!("{key}.transform"), t, c),
        };
        let source = match &rc.source_field {
            None => {
                if let Some(sp) = &rc.source_policy {
                    self.err(
                        &format!("{key}.source_policy"),
                        sp.span(),
                        "`source_policy` without `source_field`".into(),
                        "add the `source_field` it applies to, or remove `source_policy`",
                    );
                }
                // No Source field: valid (the file's comments call it
                // optional); the value is written on its own.
                Some(None)
            }
            Some(sf) => {
                let sfield = self.field(&format!("{key}.source_field"), sf, crm, Some(key));
                let skey = format!("{key}.source_policy");
                let spolicy = match &rc.source_policy {
                    // The Source follows its value: it may always replace
                    // enrichd's own earlier Source.
                    None => policy.map(|p| match p {
                        Policy::Always => Policy::Always,
                        _ => Policy::IfEnrichedByUs,
                    }),
                    Some(sp) => {
                        let p = self.policy(&skey, &rc.source_policy, Policy::IfEnrichedByUs);
                        if p == Some(Policy::Never) {
                            self.err(
                                &skey,
                                sp.span(),
                                "a Source field under policy `never` would keep its value from \
                                 ever being written (a value is never written without its Source)"
                                    .into(),
                                "to not write a Source, remove `source_field`",
                            );
                            return None;
                        }
                        p
                    }
                };
                Some(Some(FieldRule::new(sfield?, spolicy?)))
            }
        };
        Some(ChannelRule {
            value: FieldRule::new(field?, policy?).transform(transform?),
            source: source?,
            audience: None,
        })
    }

    fn transform(
        &mut self,
        key: &str,
        t: &Spanned<String>,
        channel: Option<Channel>,
    ) -> Option<Transform> {
        let all = Transform::ALL
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let expected = channel.map_or(all, Transform::expected_for);
        let tr = self.word(key, t, "transform", Transform::parse, &expected)?;
        let c = channel?;
        if !tr.fits(c) {
            self.err(
                key,
                t.span(),
                format!("transform `{tr}` does not apply to {c} values"),
                format!("use one of: {}", Transform::expected_for(c)),
            );
            return None;
        }
        Some(tr)
    }

    /// Every field receives one thing. CRM field names are compared without
    /// case (Salesforce API names are case-insensitive).
    fn duplicates(&mut self) {
        // Name the later one in the file.
        self.targets.sort_by_key(|t| t.span.start);
        let mut first: BTreeMap<String, usize> = BTreeMap::new();
        let mut found = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            match first.get(&t.field.to_lowercase()) {
                Some(&j) => found.push((j, i)),
                None => {
                    first.insert(t.field.to_lowercase(), i);
                }
            }
        }
        for (j, i) in found {
            let (a, b) = (&self.targets[j], &self.targets[i]);
            let (key, span) = (b.key.clone(), b.span.clone());
            let msg = if a.channel.is_some() && a.channel == b.channel {
                format!(
                    "the Source field is the same as the value field `{}`",
                    a.field
                )
            } else {
                format!("field `{}` is already written by `{}`", b.field, a.key)
            };
            self.err(
                &key,
                span,
                msg,
                "every CRM field can receive only one thing: name another field",
            );
        }
    }
}

/// HubSpot internal property names: lower-case letters, digits and
/// underscores, starting with a letter.
fn hubspot_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Salesforce field API names: letters, digits and underscores, starting
/// with a letter (custom fields end in `__c`).
fn salesforce_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/enrichd/mappings/hubspot.toml";

    fn parse(text: &str) -> Result<Mapping, ConfigError> {
        parse_mapping(Path::new(FILE), text)
    }

    /// The refusal of `text`: the message (which must name the file) and
    /// the error.
    fn refused(text: &str) -> (String, ConfigError) {
        let e = match parse(text) {
            Ok(m) => panic!("must be refused, got {m:#?}"),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert!(msg.contains(FILE), "names the file: {msg}");
        (msg, e)
    }

    fn line_of_problem(e: &ConfigError, key: &str) -> Option<usize> {
        e.problems
            .iter()
            .find(|p| p.key == key)
            .and_then(|p| p.line)
    }

    const SMALL: &str = r#"
crm = "hubspot"
object = "contacts"

[channels.work_email]
field = "enrichment_work_email"
source_field = "enrichment_work_email_source"

[channels.phone]
field = "enrichment_phone"
source_field = "enrichment_phone_source"
policy = "always"
"#;

    #[test]
    fn the_shipped_hubspot_mapping_loads() {
        let [(path, text), _] = BUILTIN_MAPPINGS;
        let m = match parse_mapping(Path::new(path), text) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(m.crm, CrmKind::Hubspot);
        assert_eq!(m.object, "contacts");
        assert_eq!(m.channels.len(), 4);
        for (c, r) in &m.channels {
            assert_eq!(r.value.field, format!("enrichment_{c}"));
            assert_eq!(r.value.policy, Policy::IfEnrichedByUs);
            assert_eq!(r.value.transform, Transform::natural(*c));
            let s = r.source.as_ref().map(|s| (s.field.as_str(), s.policy));
            assert_eq!(
                s,
                Some((
                    format!("enrichment_{c}_source").as_str(),
                    Policy::IfEnrichedByUs
                ))
            );
        }
        assert_eq!(
            m.status,
            Some(FieldRule::new("enrichment_status", Policy::Always))
        );
        assert_eq!(
            m.enriched_at,
            Some(FieldRule::new("enrichment_enriched_at", Policy::Always))
        );
        assert_eq!(m.enriched_at_format, DateFormat::EpochMillis);
        assert_eq!(m.source_format, SourceFormat::Id);
        assert_eq!(m.fields().len(), 10);
        // The same file from disk.
        let dir = env!("CARGO_MANIFEST_DIR");
        let from_disk = load_mapping(&Path::new(dir).join(path));
        assert_eq!(from_disk.ok(), Some(m));
    }

    #[test]
    fn the_shipped_salesforce_mapping_loads() {
        let [_, (path, text)] = BUILTIN_MAPPINGS;
        let m = match parse_mapping(Path::new(path), text) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(m.crm, CrmKind::Salesforce);
        assert_eq!(m.object, "Lead");
        assert_eq!(m.channels.len(), 4);
        assert_eq!(m.enriched_at_format, DateFormat::Iso8601);
        for r in m.channels.values() {
            assert!(r.source.is_some(), "every value with its Source: {r:?}");
        }
    }

    #[test]
    fn the_commented_standard_email_example_loads() {
        let [(_, text), _] = BUILTIN_MAPPINGS;
        let start = text.find("#   [channels.work_email]").unwrap_or(0);
        let example: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with("#  "))
            .map(|l| format!("{}\n", l.trim_start_matches('#').trim()))
            .collect();
        assert!(example.contains("field = \"email\""), "{example}");
        let m = parse(&format!(
            "crm = \"hubspot\"\nobject = \"contacts\"\n{example}"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let r = &m.channels[&Channel::WorkEmail];
        assert_eq!(
            r.value,
            FieldRule::new("email", Policy::IfEmpty).transform(Transform::Lowercase)
        );
        assert_eq!(
            r.source.as_ref().map(|s| s.policy),
            Some(Policy::IfEnrichedByUs),
            "a Source field holding enrichd's own Source never blocks its value"
        );
    }

    #[test]
    fn defaults_fill_policies_transforms_and_formats() {
        let m = parse(SMALL).unwrap_or_else(|e| panic!("{e}"));
        let we = &m.channels[&Channel::WorkEmail];
        assert_eq!(we.value.policy, Policy::IfEnrichedByUs);
        assert_eq!(we.value.transform, Transform::Lowercase);
        let ph = &m.channels[&Channel::Phone];
        assert_eq!(ph.value.transform, Transform::E164);
        assert_eq!(ph.source.as_ref().map(|s| s.policy), Some(Policy::Always));
        assert_eq!(m.status, None);
        assert_eq!(m.enriched_at_format, DateFormat::EpochMillis);

        let m = parse(&format!(
            "{SMALL}\n[status]\nfield = \"enrichment_status\"\n[enriched_at]\nfield = \"at\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.status.map(|s| s.policy), Some(Policy::Always));
        assert_eq!(m.enriched_at.map(|s| s.policy), Some(Policy::Always));
    }

    #[test]
    fn a_salesforce_mapping_uses_api_names_and_iso_dates() {
        let m = parse(
            r#"
crm = "salesforce"
object = "Lead"
source_format = "id_and_date"
[channels.work_email]
field = "Enrichment_Work_Email__c"
source_field = "Enrichment_Work_Email_Source__c"
source_policy = "always"
[enriched_at]
field = "Enriched_At__c"
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.crm, CrmKind::Salesforce);
        assert_eq!(m.enriched_at_format, DateFormat::Iso8601);
        assert_eq!(m.source_format, SourceFormat::IdAndDate);
        let r = &m.channels[&Channel::WorkEmail];
        assert_eq!(r.value.policy, Policy::IfEnrichedByUs);
        assert_eq!(r.source.as_ref().map(|s| s.policy), Some(Policy::Always));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let (msg, e) = refused(&SMALL.replace("policy = \"always\"", "polcy = \"always\""));
        assert!(e.mentions("channels.phone.polcy"), "{msg}");
        assert!(msg.contains("unknown field `polcy`"), "{msg}");
        assert!(msg.contains("hubspot.toml:12:"), "{msg}");
        assert!(
            msg.contains("mappings/hubspot.toml"),
            "hint names the documented file: {msg}"
        );
        let (msg, e) = refused(&format!("{SMALL}\n[extra]\nx = 1\n"));
        assert!(msg.contains("unknown field `extra`"), "{msg}");
        assert_eq!(e.problems.len(), 1);
    }

    #[test]
    fn an_unknown_channel_is_named_with_its_line_and_the_choices() {
        let (msg, e) = refused(&SMALL.replace("[channels.phone]", "[channels.fax]"));
        assert!(e.mentions("channels.fax"), "{msg}");
        assert!(msg.contains("unknown channel `fax`"), "{msg}");
        assert!(
            msg.contains("work_email, personal_email, phone, linkedin_url"),
            "{msg}"
        );
        assert_eq!(line_of_problem(&e, "channels.fax"), Some(9), "{msg}");
    }

    #[test]
    fn an_unknown_policy_lists_the_four() {
        let (msg, e) = refused(&SMALL.replace("\"always\"", "\"sometimes\""));
        assert!(e.mentions("channels.phone.policy"), "{msg}");
        assert!(msg.contains("unknown policy `sometimes`"), "{msg}");
        assert!(
            msg.contains("never, if_empty, if_enriched_by_us, always"),
            "{msg}"
        );
        assert_eq!(line_of_problem(&e, "channels.phone.policy"), Some(12));
    }

    #[test]
    fn a_field_written_twice_is_refused() {
        let (msg, e) = refused(&SMALL.replace(
            "field = \"enrichment_phone\"",
            "field = \"enrichment_work_email_source\"",
        ));
        assert!(e.mentions("channels.phone.field"), "{msg}");
        assert!(
            msg.contains("already written by `channels.work_email.source_field`"),
            "{msg}"
        );
        assert_eq!(line_of_problem(&e, "channels.phone.field"), Some(10));

        let (msg, e) = refused(&format!(
            "{SMALL}\n[status]\nfield = \"ENRICHMENT_PHONE\"\n"
        ));
        // Upper case is also not a HubSpot name; Salesforce compares names without case.
        assert!(e.mentions("status.field"), "{msg}");
        let sf = SMALL
            .replace("hubspot", "salesforce")
            .replace("contacts", "Contact");
        let (msg, e) = refused(&format!("{sf}\n[status]\nfield = \"ENRICHMENT_PHONE\"\n"));
        assert!(
            msg.contains("already written by `channels.phone.field`"),
            "{msg}"
        );
        assert!(e.mentions("status.field"), "{msg}");
    }

    #[test]
    fn a_source_field_equal_to_its_value_field_is_refused() {
        let (msg, e) = refused(&SMALL.replace(
            "source_field = \"enrichment_phone_source\"",
            "source_field = \"enrichment_phone\"",
        ));
        assert!(e.mentions("channels.phone.source_field"), "{msg}");
        assert!(
            msg.contains("the Source field is the same as the value field"),
            "{msg}"
        );
    }

    #[test]
    fn transforms_must_fit_their_channel() {
        let (msg, e) = refused(&SMALL.replace("policy = \"always\"", "transform = \"lowercase\""));
        assert!(e.mentions("channels.phone.transform"), "{msg}");
        assert!(msg.contains("does not apply to phone"), "{msg}");
        assert!(msg.contains("none, e164, national"), "{msg}");
        let m = parse(&SMALL.replace("policy = \"always\"", "transform = \"national\""))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m.channels[&Channel::Phone].value.transform,
            Transform::National
        );
        let (msg, e) = refused(&SMALL.replace(
            "source_field = \"enrichment_work_email_source\"",
            "transform = \"national\"",
        ));
        assert!(e.mentions("channels.work_email.transform"), "{msg}");
        assert!(msg.contains("does not apply to work_email"), "{msg}");
        let (msg, _) = refused(&SMALL.replace("policy = \"always\"", "transform = \"upper\""));
        assert!(msg.contains("unknown transform `upper`"), "{msg}");
    }

    #[test]
    fn a_channel_without_a_source_field_loads() {
        let m = parse(
            r#"
crm = "hubspot"
object = "contacts"
[channels.phone]
field = "phone_enriched"
"#,
        )
        .expect("source_field is optional");
        let rule = &m.channels[&Channel::Phone];
        assert_eq!(rule.value.field, "phone_enriched");
        assert!(rule.source.is_none());
    }

    #[test]
    fn source_policy_rules() {
        let (msg, e) = refused(&SMALL.replace(
            "policy = \"always\"",
            "policy = \"always\"\nsource_policy = \"never\"",
        ));
        assert!(e.mentions("channels.phone.source_policy"), "{msg}");
        assert!(msg.contains("remove `source_field`"), "{msg}");
        let (msg, e) = refused(&SMALL.replace(
            "source_field = \"enrichment_phone_source\"",
            "source_policy = \"always\"",
        ));
        assert!(e.mentions("channels.phone.source_policy"), "{msg}");
        assert!(msg.contains("without `source_field`"), "{msg}");
    }

    #[test]
    fn names_and_words_are_checked() {
        let (msg, e) = refused(&SMALL.replace("\"enrichment_phone\"", "\"Enrichment Phone\""));
        assert!(e.mentions("channels.phone.field"), "{msg}");
        assert!(
            msg.contains("not a HubSpot internal property name"),
            "{msg}"
        );
        let (msg, e) = refused(&SMALL.replace("crm = \"hubspot\"", "crm = \"pipedrive\""));
        assert!(e.mentions("crm"), "{msg}");
        assert!(msg.contains("hubspot, salesforce"), "{msg}");
        let (msg, e) = refused(&SMALL.replace("\"contacts\"", "\"companies\""));
        assert!(e.mentions("object"), "{msg}");
        let (msg, e) = refused(&format!(
            "{SMALL}\n[enriched_at]\nfield = \"at\"\nformat = \"unix\"\n"
        ));
        assert!(e.mentions("enriched_at.format"), "{msg}");
        assert!(msg.contains("epoch_millis, iso8601"), "{msg}");
        let (msg, e) = refused("crm = \"hubspot\"\nobject = \"contacts\"\n");
        assert!(e.mentions("channels"), "{msg}");
        let (msg, e) = refused("crm = \"hubspot\"\n");
        assert!(msg.contains("missing field `object`"), "{msg}");
        assert_eq!(e.problems.len(), 1);
    }

    #[test]
    fn every_problem_is_reported_at_once_in_line_order() {
        let text = SMALL
            .replace("[channels.phone]", "[channels.fax]")
            .replace("policy = \"always\"", "policy = \"sometimes\"")
            .replace(
                "source_field = \"enrichment_work_email_source\"",
                "source_field = \"enrichment_work_email\"",
            );
        let (msg, e) = refused(&text);
        assert!(msg.contains("3 problems"), "{msg}");
        assert!(e.mentions("channels.work_email.source_field"), "{msg}");
        assert!(e.mentions("channels.fax"), "{msg}");
        assert!(e.mentions("channels.fax.policy"), "{msg}");
        let lines: Vec<_> = e.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(7), Some(9), Some(12)], "{msg}");
    }

    #[test]
    fn bad_toml_and_a_missing_file_name_the_file() {
        let (msg, e) = refused("crm = \"hubspot\nobject = 1");
        assert!(msg.contains("not valid TOML"), "{msg}");
        assert_eq!(e.problems[0].line, Some(1));
        let e = match load_mapping(Path::new("/nonexistent/mapping.toml")) {
            Ok(_) => panic!("a missing file must be refused"),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/mapping.toml"), "{msg}");
        assert!(msg.contains("cannot read the mapping file"), "{msg}");
    }

    const OVERRIDES: &str = r#"
[audiences.us_sales.channels.phone]
transform = "national"

[audiences.customers.channels.phone]
policy = "never"

[audiences.customers.channels.work_email]
source_policy = "always"
"#;

    /// The 1-based line of the first line of `text` containing `needle`.
    fn line_in(text: &str, needle: &str) -> Option<usize> {
        text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
    }

    fn names(ns: &[&str]) -> Vec<String> {
        ns.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn audience_overrides_load_in_file_order() {
        let text = format!("{SMALL}{OVERRIDES}");
        let m = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let order: Vec<&str> = m.overrides.iter().map(|o| o.audience.as_str()).collect();
        assert_eq!(order, ["us_sales", "customers"], "file order, not sorted");
        assert_eq!(
            m.overrides[0].channels[&Channel::Phone],
            ChannelOverride {
                transform: Some(Transform::National),
                ..ChannelOverride::default()
            }
        );
        let customers = &m.overrides[1].channels;
        assert_eq!(customers[&Channel::Phone].policy, Some(Policy::Never));
        assert_eq!(customers[&Channel::Phone].source_policy, None);
        assert_eq!(
            customers[&Channel::WorkEmail].source_policy,
            Some(Policy::Always)
        );
        // Loaded for a workspace that has both audiences.
        let for_ws = parse_mapping_for(Path::new(FILE), &text, &names(&["customers", "us_sales"]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(for_ws, m);
        // A customer in us_sales: us_sales comes first in the file.
        let lead = m.for_audiences(&names(&["customers", "us_sales"]));
        let phone = &lead.channels[&Channel::Phone];
        assert_eq!(phone.value.transform, Transform::National);
        assert_eq!(phone.value.policy, Policy::Always, "base policy");
        assert_eq!(phone.audience.as_deref(), Some("us_sales"));
        assert_eq!(
            lead.channels[&Channel::WorkEmail]
                .source
                .as_ref()
                .map(|s| s.policy),
            Some(Policy::Always)
        );
        // Without overrides nothing is serialised or compared differently.
        assert!(parse(SMALL).is_ok_and(|m| m.overrides.is_empty()));
    }

    #[test]
    fn an_unknown_key_in_an_override_is_named_with_its_line() {
        let text = format!("{SMALL}{OVERRIDES}").replace("policy = \"never\"", "polcy = \"never\"");
        let (msg, e) = refused(&text);
        assert!(
            e.mentions("audiences.customers.channels.phone.polcy"),
            "{msg}"
        );
        assert!(msg.contains("unknown field `polcy`"), "{msg}");
        let line = line_in(&text, "polcy");
        assert_eq!(
            line_of_problem(&e, "audiences.customers.channels.phone.polcy"),
            line,
            "{msg}"
        );
        assert!(msg.contains("mappings/hubspot.toml"), "{msg}");
        // An audience-wide policy is not a thing: only channel tables.
        let (msg, e) = refused(&format!(
            "{SMALL}\n[audiences.customers]\npolicy = \"never\"\n"
        ));
        assert!(e.mentions("audiences.customers.policy"), "{msg}");
        assert!(msg.contains("unknown field `policy`"), "{msg}");
    }

    #[test]
    fn bad_words_in_an_override_are_reported_like_the_others() {
        let text = format!("{SMALL}{OVERRIDES}")
            .replace("\"never\"", "\"sometimes\"")
            .replace("\"national\"", "\"lowercase\"");
        let (msg, e) = refused(&text);
        assert!(msg.contains("2 problems"), "{msg}");
        let key = "audiences.customers.channels.phone.policy";
        assert!(e.mentions(key), "{msg}");
        assert!(msg.contains("unknown policy `sometimes`"), "{msg}");
        assert!(
            msg.contains("never, if_empty, if_enriched_by_us, always"),
            "{msg}"
        );
        assert_eq!(line_of_problem(&e, key), line_in(&text, "sometimes"));
        let key = "audiences.us_sales.channels.phone.transform";
        assert!(e.mentions(key), "{msg}");
        assert!(
            msg.contains("transform `lowercase` does not apply to phone"),
            "{msg}"
        );
        assert!(msg.contains("none, e164, national"), "{msg}");
        assert_eq!(line_of_problem(&e, key), line_in(&text, "lowercase"));
    }

    #[test]
    fn an_override_of_an_unknown_or_unmapped_channel_is_refused() {
        let text = format!("{SMALL}\n[audiences.customers.channels.fax]\npolicy = \"never\"\n");
        let (msg, e) = refused(&text);
        assert!(e.mentions("audiences.customers.channels.fax"), "{msg}");
        assert!(msg.contains("unknown channel `fax`"), "{msg}");
        assert!(
            msg.contains("work_email, personal_email, phone, linkedin_url"),
            "{msg}"
        );
        assert_eq!(
            line_of_problem(&e, "audiences.customers.channels.fax"),
            line_in(&text, "channels.fax")
        );
        // SMALL maps no LinkedIn URL.
        let text =
            format!("{SMALL}\n[audiences.customers.channels.linkedin_url]\npolicy = \"never\"\n");
        let (msg, e) = refused(&text);
        let key = "audiences.customers.channels.linkedin_url";
        assert!(e.mentions(key), "{msg}");
        assert!(
            msg.contains("channel `linkedin_url` is not mapped"),
            "{msg}"
        );
        assert!(msg.contains("add a [channels.linkedin_url] table"), "{msg}");
        assert_eq!(line_of_problem(&e, key), line_in(&text, "linkedin_url]"));
    }

    #[test]
    fn override_source_policy_rules_are_the_top_level_ones() {
        let text =
            format!("{SMALL}\n[audiences.customers.channels.phone]\nsource_policy = \"never\"\n");
        let (msg, e) = refused(&text);
        let key = "audiences.customers.channels.phone.source_policy";
        assert!(e.mentions(key), "{msg}");
        assert!(msg.contains("under policy `never`"), "{msg}");
        assert!(msg.contains("set `policy = \"never\"`"), "{msg}");
        assert_eq!(line_of_problem(&e, key), line_in(&text, "source_policy"));
        // No Source field in the base rule: nothing for source_policy to set.
        let base = SMALL.replace("source_field = \"enrichment_phone_source\"\n", "");
        let (msg, e) = refused(&format!(
            "{base}\n[audiences.customers.channels.phone]\nsource_policy = \"always\"\n"
        ));
        assert!(e.mentions(key), "{msg}");
        assert!(
            msg.contains("[channels.phone] has no `source_field`"),
            "{msg}"
        );
    }

    #[test]
    fn an_override_must_change_something() {
        let text = format!("{SMALL}\n[audiences.customers.channels.phone]\n");
        let (msg, e) = refused(&text);
        assert!(e.mentions("audiences.customers.channels.phone"), "{msg}");
        assert!(msg.contains("sets nothing"), "{msg}");
        let text = format!("{SMALL}\n[audiences.customers]\n");
        let (msg, e) = refused(&text);
        assert!(e.mentions("audiences.customers"), "{msg}");
        assert!(msg.contains("changes no channel"), "{msg}");
        assert_eq!(
            line_of_problem(&e, "audiences.customers"),
            line_in(&text, "[audiences.customers]")
        );
    }

    #[test]
    fn an_override_of_an_audience_the_workspace_lacks_is_refused() {
        let text = format!("{SMALL}{OVERRIDES}");
        let e = match parse_mapping_for(Path::new(FILE), &text, &names(&["customers", "eu"])) {
            Ok(m) => panic!("must be refused, got {m:#?}"),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert!(msg.contains(FILE), "{msg}");
        assert!(e.mentions("audiences.us_sales"), "{msg}");
        assert_eq!(e.problems.len(), 1, "{msg}");
        assert!(
            msg.contains("audience `us_sales` is not one of the workspace's audiences"),
            "{msg}"
        );
        assert!(msg.contains("configured audiences: customers, eu"), "{msg}");
        assert_eq!(
            line_of_problem(&e, "audiences.us_sales"),
            line_in(&text, "[audiences.us_sales")
        );
        let e = match parse_mapping_for(Path::new(FILE), &text, &[]) {
            Ok(m) => panic!("must be refused, got {m:#?}"),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert!(
            e.mentions("audiences.customers") && e.mentions("audiences.us_sales"),
            "{msg}"
        );
        assert!(msg.contains("the workspace has no audiences"), "{msg}");
    }

    #[test]
    fn the_commented_override_examples_load() {
        let [(_, text), _] = BUILTIN_MAPPINGS;
        let start = text.find("#   [audiences.").unwrap_or(0);
        let example: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#') && !l.starts_with("# ---"))
            .filter(|l| l.starts_with("#   "))
            .map(|l| format!("{}\n", l.trim_start_matches('#').trim()))
            .collect();
        assert!(
            example.contains("[audiences.customers.channels.phone]"),
            "{example}"
        );
        let [(path, _), _] = BUILTIN_MAPPINGS;
        let m = parse_mapping_for(
            Path::new(path),
            &format!("{text}\n{example}"),
            &names(&["customers", "us_sales"]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let phone = |a: &str| m.for_audiences(&names(&[a])).channels[&Channel::Phone].clone();
        assert_eq!(phone("customers").value.policy, Policy::Never);
        assert_eq!(phone("us_sales").value.transform, Transform::National);
    }
}

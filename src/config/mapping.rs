//! A mapping file (`mappings/hubspot.toml`) → validated [`Mapping`]. The raw
//! structures mirror the file (unknown keys refused); words (channel names,
//! policies, transforms, formats) are read as spanned strings so that every
//! bad one is reported at once, each with its key and line.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Problem, line_of, parse_toml};
use crate::core::channel::Channel;
use crate::core::mapping::{
    ChannelRule, CrmKind, DateFormat, FieldRule, Mapping, Policy, SourceFormat, Transform,
};

/// The mapping files enrichd ships: (path in the repository, text).
pub const BUILTIN_MAPPINGS: [(&str, &str); 1] = [(
    "mappings/hubspot.toml",
    include_str!("../../mappings/hubspot.toml"),
)];

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
}

/// The channel names with their places in the file (read separately: with
/// spanned keys in [`RawMapping`] the key path of other errors would lose
/// the channel's name).
#[derive(Debug, Deserialize)]
struct ChannelNames {
    #[serde(default)]
    channels: BTreeMap<Spanned<String>, serde::de::IgnoredAny>,
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
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::one(
            path,
            Problem::new("", format!("cannot read the mapping file: {e}")).hint(
                "set `mapping` in the workspace's [workspaces.crm] section to an existing file, \
                 e.g. \"mappings/hubspot.toml\"",
            ),
        )
    })?;
    parse_mapping(path, &text)
}

/// Validates mapping text as if read from `path`; every problem is reported.
pub fn parse_mapping(path: &Path, text: &str) -> Result<Mapping, ConfigError> {
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
    let names = toml::from_str::<ChannelNames>(text)
        .map(|n| {
            n.channels
                .into_keys()
                .map(|k| (k.get_ref().clone(), k.span()))
                .collect()
        })
        .unwrap_or_default();
    let mut v = Validator {
        text,
        problems: Vec::new(),
        targets: Vec::new(),
        names,
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
    names: BTreeMap<String, Range<usize>>,
}

impl Validator<'_> {
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
        })
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
                None
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
        if tr == Transform::National {
            self.err(
                key,
                t.span(),
                "transform `national` is not supported yet".into(),
                "use \"e164\" (e.g. +14155552671)",
            );
            return None;
        }
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
        let [(path, text)] = BUILTIN_MAPPINGS;
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
    fn the_commented_standard_email_example_loads() {
        let [(_, text)] = BUILTIN_MAPPINGS;
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
        let (msg, e) = refused(&SMALL.replace("policy = \"always\"", "transform = \"national\""));
        assert!(e.mentions("channels.phone.transform"), "{msg}");
        assert!(msg.contains("not supported yet"), "{msg}");
        let (msg, _) = refused(&SMALL.replace("policy = \"always\"", "transform = \"upper\""));
        assert!(msg.contains("unknown transform `upper`"), "{msg}");
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
}

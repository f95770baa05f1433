//! Audiences: named segments of leads (a filter on CRM fields, optionally a
//! persona) with the channels their members require. A lead's configured
//! channels are the union over the audiences it belongs to.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::channel::ChannelSet;
use super::lead::Lead;

/// A literal in a filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Number(n) => write!(f, "{n}"),
            Scalar::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// A comparison on one CRM field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal (text compares case-insensitively after trimming; numbers
    /// numerically, also when the CRM sends them as text).
    Eq(Scalar),
    /// Not equal (true when the field is absent).
    Ne(Scalar),
    /// Equal to one of the values.
    In(Vec<Scalar>),
    /// Equal to none of the values (true when the field is absent).
    NotIn(Vec<Scalar>),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    /// `true`: the field has a non-blank value; `false`: it is absent or blank.
    Exists(bool),
}

impl Op {
    /// The operator names accepted in config.toml.
    pub const NAMES: [&'static str; 9] = [
        "eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists",
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub field: String,
    pub op: Op,
}

impl Condition {
    pub fn matches(&self, lead: &Lead) -> bool {
        let eq = |s: &Scalar| scalar_eq(lead, &self.field, s);
        let num = || lead.number(&self.field);
        match &self.op {
            Op::Eq(s) => eq(s),
            Op::Ne(s) => !eq(s),
            Op::In(list) => list.iter().any(eq),
            Op::NotIn(list) => !list.iter().any(eq),
            Op::Gt(x) => num().is_some_and(|v| v > *x),
            Op::Gte(x) => num().is_some_and(|v| v >= *x),
            Op::Lt(x) => num().is_some_and(|v| v < *x),
            Op::Lte(x) => num().is_some_and(|v| v <= *x),
            Op::Exists(want) => lead.text(&self.field).is_some() == *want,
        }
    }
}

fn scalar_eq(lead: &Lead, field: &str, s: &Scalar) -> bool {
    match s {
        Scalar::Number(n) => lead.number(field).is_some_and(|v| v == *n),
        Scalar::Bool(b) => lead
            .text(field)
            .is_some_and(|t| t.eq_ignore_ascii_case(if *b { "true" } else { "false" })),
        Scalar::Text(t) => lead
            .text(field)
            .is_some_and(|v| v.eq_ignore_ascii_case(t.trim())),
    }
}

/// Job titles and/or seniorities members must match. Both lists, when given,
/// must match (a title keyword AND a seniority).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Persona {
    /// Keywords or phrases; a lead matches when its title contains one as
    /// whole words, case-insensitively ("sales" matches "VP of Sales").
    pub titles: Vec<String>,
    pub seniorities: Vec<String>,
    pub title_field: String,
    pub seniority_field: String,
}

impl Persona {
    pub fn matches(&self, lead: &Lead) -> bool {
        let title_ok = self.titles.is_empty()
            || lead.text(&self.title_field).is_some_and(|t| {
                let t = format!(" {} ", words(&t));
                self.titles
                    .iter()
                    .any(|k| t.contains(&format!(" {} ", words(k))))
            });
        let seniority_ok = self.seniorities.is_empty()
            || lead.text(&self.seniority_field).is_some_and(|s| {
                self.seniorities
                    .iter()
                    .any(|x| x.trim().eq_ignore_ascii_case(&s))
            });
        title_ok && seniority_ok
    }
}

/// Lower-case words separated by single spaces.
fn words(s: &str) -> String {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audience {
    pub name: String,
    /// All conditions must hold (an empty filter matches every lead).
    pub conditions: Vec<Condition>,
    pub channels: ChannelSet,
    pub persona: Option<Persona>,
}

impl Audience {
    pub fn matches(&self, lead: &Lead) -> bool {
        self.conditions.iter().all(|c| c.matches(lead))
            && self.persona.as_ref().is_none_or(|p| p.matches(lead))
    }
}

/// The audiences a lead belongs to and the channels they require.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    /// Indexes into the workspace's audience list.
    pub audiences: Vec<usize>,
    pub channels: ChannelSet,
}

pub fn membership(lead: &Lead, audiences: &[Audience]) -> Membership {
    let mut m = Membership::default();
    for (i, a) in audiences.iter().enumerate() {
        if a.matches(lead) {
            m.audiences.push(i);
            m.channels = m.channels.union(a.channels);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::channel::Channel;

    fn cond(field: &str, op: Op) -> Condition {
        Condition {
            field: field.into(),
            op,
        }
    }

    fn lead() -> Lead {
        Lead::new("1")
            .with("country", "US")
            .with("numemployees", "250")
            .with("lifecyclestage", "Lead")
            .with("jobtitle", "VP of Sales, EMEA")
            .with("seniority", "vp")
            .with("is_customer", false)
            .with("blank", "  ")
    }

    #[test]
    fn every_operator() {
        let l = lead();
        let t = |s: &str| Scalar::Text(s.into());
        assert!(cond("country", Op::Eq(t("us"))).matches(&l));
        assert!(!cond("country", Op::Eq(t("FR"))).matches(&l));
        assert!(cond("country", Op::Ne(t("FR"))).matches(&l));
        assert!(cond("missing", Op::Ne(t("FR"))).matches(&l));
        assert!(cond("country", Op::In(vec![t("CA"), t("US")])).matches(&l));
        assert!(!cond("country", Op::NotIn(vec![t("CA"), t("US")])).matches(&l));
        assert!(cond("numemployees", Op::Eq(Scalar::Number(250.0))).matches(&l));
        assert!(cond("numemployees", Op::Gt(100.0)).matches(&l));
        assert!(cond("numemployees", Op::Gte(250.0)).matches(&l));
        assert!(!cond("numemployees", Op::Lt(250.0)).matches(&l));
        assert!(cond("numemployees", Op::Lte(250.0)).matches(&l));
        assert!(
            !cond("country", Op::Gt(1.0)).matches(&l),
            "text is not a number"
        );
        assert!(!cond("missing", Op::Lt(1.0)).matches(&l));
        assert!(cond("country", Op::Exists(true)).matches(&l));
        assert!(cond("blank", Op::Exists(false)).matches(&l));
        assert!(cond("is_customer", Op::Eq(Scalar::Bool(false))).matches(&l));
    }

    #[test]
    fn persona_matches_whole_words_and_seniority() {
        let p = Persona {
            titles: vec!["sales".into(), "head of revenue".into()],
            seniorities: vec!["VP".into(), "c_suite".into()],
            title_field: "jobtitle".into(),
            seniority_field: "seniority".into(),
        };
        assert!(p.matches(&lead()));
        let wholesale = lead().with("jobtitle", "Wholesale manager");
        assert!(!p.matches(&wholesale), "substring of a word is not a match");
        let ic = lead().with("seniority", "individual_contributor");
        assert!(!p.matches(&ic));
        let no_title = Lead::new("2").with("seniority", "vp");
        assert!(!p.matches(&no_title));
    }

    #[test]
    fn configured_channels_are_the_union_over_audiences() {
        let a = Audience {
            name: "us".into(),
            conditions: vec![cond("country", Op::Eq(Scalar::Text("US".into())))],
            channels: ChannelSet::single(Channel::WorkEmail),
            persona: None,
        };
        let b = Audience {
            name: "big".into(),
            conditions: vec![cond("numemployees", Op::Gte(1000.0))],
            channels: ChannelSet::single(Channel::Phone),
            persona: None,
        };
        let c = Audience {
            name: "everyone".into(),
            conditions: vec![],
            channels: ChannelSet::single(Channel::LinkedinUrl),
            persona: None,
        };
        let m = membership(&lead(), &[a.clone(), b.clone(), c.clone()]);
        assert_eq!(m.audiences, vec![0, 2]);
        assert_eq!(m.channels.to_csv(), "work_email,linkedin_url");
        let none = membership(&Lead::new("x"), &[a, b]);
        assert!(none.channels.is_empty() && none.audiences.is_empty());
    }
}

//! Leads as enrichd sees them: a CRM record id plus its fields, and the
//! identity that providers are asked with.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A workspace id as written in config.toml. Every stored row is scoped by one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkspaceId(pub String);

impl WorkspaceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The CRM record id of a lead (HubSpot contact id, Salesforce Lead/Contact id,
/// or the `id` column of an imported file). Unique within a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeadId(pub String);

impl LeadId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lead: its id and its CRM fields, exactly as the CRM (or file) gave them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    pub id: LeadId,
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
}

impl Lead {
    pub fn new(id: impl Into<String>) -> Self {
        Lead {
            id: LeadId(id.into()),
            fields: BTreeMap::new(),
        }
    }

    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(field.to_string(), value.into());
        self
    }

    /// A field as trimmed text, `None` when absent, null or blank.
    pub fn text(&self, field: &str) -> Option<String> {
        match self.fields.get(field)? {
            Value::Null => None,
            Value::String(s) => {
                let t = s.trim();
                (!t.is_empty()).then(|| t.to_string())
            }
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            other => Some(other.to_string()),
        }
    }

    /// A field as a number: JSON numbers, or text that parses as one (CRMs
    /// such as HubSpot send every property as a string).
    pub fn number(&self, field: &str) -> Option<f64> {
        match self.fields.get(field)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
            _ => None,
        }
    }
}

/// Which lead fields hold the identity and the ICP score. Defaults follow
/// HubSpot's standard contact property names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityFields {
    pub first_name: String,
    pub last_name: String,
    pub full_name: String,
    pub company_domain: String,
    pub company_name: String,
    pub linkedin_url: String,
    pub email: String,
    pub job_title: String,
    pub country: String,
    /// A phone number already on the record (counts as the phone channel).
    pub phone: String,
    pub icp_score: String,
}

impl Default for IdentityFields {
    fn default() -> Self {
        IdentityFields {
            first_name: "firstname".into(),
            last_name: "lastname".into(),
            full_name: "name".into(),
            company_domain: "company_domain".into(),
            company_name: "company".into(),
            linkedin_url: "linkedin_url".into(),
            email: "email".into(),
            job_title: "jobtitle".into(),
            country: "country".into(),
            phone: "phone".into(),
            icp_score: "icp_score".into(),
        }
    }
}

impl IdentityFields {
    /// Every configured field name (blank ones left out).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        [
            &self.first_name,
            &self.last_name,
            &self.full_name,
            &self.company_domain,
            &self.company_name,
            &self.linkedin_url,
            &self.email,
            &self.job_title,
            &self.country,
            &self.phone,
            &self.icp_score,
        ]
        .into_iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
    }
}

/// What providers are asked with. Built from a lead by [`Identity::from_lead`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Identity {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub full_name: Option<String>,
    /// Bare company domain: lower-case, no scheme, no `www.`, no path.
    pub domain: Option<String>,
    pub company_name: Option<String>,
    /// Canonical LinkedIn profile URL when the lead has a valid one.
    pub linkedin_url: Option<String>,
    /// An email already known for the lead (used for reverse lookups).
    pub email: Option<String>,
    pub job_title: Option<String>,
    /// ISO-3166 alpha-2 when recognisable, used as the phone default region.
    pub country: Option<String>,
}

impl Identity {
    pub fn from_lead(lead: &Lead, f: &IdentityFields) -> Identity {
        let mut first = lead.text(&f.first_name);
        let mut last = lead.text(&f.last_name);
        let full = lead.text(&f.full_name).or_else(|| match (&first, &last) {
            (Some(a), Some(b)) => Some(format!("{a} {b}")),
            _ => None,
        });
        if first.is_none()
            && last.is_none()
            && let Some(full) = &full
            && let Some((a, b)) = full.split_once(' ')
        {
            first = Some(a.trim().to_string());
            last = Some(b.trim().to_string());
        }
        let domain = lead
            .text(&f.company_domain)
            .and_then(|d| bare_domain(&d))
            .or_else(|| {
                // A work email already on the record names the company domain.
                lead.text(&f.email)
                    .and_then(|e| e.rsplit_once('@').map(|(_, d)| d.to_string()))
                    .and_then(|d| bare_domain(&d))
                    .filter(|d| !super::usable::is_free_mail_domain(d))
            });
        Identity {
            first_name: first,
            last_name: last,
            full_name: full,
            domain,
            company_name: lead.text(&f.company_name),
            linkedin_url: lead
                .text(&f.linkedin_url)
                .and_then(|u| super::usable::canonical_linkedin(&u).ok()),
            email: lead
                .text(&f.email)
                .and_then(|e| super::usable::normalise_email(&e).ok()),
            job_title: lead.text(&f.job_title),
            country: lead
                .text(&f.country)
                .and_then(|c| super::usable::country_code(&c).map(str::to_string)),
        }
    }

    pub fn has_name(&self) -> bool {
        self.first_name.is_some() && self.last_name.is_some()
    }

    pub fn has_company(&self) -> bool {
        self.domain.is_some() || self.company_name.is_some()
    }

    /// Name plus company, the most common minimum input.
    pub fn has_name_and_company(&self) -> bool {
        self.has_name() && self.has_company()
    }
}

/// `https://www.Example.com/about` → `example.com`. `None` when it does not
/// look like a domain.
pub fn bare_domain(input: &str) -> Option<String> {
    let s = input.trim().to_ascii_lowercase();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(&s);
    let s = s.split(['/', '?', '#']).next().unwrap_or("");
    let s = s.split(':').next().unwrap_or("");
    let s = s.strip_prefix("www.").unwrap_or(s).trim_end_matches('.');
    let ok = s.contains('.')
        && !s.starts_with('.')
        && s.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    ok.then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_hubspot_style_fields() {
        let lead = Lead::new("42")
            .with("firstname", " Ada ")
            .with("lastname", "Lovelace")
            .with("company_domain", "https://www.Analytical.io/engines")
            .with("linkedin_url", "linkedin.com/in/Ada-Lovelace/")
            .with("country", "United Kingdom");
        let id = Identity::from_lead(&lead, &IdentityFields::default());
        assert_eq!(id.first_name.as_deref(), Some("Ada"));
        assert_eq!(id.full_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(id.domain.as_deref(), Some("analytical.io"));
        assert_eq!(
            id.linkedin_url.as_deref(),
            Some("https://www.linkedin.com/in/ada-lovelace")
        );
        assert_eq!(id.country.as_deref(), Some("GB"));
        assert!(id.has_name_and_company());
    }

    #[test]
    fn domain_from_work_email_but_not_from_free_mail() {
        let f = IdentityFields::default();
        let work = Lead::new("1").with("email", "ada@analytical.io");
        assert_eq!(
            Identity::from_lead(&work, &f).domain.as_deref(),
            Some("analytical.io")
        );
        let free = Lead::new("2").with("email", "ada@gmail.com");
        assert_eq!(Identity::from_lead(&free, &f).domain, None);
    }

    #[test]
    fn full_name_is_split_when_parts_are_missing() {
        let lead = Lead::new("1").with("name", "Grace Brewster Hopper");
        let id = Identity::from_lead(&lead, &IdentityFields::default());
        assert_eq!(id.first_name.as_deref(), Some("Grace"));
        assert_eq!(id.last_name.as_deref(), Some("Brewster Hopper"));
    }

    #[test]
    fn numbers_from_strings_and_json() {
        let lead = Lead::new("1").with("a", "12.5").with("b", 7).with("c", "x");
        assert_eq!(lead.number("a"), Some(12.5));
        assert_eq!(lead.number("b"), Some(7.0));
        assert_eq!(lead.number("c"), None);
        assert_eq!(lead.text("missing"), None);
    }

    #[test]
    fn bare_domain_rejects_garbage() {
        assert_eq!(bare_domain("not a domain"), None);
        assert_eq!(bare_domain("-bad-.com"), None);
        assert_eq!(bare_domain("Acme.COM."), Some("acme.com".into()));
        assert_eq!(bare_domain("acme.com:8080/x"), Some("acme.com".into()));
    }
}

//! One module per simulated provider API.

pub(crate) mod apollo;
pub(crate) mod fullenrich;
pub(crate) mod hunter;
pub(crate) mod pdl;
pub(crate) mod prospeo;
pub(crate) mod zerobounce;

use crate::population::{Population, normalize_domain};
use crate::server::{Api, ProviderKind};

pub(crate) fn api_for(kind: ProviderKind) -> Box<dyn Api> {
    match kind {
        ProviderKind::FullEnrich => Box::new(fullenrich::FullEnrich),
        ProviderKind::Apollo => Box::new(apollo::Apollo),
        ProviderKind::Hunter => Box::new(hunter::Hunter),
        ProviderKind::Pdl => Box::new(pdl::Pdl),
        ProviderKind::ZeroBounce => Box::new(zerobounce::ZeroBounce),
        ProviderKind::Prospeo => Box::new(prospeo::Prospeo),
    }
}

/// Identity fields a request may carry.
#[derive(Default, Debug, Clone)]
pub(crate) struct Identity {
    pub first: Option<String>,
    pub last: Option<String>,
    pub full_name: Option<String>,
    pub domain: Option<String>,
    pub company: Option<String>,
    pub linkedin: Option<String>,
    pub email: Option<String>,
}

impl Identity {
    /// (first, last), from the split fields or a full name ("Jane van Dijk" -> Jane / van Dijk).
    pub(crate) fn names(&self) -> Option<(String, String)> {
        match (&self.first, &self.last) {
            (Some(f), Some(l)) => Some((f.clone(), l.clone())),
            _ => {
                let full = self.full_name.as_ref()?;
                let mut it = full.split_whitespace();
                let f = it.next()?.to_string();
                let rest: Vec<&str> = it.collect();
                if rest.is_empty() {
                    None
                } else {
                    Some((f, rest.join(" ")))
                }
            }
        }
    }

    /// The matched person: LinkedIn URL first, then email, then name + domain, then name +
    /// company name (a company value that looks like a domain is tried as one).
    pub(crate) fn resolve(&self, pop: &Population) -> Option<usize> {
        if let Some(p) = self
            .linkedin
            .as_deref()
            .and_then(|u| pop.find_by_linkedin(u))
        {
            return Some(p.index);
        }
        if let Some(p) = self.email.as_deref().and_then(|e| pop.find_by_email(e)) {
            return Some(p.index);
        }
        let (f, l) = self.names()?;
        if let Some(p) = self
            .domain
            .as_deref()
            .and_then(|d| pop.find_by_name_domain(&f, &l, d))
        {
            return Some(p.index);
        }
        let company = self.company.as_deref()?;
        if let Some(p) = pop.find_by_name_company(&f, &l, company) {
            return Some(p.index);
        }
        let d = normalize_domain(company);
        if d.contains('.') && !d.contains(' ') {
            return pop.find_by_name_domain(&f, &l, &d).map(|p| p.index);
        }
        None
    }
}

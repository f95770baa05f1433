//! Seed data: the contacts and companies a simulated portal starts with.

use std::collections::{BTreeMap, HashMap};

use crate::hash::H;
use crate::population::Population;

/// A company to seed (ids are assigned in order from 9000001).
#[derive(Clone, Debug, Default)]
pub struct SeedCompany {
    pub name: String,
    pub domain: String,
    /// Further properties (`country`, `numberofemployees`, …). Unknown names become custom
    /// string properties.
    pub properties: BTreeMap<String, String>,
}

/// A contact to seed (ids are assigned in order from 101).
#[derive(Clone, Debug, Default)]
pub struct SeedContact {
    /// String values by property name. Unknown names become custom string properties; empty
    /// values are dropped.
    pub properties: BTreeMap<String, String>,
    /// Index into [`HubSpotData::companies`]: the primary associated company.
    pub company: Option<usize>,
    pub created_at_ms: i64,
    pub modified_at_ms: i64,
}

/// What the simulated portal holds at start.
#[derive(Clone, Debug, Default)]
pub struct HubSpotData {
    pub contacts: Vec<SeedContact>,
    pub companies: Vec<SeedCompany>,
}

/// Share of people whose contact carries the `company` name property.
const COMPANY_PROP_SHARE: f64 = 0.70;
const DAY_MS: i64 = 86_400_000;

impl HubSpotData {
    /// One contact per person: `firstname`, `lastname`, `jobtitle`, `country`, `seniority`,
    /// `icp_score` (string); `company` (the company name) for ~70% of people (deterministic by
    /// index); the associated company (`name`, `domain`, `country`, `numberofemployees`) for
    /// everyone; `email` = the person's true work email for `email_share` of people
    /// (deterministic by index), else absent. Created/modified times are spread
    /// deterministically over the 90 days before `base_ms` (modified ≥ created).
    pub fn from_population(pop: &Population, base_ms: i64, email_share: f64) -> Self {
        let root = H::new(pop.seed()).s("hubspot");
        let mut companies: Vec<SeedCompany> = Vec::with_capacity(pop.company_count());
        let mut by_domain: HashMap<&str, usize> = HashMap::with_capacity(pop.company_count());
        let mut contacts = Vec::with_capacity(pop.len());
        for p in pop.people() {
            let ci = *by_domain.entry(p.domain.as_str()).or_insert_with(|| {
                let mut props = BTreeMap::new();
                props.insert("country".to_string(), p.country.clone());
                props.insert("numberofemployees".to_string(), p.employees.to_string());
                companies.push(SeedCompany {
                    name: p.company_name.clone(),
                    domain: p.domain.clone(),
                    properties: props,
                });
                companies.len() - 1
            });
            let h = root.n(p.index as u64);
            let mut props = BTreeMap::new();
            props.insert("firstname".to_string(), p.first_name.clone());
            props.insert("lastname".to_string(), p.last_name.clone());
            props.insert("jobtitle".to_string(), p.job_title.clone());
            props.insert("country".to_string(), p.country.clone());
            props.insert("seniority".to_string(), p.seniority.clone());
            props.insert("icp_score".to_string(), p.icp_score.to_string());
            if h.s("company_prop").unit() < COMPANY_PROP_SHARE {
                props.insert("company".to_string(), p.company_name.clone());
            }
            if h.s("email").unit() < email_share {
                props.insert("email".to_string(), p.work_email.clone());
            }
            let span = 90 * DAY_MS;
            let created = base_ms - span + (h.s("created").unit() * span as f64) as i64;
            let modified =
                created + (h.s("modified").unit() * (base_ms - created).max(0) as f64) as i64;
            contacts.push(SeedContact {
                properties: props,
                company: Some(ci),
                created_at_ms: created,
                modified_at_ms: modified,
            });
        }
        HubSpotData {
            contacts,
            companies,
        }
    }
}

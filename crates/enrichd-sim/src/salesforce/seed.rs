//! Seed data: the users, Accounts, Leads and Contacts a simulated org starts with.

use std::collections::HashMap;

use crate::hash::H;
use crate::population::{Person, Population, human_phone};

/// A sales rep (user ids are assigned in order after the integration user, `005…1`).
#[derive(Clone, Debug)]
pub struct SeedUser {
    pub username: String,
    pub name: String,
}

/// A Lead, Contact or Account to seed (ids are assigned in order).
#[derive(Clone, Debug, Default)]
pub struct SeedRecord {
    /// (API name, value as text: strings as they are, booleans `true`/`false`, datetimes
    /// ISO-8601). Unknown or hidden fields are ignored.
    pub fields: Vec<(String, String)>,
    pub created_ms: i64,
    pub last_modified_ms: i64,
    /// SystemModstamp (≥ last_modified_ms; later when a system process touched the record).
    pub modstamp_ms: i64,
    /// Index into [`SalesforceData::users`] (the sales reps).
    pub owner: usize,
    /// Lead only: `IsConverted = true`, `Status = Closed - Converted`, `ConvertedDate`.
    pub converted: bool,
    /// In the recycle bin (`IsDeleted = true`): only `queryAll` sees it.
    pub deleted: bool,
    /// Contact only: index into [`SalesforceData::accounts`], the Contact's `AccountId`
    /// (None: no Account).
    pub account: Option<usize>,
}

/// What the org holds at start.
#[derive(Clone, Debug, Default)]
pub struct SalesforceData {
    pub users: Vec<SeedUser>,
    /// Accounts (`001…`, ids in order); only `fields`, the times and `owner` are read.
    pub accounts: Vec<SeedRecord>,
    pub leads: Vec<SeedRecord>,
    pub contacts: Vec<SeedRecord>,
}

/// How [`SalesforceData::from_population`] builds the org.
#[derive(Clone, Debug)]
pub struct SeedSpec {
    /// Leads: people `0..leads` of the population.
    pub leads: usize,
    /// Contacts: people `leads..leads + contacts` (the population must hold both).
    pub contacts: usize,
    /// Share of Leads that are converted (deterministic by index).
    pub converted_share: f64,
    /// Share of records whose `Email` holds the person's true work email.
    pub email_share: f64,
    /// Share of records whose `Phone` holds the person's number (human format).
    pub phone_share: f64,
    /// This many Leads (spread evenly over the id range) share one identical SystemModstamp,
    /// the middle of the 90-day span: the tie group of issue 6's keyset test.
    pub shared_modstamp: usize,
    /// This many Leads (the last ones) are in the recycle bin.
    pub deleted_leads: usize,
    /// Leads also carry the company's `Website` (`https://www.<domain>`),
    /// `NumberOfEmployees` and `ICP_Score__c` ([`SalesforceData::lead_firmographics`]): what
    /// audiences filter on and providers match by (the demo's org).
    pub lead_firmographics: bool,
}

impl Default for SeedSpec {
    fn default() -> Self {
        SeedSpec {
            leads: 1_000,
            contacts: 200,
            converted_share: 0.05,
            email_share: 0.3,
            phone_share: 0.1,
            shared_modstamp: 0,
            deleted_leads: 0,
            lead_firmographics: false,
        }
    }
}

const DAY_MS: i64 = 86_400_000;
const LEAD_SOURCES: [&str; 5] = [
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Other",
];

impl SeedSpec {
    pub fn new(leads: usize, contacts: usize) -> Self {
        SeedSpec {
            leads,
            contacts,
            ..SeedSpec::default()
        }
    }
}

impl SalesforceData {
    /// A person's company `Website` (`https://www.<domain>`),
    /// `NumberOfEmployees` and `ICP_Score__c` as Lead fields (text values, as
    /// [`SeedRecord::fields`] and [`crate::salesforce::SalesforceSim::create_record`]
    /// take them).
    pub fn lead_firmographics(p: &Person) -> Vec<(String, String)> {
        vec![
            ("Website".into(), format!("https://www.{}", p.domain)),
            ("NumberOfEmployees".into(), p.employees.to_string()),
            ("ICP_Score__c".into(), p.icp_score.to_string()),
        ]
    }

    /// Four sales reps; one Lead per person `0..leads`, one Contact per person after that:
    /// FirstName, LastName, Title, Company (Lead) / MailingCountry (Contact), Country (Lead),
    /// LeadSource, Status (Lead), Email for `email_share`, Phone for `phone_share`, owned
    /// round-robin by the reps. One Account per company of the Contacts' people (in order of
    /// first appearance; Name = the company name, Website = `https://www.<domain>`,
    /// BillingCountry = the person's country, NumberOfEmployees), and every Contact's
    /// `AccountId` names its company's Account. CreatedDate and LastModifiedDate are spread over the 90 days
    /// before `base_ms`, at second precision; about 10% of records have a SystemModstamp later
    /// than LastModifiedDate (a system process touched them). The population must hold
    /// `leads + contacts` people (missing people are skipped).
    pub fn from_population(pop: &Population, base_ms: i64, spec: &SeedSpec) -> Self {
        let root = H::new(pop.seed()).s("salesforce");
        let users = [
            ("alice.reed", "Alice Reed"),
            ("bruno.costa", "Bruno Costa"),
            ("chen.wei", "Chen Wei"),
            ("dana.kowalski", "Dana Kowalski"),
        ]
        .iter()
        .map(|(u, n)| SeedUser {
            username: format!("{u}@acme-enrichd.example"),
            name: n.to_string(),
        })
        .collect::<Vec<_>>();
        let span = 90 * DAY_MS;
        let shared_at = base_ms - span / 2;
        let times = |h: H| {
            let created = base_ms - span + (h.s("created").unit() * span as f64) as i64;
            let modified =
                created + (h.s("modified").unit() * (base_ms - created).max(0) as f64) as i64;
            let modstamp = if h.s("system").unit() < 0.10 {
                modified + (h.s("sysdelta").unit() * (base_ms - modified).max(0) as f64) as i64
            } else {
                modified
            };
            (created, modified, modstamp)
        };
        let mut leads = Vec::with_capacity(spec.leads);
        for i in 0..spec.leads.min(pop.len()) {
            let p = pop.person(i);
            let h = root.s("lead").n(i as u64);
            let (created, mut modified, mut modstamp) = times(h);
            let n = spec.leads as u128;
            let shared = spec.shared_modstamp > 0
                && ((i as u128 * spec.shared_modstamp as u128) % n) < spec.shared_modstamp as u128;
            if shared {
                modified = shared_at.min(modified.max(created));
                modstamp = shared_at;
            }
            let converted = h.s("converted").unit() < spec.converted_share;
            let mut f: Vec<(String, String)> = vec![
                ("FirstName".into(), p.first_name.clone()),
                ("LastName".into(), p.last_name.clone()),
                ("Company".into(), p.company_name.clone()),
                ("Title".into(), p.job_title.clone()),
                ("Country".into(), p.country.clone()),
                (
                    "LeadSource".into(),
                    LEAD_SOURCES[h.s("source").below(5) as usize].to_string(),
                ),
                (
                    "Status".into(),
                    if converted {
                        "Closed - Converted"
                    } else if h.s("status").unit() < 0.6 {
                        "Open - Not Contacted"
                    } else {
                        "Working - Contacted"
                    }
                    .to_string(),
                ),
            ];
            if spec.lead_firmographics {
                f.extend(Self::lead_firmographics(p));
            }
            if h.s("email").unit() < spec.email_share {
                f.push(("Email".into(), p.work_email.clone()));
            }
            if h.s("phone").unit() < spec.phone_share {
                f.push(("Phone".into(), human_phone(&p.phone)));
            }
            leads.push(SeedRecord {
                fields: f,
                created_ms: created,
                last_modified_ms: modified,
                modstamp_ms: modstamp,
                owner: i % users.len(),
                converted,
                deleted: i + spec.deleted_leads >= spec.leads,
                account: None,
            });
        }
        let mut contacts = Vec::with_capacity(spec.contacts);
        let mut accounts: Vec<SeedRecord> = Vec::new();
        let mut account_of: HashMap<String, usize> = HashMap::new();
        for k in 0..spec.contacts {
            let i = spec.leads + k;
            if i >= pop.len() {
                break;
            }
            let p = pop.person(i);
            let h = root.s("contact").n(i as u64);
            let (created, modified, modstamp) = times(h);
            let key = p.domain.to_ascii_lowercase();
            let account = match account_of.get(&key) {
                Some(&a) => a,
                None => {
                    let a = accounts.len();
                    let ha = root.s("account").n(a as u64);
                    let (ac, am, ams) = times(ha);
                    accounts.push(SeedRecord {
                        fields: vec![
                            ("Name".into(), p.company_name.clone()),
                            ("Website".into(), format!("https://www.{}", p.domain)),
                            ("BillingCountry".into(), p.country.clone()),
                            ("NumberOfEmployees".into(), p.employees.to_string()),
                            ("Type".into(), "Prospect".into()),
                        ],
                        created_ms: ac,
                        last_modified_ms: am,
                        modstamp_ms: ams,
                        owner: a % users.len(),
                        ..SeedRecord::default()
                    });
                    account_of.insert(key, a);
                    a
                }
            };
            let mut f: Vec<(String, String)> = vec![
                ("FirstName".into(), p.first_name.clone()),
                ("LastName".into(), p.last_name.clone()),
                ("Title".into(), p.job_title.clone()),
                ("MailingCountry".into(), p.country.clone()),
                (
                    "LeadSource".into(),
                    LEAD_SOURCES[h.s("source").below(5) as usize].to_string(),
                ),
            ];
            if h.s("email").unit() < spec.email_share {
                f.push(("Email".into(), p.work_email.clone()));
            }
            if h.s("phone").unit() < spec.phone_share {
                f.push(("Phone".into(), human_phone(&p.phone)));
            }
            contacts.push(SeedRecord {
                fields: f,
                created_ms: created,
                last_modified_ms: modified,
                modstamp_ms: modstamp,
                owner: k % users.len(),
                converted: false,
                deleted: false,
                account: Some(account),
            });
        }
        SalesforceData {
            users,
            accounts,
            leads,
            contacts,
        }
    }
}

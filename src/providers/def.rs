//! The connector definition: one `connectors/<id>.toml` per provider, for
//! built-in adapters (which take their endpoint, limits and prices from it)
//! and declarative ones (which also take their request and response shapes).
//! An account in config.toml points at a connector and may override its base
//! URL and limits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::channel::{Channel, ChannelSet};
use crate::core::outcome::MilliCredits;
use crate::secret::Secret;

/// Which code implements the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    Fullenrich,
    Apollo,
    Hunter,
    Pdl,
    Zerobounce,
    /// Request and response described entirely in the connector file.
    Declarative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Finds contact values.
    #[default]
    Finder,
    /// Verifies email deliverability.
    Verifier,
}

/// Documented request limits of one account. Every window present is
/// enforced; `concurrency` caps requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
    pub per_day: Option<u32>,
    pub concurrency: Option<u32>,
}

impl Limits {
    /// `self` with every window `o` sets replaced.
    pub fn overridden_by(self, o: &Limits) -> Limits {
        Limits {
            per_second: o.per_second.or(self.per_second),
            per_minute: o.per_minute.or(self.per_minute),
            per_hour: o.per_hour.or(self.per_hour),
            per_day: o.per_day.or(self.per_day),
            concurrency: o.concurrency.or(self.concurrency),
        }
    }

    /// `(window, count)` pairs for every window set.
    pub fn windows(&self) -> Vec<(Duration, u32)> {
        [
            (Duration::from_secs(1), self.per_second),
            (Duration::from_secs(60), self.per_minute),
            (Duration::from_secs(3600), self.per_hour),
            (Duration::from_secs(86_400), self.per_day),
        ]
        .into_iter()
        .filter_map(|(w, n)| n.map(|n| (w, n)))
        .collect()
    }
}

/// What the provider bills us, in its own credits (the provider-spend ledger;
/// customer credits are priced per workspace in config.toml).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cost {
    pub work_email: f64,
    pub personal_email: f64,
    pub phone: f64,
    pub linkedin_url: f64,
    /// Billed on every request, found or not.
    pub attempt: f64,
    /// Billed once per request that matched a person and returned values,
    /// on top of the per-channel prices (PDL, Apollo, Prospeo bill per match).
    pub per_match: f64,
    /// Verifiers: billed per check.
    pub check: f64,
}

impl Cost {
    pub fn for_channel(&self, c: Channel) -> MilliCredits {
        milli(match c {
            Channel::WorkEmail => self.work_email,
            Channel::PersonalEmail => self.personal_email,
            Channel::Phone => self.phone,
            Channel::LinkedinUrl => self.linkedin_url,
        })
    }
    pub fn attempt_milli(&self) -> MilliCredits {
        milli(self.attempt)
    }
    pub fn per_match_milli(&self) -> MilliCredits {
        milli(self.per_match)
    }
    pub fn check_milli(&self) -> MilliCredits {
        milli(self.check)
    }
}

/// Credits → milli-credits, rounded.
pub fn milli(credits: f64) -> MilliCredits {
    (credits * 1000.0).round() as MilliCredits
}

/// One identity input a declarative provider can require or use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityInput {
    FirstName,
    LastName,
    FullName,
    Domain,
    CompanyName,
    LinkedinUrl,
    Email,
    JobTitle,
    Country,
}

impl IdentityInput {
    pub const ALL: [IdentityInput; 9] = [
        IdentityInput::FirstName,
        IdentityInput::LastName,
        IdentityInput::FullName,
        IdentityInput::Domain,
        IdentityInput::CompanyName,
        IdentityInput::LinkedinUrl,
        IdentityInput::Email,
        IdentityInput::JobTitle,
        IdentityInput::Country,
    ];

    /// The placeholder name in request templates: `{first_name}`...
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityInput::FirstName => "first_name",
            IdentityInput::LastName => "last_name",
            IdentityInput::FullName => "full_name",
            IdentityInput::Domain => "domain",
            IdentityInput::CompanyName => "company_name",
            IdentityInput::LinkedinUrl => "linkedin_url",
            IdentityInput::Email => "email",
            IdentityInput::JobTitle => "job_title",
            IdentityInput::Country => "country",
        }
    }

    pub fn get(self, id: &crate::core::lead::Identity) -> Option<&str> {
        match self {
            IdentityInput::FirstName => id.first_name.as_deref(),
            IdentityInput::LastName => id.last_name.as_deref(),
            IdentityInput::FullName => id.full_name.as_deref(),
            IdentityInput::Domain => id.domain.as_deref(),
            IdentityInput::CompanyName => id.company_name.as_deref(),
            IdentityInput::LinkedinUrl => id.linkedin_url.as_deref(),
            IdentityInput::Email => id.email.as_deref(),
            IdentityInput::JobTitle => id.job_title.as_deref(),
            IdentityInput::Country => id.country.as_deref(),
        }
    }
}

/// How a declarative provider authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthStyle {
    /// `<name>: <key>`
    Header { name: String },
    /// `Authorization: Bearer <key>`
    Bearer,
    /// `?<param>=<key>`
    Query { param: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// Appended to the base URL, e.g. `/v1/person/lookup`.
    pub path: String,
    /// Query parameters; values may hold `{placeholder}`s. A parameter whose
    /// placeholders are all empty for a lead is left out.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Extra headers (values may hold placeholders).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body template: `{placeholder}`s inside JSON strings are replaced
    /// by the JSON-escaped value (an empty string when the lead lacks it).
    #[serde(default)]
    pub body: Option<String>,
}

/// Where one channel's value sits in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclChannel {
    /// JSON pointer (RFC 6901) to the value, e.g. `/data/email`.
    pub value: String,
    /// JSON pointer to the provider's status word for this value.
    #[serde(default)]
    pub status: Option<String>,
    /// Status words meaning verified / catch-all / invalid (compared
    /// case-insensitively). Any other word, or no status, means unknown.
    #[serde(default)]
    pub verified: Vec<String>,
    #[serde(default)]
    pub catch_all: Vec<String>,
    #[serde(default)]
    pub invalid: Vec<String>,
    /// JSON pointer to a boolean do-not-call flag (phones).
    #[serde(default)]
    pub do_not_call: Option<String>,
}

/// The outcome a rule assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOutcome {
    Found,
    NotFound,
    OutOfCredits,
    RateLimited,
    ComplianceBlocked,
    AuthError,
    InvalidInput,
    Transient,
}

/// A classification rule: every condition given must hold; the first rule
/// that matches decides, before the default HTTP-status rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclRule {
    /// HTTP statuses this rule applies to (any when empty).
    #[serde(default)]
    pub status: Vec<u16>,
    /// JSON pointer into the body.
    #[serde(default)]
    pub pointer: Option<String>,
    /// The value at `pointer` equals this (string, number or bool as text).
    #[serde(default)]
    pub equals: Option<String>,
    /// The value at `pointer` contains this text.
    #[serde(default)]
    pub contains: Option<String>,
    pub outcome: RuleOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclResponse {
    #[serde(default)]
    pub channels: BTreeMap<Channel, DeclChannel>,
    /// JSON pointer to the credits the provider says it charged.
    #[serde(default)]
    pub cost: Option<String>,
    #[serde(default)]
    pub rules: Vec<DeclRule>,
}

/// A connector file, `connectors/<id>.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorDef {
    pub id: String,
    pub name: String,
    pub adapter: AdapterKind,
    #[serde(default)]
    pub role: Role,
    /// Production base URL; accounts may override it (sandboxes, EU hosts,
    /// proxies, the simulators).
    pub base_url: String,
    /// Channels it can supply (finders).
    #[serde(default)]
    pub supplies: ChannelSet,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub cost: Cost,
    /// Where the facts above come from.
    #[serde(default)]
    pub docs: Option<String>,
    /// Declarative connectors: accepted identity combinations; a lead must
    /// have every input of at least one of them.
    #[serde(default)]
    pub requires: Vec<Vec<IdentityInput>>,
    #[serde(default)]
    pub auth: Option<AuthStyle>,
    #[serde(default)]
    pub request: Option<DeclRequest>,
    #[serde(default)]
    pub response: Option<DeclResponse>,
}

/// One configured provider account: a connector plus credentials and
/// overrides, as validated from config.toml.
#[derive(Debug, Clone)]
pub struct Account {
    /// The key of `[providers.<id>]` in config.toml.
    pub id: String,
    pub connector: Arc<ConnectorDef>,
    pub base_url: String,
    pub api_key: Secret,
    pub limits: Limits,
    pub timeout: Duration,
    pub max_retries: u32,
    /// Adapter-specific options (`[providers.<id>.options]`), checked by the
    /// adapter's constructor.
    pub options: BTreeMap<String, toml::Value>,
}

/// A connector could not be built from its definition and account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider `{account}` ({connector}): {message}")]
pub struct BuildError {
    pub account: String,
    pub connector: String,
    pub message: String,
}

impl BuildError {
    pub fn new(account: &Account, message: impl Into<String>) -> Self {
        BuildError {
            account: account.id.clone(),
            connector: account.connector.id.clone(),
            message: message.into(),
        }
    }
}

//! The `[workspaces.crm]` table: which CRM a workspace is connected to and
//! how (hosts, credentials from environment variables, limits, sync and
//! write-back settings), validated into [`CrmSettings`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::core::mapping::Mapping;
use crate::secret::Secret;

use super::{RawAudience, Secrets, Validator};

/// Scopes enrichd needs on HubSpot (reference/hubspot.md §1.4).
pub const HUBSPOT_SCOPES: [&str; 4] = [
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
];
/// Asked for but not required: reading and creating the enrichd properties.
pub const HUBSPOT_OPTIONAL_SCOPES: [&str; 2] =
    ["crm.schemas.contacts.read", "crm.schemas.contacts.write"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCrm {
    kind: String,
    auth_url: Option<String>,
    api_url: Option<String>,
    client_id_env: Option<String>,
    client_secret_env: Option<String>,
    private_app_token_env: Option<String>,
    webhook_secret_env: Option<String>,
    portal_id: Option<u64>,
    redirect_uri: Option<String>,
    scopes: Option<Vec<String>>,
    optional_scopes: Option<Vec<String>>,
    mapping: Option<String>,
    #[serde(default)]
    limits: RawCrmLimits,
    lookback_minutes: Option<u64>,
    sync_interval_secs: Option<u64>,
    refresh_margin_secs: Option<u64>,
    company_ttl_hours: Option<u64>,
    create_properties: Option<bool>,
    #[serde(default)]
    properties: Vec<String>,
    timeout_secs: Option<u64>,
    max_retries: Option<u32>,
    daily_reset_utc_offset_minutes: Option<i32>,
    // Salesforce only (see `salesforce` below).
    login_url: Option<String>,
    jwt: Option<RawJwt>,
    api_version: Option<String>,
    contact_mapping: Option<String>,
    bulk_threshold: Option<usize>,
    query_batch_size: Option<u32>,
    duplicate_rule: Option<String>,
    outbound_token_env: Option<String>,
    #[serde(default)]
    fields: Vec<String>,
}

/// `limits = { … }`: HubSpot's buckets or Salesforce's allocation shares
/// (each kind refuses the other's keys).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCrmLimits {
    ten_secondly: Option<u32>,
    search_per_second: Option<u32>,
    daily: Option<u64>,
    daily_stop_share: Option<f64>,
    daily_resume_share: Option<f64>,
    recheck_minutes: Option<u64>,
    request_limit_pause_minutes: Option<u64>,
    concurrency_share: Option<f64>,
    max_concurrent: Option<u32>,
    org_kind: Option<String>,
}

/// `jwt = { key_file = "…", username = "…" }` (Salesforce JWT bearer flow).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    key_file: String,
    username: String,
}

/// HubSpot's limits for one portal, as configured (the general bucket then
/// adapts to `X-HubSpot-RateLimit-Max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubSpotLimits {
    /// General bucket: requests per 10 s (OAuth apps: 110).
    pub ten_secondly: u32,
    /// CRM search: requests per second (5).
    pub search_per_second: u32,
    /// Daily allowance (private apps; OAuth apps have none documented).
    pub daily: Option<u64>,
}

/// How enrichd authenticates to HubSpot.
#[derive(Debug, Clone)]
pub enum HubSpotAuth {
    /// A public app: authorization-code flow with PKCE, then refresh tokens.
    OAuth {
        client_id: String,
        client_secret: Secret,
        redirect_uri: String,
        scopes: Vec<String>,
        optional_scopes: Vec<String>,
    },
    /// A private app's static token.
    PrivateApp { token: Secret },
}

#[derive(Debug, Clone)]
pub struct HubSpotSettings {
    /// Where the browser is sent to approve (`https://app.hubspot.com`).
    pub auth_url: String,
    /// The API host (`https://api.hubapi.com`), also the token endpoint's.
    pub api_url: String,
    pub auth: HubSpotAuth,
    /// The secret webhook signatures are checked with (the app's client
    /// secret unless set).
    pub webhook_secret: Option<Secret>,
    /// The portal (hub) id; learnt at connect for OAuth apps.
    pub portal_id: Option<u64>,
    pub mapping_file: PathBuf,
    pub mapping: Arc<Mapping>,
    pub limits: HubSpotLimits,
    /// Incremental syncs re-read this much before the watermark (search
    /// results appear "a few moments" after a change).
    pub lookback: Duration,
    /// How often `enrichd run` starts an incremental sync.
    pub sync_interval: Duration,
    /// Access tokens are refreshed this long before they expire.
    pub refresh_margin: Duration,
    /// Company fields older than this are read again when a contact refers
    /// to the company.
    pub company_ttl: Duration,
    /// Create the enrichd property group and properties when missing (needs
    /// `crm.schemas.contacts.write`).
    pub create_properties: bool,
    /// Extra contact properties to pull (audience filters, identity).
    pub properties: Vec<String>,
    pub timeout: Duration,
    pub max_retries: u32,
    /// Where the portal's day starts, for a DAILY limit (HubSpot resets at
    /// midnight in the account's time zone).
    pub daily_reset_offset: chrono::FixedOffset,
}

impl HubSpotSettings {
    /// The token endpoint (the v1 endpoint is deprecated).
    pub fn token_url(&self) -> String {
        format!("{}/oauth/2026-03/token", self.api_url)
    }
}

#[derive(Debug, Clone)]
pub enum CrmSettings {
    HubSpot(Arc<HubSpotSettings>),
    Salesforce(Arc<SalesforceSettings>),
}

impl CrmSettings {
    /// The CRM's name in stored rows (`hubspot`, `salesforce`).
    pub fn name(&self) -> &'static str {
        match self {
            CrmSettings::HubSpot(_) => "hubspot",
            CrmSettings::Salesforce(_) => crate::crm::salesforce::CRM,
        }
    }
}

impl Validator {
    /// `[workspaces.crm]` at `key`, for a workspace whose audiences are
    /// `audiences` (the mapping's overrides must name them).
    pub(super) fn crm(
        &mut self,
        key: &str,
        raw: RawCrm,
        audiences: &[RawAudience],
        dir: &Path,
        secrets: &dyn Secrets,
    ) -> Option<CrmSettings> {
        match raw.kind.as_str() {
            "hubspot" => {}
            "salesforce" => {
                return self
                    .salesforce(key, raw, audiences, dir, secrets)
                    .map(|s| CrmSettings::Salesforce(Arc::new(s)));
            }
            other => {
                self.err(
                    format!("{key}.kind"),
                    format!("unknown CRM `{other}`"),
                    "supported: \"hubspot\", \"salesforce\"",
                );
                return None;
            }
        }
        self.foreign_keys(key, &raw, "hubspot");
        let url = |v: &mut Validator, name: &str, value: Option<String>, default: &str| {
            let u = value.unwrap_or_else(|| default.to_string());
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                v.err(
                    format!("{key}.{name}"),
                    format!("`{u}` is not an http(s) URL"),
                    format!("e.g. \"{default}\""),
                );
            }
            u.trim_end_matches('/').to_string()
        };
        let auth_url = url(self, "auth_url", raw.auth_url, "https://app.hubspot.com");
        let api_url = url(self, "api_url", raw.api_url, "https://api.hubapi.com");
        let secret = |v: &mut Validator, name: &str, var: &str| -> Option<Secret> {
            match secrets.get(var) {
                Some(s) => Some(Secret::new(s)),
                None => {
                    v.err(
                        format!("{key}.{name}"),
                        format!("environment variable `{var}` is not set"),
                        format!("export {var}=<value from your HubSpot app settings>"),
                    );
                    None
                }
            }
        };
        let auth = match (&raw.private_app_token_env, &raw.client_id_env) {
            (Some(_), Some(_)) => {
                self.err(
                    key,
                    "both `private_app_token_env` and `client_id_env` are set",
                    "use a private app token or an OAuth app, not both",
                );
                None
            }
            (Some(var), None) => secret(self, "private_app_token_env", var)
                .map(|token| HubSpotAuth::PrivateApp { token }),
            (None, Some(id_var)) => {
                let id = secret(self, "client_id_env", id_var);
                let secret_var = raw
                    .client_secret_env
                    .clone()
                    .unwrap_or_else(|| "HUBSPOT_CLIENT_SECRET".into());
                let client_secret = secret(self, "client_secret_env", &secret_var);
                let redirect_uri = raw
                    .redirect_uri
                    .clone()
                    .unwrap_or_else(|| "http://localhost:8788/oauth/callback".into());
                match url::Url::parse(&redirect_uri) {
                    Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                    _ => self.err(
                        format!("{key}.redirect_uri"),
                        format!("`{redirect_uri}` is not a URL"),
                        "the loopback URL registered in your HubSpot app, e.g. \"http://localhost:8788/oauth/callback\"",
                    ),
                }
                match (id, client_secret) {
                    (Some(client_id), Some(client_secret)) => Some(HubSpotAuth::OAuth {
                        client_id: client_id.expose().to_string(),
                        client_secret,
                        redirect_uri,
                        scopes: raw
                            .scopes
                            .clone()
                            .unwrap_or_else(|| HUBSPOT_SCOPES.map(String::from).to_vec()),
                        optional_scopes: raw
                            .optional_scopes
                            .clone()
                            .unwrap_or_else(|| HUBSPOT_OPTIONAL_SCOPES.map(String::from).to_vec()),
                    }),
                    _ => None,
                }
            }
            (None, None) => {
                self.err(
                    key,
                    "no credentials: set `client_id_env` (OAuth app) or `private_app_token_env`",
                    "see the [workspaces.crm] section of the documented config.toml",
                );
                None
            }
        };
        let webhook_secret = match (&raw.webhook_secret_env, &auth) {
            (Some(var), _) => secret(self, "webhook_secret_env", var),
            (None, Some(HubSpotAuth::OAuth { client_secret, .. })) => Some(client_secret.clone()),
            (None, _) => None,
        };
        let mapping_file = dir.join(raw.mapping.as_deref().unwrap_or("mappings/hubspot.toml"));
        let audience_names: Vec<String> = audiences.iter().map(|a| a.name.clone()).collect();
        let mapping = match crate::config::mapping::load_mapping_for(&mapping_file, &audience_names)
        {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                // The problem's line is in the mapping file, not in the
                // config file the error is reported for: it goes with the
                // mapping file's name.
                for mut p in e.problems {
                    let at = match p.line.take() {
                        Some(l) => format!("{}:{l}", mapping_file.display()),
                        None => mapping_file.display().to_string(),
                    };
                    p.key = format!("{key} ({at}): {}", p.key);
                    self.problems.push(p);
                }
                None
            }
        };
        let limits = HubSpotLimits {
            ten_secondly: raw.limits.ten_secondly.unwrap_or(110),
            search_per_second: raw.limits.search_per_second.unwrap_or(5),
            daily: raw.limits.daily,
        };
        if limits.ten_secondly == 0 || limits.search_per_second == 0 || limits.daily == Some(0) {
            self.err(
                format!("{key}.limits"),
                "limits must be positive",
                "defaults: ten_secondly = 110, search_per_second = 5",
            );
        }
        let offset = raw.daily_reset_utc_offset_minutes.unwrap_or(0);
        let daily_reset_offset = chrono::FixedOffset::east_opt(offset * 60).or_else(|| {
            self.err(
                format!("{key}.daily_reset_utc_offset_minutes"),
                format!("{offset} is not a UTC offset"),
                "minutes east of UTC, between -1439 and 1439",
            );
            None
        });
        Some(CrmSettings::HubSpot(Arc::new(HubSpotSettings {
            auth_url,
            api_url,
            auth: auth?,
            webhook_secret,
            portal_id: raw.portal_id,
            mapping_file,
            mapping: mapping?,
            limits,
            lookback: Duration::from_secs(raw.lookback_minutes.unwrap_or(10) * 60),
            sync_interval: Duration::from_secs(raw.sync_interval_secs.unwrap_or(300).max(1)),
            refresh_margin: Duration::from_secs(raw.refresh_margin_secs.unwrap_or(300)),
            company_ttl: Duration::from_secs(raw.company_ttl_hours.unwrap_or(24) * 3600),
            create_properties: raw.create_properties.unwrap_or(true),
            properties: raw.properties,
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(30).max(1)),
            max_retries: raw.max_retries.unwrap_or(5),
            daily_reset_offset: daily_reset_offset?,
        })))
    }
}

// ---------------------------------------------------------------- Salesforce

/// Default scopes of the web-server flow: the REST API and a refresh token
/// (reference/salesforce.md §1.2).
pub const SALESFORCE_SCOPES: [&str; 2] = ["api", "refresh_token"];

/// How enrichd authenticates to Salesforce.
#[derive(Debug, Clone)]
pub enum SalesforceAuth {
    /// The web-server (authorization-code) flow with PKCE, then refresh
    /// tokens (§1.2, §1.4).
    WebServer {
        client_id: String,
        /// None: the connected app does not require the secret (PKCE only).
        client_secret: Option<Secret>,
        redirect_uri: String,
        scopes: Vec<String>,
    },
    /// The JWT bearer flow for server-to-server installs (§1.5): no refresh
    /// token; a new assertion is minted when the session expires.
    Jwt {
        client_id: String,
        username: String,
        key_file: PathBuf,
        signer: Arc<crate::crm::salesforce::jwt::JwtSigner>,
    },
}

impl SalesforceAuth {
    pub fn client_id(&self) -> &str {
        match self {
            SalesforceAuth::WebServer { client_id, .. } | SalesforceAuth::Jwt { client_id, .. } => {
                client_id
            }
        }
    }
    /// `web_server` or `jwt` (the stored connection's `auth`).
    pub fn flow(&self) -> &'static str {
        match self {
            SalesforceAuth::WebServer { .. } => "web_server",
            SalesforceAuth::Jwt { .. } => "jwt",
        }
    }
}

/// One object enrichd reads and writes, with its mapping.
#[derive(Debug, Clone)]
pub struct SalesforceObject {
    pub object: crate::crm::salesforce::SObject,
    pub mapping_file: PathBuf,
    pub mapping: Arc<Mapping>,
}

/// `[workspaces.crm]` with `kind = "salesforce"`, validated.
#[derive(Debug, Clone)]
pub struct SalesforceSettings {
    /// Where OAuth happens (login, test, a My Domain, or loopback for the
    /// simulator). Data calls never go there: they go to the token
    /// response's `instance_url`.
    pub login: crate::crm::salesforce::oauth::LoginHost,
    pub auth: SalesforceAuth,
    /// `v62.0`: the REST API version of every data path.
    pub api_version: String,
    /// Lead and/or Contact, each with its mapping (at least one).
    pub objects: Vec<SalesforceObject>,
    /// Daily allocation: stop share, resume share, re-check and pause.
    pub budget: crate::crm::salesforce::limits::BudgetPolicy,
    /// Share of the org's concurrent long-running request cap enrichd takes.
    pub concurrency: crate::crm::salesforce::limits::ConcurrencyPolicy,
    /// The org's kind when known (`production` / `developer`); None: the
    /// smaller cap until `Sforce-Limit-Info` shows a production allocation.
    pub org_kind: Option<crate::crm::salesforce::limits::OrgKind>,
    /// Pending updates per object above which write-back uses Bulk API 2.0.
    pub bulk_threshold: usize,
    /// `Sforce-Query-Options: batchSize` (200..=2000).
    pub query_batch_size: u32,
    pub duplicate_rule: crate::crm::salesforce::write::DuplicateRulePolicy,
    /// The secret path segment of `POST /webhooks/salesforce/<token>`
    /// (Outbound Messages carry no signature, §7.1).
    pub outbound_token: Option<Secret>,
    /// Extra fields to read (audience filters, identity).
    pub fields: Vec<String>,
    pub lookback: Duration,
    pub sync_interval: Duration,
    pub timeout: Duration,
    pub max_retries: u32,
}

impl SalesforceSettings {
    /// The object's entry, if enrichd syncs it.
    pub fn object(&self, o: crate::crm::salesforce::SObject) -> Option<&SalesforceObject> {
        self.objects.iter().find(|x| x.object == o)
    }

    /// `/services/data/<api_version>/<rest>`.
    pub fn data_path(&self, rest: &str) -> String {
        format!(
            "/services/data/{}/{}",
            self.api_version,
            rest.trim_start_matches('/')
        )
    }
}

/// `62.0` or `v62.0` → `v62.0`, for versions Salesforce still serves (31.0+).
fn api_version(v: &str) -> Option<String> {
    let t = v.trim().trim_start_matches(['v', 'V']);
    let (major, minor) = t.split_once('.')?;
    let major: u32 = major.parse().ok()?;
    let minor: u32 = minor.parse().ok()?;
    ((31..1000).contains(&major) && minor < 10).then(|| format!("v{major}.{minor}"))
}

impl Validator {
    /// Keys of `[workspaces.crm]` that belong to the other CRM.
    fn foreign_keys(&mut self, key: &str, raw: &RawCrm, kind: &str) {
        let l = &raw.limits;
        let (foreign, other): (Vec<(&str, bool)>, &str) = if kind == "hubspot" {
            (
                vec![
                    ("login_url", raw.login_url.is_some()),
                    ("jwt", raw.jwt.is_some()),
                    ("api_version", raw.api_version.is_some()),
                    ("contact_mapping", raw.contact_mapping.is_some()),
                    ("bulk_threshold", raw.bulk_threshold.is_some()),
                    ("query_batch_size", raw.query_batch_size.is_some()),
                    ("duplicate_rule", raw.duplicate_rule.is_some()),
                    ("outbound_token_env", raw.outbound_token_env.is_some()),
                    ("fields", !raw.fields.is_empty()),
                    ("limits.daily_stop_share", l.daily_stop_share.is_some()),
                    ("limits.daily_resume_share", l.daily_resume_share.is_some()),
                    ("limits.recheck_minutes", l.recheck_minutes.is_some()),
                    (
                        "limits.request_limit_pause_minutes",
                        l.request_limit_pause_minutes.is_some(),
                    ),
                    ("limits.concurrency_share", l.concurrency_share.is_some()),
                    ("limits.max_concurrent", l.max_concurrent.is_some()),
                    ("limits.org_kind", l.org_kind.is_some()),
                ],
                "Salesforce",
            )
        } else {
            (
                vec![
                    ("auth_url", raw.auth_url.is_some()),
                    ("api_url", raw.api_url.is_some()),
                    ("private_app_token_env", raw.private_app_token_env.is_some()),
                    ("webhook_secret_env", raw.webhook_secret_env.is_some()),
                    ("portal_id", raw.portal_id.is_some()),
                    ("optional_scopes", raw.optional_scopes.is_some()),
                    ("refresh_margin_secs", raw.refresh_margin_secs.is_some()),
                    ("company_ttl_hours", raw.company_ttl_hours.is_some()),
                    ("create_properties", raw.create_properties.is_some()),
                    ("properties", !raw.properties.is_empty()),
                    (
                        "daily_reset_utc_offset_minutes",
                        raw.daily_reset_utc_offset_minutes.is_some(),
                    ),
                    ("limits.ten_secondly", l.ten_secondly.is_some()),
                    ("limits.search_per_second", l.search_per_second.is_some()),
                    ("limits.daily", l.daily.is_some()),
                ],
                "HubSpot",
            )
        };
        for (name, set) in foreign {
            if set {
                self.err(
                    format!("{key}.{name}"),
                    format!("`{name}` is a {other} setting, but kind = \"{kind}\""),
                    "remove it (see the documented config.toml for this CRM's keys)",
                );
            }
        }
    }

    /// A mapping file of a Salesforce workspace, its problems reported with
    /// the mapping file's name and line.
    fn salesforce_mapping(
        &mut self,
        key: &str,
        name: &str,
        rel: &str,
        audiences: &[String],
        dir: &Path,
    ) -> Option<SalesforceObject> {
        use crate::crm::salesforce::SObject;
        let mapping_file = dir.join(rel);
        match crate::config::mapping::load_mapping_for(&mapping_file, audiences) {
            Ok(m) => {
                if m.crm != crate::core::mapping::CrmKind::Salesforce {
                    self.err(
                        format!("{key}.{name}"),
                        format!(
                            "{} is a mapping for crm = \"{}\", not Salesforce",
                            mapping_file.display(),
                            m.crm.as_str()
                        ),
                        "point it at a mapping with crm = \"salesforce\" (see mappings/salesforce.toml)",
                    );
                    return None;
                }
                let Some(object) = SObject::parse(&m.object) else {
                    self.err(
                        format!("{key}.{name}"),
                        format!(
                            "{}: object `{}` is not Lead or Contact",
                            mapping_file.display(),
                            m.object
                        ),
                        "set object = \"Lead\" or object = \"Contact\" in the mapping",
                    );
                    return None;
                };
                Some(SalesforceObject {
                    object,
                    mapping_file,
                    mapping: Arc::new(m),
                })
            }
            Err(e) => {
                for mut p in e.problems {
                    let at = match p.line.take() {
                        Some(l) => format!("{}:{l}", mapping_file.display()),
                        None => mapping_file.display().to_string(),
                    };
                    p.key = format!("{key} ({at}): {}", p.key);
                    self.problems.push(p);
                }
                None
            }
        }
    }

    /// `[workspaces.crm]` with `kind = "salesforce"`.
    fn salesforce(
        &mut self,
        key: &str,
        raw: RawCrm,
        audiences: &[RawAudience],
        dir: &Path,
        secrets: &dyn Secrets,
    ) -> Option<SalesforceSettings> {
        use crate::crm::salesforce::limits::{BudgetPolicy, ConcurrencyPolicy, OrgKind};
        use crate::crm::salesforce::oauth::{LoginHost, validate_redirect_uri};
        use crate::crm::salesforce::write::DuplicateRulePolicy;
        self.foreign_keys(key, &raw, "salesforce");
        let login_text = raw
            .login_url
            .clone()
            .unwrap_or_else(|| "https://login.salesforce.com".into());
        let login = match LoginHost::parse(&login_text) {
            Ok(h) => Some(h),
            Err(e) => {
                self.err(
                    format!("{key}.login_url"),
                    e.to_string(),
                    "e.g. login_url = \"https://login.salesforce.com\"",
                );
                None
            }
        };
        let secret = |v: &mut Validator, name: &str, var: &str| -> Option<Secret> {
            match secrets.get(var) {
                Some(s) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
                _ => {
                    v.err(
                        format!("{key}.{name}"),
                        format!("environment variable `{var}` is not set"),
                        format!(
                            "export {var}=<value from the connected app: Setup → App Manager → the app → View → Manage Consumer Details>"
                        ),
                    );
                    None
                }
            }
        };
        let id_var = raw
            .client_id_env
            .clone()
            .unwrap_or_else(|| "SALESFORCE_CLIENT_ID".into());
        let client_id = secret(self, "client_id_env", &id_var).map(|s| s.expose().to_string());
        let auth = match raw.jwt {
            Some(j) => {
                for (name, set) in [
                    ("client_secret_env", raw.client_secret_env.is_some()),
                    ("redirect_uri", raw.redirect_uri.is_some()),
                    ("scopes", raw.scopes.is_some()),
                ] {
                    if set {
                        self.err(
                            format!("{key}.{name}"),
                            format!("`{name}` belongs to the web-server flow, but `jwt` is set"),
                            "the JWT bearer flow signs with the key file; remove it, or remove `jwt` to connect in the browser",
                        );
                    }
                }
                let key_file = dir.join(&j.key_file);
                let signer = match std::fs::read_to_string(&key_file) {
                    Ok(pem) => match crate::crm::salesforce::jwt::JwtSigner::from_pem(&pem) {
                        Ok(s) => Some(Arc::new(s)),
                        Err(e) => {
                            self.err(
                                format!("{key}.jwt.key_file"),
                                format!("{}: {e}", key_file.display()),
                                "give the PKCS#8 private key whose certificate is uploaded to the connected app",
                            );
                            None
                        }
                    },
                    Err(e) => {
                        self.err(
                            format!("{key}.jwt.key_file"),
                            format!("cannot read {}: {e}", key_file.display()),
                            "a path relative to config.toml, readable by enrichd (and nobody else)",
                        );
                        None
                    }
                };
                let username = j.username.trim().to_string();
                if username.is_empty() || !username.contains('@') {
                    self.err(
                        format!("{key}.jwt.username"),
                        format!("`{}` is not a Salesforce username", j.username),
                        "the integration user's username, e.g. \"integration@acme.com\" (pre-authorized for the connected app)",
                    );
                }
                match (client_id.clone(), signer) {
                    (Some(client_id), Some(signer)) if !username.is_empty() => {
                        Some(SalesforceAuth::Jwt {
                            client_id,
                            username,
                            key_file,
                            signer,
                        })
                    }
                    _ => None,
                }
            }
            None => {
                let client_secret = match &raw.client_secret_env {
                    Some(var) => secret(self, "client_secret_env", var).map(Some),
                    None => Some(None),
                };
                let redirect_uri = raw
                    .redirect_uri
                    .clone()
                    .unwrap_or_else(|| "http://localhost:8788/oauth/callback".into());
                if let Err(e) = validate_redirect_uri(&redirect_uri) {
                    self.err(
                        format!("{key}.redirect_uri"),
                        e.to_string(),
                        "the connected app's Callback URL, e.g. \"http://localhost:8788/oauth/callback\"",
                    );
                }
                let scopes = raw
                    .scopes
                    .clone()
                    .unwrap_or_else(|| SALESFORCE_SCOPES.map(String::from).to_vec());
                if !scopes.iter().any(|s| s == "api") {
                    self.err(
                        format!("{key}.scopes"),
                        "the `api` scope is missing: enrichd reads and writes through the REST API",
                        "scopes = [\"api\", \"refresh_token\"]",
                    );
                }
                if !scopes
                    .iter()
                    .any(|s| s == "refresh_token" || s == "offline_access")
                {
                    self.err(
                        format!("{key}.scopes"),
                        "without `refresh_token` (or `offline_access`) Salesforce issues no refresh token, and the connection would end with the first session",
                        "scopes = [\"api\", \"refresh_token\"]",
                    );
                }
                match (client_id.clone(), client_secret) {
                    (Some(client_id), Some(client_secret)) => Some(SalesforceAuth::WebServer {
                        client_id,
                        client_secret,
                        redirect_uri,
                        scopes,
                    }),
                    _ => None,
                }
            }
        };
        let api_version = match &raw.api_version {
            None => Some(crate::crm::salesforce::API_VERSION.to_string()),
            Some(v) => api_version(v).or_else(|| {
                self.err(
                    format!("{key}.api_version"),
                    format!("`{v}` is not a REST API version Salesforce serves"),
                    "e.g. api_version = \"62.0\" (31.0 or later)",
                );
                None
            }),
        };
        let audience_names: Vec<String> = audiences.iter().map(|a| a.name.clone()).collect();
        let mut objects = Vec::new();
        let main = raw.mapping.as_deref().unwrap_or("mappings/salesforce.toml");
        let first = self.salesforce_mapping(key, "mapping", main, &audience_names, dir);
        let mut mappings_ok = first.is_some();
        objects.extend(first);
        if let Some(rel) = &raw.contact_mapping {
            match self.salesforce_mapping(key, "contact_mapping", rel, &audience_names, dir) {
                Some(o) if o.object != crate::crm::salesforce::SObject::Contact => {
                    self.err(
                        format!("{key}.contact_mapping"),
                        format!("{} maps object `{}`, not Contact", o.mapping_file.display(), o.object),
                        "contact_mapping is the mapping with object = \"Contact\"; `mapping` is the Lead one",
                    );
                    mappings_ok = false;
                }
                Some(o)
                    if objects
                        .iter()
                        .any(|x: &SalesforceObject| x.object == o.object) =>
                {
                    self.err(
                        format!("{key}.contact_mapping"),
                        "`mapping` already maps Contact",
                        "use `mapping` for Leads (object = \"Lead\") and `contact_mapping` for Contacts",
                    );
                    mappings_ok = false;
                }
                Some(o) => objects.push(o),
                None => mappings_ok = false,
            }
        }
        let l = &raw.limits;
        let share = |v: &mut Validator, name: &str, value: Option<f64>, default: f64| -> f64 {
            let x = value.unwrap_or(default);
            if !(x.is_finite() && x > 0.0 && x <= 1.0) {
                v.err(
                    format!("{key}.limits.{name}"),
                    format!("{x} is not a share between 0 (excluded) and 1"),
                    format!("e.g. {name} = {default}"),
                );
            }
            x
        };
        let stop_share = share(self, "daily_stop_share", l.daily_stop_share, 0.8);
        let default_resume = (stop_share - 0.05).max(stop_share / 2.0);
        let resume_share = share(
            self,
            "daily_resume_share",
            l.daily_resume_share,
            default_resume,
        );
        if resume_share > stop_share {
            self.err(
                format!("{key}.limits.daily_resume_share"),
                format!("{resume_share} is above daily_stop_share ({stop_share})"),
                "resume below the share where enrichd stops, e.g. 0.05 lower",
            );
        }
        let recheck = l.recheck_minutes.unwrap_or(15);
        let pause = l.request_limit_pause_minutes.unwrap_or(30);
        if recheck == 0 || pause == 0 {
            self.err(
                format!("{key}.limits"),
                "recheck_minutes and request_limit_pause_minutes must be positive",
                "defaults: recheck_minutes = 15, request_limit_pause_minutes = 30",
            );
        }
        let budget = BudgetPolicy {
            stop_share,
            resume_share,
            recheck_ms: i64::try_from(recheck.saturating_mul(60_000)).unwrap_or(i64::MAX),
            request_limit_pause_ms: i64::try_from(pause.saturating_mul(60_000)).unwrap_or(i64::MAX),
        };
        let concurrency = ConcurrencyPolicy {
            share: share(self, "concurrency_share", l.concurrency_share, 0.5),
            max: l.max_concurrent,
        };
        if l.max_concurrent == Some(0) {
            self.err(
                format!("{key}.limits.max_concurrent"),
                "0 would stop every call",
                "leave it out, or at least 1",
            );
        }
        let org_kind = match l.org_kind.as_deref() {
            None => None,
            Some("production" | "sandbox") => Some(OrgKind::ProductionOrSandbox),
            Some("developer" | "trial") => Some(OrgKind::DeveloperOrTrial),
            Some(other) => {
                self.err(
                    format!("{key}.limits.org_kind"),
                    format!("unknown org kind `{other}`"),
                    "\"production\" or \"sandbox\" (25 long-running requests), \"developer\" or \"trial\" (5)",
                );
                None
            }
        };
        let bulk_threshold = raw
            .bulk_threshold
            .unwrap_or(crate::crm::salesforce::write::DEFAULT_BULK_THRESHOLD);
        if bulk_threshold < crate::crm::salesforce::write::COLLECTION_MAX {
            self.err(
                format!("{key}.bulk_threshold"),
                format!(
                    "{bulk_threshold} is below one sObject Collections call ({} records)",
                    crate::crm::salesforce::write::COLLECTION_MAX
                ),
                "Salesforce recommends Bulk API 2.0 above about 2,000 records: bulk_threshold = 2000",
            );
        }
        let query_batch_size = raw
            .query_batch_size
            .unwrap_or(crate::crm::salesforce::soql::MAX_BATCH);
        if !(crate::crm::salesforce::soql::MIN_BATCH..=crate::crm::salesforce::soql::MAX_BATCH)
            .contains(&query_batch_size)
        {
            self.err(
                format!("{key}.query_batch_size"),
                format!("{query_batch_size} is outside 200..=2000"),
                "Sforce-Query-Options batchSize takes 200 to 2000 (default 2000)",
            );
        }
        let duplicate_rule = match raw.duplicate_rule.as_deref() {
            None | Some("allow_save") => DuplicateRulePolicy::AllowSave,
            Some("enforce") => DuplicateRulePolicy::Enforce,
            Some("omit") => DuplicateRulePolicy::Omit,
            Some(other) => {
                self.err(
                    format!("{key}.duplicate_rule"),
                    format!("unknown duplicate-rule policy `{other}`"),
                    "\"allow_save\" (alert rules do not stop a write), \"enforce\" or \"omit\" (the org's defaults)",
                );
                DuplicateRulePolicy::AllowSave
            }
        };
        let outbound_token = match &raw.outbound_token_env {
            Some(var) => {
                let t = secret(self, "outbound_token_env", var);
                if let Some(t) = &t
                    && t.expose().len() < 16
                {
                    self.err(
                        format!("{key}.outbound_token_env"),
                        format!("the token in `{var}` is shorter than 16 characters"),
                        "use a long random value, e.g. `openssl rand -hex 24`",
                    );
                }
                t
            }
            None => None,
        };
        for (i, f) in raw.fields.iter().enumerate() {
            if !crate::crm::salesforce::soql::is_field_name(f) {
                self.err(
                    format!("{key}.fields[{i}]"),
                    format!("`{f}` is not a Salesforce field API name"),
                    "letters, digits and underscores, e.g. \"Industry\" or \"Segment__c\"",
                );
            }
        }
        Some(SalesforceSettings {
            login: login?,
            auth: auth?,
            api_version: api_version?,
            objects: if mappings_ok { objects } else { return None },
            budget,
            concurrency,
            org_kind,
            bulk_threshold,
            query_batch_size,
            duplicate_rule,
            outbound_token,
            fields: raw.fields,
            lookback: Duration::from_secs(raw.lookback_minutes.unwrap_or(10) * 60),
            sync_interval: Duration::from_secs(raw.sync_interval_secs.unwrap_or(300).max(1)),
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(30).max(1)),
            max_retries: raw.max_retries.unwrap_or(5),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::{ConfigError, Settings};
    use crate::core::channel::Channel;
    use crate::core::mapping::{Policy, Transform};

    /// A workspace with audiences `customers` and `us_sales`, connected to
    /// HubSpot with the mapping `mapping` (written next to the config).
    fn load(mapping: &str) -> (tempfile::TempDir, Result<Settings, ConfigError>) {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temp dir: {e}"),
        };
        if let Err(e) = std::fs::write(dir.path().join("mapping.toml"), mapping) {
            panic!("write mapping: {e}");
        }
        let config = r#"
[storage]
url = "sqlite://x.db"

[providers.apollo]
api_key_env = "T_APOLLO_KEY"

[[workspaces]]
id = "acme"
providers = ["apollo"]

[[workspaces.audiences]]
name = "customers"
channels = ["work_email"]

[[workspaces.audiences]]
name = "us_sales"
channels = ["work_email"]

[workspaces.crm]
kind = "hubspot"
private_app_token_env = "T_HUBSPOT_TOKEN"
mapping = "mapping.toml"
"#;
        let secrets: BTreeMap<String, String> = [
            ("T_APOLLO_KEY".to_string(), "k".to_string()),
            ("T_HUBSPOT_TOKEN".to_string(), "t".to_string()),
        ]
        .into();
        let path = dir.path().join("config.toml");
        let r = Settings::from_str(&path, config, &secrets);
        (dir, r)
    }

    const MAPPING: &str = r#"crm = "hubspot"
object = "contacts"

[channels.phone]
field = "enrichment_phone"
source_field = "enrichment_phone_source"

[audiences.customers.channels.phone]
policy = "never"

[audiences.us_sales.channels.phone]
transform = "national"
"#;

    #[test]
    fn overrides_of_the_workspaces_audiences_load() {
        let (_dir, r) = load(MAPPING);
        let s = r.unwrap_or_else(|e| panic!("{e}"));
        let Some(super::CrmSettings::HubSpot(hs)) = &s.workspaces[0].crm else {
            panic!("no HubSpot settings");
        };
        let names: Vec<&str> = hs
            .mapping
            .overrides
            .iter()
            .map(|o| o.audience.as_str())
            .collect();
        assert_eq!(names, ["customers", "us_sales"]);
        let m = hs.mapping.for_audiences(&["us_sales".to_string()]);
        assert_eq!(
            m.channels[&Channel::Phone].value.transform,
            Transform::National
        );
        let m = hs.mapping.for_audiences(&["customers".to_string()]);
        assert_eq!(m.channels[&Channel::Phone].value.policy, Policy::Never);
    }

    #[test]
    fn an_override_of_an_unknown_audience_names_the_mapping_file_key_and_audiences() {
        let (dir, r) = load(&MAPPING.replace("audiences.us_sales", "audiences.eu_sales"));
        let e = match r {
            Ok(_) => panic!("must be refused"),
            Err(e) => e,
        };
        let msg = e.to_string();
        let mapping_file = dir.path().join("mapping.toml");
        // Line 11 of the mapping file, given with the mapping file.
        let key = format!(
            "workspaces[0].crm ({}:11): audiences.eu_sales",
            mapping_file.display()
        );
        assert!(e.mentions(&key), "{msg}");
        assert_eq!(e.problems.len(), 1, "{msg}");
        assert!(
            msg.contains("audience `eu_sales` is not one of the workspace's audiences"),
            "{msg}"
        );
        assert!(
            msg.contains("configured audiences: customers, us_sales"),
            "{msg}"
        );
        // Not reported at line 11 of config.toml.
        assert!(!msg.contains("config.toml:11"), "{msg}");
    }

    #[test]
    fn a_mapping_problem_keeps_its_line_with_the_mapping_file() {
        let (dir, r) = load(&MAPPING.replace("\"never\"", "\"sometimes\""));
        let e = match r {
            Ok(_) => panic!("must be refused"),
            Err(e) => e,
        };
        let msg = e.to_string();
        let key = format!(
            "workspaces[0].crm ({}:9): audiences.customers.channels.phone.policy",
            dir.path().join("mapping.toml").display()
        );
        assert!(e.mentions(&key), "{msg}");
        assert!(msg.contains("unknown policy `sometimes`"), "{msg}");
        assert_eq!(e.problems[0].line, None, "the line is not config.toml's");
    }

    // ------------------------------------------------------------ Salesforce

    const SF_MAPPING: &str = include_str!("../../mappings/salesforce.toml");

    /// A workspace connected to Salesforce with `crm` as its
    /// `[workspaces.crm]` body; the shipped mapping as `mapping.toml`.
    fn load_sf(
        crm: &str,
        extra_secrets: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Settings, ConfigError>) {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temp dir: {e}"),
        };
        for (name, text) in [
            ("mapping.toml", SF_MAPPING.to_string()),
            (
                "contact.toml",
                SF_MAPPING.replace("object = \"Lead\"", "object = \"Contact\""),
            ),
        ] {
            if let Err(e) = std::fs::write(dir.path().join(name), text) {
                panic!("write mapping: {e}");
            }
        }
        let config = format!(
            r#"
[storage]
url = "sqlite://x.db"

[providers.apollo]
api_key_env = "T_APOLLO_KEY"

[[workspaces]]
id = "acme"
providers = ["apollo"]

[[workspaces.audiences]]
name = "customers"
channels = ["work_email"]

[workspaces.crm]
kind = "salesforce"
mapping = "mapping.toml"
{crm}
"#
        );
        let mut secrets: BTreeMap<String, String> = [
            ("T_APOLLO_KEY".to_string(), "k".to_string()),
            (
                "SALESFORCE_CLIENT_ID".to_string(),
                "3MVG9consumer".to_string(),
            ),
            ("SF_SECRET".to_string(), "consumer-secret".to_string()),
        ]
        .into();
        for (k, v) in extra_secrets {
            secrets.insert(k.to_string(), v.to_string());
        }
        let path = dir.path().join("config.toml");
        let r = Settings::from_str(&path, &config, &secrets);
        (dir, r)
    }

    fn sf(s: &Settings) -> &super::SalesforceSettings {
        match &s.workspaces[0].crm {
            Some(super::CrmSettings::Salesforce(sf)) => sf,
            _ => panic!("no Salesforce settings"),
        }
    }

    #[test]
    fn a_salesforce_web_server_workspace_loads_with_defaults() {
        let (_d, r) = load_sf(
            "login_url = \"https://acme.my.salesforce.com\"\nclient_secret_env = \"SF_SECRET\"\ncontact_mapping = \"contact.toml\"\nlimits = { daily_stop_share = 0.6 }",
            &[],
        );
        let s = r.unwrap_or_else(|e| panic!("{e}"));
        let sf = sf(&s);
        assert_eq!(sf.login.base(), "https://acme.my.salesforce.com");
        assert_eq!(sf.api_version, "v62.0");
        assert_eq!(sf.data_path("limits"), "/services/data/v62.0/limits");
        let objects: Vec<_> = sf.objects.iter().map(|o| o.object.as_str()).collect();
        assert_eq!(objects, ["Lead", "Contact"]);
        assert!((sf.budget.stop_share - 0.6).abs() < 1e-9);
        assert!((sf.budget.resume_share - 0.55).abs() < 1e-9);
        assert_eq!(sf.bulk_threshold, 2000);
        match &sf.auth {
            super::SalesforceAuth::WebServer {
                client_id,
                client_secret,
                scopes,
                ..
            } => {
                assert_eq!(client_id, "3MVG9consumer");
                assert!(client_secret.is_some());
                assert_eq!(scopes, &["api", "refresh_token"]);
            }
            other => panic!("{other:?}"),
        }
    }

    /// The URL token routes an Outbound Message to its workspace, so two
    /// workspaces may not share one; distinct tokens load.
    #[test]
    fn two_salesforce_workspaces_may_not_share_an_outbound_token() {
        let second = |var: &str| {
            format!(
                "outbound_token_env = \"T_ONE\"\n\n[[workspaces]]\nid = \"beta\"\nproviders = [\"apollo\"]\n\
                 [[workspaces.audiences]]\nname = \"customers\"\nchannels = [\"work_email\"]\n\
                 [workspaces.crm]\nkind = \"salesforce\"\nmapping = \"mapping.toml\"\noutbound_token_env = \"{var}\"\n"
            )
        };
        let tokens = [
            ("T_ONE", "a-long-random-token"),
            ("T_TWO", "another-long-random-token"),
        ];
        let (_d, r) = load_sf(&second("T_TWO"), &tokens);
        assert!(r.is_ok(), "{:?}", r.err());
        let (_d, r) = load_sf(&second("T_ONE"), &tokens);
        let e = match r {
            Ok(_) => panic!("a shared token was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("workspaces[1].crm.outbound_token_env"), "{e}");
        assert!(
            e.contains("same Outbound Message token as workspace `acme`"),
            "{e}"
        );
        assert!(
            !e.contains("a-long-random-token"),
            "the token is in the error: {e}"
        );
    }

    #[test]
    fn a_salesforce_jwt_workspace_loads_its_key() {
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/salesforce/jwt_test_key.pem"
        );
        let (_d, r) = load_sf(
            &format!(
                "api_version = \"61.0\"\njwt = {{ key_file = \"{key}\", username = \"int@acme.example\" }}"
            ),
            &[],
        );
        let s = r.unwrap_or_else(|e| panic!("{e}"));
        let sf = sf(&s);
        assert_eq!(sf.api_version, "v61.0");
        assert_eq!(sf.auth.flow(), "jwt");
    }

    #[test]
    fn salesforce_problems_name_their_keys() {
        let (_d, r) = load_sf(
            "login_url = \"https://evil.example.com\"\nportal_id = 5\nclient_secret_env = \"NOPE\"\n\
             api_version = \"20.0\"\ncontact_mapping = \"mapping.toml\"\nscopes = [\"api\"]\n\
             limits = { daily_stop_share = 1.5, ten_secondly = 10, org_kind = \"huge\" }\n\
             duplicate_rule = \"maybe\"\nquery_batch_size = 50\nfields = [\"Bad Name\"]",
            &[],
        );
        let e = match r {
            Ok(_) => panic!("must be refused"),
            Err(e) => e,
        };
        let msg = e.to_string();
        for key in [
            "workspaces[0].crm.login_url",
            "workspaces[0].crm.portal_id",
            "workspaces[0].crm.client_secret_env",
            "workspaces[0].crm.api_version",
            "workspaces[0].crm.contact_mapping",
            "workspaces[0].crm.scopes",
            "workspaces[0].crm.limits.daily_stop_share",
            "workspaces[0].crm.limits.ten_secondly",
            "workspaces[0].crm.limits.org_kind",
            "workspaces[0].crm.duplicate_rule",
            "workspaces[0].crm.query_batch_size",
            "workspaces[0].crm.fields[0]",
        ] {
            assert!(e.mentions(key), "{key} not reported:\n{msg}");
        }
        assert!(!msg.contains("consumer-secret"), "{msg}");
        // A JWT key that is not a key names the file and what to do.
        let (_d, r) = load_sf(
            "jwt = { key_file = \"mapping.toml\", username = \"int@acme.example\" }\nredirect_uri = \"http://localhost:1/cb\"",
            &[],
        );
        let e = match r {
            Ok(_) => panic!("must be refused"),
            Err(e) => e,
        };
        assert!(e.mentions("workspaces[0].crm.jwt.key_file"), "{e}");
        assert!(e.mentions("workspaces[0].crm.redirect_uri"), "{e}");
    }
}

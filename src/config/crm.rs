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
    limits: RawHubSpotLimits,
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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHubSpotLimits {
    ten_secondly: Option<u32>,
    search_per_second: Option<u32>,
    daily: Option<u64>,
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
        if raw.kind != "hubspot" {
            self.err(
                format!("{key}.kind"),
                format!("unknown CRM `{}`", raw.kind),
                "supported: \"hubspot\" (Salesforce is coming)",
            );
            return None;
        }
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
}

//! config.toml → validated [`Settings`]. Raw structures mirror the file
//! (unknown keys refused); validation resolves references (providers,
//! connectors, verifier, channel orders), reads secrets from the environment
//! variables the file names, and reports every problem at once with the
//! file, the key path and what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::core::audience::{Audience, Condition, Op, Persona, Scalar};
use crate::core::channel::{Channel, ChannelSet};
use crate::core::lead::{IdentityFields, WorkspaceId};
use crate::core::ledger::{Period, Prices};
use crate::core::usable::{CatchAllPolicy, UsabilityPolicy, country_code};
use crate::providers::def::{Account, ConnectorDef, Limits, Role};
use crate::secret::Secret;

pub mod crm;
mod error;
pub mod mapping;
pub use error::{ConfigError, Problem, line_of, parse_toml};

/// Where secrets come from: the process environment, or a map (the demo and
/// tests).
pub trait Secrets {
    fn get(&self, name: &str) -> Option<String>;
}

/// Reads environment variables.
pub struct EnvSecrets;

impl Secrets for EnvSecrets {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Secrets for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

// ---------------------------------------------------------------- raw file

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    engine: RawEngine,
    #[serde(default)]
    pricing: RawPrices,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    workspaces: Vec<RawWorkspace>,
    #[serde(default)]
    security: RawSecurity,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    master_key_env: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: Option<String>,
    url_env: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    public_url: Option<String>,
    shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEngine {
    concurrency: u32,
    batch_window_ms: u64,
    async_timeout_secs: u64,
    poll_interval_secs: u64,
    retry_after_minutes: u64,
    not_found_retry_days: u32,
    max_retry_wait_secs: u64,
    reservation_ttl_minutes: u64,
    connectors_dir: String,
}

impl Default for RawEngine {
    fn default() -> Self {
        RawEngine {
            concurrency: 64,
            batch_window_ms: 250,
            async_timeout_secs: 150,
            poll_interval_secs: 15,
            retry_after_minutes: 30,
            not_found_retry_days: 30,
            max_retry_wait_secs: 60,
            reservation_ttl_minutes: 60,
            connectors_dir: "connectors".into(),
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    work_email: Option<i64>,
    personal_email: Option<i64>,
    phone: Option<i64>,
    linkedin_url: Option<i64>,
}

impl RawPrices {
    fn over(self, base: Prices) -> Prices {
        Prices {
            work_email: self.work_email.unwrap_or(base.work_email),
            personal_email: self.personal_email.unwrap_or(base.personal_email),
            phone: self.phone.unwrap_or(base.phone),
            linkedin_url: self.linkedin_url.unwrap_or(base.linkedin_url),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    connector: Option<String>,
    api_key_env: String,
    base_url: Option<String>,
    #[serde(default)]
    limits: Limits,
    timeout_secs: Option<u64>,
    max_retries: Option<u32>,
    #[serde(default)]
    options: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkspace {
    id: String,
    name: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    order: BTreeMap<Channel, Vec<String>>,
    verifier: Option<String>,
    #[serde(default)]
    catch_all: CatchAllPolicy,
    default_region: Option<String>,
    #[serde(default)]
    freshness_days: BTreeMap<Channel, u32>,
    #[serde(default)]
    pricing: RawPrices,
    budget: Option<RawBudget>,
    #[serde(default)]
    fields: IdentityFields,
    #[serde(default)]
    audiences: Vec<RawAudience>,
    crm: Option<crm::RawCrm>,
    notify_url: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    credits: i64,
    #[serde(default)]
    period: Period,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudience {
    name: String,
    channels: Vec<Channel>,
    #[serde(default)]
    filter: Vec<BTreeMap<String, toml::Value>>,
    persona: Option<RawPersona>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPersona {
    #[serde(default)]
    titles: Vec<String>,
    #[serde(default)]
    seniorities: Vec<String>,
    title_field: Option<String>,
    seniority_field: Option<String>,
}

// ---------------------------------------------------------------- settings

/// Engine tuning (`[engine]`).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Leads enriched at once.
    pub concurrency: usize,
    /// How long an async batch provider collects leads before submitting.
    pub batch_window: Duration,
    /// How long an async provider's result is awaited.
    pub async_timeout: Duration,
    /// Polling interval for async results (the fallback to callbacks).
    pub poll_interval: Duration,
    /// When a lead skipped for now is retried, if no provider said when.
    pub retry_after: Duration,
    /// A provider that answered definitively (not found, unusable...) is not
    /// asked again for the same lead and channel for this long.
    pub not_found_retry_days: u32,
    /// Longest `Retry-After` waited inline before skipping a provider for now.
    pub max_retry_wait: Duration,
    /// An unsettled reservation (crashed run) lapses after this.
    pub reservation_ttl: Duration,
    pub connectors_dir: PathBuf,
}

/// A workspace's credit budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub credits: i64,
    pub period: Period,
}

/// One customer organisation (`[[workspaces]]`), validated.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    /// While off, no provider is called.
    pub enabled: bool,
    /// Waterfall order per channel (account ids), resolved for every channel.
    pub order: BTreeMap<Channel, Vec<String>>,
    pub verifier: Option<String>,
    pub catch_all: CatchAllPolicy,
    pub default_region: Option<String>,
    /// Values older than this many days are re-checked (`None` = never stale).
    pub freshness_days: BTreeMap<Channel, Option<u32>>,
    pub prices: Prices,
    pub budget: Option<Budget>,
    pub fields: IdentityFields,
    pub audiences: Vec<Audience>,
    /// The CRM the workspace is connected to (none: leads come from files).
    pub crm: Option<crm::CrmSettings>,
    /// Where a JSON notification (Slack-compatible `text`) is POSTed when a
    /// bulk job finishes. A secret (a Slack webhook URL is a credential):
    /// never logged.
    pub notify_url: Option<crate::secret::Secret>,
}

impl Workspace {
    pub fn order_for(&self, c: Channel) -> &[String] {
        self.order.get(&c).map_or(&[], Vec::as_slice)
    }
    pub fn freshness(&self, c: Channel) -> Option<u32> {
        self.freshness_days.get(&c).copied().flatten()
    }
    pub fn usability(&self) -> UsabilityPolicy {
        UsabilityPolicy {
            catch_all: self.catch_all,
            has_verifier: self.verifier.is_some(),
            default_region: self.default_region.clone(),
        }
    }
    /// The policy applied to a verifier's own verdict, which is final: an
    /// unknown answer is not sent to the verifier again.
    pub fn usability_without_verifier(&self) -> UsabilityPolicy {
        UsabilityPolicy {
            has_verifier: false,
            ..self.usability()
        }
    }
    /// Every account the workspace may call, in first-use order.
    pub fn accounts(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for acc in self.order.values().flatten().chain(self.verifier.iter()) {
            if seen.insert(acc.clone()) {
                out.push(acc.clone());
            }
        }
        out
    }
}

pub const DEFAULT_FRESHNESS: [(Channel, Option<u32>); 4] = [
    (Channel::WorkEmail, Some(90)),
    (Channel::PersonalEmail, Some(90)),
    (Channel::Phone, Some(180)),
    (Channel::LinkedinUrl, Some(365)),
];

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: PathBuf,
    pub storage_url: String,
    pub listen: Option<SocketAddr>,
    pub public_url: Option<String>,
    /// `enrichd run`: how long SIGTERM waits for in-flight work.
    pub shutdown_grace: Duration,
    pub engine: EngineSettings,
    pub accounts: BTreeMap<String, Arc<Account>>,
    pub workspaces: Vec<Arc<Workspace>>,
    /// The environment variable holding the master key CRM tokens are
    /// encrypted with (read when a connection is used, not at load).
    pub master_key_env: String,
    /// Its value, if set.
    pub master_key: Option<Secret>,
}

impl Settings {
    pub fn workspace(&self, id: &str) -> Option<&Arc<Workspace>> {
        self.workspaces.iter().find(|w| w.id.as_str() == id)
    }

    /// Loads and validates `path`, reading secrets from `secrets`.
    pub fn load(path: &Path, secrets: &dyn Secrets) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(
                path,
                Problem::new("", format!("cannot read the file: {e}"))
                    .hint("pass the path of your config with --config <file>"),
            )
        })?;
        Self::from_str(path, &text, secrets)
    }

    /// Validates config text as if read from `path` (relative paths in it
    /// resolve against `path`'s directory).
    pub fn from_str(
        path: &Path,
        text: &str,
        secrets: &dyn Secrets,
    ) -> Result<Settings, ConfigError> {
        let raw: RawConfig = parse_toml(path, text)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut v = Validator {
            problems: Vec::new(),
        };
        let settings = v.settings(raw, path, &dir, secrets);
        if v.problems.is_empty() {
            settings
                .ok_or_else(|| ConfigError::one(path, Problem::new("", "invalid configuration")))
        } else {
            // Best-effort line numbers for keys whose last segment is on a line.
            let mut problems = v.problems;
            for p in &mut problems {
                if p.line.is_none() {
                    p.line = guess_line(text, &p.key);
                }
            }
            Err(ConfigError {
                file: path.to_path_buf(),
                problems,
            })
        }
    }
}

/// Finds the line of the table that holds `key` (best effort), e.g.
/// `providers.apollo.api_key_env` → the line of `api_key_env` after
/// `[providers.apollo]`.
fn guess_line(text: &str, key: &str) -> Option<usize> {
    let first = key.split(['.', '[']).next()?;
    if first != "providers" {
        return None;
    }
    let mut parts = key.split('.');
    parts.next();
    let table = format!("[providers.{}]", parts.next()?);
    let field = parts.next();
    let start = text.find(&table)?;
    let offset = match field {
        Some(f) => text[start..]
            .find(&format!("{f} "))
            .map_or(start, |o| start + o),
        None => start,
    };
    Some(line_of(text, offset))
}

struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn err(&mut self, key: impl Into<String>, msg: impl Into<String>, hint: impl Into<String>) {
        self.problems.push(Problem::new(key, msg).hint(hint));
    }

    fn settings(
        &mut self,
        raw: RawConfig,
        path: &Path,
        dir: &Path,
        secrets: &dyn Secrets,
    ) -> Option<Settings> {
        let storage_url = self.storage(&raw.storage, dir, secrets);
        let master_key_env = raw
            .security
            .master_key_env
            .clone()
            .unwrap_or_else(|| "ENRICHD_MASTER_KEY".into());
        let listen = raw
            .server
            .listen
            .as_deref()
            .and_then(|l| match l.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.err(
                        "server.listen",
                        format!("`{l}` is not an address and port"),
                        "write it as host:port, e.g. \"127.0.0.1:8787\"",
                    );
                    None
                }
            });
        if let Some(u) = &raw.server.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            self.err(
                "server.public_url",
                format!("`{u}` is not an http(s) URL"),
                "the URL providers use to reach this server, e.g. \"https://enrichd.example.com\"",
            );
        }
        let engine = self.engine(&raw.engine, dir);
        let connectors = self.connectors(&engine.connectors_dir);
        let accounts = self.accounts(raw.providers, &connectors, secrets);
        let base_prices = raw.pricing.over(Prices::default());
        self.prices("pricing", base_prices);
        let mut ids = BTreeSet::new();
        let mut workspaces = Vec::new();
        let mut tokens: Vec<(String, String)> = Vec::new();
        if raw.workspaces.is_empty() {
            self.err(
                "workspaces",
                "no workspace is configured",
                "add a [[workspaces]] table (see the documented config.toml)",
            );
        }
        for (i, w) in raw.workspaces.into_iter().enumerate() {
            let key = format!("workspaces[{i}]");
            if !ids.insert(w.id.clone()) {
                self.err(
                    format!("{key}.id"),
                    format!("workspace id `{}` is used twice", w.id),
                    "give every workspace its own id",
                );
            }
            if let Some(ws) = self.workspace(&key, w, &accounts, base_prices, dir, secrets) {
                // An Outbound Message is routed to its workspace by the URL
                // token: two workspaces with one token would receive each
                // other's changes.
                if let Some(crm::CrmSettings::Salesforce(sf)) = &ws.crm
                    && let Some(t) = &sf.outbound_token
                {
                    if let Some((other, _)) = tokens
                        .iter()
                        .find(|(_, o): &&(String, String)| o == t.expose())
                    {
                        self.err(
                            format!("{key}.crm.outbound_token_env"),
                            format!(
                                "workspace `{}` uses the same Outbound Message token as workspace `{other}`",
                                ws.id
                            ),
                            "give every Salesforce workspace its own token (a long random \
                             string): the token in the URL routes a message to its workspace",
                        );
                    }
                    tokens.push((ws.id.to_string(), t.expose().to_string()));
                }
                workspaces.push(Arc::new(ws));
            }
        }
        Some(Settings {
            file: path.to_path_buf(),
            storage_url: storage_url?,
            listen,
            shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_secs.unwrap_or(25)),
            public_url: raw
                .server
                .public_url
                .map(|u| u.trim_end_matches('/').to_string()),
            engine,
            accounts,
            workspaces,
            master_key: secrets.get(&master_key_env).map(Secret::new),
            master_key_env,
        })
    }

    fn storage(&mut self, s: &RawStorage, dir: &Path, secrets: &dyn Secrets) -> Option<String> {
        let url = match (&s.url, &s.url_env) {
            (Some(_), Some(_)) => {
                self.err(
                    "storage",
                    "both `url` and `url_env` are set",
                    "keep one of them",
                );
                return None;
            }
            (Some(u), None) => u.clone(),
            (None, Some(var)) => match secrets.get(var) {
                Some(u) => u,
                None => {
                    self.err(
                        "storage.url_env",
                        format!("environment variable `{var}` is not set"),
                        format!("export {var}=<database URL>, or set storage.url"),
                    );
                    return None;
                }
            },
            (None, None) => "sqlite://.enrichd/enrichd.db".to_string(),
        };
        if let Some(p) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let (file, query) = p.split_once('?').map_or((p, None), |(f, q)| (f, Some(q)));
            if file.is_empty() {
                self.err(
                    "storage.url",
                    "the SQLite URL names no file",
                    "e.g. \"sqlite://.enrichd/enrichd.db\"",
                );
                return None;
            }
            let abs = if Path::new(file).is_absolute() || file == ":memory:" {
                PathBuf::from(file)
            } else {
                dir.join(file)
            };
            let mut u = format!("sqlite://{}", abs.display());
            if let Some(q) = query {
                u.push('?');
                u.push_str(q);
            }
            Some(u)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(url)
        } else {
            self.err(
                "storage.url",
                "unsupported database URL (the scheme must be sqlite:// or postgres://)",
                "use \"sqlite://<file>\" (the embedded default) or \"postgres://user@host/db\"",
            );
            None
        }
    }

    fn engine(&mut self, e: &RawEngine, dir: &Path) -> EngineSettings {
        if e.concurrency == 0 {
            self.err(
                "engine.concurrency",
                "must be at least 1",
                "the number of leads enriched at once, e.g. 64",
            );
        }
        if e.async_timeout_secs == 0 || e.poll_interval_secs == 0 {
            self.err(
                "engine",
                "async_timeout_secs and poll_interval_secs must be positive",
                "e.g. 150 and 15",
            );
        }
        EngineSettings {
            concurrency: e.concurrency.max(1) as usize,
            batch_window: Duration::from_millis(e.batch_window_ms),
            async_timeout: Duration::from_secs(e.async_timeout_secs.max(1)),
            poll_interval: Duration::from_secs(e.poll_interval_secs.max(1)),
            retry_after: Duration::from_secs(e.retry_after_minutes * 60),
            not_found_retry_days: e.not_found_retry_days,
            max_retry_wait: Duration::from_secs(e.max_retry_wait_secs),
            reservation_ttl: Duration::from_secs(e.reservation_ttl_minutes.max(1) * 60),
            connectors_dir: dir.join(&e.connectors_dir),
        }
    }

    /// Connector definitions: the files in `connectors_dir`, falling back to
    /// the built-in copies for the providers enrichd ships.
    fn connectors(&mut self, dir: &Path) -> BTreeMap<String, Arc<ConnectorDef>> {
        let mut out = BTreeMap::new();
        for (name, text) in BUILTIN_CONNECTORS {
            match parse_toml::<ConnectorDef>(Path::new(name), text) {
                Ok(def) => {
                    out.insert(def.id.clone(), Arc::new(def));
                }
                Err(e) => self.problems.extend(e.problems),
            }
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return out; // no directory: the built-in connectors only
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    self.err(
                        file.display().to_string(),
                        format!("cannot read connector file: {e}"),
                        "check its permissions",
                    );
                    continue;
                }
            };
            match parse_toml::<ConnectorDef>(&file, &text) {
                Ok(def) => {
                    let stem = file
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default();
                    if def.id != stem {
                        self.err(
                            format!("{}: id", file.display()),
                            format!(
                                "connector id `{}` differs from its file name `{stem}.toml`",
                                def.id
                            ),
                            "name the file after the id",
                        );
                    }
                    out.insert(def.id.clone(), Arc::new(def));
                }
                Err(e) => {
                    for mut p in e.problems {
                        p.key = if p.key.is_empty() {
                            file.display().to_string()
                        } else {
                            format!("{}: {}", file.display(), p.key)
                        };
                        self.problems.push(p);
                    }
                }
            }
        }
        out
    }

    fn accounts(
        &mut self,
        raw: BTreeMap<String, RawProvider>,
        connectors: &BTreeMap<String, Arc<ConnectorDef>>,
        secrets: &dyn Secrets,
    ) -> BTreeMap<String, Arc<Account>> {
        let mut out = BTreeMap::new();
        for (id, p) in raw {
            let key = format!("providers.{id}");
            let connector_id = p.connector.clone().unwrap_or_else(|| id.clone());
            let Some(def) = connectors.get(&connector_id) else {
                let known: Vec<&str> = connectors.keys().map(String::as_str).collect();
                self.err(
                    if p.connector.is_some() { format!("{key}.connector") } else { key.clone() },
                    format!("unknown provider `{connector_id}`"),
                    format!(
                        "known providers: {}; a REST provider can be added as a declarative connectors/{connector_id}.toml",
                        known.join(", ")
                    ),
                );
                continue;
            };
            if !valid_env_name(&p.api_key_env) {
                self.err(
                    format!("{key}.api_key_env"),
                    format!("`{}` is not an environment variable name", p.api_key_env),
                    "name the variable that holds the key, e.g. \"APOLLO_API_KEY\" (never the key itself)",
                );
                continue;
            }
            let Some(api_key) = secrets.get(&p.api_key_env) else {
                self.err(
                    format!("{key}.api_key_env"),
                    format!("environment variable `{}` is not set", p.api_key_env),
                    format!("export {}=<your {} API key>", p.api_key_env, def.name),
                );
                continue;
            };
            let base_url = p.base_url.clone().unwrap_or_else(|| def.base_url.clone());
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                self.err(
                    format!("{key}.base_url"),
                    format!("`{base_url}` is not an http(s) URL"),
                    "e.g. \"https://api.apollo.io/api/v1\"",
                );
                continue;
            }
            let limits = def.limits.overridden_by(&p.limits);
            if limits.windows().iter().any(|(_, n)| *n == 0) || limits.concurrency == Some(0) {
                self.err(
                    format!("{key}.limits"),
                    "a limit of 0 would never allow a request",
                    "remove the window or give it a positive count",
                );
                continue;
            }
            let account = Account {
                id: id.clone(),
                connector: def.clone(),
                base_url: base_url.trim_end_matches('/').to_string(),
                api_key: Secret::new(api_key),
                limits,
                timeout: Duration::from_secs(p.timeout_secs.unwrap_or(30).max(1)),
                max_retries: p.max_retries.unwrap_or(3),
                options: p.options,
            };
            // Let the adapter check its options now rather than at first use.
            let built = match def.role {
                Role::Finder => crate::providers::build_finder(&account).map(|_| ()),
                Role::Verifier => crate::providers::build_verifier(&account).map(|_| ()),
            };
            if let Err(e) = built {
                self.err(
                    key.clone(),
                    e.message,
                    format!("see connectors/{}.toml and the provider's docs", def.id),
                );
                continue;
            }
            out.insert(id, Arc::new(account));
        }
        out
    }

    fn prices(&mut self, key: &str, p: Prices) {
        if Channel::ALL.iter().any(|c| p.of(*c) < 0) {
            self.err(
                key,
                "prices cannot be negative",
                "credits per usable value, e.g. work_email = 1",
            );
        }
    }

    fn workspace(
        &mut self,
        key: &str,
        w: RawWorkspace,
        accounts: &BTreeMap<String, Arc<Account>>,
        base_prices: Prices,
        dir: &Path,
        secrets: &dyn Secrets,
    ) -> Option<Workspace> {
        let before = self.problems.len();
        let crm = w
            .crm
            .map(|c| self.crm(&format!("{key}.crm"), c, &w.audiences, dir, secrets));
        if w.id.is_empty()
            || !w
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.err(
                format!("{key}.id"),
                format!("`{}` is not a valid workspace id", w.id),
                "use letters, digits, - and _",
            );
        }
        let configured: Vec<&str> = accounts.keys().map(String::as_str).collect();
        let unknown = |v: &mut Self, k: String, acc: &str| {
            v.err(
                k,
                format!("unknown provider `{acc}`"),
                if configured.is_empty() {
                    "no provider is configured: add a [providers.<id>] table".to_string()
                } else {
                    format!("configured providers: {}", configured.join(", "))
                },
            )
        };
        let finder = |acc: &str| {
            accounts
                .get(acc)
                .filter(|a| a.connector.role == Role::Finder)
        };
        for (i, acc) in w.providers.iter().enumerate() {
            match accounts.get(acc) {
                None => unknown(self, format!("{key}.providers[{i}]"), acc),
                Some(a) if a.connector.role != Role::Finder => self.err(
                    format!("{key}.providers[{i}]"),
                    format!("`{acc}` is a verifier, not a finder"),
                    "name it in `verifier` instead",
                ),
                Some(_) => {}
            }
        }
        let mut order = BTreeMap::new();
        for c in Channel::ALL {
            let list: Vec<String> = match w.order.get(&c) {
                Some(explicit) => {
                    for (i, acc) in explicit.iter().enumerate() {
                        let k = format!("{key}.order.{c}[{i}]");
                        match finder(acc) {
                            None if !accounts.contains_key(acc) => unknown(self, k, acc),
                            None => self.err(
                                k,
                                format!("`{acc}` is a verifier, not a finder"),
                                "list finders only",
                            ),
                            Some(a) if !a.connector.supplies.contains(c) => self.err(
                                k,
                                format!(
                                    "provider `{acc}` cannot supply {c} (it supplies {})",
                                    a.connector.supplies
                                ),
                                format!("remove it from the {c} order"),
                            ),
                            Some(_) => {}
                        }
                    }
                    explicit.clone()
                }
                None => w
                    .providers
                    .iter()
                    .filter(|acc| finder(acc).is_some_and(|a| a.connector.supplies.contains(c)))
                    .cloned()
                    .collect(),
            };
            order.insert(c, list);
        }
        if let Some(v) = &w.verifier {
            match accounts.get(v) {
                None => unknown(self, format!("{key}.verifier"), v),
                Some(a) if a.connector.role != Role::Verifier => self.err(
                    format!("{key}.verifier"),
                    format!("`{v}` is not an email verifier"),
                    "name a verifier connector such as zerobounce",
                ),
                Some(_) => {}
            }
        }
        let default_region = w
            .default_region
            .as_deref()
            .and_then(|r| match country_code(r) {
                Some(iso) => Some(iso.to_string()),
                None => {
                    self.err(
                        format!("{key}.default_region"),
                        format!("unknown region `{r}`"),
                        "use an ISO-3166 alpha-2 code such as \"US\" or \"GB\"",
                    );
                    None
                }
            });
        let prices = w.pricing.over(base_prices);
        self.prices(&format!("{key}.pricing"), prices);
        let budget = w.budget.map(|b| {
            if b.credits < 0 {
                self.err(
                    format!("{key}.budget.credits"),
                    "a budget cannot be negative",
                    "credits per period, e.g. 5000",
                );
            }
            Budget {
                credits: b.credits.max(0),
                period: b.period,
            }
        });
        let mut freshness: BTreeMap<Channel, Option<u32>> = DEFAULT_FRESHNESS.into_iter().collect();
        for (c, d) in w.freshness_days {
            freshness.insert(c, (d > 0).then_some(d));
        }
        let mut audiences = Vec::new();
        let mut names = BTreeSet::new();
        for (i, a) in w.audiences.into_iter().enumerate() {
            let akey = format!("{key}.audiences[{i}]");
            if !names.insert(a.name.clone()) {
                self.err(
                    format!("{akey}.name"),
                    format!("audience `{}` is defined twice", a.name),
                    "give each audience its own name",
                );
            }
            if let Some(aud) = self.audience(&akey, a, &w.fields, &order) {
                audiences.push(aud);
            }
        }
        let notify_url = w.notify_url.and_then(|u| {
            match url::Url::parse(&u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") && p.has_host() => {
                    Some(crate::secret::Secret::new(u))
                }
                // The URL itself is not echoed: it may carry a token.
                parsed => {
                    let scheme = parsed.map_or_else(
                        |e| format!("it does not parse as a URL: {e}"),
                        |p| format!("its scheme is `{}`", p.scheme()),
                    );
                    self.err(
                        format!("{key}.notify_url"),
                        format!("not an http(s) URL with a host ({scheme})"),
                        "the URL bulk-job notifications are POSTed to, e.g. a Slack incoming webhook \"https://hooks.slack.com/services/...\"",
                    );
                    None
                }
            }
        });
        if self.problems.len() > before {
            return None;
        }
        Some(Workspace {
            name: w.name.unwrap_or_else(|| w.id.clone()),
            id: WorkspaceId(w.id),
            enabled: w.enabled,
            order,
            verifier: w.verifier,
            catch_all: w.catch_all,
            default_region,
            freshness_days: freshness,
            prices,
            budget,
            fields: w.fields,
            audiences,
            crm: crm.flatten(),
            notify_url,
        })
    }

    fn audience(
        &mut self,
        key: &str,
        a: RawAudience,
        fields: &IdentityFields,
        order: &BTreeMap<Channel, Vec<String>>,
    ) -> Option<Audience> {
        let channels: ChannelSet = a.channels.iter().copied().collect();
        if channels.is_empty() {
            self.err(
                format!("{key}.channels"),
                "an audience must require at least one channel",
                format!("any of {}", Channel::expected()),
            );
        }
        for c in channels.iter() {
            if order.get(&c).is_none_or(Vec::is_empty) {
                self.err(
                    format!("{key}.channels"),
                    format!(
                        "audience `{}` requires {c} but no provider of the workspace can supply it",
                        a.name
                    ),
                    "add a provider that supplies it to the workspace's `providers` list",
                );
            }
        }
        let mut conditions = Vec::new();
        for (i, c) in a.filter.iter().enumerate() {
            match condition(c) {
                Ok(cond) => conditions.push(cond),
                Err(msg) => self.err(
                    format!("{key}.filter[{i}]"),
                    msg,
                    format!(
                        "write {{ field = \"country\", in = [\"US\", \"CA\"] }}; operators: {}",
                        Op::NAMES.join(", ")
                    ),
                ),
            }
        }
        let persona = a.persona.map(|p| Persona {
            titles: p.titles,
            seniorities: p.seniorities,
            title_field: p.title_field.unwrap_or_else(|| fields.job_title.clone()),
            seniority_field: p.seniority_field.unwrap_or_else(|| "seniority".into()),
        });
        Some(Audience {
            name: a.name,
            conditions,
            channels,
            persona,
        })
    }
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `{ field = "x", <op> = <value> }` → a condition.
fn condition(t: &BTreeMap<String, toml::Value>) -> Result<Condition, String> {
    let field = match t.get("field") {
        Some(toml::Value::String(f)) if !f.trim().is_empty() => f.trim().to_string(),
        Some(_) => return Err("`field` must be a non-empty string".into()),
        None => return Err("a condition needs `field`".into()),
    };
    let ops: Vec<(&String, &toml::Value)> =
        t.iter().filter(|(k, _)| k.as_str() != "field").collect();
    let [(name, value)] = ops.as_slice() else {
        return Err(format!(
            "a condition on `{field}` needs exactly one operator, found {}",
            ops.len()
        ));
    };
    let scalar = |v: &toml::Value| -> Result<Scalar, String> {
        match v {
            toml::Value::String(s) => Ok(Scalar::Text(s.clone())),
            toml::Value::Integer(i) => Ok(Scalar::Number(*i as f64)),
            toml::Value::Float(f) => Ok(Scalar::Number(*f)),
            toml::Value::Boolean(b) => Ok(Scalar::Bool(*b)),
            other => Err(format!(
                "`{name}` on `{field}` takes a string, number or boolean, not {}",
                other.type_str()
            )),
        }
    };
    let number = |v: &toml::Value| -> Result<f64, String> {
        match v {
            toml::Value::Integer(i) => Ok(*i as f64),
            toml::Value::Float(f) if f.is_finite() => Ok(*f),
            other => Err(format!(
                "`{name}` on `{field}` takes a number, not {}",
                other.type_str()
            )),
        }
    };
    let list = |v: &toml::Value| -> Result<Vec<Scalar>, String> {
        match v {
            toml::Value::Array(items) if !items.is_empty() => items.iter().map(scalar).collect(),
            _ => Err(format!("`{name}` on `{field}` takes a non-empty list")),
        }
    };
    let op = match name.as_str() {
        "eq" => Op::Eq(scalar(value)?),
        "ne" => Op::Ne(scalar(value)?),
        "in" => Op::In(list(value)?),
        "not_in" => Op::NotIn(list(value)?),
        "gt" => Op::Gt(number(value)?),
        "gte" => Op::Gte(number(value)?),
        "lt" => Op::Lt(number(value)?),
        "lte" => Op::Lte(number(value)?),
        "exists" => match value {
            toml::Value::Boolean(b) => Op::Exists(*b),
            other => {
                return Err(format!(
                    "`exists` on `{field}` takes true or false, not {}",
                    other.type_str()
                ));
            }
        },
        other => return Err(format!("unknown operator `{other}` on `{field}`")),
    };
    Ok(Condition { field, op })
}

/// The connector files enrichd ships, used when `connectors_dir` lacks them.
pub const BUILTIN_CONNECTORS: [(&str, &str); 6] = [
    (
        "connectors/fullenrich.toml",
        include_str!("../../connectors/fullenrich.toml"),
    ),
    (
        "connectors/apollo.toml",
        include_str!("../../connectors/apollo.toml"),
    ),
    (
        "connectors/hunter.toml",
        include_str!("../../connectors/hunter.toml"),
    ),
    (
        "connectors/pdl.toml",
        include_str!("../../connectors/pdl.toml"),
    ),
    (
        "connectors/zerobounce.toml",
        include_str!("../../connectors/zerobounce.toml"),
    ),
    (
        "connectors/prospeo.toml",
        include_str!("../../connectors/prospeo.toml"),
    ),
];

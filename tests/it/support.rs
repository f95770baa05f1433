//! A test harness: simulators on loopback, a config.toml written for them
//! and loaded through the real config path, a fresh store, and the real
//! engine (with its callback server when asked).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use enrichd::clock::SystemClock;
use enrichd::config::{Settings, Workspace};
use enrichd::core::channel::Channel;
use enrichd::core::lead::{Lead, LeadId};
use enrichd::crm::hubspot::sync::HubSpot;
use enrichd::engine::report::RunReport;
use enrichd::engine::{Engine, EngineOptions};
use enrichd::store::Store;
use enrichd_sim::hubspot::{HubSpotData, HubSpotOptions, HubSpotSim, start_hubspot};
use enrichd_sim::salesforce::{
    SalesforceData, SalesforceOptions, SalesforceSim, SeedSpec, start_salesforce,
};
use enrichd_sim::{Knowledge, Population, ProviderKind, SimChannel, SimOptions, SimServer, Word};

/// Account limits far above anything a test sends.
pub const FAST_LIMITS: &str = "limits = { per_second = 100000, per_minute = 6000000, per_hour = 360000000, per_day = 2000000000 }";

pub fn sim_channel(c: Channel) -> SimChannel {
    match c {
        Channel::WorkEmail => SimChannel::WorkEmail,
        Channel::PersonalEmail => SimChannel::PersonalEmail,
        Channel::Phone => SimChannel::Phone,
        Channel::LinkedinUrl => SimChannel::LinkedinUrl,
    }
}

struct ProviderSpec {
    account: String,
    kind: ProviderKind,
    opts: SimOptions,
    extra: String,
}

pub struct HarnessBuilder {
    size: usize,
    providers: Vec<ProviderSpec>,
    workspace: String,
    engine: String,
    callbacks: bool,
    store_url: Option<String>,
    connector_files: Vec<(String, String)>,
    hubspot: Option<HubSpotSpec>,
    salesforce: Option<SalesforceSpec>,
    /// Lines of a `[server]` section.
    server: Option<String>,
    /// More `[[workspaces]]` tables, after workspace `t`.
    more_workspaces: String,
}

/// A HubSpot simulator seeded from the population, and the workspace's
/// `[workspaces.crm]` pointing at it.
pub struct HubSpotSpec {
    pub opts: HubSpotOptions,
    /// Share of contacts that already carry their work email in `email`.
    pub email_share: f64,
    /// Extra lines for `[workspaces.crm]`.
    pub crm_extra: String,
    /// mappings/hubspot.toml text (default: the shipped file).
    pub mapping: Option<String>,
}

/// A Salesforce simulator seeded from the population (Leads are people
/// `0..seed.leads`, Contacts the next `seed.contacts`), and the workspace's
/// `[workspaces.crm]` pointing at its login host.
pub struct SalesforceSpec {
    pub opts: SalesforceOptions,
    pub seed: SeedSpec,
    /// Connect with the JWT bearer flow (the fixtures' test key; the
    /// simulator gets its public key) instead of the web-server flow.
    pub jwt: bool,
    /// Extra lines for `[workspaces.crm]`.
    pub crm_extra: String,
    /// mappings/salesforce.toml text (default: the shipped file).
    pub mapping: Option<String>,
}

impl SalesforceSpec {
    /// The web-server flow, 40 Leads and 10 Contacts, the shipped mapping.
    pub fn new(opts: SalesforceOptions) -> Self {
        SalesforceSpec {
            opts,
            seed: SeedSpec::new(40, 10),
            jwt: false,
            crm_extra: String::new(),
            mapping: None,
        }
    }
}

/// The master key tests seal tokens with.
pub const TEST_MASTER_KEY: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

impl HarnessBuilder {
    pub fn new(size: usize) -> Self {
        HarnessBuilder {
            size,
            providers: Vec::new(),
            workspace: String::new(),
            engine: String::new(),
            callbacks: false,
            store_url: None,
            connector_files: Vec::new(),
            hubspot: None,
            salesforce: None,
            server: None,
            more_workspaces: String::new(),
        }
    }

    /// Another workspace after `t`: the body of its `[[workspaces]]` table,
    /// `id` included (it gets no CRM unless the text adds one).
    pub fn another_workspace(mut self, toml: &str) -> Self {
        self.more_workspaces
            .push_str(&format!("\n[[workspaces]]\n{toml}\n"));
        self
    }

    /// A `[server]` section (for `enrichd run` as a process).
    pub fn server(mut self, toml: &str) -> Self {
        self.server = Some(toml.to_string());
        self
    }

    /// A HubSpot simulator and the workspace connected to it (not yet
    /// authorised: call `Harness::connect_hubspot`).
    pub fn hubspot(mut self, spec: HubSpotSpec) -> Self {
        self.hubspot = Some(spec);
        self
    }

    /// A Salesforce simulator and the workspace connected to it (not yet
    /// authorised: call `Harness::connect_salesforce`).
    pub fn salesforce(mut self, spec: SalesforceSpec) -> Self {
        self.salesforce = Some(spec);
        self
    }

    /// A provider account named `account` backed by a simulator.
    pub fn provider(self, account: &str, kind: ProviderKind, opts: SimOptions) -> Self {
        self.provider_with(account, kind, opts, "")
    }

    /// A provider whose rate limits are out of the way (simulator and
    /// account both unlimited in practice): for tests about something else.
    pub fn fast_provider(self, account: &str, kind: ProviderKind, opts: SimOptions) -> Self {
        self.provider_with(account, kind, opts.unlimited(), FAST_LIMITS)
    }

    /// ... with extra lines for its `[providers.<account>]` table.
    pub fn provider_with(
        mut self,
        account: &str,
        kind: ProviderKind,
        opts: SimOptions,
        extra: &str,
    ) -> Self {
        self.providers.push(ProviderSpec {
            account: account.to_string(),
            kind,
            opts,
            extra: extra.to_string(),
        });
        self
    }

    /// The body of the `[[workspaces]]` table (its id is `t`).
    pub fn workspace(mut self, toml: &str) -> Self {
        self.workspace = toml.to_string();
        self
    }

    /// Extra `[engine]` lines.
    pub fn engine(mut self, toml: &str) -> Self {
        self.engine = toml.to_string();
        self
    }

    /// Serve the callback endpoint (async providers then call back).
    pub fn callbacks(mut self) -> Self {
        self.callbacks = true;
        self
    }

    /// A connector file written to the config's `connectors/` directory.
    pub fn connector_file(mut self, name: &str, text: &str) -> Self {
        self.connector_files
            .push((name.to_string(), text.to_string()));
        self
    }

    /// Use this store URL instead of a fresh SQLite file.
    pub fn store_url(mut self, url: &str) -> Self {
        self.store_url = Some(url.to_string());
        self
    }

    pub async fn start(self) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let population = Arc::new(Population::generate(11, self.size));
        let mut sims = BTreeMap::new();
        let mut secrets = BTreeMap::new();
        let store_url = self
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/enrichd.db", dir.path().display()));
        let mut engine = self.engine.clone();
        for (key, value) in [
            ("concurrency", "32"),
            ("batch_window_ms", "50"),
            ("async_timeout_secs", "20"),
            ("poll_interval_secs", "1"),
            ("max_retry_wait_secs", "5"),
        ] {
            if !engine.contains(key) {
                engine.push_str(&format!("\n{key} = {value}"));
            }
        }
        let mut toml = format!("[storage]\nurl = \"{store_url}\"\n\n[engine]\n{engine}\n\n");
        if let Some(server) = &self.server {
            toml.push_str(&format!("[server]\n{server}\n\n"));
        }
        for p in self.providers {
            let sim = enrichd_sim::start(p.kind, population.clone(), p.opts)
                .await
                .expect("start simulator");
            let var = format!("KEY_{}", p.account.to_uppercase());
            secrets.insert(var.clone(), sim.api_key().to_string());
            let mut defaults = String::new();
            for (key, line) in [
                ("timeout_secs", "timeout_secs = 2\n"),
                ("max_retries", "max_retries = 2\n"),
            ] {
                if !p.extra.contains(key) {
                    defaults.push_str(line);
                }
            }
            if !p.extra.contains("connector") {
                defaults.push_str(&format!("connector = \"{}\"\n", p.kind.name()));
            }
            toml.push_str(&format!(
                "[providers.{acc}]\napi_key_env = \"{var}\"\nbase_url = \"{url}\"\n{defaults}{extra}\n\n",
                acc = p.account,
                url = sim.base_url(),
                extra = p.extra,
            ));
            sims.insert(p.account, sim);
        }
        let mut hubspot = None;
        let mut workspace = self.workspace.clone();
        if let Some(spec) = self.hubspot {
            let base_ms = chrono::Utc::now().timestamp_millis() - 2 * 86_400_000;
            let data = HubSpotData::from_population(&population, base_ms, spec.email_share);
            let sim = start_hubspot(data, spec.opts)
                .await
                .expect("start HubSpot simulator");
            secrets.insert("HS_CLIENT_ID".into(), sim.options().client_id.clone());
            secrets.insert(
                "HS_CLIENT_SECRET".into(),
                sim.options().client_secret.clone(),
            );
            if let Some(t) = &sim.options().private_app_token {
                secrets.insert("HS_PRIVATE_APP_TOKEN".into(), t.clone());
            }
            secrets.insert("TEST_MASTER_KEY".into(), TEST_MASTER_KEY.into());
            let mdir = dir.path().join("mappings");
            std::fs::create_dir_all(&mdir).expect("mappings dir");
            let mapping = spec.mapping.clone().unwrap_or_else(|| {
                std::fs::read_to_string(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/hubspot.toml"),
                )
                .expect("shipped mapping")
            });
            std::fs::write(mdir.join("hubspot.toml"), mapping).expect("write mapping");
            let mut crm = format!(
                "\n[workspaces.crm]\nkind = \"hubspot\"\nauth_url = \"{u}\"\napi_url = \"{u}\"\n\
                 redirect_uri = \"http://127.0.0.1:0/oauth/callback\"\ntimeout_secs = 5\nmax_retries = 3\n",
                u = sim.base_url()
            );
            if !spec.crm_extra.contains("private_app_token_env") {
                crm.push_str(
                    "client_id_env = \"HS_CLIENT_ID\"\nclient_secret_env = \"HS_CLIENT_SECRET\"\n",
                );
            }
            if !spec.crm_extra.contains("limits") {
                crm.push_str("limits = { ten_secondly = 1000000, search_per_second = 100000 }\n");
            }
            crm.push_str(&spec.crm_extra);
            workspace.push_str(&crm);
            toml.push_str("[security]\nmaster_key_env = \"TEST_MASTER_KEY\"\n\n");
            hubspot = Some(sim);
        }
        let mut salesforce = None;
        if let Some(spec) = self.salesforce {
            let base_ms = chrono::Utc::now().timestamp_millis() - 2 * 86_400_000;
            let data = SalesforceData::from_population(&population, base_ms, &spec.seed);
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let mut opts = spec.opts;
            if spec.jwt {
                let pem =
                    std::fs::read_to_string(root.join("fixtures/salesforce/jwt_test_key.pub.pem"))
                        .expect("test public key");
                opts = opts.with_jwt_public_key_pem(&pem);
            }
            let sim = start_salesforce(data, opts)
                .await
                .expect("start Salesforce simulator");
            secrets.insert("SF_CLIENT_ID".into(), sim.options().client_id.clone());
            secrets.insert(
                "SF_CLIENT_SECRET".into(),
                sim.options().client_secret.clone(),
            );
            secrets.insert("TEST_MASTER_KEY".into(), TEST_MASTER_KEY.into());
            let mdir = dir.path().join("mappings");
            std::fs::create_dir_all(&mdir).expect("mappings dir");
            let mapping = spec.mapping.clone().unwrap_or_else(|| {
                std::fs::read_to_string(root.join("mappings/salesforce.toml"))
                    .expect("shipped mapping")
            });
            std::fs::write(mdir.join("salesforce.toml"), mapping).expect("write mapping");
            let mut crm = format!(
                "\n[workspaces.crm]\nkind = \"salesforce\"\nlogin_url = \"{}\"\n\
                 client_id_env = \"SF_CLIENT_ID\"\ntimeout_secs = 5\nmax_retries = 3\n",
                sim.login_url()
            );
            if spec.jwt {
                crm.push_str(&format!(
                    "jwt = {{ key_file = \"{}\", username = \"{}\" }}\n",
                    root.join("fixtures/salesforce/jwt_test_key.pem").display(),
                    sim.options().username
                ));
            } else {
                crm.push_str(
                    "client_secret_env = \"SF_CLIENT_SECRET\"\nredirect_uri = \"http://127.0.0.1:0/oauth/callback\"\n",
                );
            }
            crm.push_str(&spec.crm_extra);
            workspace.push_str(&crm);
            if !toml.contains("[security]") {
                toml.push_str("[security]\nmaster_key_env = \"TEST_MASTER_KEY\"\n\n");
            }
            salesforce = Some(sim);
        }
        let prefix = toml.clone();
        toml.push_str(&format!("[[workspaces]]\nid = \"t\"\n{}\n", workspace));
        toml.push_str(&self.more_workspaces);
        if !self.connector_files.is_empty() {
            let cdir = dir.path().join("connectors");
            std::fs::create_dir_all(&cdir).expect("connectors dir");
            for (name, text) in &self.connector_files {
                std::fs::write(cdir.join(name), text).expect("write connector");
            }
        }
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &toml).expect("write config");
        let settings = match Settings::from_str(&path, &toml, &secrets) {
            Ok(s) => Arc::new(s),
            Err(e) => panic!("test config invalid:\n{e}\n---\n{toml}"),
        };
        let store = enrichd::store::open(&settings.storage_url)
            .await
            .expect("open store");
        store.migrate().await.expect("migrate");
        let listener = if self.callbacks {
            Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            )
        } else {
            None
        };
        let callback_base = listener
            .as_ref()
            .map(|l| format!("http://{}", l.local_addr().expect("addr")));
        let engine = Arc::new(
            Engine::new(
                settings.clone(),
                store.clone(),
                Arc::new(SystemClock),
                EngineOptions {
                    callback_base: callback_base.clone(),
                    ..EngineOptions::default()
                },
            )
            .expect("engine"),
        );
        if let Some(l) = listener {
            let app = enrichd::engine::callbacks::router(engine.clone());
            tokio::spawn(async move {
                let _ = axum::serve(l, app).await;
            });
        }
        let ws = settings.workspace("t").expect("workspace t").clone();
        Harness {
            population,
            sims,
            engine,
            store,
            ws,
            settings,
            callback_base,
            config_path: path,
            config_prefix: prefix,
            secrets,
            hubspot,
            salesforce,
            _dir: dir,
        }
    }
}

pub struct Harness {
    pub population: Arc<Population>,
    pub sims: BTreeMap<String, SimServer>,
    pub engine: Arc<Engine>,
    pub store: Arc<dyn Store>,
    pub ws: Arc<Workspace>,
    pub settings: Arc<Settings>,
    pub callback_base: Option<String>,
    pub config_path: PathBuf,
    config_prefix: String,
    /// Environment variable → API key, as the config names them.
    pub secrets: BTreeMap<String, String>,
    pub hubspot: Option<HubSpotSim>,
    pub salesforce: Option<SalesforceSim>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn lead_id(i: usize) -> LeadId {
        LeadId(format!("p{i}"))
    }

    /// Person `i` as a CRM lead (no contact channels on the record).
    pub fn lead(&self, i: usize) -> Lead {
        Lead {
            id: Self::lead_id(i),
            fields: self.population.person(i).crm_fields().into_iter().collect(),
        }
    }

    pub fn leads(&self, range: std::ops::Range<usize>) -> Vec<Lead> {
        range.map(|i| self.lead(i)).collect()
    }

    pub async fn run(&self, leads: Vec<Lead>) -> RunReport {
        self.engine
            .enrich(&self.ws, leads, Default::default())
            .await
            .expect("run")
    }

    pub fn sim(&self, account: &str) -> &SimServer {
        &self.sims[account]
    }

    /// Requests received by every simulator.
    pub fn total_requests(&self) -> u64 {
        self.sims.values().map(|s| s.stats().requests).sum()
    }

    /// What `account`'s simulator holds for person `i` on `channel`.
    pub fn knows(&self, account: &str, i: usize, c: Channel) -> Option<Knowledge> {
        let sim = self.sim(account);
        sim.options()
            .profile
            .knows(&self.population, &sim.options().name, i, sim_channel(c))
    }

    /// The value `account` would supply for person `i` on `channel` that
    /// passes the bar with a strict catch-all policy and no verifier.
    pub fn usable_from(&self, account: &str, i: usize, c: Channel) -> Option<String> {
        // PDL gives emails no deliverability status at all.
        if c.is_email() && self.sim(account).kind() == ProviderKind::Pdl {
            return None;
        }
        // connectors/prospeo.toml asks with only_verified_email = true:
        // without a verified email Prospeo answers NO_MATCH, phone included.
        if c == Channel::Phone
            && self.sim(account).kind() == ProviderKind::Prospeo
            && self.usable_from(account, i, Channel::WorkEmail).is_none()
        {
            return None;
        }
        self.knows(account, i, c)
            .filter(|k| k.word == Word::Verified || !c.is_email())
            .map(|k| k.value)
    }

    /// The same providers and store with workspace `t` redefined: what a
    /// user gets after editing config.toml and starting again.
    pub fn reconfigure(&self, workspace: &str) -> (Arc<Workspace>, Arc<Engine>) {
        let toml = format!(
            "{}[[workspaces]]\nid = \"t\"\n{workspace}\n",
            self.config_prefix
        );
        let settings = match Settings::from_str(&self.config_path, &toml, &self.secrets) {
            Ok(s) => Arc::new(s),
            Err(e) => panic!("test config invalid:\n{e}"),
        };
        let engine = Arc::new(
            Engine::new(
                settings.clone(),
                self.store.clone(),
                Arc::new(SystemClock),
                EngineOptions::default(),
            )
            .expect("engine"),
        );
        (settings.workspace("t").expect("workspace").clone(), engine)
    }

    pub fn hs(&self) -> &HubSpotSim {
        self.hubspot
            .as_ref()
            .expect("harness has a HubSpot simulator")
    }

    /// The workspace's HubSpot connector (a fresh one: its own client,
    /// limiter and token cache, like a new process).
    pub fn hub(&self) -> HubSpot {
        HubSpot::open(
            &self.settings,
            &self.ws,
            self.store.clone(),
            Arc::new(SystemClock),
        )
        .expect("open HubSpot")
        .expect("workspace has HubSpot")
    }

    /// Runs the real connect flow; the browser step follows the authorize
    /// redirect to enrichd's loopback callback.
    pub async fn connect_hubspot(&self) -> enrichd::crm::hubspot::auth::Connected {
        let Some(enrichd::config::crm::CrmSettings::HubSpot(h)) = &self.ws.crm else {
            panic!("workspace has no HubSpot");
        };
        let cipher =
            enrichd::crypto::TokenCipher::from_key_text("TEST_MASTER_KEY", TEST_MASTER_KEY)
                .expect("cipher");
        let http = reqwest::Client::new();
        enrichd::crm::hubspot::auth::connect(
            &enrichd::crm::hubspot::auth::ConnectContext {
                ws: &self.ws.id,
                settings: h,
                store: &self.store,
                cipher: Some(&cipher),
                clock: &SystemClock,
                http: &http,
                wait: Duration::from_secs(10),
            },
            |url: String| async move {
                let browser = reqwest::Client::new();
                let page = browser.get(&url).send().await.expect("browser");
                assert!(
                    page.status().is_success(),
                    "callback page: {}",
                    page.status()
                );
            },
        )
        .await
        .expect("connect")
    }

    pub fn sf(&self) -> &SalesforceSim {
        self.salesforce
            .as_ref()
            .expect("harness has a Salesforce simulator")
    }

    pub fn sf_settings(&self) -> Arc<enrichd::config::crm::SalesforceSettings> {
        match &self.ws.crm {
            Some(enrichd::config::crm::CrmSettings::Salesforce(s)) => s.clone(),
            _ => panic!("workspace has no Salesforce"),
        }
    }

    /// The workspace's Salesforce client on `clock` (a fresh one: its own
    /// token cache, budget and semaphore, like a new process).
    pub fn salesforce_client(
        &self,
        clock: Arc<dyn enrichd::clock::Clock>,
    ) -> enrichd::crm::salesforce::client::SalesforceClient {
        enrichd::crm::salesforce::client::SalesforceClient::open(
            &self.settings,
            &self.ws,
            self.store.clone(),
            clock,
        )
        .expect("open Salesforce")
        .expect("workspace has Salesforce")
    }

    /// Runs the real connect flow; the browser step follows the authorize
    /// redirect to enrichd's loopback callback (the JWT flow needs none).
    pub async fn try_connect_salesforce(
        &self,
    ) -> Result<enrichd::crm::salesforce::auth::Connected, enrichd::crm::salesforce::SalesforceError>
    {
        use enrichd::crm::salesforce::auth;
        let s = self.sf_settings();
        let cipher =
            enrichd::crypto::TokenCipher::from_key_text("TEST_MASTER_KEY", TEST_MASTER_KEY)
                .expect("cipher");
        let http = auth::http_client(Duration::from_secs(5)).expect("http");
        auth::connect(
            &auth::ConnectContext {
                ws: &self.ws.id,
                settings: &s,
                store: &self.store,
                cipher: Some(&cipher),
                clock: &SystemClock,
                http: &http,
                wait: Duration::from_secs(10),
            },
            |url: String| async move {
                // The browser follows Salesforce's 302 to the loopback.
                let browser = reqwest::Client::new();
                let page = browser.get(&url).send().await.expect("browser");
                assert!(
                    page.status().is_success(),
                    "callback page: {}",
                    page.status()
                );
            },
        )
        .await
    }

    pub async fn connect_salesforce(&self) -> enrichd::crm::salesforce::auth::Connected {
        self.try_connect_salesforce().await.expect("connect")
    }

    /// A second engine on the same store and settings (another process's view).
    pub fn second_engine(&self) -> Arc<Engine> {
        Arc::new(
            Engine::new(
                self.settings.clone(),
                self.store.clone(),
                Arc::new(SystemClock),
                EngineOptions {
                    callback_base: self.callback_base.clone(),
                    ..EngineOptions::default()
                },
            )
            .expect("engine"),
        )
    }
}

/// Waits until `f` holds, up to `timeout`.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// A free loopback port (for a `[server]` listen address).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `enrichd run` as a separate process on the harness's config; killed
/// when dropped. Its stderr (JSON logs) goes to `run.log` beside the config.
pub struct Daemon {
    child: Option<std::process::Child>,
    stderr: std::path::PathBuf,
}

impl Daemon {
    pub fn start(h: &Harness) -> Daemon {
        let stderr = h.config_path.with_file_name("run.log");
        let log = std::fs::File::create(&stderr).expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
            .args(["--config", h.config_path.to_str().unwrap(), "run"])
            .envs(&h.secrets)
            .env("RUST_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start enrichd run");
        Daemon {
            child: Some(child),
            stderr,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until `/healthz` answers on `port` (panics with the logs if not).
    pub async fn wait_up(&self, port: u16) {
        for _ in 0..150 {
            if let Some((200, _)) = http_get(port, "/healthz").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("enrichd run did not come up:\n{}", self.logs());
    }

    /// SIGTERM, then the exit status (None if it did not exit in time).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET http://127.0.0.1:<port><path>`: status and body, or None when
/// nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

impl Harness {
    /// The workspace's Salesforce connection (pull, write-back, events) on
    /// its own client, on the system clock.
    pub fn salesforce_sync(&self) -> enrichd::crm::salesforce::sync::SalesforceSync {
        self.salesforce_sync_on(Arc::new(SystemClock))
    }

    /// The same on `clock` (a client, budget and pull windows on it).
    pub fn salesforce_sync_on(
        &self,
        clock: Arc<dyn enrichd::clock::Clock>,
    ) -> enrichd::crm::salesforce::sync::SalesforceSync {
        let client = Arc::new(self.salesforce_client(clock.clone()));
        enrichd::crm::salesforce::sync::SalesforceSync::with_client(
            &self.ws,
            client,
            self.store.clone(),
            clock,
        )
        .expect("workspace has Salesforce")
    }
}

/// `crm_extra` for a Salesforce workspace that also syncs Contacts: writes
/// the shipped mapping with `object = "Contact"` into `dir` and points
/// `contact_mapping` at it (the Lead mapping stays the shipped one).
pub fn salesforce_contact_mapping(dir: &std::path::Path) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped =
        std::fs::read_to_string(root.join("mappings/salesforce.toml")).expect("shipped mapping");
    let contact = shipped.replace("\nobject = \"Lead\"\n", "\nobject = \"Contact\"\n");
    assert_ne!(contact, shipped, "the shipped mapping names its object");
    let path = dir.join("salesforce-contact.toml");
    std::fs::write(&path, contact).expect("write contact mapping");
    format!("contact_mapping = {:?}\n", path.display().to_string())
}

//! `enrichd demo`: enrichd's main job end to end on one machine, against
//! simulators on loopback.
//!
//! With a HubSpot workspace (the documented config.toml has one): the
//! provider simulators and a simulated HubSpot portal seeded with the
//! population (some contacts already carrying an email or phone a person
//! typed), a config derived from config.toml pointing at them
//! (`.enrichd/demo.toml`), a fresh SQLite file (`.enrichd/demo.db`); then the
//! real connect flow (authorize redirect followed by an HTTP client acting
//! as the browser, loopback callback, token exchange, sealed tokens,
//! property creation), the daemon (`crate::daemon::run`) in-process until
//! its first sync pass has backfilled, enriched and written back every
//! contact, an edit and a creation in HubSpot that reach it as signed
//! webhooks, a clean shutdown, and the report.
//!
//! A workspace without a CRM gets what the demo did before: the simulated
//! leads enriched from memory, and a re-run showing that complete leads cost
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use enrichd_sim::hubspot::{
    Bucket, HubSpotData, HubSpotLimits, HubSpotOptions, HubSpotSim, Subscription, start_hubspot,
};
use enrichd_sim::{Population, ProviderKind, SimChannel, SimOptions, SimServer, Word};
use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::config::crm::{CrmSettings, HubSpotSettings};
use crate::config::{Secrets, Settings, Workspace};
use crate::core::channel::Channel;
use crate::core::lead::{Lead, LeadId};
use crate::core::status::EnrichmentStatus;
use crate::crm::hubspot::HubSpotError;
use crate::crm::hubspot::auth::{self, CRM};
use crate::crm::hubspot::client::HubSpotClient;
use crate::crm::hubspot::pull::OBJECT;
use crate::crm::hubspot::sync::HubSpot;
use crate::providers::def::{Account, Limits};
use crate::store::{Store, StoredLead};

use super::{CliError, Format, print_report, run_with_progress, start_engine};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many simulated leads (HubSpot contacts) to enrich.
    #[arg(long, default_value_t = 3000)]
    pub leads: usize,
    /// Seed of the simulated population (same seed, same people and answers).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Simulated provider accounts get this many times the documented rate
    /// limits so the demo finishes within a minute (1 = the real limits).
    /// HubSpot always runs at its documented limits.
    #[arg(long, default_value_t = 10)]
    pub limit_scale: u32,
}

/// People generated beyond the contacts: candidates for the contact the
/// demo creates in HubSpot (someone enrichd has not seen).
const EXTRA_PEOPLE: usize = 20;
/// Share of contacts whose work email a person already typed into `email`.
const TYPED_EMAIL_SHARE: f64 = 0.10;
/// One contact in this many already has a phone a person typed.
const TYPED_PHONE_EVERY: usize = 12;
/// Simulated HubSpot latency per API call.
const HUBSPOT_LATENCY: Duration = Duration::from_millis(40);
/// How long the first sync pass may take before the demo gives up waiting.
const FIRST_PASS_LIMIT: Duration = Duration::from_secs(30 * 60);
/// How long a webhook may take to lead to a write.
const WEBHOOK_LIMIT: Duration = Duration::from_secs(60);

/// The first load of the config only learns which providers and workspace
/// there are: every secret it names resolves.
struct AnyKey;

impl Secrets for AnyKey {
    fn get(&self, _name: &str) -> Option<String> {
        Some("demo".into())
    }
}

fn kind_of(connector: &str) -> Option<ProviderKind> {
    ProviderKind::ALL
        .into_iter()
        .find(|k| k.name() == connector)
}

fn limits_of(windows: &[(Duration, u32)]) -> Limits {
    let mut l = Limits::default();
    for (w, n) in windows {
        match w.as_secs() {
            1 => l.per_second = Some(*n),
            60 => l.per_minute = Some(*n),
            3600 => l.per_hour = Some(*n),
            86_400 => l.per_day = Some(*n),
            // ZeroBounce's 80,000 per 10 s.
            s => l.per_second = Some(n / u32::try_from(s.max(1)).unwrap_or(1)),
        }
    }
    l
}

fn hub_err(e: HubSpotError) -> CliError {
    CliError::Crm(e.to_string())
}

/// One simulator per configured provider account, at `scale`× the
/// documented limits; the account limits that go with them.
async fn start_providers(
    settings: &Settings,
    population: &Arc<Population>,
    scale: u32,
) -> Result<(BTreeMap<String, SimServer>, BTreeMap<String, Limits>), CliError> {
    let mut sims = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for (id, account) in &settings.accounts {
        let kind = kind_of(&account.connector.id).ok_or_else(|| {
            CliError::Usage(format!(
                "the demo has no simulator for provider `{id}` (connector {}); remove it from the demo config",
                account.connector.id
            ))
        })?;
        let mut opts = SimOptions::defaults(kind)
            .with_latency(Duration::from_millis(20), Duration::from_millis(150));
        let scaled: Vec<(Duration, u32)> = opts
            .limits
            .iter()
            .map(|(w, n)| (*w, n.saturating_mul(scale.max(1))))
            .collect();
        opts.limits = scaled.clone();
        let sim = enrichd_sim::start(kind, population.clone(), opts).await?;
        limits.insert(id.clone(), limits_of(&scaled));
        sims.insert(id.clone(), sim);
    }
    Ok((sims, limits))
}

/// `.enrichd/` next to the config, and a fresh `demo.db` in it.
fn fresh_db(config_dir: &Path) -> Result<(PathBuf, PathBuf), CliError> {
    let dir = config_dir.join(".enrichd");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok((dir, db))
}

fn config_dir(config: &Path) -> Result<PathBuf, CliError> {
    let abs = std::path::absolute(config)?;
    Ok(abs.parent().map(Path::to_path_buf).unwrap_or_default())
}

pub async fn run(config: &Path, args: DemoArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let base = Settings::load(config, &AnyKey)?;
    let ws = super::pick_workspace(&base, None)?;
    if matches!(ws.crm, Some(CrmSettings::HubSpot(_))) {
        run_crm(config, args, &base, &ws, started).await
    } else {
        run_files(config, args, base, ws, started).await
    }
}

// ---------------------------------------------------------------- without a CRM

/// The engine on simulated leads handed in from memory.
async fn run_files(
    config: &Path,
    args: DemoArgs,
    mut settings: Settings,
    ws: Arc<Workspace>,
    started: Instant,
) -> Result<(), CliError> {
    let population = Arc::new(Population::generate(args.seed, args.leads.max(1)));
    let (sims, limits) = start_providers(&settings, &population, args.limit_scale).await?;
    let mut accounts = BTreeMap::new();
    for (id, account) in &settings.accounts {
        if let (Some(sim), Some(l)) = (sims.get(id), limits.get(id)) {
            accounts.insert(
                id.clone(),
                Arc::new(Account {
                    base_url: sim.base_url(),
                    api_key: crate::secret::Secret::new(sim.api_key()),
                    limits: account.limits.overridden_by(l),
                    ..Account::clone(account)
                }),
            );
        }
    }
    settings.accounts = accounts;
    let (_, db) = fresh_db(&config_dir(config)?)?;
    settings.storage_url = format!("sqlite://{}", db.display());
    settings.listen = Some(([127, 0, 0, 1], 0).into());
    settings.public_url = None;
    let settings = Arc::new(settings);

    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let (engine, _server) = start_engine(settings.clone(), store.clone()).await?;
    let leads: Vec<Lead> = population
        .people()
        .iter()
        .map(|p| Lead {
            id: LeadId(format!("sim-{}", p.index)),
            fields: p.crm_fields().into_iter().collect(),
        })
        .collect();

    let show = args.format == Format::Table;
    if show {
        println!(
            "enrichd demo: {} simulated leads, workspace `{}` (no [workspaces.crm]: leads from memory), providers {} on loopback ({}× documented limits), SQLite {}",
            leads.len(),
            ws.id,
            sims.keys().cloned().collect::<Vec<_>>().join(", "),
            args.limit_scale,
            db.display()
        );
    }
    let first = run_with_progress(&engine, &ws, leads.clone(), show).await?;
    print_report(&first, args.format);

    // Running the same leads again is a no-op: nothing is asked, nothing charged.
    let before: u64 = sims.values().map(|s| s.stats().requests).sum();
    let sample: Vec<Lead> = leads.into_iter().take(100).collect();
    let again = engine.enrich(&ws, sample, Default::default()).await?;
    let after: u64 = sims.values().map(|s| s.stats().requests).sum();
    if show {
        println!(
            "\nRe-running {} leads: {} provider requests, {} credits (already enriched leads cost nothing).",
            again.totals.leads,
            after - before,
            again.totals.credits_charged
        );
        let mut values: BTreeMap<String, usize> = BTreeMap::new();
        for e in store.ledger(&ws.id).await? {
            *values.entry(e.source).or_default() += 1;
        }
        let mut spend: BTreeMap<String, i64> = BTreeMap::new();
        for e in store.spend(&ws.id).await? {
            *spend.entry(e.account).or_default() += e.amount;
        }
        let lines = provider_lines(&sims, &settings, &values, &spend);
        println!("\nProvider API calls against their limits (simulator statistics):");
        println!("{}", provider_table(&lines));
        println!("Finished in {:.1} s.", started.elapsed().as_secs_f64());
    }
    for (_, s) in sims {
        s.shutdown().await;
    }
    Ok(())
}

// ---------------------------------------------------------------- the report

#[derive(Debug, Default, Serialize)]
struct DemoReport {
    workspace: String,
    contacts: usize,
    providers: Vec<String>,
    limit_scale: u32,
    database: String,
    config: String,
    connect: ConnectReport,
    first_pass: PassReport,
    /// Leads per status (full, partial, empty, none = in no audience):
    /// before (only what the contacts held) and after the first pass.
    statuses: BTreeMap<String, BeforeAfter>,
    written: WrittenReport,
    human_typed: HumanReport,
    credits: CreditsReport,
    webhooks: WebhookReport,
    hubspot_api: HubSpotApiReport,
    provider_api: BTreeMap<String, ProviderLine>,
    elapsed_secs: f64,
}

#[derive(Debug, Default, Serialize)]
struct ConnectReport {
    auth: String,
    portal: String,
    scopes: Vec<String>,
    /// The connection as stored: tokens sealed at rest.
    tokens_sealed: bool,
    properties_checked: usize,
    properties_created: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct PassReport {
    /// Every lead the pass pulled from HubSpot is stored, and nothing is
    /// left to write.
    complete: bool,
    secs: f64,
    leads_pulled: usize,
    /// Contacts written back (batch update inputs that succeeded).
    contacts_written: u64,
    batch_updates: u64,
}

#[derive(Debug, Default, Serialize)]
struct BeforeAfter {
    before: usize,
    after: usize,
}

#[derive(Debug, Default, Serialize)]
struct WrittenReport {
    /// Contacts holding at least one value enrichd wrote.
    contacts: usize,
    /// Channel values written, with their Source.
    values: usize,
    /// Channel values in HubSpot without their Source (always 0).
    values_without_source: usize,
    /// Channel → Source → values.
    by_channel: BTreeMap<String, BTreeMap<String, usize>>,
    /// Status property → contacts.
    status: BTreeMap<String, usize>,
}

#[derive(Debug, Default, Serialize)]
struct HumanReport {
    /// Contacts that already had an email / a phone a person typed.
    emails: usize,
    phones: usize,
    /// Of those values, how many HubSpot still holds unchanged at the end.
    unchanged: usize,
}

#[derive(Debug, Default, Serialize)]
struct CreditsReport {
    /// The budget counter of the period.
    charged: i64,
    /// The customer-credit ledger: one row per value charged.
    ledger_entries: usize,
    ledger_sum: i64,
    by_channel: BTreeMap<String, i64>,
    period: String,
    budget: Option<i64>,
    /// What providers billed (the spend ledger), per account, in their credits.
    provider_spend: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Serialize)]
struct WebhookReport {
    /// A contact created in HubSpot, enriched and written back.
    created: Option<CreatedReport>,
    /// An edit of a complete contact: handled, nothing to buy.
    edit: Option<EditReport>,
    /// Events about enrichd's own writes, recognised and ignored (no loop).
    own_writes_ignored: usize,
    /// Events recorded, by state (done, ignored, pending).
    events: BTreeMap<String, usize>,
    /// Deliveries HubSpot made, and those the daemon refused.
    deliveries: usize,
    rejected: usize,
}

#[derive(Debug, Default, Serialize)]
struct CreatedReport {
    contact_id: String,
    name: String,
    /// From the creation in HubSpot to the write seen there.
    latency_ms: u64,
    written: bool,
    status: Option<String>,
    /// Channel → (value, Source) as HubSpot holds them.
    values: BTreeMap<String, (String, String)>,
    credits: i64,
}

#[derive(Debug, Default, Serialize)]
struct EditReport {
    contact_id: String,
    property: String,
    handled: bool,
    latency_ms: u64,
    provider_calls: u64,
    credits: i64,
}

#[derive(Debug, Default, Serialize)]
struct HubSpotApiReport {
    /// API calls (OAuth and simulator control calls excluded).
    calls: u64,
    /// Calls by kind (batch update, batch read, search, associations, …).
    by_kind: BTreeMap<String, u64>,
    token_grants: u64,
    busiest_10s: u32,
    limit_10s: u32,
    busiest_search_second: u32,
    limit_search_per_second: u32,
    rate_limited: u64,
}

#[derive(Debug, Default, Serialize)]
struct ProviderLine {
    requests: u64,
    rate_limited: u64,
    busiest_minute: u32,
    limit_per_minute: Option<u32>,
    /// Values charged with this Source.
    values: usize,
    /// Spend recorded by enrichd (the spend ledger).
    spend: f64,
    /// What the simulator charged.
    provider_credits: i64,
}

// ---------------------------------------------------------------- with HubSpot

/// The contact properties whose change enrichd subscribes to: identity and
/// audience fields (what can change what enrichment finds).
fn input_properties(ws: &Workspace) -> BTreeSet<String> {
    let f = &ws.fields;
    let mut set: BTreeSet<String> = f
        .names()
        .filter(|n| *n != f.icp_score)
        .map(String::from)
        .collect();
    for a in &ws.audiences {
        for c in &a.conditions {
            set.insert(c.field.clone());
        }
    }
    set
}

/// `key` of `t` as a table (created when missing).
fn table<'a>(t: &'a mut toml::Table, key: &str) -> Result<&'a mut toml::Table, CliError> {
    t.entry(key.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| CliError::Usage(format!("`{key}` in the config is not a table")))
}

fn text_of(t: &toml::Table, key: &str) -> Option<String> {
    t.get(key).and_then(toml::Value::as_str).map(String::from)
}

fn abs_in(dir: &Path, p: &str) -> String {
    dir.join(p).display().to_string()
}

/// What the derived config points at.
struct DemoTargets<'a> {
    config_dir: &'a Path,
    db: &'a Path,
    port: u16,
    workspace: &'a str,
    hubspot_url: String,
    /// Account → simulator URL and limits.
    providers: BTreeMap<String, (String, Limits)>,
}

/// config.toml pointed at the simulators, and where it reads its secrets.
struct DerivedConfig {
    text: String,
    /// Provider account → the variable holding its key.
    key_vars: BTreeMap<String, String>,
    client_id_var: String,
    client_secret_var: String,
    master_key_var: String,
}

/// The documented config with the simulators in place of the real
/// services: the database, `[server]` on the daemon's port, each
/// provider's `base_url` and (scaled) limits, and the workspace's
/// `[workspaces.crm]` on the simulated portal with an OAuth app, the
/// shipped mapping and one sync pass (webhooks do the rest). Paths become
/// absolute (the file is written under `.enrichd/`).
fn derive_config(text: &str, to: &DemoTargets<'_>) -> Result<DerivedConfig, CliError> {
    let bad = |e: toml::de::Error| CliError::Usage(format!("config: {e}"));
    let mut t: toml::Table = text.parse().map_err(bad)?;
    let storage = table(&mut t, "storage")?;
    storage.clear();
    storage.insert("url".into(), format!("sqlite://{}", to.db.display()).into());
    let server = table(&mut t, "server")?;
    server.insert("listen".into(), format!("127.0.0.1:{}", to.port).into());
    server.insert(
        "public_url".into(),
        format!("http://127.0.0.1:{}", to.port).into(),
    );
    server.insert("shutdown_grace_secs".into(), 10.into());
    let engine = table(&mut t, "engine")?;
    let connectors = text_of(engine, "connectors_dir").unwrap_or_else(|| "connectors".into());
    engine.insert(
        "connectors_dir".into(),
        abs_in(to.config_dir, &connectors).into(),
    );
    let mut key_vars = BTreeMap::new();
    let providers = table(&mut t, "providers")?;
    for (id, (url, limits)) in &to.providers {
        let p = table(providers, id)?;
        p.insert("base_url".into(), url.clone().into());
        let mut l = toml::Table::new();
        for (k, v) in [
            ("per_second", limits.per_second),
            ("per_minute", limits.per_minute),
            ("per_hour", limits.per_hour),
            ("per_day", limits.per_day),
        ] {
            if let Some(v) = v {
                l.insert(k.into(), i64::from(v).into());
            }
        }
        if let Some(c) = p.get("limits").and_then(|x| x.get("concurrency")).cloned() {
            l.insert("concurrency".into(), c);
        }
        p.insert("limits".into(), toml::Value::Table(l));
        if let Some(var) = text_of(p, "api_key_env") {
            key_vars.insert(id.clone(), var);
        }
    }
    let security = table(&mut t, "security")?;
    let master_key_var =
        text_of(security, "master_key_env").unwrap_or_else(|| "ENRICHD_MASTER_KEY".into());
    security.insert("master_key_env".into(), master_key_var.clone().into());

    // Only the demo's workspace, its CRM on the simulated portal.
    let workspaces = t
        .get_mut("workspaces")
        .and_then(toml::Value::as_array_mut)
        .ok_or_else(|| CliError::Usage("the config has no [[workspaces]]".into()))?;
    workspaces.retain(|w| w.get("id").and_then(toml::Value::as_str) == Some(to.workspace));
    let ws = workspaces
        .first_mut()
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| CliError::Usage(format!("workspace `{}` not found", to.workspace)))?;
    let crm = table(ws, "crm")?;
    crm.insert("auth_url".into(), to.hubspot_url.clone().into());
    crm.insert("api_url".into(), to.hubspot_url.clone().into());
    crm.insert(
        "redirect_uri".into(),
        "http://127.0.0.1:0/oauth/callback".into(),
    );
    let mapping = text_of(crm, "mapping").unwrap_or_else(|| "mappings/hubspot.toml".into());
    crm.insert("mapping".into(), abs_in(to.config_dir, &mapping).into());
    crm.insert("sync_interval_secs".into(), 3600.into());
    for k in ["private_app_token_env", "portal_id", "webhook_secret_env"] {
        crm.remove(k);
    }
    let client_id_var = text_of(crm, "client_id_env").unwrap_or_else(|| "HUBSPOT_CLIENT_ID".into());
    let client_secret_var =
        text_of(crm, "client_secret_env").unwrap_or_else(|| "HUBSPOT_CLIENT_SECRET".into());
    crm.insert("client_id_env".into(), client_id_var.clone().into());
    crm.insert("client_secret_env".into(), client_secret_var.clone().into());

    Ok(DerivedConfig {
        text: toml::to_string(&t).map_err(|e| CliError::Usage(format!("config: {e}")))?,
        key_vars,
        client_id_var,
        client_secret_var,
        master_key_var,
    })
}

/// Every stored lead of the workspace, in id order.
async fn stored_leads(store: &dyn Store, ws: &Workspace) -> Result<Vec<Lead>, CliError> {
    let mut out: Vec<Lead> = Vec::new();
    loop {
        let after = out.last().map(|l| l.id.clone());
        let page = store.lead_page(&ws.id, after.as_ref(), 1000).await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

/// Provider requests, all simulators.
fn provider_requests(sims: &BTreeMap<String, SimServer>) -> u64 {
    sims.values().map(|s| s.stats().requests).sum()
}

/// A value a person typed on a contact before enrichd came.
struct Typed {
    contact: usize,
    property: &'static str,
    value: String,
}

/// Everything the HubSpot demo runs against.
struct CrmDemo {
    show: bool,
    clock: Arc<dyn Clock>,
    population: Arc<Population>,
    contacts: usize,
    sims: BTreeMap<String, SimServer>,
    hs: HubSpotSim,
    contact_ids: Vec<String>,
    typed: Vec<Typed>,
    /// An output property HubSpot also notifies about (enrichd's own
    /// writes coming back, which must not loop).
    echo_field: Option<String>,
    config_dir: PathBuf,
    config: PathBuf,
    db: PathBuf,
    settings: Arc<Settings>,
    ws: Arc<Workspace>,
    h: Arc<HubSpotSettings>,
    store: Arc<dyn Store>,
}

async fn run_crm(
    config: &Path,
    args: DemoArgs,
    base: &Settings,
    base_ws: &Workspace,
    started: Instant,
) -> Result<(), CliError> {
    // The daemon's address is known before the portal starts: HubSpot
    // sends its webhooks there.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let d = CrmDemo::start(config, &args, base, base_ws, listener.local_addr()?.port()).await?;
    let (connect, hub) = d.connect().await?;
    let mut report = DemoReport {
        workspace: d.ws.id.to_string(),
        contacts: d.contacts,
        providers: d.sims.keys().cloned().collect(),
        limit_scale: args.limit_scale,
        database: d.db.display().to_string(),
        config: d.config.display().to_string(),
        connect,
        ..DemoReport::default()
    };

    // The daemon, in-process: its first sync pass backfills, enriches and
    // writes back; then it waits for webhooks.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut daemon = tokio::spawn(crate::daemon::run(
        d.settings.clone(),
        d.store.clone(),
        d.clock.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let leads = d.first_pass(&hub, &mut daemon, &mut report).await?;
    report.statuses = statuses(&*d.store, &d.ws, &leads, d.clock.now()).await?;
    report.webhooks.edit = d.edit_complete_contact().await?;
    report.webhooks.created = Some(d.create_contact().await?);

    // Let HubSpot deliver what it still has (the echo of the last write),
    // then stop the daemon the way SIGTERM does.
    let _ = tokio::time::timeout(Duration::from_secs(5), d.hs.flush_webhooks()).await;
    d.settle_events().await?;
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(20), daemon).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("warning: enrichd run stopped with an error: {e}"),
        Ok(Err(e)) => eprintln!("warning: enrichd run: {e}"),
        Err(_) => eprintln!("warning: enrichd run did not stop within 20 s"),
    }

    d.tally(&mut report).await?;
    report.elapsed_secs = started.elapsed().as_secs_f64();
    let config_dir = d.config_dir.clone();
    d.shutdown().await;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        ),
        Format::Table => print!("{}", render(&report, &config_dir)),
    }
    Ok(())
}

impl CrmDemo {
    /// The simulators, the derived config and a fresh store.
    async fn start(
        config: &Path,
        args: &DemoArgs,
        base: &Settings,
        base_ws: &Workspace,
        port: u16,
    ) -> Result<CrmDemo, CliError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let contacts = args.leads.max(1);
        let population = Arc::new(Population::generate(args.seed, contacts + EXTRA_PEOPLE));
        let (sims, limits) = start_providers(base, &population, args.limit_scale).await?;

        // The portal: one contact per person, with the employee count the
        // audiences filter on; some already carry an email or a phone a
        // person typed, which enrichd must neither search for nor overwrite.
        let mut data = HubSpotData::from_population(
            &population,
            clock.now() - 2 * 86_400_000,
            TYPED_EMAIL_SHARE,
        );
        data.contacts.truncate(contacts);
        let mut typed = Vec::new();
        for (i, c) in data.contacts.iter_mut().enumerate() {
            let p = population.person(i);
            c.properties
                .insert("numemployees".into(), p.employees.to_string());
            if i % TYPED_PHONE_EVERY == TYPED_PHONE_EVERY / 2 {
                c.properties
                    .insert("phone".into(), enrichd_sim::human_phone(&p.phone));
            }
            for property in ["email", "phone"] {
                if let Some(v) = c.properties.get(property) {
                    typed.push(Typed {
                        contact: i,
                        property,
                        value: v.clone(),
                    });
                }
            }
        }
        // The app's webhook subscriptions: creations, changes of what
        // enrichment reads, and one property enrichd writes.
        let mut subs = vec![Subscription::creation()];
        subs.extend(
            input_properties(base_ws)
                .iter()
                .map(|p| Subscription::property_change(p)),
        );
        let echo_field = match &base_ws.crm {
            Some(CrmSettings::HubSpot(h)) => h
                .mapping
                .channels
                .get(&Channel::WorkEmail)
                .map(|r| r.value.field.clone()),
            // The demo's CRM is HubSpot (run_crm is entered for HubSpot only).
            Some(CrmSettings::Salesforce(_)) | None => None,
        };
        if let Some(f) = &echo_field {
            subs.push(Subscription::property_change(f));
        }
        let hook_url = format!(
            "http://127.0.0.1:{port}{}",
            crate::crm::hubspot::webhook::PATH
        );
        let hs = start_hubspot(
            data,
            HubSpotOptions::defaults()
                .with_limits(HubSpotLimits::oauth_default())
                .with_latency(HUBSPOT_LATENCY)
                .with_webhooks(hook_url, subs),
        )
        .await?;
        let contact_ids = hs.contact_ids();

        // config.toml with the simulators in place of the services.
        let config_dir = config_dir(config)?;
        let (dir, db) = fresh_db(&config_dir)?;
        let derived = derive_config(
            &std::fs::read_to_string(config)?,
            &DemoTargets {
                config_dir: &config_dir,
                db: &db,
                port,
                workspace: base_ws.id.as_str(),
                hubspot_url: hs.base_url(),
                providers: sims
                    .iter()
                    .filter_map(|(id, s)| Some((id.clone(), (s.base_url(), *limits.get(id)?))))
                    .collect(),
            },
        )?;
        let demo_config = dir.join("demo.toml");
        std::fs::write(
            &demo_config,
            format!(
                "# Written by `enrichd demo` from {}: the same settings, with simulators\n\
                 # on loopback in place of HubSpot and the providers, and a fresh database.\n\
                 # Secrets (simulator keys, the HubSpot app, a new master key) come from the\n\
                 # demo, not from the environment.\n\n{}",
                config.display(),
                derived.text
            ),
        )?;
        let mut secrets: BTreeMap<String, String> = BTreeMap::new();
        for (id, var) in &derived.key_vars {
            if let Some(s) = sims.get(id) {
                secrets.insert(var.clone(), s.api_key().to_string());
            }
        }
        secrets.insert(derived.client_id_var, hs.options().client_id.clone());
        secrets.insert(
            derived.client_secret_var,
            hs.options().client_secret.clone(),
        );
        secrets.insert(
            derived.master_key_var,
            crate::crypto::generate_key().map_err(|e| CliError::Usage(e.to_string()))?,
        );
        let settings = Arc::new(Settings::load(&demo_config, &secrets)?);
        let ws = super::pick_workspace(&settings, Some(base_ws.id.as_str()))?;
        let Some(CrmSettings::HubSpot(h)) = ws.crm.clone() else {
            return Err(CliError::Usage("the demo workspace lost its CRM".into()));
        };
        let store = crate::store::open(&settings.storage_url).await?;
        store.migrate().await?;

        let show = args.format == Format::Table;
        if show {
            println!(
                "enrichd demo · workspace `{}` · {} HubSpot contacts · providers {} ({}× documented limits) · simulators on loopback · SQLite {}",
                ws.id,
                group(contacts as u64),
                sims.keys().cloned().collect::<Vec<_>>().join(", "),
                args.limit_scale,
                shown_path(&db, &config_dir)
            );
        }
        Ok(CrmDemo {
            show,
            clock,
            population,
            contacts,
            sims,
            hs,
            contact_ids,
            typed,
            echo_field,
            config_dir,
            config: demo_config,
            db,
            settings,
            ws,
            h,
            store,
        })
    }

    /// What `enrichd connect hubspot` does, with an HTTP client as the
    /// browser: the simulated consent page approves at once and redirects
    /// to enrichd's loopback callback; the code is exchanged, the tokens
    /// sealed and stored, the mapped properties created.
    async fn connect(&self) -> Result<(ConnectReport, HubSpot), CliError> {
        let key = self
            .settings
            .master_key
            .as_ref()
            .ok_or_else(|| CliError::Usage("the demo's master key is missing".into()))?;
        let cipher =
            crate::crypto::TokenCipher::from_key_text(&self.settings.master_key_env, key.expose())
                .map_err(|e| CliError::Usage(e.to_string()))?;
        let http = HubSpotClient::http(self.h.timeout).map_err(hub_err)?;
        let browser = reqwest::Client::new();
        let connected = auth::connect(
            &auth::ConnectContext {
                ws: &self.ws.id,
                settings: &self.h,
                store: &self.store,
                cipher: Some(&cipher),
                clock: &*self.clock,
                http: &http,
                wait: Duration::from_secs(20),
            },
            |url: String| async move {
                match browser.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => eprintln!("demo browser: the callback page answered {}", r.status()),
                    Err(e) => eprintln!("demo browser: {e}"),
                }
            },
        )
        .await
        .map_err(hub_err)?;
        let hub = HubSpot::open(
            &self.settings,
            &self.ws,
            self.store.clone(),
            self.clock.clone(),
        )
        .map_err(hub_err)?
        .ok_or_else(|| CliError::Usage("the demo workspace has no HubSpot".into()))?;
        let schema = crate::crm::hubspot::schema::ensure(
            &hub.client,
            &self.h.mapping,
            self.h.create_properties,
        )
        .await
        .map_err(hub_err)?;
        let sealed = self
            .store
            .connection(&self.ws.id, CRM)
            .await?
            .is_some_and(|c| c.sealed_access.is_some() && c.sealed_refresh.is_some());
        if self.show {
            println!(
                "Connect   OAuth with PKCE, portal {}: authorize → loopback callback → code exchanged → tokens sealed{} · {} properties checked, {} created",
                connected.portal,
                if sealed { "" } else { " (NOT stored)" },
                schema.checked.len(),
                schema.created.len()
            );
        }
        Ok((
            ConnectReport {
                auth: connected.auth.to_string(),
                portal: connected.portal,
                scopes: connected.scopes,
                tokens_sealed: sealed,
                properties_checked: schema.checked.len(),
                properties_created: schema.created,
            },
            hub,
        ))
    }

    /// Waits for the daemon's first sync pass; returns the stored leads.
    async fn first_pass(
        &self,
        hub: &HubSpot,
        daemon: &mut tokio::task::JoinHandle<Result<(), crate::daemon::DaemonError>>,
        report: &mut DemoReport,
    ) -> Result<Vec<Lead>, CliError> {
        let started = Instant::now();
        let bar = if self.show {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} · {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut done: Option<Vec<Lead>> = None;
        while started.elapsed() < FIRST_PASS_LIMIT && !daemon.is_finished() {
            tokio::time::sleep(Duration::from_millis(400)).await;
            bar.set_message(format!(
                "enrichd run: first sync pass · {} contacts written back · {} provider calls",
                group(self.hs.stats().records_updated),
                group(provider_requests(&self.sims))
            ));
            done = self.first_pass_done(hub).await?;
            if done.is_some() {
                break;
            }
        }
        bar.finish_and_clear();
        if daemon.is_finished() {
            let why = match daemon.await {
                Ok(Ok(())) => "it stopped".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            return Err(CliError::Crm(format!("enrichd run stopped early: {why}")));
        }
        let secs = started.elapsed().as_secs_f64();
        let leads = match done {
            Some(l) => l,
            None => {
                eprintln!(
                    "warning: the first sync pass did not finish within {} s; reporting what is done",
                    FIRST_PASS_LIMIT.as_secs()
                );
                stored_leads(&*self.store, &self.ws).await?
            }
        };
        let st = self.hs.stats();
        report.first_pass = PassReport {
            complete: leads.len() >= self.contacts,
            secs,
            leads_pulled: leads.len(),
            contacts_written: st.records_updated,
            batch_updates: st.count("POST /crm/v3/objects/contacts/batch/update"),
        };
        if self.show {
            println!(
                "Sync      first pass of `enrichd run`: {} contacts pulled and enriched, {} written back in {} batch updates ({secs:.1} s)",
                group(leads.len() as u64),
                group(st.records_updated),
                report.first_pass.batch_updates,
            );
        }
        Ok(leads)
    }

    /// Whether the daemon's first pass is over: the pull finished, every
    /// contact is stored, and nothing enriched is left to write back (a
    /// lead whose write failed for good does not count).
    async fn first_pass_done(&self, hub: &HubSpot) -> Result<Option<Vec<Lead>>, CliError> {
        let ws = &self.ws.id;
        if !self.store.sync_state(ws, CRM, OBJECT).await?.backfill_done {
            return Ok(None);
        }
        let leads = stored_leads(&*self.store, &self.ws).await?;
        if leads.len() < self.contacts {
            return Ok(None);
        }
        let failed: BTreeSet<LeadId> = self
            .store
            .write_outcomes(ws)
            .await?
            .into_iter()
            .filter(|o| o.state == "failed")
            .map(|o| o.lead_id)
            .collect();
        let pending = hub.plan_writes(leads.clone()).await.map_err(hub_err)?;
        if pending.iter().any(|p| !failed.contains(&p.lead.id)) {
            return Ok(None);
        }
        Ok(Some(leads))
    }

    /// A person changes the last name of a contact enrichd completed: the
    /// webhook arrives, the contact is read again, and nothing is bought.
    async fn edit_complete_contact(&self) -> Result<Option<EditReport>, CliError> {
        let Some(status) = self.h.mapping.status.as_ref().map(|r| r.field.clone()) else {
            return Ok(None);
        };
        let last = self.ws.fields.last_name.clone();
        let full = EnrichmentStatus::Full.to_string();
        let Some((id, name)) = self.contact_ids.iter().find_map(|id| {
            let c = self.hs.contact(id)?;
            if c.get(&status)? != full {
                return None;
            }
            Some((id.clone(), c.get(&last)?.to_string()))
        }) else {
            return Ok(None);
        };
        let calls_before = provider_requests(&self.sims);
        let credits_before = self.charged().await?.0;
        let t0 = Instant::now();
        let new_name = format!("{name}-Lindqvist");
        self.hs
            .human_edit(&id, &[(last.as_str(), new_name.as_str())]);
        let lead = LeadId(id.clone());
        let mut handled = false;
        while !handled && t0.elapsed() < WEBHOOK_LIMIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
            handled = self.store.events(&self.ws.id, CRM).await?.iter().any(|e| {
                e.event.lead_id == lead
                    && e.event.property.as_deref() == Some(last.as_str())
                    && e.state != "pending"
            });
        }
        Ok(Some(EditReport {
            contact_id: id,
            property: last,
            handled,
            latency_ms: t0.elapsed().as_millis() as u64,
            provider_calls: provider_requests(&self.sims) - calls_before,
            credits: self.charged().await?.0 - credits_before,
        }))
    }

    /// The person the demo adds to HubSpot: not a contact yet, in an
    /// audience needing a work email, and known to a provider of the
    /// work-email order with a verified address (so the effect shows).
    fn newcomer(&self) -> usize {
        let now = self.clock.now();
        let pop = &*self.population;
        let in_audience = |i: usize| {
            let lead = Lead {
                id: LeadId(format!("new-{i}")),
                fields: pop.person(i).crm_fields().into_iter().collect(),
            };
            crate::engine::run::prepare(&self.ws, lead, StoredLead::default(), now)
                .configured
                .contains(Channel::WorkEmail)
        };
        let known = |i: usize| {
            self.ws
                .order_for(Channel::WorkEmail)
                .iter()
                .filter_map(|acc| self.sims.get(acc))
                .any(|s| {
                    s.options()
                        .profile
                        .knows(pop, &s.options().name, i, SimChannel::WorkEmail)
                        .is_some_and(|k| k.word == Word::Verified)
                })
        };
        let range = self.contacts..pop.len();
        range
            .clone()
            .find(|&i| in_audience(i) && known(i))
            .or_else(|| range.clone().find(|&i| in_audience(i)))
            .unwrap_or(self.contacts)
    }

    /// A contact created in HubSpot: the webhook brings it to enrichd,
    /// which enriches it and writes it back.
    async fn create_contact(&self) -> Result<CreatedReport, CliError> {
        let credits_before = self.charged().await?.0;
        let person = self.population.person(self.newcomer());
        let company = self.hs.company_ids().into_iter().find(|id| {
            self.hs
                .company(id)
                .is_some_and(|c| c.properties.get("domain") == Some(&person.domain))
        });
        let fields = person.crm_fields();
        let props: Vec<(&str, &str)> = [
            "firstname",
            "lastname",
            "company",
            "jobtitle",
            "seniority",
            "country",
            "numemployees",
            "icp_score",
        ]
        .iter()
        .filter_map(|k| fields.get(*k).and_then(|v| v.as_str()).map(|v| (*k, v)))
        .collect();
        // The status property is written with the values, in one update.
        let marker = self
            .h
            .mapping
            .status
            .as_ref()
            .or_else(|| self.h.mapping.channels.values().next().map(|r| &r.value))
            .map(|r| r.field.clone())
            .unwrap_or_default();
        let t0 = Instant::now();
        let id = self.hs.create_contact(&props, company.as_deref());
        let mut written = false;
        while !written && t0.elapsed() < WEBHOOK_LIMIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
            written = self
                .hs
                .contact(&id)
                .is_some_and(|c| c.get(&marker).is_some());
        }
        let latency = t0.elapsed();
        let view = self.hs.contact(&id);
        let mut values = BTreeMap::new();
        for (c, rule) in &self.h.mapping.channels {
            if let Some(value) = view.as_ref().and_then(|v| v.get(&rule.value.field)) {
                let source = rule
                    .source
                    .as_ref()
                    .and_then(|s| view.as_ref()?.get(&s.field))
                    .unwrap_or("-");
                values.insert(
                    c.as_str().to_string(),
                    (value.to_string(), source.to_string()),
                );
            }
        }
        let status = self.h.mapping.status.as_ref().and_then(|r| {
            view.as_ref()
                .and_then(|v| v.get(&r.field))
                .map(String::from)
        });
        Ok(CreatedReport {
            contact_id: id,
            name: format!(
                "{} {}, {} at {}",
                person.first_name, person.last_name, person.job_title, person.company_name
            ),
            latency_ms: latency.as_millis() as u64,
            written,
            status,
            values,
            credits: self.charged().await?.0 - credits_before,
        })
    }

    /// Waits (briefly) until no recorded event is pending.
    async fn settle_events(&self) -> Result<(), CliError> {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end
            && !self
                .store
                .pending_events(&self.ws.id, CRM, 1)
                .await?
                .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The credits charged in the current budget period, and the period.
    async fn charged(&self) -> Result<(i64, String), CliError> {
        let period = self.ws.budget.map_or_else(
            || "all".to_string(),
            |b| crate::core::ledger::period_key(b.period, self.clock.now()),
        );
        Ok((
            self.store.budget(&self.ws.id, &period).await?.charged,
            period,
        ))
    }

    /// What HubSpot, the store and the simulators hold at the end.
    async fn tally(&self, report: &mut DemoReport) -> Result<(), CliError> {
        let mut human = HumanReport::default();
        for t in &self.typed {
            match t.property {
                "email" => human.emails += 1,
                _ => human.phones += 1,
            }
            if self
                .contact_ids
                .get(t.contact)
                .and_then(|id| self.hs.contact(id))
                .is_some_and(|c| c.get(t.property) == Some(t.value.as_str()))
            {
                human.unchanged += 1;
            }
        }
        report.human_typed = human;
        report.written = written_values(&self.hs, &self.h);

        let (charged, period) = self.charged().await?;
        let ledger = self.store.ledger(&self.ws.id).await?;
        let mut credits = CreditsReport {
            charged,
            ledger_entries: ledger.len(),
            ledger_sum: ledger.iter().map(|e| e.credits).sum(),
            period,
            budget: self.ws.budget.map(|b| b.credits),
            ..CreditsReport::default()
        };
        let mut values_by_source: BTreeMap<String, usize> = BTreeMap::new();
        for e in &ledger {
            *credits
                .by_channel
                .entry(e.channel.as_str().to_string())
                .or_default() += e.credits;
            *values_by_source.entry(e.source.clone()).or_default() += 1;
        }
        let mut spend_milli: BTreeMap<String, i64> = BTreeMap::new();
        for s in self.store.spend(&self.ws.id).await? {
            *spend_milli.entry(s.account).or_default() += s.amount;
        }
        credits.provider_spend = spend_milli
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64 / 1000.0))
            .collect();
        report.credits = credits;

        let events = self.store.events(&self.ws.id, CRM).await?;
        for e in &events {
            *report.webhooks.events.entry(e.state.clone()).or_default() += 1;
        }
        report.webhooks.own_writes_ignored = events
            .iter()
            .filter(|e| {
                e.state == "ignored"
                    && e.event.property.is_some()
                    && e.event.property == self.echo_field
            })
            .count();
        let st = self.hs.stats();
        report.webhooks.deliveries = st.webhook_deliveries.len();
        report.webhooks.rejected = st
            .webhook_deliveries
            .iter()
            .filter(|(s, _)| !(200..300).contains(s))
            .count();
        report.hubspot_api = hubspot_api(&self.hs);
        report.provider_api =
            provider_lines(&self.sims, &self.settings, &values_by_source, &spend_milli);
        Ok(())
    }

    async fn shutdown(self) {
        for (_, s) in self.sims {
            s.shutdown().await;
        }
        self.hs.shutdown().await;
    }
}

/// Status before (only what the contact held) and after (with what
/// enrichd stored) of each lead.
async fn statuses(
    store: &dyn Store,
    ws: &Workspace,
    leads: &[Lead],
    now: i64,
) -> Result<BTreeMap<String, BeforeAfter>, CliError> {
    let key = |s: Option<EnrichmentStatus>| s.map_or("none", |s| s.as_str()).to_string();
    let mut out: BTreeMap<String, BeforeAfter> = BTreeMap::new();
    for chunk in leads.chunks(500) {
        let ids: Vec<LeadId> = chunk.iter().map(|l| l.id.clone()).collect();
        let mut stored = store.load_leads(&ws.id, &ids).await?;
        for l in chunk {
            let before = crate::engine::run::prepare(ws, l.clone(), StoredLead::default(), now)
                .status_before;
            let s = stored.remove(&l.id).unwrap_or_default();
            let after = crate::engine::run::prepare(ws, l.clone(), s, now).status_before;
            out.entry(key(before)).or_default().before += 1;
            out.entry(key(after)).or_default().after += 1;
        }
    }
    Ok(out)
}

/// Values enrichd wrote, as HubSpot holds them.
fn written_values(hs: &HubSpotSim, h: &HubSpotSettings) -> WrittenReport {
    let mut w = WrittenReport::default();
    let status = h.mapping.status.as_ref().map(|r| r.field.as_str());
    for id in hs.contact_ids() {
        let Some(c) = hs.contact(&id) else { continue };
        let mut any = false;
        for (ch, rule) in &h.mapping.channels {
            if c.get(&rule.value.field).is_none() {
                continue;
            }
            any = true;
            w.values += 1;
            match rule.source.as_ref().and_then(|s| c.get(&s.field)) {
                Some(src) => {
                    *w.by_channel
                        .entry(ch.as_str().to_string())
                        .or_default()
                        .entry(src.to_string())
                        .or_default() += 1;
                }
                None => w.values_without_source += 1,
            }
        }
        if any {
            w.contacts += 1;
        }
        if let Some(s) = status.and_then(|f| c.get(f)) {
            *w.status.entry(s.to_string()).or_default() += 1;
        }
    }
    w
}

fn hubspot_api(hs: &HubSpotSim) -> HubSpotApiReport {
    let st = hs.stats();
    let limits = hs.limits();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for c in &st.log {
        if matches!(c.bucket, Bucket::Token | Bucket::Sim) {
            continue;
        }
        let e = &c.endpoint;
        let kind = if e.ends_with("/batch/update") {
            "batch update"
        } else if e.contains("/v4/") {
            "associations (v4)"
        } else if e.ends_with("/batch/read") {
            "batch read"
        } else if e.ends_with("/search") {
            "search"
        } else if e.contains("/properties/") {
            "properties"
        } else if e.contains("/objects/") {
            "list / get"
        } else {
            "other"
        };
        *by_kind.entry(kind.to_string()).or_default() += 1;
    }
    HubSpotApiReport {
        calls: st.api_calls(),
        by_kind,
        token_grants: st.token_grants.values().sum(),
        busiest_10s: st.max_in_window(Bucket::General, Duration::from_secs(10)),
        limit_10s: limits.ten_secondly,
        busiest_search_second: st.max_in_window(Bucket::Search, Duration::from_secs(1)),
        limit_search_per_second: limits.search_per_second,
        rate_limited: st.rate_limited.values().sum(),
    }
}

fn provider_lines(
    sims: &BTreeMap<String, SimServer>,
    settings: &Settings,
    values_by_source: &BTreeMap<String, usize>,
    spend_milli: &BTreeMap<String, i64>,
) -> BTreeMap<String, ProviderLine> {
    sims.iter()
        .map(|(id, s)| {
            let st = s.stats();
            let account = settings.accounts.get(id);
            let per_min = account
                .map(|a| a.limits)
                .and_then(|l| l.per_minute.or(l.per_second.map(|n| n.saturating_mul(60))));
            let source = account.map_or(id.as_str(), |a| a.connector.id.as_str());
            (
                id.clone(),
                ProviderLine {
                    requests: st.requests,
                    rate_limited: st.rate_limited,
                    busiest_minute: st.max_in_window(Duration::from_secs(60)),
                    limit_per_minute: per_min,
                    values: values_by_source.get(source).copied().unwrap_or(0),
                    spend: spend_milli.get(id).copied().unwrap_or(0) as f64 / 1000.0,
                    provider_credits: st.credits_charged,
                },
            )
        })
        .collect()
}

// ---------------------------------------------------------------- rendering

/// `12345` → `12,345`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn signed(n: i64) -> String {
    if n < 0 {
        format!("-{}", group(n.unsigned_abs()))
    } else {
        group(n.unsigned_abs())
    }
}

/// A path relative to the config's directory when it is inside it.
fn shown_path(p: &Path, base: &Path) -> String {
    p.strip_prefix(base)
        .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
}

fn new_table(header: Vec<&str>) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(header);
    t
}

fn right(t: &mut Table, from: usize) {
    let n = t.column_count();
    for i in from..n {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

fn provider_table(lines: &BTreeMap<String, ProviderLine>) -> Table {
    let mut t = new_table(vec![
        "provider",
        "calls",
        "429s",
        "busiest minute",
        "limit/min",
        "values",
        "spend",
        "billed",
    ]);
    for (id, p) in lines {
        t.add_row(vec![
            Cell::new(id),
            Cell::new(group(p.requests)),
            Cell::new(p.rate_limited),
            Cell::new(group(u64::from(p.busiest_minute))),
            Cell::new(
                p.limit_per_minute
                    .map_or("-".into(), |n| group(u64::from(n))),
            ),
            Cell::new(group(p.values as u64)),
            Cell::new(format!("{:.1}", p.spend)),
            Cell::new(p.provider_credits),
        ]);
    }
    right(&mut t, 1);
    t
}

fn render(r: &DemoReport, base: &Path) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o);

    let mut st = new_table(vec!["status", "before", "after"]);
    for key in ["full", "partial", "empty", "none"] {
        if let Some(ba) = r.statuses.get(key) {
            let label = if key == "none" { "in no audience" } else { key };
            st.add_row(vec![
                Cell::new(label),
                Cell::new(group(ba.before as u64)),
                Cell::new(group(ba.after as u64)),
            ]);
        }
    }
    right(&mut st, 1);
    let _ = writeln!(o, "Leads by status, before → after the first pass:\n{st}");

    let w = &r.written;
    let mut sources: BTreeSet<&str> = BTreeSet::new();
    for by in w.by_channel.values() {
        sources.extend(by.keys().map(String::as_str));
    }
    let mut header = vec!["written to HubSpot"];
    header.extend(sources.iter().copied());
    header.push("total");
    let mut vt = new_table(header);
    for (ch, by) in &w.by_channel {
        let mut row = vec![Cell::new(ch)];
        for s in &sources {
            row.push(Cell::new(
                by.get(*s).map_or("·".into(), |n| group(*n as u64)),
            ));
        }
        row.push(Cell::new(group(by.values().sum::<usize>() as u64)));
        vt.add_row(row);
    }
    right(&mut vt, 1);
    let _ = writeln!(
        o,
        "Values written by Source: {} values on {} contacts, each with its Source ({} without){}",
        group(w.values as u64),
        group(w.contacts as u64),
        w.values_without_source,
        if w.by_channel.is_empty() {
            String::new()
        } else {
            format!("\n{vt}")
        }
    );
    let h = &r.human_typed;
    let _ = writeln!(
        o,
        "Typed by people: {} emails and {} phones were on contacts before enrichd: not searched, not charged, {} of {} unchanged.",
        group(h.emails as u64),
        group(h.phones as u64),
        group(h.unchanged as u64),
        group((h.emails + h.phones) as u64)
    );

    let c = &r.credits;
    let by: Vec<String> = c
        .by_channel
        .iter()
        .map(|(k, v)| format!("{k} {}", signed(*v)))
        .collect();
    let _ = writeln!(
        o,
        "Credits: {} charged for {} values ({}){}; ledger sum {}.",
        signed(c.charged),
        group(c.ledger_entries as u64),
        by.join(" · "),
        c.budget.map_or(String::new(), |b| format!(
            ", budget {} for {}",
            signed(b),
            c.period
        )),
        signed(c.ledger_sum)
    );
    let spend: f64 = c.provider_spend.values().sum();
    let _ = writeln!(
        o,
        "Provider spend: {spend:.1} provider credits ({}).",
        c.provider_spend
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect::<Vec<_>>()
            .join(" · ")
    );

    let wh = &r.webhooks;
    let _ = writeln!(
        o,
        "\nWebhooks (signed v3, verified before they are recorded):"
    );
    if let Some(e) = &wh.edit {
        let _ = writeln!(
            o,
            "  {} of complete contact {} edited in HubSpot → {} in {} ms: {} provider calls, {} credits (nothing missing, nothing bought)",
            e.property,
            e.contact_id,
            if e.handled { "handled" } else { "NOT handled" },
            group(e.latency_ms),
            e.provider_calls,
            e.credits
        );
    }
    if let Some(c) = &wh.created {
        let vals: Vec<String> = c
            .values
            .iter()
            .map(|(ch, (_, src))| format!("{ch} from {src}"))
            .collect();
        let _ = writeln!(
            o,
            "  contact {} created in HubSpot ({}) → {} in {} ms: {}{}, {} credits",
            c.contact_id,
            c.name,
            if c.written {
                "enriched and written back"
            } else {
                "NOT written back"
            },
            group(c.latency_ms),
            if vals.is_empty() {
                "no value found".to_string()
            } else {
                vals.join(", ")
            },
            c.status
                .as_deref()
                .map_or(String::new(), |s| format!(", status {s}")),
            c.credits
        );
    }
    let _ = writeln!(
        o,
        "  {} events about enrichd's own writes came back and were ignored (no loop) · {} deliveries, {} refused",
        group(wh.own_writes_ignored as u64),
        group(wh.deliveries as u64),
        wh.rejected
    );

    let a = &r.hubspot_api;
    let kinds: Vec<String> = a
        .by_kind
        .iter()
        .map(|(k, v)| format!("{k} {}", group(*v)))
        .collect();
    let _ = writeln!(
        o,
        "\nHubSpot API: {} calls ({}) · busiest 10 s: {} of {} allowed · busiest search second: {} of {} · {} answered 429 · {} token grants",
        group(a.calls),
        kinds.join(", "),
        a.busiest_10s,
        a.limit_10s,
        a.busiest_search_second,
        a.limit_search_per_second,
        a.rate_limited,
        a.token_grants
    );
    let _ = writeln!(
        o,
        "Provider API calls against their limits ({}× the documented limits):\n{}",
        r.limit_scale,
        provider_table(&r.provider_api)
    );
    let _ = writeln!(
        o,
        "Config used: {} · finished in {:.1} s.",
        shown_path(Path::new(&r.config), base),
        r.elapsed_secs
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(signed(-1200), "-1,200");
    }

    #[test]
    fn the_documented_config_is_pointed_at_the_simulators() {
        let text = include_str!("../../config.toml");
        let dir = Path::new("/somewhere");
        let mut providers = BTreeMap::new();
        providers.insert(
            "apollo".to_string(),
            (
                "http://127.0.0.1:1".to_string(),
                Limits {
                    per_minute: Some(10_000),
                    ..Limits::default()
                },
            ),
        );
        let to = DemoTargets {
            config_dir: dir,
            db: Path::new("/somewhere/.enrichd/demo.db"),
            port: 4242,
            workspace: "acme",
            hubspot_url: "http://127.0.0.1:2".into(),
            providers,
        };
        let d = derive_config(text, &to).expect("derive");
        let t: toml::Table = d.text.parse().expect("parses");
        assert_eq!(t["server"]["listen"].as_str(), Some("127.0.0.1:4242"));
        assert_eq!(
            t["storage"]["url"].as_str(),
            Some("sqlite:///somewhere/.enrichd/demo.db")
        );
        assert_eq!(
            t["providers"]["apollo"]["base_url"].as_str(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            t["providers"]["apollo"]["limits"]["per_minute"].as_integer(),
            Some(10_000)
        );
        let crm = &t["workspaces"][0]["crm"];
        assert_eq!(crm["api_url"].as_str(), Some("http://127.0.0.1:2"));
        assert_eq!(
            crm["mapping"].as_str(),
            Some("/somewhere/mappings/hubspot.toml")
        );
        assert_eq!(
            d.key_vars.get("apollo").map(String::as_str),
            Some("APOLLO_API_KEY")
        );
        assert_eq!(
            (
                d.client_id_var.as_str(),
                d.client_secret_var.as_str(),
                d.master_key_var.as_str()
            ),
            (
                "HUBSPOT_CLIENT_ID",
                "HUBSPOT_CLIENT_SECRET",
                "ENRICHD_MASTER_KEY"
            )
        );
    }
}

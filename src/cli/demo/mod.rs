//! `enrichd demo`: enrichd's main job end to end on one machine, against
//! simulators on loopback.
//!
//! With a CRM (`--crm hubspot` or `--crm salesforce`; by default the kind
//! of the workspace's `[workspaces.crm]`, HubSpot in the documented
//! config.toml): the provider simulators and a simulated HubSpot portal or
//! Salesforce org seeded with the population (some records already
//! carrying an email or phone a person typed; in Salesforce some Leads
//! converted), a config derived from config.toml pointing at them
//! (`.enrichd/demo.toml`), a fresh SQLite file (`.enrichd/demo.db`); then
//! the real connect flow (authorize redirect followed by an HTTP client
//! acting as the browser, loopback callback, token exchange with PKCE,
//! sealed tokens, the mapped fields checked), the daemon
//! (`crate::daemon::run`) in-process until its first sync pass has pulled,
//! enriched and written back every record, an edit and a creation in the
//! CRM that reach it as signed webhooks (HubSpot) or Outbound Messages
//! (Salesforce), a clean shutdown, and the report. `hubspot` and
//! `salesforce` hold what differs, this module what both run ([`drive`]),
//! `derive` the demo's config, `report` the report and its rendering.
//!
//! A workspace without a CRM (and no `--crm`) gets what the demo did
//! before: the simulated leads enriched from memory, and a re-run showing
//! that complete leads cost nothing.

mod derive;
mod hubspot;
mod report;
mod salesforce;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd_sim::{Population, ProviderKind, SimChannel, SimOptions, SimServer, Word};

use crate::clock::{Clock, SystemClock};
use crate::config::crm::CrmSettings;
use crate::config::{Secrets, Settings, Workspace};
use crate::core::channel::Channel;
use crate::core::lead::{Lead, LeadId};
use crate::core::mapping::Mapping;
use crate::core::status::EnrichmentStatus;
use crate::providers::def::{Account, Limits};
use crate::store::crm::StoredEvent;
use crate::store::{Store, StoredLead};

use super::{CliError, Format, print_report, run_with_progress, start_engine};
use derive::{CrmTarget, DemoTargets, DerivedConfig};
use report::{
    BeforeAfter, CreatedReport, CreditsReport, CrmSection, DemoReport, EditReport, HumanReport,
    ProviderLine, RecordView, group, provider_table, render, shown_path,
};

/// The CRM the demo simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrmChoice {
    Hubspot,
    Salesforce,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many simulated leads (HubSpot contacts or Salesforce Leads) to enrich.
    #[arg(long, default_value_t = 3000)]
    pub leads: usize,
    /// Seed of the simulated population (same seed, same people and answers).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Simulated provider accounts get this many times the documented rate
    /// limits so the demo finishes within a minute (1 = the real limits).
    /// The CRM always runs at its documented limits.
    #[arg(long, default_value_t = 10)]
    pub limit_scale: u32,
    /// The CRM to simulate (default: the kind of the workspace's
    /// [workspaces.crm]; HubSpot in the documented config.toml). Its
    /// [workspaces.crm] is replaced by one pointing at the simulator.
    #[arg(long, value_enum)]
    pub crm: Option<CrmChoice>,
}

/// People generated beyond the records: candidates for the record the demo
/// creates in the CRM (someone enrichd has not seen).
const EXTRA_PEOPLE: usize = 20;
/// Share of records whose work email a person already typed into `email`.
const TYPED_EMAIL_SHARE: f64 = 0.10;
/// One record in this many already has a phone a person typed.
const TYPED_PHONE_EVERY: usize = 12;
/// Simulated CRM latency per API call.
const CRM_LATENCY: Duration = Duration::from_millis(40);
/// How long the first sync pass may take before the demo gives up waiting.
const FIRST_PASS_LIMIT: Duration = Duration::from_secs(30 * 60);
/// How long a change notification may take to lead to a write.
const WEBHOOK_LIMIT: Duration = Duration::from_secs(60);

/// The first load of the config only learns which providers and workspace
/// there are: every secret it names resolves (long enough for any check
/// of its length).
struct AnyKey;

impl Secrets for AnyKey {
    fn get(&self, _name: &str) -> Option<String> {
        Some("demo-secret-0123456789abcdef0123456789".into())
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
    let crm = args.crm.or(match &ws.crm {
        Some(CrmSettings::HubSpot(_)) => Some(CrmChoice::Hubspot),
        Some(CrmSettings::Salesforce(_)) => Some(CrmChoice::Salesforce),
        None => None,
    });
    match crm {
        Some(CrmChoice::Hubspot) => {
            drive::<hubspot::HubSpotDemo>(config, args, &base, &ws, started).await
        }
        Some(CrmChoice::Salesforce) => {
            drive::<salesforce::SalesforceDemo>(config, args, &base, &ws, started).await
        }
        None => run_files(config, args, base, ws, started).await,
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
    let before = provider_requests(&sims);
    let sample: Vec<Lead> = leads.into_iter().take(100).collect();
    let again = engine.enrich(&ws, sample, Default::default()).await?;
    let after = provider_requests(&sims);
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

// ---------------------------------------------------------------- what both CRM demos run

/// The simulators' population and the provider simulators, before the CRM.
struct Prepared {
    /// The daemon's port.
    port: u16,
    show: bool,
    clock: Arc<dyn Clock>,
    population: Arc<Population>,
    /// Records seeded in the CRM (people `0..records`).
    records: usize,
    sims: BTreeMap<String, SimServer>,
    limits: BTreeMap<String, Limits>,
    config_dir: PathBuf,
    /// `.enrichd/`.
    dir: PathBuf,
    db: PathBuf,
}

impl Prepared {
    /// The population and the provider simulators, a fresh database, and
    /// the daemon's listener: its address is known before the CRM starts
    /// (the CRM sends its change notifications there).
    async fn start(
        config: &Path,
        args: &DemoArgs,
        base: &Settings,
    ) -> Result<(Prepared, tokio::net::TcpListener), CliError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let records = args.leads.max(1);
        let population = Arc::new(Population::generate(args.seed, records + EXTRA_PEOPLE));
        let (sims, limits) = start_providers(base, &population, args.limit_scale).await?;
        let config_dir = config_dir(config)?;
        let (dir, db) = fresh_db(&config_dir)?;
        let p = Prepared {
            port,
            show: args.format == Format::Table,
            clock: Arc::new(SystemClock),
            population,
            records,
            sims,
            limits,
            config_dir,
            dir,
            db,
        };
        Ok((p, listener))
    }

    fn targets<'a>(&'a self, workspace: &'a str, crm: CrmTarget) -> DemoTargets<'a> {
        DemoTargets {
            config_dir: &self.config_dir,
            db: &self.db,
            port: self.port,
            workspace,
            crm,
            providers: self
                .sims
                .iter()
                .filter_map(|(id, s)| Some((id.clone(), (s.base_url(), *self.limits.get(id)?))))
                .collect(),
        }
    }

    /// Writes `.enrichd/demo.toml`, loads it with the simulators' secrets
    /// (`crm_secrets`: the CRM app's client id and secret, the outbound
    /// token) and a new master key, and opens the fresh store.
    async fn load(
        self,
        config: &Path,
        crm_name: &str,
        derived: DerivedConfig,
        crm_secrets: [Option<String>; 3],
        workspace: &str,
    ) -> Result<Demo, CliError> {
        let demo_config = self.dir.join("demo.toml");
        let notes: String = derived.notes.iter().map(|n| format!("# {n}\n")).collect();
        std::fs::write(
            &demo_config,
            format!(
                "# Written by `enrichd demo` from {}: the same settings, with simulators\n\
                 # on loopback in place of {crm_name} and the providers, and a fresh database.\n\
                 # Secrets (simulator keys, the {crm_name} app, a new master key) come from the\n\
                 # demo, not from the environment.\n{notes}\n{}",
                config.display(),
                derived.text
            ),
        )?;
        let mut secrets: BTreeMap<String, String> = BTreeMap::new();
        for (id, var) in &derived.key_vars {
            if let Some(s) = self.sims.get(id) {
                secrets.insert(var.clone(), s.api_key().to_string());
            }
        }
        let vars = derived.crm_vars;
        for (var, value) in [
            Some(vars.client_id),
            Some(vars.client_secret),
            vars.outbound_token,
        ]
        .into_iter()
        .zip(crm_secrets)
        {
            if let (Some(var), Some(value)) = (var, value) {
                secrets.insert(var, value);
            }
        }
        secrets.insert(
            derived.master_key_var,
            crate::crypto::generate_key().map_err(|e| CliError::Usage(e.to_string()))?,
        );
        let settings = Arc::new(Settings::load(&demo_config, &secrets)?);
        let ws = super::pick_workspace(&settings, Some(workspace))?;
        let store = crate::store::open(&settings.storage_url).await?;
        store.migrate().await?;
        Ok(Demo {
            show: self.show,
            clock: self.clock,
            population: self.population,
            records: self.records,
            sims: self.sims,
            config_dir: self.config_dir,
            config: demo_config,
            db: self.db,
            notes: derived.notes,
            settings,
            ws,
            store,
        })
    }
}

/// What both CRM demos run with, once the config is derived.
struct Demo {
    show: bool,
    clock: Arc<dyn Clock>,
    population: Arc<Population>,
    records: usize,
    sims: BTreeMap<String, SimServer>,
    config_dir: PathBuf,
    config: PathBuf,
    db: PathBuf,
    notes: Vec<String>,
    settings: Arc<Settings>,
    ws: Arc<Workspace>,
    store: Arc<dyn Store>,
}

/// A value a person typed on a record before enrichd came.
struct Typed {
    id: String,
    property: String,
    channel: Channel,
    value: String,
}

/// `enrichd run` in-process.
struct Daemon {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), crate::daemon::DaemonError>>,
}

impl Daemon {
    fn spawn(d: &Demo, listener: tokio::net::TcpListener) -> Daemon {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::daemon::run(
            d.settings.clone(),
            d.store.clone(),
            d.clock.clone(),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Daemon { stop, task }
    }

    /// Stops it the way SIGTERM does.
    async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(20), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("warning: enrichd run stopped with an error: {e}"),
            Ok(Err(e)) => eprintln!("warning: enrichd run: {e}"),
            Err(_) => eprintln!("warning: enrichd run did not stop within 20 s"),
        }
    }
}

/// A CRM demo as the shared steps ([`drive`]) see it.
trait CrmDemo: Sized {
    /// The CRM's section of the report.
    type Section: CrmSection + Default;
    /// `hubspot`, `salesforce`.
    const NAME: &'static str;
    /// The simulated CRM seeded from the population, the derived config, a
    /// fresh store and the connection; the report's section with the
    /// connect step filled in.
    async fn start(
        config: &Path,
        p: Prepared,
        base_ws: &Workspace,
    ) -> Result<(Self, Self::Section), CliError>;
    fn demo(&self) -> &Demo;
    /// Records the first pass must pull.
    fn expected(&self) -> usize;
    /// Records the CRM saw written so far (the progress line).
    fn written_so_far(&self) -> u64;
    /// The stored leads once the first pass is over, else None.
    async fn first_pass_done(&self) -> Result<Option<Vec<Lead>>, CliError>;
    /// The first pass in the CRM's section (and on screen).
    fn first_pass(&self, pass: &FirstPass, section: &mut Self::Section);
    /// The workspace as the CRM's records are read (field names).
    fn view(&self) -> Arc<Workspace>;
    /// Lets the CRM deliver the change notifications it holds, then waits
    /// until the daemon has handled them.
    async fn flush(&self) -> Result<(), CliError>;
    /// A person edits a record enrichd completed.
    async fn edit(&self, view: &Workspace) -> Result<Option<EditReport>, CliError>;
    /// A person creates a record.
    async fn create(&self, view: &Workspace) -> Result<CreatedReport, CliError>;
    /// What the CRM and the store hold at the end.
    async fn tally(&self, report: &mut DemoReport<Self::Section>) -> Result<(), CliError>;
    /// Stops the CRM simulator.
    async fn shutdown(self) -> Demo;
}

/// A CRM demo from start to report: the simulators and the connection,
/// the daemon in-process until its first sync pass has pulled, enriched
/// and written back every record, an edit and a creation reaching it as
/// change notifications, a clean shutdown, the report.
async fn drive<D: CrmDemo>(
    config: &Path,
    args: DemoArgs,
    base: &Settings,
    base_ws: &Workspace,
    started: Instant,
) -> Result<(), CliError> {
    let (p, listener) = Prepared::start(config, &args, base).await?;
    let (demo, section) = D::start(config, p, base_ws).await?;
    let mut report = demo.demo().report(D::NAME, args.limit_scale, section);

    let mut daemon = Daemon::spawn(demo.demo(), listener);
    let pass = wait_first_pass(&demo, &mut daemon, demo.expected()).await?;
    demo.first_pass(&pass, &mut report.crm_report);
    let view = demo.view();
    let d = demo.demo();
    report.statuses = statuses(&*d.store, &view, &pass.leads, d.clock.now()).await?;
    // The echoes of the first pass's writes are handled before a person
    // edits anything.
    demo.flush().await?;
    report.webhooks.edit = demo.edit(&view).await?;
    report.webhooks.created = Some(demo.create(&view).await?);
    // The echo of the last write, then the daemon stops as on SIGTERM.
    demo.flush().await?;
    daemon.stop().await;

    demo.tally(&mut report).await?;
    demo.shutdown()
        .await
        .finish(report, args.format, started)
        .await;
    Ok(())
}

/// The first pass's leads, how long it took, and whether it finished.
struct FirstPass {
    leads: Vec<Lead>,
    secs: f64,
    complete: bool,
}

/// Waits for the daemon's first sync pass over `expected` records.
async fn wait_first_pass(
    d: &impl CrmDemo,
    daemon: &mut Daemon,
    expected: usize,
) -> Result<FirstPass, CliError> {
    let demo = d.demo();
    let started = Instant::now();
    let bar = if demo.show {
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
    while started.elapsed() < FIRST_PASS_LIMIT && !daemon.task.is_finished() {
        tokio::time::sleep(Duration::from_millis(400)).await;
        bar.set_message(format!(
            "enrichd run: first sync pass · {} records written back · {} provider calls",
            group(d.written_so_far()),
            group(provider_requests(&demo.sims))
        ));
        done = d.first_pass_done().await?;
        if done.is_some() {
            break;
        }
    }
    bar.finish_and_clear();
    if daemon.task.is_finished() {
        let why = match (&mut daemon.task).await {
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
            stored_leads(&*demo.store, &demo.ws).await?
        }
    };
    Ok(FirstPass {
        complete: leads.len() >= expected,
        leads,
        secs,
    })
}

impl Demo {
    /// Whether a first pass is over: the pull of `state_key` finished,
    /// `expected` leads are stored, and nothing enriched is left to write
    /// back (`pending` plans the writes; a lead whose write failed for good
    /// does not count).
    async fn pass_over<F, Fut>(
        &self,
        crm: &str,
        state_key: &str,
        expected: usize,
        pending: F,
    ) -> Result<Option<Vec<Lead>>, CliError>
    where
        F: FnOnce(Vec<Lead>) -> Fut,
        Fut: Future<Output = Result<Vec<LeadId>, CliError>>,
    {
        let ws = &self.ws.id;
        if !self
            .store
            .sync_state(ws, crm, state_key)
            .await?
            .backfill_done
        {
            return Ok(None);
        }
        let leads = stored_leads(&*self.store, &self.ws).await?;
        if leads.len() < expected {
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
        let pending = pending(leads.clone()).await?;
        if pending.iter().any(|id| !failed.contains(id)) {
            return Ok(None);
        }
        Ok(Some(leads))
    }

    /// A person changes the `last` name of the first of `ids` enrichd
    /// completed (its status field, as `read` shows the record, reads Full;
    /// `edit` makes the change in the simulator); waits until a new event
    /// `is_it` picks for that record is handled, and measures what it cost.
    /// None when no record is complete or the mapping writes no status.
    #[allow(clippy::too_many_arguments)]
    async fn edit_complete<R: RecordView>(
        &self,
        crm: &str,
        ids: &[String],
        read: impl Fn(&str) -> Option<R>,
        mapping: &Mapping,
        last: &str,
        edit: impl FnOnce(&str, &str) -> Result<(), CliError>,
        is_it: impl Fn(&StoredEvent) -> bool,
    ) -> Result<Option<EditReport>, CliError> {
        let Some(status) = mapping.status.as_ref().map(|r| r.field.as_str()) else {
            return Ok(None);
        };
        let full = EnrichmentStatus::Full.to_string();
        let Some((id, name)) = ids.iter().find_map(|id| {
            let r = read(id)?;
            if !r.text(status)?.eq_ignore_ascii_case(&full) {
                return None;
            }
            Some((id.clone(), r.text(last)?))
        }) else {
            return Ok(None);
        };
        let new_name = format!("{name}-Lindqvist");
        self.edit_and_wait(crm, &id, last, || edit(&id, &new_name), is_it)
            .await
            .map(Some)
    }

    /// A person edits `property` of record `id` (`edit` does it in the
    /// simulator); waits until a new event `is_it` picks for that record is
    /// handled. What it cost is measured around it.
    async fn edit_and_wait(
        &self,
        crm: &str,
        id: &str,
        property: &str,
        edit: impl FnOnce() -> Result<(), CliError>,
        is_it: impl Fn(&StoredEvent) -> bool,
    ) -> Result<EditReport, CliError> {
        let seen: BTreeSet<String> = self
            .store
            .events(&self.ws.id, crm)
            .await?
            .into_iter()
            .map(|e| e.event.dedupe_key)
            .collect();
        let calls_before = provider_requests(&self.sims);
        let credits_before = self.charged().await?.0;
        let t0 = Instant::now();
        edit()?;
        let lead = LeadId(id.to_string());
        let mut handled = false;
        while !handled && t0.elapsed() < WEBHOOK_LIMIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
            handled = self.store.events(&self.ws.id, crm).await?.iter().any(|e| {
                e.event.lead_id == lead
                    && !seen.contains(&e.event.dedupe_key)
                    && e.state != "pending"
                    && is_it(e)
            });
        }
        Ok(EditReport {
            record_id: id.to_string(),
            property: property.to_string(),
            handled,
            latency_ms: t0.elapsed().as_millis() as u64,
            provider_calls: provider_requests(&self.sims) - calls_before,
            credits: self.charged().await?.0 - credits_before,
            enrichd_writes: None,
        })
    }

    /// The person the demo adds to the CRM: not a record yet, in an
    /// audience needing a work email (as `view` sees `lead_of(i)`), and
    /// known to a provider of the work-email order with a verified address
    /// (so the effect shows).
    fn newcomer(&self, view: &Workspace, lead_of: impl Fn(usize) -> Lead) -> usize {
        let now = self.clock.now();
        let pop = &*self.population;
        let in_audience = |i: usize| {
            crate::engine::run::prepare(view, lead_of(i), StoredLead::default(), now)
                .configured
                .contains(Channel::WorkEmail)
        };
        let known = |i: usize| {
            view.order_for(Channel::WorkEmail)
                .iter()
                .filter_map(|acc| self.sims.get(acc))
                .any(|s| {
                    s.options()
                        .profile
                        .knows(pop, &s.options().name, i, SimChannel::WorkEmail)
                        .is_some_and(|k| k.word == Word::Verified)
                })
        };
        let range = self.records..pop.len();
        range
            .clone()
            .find(|&i| in_audience(i) && known(i))
            .or_else(|| range.clone().find(|&i| in_audience(i)))
            .unwrap_or(self.records)
    }

    /// Waits until `written` holds (the created record shows enrichd's
    /// write); whether it did, and how long it took from `t0`.
    async fn await_write(&self, t0: Instant, written: impl Fn() -> bool) -> (bool, Duration) {
        let mut ok = written();
        while !ok && t0.elapsed() < WEBHOOK_LIMIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
            ok = written();
        }
        (ok, t0.elapsed())
    }

    /// Waits (briefly) until no recorded event is pending.
    async fn settle_events(&self, crm: &str) -> Result<(), CliError> {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end
            && !self
                .store
                .pending_events(&self.ws.id, crm, 1)
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

    /// The report's frame: who, where, with what.
    fn report<C: Default>(
        &self,
        crm: &'static str,
        limit_scale: u32,
        crm_report: C,
    ) -> DemoReport<C> {
        DemoReport {
            workspace: self.ws.id.to_string(),
            crm,
            providers: self.sims.keys().cloned().collect(),
            limit_scale,
            database: self.db.display().to_string(),
            config: self.config.display().to_string(),
            crm_report,
            ..DemoReport::default()
        }
    }

    /// The headline printed before the run.
    fn headline(&self, what: &str) {
        if self.show {
            println!(
                "enrichd demo · workspace `{}` · {what} · providers {} · simulators on loopback · SQLite {}",
                self.ws.id,
                self.sims.keys().cloned().collect::<Vec<_>>().join(", "),
                shown_path(&self.db, &self.config_dir)
            );
            for n in &self.notes {
                println!("          {n}");
            }
        }
    }

    /// What the store and the provider simulators hold at the end:
    /// typed values (`current` reads one as the CRM holds it now),
    /// credits, events (`own` recognises an event about enrichd's own
    /// write), provider calls.
    async fn tally<C>(
        &self,
        report: &mut DemoReport<C>,
        crm: &str,
        typed: &[Typed],
        current: impl Fn(&Typed) -> Option<String>,
        own: impl Fn(&StoredEvent) -> bool,
    ) -> Result<(), CliError> {
        let (charged, period) = self.charged().await?;
        let ledger = self.store.ledger(&self.ws.id).await?;
        let charged_for: BTreeSet<(String, Channel)> = ledger
            .iter()
            .map(|e| (e.lead_id.as_str().to_string(), e.channel))
            .collect();
        let mut human = HumanReport::default();
        for t in typed {
            match t.channel {
                Channel::Phone => human.phones += 1,
                _ => human.emails += 1,
            }
            if current(t).as_deref() == Some(t.value.as_str()) {
                human.unchanged += 1;
            }
            if charged_for.contains(&(t.id.clone(), t.channel)) {
                human.charged += 1;
            }
        }
        report.human_typed = human;

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

        let events = self.store.events(&self.ws.id, crm).await?;
        for e in &events {
            *report.webhooks.events.entry(e.state.clone()).or_default() += 1;
        }
        report.webhooks.own_writes_ignored = events
            .iter()
            .filter(|e| e.state == "ignored" && own(e))
            .count();
        report.provider_api =
            provider_lines(&self.sims, &self.settings, &values_by_source, &spend_milli);
        Ok(())
    }

    /// Prints the report and stops the provider simulators.
    async fn finish<C: CrmSection>(
        self,
        mut report: DemoReport<C>,
        format: Format,
        started: Instant,
    ) {
        report.elapsed_secs = started.elapsed().as_secs_f64();
        for (_, s) in self.sims {
            s.shutdown().await;
        }
        match format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&report)
                    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            ),
            Format::Table => print!("{}", render(&report, &self.config_dir)),
        }
    }
}

/// The field the created record shows enrichd's write by: the status
/// (written with the values, in one update), else the first channel's.
fn marker_field(mapping: &crate::core::mapping::Mapping) -> String {
    mapping
        .status
        .as_ref()
        .or_else(|| mapping.channels.values().next().map(|r| &r.value))
        .map(|r| r.field.clone())
        .unwrap_or_default()
}

/// `Ada Lovelace, VP Sales at Analytical`.
fn person_name(p: &enrichd_sim::Person) -> String {
    format!(
        "{} {}, {} at {}",
        p.first_name, p.last_name, p.job_title, p.company_name
    )
}

/// The token cipher of the demo's (generated) master key.
fn cipher(settings: &Settings) -> Result<crate::crypto::TokenCipher, CliError> {
    let key = settings
        .master_key
        .as_ref()
        .ok_or_else(|| CliError::Usage("the demo's master key is missing".into()))?;
    crate::crypto::TokenCipher::from_key_text(&settings.master_key_env, key.expose())
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// The demo's browser: follows the authorize URL (the simulated consent
/// page approves at once and redirects to enrichd's loopback callback).
async fn browser(url: String) {
    match reqwest::Client::new().get(&url).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => eprintln!("demo browser: the callback page answered {}", r.status()),
        Err(e) => eprintln!("demo browser: {e}"),
    }
}

/// Whether the stored connection holds sealed access and refresh tokens.
async fn tokens_sealed(d: &Demo, crm: &str) -> Result<bool, CliError> {
    Ok(d.store
        .connection(&d.ws.id, crm)
        .await?
        .is_some_and(|c| c.sealed_access.is_some() && c.sealed_refresh.is_some()))
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

/// Status before (only what the record held) and after (with what
/// enrichd stored) of each lead, as `ws` (the CRM's view of the
/// workspace) sees it.
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

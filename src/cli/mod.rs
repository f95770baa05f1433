//! The `enrichd` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::clock::SystemClock;
use crate::config::{ConfigError, EnvSecrets, Settings};
use crate::engine::report::RunReport;
use crate::engine::{Engine, EngineError, EngineOptions, RunOptions};

mod apikey;
mod bulk;
mod check;
mod crm;
mod demo;
pub mod input;
pub mod output;
mod preview;
mod status;

#[derive(Debug, Parser)]
#[command(
    name = "enrichd",
    version,
    about = "Fills the contact channels your CRM leads are missing, through a waterfall of enrichment providers, and records who supplied each value."
)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "config.toml",
        env = "ENRICHD_CONFIG"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration, connector and mapping files, and each
    /// connected CRM's schema against its mapping; print what is configured.
    Check(check::CheckArgs),
    /// Apply the database migrations.
    Migrate(MigrateArgs),
    /// Enrich the leads in a CSV, JSON or JSON Lines file.
    Enrich(EnrichArgs),
    /// Run enrichd end to end against local simulators of HubSpot (or
    /// Salesforce with --crm salesforce) and the providers, on a fresh
    /// SQLite file: connect, sync, change notifications, a report.
    Demo(demo::DemoArgs),
    /// Connect a workspace to its CRM (OAuth in the browser, or a private-app token).
    Connect(crm::ConnectArgs),
    /// Pull changed leads from the CRM, enrich them and write the values back.
    Sync(crm::SyncArgs),
    /// Show, per lead and field, what enrichd would write to the CRM and why
    /// (and with --estimate what enriching the rest would cost), without
    /// writing, calling a provider or spending a credit.
    Preview(preview::PreviewArgs),
    /// Print a new master key for encrypting CRM tokens at rest.
    Keygen,
    /// Create, list or revoke a workspace's admin API keys (for /v1/...).
    #[command(name = "apikey")]
    ApiKey(apikey::ApiKeyArgs),
    /// Re-enrich a selection of leads (ids, an audience or a CRM filter) as a
    /// durable bulk job, with a progress bar.
    Bulk(bulk::BulkArgs),
    /// Per workspace: CRM connection and sync, coverage per audience,
    /// credits, the job queue and its dead letters.
    Status(status::StatusArgs),
    /// The daemon: webhooks, scheduled syncs and enrichment until SIGTERM or
    /// SIGINT (logs as JSON on stderr).
    Run,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// List the migrations that would be applied, and apply none.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct EnrichArgs {
    /// Leads: .csv (header row with an `id` column), .json (array) or .jsonl.
    #[arg(required_unless_present = "pending")]
    pub file: Option<PathBuf>,
    /// Enrich the stored leads waiting for budget (highest ICP first) and
    /// those deferred whose retry time has come, instead of a file.
    #[arg(long, conflicts_with = "file")]
    pub pending: bool,
    /// With --pending: at most this many leads.
    #[arg(long, default_value_t = 10_000)]
    pub limit: u32,
    /// Workspace id (default: the first in the config).
    #[arg(long, short)]
    pub workspace: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Print which providers would be asked for each lead and what it would
    /// cost, instead of enriching (nothing is stored, called or charged).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Input(#[from] input::InputError),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Crm(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Input(_) | CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub async fn main(cli: Cli) -> ExitCode {
    let res = match cli.command {
        Command::Check(args) => check::run(&cli.config, args).await,
        Command::Migrate(args) => migrate(&cli.config, args).await,
        Command::Enrich(args) => enrich(&cli.config, args).await,
        Command::Demo(args) => demo::run(&cli.config, args).await,
        Command::Connect(args) => crm::connect(&cli.config, args).await,
        Command::Sync(args) => crm::sync(&cli.config, args).await,
        Command::Preview(args) => preview::run(&cli.config, args).await,
        Command::Keygen => crm::keygen(),
        Command::ApiKey(args) => apikey::run(&cli.config, args).await,
        Command::Run => run(&cli.config).await,
        Command::Status(args) => status::run(&cli.config, args).await,
        Command::Bulk(args) => bulk::run(&cli.config, args).await,
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(config: &Path) -> Result<(), CliError> {
    use crate::daemon::DaemonError;
    let settings = Arc::new(Settings::load(config, &EnvSecrets)?);
    // SQLite: one `enrichd run` per file, the lock held until this returns
    // (other commands take none: store::lockfile). PostgreSQL: no lock;
    // replicas migrate under sqlx's advisory lock.
    let (store, single_process) = crate::store::open_exclusive(&settings.storage_url).await?;
    if let Some(lock) = &single_process {
        tracing::info!(lock = %lock.path().display(), "holding the SQLite single-process lock");
    }
    store.migrate().await?;
    let daemon_err = |e: DaemonError| match e {
        DaemonError::NoListen { .. } => CliError::Usage(e.to_string()),
        e => CliError::Crm(e.to_string()),
    };
    let listener = crate::daemon::bind(&settings).await.map_err(daemon_err)?;
    crate::daemon::run(
        settings,
        store,
        Arc::new(SystemClock),
        listener,
        shutdown_signal(),
    )
    .await
    .map_err(daemon_err)
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn migrate(config: &Path, args: MigrateArgs) -> Result<(), CliError> {
    let s = Settings::load(config, &EnvSecrets)?;
    let store = crate::store::open(&s.storage_url).await?;
    if args.dry_run {
        let pending = store.pending_migrations().await?;
        if pending.is_empty() {
            println!(
                "{} is up to date: nothing to apply",
                redact_url(&s.storage_url)
            );
        } else {
            println!(
                "dry run: {} migration(s) would be applied to {}:",
                pending.len(),
                redact_url(&s.storage_url)
            );
            for m in pending {
                println!("  {m}");
            }
        }
        return Ok(());
    }
    store.migrate().await?;
    println!("migrations applied to {}", redact_url(&s.storage_url));
    Ok(())
}

async fn enrich(config: &Path, args: EnrichArgs) -> Result<(), CliError> {
    let settings = Arc::new(Settings::load(config, &EnvSecrets)?);
    let ws = pick_workspace(&settings, args.workspace.as_deref())?;
    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let leads = match &args.file {
        Some(file) => {
            let loaded = input::read_leads(file)?;
            for p in &loaded.problems {
                eprintln!("warning: {}: {p} (skipped)", file.display());
            }
            loaded.leads
        }
        None => pending_leads(&*store, &ws.id, args.limit).await?,
    };
    if args.dry_run {
        use crate::clock::Clock;
        let opts = crate::preview::run::Options {
            estimate: true,
            ..Default::default()
        };
        let mut pv = crate::preview::run::Previewer::new(
            &settings,
            &ws,
            None,
            &*store,
            &opts,
            SystemClock.now(),
        )
        .await?;
        for chunk in leads.chunks(500) {
            pv.add(chunk.to_vec()).await?;
        }
        return preview::print(&pv.finish(), args.format.into());
    }
    let (engine, _server) = start_engine(settings.clone(), store).await?;
    let progress = args.format == Format::Table && !args.no_progress;
    let report = run_with_progress(&engine, &ws, leads, progress).await?;
    print_report(&report, args.format);
    Ok(())
}

/// Stored leads queued for budget (highest ICP first), then deferred ones
/// whose retry time has come.
async fn pending_leads(
    store: &dyn crate::store::Store,
    ws: &crate::core::lead::WorkspaceId,
    limit: u32,
) -> Result<Vec<crate::core::lead::Lead>, CliError> {
    use crate::clock::Clock;
    use crate::store::LeadState;
    let now = SystemClock.now();
    let mut ids = store
        .leads_in_state(ws, LeadState::Queued, i64::MAX, limit)
        .await?;
    let left = limit.saturating_sub(u32::try_from(ids.len()).unwrap_or(u32::MAX));
    ids.extend(
        store
            .leads_in_state(ws, LeadState::Deferred, now, left)
            .await?,
    );
    let mut leads = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(l) = store.get_lead(ws, id).await? {
            leads.push(l);
        }
    }
    Ok(leads)
}

pub(crate) fn pick_workspace(
    s: &Settings,
    id: Option<&str>,
) -> Result<Arc<crate::config::Workspace>, CliError> {
    match id {
        Some(id) => s.workspace(id).cloned().ok_or_else(|| {
            let known: Vec<&str> = s.workspaces.iter().map(|w| w.id.as_str()).collect();
            CliError::Usage(format!(
                "unknown workspace `{id}` (configured: {})",
                known.join(", ")
            ))
        }),
        None => s
            .workspaces
            .first()
            .cloned()
            .ok_or_else(|| CliError::Usage("no workspace configured".into())),
    }
}

/// Starts the engine and, when configured, the callback server.
pub(crate) async fn start_engine(
    settings: Arc<Settings>,
    store: Arc<dyn crate::store::Store>,
) -> Result<(Arc<Engine>, Option<tokio::task::JoinHandle<()>>), CliError> {
    let listener = match settings.listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            CliError::Usage(format!("cannot listen on {addr} (server.listen): {e}; change server.listen or stop the other process"))
        })?),
        None => None,
    };
    let callback_base = match (&listener, &settings.public_url) {
        (Some(_), Some(u)) => Some(u.clone()),
        (Some(l), None) => l.local_addr().ok().map(|a| format!("http://{a}")),
        _ => None,
    };
    let engine = Arc::new(Engine::new(
        settings,
        store,
        Arc::new(SystemClock),
        EngineOptions {
            callback_base,
            ..EngineOptions::default()
        },
    )?);
    let server = listener.map(|l| {
        let app = crate::engine::callbacks::router(engine.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::error!(error = %e, "callback server stopped");
            }
        })
    });
    Ok((engine, server))
}

pub(crate) async fn run_with_progress(
    engine: &Arc<Engine>,
    ws: &Arc<crate::config::Workspace>,
    leads: Vec<crate::core::lead::Lead>,
    progress: bool,
) -> Result<RunReport, CliError> {
    let bar = if progress && leads.len() > 1 {
        let pb = indicatif::ProgressBar::new(leads.len() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} leads [{bar:40}] {per_sec} · eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };
    let pb = bar.clone();
    let opts = RunOptions {
        progress: Some(Arc::new(move |_r| pb.inc(1))),
    };
    let report = engine.enrich(ws, leads, opts).await?;
    bar.finish_and_clear();
    Ok(report)
}

pub(crate) fn print_report(r: &RunReport, format: Format) {
    match format {
        Format::Table => print!("{}", output::render_table(r)),
        Format::Json => println!("{}", output::render_json(r)),
    }
}

/// A database URL without its password.
pub fn redact_url(u: &str) -> String {
    match (u.find("://"), u.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &u[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &u[..s + 3], &u[at..]),
                None => u.to_string(),
            }
        }
        _ => u.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact_url("sqlite:///x.db"), "sqlite:///x.db");
    }
}

//! `enrichd bulk`: re-enrich a selection of leads (ids, an audience, or a
//! CRM filter) as a durable bulk job, with a progress bar. The job goes
//! into the same queue `enrichd run` and the admin API use; this command
//! works it itself (so it needs no daemon) unless a running daemon claims
//! it first — either way the bar follows the job's progress and the result
//! is printed when it ends. The workspace's `notify_url` is told too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::clock::{Clock, SystemClock};
use crate::config::{EnvSecrets, Settings};
use crate::crm::hubspot::sync::HubSpot;
use crate::daemon::admin::{BulkBody, bulk_selection};
use crate::daemon::worker::{BULK, Workers};
use crate::store::jobs::{JobSpec, JobState};

use super::{CliError, Format};

#[derive(Debug, clap::Args)]
pub struct BulkArgs {
    /// Workspace id (default: the first in the config).
    #[arg(long, short)]
    pub workspace: Option<String>,
    /// Lead ids (CRM record ids); repeat or separate with commas.
    #[arg(long = "id", value_delimiter = ',', conflicts_with_all = ["ids_file", "audience", "filter"])]
    pub ids: Vec<String>,
    /// A file with one lead id per line.
    #[arg(long, conflicts_with_all = ["audience", "filter"])]
    pub ids_file: Option<PathBuf>,
    /// Every stored lead in this audience.
    #[arg(long, conflicts_with = "filter")]
    pub audience: Option<String>,
    /// A CRM search, as JSON: `[{"property": "lifecyclestage", "operator":
    /// "EQ", "value": "lead"}]`.
    #[arg(long)]
    pub filter: Option<String>,
    /// Queue the job for `enrichd run` and return at once.
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

const EXAMPLE: &str = r#"--id 51,52, --audience <name> or --filter '[{"property": "lifecyclestage", "operator": "EQ", "value": "lead"}]'"#;

pub(crate) async fn run(config: &Path, args: BulkArgs) -> Result<(), CliError> {
    let settings = Arc::new(Settings::load(config, &EnvSecrets)?);
    let ws = super::pick_workspace(&settings, args.workspace.as_deref())?;
    let mut ids: Vec<serde_json::Value> = args
        .ids
        .iter()
        .map(|s| serde_json::Value::String(s.trim().to_string()))
        .collect();
    if let Some(f) = &args.ids_file {
        let text = std::fs::read_to_string(f).map_err(|e| {
            CliError::Usage(format!("cannot read the ids file {}: {e}", f.display()))
        })?;
        ids.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| serde_json::Value::String(l.to_string())),
        );
    }
    let filter = match &args.filter {
        Some(text) => Some(serde_json::from_str(text).map_err(|e| {
            CliError::Usage(format!(
                "--filter is not a valid filter list ({e}); e.g. {EXAMPLE}"
            ))
        })?),
        None => None,
    };
    let body = BulkBody {
        ids: (!ids.is_empty() || args.ids_file.is_some()).then_some(ids),
        audience: args.audience.clone(),
        filter,
    };
    let (selection, dedupe) = bulk_selection(&ws, body, EXAMPLE).map_err(CliError::Usage)?;
    let payload = serde_json::to_value(&selection).map_err(|e| CliError::Usage(e.to_string()))?;

    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (id, created) = store
        .enqueue(
            &ws.id,
            &JobSpec::new(BULK, payload).dedupe(dedupe),
            clock.now(),
        )
        .await?;
    eprintln!(
        "bulk job {id} in workspace {}{}",
        ws.id,
        if created {
            " queued"
        } else {
            ": the same selection is already queued or running"
        }
    );
    if args.no_wait {
        if args.format == Format::Json {
            println!("{}", serde_json::json!({"job_id": id, "created": created}));
        }
        return Ok(());
    }

    // Work the queue here until this job ends (a daemon may take it first).
    let (engine, _server) = super::start_engine(settings.clone(), store.clone()).await?;
    let mut hubs = BTreeMap::new();
    if let Some(h) = HubSpot::open(&settings, &ws, store.clone(), clock.clone())
        .map_err(|e| CliError::Crm(e.to_string()))?
    {
        hubs.insert(ws.id.clone(), Arc::new(h));
    }
    let workers = Arc::new(Workers::new(
        settings.clone(),
        store.clone(),
        clock.clone(),
        engine,
        hubs,
        Arc::new(Notify::new()),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = tokio::spawn(workers.run(stop_rx, settings.shutdown_grace));

    let bar = if args.format == Format::Table && !args.no_progress {
        let pb = indicatif::ProgressBar::new(0);
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
    let job = loop {
        let Some(job) = store.job_by_id(&ws.id, id).await? else {
            return Err(CliError::Usage(format!("job {id} vanished from the queue")));
        };
        if job.progress_total > 0 {
            bar.set_length(u64::try_from(job.progress_total).unwrap_or(0));
            bar.set_position(u64::try_from(job.progress_done).unwrap_or(0));
        }
        bar.set_message(match (&job.state, job.attempts) {
            (JobState::Queued, a) if a > 0 => format!("retrying: {}", job.last_error),
            (JobState::Queued, _) => "queued".into(),
            _ => String::new(),
        });
        if !job.state.is_open() {
            break job;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = tokio::signal::ctrl_c() => {
                bar.abandon_with_message("interrupted: the job stays queued and resumes with `enrichd run` or the next `enrichd bulk`");
                let _ = stop_tx.send(true);
                let _ = worker.await;
                return Ok(());
            }
        }
    };
    bar.finish_and_clear();
    let _ = stop_tx.send(true);
    let _ = worker.await;
    let view = crate::daemon::admin::job_json(&job);
    match args.format {
        Format::Json => println!("{view}"),
        Format::Table => {
            println!("bulk job {id}: {}", job.state);
            if let Some(r) = &job.result {
                for (k, v) in r.as_object().into_iter().flatten() {
                    println!("  {k}: {v}");
                }
            }
            if job.state == JobState::Dead {
                println!("  gave up: {}", job.last_error);
            }
        }
    }
    if job.state == JobState::Dead {
        return Err(CliError::Crm(format!(
            "bulk job {id} failed after {} attempts: {}",
            job.attempts, job.last_error
        )));
    }
    Ok(())
}

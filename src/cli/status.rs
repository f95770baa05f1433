//! `enrichd status`: per workspace, the CRM connection and sync, coverage
//! (Full / Partial / Empty) per audience, credits in the budget period, the
//! job queue with its dead letters and their reasons, webhook events still
//! pending, and write-back failures. Reads only.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::config::crm::CrmSettings;
use crate::config::{EnvSecrets, Settings, Workspace};
use crate::core::lead::LeadId;
use crate::core::ledger::{available, period_key};
use crate::engine::run::prepare;
use crate::store::Store;
use crate::store::jobs::JobState;

use super::{CliError, Format};

/// Leads read per store round trip for the coverage count.
const PAGE: i64 = 1_000;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this workspace (default: all).
    #[arg(long, short)]
    pub workspace: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Default, Serialize)]
struct Coverage {
    full: u64,
    partial: u64,
    empty: u64,
}

#[derive(Debug, Serialize)]
struct Crm {
    crm: String,
    state: String,
    reason: String,
    last_sync_at: Option<i64>,
    watermark: Option<i64>,
    last_error: Option<String>,
    backfill_done: bool,
    pending_events: usize,
}

#[derive(Debug, Serialize)]
struct DeadJob {
    id: i64,
    kind: String,
    attempts: u32,
    reason: String,
}

#[derive(Debug, Serialize)]
struct WorkspaceStatus {
    workspace: String,
    enrichment: &'static str,
    crm: Option<Crm>,
    leads: u64,
    /// Audience → coverage of its members.
    coverage: BTreeMap<String, Coverage>,
    /// Leads in no audience (not enriched).
    in_no_audience: u64,
    period: Option<String>,
    credits_limit: Option<i64>,
    credits_charged: i64,
    credits_reserved: i64,
    credits_available: Option<i64>,
    /// kind → state → jobs.
    queue: BTreeMap<String, BTreeMap<String, i64>>,
    dead_letters: Vec<DeadJob>,
    write_failures: usize,
}

pub(crate) async fn run(config: &Path, args: StatusArgs) -> Result<(), CliError> {
    let settings = Arc::new(Settings::load(config, &EnvSecrets)?);
    let store = crate::store::open(&settings.storage_url).await?;
    store.migrate().await?;
    let workspaces: Vec<Arc<Workspace>> = match &args.workspace {
        Some(id) => vec![super::pick_workspace(&settings, Some(id))?],
        None => settings.workspaces.clone(),
    };
    let now = SystemClock.now();
    let mut out = Vec::new();
    for ws in &workspaces {
        out.push(workspace_status(&*store, ws, now).await?);
    }
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&out).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        ),
        Format::Table => print!("{}", table(&out)),
    }
    Ok(())
}

async fn workspace_status(
    store: &dyn Store,
    ws: &Arc<Workspace>,
    now: i64,
) -> Result<WorkspaceStatus, CliError> {
    let crm = match &ws.crm {
        Some(CrmSettings::HubSpot(_)) => {
            let c = store.connection(&ws.id, "hubspot").await?;
            let s = store.sync_state(&ws.id, "hubspot", "contacts").await?;
            let pending = store.pending_events(&ws.id, "hubspot", 10_000).await?.len();
            Some(Crm {
                crm: "hubspot".into(),
                state: c
                    .as_ref()
                    .map_or("not connected".into(), |c| c.state.as_str().to_string()),
                reason: c.map(|c| c.reason).unwrap_or_default(),
                last_sync_at: s.last_sync_at,
                watermark: s.watermark,
                last_error: s.last_error,
                backfill_done: s.backfill_done,
                pending_events: pending,
            })
        }
        Some(CrmSettings::Salesforce(sf)) => {
            let name = crate::crm::salesforce::CRM;
            let object = sf.objects.first().map_or("Lead", |o| o.object.as_str());
            let c = store.connection(&ws.id, name).await?;
            let s = store.sync_state(&ws.id, name, object).await?;
            let pending = store.pending_events(&ws.id, name, 10_000).await?.len();
            Some(Crm {
                crm: name.into(),
                state: c
                    .as_ref()
                    .map_or("not connected".into(), |c| c.state.as_str().to_string()),
                reason: c.map(|c| c.reason).unwrap_or_default(),
                last_sync_at: s.last_sync_at,
                watermark: s.watermark,
                last_error: s.last_error,
                backfill_done: s.backfill_done,
                pending_events: pending,
            })
        }
        None => None,
    };

    // Coverage per audience, from the stored leads and values, with the
    // audiences as configured now.
    let mut coverage: BTreeMap<String, Coverage> = ws
        .audiences
        .iter()
        .map(|a| (a.name.clone(), Coverage::default()))
        .collect();
    let (mut leads, mut in_no_audience) = (0u64, 0u64);
    let mut after: Option<LeadId> = None;
    loop {
        let page = store.lead_page(&ws.id, after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let n = page.len();
        let ids: Vec<LeadId> = page.iter().map(|l| l.id.clone()).collect();
        let mut stored = store.load_leads(&ws.id, &ids).await?;
        for lead in page {
            leads += 1;
            let s = stored.remove(&lead.id).unwrap_or_default();
            let p = prepare(ws, lead, s, now);
            if p.audiences.is_empty() {
                in_no_audience += 1;
            }
            for a in &p.audiences {
                let c = coverage.entry(a.clone()).or_default();
                match p.status_before {
                    Some(crate::core::status::EnrichmentStatus::Full) => c.full += 1,
                    Some(crate::core::status::EnrichmentStatus::Partial) => c.partial += 1,
                    _ => c.empty += 1,
                }
            }
        }
        if (n as i64) < PAGE {
            break;
        }
    }

    let (period, limit, charged, reserved, avail) = match ws.budget {
        Some(b) => {
            let key = period_key(b.period, now);
            let row = store.budget(&ws.id, &key).await?;
            (
                Some(key),
                Some(b.credits),
                row.charged,
                row.reserved,
                available(Some(b.credits), row.charged, row.reserved),
            )
        }
        None => (None, None, store.totals(&ws.id).await?.credits, 0, None),
    };
    let mut queue: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (kind, state, n) in store.job_counts(&ws.id).await? {
        queue
            .entry(kind)
            .or_default()
            .insert(state.as_str().to_string(), n);
    }
    let dead_letters = store
        .jobs(&ws.id, Some(JobState::Dead), 20)
        .await?
        .into_iter()
        .map(|j| DeadJob {
            id: j.id,
            kind: j.kind,
            attempts: j.attempts,
            reason: j.last_error,
        })
        .collect();
    let write_failures = store
        .write_outcomes(&ws.id)
        .await?
        .iter()
        .filter(|o| o.state == "failed")
        .count();
    Ok(WorkspaceStatus {
        workspace: ws.id.to_string(),
        enrichment: if ws.enabled { "on" } else { "off" },
        crm,
        leads,
        coverage,
        in_no_audience,
        period,
        credits_limit: limit,
        credits_charged: charged,
        credits_reserved: reserved,
        credits_available: avail,
        queue,
        dead_letters,
        write_failures,
    })
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or("never".into(), |t| {
            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        })
}

fn table(all: &[WorkspaceStatus]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for w in all {
        let _ = writeln!(
            out,
            "workspace {} · enrichment {} · {} leads stored",
            w.workspace, w.enrichment, w.leads
        );
        match &w.crm {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  {}: {}{} · last sync {}{} · {} webhook events pending",
                    c.crm,
                    c.state,
                    if c.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", c.reason)
                    },
                    when(c.last_sync_at),
                    match &c.last_error {
                        Some(e) => format!(" (failed: {e})"),
                        None if !c.backfill_done => " (backfill not finished)".into(),
                        None => String::new(),
                    },
                    c.pending_events
                );
            }
            None => {
                let _ = writeln!(out, "  no CRM configured");
            }
        }
        for (a, c) in &w.coverage {
            let _ = writeln!(
                out,
                "  audience {a}: {} Full · {} Partial · {} Empty",
                c.full, c.partial, c.empty
            );
        }
        if w.in_no_audience > 0 {
            let _ = writeln!(
                out,
                "  {} leads in no audience (not enriched)",
                w.in_no_audience
            );
        }
        match (&w.period, w.credits_limit) {
            (Some(p), Some(l)) => {
                let _ = writeln!(
                    out,
                    "  credits {p}: {} charged, {} reserved of {l}{}",
                    w.credits_charged,
                    w.credits_reserved,
                    w.credits_available
                        .map_or(String::new(), |a| format!(" · {a} available"))
                );
            }
            _ => {
                let _ = writeln!(out, "  credits: {} charged (no budget)", w.credits_charged);
            }
        }
        if w.queue.is_empty() {
            let _ = writeln!(out, "  queue: empty");
        }
        for (kind, states) in &w.queue {
            let parts: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
            let _ = writeln!(out, "  queue {kind}: {}", parts.join(", "));
        }
        for d in &w.dead_letters {
            let _ = writeln!(
                out,
                "  dead letter: job {} ({}) after {} attempts: {}",
                d.id, d.kind, d.attempts, d.reason
            );
        }
        if w.write_failures > 0 {
            let _ = writeln!(out, "  {} leads failed to write back", w.write_failures);
        }
    }
    out
}

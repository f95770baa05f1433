//! The job workers of `enrichd run`: durable `enrich_lead` and `bulk` jobs
//! (enqueued by the admin API, `crate::daemon::admin`) claimed from the job
//! queue (`crate::store::jobs`) and run against the CRM and the engine.
//!
//! * **One dispatcher, a few slots.** One loop per process claims jobs for
//!   its free slots under one worker id (host/pid/random: unique per
//!   process), waking when the admin API enqueues and polling otherwise
//!   (jobs enqueued by another replica). One slot is kept for `enrich_lead`
//!   so "enrich this lead now" never waits behind bulk jobs.
//! * **Leases, no lock across a remote call.** A claim is one statement;
//!   the job then runs holding only its lease, extended by a heartbeat. A
//!   job whose heartbeat is refused belongs to another worker now (its lease
//!   lapsed): it is dropped without touching the row.
//! * **Retries.** An error fails the attempt with a jittered exponential
//!   backoff (`core::jobs::retry_delay`); the queue moves the job to `dead`
//!   after its last attempt. Jobs are idempotent: a retried bulk job starts
//!   over, and what was enriched and written already is neither charged nor
//!   written again (the engine and the mapping make both no-ops).
//! * **Shutdown.** On stop no new job is claimed; a bulk job stops at its
//!   next chunk and is released (back to queued, the attempt given back);
//!   whatever is still running when the drain time is over is cancelled and
//!   released, so the next start (or another replica) picks it up.
//! * **Notifications.** When a bulk job finishes (or gives up), the
//!   workspace's `notify_url` gets `{"text": "..."}` (Slack-compatible). A
//!   failed notification is logged and never fails the job; the URL is a
//!   secret and never logged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::{Settings, Workspace};
use crate::core::jobs::retry_at;
use crate::core::lead::{Lead, LeadId, WorkspaceId};
use crate::crm::hubspot::HubSpotError;
use crate::crm::hubspot::client::Method;
use crate::crm::hubspot::limits::BucketKind;
use crate::crm::hubspot::pull::{SEARCH_CAP, SEARCH_PAGE, parse_results};
use crate::crm::hubspot::sync::HubSpot;
use crate::engine::{Engine, RunOptions};
use crate::store::jobs::Job;
#[cfg(test)]
use crate::store::jobs::JobState;
use crate::store::{LeadState, Store};

/// Job kind: enrich one lead now (payload `{"lead_id": "..."}`).
pub const ENRICH_LEAD: &str = "enrich_lead";
/// Job kind: enrich a selection of leads (payload: a [`Selection`]).
pub const BULK: &str = "bulk";

/// Jobs run at once by one process (one of them only for `enrich_lead`).
const SLOTS: usize = 4;
/// How long a claim lasts without a heartbeat.
const LEASE: Duration = Duration::from_secs(60);
/// How often a running job extends its lease.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// How often the queue is looked at when nothing woke the dispatcher.
const POLL: Duration = Duration::from_secs(1);
/// After a failed claim (database unavailable), wait this long.
const CLAIM_RETRY: Duration = Duration::from_secs(5);
/// Leads per bulk chunk: read, enriched, written back, then progress.
pub const CHUNK: usize = 250;
/// Leads read per CRM batch read.
const READ_BATCH: usize = 100;
/// Retry backoff of a failed attempt: from half of this...
const RETRY_BASE_MS: i64 = 10_000;
/// ...to at most this.
const RETRY_CAP_MS: i64 = 600_000;
/// A notification that takes longer is given up (and logged).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// HubSpot's contact search endpoint.
const SEARCH_PATH: &str = "/crm/v3/objects/contacts/search";

/// Which leads a bulk job enriches. Stored as the job's payload, in the
/// shape the admin API takes: `{"ids": [...]}`, `{"audience": "..."}` or
/// `{"filter": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// CRM record ids.
    Ids(Vec<String>),
    /// Stored leads that are members of this audience.
    Audience(String),
    /// A HubSpot contact search: these conditions, all of them (AND).
    Filter(Vec<FilterRule>),
}

/// One HubSpot search filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterRule {
    pub property: String,
    /// `EQ`, `NEQ`, `LT`, `LTE`, `GT`, `GTE`, `BETWEEN`, `IN`, `NOT_IN`,
    /// `HAS_PROPERTY`, `NOT_HAS_PROPERTY`, `CONTAINS_TOKEN`, `NOT_CONTAINS_TOKEN`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `BETWEEN`'s upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_value: Option<String>,
    /// `IN` / `NOT_IN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

impl FilterRule {
    /// The filter as HubSpot's search takes it.
    fn to_hubspot(&self) -> Value {
        let mut f = json!({"propertyName": self.property, "operator": self.operator});
        if let Some(v) = &self.value {
            f["value"] = json!(v);
        }
        if let Some(v) = &self.high_value {
            f["highValue"] = json!(v);
        }
        if let Some(v) = &self.values {
            f["values"] = json!(v);
        }
        f
    }
}

/// How a job attempt ended.
enum Outcome {
    /// Finished: complete with this result.
    Done(Value),
    /// This attempt failed (retried with backoff, or dead at the last one).
    Failed(String),
    /// Stopping: give the job back.
    Released,
    /// The job is no longer this worker's (its lease lapsed): leave it.
    Lost,
}

/// Everything the workers need, shared by the dispatcher and its jobs.
pub struct Workers {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub engine: Arc<Engine>,
    /// The HubSpot connector of each workspace that has one.
    pub hubs: BTreeMap<WorkspaceId, Arc<HubSpot>>,
    /// Notified when a job is enqueued in this process.
    pub wake: Arc<Notify>,
    /// Unique per process: `host/pid/random`.
    pub worker_id: String,
    http: reqwest::Client,
}

impl Workers {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        engine: Arc<Engine>,
        hubs: BTreeMap<WorkspaceId, Arc<HubSpot>>,
        wake: Arc<Notify>,
    ) -> Workers {
        let http = reqwest::Client::builder()
            .timeout(NOTIFY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("enrichd/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "notification client: using defaults");
                reqwest::Client::new()
            });
        Workers {
            settings,
            store,
            clock,
            engine,
            hubs,
            wake,
            worker_id: worker_id(),
            http,
        }
    }

    /// Claims and runs jobs until `stop`; then drains within `drain` and
    /// releases what is left.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, drain: Duration) {
        tracing::info!(worker = %self.worker_id, slots = SLOTS, "job workers started");
        let mut running: JoinSet<()> = JoinSet::new();
        // Task → (job id, kind).
        let mut in_hand: HashMap<tokio::task::Id, (i64, String)> = HashMap::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let mut pause = POLL;
            match self.claim(&in_hand).await {
                Ok(jobs) => {
                    for job in jobs {
                        let (id, kind) = (job.id, job.kind.clone());
                        let me = self.clone();
                        let stop = stop.clone();
                        let handle = running.spawn(async move { me.run_job(job, stop).await });
                        in_hand.insert(handle.id(), (id, kind));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim jobs; retrying");
                    pause = CLAIM_RETRY;
                }
            }
            let ended = tokio::select! {
                _ = self.wake.notified() => None,
                _ = tokio::time::sleep(pause) => None,
                Some(done) = running.join_next_with_id(), if !running.is_empty() => Some(done),
                _ = stopped(&mut stop) => None,
            };
            if let Some(done) = ended {
                self.finished_task(done, &mut in_hand).await;
            }
        }
        if in_hand.is_empty() {
            return;
        }
        tracing::info!(
            jobs = in_hand.len(),
            drain_secs = drain.as_secs(),
            "job workers stopping: finishing or releasing the jobs in hand"
        );
        let deadline = tokio::time::Instant::now() + drain;
        loop {
            tokio::select! {
                done = running.join_next_with_id() => match done {
                    Some(done) => self.finished_task(done, &mut in_hand).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    running.abort_all();
                    while let Some(done) = running.join_next_with_id().await {
                        if let Ok((id, ())) = done {
                            in_hand.remove(&id);
                        }
                    }
                    break;
                }
            }
        }
        // Cancelled mid-way: back to the queue (refused, harmlessly, for a
        // job that finished just before).
        for (_, (job, kind)) in in_hand {
            match self
                .store
                .release(job, &self.worker_id, self.clock.now())
                .await
            {
                Ok(true) => {
                    tracing::info!(job, kind, "job released: it resumes on the next start")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(job, kind, error = %e, "cannot release job: it is picked up again once its lease lapses")
                }
            }
        }
    }

    /// Claims up to the free slots: `enrich_lead` first, `bulk` only into
    /// the slots that are not kept for `enrich_lead`.
    async fn claim(
        &self,
        in_hand: &HashMap<tokio::task::Id, (i64, String)>,
    ) -> Result<Vec<Job>, crate::store::StoreError> {
        let free = SLOTS.saturating_sub(in_hand.len());
        if free == 0 {
            return Ok(Vec::new());
        }
        let lease = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        let slots = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut jobs = self
            .store
            .claim(
                &self.worker_id,
                &[ENRICH_LEAD],
                slots(free),
                lease,
                self.clock.now(),
            )
            .await?;
        let bulk_running = in_hand.values().filter(|(_, k)| k == BULK).count();
        let bulk_free = free
            .saturating_sub(jobs.len())
            .min((SLOTS - 1).saturating_sub(bulk_running));
        if bulk_free > 0 {
            jobs.extend(
                self.store
                    .claim(
                        &self.worker_id,
                        &[BULK],
                        slots(bulk_free),
                        lease,
                        self.clock.now(),
                    )
                    .await?,
            );
        }
        Ok(jobs)
    }

    /// A job task ended: forget it; a panicked one fails its attempt.
    async fn finished_task(
        &self,
        done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
        in_hand: &mut HashMap<tokio::task::Id, (i64, String)>,
    ) {
        match done {
            Ok((id, ())) => {
                in_hand.remove(&id);
            }
            Err(e) => {
                let Some((job, kind)) = in_hand.remove(&e.id()) else {
                    return;
                };
                tracing::error!(job, kind, error = %e, "job task failed unexpectedly");
                let now = self.clock.now();
                let msg = "enrichd hit an internal error running this job (a bug: report it with the logs of `enrichd run`); it is retried";
                if let Err(e) = self
                    .store
                    .fail(
                        job,
                        &self.worker_id,
                        msg,
                        retry_at(now, 1, RETRY_BASE_MS, RETRY_CAP_MS, job as u64),
                        now,
                    )
                    .await
                {
                    tracing::warn!(job, error = %e, "cannot record the failure; the job is retried once its lease lapses");
                }
            }
        }
    }

    /// Runs one claimed job with its heartbeat, then records how it ended.
    async fn run_job(self: Arc<Self>, job: Job, stop: watch::Receiver<bool>) {
        let started = std::time::Instant::now();
        tracing::info!(job = job.id, kind = %job.kind, workspace = %job.workspace, attempt = job.attempts, "job started");
        let outcome = tokio::select! {
            o = self.execute(&job, stop) => Some(o),
            () = self.heartbeat(job.id) => None,
        };
        let Some(outcome) = outcome.filter(|o| !matches!(o, Outcome::Lost)) else {
            tracing::warn!(job = job.id, kind = %job.kind, workspace = %job.workspace, "job lost: its lease lapsed and another worker has it now; stopped here");
            return;
        };
        let now = self.clock.now();
        let ms = started.elapsed().as_millis() as u64;
        match outcome {
            Outcome::Done(result) => {
                match self
                    .store
                    .complete(job.id, &self.worker_id, &result, now)
                    .await
                {
                    Ok(true) => {
                        tracing::info!(job = job.id, kind = %job.kind, workspace = %job.workspace, ms, "job done");
                        if job.kind == BULK {
                            self.notify(&job.workspace, &finished_text(&job, &result))
                                .await;
                        }
                    }
                    Ok(false) => {
                        tracing::warn!(
                            job = job.id,
                            "job finished after its lease was lost; another worker has it"
                        )
                    }
                    Err(e) => {
                        tracing::warn!(job = job.id, error = %e, "cannot mark the job done; it runs again once its lease lapses (idempotent)")
                    }
                }
            }
            Outcome::Failed(error) => {
                let at = retry_at(
                    now,
                    job.attempts,
                    RETRY_BASE_MS,
                    RETRY_CAP_MS,
                    job.id.unsigned_abs(),
                );
                match self
                    .store
                    .fail(job.id, &self.worker_id, &error, at, now)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(
                            job = job.id,
                            "job failed after its lease was lost; another worker has it"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(job = job.id, error = %e, "cannot record the job's failure; it runs again once its lease lapses");
                        return;
                    }
                }
                if job.attempts >= job.max_attempts {
                    tracing::error!(job = job.id, kind = %job.kind, workspace = %job.workspace, attempts = job.attempts, error = %error, "job dead: gave up after its last attempt");
                    if job.kind == BULK {
                        let text = format!(
                            "enrichd: bulk job {} in workspace {} failed after {} attempts: {error}",
                            job.id, job.workspace, job.attempts
                        );
                        self.notify(&job.workspace, &text).await;
                    }
                } else {
                    tracing::warn!(job = job.id, kind = %job.kind, workspace = %job.workspace, attempt = job.attempts, max_attempts = job.max_attempts, retry_in_ms = at - now, error = %error, "job attempt failed; retrying");
                }
            }
            Outcome::Lost => {}
            Outcome::Released => match self.store.release(job.id, &self.worker_id, now).await {
                Ok(_) => {
                    tracing::info!(job = job.id, kind = %job.kind, "job released on shutdown: it resumes on the next start")
                }
                Err(e) => {
                    tracing::warn!(job = job.id, error = %e, "cannot release job; it is picked up again once its lease lapses")
                }
            },
        }
    }

    /// Extends the lease until the job is no longer this worker's.
    async fn heartbeat(&self, id: i64) {
        let lease = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let now = self.clock.now();
            match self
                .store
                .heartbeat(id, &self.worker_id, now.saturating_add(lease), now)
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(job = id, error = %e, "cannot extend the job's lease; trying again")
                }
            }
        }
    }

    async fn execute(&self, job: &Job, stop: watch::Receiver<bool>) -> Outcome {
        let Some(ws) = self.settings.workspace(job.workspace.as_str()).cloned() else {
            return Outcome::Failed(format!(
                "workspace `{}` is not in {}: add it back, or let the job die",
                job.workspace,
                self.settings.file.display()
            ));
        };
        match job.kind.as_str() {
            ENRICH_LEAD => self.enrich_lead(job, &ws).await,
            BULK => self.bulk(job, &ws, stop).await,
            other => Outcome::Failed(format!(
                "job kind `{other}` is not run by this enrichd version (it runs {ENRICH_LEAD} and {BULK})"
            )),
        }
    }

    /// Reads the lead from the CRM (or the store, without one), enriches
    /// it, writes it back.
    async fn enrich_lead(&self, job: &Job, ws: &Arc<Workspace>) -> Outcome {
        let Some(id) = job.payload.get("lead_id").and_then(Value::as_str) else {
            return Outcome::Failed(format!(
                "job {} has no `lead_id` in its payload; enqueue it again through POST /v1/workspaces/{}/leads/<id>/enrich",
                job.id, ws.id
            ));
        };
        let id = LeadId(id.to_string());
        self.progress(job, 0, 1).await;
        let hub = self.hubs.get(&ws.id);
        let leads = match self.read(ws, hub, std::slice::from_ref(&id)).await {
            Ok(l) => l,
            Err(e) => return Outcome::Failed(e),
        };
        if leads.is_empty() {
            let where_ = if hub.is_some() {
                "HubSpot has no such contact (deleted, merged or archived?)"
            } else {
                "no stored lead has this id (the workspace has no CRM: enrich a file with `enrichd enrich` first)"
            };
            return Outcome::Done(json!({
                "lead_id": id.as_str(),
                "found": false,
                "message": format!("lead {id} not enriched: {where_}"),
            }));
        }
        let report = match self
            .engine
            .enrich(ws, leads.clone(), RunOptions::default())
            .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("enriching lead {id}: {e}")),
        };
        let write = match hub {
            Some(hub) => match write_back(hub, &leads).await {
                Ok(w) => Some(w),
                Err(e) => {
                    return Outcome::Failed(format!("writing lead {id} back to HubSpot: {e}"));
                }
            },
            None => None,
        };
        self.progress(job, 1, 1).await;
        let lead = report.lead(id.as_str());
        Outcome::Done(json!({
            "lead_id": id.as_str(),
            "found": true,
            "state": lead.map(|l| l.state.as_str()),
            "reason": lead.map(|l| l.reason.clone()),
            "status_before": lead.and_then(|l| l.status_before).map(|s| s.as_str()),
            "status_after": lead.and_then(|l| l.status_after).map(|s| s.as_str()),
            "filled": lead.map(|l| &l.filled),
            "credits": report.totals.credits_charged,
            "write_back": write.map(|w| json!({
                "fields_written": w.fields,
                "failed": w.failures.first().map(|(_, why)| why.clone()),
            })),
        }))
    }

    /// Resolves the selection, then enriches and writes back chunk by
    /// chunk (highest ICP first when the budget may not cover everyone),
    /// recording progress after each.
    async fn bulk(&self, job: &Job, ws: &Arc<Workspace>, stop: watch::Receiver<bool>) -> Outcome {
        let selection: Selection = match serde_json::from_value(job.payload.clone()) {
            Ok(s) => s,
            Err(e) => {
                return Outcome::Failed(format!(
                    "bulk job {} has an unreadable payload ({e}); enqueue it again through POST /v1/workspaces/{}/bulk",
                    job.id, ws.id
                ));
            }
        };
        let hub = self.hubs.get(&ws.id);
        let ids = match self.resolve(ws, hub, &selection).await {
            Ok(ids) => ids,
            Err(e) => return Outcome::Failed(e),
        };
        let total = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        if !self.progress(job, 0, total).await {
            return Outcome::Lost;
        }
        let mut t = BulkTotals {
            leads: ids.len() as u64,
            ..BulkTotals::default()
        };
        let mut done: i64 = 0;
        for chunk in ids.chunks(CHUNK) {
            if *stop.borrow() {
                return Outcome::Released;
            }
            let leads = match self.read(ws, hub, chunk).await {
                Ok(l) => l,
                Err(e) => return Outcome::Failed(e),
            };
            t.missing += (chunk.len() - leads.len().min(chunk.len())) as u64;
            if !leads.is_empty() {
                let report = match self
                    .engine
                    .enrich(ws, leads.clone(), RunOptions::default())
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        return Outcome::Failed(format!(
                            "enriching leads {done}..{} of {total}: {e}",
                            done + chunk.len() as i64
                        ));
                    }
                };
                for l in &report.leads {
                    if l.state == LeadState::Queued {
                        t.queued += 1;
                    } else {
                        t.enriched += 1;
                    }
                    *t.states.entry(l.state.as_str().to_string()).or_default() += 1;
                }
                t.values_found += report.totals.values_found as u64;
                t.credits += report.totals.credits_charged;
                if let Some(hub) = hub {
                    match write_back(hub, &leads).await {
                        Ok(w) => {
                            t.records_written += w.records;
                            t.fields_written += w.fields;
                            t.write_failures += w.failures.len() as u64;
                        }
                        Err(e) => {
                            return Outcome::Failed(format!(
                                "writing leads {done}..{} of {total} back to HubSpot: {e}",
                                done + chunk.len() as i64
                            ));
                        }
                    }
                }
            }
            done += chunk.len() as i64;
            if !self.progress(job, done, total).await {
                return Outcome::Lost;
            }
        }
        Outcome::Done(serde_json::to_value(&t).unwrap_or(Value::Null))
    }

    /// Records progress; false when the job is no longer this worker's.
    async fn progress(&self, job: &Job, done: i64, total: i64) -> bool {
        match self
            .store
            .progress(job.id, &self.worker_id, done, total, self.clock.now())
            .await
        {
            Ok(mine) => mine,
            Err(e) => {
                tracing::warn!(job = job.id, error = %e, "cannot record job progress");
                true
            }
        }
    }

    /// The leads among `ids`, as the CRM holds them now (as stored, for a
    /// workspace without a CRM). Unknown ids are left out.
    async fn read(
        &self,
        ws: &Workspace,
        hub: Option<&Arc<HubSpot>>,
        ids: &[LeadId],
    ) -> Result<Vec<Lead>, String> {
        match hub {
            Some(hub) => hub
                .puller()
                .by_ids(ids)
                .await
                .map_err(|e| format!("reading contacts from HubSpot: {}", hint(&e))),
            None => self
                .store
                .leads_by_ids(&ws.id, ids)
                .await
                .map_err(|e| format!("reading stored leads: {e}")),
        }
    }

    /// The lead ids a selection names, ordered by ICP score (highest first)
    /// when the workspace has a budget and there is more than one chunk, so
    /// the budget goes to the best leads across the whole job.
    async fn resolve(
        &self,
        ws: &Workspace,
        hub: Option<&Arc<HubSpot>>,
        selection: &Selection,
    ) -> Result<Vec<LeadId>, String> {
        let mut scored: Vec<(LeadId, f64)> = match selection {
            Selection::Ids(ids) => {
                let mut seen = std::collections::BTreeSet::new();
                let ids: Vec<LeadId> = ids
                    .iter()
                    .filter(|i| seen.insert(i.as_str()))
                    .map(|i| LeadId(i.clone()))
                    .collect();
                if ws.budget.is_none() || ids.len() <= CHUNK {
                    return Ok(ids);
                }
                // Scores come with the records: read them once here (the
                // companies are cached for the second read).
                let mut scored = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(READ_BATCH) {
                    let leads = self.read(ws, hub, chunk).await?;
                    let found: HashMap<&LeadId, f64> = leads
                        .iter()
                        .map(|l| (&l.id, l.number(&ws.fields.icp_score).unwrap_or(0.0)))
                        .collect();
                    scored.extend(
                        chunk
                            .iter()
                            .map(|i| (i.clone(), found.get(i).copied().unwrap_or(0.0))),
                    );
                }
                scored
            }
            Selection::Audience(name) => {
                let Some(index) = ws.audiences.iter().position(|a| &a.name == name) else {
                    let known: Vec<&str> = ws.audiences.iter().map(|a| a.name.as_str()).collect();
                    return Err(format!(
                        "audience `{name}` is no longer configured in workspace {} (configured: {}); start a new bulk job",
                        ws.id,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ));
                };
                let mut out = Vec::new();
                let mut after: Option<LeadId> = None;
                loop {
                    let page = self
                        .store
                        .lead_page(&ws.id, after.as_ref(), 1_000)
                        .await
                        .map_err(|e| format!("reading stored leads: {e}"))?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.id.clone());
                    let n = page.len();
                    for l in page {
                        if crate::core::audience::membership(&l, &ws.audiences)
                            .audiences
                            .contains(&index)
                        {
                            let icp = l.number(&ws.fields.icp_score).unwrap_or(0.0);
                            out.push((l.id, icp));
                        }
                    }
                    if n < 1_000 {
                        break;
                    }
                }
                out
            }
            Selection::Filter(rules) => {
                let Some(hub) = hub else {
                    return Err(format!(
                        "a bulk job by CRM filter needs a CRM, and workspace {} has none; select leads by ids or audience instead",
                        ws.id
                    ));
                };
                search(hub, ws, rules).await?
            }
        };
        if ws.budget.is_some() && scored.len() > CHUNK {
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        }
        Ok(scored.into_iter().map(|(id, _)| id).collect())
    }

    /// POSTs `{"text": ...}` to the workspace's notification URL, if any.
    /// Never fails the job; never logs the URL.
    async fn notify(&self, ws: &WorkspaceId, text: &str) {
        let Some(url) = self
            .settings
            .workspace(ws.as_str())
            .and_then(|w| w.notify_url.clone())
        else {
            return;
        };
        let sent = self
            .http
            .post(url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json!({ "text": text }).to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                tracing::info!(workspace = %ws, "bulk job notification sent")
            }
            Ok(r) => tracing::warn!(
                workspace = %ws,
                status = r.status().as_u16(),
                "bulk job notification refused by the workspace's notify_url (the job is not affected); check the URL in the config"
            ),
            Err(e) => tracing::warn!(
                workspace = %ws,
                error = %e.without_url(),
                "bulk job notification failed (the job is not affected); check the workspace's notify_url is reachable"
            ),
        }
    }
}

/// Completes once asked to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// What a bulk job did (its result).
#[derive(Debug, Default, Serialize)]
struct BulkTotals {
    /// Leads selected.
    leads: u64,
    /// Selected but not found in the CRM (deleted since, or a wrong id).
    missing: u64,
    /// Run through enrichment (values found or not).
    enriched: u64,
    /// Left queued for budget (highest ICP first got the budget).
    queued: u64,
    /// Per lead state after the run.
    states: BTreeMap<String, u64>,
    values_found: u64,
    credits: i64,
    records_written: u64,
    fields_written: u64,
    write_failures: u64,
}

/// What a write-back did.
struct Written {
    records: u64,
    fields: u64,
    failures: Vec<(String, String)>,
}

/// Checks the mapped properties (once per connector), then writes what
/// the mapping decides for `leads`.
async fn write_back(hub: &HubSpot, leads: &[Lead]) -> Result<Written, String> {
    hub.ensure_schema().await.map_err(|e| hint(&e))?;
    let (report, failures) = hub.write_leads(leads).await.map_err(|e| hint(&e))?;
    Ok(Written {
        records: report.records_written,
        fields: report.fields_written,
        failures,
    })
}

/// The HubSpot error, with what a person must do when nothing works
/// without them.
fn hint(e: &HubSpotError) -> String {
    if e.needs_a_person() {
        format!("{e} (retried with backoff until then)")
    } else {
        e.to_string()
    }
}

/// Contact ids (with ICP scores) a HubSpot search with `rules` returns:
/// 200 per page by `hs_object_id` ascending, restarting above the last id
/// before the 10,000-result cap.
async fn search(
    hub: &HubSpot,
    ws: &Workspace,
    rules: &[FilterRule],
) -> Result<Vec<(LeadId, f64)>, String> {
    let icp = ws.fields.icp_score.clone();
    let properties = vec!["hs_object_id".to_string(), icp.clone()];
    let mut out = Vec::new();
    let mut above: Option<u64> = None;
    loop {
        let mut offset = 0usize;
        let mut last: Option<u64> = None;
        let mut more = false;
        while offset + SEARCH_PAGE <= SEARCH_CAP {
            let mut filters: Vec<Value> = rules.iter().map(FilterRule::to_hubspot).collect();
            if let Some(a) = above {
                filters.push(
                    json!({"propertyName": "hs_object_id", "operator": "GT", "value": a.to_string()}),
                );
            }
            let body = json!({
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                "properties": properties,
                "limit": SEARCH_PAGE,
                "after": offset.to_string(),
            });
            let answer = hub
                .client
                .call(BucketKind::Search, Method::Post, SEARCH_PATH, Some(&body))
                .await
                .map_err(|e| {
                    format!(
                        "searching HubSpot contacts with the job's filter: {}",
                        hint(&e)
                    )
                })?;
            let contacts =
                parse_results(&answer.body, "POST /crm/v3/objects/contacts/search", false)
                    .map_err(|e| e.to_string())?;
            more = answer.body.pointer("/paging/next/after").is_some();
            offset += SEARCH_PAGE;
            for c in contacts {
                if let Ok(n) = c.id.parse::<u64>() {
                    last = Some(last.map_or(n, |l| l.max(n)));
                }
                let lead = Lead {
                    id: LeadId(c.id),
                    fields: c.properties.into_iter().collect(),
                };
                let score = lead.number(&icp).unwrap_or(0.0);
                out.push((lead.id, score));
            }
            if !more {
                break;
            }
        }
        if !more {
            break;
        }
        match last {
            Some(l) => above = Some(l),
            None => break,
        }
    }
    // A restart can meet a contact changed in between: keep each once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|(id, _)| seen.insert(id.clone()));
    Ok(out)
}

/// The notification of a finished bulk job.
fn finished_text(job: &Job, result: &Value) -> String {
    let n = |k: &str| result.get(k).and_then(Value::as_i64).unwrap_or(0);
    let mut text = format!(
        "enrichd: bulk job {} in workspace {} finished: {} leads enriched, {} queued for budget, {} credits",
        job.id,
        job.workspace,
        thousands(n("enriched")),
        thousands(n("queued")),
        thousands(n("credits")),
    );
    if n("missing") > 0 {
        text.push_str(&format!(
            ", {} not found in the CRM",
            thousands(n("missing"))
        ));
    }
    if n("write_failures") > 0 {
        text.push_str(&format!(
            ", {} write-backs failed",
            thousands(n("write_failures"))
        ));
    }
    text
}

/// 1234567 → "1,234,567".
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `host/pid/random`: unique per process, readable in `claimed_by`.
fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    let token = crate::engine::random_token();
    format!(
        "{host}/{}/{}",
        std::process::id(),
        token.get(..8).unwrap_or(&token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234), "1,234");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-12_000), "-12,000");
    }

    #[test]
    fn selections_keep_the_api_shape() {
        let s: Selection = serde_json::from_value(json!({"ids": ["1", "2"]})).expect("ids");
        assert_eq!(s, Selection::Ids(vec!["1".into(), "2".into()]));
        let s: Selection = serde_json::from_value(json!({"audience": "a"})).expect("audience");
        assert_eq!(
            serde_json::to_value(&s).ok(),
            Some(json!({"audience": "a"}))
        );
        let f = FilterRule {
            property: "country".into(),
            operator: "IN".into(),
            value: None,
            high_value: None,
            values: Some(vec!["us".into()]),
        };
        assert_eq!(
            f.to_hubspot(),
            json!({"propertyName": "country", "operator": "IN", "values": ["us"]})
        );
    }

    #[test]
    fn the_notification_reads_like_the_example() {
        let job = Job {
            id: 12,
            workspace: WorkspaceId("acme".into()),
            kind: BULK.into(),
            dedupe_key: None,
            payload: json!({}),
            state: JobState::Done,
            attempts: 1,
            max_attempts: 5,
            run_after: 0,
            claimed_by: None,
            lease_until: None,
            last_error: String::new(),
            progress_done: 500,
            progress_total: 500,
            result: None,
            created_at: 0,
            updated_at: 0,
            finished_at: None,
        };
        let r = json!({"enriched": 480, "queued": 20, "credits": 1234});
        assert_eq!(
            finished_text(&job, &r),
            "enrichd: bulk job 12 in workspace acme finished: 480 leads enriched, 20 queued for budget, 1,234 credits"
        );
    }
}

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
//! * **CRM-neutral jobs.** A job reads, enriches and writes back through
//!   [`Crm`]: HubSpot contacts, Salesforce Leads and Contacts (read fresh
//!   by Id with SOQL, each object through its view of the workspace,
//!   converted Leads refused with the reason, written through sObject
//!   Collections; a filter becomes a SOQL `WHERE` per object), or stored
//!   leads without a CRM. A Salesforce org paused by its daily allocation
//!   fails the attempt with a retry no earlier than the pause's end.
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
use crate::config::crm::CrmSettings;
use crate::config::{Settings, Workspace};
use crate::core::jobs::retry_at;
use crate::core::lead::{Lead, LeadId, WorkspaceId};
use crate::crm::hubspot::HubSpotError;
use crate::crm::hubspot::client::Method;
use crate::crm::hubspot::limits::BucketKind;
use crate::crm::hubspot::pull::{SEARCH_CAP, SEARCH_PAGE, parse_results};
use crate::crm::hubspot::sync::HubSpot;
use crate::crm::salesforce::limits::PauseReason;
use crate::crm::salesforce::sync::SalesforceSync;
use crate::crm::salesforce::{SObject, SalesforceError};
use crate::crm::schema::CrmSchema;
use crate::engine::{Engine, RunOptions};
use crate::store::jobs::Job;
#[cfg(test)]
use crate::store::jobs::JobState;
use crate::store::{LeadState, Store};

use super::salesforce_filter;

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
/// Per-record failures listed in a bulk job's result, at most.
const MAX_REPORTED_FAILURES: usize = 100;
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
    /// A CRM search: these conditions, all of them (AND). HubSpot search
    /// as is; on Salesforce a SOQL `WHERE` per synced object
    /// (`super::salesforce_filter`).
    Filter(Vec<FilterRule>),
}

/// One search filter, in HubSpot's search shape (the admin API's shape for
/// every CRM).
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
    /// This attempt failed because the CRM is paused until `until` (ms):
    /// retried then at the earliest.
    Paused { error: String, until: i64 },
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
    /// The Salesforce connector of each Salesforce workspace: the daemon's
    /// own (one client, one daily budget per org); one opened on first use
    /// otherwise (`enrichd bulk`).
    salesforce: std::sync::Mutex<BTreeMap<WorkspaceId, Arc<SalesforceSync>>>,
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
            salesforce: std::sync::Mutex::new(BTreeMap::new()),
            wake,
            worker_id: worker_id(),
            http,
        }
    }

    /// Uses these Salesforce connectors (shared with the daemon's sync and
    /// events loops, so one client and one daily budget per org).
    pub fn with_salesforce(self, sfs: BTreeMap<WorkspaceId, Arc<SalesforceSync>>) -> Workers {
        Workers {
            salesforce: std::sync::Mutex::new(sfs),
            ..self
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
            Outcome::Failed(_) | Outcome::Paused { .. } => {
                let (error, not_before) = match outcome {
                    Outcome::Paused { error, until } => (error, Some(until)),
                    Outcome::Failed(error) => (error, None),
                    _ => return,
                };
                let at = retry_at(
                    now,
                    job.attempts,
                    RETRY_BASE_MS,
                    RETRY_CAP_MS,
                    job.id.unsigned_abs(),
                )
                .max(not_before.unwrap_or(i64::MIN));
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

    /// The CRM of `ws` as the job sees it: its HubSpot or Salesforce
    /// connector (Salesforce opened here when the process has none for the
    /// workspace, e.g. `enrichd bulk`), or the store for a workspace
    /// without a CRM.
    fn crm(&self, ws: &Arc<Workspace>) -> Result<Crm, JobError> {
        match &ws.crm {
            Some(CrmSettings::HubSpot(_)) => Ok(self
                .hubs
                .get(&ws.id)
                .map_or(Crm::Stored, |h| Crm::HubSpot(h.clone()))),
            Some(CrmSettings::Salesforce(_)) => {
                let mut open = self.salesforce.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(sf) = open.get(&ws.id) {
                    return Ok(Crm::Salesforce(sf.clone()));
                }
                let sf = SalesforceSync::open(
                    &self.settings,
                    ws,
                    self.store.clone(),
                    self.clock.clone(),
                )
                .map_err(|e| {
                    JobError::from(format!(
                        "opening the Salesforce connection of workspace {}: {}",
                        ws.id,
                        sf_hint(&e)
                    ))
                })?;
                match sf {
                    Some(sf) => {
                        let sf = Arc::new(sf);
                        open.insert(ws.id.clone(), sf.clone());
                        Ok(Crm::Salesforce(sf))
                    }
                    None => Ok(Crm::Stored),
                }
            }
            None => Ok(Crm::Stored),
        }
    }

    /// Reads the lead from the CRM (or the store, without one), enriches
    /// it, writes it back. A converted Salesforce Lead is not enriched or
    /// written: the job is done with that reason.
    async fn enrich_lead(&self, job: &Job, ws: &Arc<Workspace>) -> Outcome {
        let Some(id) = job.payload.get("lead_id").and_then(Value::as_str) else {
            return Outcome::Failed(format!(
                "job {} has no `lead_id` in its payload; enqueue it again through POST /v1/workspaces/{}/leads/<id>/enrich",
                job.id, ws.id
            ));
        };
        let id = LeadId(id.to_string());
        self.progress(job, 0, 1).await;
        let crm = match self.crm(ws) {
            Ok(c) => c,
            Err(e) => return e.outcome(),
        };
        let read = match crm
            .read(self.store.as_ref(), ws, std::slice::from_ref(&id))
            .await
        {
            Ok(r) => r,
            Err(e) => return e.outcome(),
        };
        if let Some((_, why)) = read.refused.first() {
            self.progress(job, 1, 1).await;
            return Outcome::Done(json!({
                "lead_id": id.as_str(),
                "found": true,
                "state": "failed",
                "reason": why,
                "credits": 0,
                "write_back": {"fields_written": 0, "failed": why},
                "failures": [{"id": id.as_str(), "reason": why}],
            }));
        }
        let Some(group) = read.groups.into_iter().find(|g| !g.leads.is_empty()) else {
            return Outcome::Done(json!({
                "lead_id": id.as_str(),
                "found": false,
                "message": format!("lead {id} not enriched: {}", crm.not_found(&id)),
            }));
        };
        let report = match self
            .engine
            .enrich(&group.ws, group.leads.clone(), RunOptions::default())
            .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("enriching lead {id}: {e}")),
        };
        let write = match crm.write(&group).await {
            Ok(w) => w,
            Err(e) => {
                return e
                    .context(&format!("writing lead {id} back to {}", crm.name()))
                    .outcome();
            }
        };
        self.progress(job, 1, 1).await;
        let lead = report.lead(id.as_str());
        let failures: Vec<Value> = write
            .iter()
            .flat_map(|w| &w.failures)
            .map(|(id, why)| json!({"id": id, "reason": why}))
            .collect();
        Outcome::Done(json!({
            "lead_id": id.as_str(),
            "found": true,
            "state": lead.map(|l| l.state.as_str()),
            "reason": lead.map(|l| l.reason.clone()),
            "status_before": lead.and_then(|l| l.status_before).map(|s| s.as_str()),
            "status_after": lead.and_then(|l| l.status_after).map(|s| s.as_str()),
            "filled": lead.map(|l| &l.filled),
            "credits": report.totals.credits_charged,
            "write_back": write.as_ref().map(|w| json!({
                "fields_written": w.fields,
                "failed": w.failures.first().map(|(_, why)| why.clone()),
            })),
            "failures": failures,
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
        let crm = match self.crm(ws) {
            Ok(c) => c,
            Err(e) => return e.outcome(),
        };
        let (ids, notes) = match self.resolve(ws, &crm, &selection).await {
            Ok(ids) => ids,
            Err(e) => return e.outcome(),
        };
        let total = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        if !self.progress(job, 0, total).await {
            return Outcome::Lost;
        }
        let mut t = BulkTotals {
            leads: ids.len() as u64,
            notes,
            ..BulkTotals::default()
        };
        let mut done: i64 = 0;
        for chunk in ids.chunks(CHUNK) {
            if *stop.borrow() {
                return Outcome::Released;
            }
            let span = format!("leads {done}..{} of {total}", done + chunk.len() as i64);
            let read = match crm.read(self.store.as_ref(), ws, chunk).await {
                Ok(r) => r,
                Err(e) => return e.context(&format!("reading {span}")).outcome(),
            };
            let found: usize = read.groups.iter().map(|g| g.leads.len()).sum();
            t.missing += chunk.len().saturating_sub(found + read.refused.len()) as u64;
            t.converted += read.refused.len() as u64;
            for (id, why) in read.refused {
                t.fail(id, why);
            }
            for group in read.groups.into_iter().filter(|g| !g.leads.is_empty()) {
                let report = match self
                    .engine
                    .enrich(&group.ws, group.leads.clone(), RunOptions::default())
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return Outcome::Failed(format!("enriching {span}: {e}")),
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
                match crm.write(&group).await {
                    Ok(Some(w)) => {
                        t.records_written += w.records;
                        t.fields_written += w.fields;
                        t.write_failures += w.failures.len() as u64;
                        for (id, why) in w.failures {
                            t.fail(id, why);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return e
                            .context(&format!("writing {span} back to {}", crm.name()))
                            .outcome();
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

    /// The lead ids a selection names, ordered by ICP score (highest first)
    /// when the workspace has a budget and there is more than one chunk, so
    /// the budget goes to the best leads across the whole job; and notes
    /// on what the selection left out (a Salesforce object a filter does
    /// not apply to).
    async fn resolve(
        &self,
        ws: &Arc<Workspace>,
        crm: &Crm,
        selection: &Selection,
    ) -> Result<(Vec<LeadId>, Vec<String>), JobError> {
        let mut notes = Vec::new();
        let mut scored: Vec<(LeadId, f64)> = match selection {
            Selection::Ids(ids) => {
                let mut seen = std::collections::BTreeSet::new();
                let ids: Vec<LeadId> = ids
                    .iter()
                    .filter(|i| seen.insert(i.as_str()))
                    .map(|i| LeadId(i.clone()))
                    .collect();
                if ws.budget.is_none() || ids.len() <= CHUNK {
                    return Ok((ids, notes));
                }
                // Scores come with the records: read them once here (the
                // companies are cached for the second read).
                let mut scored = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(READ_BATCH) {
                    let read = crm
                        .read(self.store.as_ref(), ws, chunk)
                        .await
                        .map_err(|e| e.context("reading the selected leads' ICP scores"))?;
                    let found: HashMap<&LeadId, f64> = read
                        .groups
                        .iter()
                        .flat_map(|g| {
                            g.leads
                                .iter()
                                .map(|l| (&l.id, l.number(&g.ws.fields.icp_score).unwrap_or(0.0)))
                        })
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
                    return Err(JobError::from(format!(
                        "audience `{name}` is no longer configured in workspace {} (configured: {}); start a new bulk job",
                        ws.id,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )));
                };
                let mut out = Vec::new();
                let mut after: Option<LeadId> = None;
                loop {
                    let page = self
                        .store
                        .lead_page(&ws.id, after.as_ref(), 1_000)
                        .await
                        .map_err(|e| JobError::from(format!("reading stored leads: {e}")))?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.id.clone());
                    let n = page.len();
                    for l in page {
                        // A Salesforce record through its object's view
                        // (persona title field, identity names).
                        let view = crm.view_of(ws, &l.id);
                        if crate::core::audience::membership(&l, &view.audiences)
                            .audiences
                            .contains(&index)
                        {
                            let icp = l.number(&view.fields.icp_score).unwrap_or(0.0);
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
                let (found, skipped) = crm.search(ws, rules).await?;
                notes = skipped;
                found
            }
        };
        if ws.budget.is_some() && scored.len() > CHUNK {
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        }
        Ok((scored.into_iter().map(|(id, _)| id).collect(), notes))
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
    /// Selected but converted Salesforce Leads: never enriched or written.
    #[serde(skip_serializing_if = "is_zero")]
    converted: u64,
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
    /// Per-record failures (record id, reason): the first
    /// [`MAX_REPORTED_FAILURES`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failures: Vec<Value>,
    /// What the selection left out and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl BulkTotals {
    fn fail(&mut self, id: String, why: String) {
        if self.failures.len() < MAX_REPORTED_FAILURES {
            self.failures.push(json!({"id": id, "reason": why}));
        }
    }
}

/// What a write-back did.
struct Written {
    records: u64,
    fields: u64,
    failures: Vec<(String, String)>,
}

/// Why a job attempt failed, and the time before which retrying is
/// pointless (a Salesforce org paused by its daily allocation).
struct JobError {
    message: String,
    not_before: Option<i64>,
}

impl From<String> for JobError {
    fn from(message: String) -> JobError {
        JobError {
            message,
            not_before: None,
        }
    }
}

impl JobError {
    fn salesforce(doing: &str, e: &SalesforceError) -> JobError {
        JobError {
            message: format!("{doing}: {}", sf_hint(e)),
            not_before: e.paused_until(),
        }
    }

    fn context(self, doing: &str) -> JobError {
        JobError {
            message: format!("{doing}: {}", self.message),
            ..self
        }
    }

    fn outcome(self) -> Outcome {
        match self.not_before {
            Some(until) => Outcome::Paused {
                error: self.message,
                until,
            },
            None => Outcome::Failed(self.message),
        }
    }
}

/// The CRM a job reads from and writes back to. The job code is the same
/// for each; what differs is here.
enum Crm {
    HubSpot(Arc<HubSpot>),
    Salesforce(Arc<SalesforceSync>),
    /// No CRM: stored leads, nothing written back.
    Stored,
}

/// Leads as enrichment must see them: a Salesforce object's records
/// through that object's view of the workspace (its identity fields).
struct Group {
    ws: Arc<Workspace>,
    /// The Salesforce object, for a Salesforce group.
    object: Option<SObject>,
    leads: Vec<Lead>,
}

/// What a read found: the leads, and the records found but never to be
/// enriched or written (converted Salesforce Leads) with why.
struct Read {
    groups: Vec<Group>,
    refused: Vec<(String, String)>,
}

impl Crm {
    fn name(&self) -> &'static str {
        match self {
            Crm::HubSpot(_) => "HubSpot",
            Crm::Salesforce(_) => "Salesforce",
            Crm::Stored => "the store",
        }
    }

    /// The workspace as enrichment sees lead `id`: a Salesforce record
    /// through its object's view, anything else as configured.
    fn view_of(&self, ws: &Arc<Workspace>, id: &LeadId) -> Arc<Workspace> {
        match self {
            Crm::Salesforce(sf) => SObject::of_id(id.as_str())
                .filter(|o| sf.settings.object(*o).is_some())
                .map_or_else(|| ws.clone(), |o| sf.view(o)),
            _ => ws.clone(),
        }
    }

    /// Why `id` was not found.
    fn not_found(&self, id: &LeadId) -> String {
        match self {
            Crm::HubSpot(_) => "HubSpot has no such contact (deleted, merged or archived?)".into(),
            Crm::Salesforce(sf) => {
                let object = SObject::of_id(id.as_str()).filter(|o| sf.settings.object(*o).is_some());
                match object {
                    Some(o) => format!(
                        "Salesforce has no {o} with this Id (deleted, merged, or not visible to the integration user?)"
                    ),
                    None => format!(
                        "`{id}` is not the Id of a record type this workspace syncs ({})",
                        sf.objects()
                            .iter()
                            .map(|o| format!("{o}: {}…", o.id_prefix()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
            Crm::Stored => "no stored lead has this id (the workspace has no CRM: enrich a file with `enrichd enrich` first)".into(),
        }
    }

    /// The leads among `ids`, as the CRM holds them now (as stored, for a
    /// workspace without a CRM). Unknown ids are left out.
    async fn read(
        &self,
        store: &dyn Store,
        ws: &Arc<Workspace>,
        ids: &[LeadId],
    ) -> Result<Read, JobError> {
        let one = |leads| Read {
            groups: vec![Group {
                ws: ws.clone(),
                object: None,
                leads,
            }],
            refused: Vec::new(),
        };
        match self {
            Crm::HubSpot(hub) => hub.puller().by_ids(ids).await.map(one).map_err(|e| {
                JobError::from(format!("reading contacts from HubSpot: {}", hint(&e)))
            }),
            Crm::Stored => store
                .leads_by_ids(&ws.id, ids)
                .await
                .map(one)
                .map_err(|e| JobError::from(format!("reading stored leads: {e}"))),
            Crm::Salesforce(sf) => {
                let mut read = Read {
                    groups: Vec::new(),
                    refused: Vec::new(),
                };
                for object in sf.objects() {
                    let wanted: Vec<LeadId> = ids
                        .iter()
                        .filter(|i| SObject::of_id(i.as_str()) == Some(object))
                        .cloned()
                        .collect();
                    if wanted.is_empty() {
                        continue;
                    }
                    let r = sf.read_by_ids(object, &wanted).await.map_err(|e| {
                        JobError::salesforce(
                            &format!("reading {object} records from Salesforce"),
                            &e,
                        )
                    })?;
                    read.refused.extend(r.converted.into_iter().map(|id| {
                        let why = format!(
                            "Lead {id} is converted: a converted Lead is never written (Salesforce refuses updates to it); enrich the Contact it became instead"
                        );
                        (id.0, why)
                    }));
                    read.groups.push(Group {
                        ws: sf.view(object),
                        object: Some(object),
                        leads: r.leads,
                    });
                }
                Ok(read)
            }
        }
    }

    /// Writes what the mapping decides for the group's leads; `None`
    /// without a CRM.
    async fn write(&self, group: &Group) -> Result<Option<Written>, JobError> {
        match self {
            Crm::Stored => Ok(None),
            Crm::HubSpot(hub) => write_back(hub, &group.leads)
                .await
                .map(Some)
                .map_err(JobError::from),
            Crm::Salesforce(sf) => {
                let Some(object) = group.object else {
                    return Ok(None);
                };
                let (report, failures) = sf
                    .write_leads(object, group.leads.clone())
                    .await
                    .map_err(|e| JobError::salesforce(&format!("{object} write-back"), &e))?;
                Ok(Some(Written {
                    records: report.summary.records_written,
                    fields: report.summary.fields_written,
                    failures,
                }))
            }
        }
    }

    /// The ids (with ICP scores) a filter selects, and notes on what it
    /// left out.
    async fn search(
        &self,
        ws: &Workspace,
        rules: &[FilterRule],
    ) -> Result<(Vec<(LeadId, f64)>, Vec<String>), JobError> {
        match self {
            Crm::Stored => Err(JobError::from(format!(
                "a bulk job by CRM filter needs a CRM, and workspace {} has none; select leads by ids or audience instead",
                ws.id
            ))),
            Crm::HubSpot(hub) => Ok((search(hub, ws, rules).await?, Vec::new())),
            Crm::Salesforce(sf) => sf_search(sf, rules).await,
        }
    }
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

/// The Salesforce error, with what happens to the job and what a person
/// can do.
fn sf_hint(e: &SalesforceError) -> String {
    match e {
        SalesforceError::Paused {
            until_text,
            reason: PauseReason::ShareReached { .. },
            ..
        } => format!(
            "{e}. The job is retried after {until_text}; to let enrichd use more of the org's allocation, raise limits.daily_stop_share under [workspaces.crm]"
        ),
        SalesforceError::Paused { until_text, .. } => format!(
            "{e}. The job is retried after {until_text}; nothing to do unless other integrations keep using up the org's allocation"
        ),
        _ if e.needs_a_person() => format!("{e} (the job is retried with backoff until then)"),
        _ => e.to_string(),
    }
}

/// Record Ids (with ICP scores) of the configured Salesforce objects that
/// a filter selects: the filter as SOQL per object (checked against its
/// describe), converted Leads excluded, paged by `nextRecordsUrl`.
async fn sf_search(
    sf: &SalesforceSync,
    rules: &[FilterRule],
) -> Result<(Vec<(LeadId, f64)>, Vec<String>), JobError> {
    let mut described = Vec::new();
    for object in sf.objects() {
        let schema = sf.describe(object).await.map_err(|e| {
            JobError::salesforce(
                &format!("describing {object} to check the job's filter"),
                &e,
            )
        })?;
        described.push((object, schema));
    }
    let objects: Vec<(SObject, &CrmSchema)> = described.iter().map(|(o, s)| (*o, &**s)).collect();
    let plan = salesforce_filter::plan(&objects, rules).map_err(|e| {
        JobError::from(format!(
            "the job's filter cannot run on Salesforce: {e}; start a new bulk job with a corrected filter"
        ))
    })?;
    let mut out = Vec::new();
    for (object, condition) in &plan.queries {
        let icp = sf.view(*object).fields.icp_score.clone();
        let schema = objects.iter().find(|(o, _)| o == object).map(|(_, s)| *s);
        let score = schema
            .and_then(|s| s.get(&icp))
            .map(|f| f.name.clone())
            .filter(|_| crate::crm::salesforce::soql::is_field_name(&icp));
        let found = sf
            .query_ids(*object, condition, score.as_deref())
            .await
            .map_err(|e| {
                JobError::salesforce(
                    &format!("searching {object} records with the job's filter"),
                    &e,
                )
            })?;
        out.extend(found);
    }
    let notes = plan
        .skipped
        .into_iter()
        .map(|(o, why)| format!("{o} records not searched: {why}"))
        .collect();
    Ok((out, notes))
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
    if n("converted") > 0 {
        text.push_str(&format!(
            ", {} converted Salesforce Leads not written",
            thousands(n("converted"))
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

//! One Salesforce connection of one workspace, end to end, mirroring
//! `crm::hubspot::sync`: per configured object (Lead, then Contact), pull
//! → a bounded queue of pages → page workers (store the leads, enrich them
//! with the engine, plan the writes with `preview::plan_lead`, the decision
//! the preview shows) → a writer that re-batches to full Collections
//! requests, or to Bulk API 2.0 jobs above `bulk_threshold` → the
//! watermark committed only once every page was stored, enriched and
//! written (ARCHITECTURE.md invariant 12). And the handling of recorded
//! Outbound-Message events ([`SalesforceSync::process_events`]).
//!
//! **Write path per pass** (the reference is silent on a streaming pass;
//! this is the choice): planned writes are buffered (bounded: at most
//! [`super::writeback::BULK_JOB_RECORDS`]); a full buffer goes out as a
//! Bulk job (the pass is then certainly above the threshold); at the end
//! of the pass what is left goes through Collections when it is at most
//! `bulk_threshold` records, else through Bulk. So 1,000 writes are 5
//! Collections calls, 10,000 one Bulk job.
//!
//! **Pauses.** A [`SalesforceError::Paused`] (daily share reached,
//! `REQUEST_LIMIT_EXCEEDED`) stops the pass: leads already stored and
//! values already found stay in the store (they are not asked again), what
//! was written is recorded, and the watermark does not move, so the next
//! pass after the pause reads the same records again and finishes them.
//!
//! **Admin-API jobs** (`daemon::worker`) use the same connection: records
//! re-read by Id with converted Leads named ([`SalesforceSync::read_by_ids`]),
//! a bulk filter's Ids ([`SalesforceSync::query_ids`], paged by
//! `nextRecordsUrl`), the objects' describes to check a filter
//! ([`SalesforceSync::describe`], reused ten minutes) and
//! [`SalesforceSync::write_leads`].
//!
//! **Identity.** Salesforce field names differ from the workspace's
//! defaults (`FirstName`, `Company`, …; a Contact's company is
//! `Account.Name`). Unless the workspace sets `[workspaces.fields]` itself,
//! enrichment sees each object through [`object_workspace`], whose
//! identity fields are [`super::records::identity_fields`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::config::crm::{CrmSettings, SalesforceSettings};
use crate::config::{Settings, Workspace};
use crate::core::lead::{IdentityFields, Lead, LeadId};
use crate::crm::schema::CrmSchema;
use crate::engine::{Engine, RunOptions};
use crate::store::Store;
use crate::store::crm::{EventState, WriteOutcome, Written};

use super::client::{Request, SalesforceClient};
use super::outbound::{OwnChangeRule, event_kind};
use super::pull::{PageSink, PullReport, Puller};
use super::records;
use super::soql;
use super::write::{self, COLLECTION_MAX, RecordOutcome, WriteItem, WritePath};
use super::writeback::{self, BULK_JOB_RECORDS, WriteReport};
use super::{CRM, SObject, SalesforceError};

/// Pages waiting between the pull and the page workers.
const QUEUE_PAGES: usize = 4;
/// Page workers (enrichment waits on providers).
const WORKERS: usize = 4;
/// Events handled per round (one SOQL read and one write per round).
pub const EVENTS_PER_ROUND: usize = 100;
/// How long a describe is reused by [`SalesforceSync::describe`].
const DESCRIBE_TTL_MS: i64 = 10 * 60 * 1000;

/// One record's planned write, with the lead as read (to update the stored
/// copy once written).
#[derive(Debug, Clone)]
pub struct Planned {
    pub item: WriteItem,
    pub lead: Lead,
}

/// What a pass does besides reading: the same options as HubSpot's.
pub use crate::crm::SyncOptions;

/// One object's pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ObjectReport {
    pub pull: PullReport,
    pub enriched: u64,
    pub write: WriteReport,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub objects: Vec<ObjectReport>,
    pub enriched: u64,
    pub write: WriteReport,
    /// Per-record write failures (record Id, reason).
    pub failures: Vec<(String, String)>,
    /// API calls made by this connection's client so far.
    pub api_calls: u64,
    /// `REQUEST_LIMIT_EXCEEDED` answers seen by the client so far.
    pub limit_exceeded: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsReport {
    pub events: u64,
    pub ignored: u64,
    /// Records read again by Id.
    pub leads: u64,
    pub enriched: u64,
    pub write: WriteReport,
    pub failures: Vec<(String, String)>,
}

/// The workspace as enrichment sees `object`: its identity fields are the
/// object's Salesforce field names ([`super::records::identity_fields`])
/// unless the workspace configured its own `[workspaces.fields]`; a
/// persona's title field follows.
pub fn object_workspace(
    ws: &Arc<Workspace>,
    settings: &SalesforceSettings,
    object: SObject,
) -> Arc<Workspace> {
    if ws.fields != IdentityFields::default() {
        return ws.clone();
    }
    let mapping = settings.object(object).map(|o| &*o.mapping);
    let fields = super::records::identity_fields(object, mapping);
    let default = IdentityFields::default();
    let mut view = (**ws).clone();
    for a in &mut view.audiences {
        if let Some(p) = &mut a.persona
            && p.title_field == default.job_title
        {
            p.title_field = fields.job_title.clone();
        }
    }
    view.fields = fields;
    Arc::new(view)
}

/// The Salesforce connection of one workspace.
pub struct SalesforceSync {
    pub ws: Arc<Workspace>,
    pub settings: Arc<SalesforceSettings>,
    /// The one client of this workspace (its budget, permits and session).
    pub client: Arc<SalesforceClient>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    views: BTreeMap<SObject, Arc<Workspace>>,
    /// `LIMIT` per pull query (see [`Puller::query_limit`]).
    pub query_limit: Option<u32>,
    /// Describes fetched by [`SalesforceSync::describe`], with when.
    described: tokio::sync::Mutex<BTreeMap<SObject, (i64, Arc<CrmSchema>)>>,
}

/// Records read by Id ([`SalesforceSync::read_by_ids`]).
#[derive(Debug, Clone, Default)]
pub struct ReadByIds {
    /// The records as leads (converted Leads left out).
    pub leads: Vec<Lead>,
    /// Converted Leads among the Ids: never enriched or written.
    pub converted: Vec<LeadId>,
}

fn soql_err(e: &soql::SoqlError) -> SalesforceError {
    SalesforceError::Decode {
        endpoint: "SOQL".into(),
        message: format!("{e} (check the job's filter, [workspaces.crm] fields and the mapping)"),
    }
}

fn engine_err(e: impl std::fmt::Display) -> SalesforceError {
    SalesforceError::Transport {
        endpoint: "enrichment".into(),
        message: e.to_string(),
    }
}

impl SalesforceSync {
    /// The workspace's Salesforce connection as configured (`None` when the
    /// workspace has no Salesforce CRM), with a client of its own.
    pub fn open(
        settings: &Settings,
        ws: &Arc<Workspace>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<SalesforceSync>, SalesforceError> {
        let Some(client) = SalesforceClient::open(settings, ws, store.clone(), clock.clone())?
        else {
            return Ok(None);
        };
        Ok(Self::with_client(ws, Arc::new(client), store, clock))
    }

    /// The connection over an existing client (share ONE client per
    /// workspace: the daemon's sync loop, events loop and admin API).
    pub fn with_client(
        ws: &Arc<Workspace>,
        client: Arc<SalesforceClient>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Option<SalesforceSync> {
        let Some(CrmSettings::Salesforce(s)) = &ws.crm else {
            return None;
        };
        let views = s
            .objects
            .iter()
            .map(|o| (o.object, object_workspace(ws, s, o.object)))
            .collect();
        Some(SalesforceSync {
            ws: ws.clone(),
            settings: s.clone(),
            client,
            store,
            clock,
            views,
            query_limit: None,
            described: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The objects synced, in order (Lead first).
    pub fn objects(&self) -> Vec<SObject> {
        self.views.keys().copied().collect()
    }

    /// The workspace as enrichment sees `object`.
    pub fn view(&self, object: SObject) -> Arc<Workspace> {
        self.views
            .get(&object)
            .cloned()
            .unwrap_or_else(|| object_workspace(&self.ws, &self.settings, object))
    }

    pub fn puller(&self, object: SObject) -> Puller {
        Puller {
            client: self.client.clone(),
            store: self.store.clone(),
            ws: self.view(object),
            settings: self.settings.clone(),
            object,
            clock: self.clock.clone(),
            dry_run: false,
            query_limit: self.query_limit,
        }
    }

    /// A puller that reads and never moves the watermark.
    pub fn dry_run_puller(&self, object: SObject) -> Puller {
        Puller {
            dry_run: true,
            ..self.puller(object)
        }
    }

    /// Reads records of `object` by Id, fresh (SOQL `Id IN (…)`, 200 Ids
    /// per query, `nextRecordsUrl` followed), through the client and so its
    /// daily-budget gate. Unlike [`Puller::by_ids`], converted Leads are
    /// named rather than silently left out. Ids of another object or not
    /// record Ids are ignored; Ids not found are simply absent.
    pub async fn read_by_ids(
        &self,
        object: SObject,
        ids: &[LeadId],
    ) -> Result<ReadByIds, SalesforceError> {
        let fields = self.puller(object).fields()?;
        let ids: Vec<&str> = ids
            .iter()
            .map(LeadId::as_str)
            .filter(|i| SObject::of_id(i) == Some(object) && super::is_record_id(i))
            .collect();
        let mut out = ReadByIds::default();
        for chunk in ids.chunks(soql::MAX_IDS_PER_QUERY) {
            let q = soql::by_ids(object, &fields, chunk).map_err(|e| soql_err(&e))?;
            let mut path = soql::query_path(&q, false);
            loop {
                let answer = self.client.call(Request::get(path.clone())).await?;
                let page = records::parse_query_page(&answer.body, object).map_err(|e| {
                    SalesforceError::Decode {
                        endpoint: answer.endpoint.clone(),
                        message: e.to_string(),
                    }
                })?;
                for r in &page.records {
                    match r.to_lead() {
                        Some(l) => out.leads.push(l),
                        None => out.converted.push(LeadId(r.id.clone())),
                    }
                }
                match page.next_records_url {
                    Some(n) => path = n,
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// The Ids (with the value of `score_field`, 0 without) of the records
    /// of `object` matching `condition`, a SOQL condition the caller built
    /// from checked names and escaped literals (never text from outside as
    /// is). Converted Leads are excluded (`IsConverted = false`). Read in
    /// `Id` order through `nextRecordsUrl` with the configured batch size;
    /// an expired cursor restarts strictly after the last Id read.
    pub async fn query_ids(
        &self,
        object: SObject,
        condition: &str,
        score_field: Option<&str>,
    ) -> Result<Vec<(LeadId, f64)>, SalesforceError> {
        let fields = soql::select_fields(object, score_field).map_err(|e| soql_err(&e))?;
        let mut out: Vec<(LeadId, f64)> = Vec::new();
        let mut after: Option<String> = None;
        // Where the last restart began: a cursor that expires again before
        // anything new was read stops the search instead of looping.
        let mut restarted_at: Option<Option<String>> = None;
        'query: loop {
            let mut conditions = vec![format!("({condition})")];
            if object == SObject::Lead {
                conditions.push("IsConverted = false".into());
            }
            if let Some(a) = &after {
                conditions.push(format!(
                    "Id > {}",
                    soql::quote(a).map_err(|e| soql_err(&e))?
                ));
            }
            let q = format!(
                "SELECT {} FROM {} WHERE {} ORDER BY Id ASC",
                fields.join(", "),
                object.as_str(),
                conditions.join(" AND ")
            );
            let mut path = soql::query_path(&q, false);
            let mut first = true;
            loop {
                let (name, value) = soql::query_options_header(self.settings.query_batch_size);
                let answer = match self
                    .client
                    .call(Request::get(path.clone()).header(name, value))
                    .await
                {
                    Ok(a) => a,
                    Err(e)
                        if !first
                            && e.failure().is_some_and(|f| {
                                f.code.as_deref() == Some("INVALID_QUERY_LOCATOR")
                            }) =>
                    {
                        if restarted_at.as_ref() == Some(&after) {
                            return Err(e);
                        }
                        restarted_at = Some(after.clone());
                        continue 'query;
                    }
                    Err(e) => return Err(e),
                };
                first = false;
                let page = records::parse_query_page(&answer.body, object).map_err(|e| {
                    SalesforceError::Decode {
                        endpoint: answer.endpoint.clone(),
                        message: e.to_string(),
                    }
                })?;
                for s in &page.skipped {
                    tracing::warn!(object = %object, id = s.id.as_deref().unwrap_or("-"), reason = %s.reason, "Salesforce record set aside");
                }
                for r in &page.records {
                    if after.as_deref().is_none_or(|a| r.id.as_str() > a) {
                        after = Some(r.id.clone());
                    }
                    if r.converted {
                        continue;
                    }
                    let score = score_field
                        .and_then(|f| r.fields.get(f))
                        .and_then(|v| match v {
                            serde_json::Value::Number(n) => n.as_f64(),
                            serde_json::Value::String(s) => s.trim().parse().ok(),
                            _ => None,
                        })
                        .unwrap_or(0.0);
                    out.push((LeadId(r.id.clone()), score));
                }
                match page.next_records_url {
                    Some(n) => path = n,
                    None => break 'query,
                }
            }
        }
        // A restart after an expired cursor may meet a record again.
        let mut seen = BTreeSet::new();
        out.retain(|(id, _)| seen.insert(id.clone()));
        Ok(out)
    }

    /// The describe of `object` (`GET /sobjects/{object}/describe`, through
    /// the client), reused for ten minutes.
    pub async fn describe(&self, object: SObject) -> Result<Arc<CrmSchema>, SalesforceError> {
        let now = self.clock.now();
        let mut cache = self.described.lock().await;
        if let Some((at, schema)) = cache.get(&object)
            && now.saturating_sub(*at) < DESCRIBE_TTL_MS
        {
            return Ok(schema.clone());
        }
        let schema = Arc::new(self.client.describe(object).await?);
        cache.insert(object, (now, schema.clone()));
        Ok(schema)
    }

    /// One pass over every configured object. An error (a pause included)
    /// stops it; objects finished before keep their new watermark.
    pub async fn sync(
        &self,
        engine: Option<&Arc<Engine>>,
        opts: SyncOptions,
    ) -> Result<SyncReport, SalesforceError> {
        let mut report = SyncReport::default();
        for object in self.objects() {
            let r = self.sync_object(object, engine, opts, &mut report).await;
            report.api_calls = self.client.stats.total();
            report.limit_exceeded = self
                .client
                .stats
                .limit_exceeded
                .load(std::sync::atomic::Ordering::Relaxed);
            let r = r?;
            report.enriched += r.enriched;
            report.write.merge(&r.write);
            report.objects.push(r);
        }
        Ok(report)
    }

    async fn sync_object(
        &self,
        object: SObject,
        engine: Option<&Arc<Engine>>,
        opts: SyncOptions,
        total: &mut SyncReport,
    ) -> Result<ObjectReport, SalesforceError> {
        let (tx, rx) = mpsc::channel::<Vec<Lead>>(QUEUE_PAGES);
        let sink = QueueSink(tx);
        let puller = self.puller(object);
        let pull = async move {
            let r = puller.pull_uncommitted(&sink, opts.full).await;
            drop(sink);
            r
        };
        let rx = tokio::sync::Mutex::new(rx);
        let (wtx, mut wrx) = mpsc::channel::<Vec<Planned>>(QUEUE_PAGES);
        let shared = std::sync::Mutex::new(ObjectReport::default());
        let failures = std::sync::Mutex::new(Vec::<(String, String)>::new());
        let worker = || {
            let wtx = wtx.clone();
            let rx = &rx;
            let shared = &shared;
            async move {
                loop {
                    let page = rx.lock().await.recv().await;
                    let Some(leads) = page else {
                        return Ok::<(), SalesforceError>(());
                    };
                    match self.handle_page(object, engine, opts, leads).await {
                        Ok((planned, enriched)) => {
                            shared.lock().unwrap_or_else(|e| e.into_inner()).enriched += enriched;
                            if !planned.is_empty() && wtx.send(planned).await.is_err() {
                                rx.lock().await.close();
                                return Ok(());
                            }
                        }
                        Err(e) => {
                            rx.lock().await.close();
                            return Err(e);
                        }
                    }
                }
            }
        };
        let workers = {
            let all: Vec<_> = (0..WORKERS).map(|_| worker()).collect();
            drop(wtx);
            async move {
                let results = futures_util::future::join_all(all).await;
                results
                    .into_iter()
                    .collect::<Result<Vec<()>, _>>()
                    .map(|_| ())
            }
        };
        // The writer: planned writes buffered up to a Bulk job's size; a
        // full buffer is a Bulk job, the rest at the end Collections or
        // Bulk by the threshold.
        let threshold = self.settings.bulk_threshold;
        let flush_at = BULK_JOB_RECORDS.max(threshold + 1);
        let writer = async {
            let mut buffer: Vec<Planned> = Vec::new();
            let mut running = FuturesUnordered::new();
            let mut open = true;
            let mut failed: Option<SalesforceError> = None;
            loop {
                if failed.is_none() && buffer.len() >= flush_at {
                    let chunk: Vec<Planned> = buffer.drain(..flush_at).collect();
                    running.push(self.write_planned(chunk, WritePath::Bulk));
                }
                if !open && failed.is_none() && !buffer.is_empty() {
                    let path = write::choose_path(buffer.len(), threshold);
                    running.push(self.write_planned(std::mem::take(&mut buffer), path));
                }
                if !open && running.is_empty() {
                    return match failed {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                }
                tokio::select! {
                    more = wrx.recv(), if open && running.len() < 2 => match more {
                        Some(p) => buffer.extend(p),
                        None => open = false,
                    },
                    Some(done) = running.next(), if !running.is_empty() => {
                        let (w, f, err) = done;
                        {
                            let mut r = shared.lock().unwrap_or_else(|e| e.into_inner());
                            r.write.merge(&w);
                        }
                        failures.lock().unwrap_or_else(|e| e.into_inner()).extend(f);
                        if let Some(e) = err {
                            wrx.close();
                            open = false;
                            buffer.clear();
                            failed.get_or_insert(e);
                        }
                    }
                }
            }
        };
        let work = async {
            let (w, wr) = tokio::join!(workers, writer);
            // The writer's error explains workers stopped by its closed queue.
            wr.and(w)
        };
        let (pulled, worked) = tokio::join!(pull, work);
        total
            .failures
            .extend(failures.into_inner().unwrap_or_else(|e| e.into_inner()));
        let mut report = shared.into_inner().unwrap_or_else(|e| e.into_inner());
        worked?;
        report.pull = self.puller(object).commit(pulled?).await?;
        Ok(report)
    }

    /// Stores (and, when asked, enriches) one page of leads of `object` and
    /// returns the writes it calls for, and how many leads were enriched.
    async fn handle_page(
        &self,
        object: SObject,
        engine: Option<&Arc<Engine>>,
        opts: SyncOptions,
        leads: Vec<Lead>,
    ) -> Result<(Vec<Planned>, u64), SalesforceError> {
        let view = self.view(object);
        let mut enriched = 0;
        match engine {
            Some(engine) if opts.enrich && view.enabled => {
                let r = engine
                    .enrich(&view, leads.clone(), RunOptions::default())
                    .await
                    .map_err(engine_err)?;
                enriched = r.leads.len() as u64;
            }
            _ => {
                let now = self.clock.now();
                let rows: Vec<(Lead, f64)> = leads
                    .iter()
                    .map(|l| (l.clone(), l.number(&view.fields.icp_score).unwrap_or(0.0)))
                    .collect();
                self.store.upsert_leads(&self.ws.id, &rows, now).await?;
            }
        }
        let planned = if opts.write {
            self.plan_writes(object, leads).await?
        } else {
            Vec::new()
        };
        Ok((planned, enriched))
    }

    /// The field changes `leads` (as last read from Salesforce) call for:
    /// `preview::plan_lead` over the stored values and what enrichd wrote
    /// before, exactly as the preview decides.
    pub async fn plan_writes(
        &self,
        object: SObject,
        leads: Vec<Lead>,
    ) -> Result<Vec<Planned>, SalesforceError> {
        let Some(obj) = self.settings.object(object) else {
            return Ok(Vec::new());
        };
        let view = self.view(object);
        let now = self.clock.now();
        let ids: Vec<LeadId> = leads.iter().map(|l| l.id.clone()).collect();
        let mut stored = self.store.load_leads(&self.ws.id, &ids).await?;
        let ours = self.store.written(&self.ws.id, &ids).await?;
        let mut out = Vec::new();
        for lead in leads {
            let Some(s) = stored.remove(&lead.id) else {
                continue;
            };
            let empty = BTreeMap::new();
            let ours = ours.get(&lead.id).unwrap_or(&empty);
            let p = crate::engine::run::prepare(&view, lead, s, now);
            let plan = crate::preview::plan_lead(&obj.mapping, &p, ours, now);
            let item = WriteItem::from_decisions(object, p.lead.id.clone(), &plan.decisions);
            if !item.changes.is_empty() {
                out.push(Planned { item, lead: p.lead });
            }
        }
        Ok(out)
    }

    /// Decides and writes the changes for `leads` of `object` (Collections
    /// or Bulk by the threshold) and returns the report and per-record
    /// failures.
    pub async fn write_leads(
        &self,
        object: SObject,
        leads: Vec<Lead>,
    ) -> Result<(WriteReport, Vec<(String, String)>), SalesforceError> {
        let planned = self.plan_writes(object, leads).await?;
        let path = write::choose_path(planned.len(), self.settings.bulk_threshold);
        let (report, failures, err) = self.write_planned(planned, path).await;
        match err {
            Some(e) => Err(e),
            None => Ok((report, failures)),
        }
    }

    /// Writes planned changes, records what was written (`crm_written`,
    /// outcomes) and updates the stored copy of each lead. An error that
    /// stopped the write comes back with what was done before it.
    async fn write_planned(
        &self,
        planned: Vec<Planned>,
        path: WritePath,
    ) -> (WriteReport, Vec<(String, String)>, Option<SalesforceError>) {
        if planned.is_empty() {
            return (WriteReport::default(), Vec::new(), None);
        }
        let mut leads: BTreeMap<LeadId, Lead> = BTreeMap::new();
        let mut items = Vec::with_capacity(planned.len());
        for p in planned {
            leads.insert(p.lead.id.clone(), p.lead);
            items.push(p.item);
        }
        let pending = items
            .into_iter()
            .map(write::PendingWrite::new)
            .collect::<Vec<_>>();
        let run = match path {
            WritePath::Collections => writeback::write_collections(&self.client, pending).await,
            WritePath::Bulk => writeback::write_bulk_on(&self.client, pending, &*self.clock).await,
        };
        let mut error = run.error;
        let failures = match self.record(run.outcomes, leads).await {
            Ok(f) => f,
            Err(e) => {
                error.get_or_insert(e);
                Vec::new()
            }
        };
        (run.report, failures, error)
    }

    /// Records final outcomes; returns the per-record failures.
    async fn record(
        &self,
        outcomes: Vec<RecordOutcome>,
        mut leads: BTreeMap<LeadId, Lead>,
    ) -> Result<Vec<(String, String)>, SalesforceError> {
        let now = self.clock.now();
        let mut written = Vec::new();
        let mut rows = Vec::new();
        let mut results = Vec::new();
        let mut failures = Vec::new();
        for o in outcomes {
            match o {
                RecordOutcome::Written {
                    id,
                    written: w,
                    dropped,
                    attempts,
                    object,
                } => {
                    let mut lead = leads.remove(&id);
                    for (field, value) in &w {
                        let v = value.clone().unwrap_or_default();
                        written.push(Written {
                            lead_id: id.clone(),
                            field: field.clone(),
                            value: v.clone(),
                        });
                        if let Some(l) = &mut lead {
                            l.fields.insert(field.clone(), serde_json::Value::String(v));
                        }
                    }
                    let reason = if dropped.is_empty() {
                        String::new()
                    } else {
                        let r = dropped
                            .iter()
                            .map(|d| format!("{} not written: {}", d.field, d.reason))
                            .collect::<Vec<_>>()
                            .join("; ");
                        failures.push((id.to_string(), format!("{object} {id}: {r}")));
                        r
                    };
                    results.push(WriteOutcome {
                        lead_id: id.clone(),
                        state: "done".into(),
                        reason,
                        attempts,
                    });
                    if let Some(l) = lead {
                        let icp = l.number(&self.view(object).fields.icp_score).unwrap_or(0.0);
                        rows.push((l, icp));
                    }
                }
                RecordOutcome::Failed {
                    id,
                    reason,
                    attempts,
                    ..
                } => {
                    failures.push((id.to_string(), reason.clone()));
                    results.push(WriteOutcome {
                        lead_id: id,
                        state: "failed".into(),
                        reason,
                        attempts,
                    });
                }
                // The runner resolves every retry before it returns.
                RecordOutcome::Retry { .. } => {}
            }
        }
        self.store
            .record_writes(&self.ws.id, &written, &results, now)
            .await?;
        if !rows.is_empty() {
            self.store.upsert_leads(&self.ws.id, &rows, now).await?;
        }
        Ok(failures)
    }

    /// Handles recorded Outbound-Message events, [`EVENTS_PER_ROUND`] at a
    /// time: an event about enrichd's own write
    /// ([`OwnChangeRule`]: last modified by the integration user) is marked
    /// ignored; the others' records are read again by Id (SOQL), enriched
    /// and written back, and their events marked done once that round's
    /// writes are in. A pause stops the loop with the round's events still
    /// pending (they are handled after the pause).
    pub async fn process_events(
        &self,
        engine: Option<&Arc<Engine>>,
        opts: SyncOptions,
    ) -> Result<EventsReport, SalesforceError> {
        let mut report = EventsReport::default();
        let mut rule: Option<OwnChangeRule> = None;
        loop {
            let events = self
                .store
                .pending_events(&self.ws.id, CRM, EVENTS_PER_ROUND as i64)
                .await?;
            if events.is_empty() {
                break;
            }
            if rule.is_none() {
                let user = self.client.session().await?.user_id;
                rule = Some(OwnChangeRule {
                    integration_user_id: (!user.is_empty()).then_some(user),
                });
            }
            let rule = rule.clone().unwrap_or_default();
            let mut finish = Vec::new();
            let mut wanted: BTreeMap<SObject, BTreeSet<LeadId>> = BTreeMap::new();
            for e in &events {
                let object = SObject::of_id(e.lead_id.as_str());
                let verdict = match object {
                    _ if e.kind != event_kind(SObject::Lead)
                        && e.kind != event_kind(SObject::Contact) =>
                    {
                        Err(format!("event type {} does not trigger enrichment", e.kind))
                    }
                    None => Err(format!(
                        "`{}` is not a Lead or Contact Id",
                        e.lead_id.as_str()
                    )),
                    Some(o) if self.settings.object(o).is_none() => Err(format!(
                        "enrichd does not sync {o} records in this workspace"
                    )),
                    Some(o) => match rule.own_change_event(e) {
                        Some(why) => Err(why),
                        None => Ok(o),
                    },
                };
                match verdict {
                    Ok(o) => {
                        wanted.entry(o).or_default().insert(e.lead_id.clone());
                        finish.push((e.dedupe_key.clone(), EventState::Done, String::new()));
                    }
                    Err(why) => {
                        report.ignored += 1;
                        finish.push((e.dedupe_key.clone(), EventState::Ignored, why));
                    }
                }
            }
            for (object, ids) in wanted {
                let ids: Vec<LeadId> = ids.into_iter().collect();
                let leads = self.puller(object).by_ids(&ids).await?;
                report.leads += leads.len() as u64;
                let (planned, enriched) = self.handle_page(object, engine, opts, leads).await?;
                report.enriched += enriched;
                let path = write::choose_path(
                    planned.len(),
                    self.settings.bulk_threshold.max(COLLECTION_MAX),
                );
                let (w, f, err) = self.write_planned(planned, path).await;
                report.write.merge(&w);
                report.failures.extend(f);
                if let Some(e) = err {
                    return Err(e);
                }
            }
            report.events += events.len() as u64;
            self.store.finish_events(&self.ws.id, CRM, &finish).await?;
        }
        Ok(report)
    }
}

struct QueueSink(mpsc::Sender<Vec<Lead>>);

impl PageSink for QueueSink {
    fn page(
        &self,
        leads: Vec<Lead>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SalesforceError>> + Send + '_>>
    {
        Box::pin(async move {
            self.0
                .send(leads)
                .await
                .map_err(|_| SalesforceError::Transport {
                    endpoint: "sync".into(),
                    message:
                        "the enrichment side of the sync stopped (see the error before this one)"
                            .into(),
                })
        })
    }
}

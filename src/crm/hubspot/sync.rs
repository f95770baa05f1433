//! One HubSpot connection of one workspace, end to end: pull (backfill or
//! incremental) → store and enrich → decide the field changes (the pure
//! mapping) → batched write-back, pipelined through a bounded queue so the
//! pull keeps reading while earlier pages are enriched and written; and the
//! handling of recorded webhook events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::config::crm::{CrmSettings, HubSpotSettings};
use crate::config::{Settings, Workspace};
use crate::core::lead::{Lead, LeadId};
use crate::crypto::TokenCipher;
use crate::engine::{Engine, RunOptions};
use crate::store::Store;
use crate::store::crm::{EventState, WriteOutcome, Written};

use super::HubSpotError;
use super::auth::{CRM, Tokens};
use super::client::HubSpotClient;
use super::pull::{PageSink, PullReport, Puller};
use super::write::{BATCH_UPDATE, WriteItem, WriteReport, write_back};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

/// Pages waiting between the pull and enrichment/write-back.
const QUEUE_PAGES: usize = 4;
/// Batch updates in flight at once (each waits on HubSpot's latency).
const WRITERS: usize = 4;

/// One contact's planned write, with the lead as read (to update the
/// stored copy once written).
#[derive(Debug, Clone)]
pub struct Planned {
    pub item: WriteItem,
    pub lead: Lead,
}

pub use crate::crm::SyncOptions;

#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub pull: PullReport,
    pub enriched: u64,
    pub write: WriteReport,
    /// Per-record write failures (lead, reason).
    pub failures: Vec<(String, String)>,
    pub api_calls: u64,
    pub rate_limited: u64,
}

pub struct HubSpot {
    pub ws: Arc<Workspace>,
    pub settings: Arc<HubSpotSettings>,
    pub client: Arc<HubSpotClient>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// The mapped properties were checked (and created) by this connector.
    schema_checked: std::sync::atomic::AtomicBool,
}

impl HubSpot {
    /// The workspace's HubSpot connection as configured (`None` when the
    /// workspace has no HubSpot CRM).
    pub fn open(
        settings: &Settings,
        ws: &Arc<Workspace>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<HubSpot>, HubSpotError> {
        let Some(CrmSettings::HubSpot(h)) = &ws.crm else {
            return Ok(None);
        };
        let cipher = match &settings.master_key {
            Some(k) => Some(Arc::new(
                TokenCipher::from_key_text(&settings.master_key_env, k.expose()).map_err(|e| {
                    HubSpotError::Auth {
                        message: e.to_string(),
                        hint: "create a key with `enrichd keygen`".into(),
                    }
                })?,
            )),
            None => None,
        };
        let http = HubSpotClient::http(h.timeout)?;
        let tokens = Tokens::new(
            ws.id.clone(),
            h.clone(),
            store.clone(),
            cipher,
            clock.clone(),
            http.clone(),
        );
        let client = Arc::new(HubSpotClient::new(h.clone(), tokens, clock.clone(), http));
        Ok(Some(HubSpot {
            ws: ws.clone(),
            settings: h.clone(),
            client,
            store,
            clock,
            schema_checked: Default::default(),
        }))
    }

    pub fn puller(&self) -> Puller {
        Puller {
            client: self.client.clone(),
            store: self.store.clone(),
            ws: self.ws.clone(),
            clock: self.clock.clone(),
            dry_run: false,
        }
    }

    /// A puller for dry runs: it reads, and never moves the watermark.
    pub fn dry_run_puller(&self) -> Puller {
        Puller {
            dry_run: true,
            ..self.puller()
        }
    }

    /// One sync pass. Leads go through a bounded queue to enrichment and
    /// write-back while the pull goes on.
    pub async fn sync(
        &self,
        engine: Option<&Arc<Engine>>,
        opts: SyncOptions,
    ) -> Result<SyncReport, HubSpotError> {
        if opts.write {
            self.ensure_schema().await?;
        }
        let (tx, rx) = mpsc::channel::<Vec<Lead>>(QUEUE_PAGES);
        let sink = QueueSink(tx);
        let puller = self.puller();
        // The pull's watermark is saved only after every page it handed on
        // was enriched and written (below): a crash before that reads them
        // again on the next pass.
        let pull = async move {
            let state = puller.state().await?;
            let r = if opts.full || !state.backfill_done {
                puller.backfill_uncommitted(&sink).await
            } else {
                puller.incremental_uncommitted(&sink).await
            };
            drop(sink);
            r
        };
        // Pages are handled by WORKERS at once (enrichment and write-back
        // wait on providers and HubSpot's latency), all taking from the one
        // bounded queue: memory stays flat, the pull never waits for long.
        let rx = tokio::sync::Mutex::new(rx);
        let (wtx, mut wrx) = mpsc::channel::<Vec<Planned>>(QUEUE_PAGES);
        let shared = std::sync::Mutex::new(SyncReport::default());
        let worker = || {
            let wtx = wtx.clone();
            let rx = &rx;
            let shared = &shared;
            async move {
                loop {
                    let page = rx.lock().await.recv().await;
                    let Some(leads) = page else {
                        return Ok::<(), HubSpotError>(());
                    };
                    let mut part = SyncReport::default();
                    match self.handle_page(engine, opts, leads, &mut part).await {
                        Ok(planned) => {
                            if !planned.is_empty() && wtx.send(planned).await.is_err() {
                                rx.lock().await.close();
                                return Ok(());
                            }
                        }
                        Err(e) => {
                            // Stop the pull too: nobody would take its pages.
                            rx.lock().await.close();
                            return Err(e);
                        }
                    }
                    shared.lock().unwrap_or_else(|e| e.into_inner()).enriched += part.enriched;
                }
            }
        };
        let workers = {
            let (a, b, c, d) = (worker(), worker(), worker(), worker());
            drop(wtx);
            async move {
                let (a, b, c, d) = tokio::join!(a, b, c, d);
                a.and(b).and(c).and(d)
            }
        };
        // The writer: changes from any page, re-batched to full batches of
        // 100 and sent WRITERS at a time.
        let writer = async {
            let mut buffer: Vec<Planned> = Vec::new();
            let mut running = FuturesUnordered::new();
            let mut open = true;
            loop {
                while buffer.len() >= BATCH_UPDATE || (!open && !buffer.is_empty()) {
                    if running.len() >= WRITERS {
                        break;
                    }
                    let n = buffer.len().min(BATCH_UPDATE);
                    let chunk: Vec<Planned> = buffer.drain(..n).collect();
                    running.push(self.write_batch(chunk));
                }
                if !open && buffer.is_empty() && running.is_empty() {
                    return Ok::<(), HubSpotError>(());
                }
                tokio::select! {
                    more = wrx.recv(), if open && running.len() < WRITERS => match more {
                        Some(p) => buffer.extend(p),
                        None => open = false,
                    },
                    Some(done) = running.next(), if !running.is_empty() => {
                        let (w, f) = match done {
                            Ok(x) => x,
                            Err(e) => {
                                wrx.close();
                                return Err(e);
                            }
                        };
                        let mut r = shared.lock().unwrap_or_else(|e| e.into_inner());
                        merge(&mut r.write, &w);
                        r.failures.extend(f);
                    }
                }
            }
        };
        let work = async {
            let (w, wr) = tokio::join!(workers, writer);
            w.and(wr)
        };
        let (pulled, worked) = tokio::join!(pull, work);
        // A worker's error explains a pull stopped by the closed queue.
        worked?;
        let mut report = shared.into_inner().unwrap_or_else(|e| e.into_inner());
        report.pull = self.puller().commit(pulled?).await?;
        report.api_calls = self.client.stats.total();
        report.rate_limited = self
            .client
            .stats
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed);
        Ok(report)
    }

    /// Stores (and, when asked, enriches) one page of leads and returns the
    /// writes it calls for.
    async fn handle_page(
        &self,
        engine: Option<&Arc<Engine>>,
        opts: SyncOptions,
        leads: Vec<Lead>,
        report: &mut SyncReport,
    ) -> Result<Vec<Planned>, HubSpotError> {
        match engine {
            Some(engine) if opts.enrich && self.ws.enabled => {
                let r = engine
                    .enrich(&self.ws, leads.clone(), RunOptions::default())
                    .await
                    .map_err(|e| HubSpotError::Transport {
                        endpoint: "enrichment".into(),
                        message: e.to_string(),
                    })?;
                report.enriched += r.leads.len() as u64;
            }
            _ => {
                let now = self.clock.now();
                let rows: Vec<(Lead, f64)> = leads
                    .iter()
                    .map(|l| {
                        (
                            l.clone(),
                            l.number(&self.ws.fields.icp_score).unwrap_or(0.0),
                        )
                    })
                    .collect();
                self.store.upsert_leads(&self.ws.id, &rows, now).await?;
            }
        }
        if opts.write {
            self.plan_writes(leads).await
        } else {
            Ok(Vec::new())
        }
    }

    /// Checks (and creates, when allowed) the mapped properties, once per
    /// connector: a write never goes to a property that is not there.
    pub async fn ensure_schema(&self) -> Result<super::schema::SchemaReport, HubSpotError> {
        use std::sync::atomic::Ordering;
        if self.schema_checked.load(Ordering::Acquire) {
            return Ok(Default::default());
        }
        let r = super::schema::ensure(
            &self.client,
            &self.settings.mapping,
            self.settings.create_properties,
        )
        .await?;
        self.schema_checked.store(true, Ordering::Release);
        Ok(r)
    }

    /// The field changes `leads` (as last read from HubSpot) call for: the
    /// pure mapping over the stored values and what enrichd wrote before.
    pub async fn plan_writes(&self, leads: Vec<Lead>) -> Result<Vec<Planned>, HubSpotError> {
        let now = self.clock.now();
        let ids: Vec<LeadId> = leads.iter().map(|l| l.id.clone()).collect();
        let stored = self.store.load_leads(&self.ws.id, &ids).await?;
        let ours = self.store.written(&self.ws.id, &ids).await?;
        let m = &self.settings.mapping;
        let groups: Vec<Vec<String>> = m
            .channels
            .values()
            .filter_map(|r| {
                r.source
                    .as_ref()
                    .map(|s| vec![r.value.field.clone(), s.field.clone()])
            })
            .collect();
        let mut stored = stored;
        let mut out = Vec::new();
        for lead in leads {
            let Some(s) = stored.remove(&lead.id) else {
                continue;
            };
            let empty = BTreeMap::new();
            let ours = ours.get(&lead.id).unwrap_or(&empty);
            // The same decision the preview shows (crate::preview::plan_lead).
            let p = crate::engine::run::prepare(&self.ws, lead, s, now);
            let changes = crate::preview::plan_lead(m, &p, ours, now).changes();
            if !changes.is_empty() {
                out.push(Planned {
                    item: WriteItem {
                        lead_id: p.lead.id.clone(),
                        changes,
                        groups: groups.clone(),
                    },
                    lead: p.lead,
                });
            }
        }
        Ok(out)
    }

    /// Decides and writes the changes for `leads`, in batches of 100, and
    /// returns per-record failures.
    pub async fn write_leads(
        &self,
        leads: &[Lead],
    ) -> Result<(WriteReport, Vec<(String, String)>), HubSpotError> {
        let planned = self.plan_writes(leads.to_vec()).await?;
        let mut report = WriteReport::default();
        let mut failures = Vec::new();
        let mut running = FuturesUnordered::new();
        let mut planned = planned.into_iter().peekable();
        while planned.peek().is_some() || !running.is_empty() {
            while running.len() < WRITERS && planned.peek().is_some() {
                let chunk: Vec<Planned> = planned.by_ref().take(BATCH_UPDATE).collect();
                running.push(self.write_batch(chunk));
            }
            if let Some(done) = running.next().await {
                let (w, f) = done?;
                merge(&mut report, &w);
                failures.extend(f);
            }
        }
        Ok((report, failures))
    }

    /// Writes one batch (retries and per-record results included), records
    /// what was written and updates the stored copy of each lead.
    async fn write_batch(
        &self,
        planned: Vec<Planned>,
    ) -> Result<(WriteReport, Vec<(String, String)>), HubSpotError> {
        if planned.is_empty() {
            return Ok((WriteReport::default(), Vec::new()));
        }
        let now = self.clock.now();
        let (items, leads): (Vec<WriteItem>, Vec<Lead>) =
            planned.into_iter().map(|p| (p.item, p.lead)).unzip();
        let (report, results) = write_back(&self.client, items).await?;
        let mut written = Vec::new();
        let mut outcomes = Vec::new();
        let mut failures = Vec::new();
        let mut updated: BTreeMap<LeadId, BTreeMap<String, String>> = BTreeMap::new();
        for r in results {
            for (field, value) in &r.written {
                written.push(Written {
                    lead_id: r.lead_id.clone(),
                    field: field.clone(),
                    value: value.clone(),
                });
            }
            if !r.written.is_empty() {
                updated.insert(r.lead_id.clone(), r.written.clone());
            }
            if let Some(f) = &r.failure {
                failures.push((r.lead_id.to_string(), f.clone()));
            }
            outcomes.push(WriteOutcome {
                lead_id: r.lead_id,
                state: if r.failure.is_some() {
                    "failed"
                } else {
                    "done"
                }
                .into(),
                reason: r.failure.unwrap_or_default(),
                attempts: r.attempts,
            });
        }
        self.store
            .record_writes(&self.ws.id, &written, &outcomes, now)
            .await?;
        // The stored copy of each lead now shows what HubSpot holds.
        let rows: Vec<(Lead, f64)> = leads
            .into_iter()
            .filter_map(|mut l| {
                let w = updated.get(&l.id)?;
                for (k, v) in w {
                    l.fields
                        .insert(k.clone(), serde_json::Value::String(v.clone()));
                }
                let icp = l.number(&self.ws.fields.icp_score).unwrap_or(0.0);
                Some((l, icp))
            })
            .collect();
        if !rows.is_empty() {
            self.store.upsert_leads(&self.ws.id, &rows, now).await?;
        }
        Ok((report, failures))
    }

    /// Handles recorded webhook events: enrichd's own writes and changes to
    /// properties that are not inputs are marked ignored; the rest are read
    /// again (batch read), enriched and written back.
    pub async fn process_events(
        &self,
        engine: Option<&Arc<Engine>>,
        opts: SyncOptions,
    ) -> Result<EventsReport, HubSpotError> {
        let mut report = EventsReport::default();
        let inputs = self.input_properties();
        let outputs: BTreeSet<String> = self
            .settings
            .mapping
            .fields()
            .into_iter()
            .map(String::from)
            .collect();
        loop {
            // One batch read and one batch update per chunk, and the chunk's
            // events are marked done as soon as its writes are in: a process
            // stopped mid-way redoes at most one chunk.
            let events = self
                .store
                .pending_events(&self.ws.id, CRM, BATCH_UPDATE as i64)
                .await?;
            if events.is_empty() {
                break;
            }
            let ids: Vec<LeadId> = events.iter().map(|e| e.lead_id.clone()).collect();
            let ours = self.store.written(&self.ws.id, &ids).await?;
            let mut finish = Vec::new();
            let mut wanted: BTreeSet<LeadId> = BTreeSet::new();
            for e in &events {
                let verdict = match (e.kind.as_str(), e.property.as_deref()) {
                    ("contact.creation", _) => Ok(()),
                    ("contact.propertyChange", Some(p)) if outputs.contains(p) => {
                        Err("a property enrichd writes (no loop)".to_string())
                    }
                    ("contact.propertyChange", Some(p))
                        if ours
                            .get(&e.lead_id)
                            .and_then(|w| w.get(p))
                            .is_some_and(|v| Some(v) == e.value.as_ref()) =>
                    {
                        Err("enrichd's own write coming back".to_string())
                    }
                    ("contact.propertyChange", Some(p)) if inputs.contains(p) => Ok(()),
                    ("contact.propertyChange", Some(p)) => {
                        Err(format!("`{p}` is not an input of enrichment"))
                    }
                    (k, _) => Err(format!("event type {k} does not trigger enrichment")),
                };
                match verdict {
                    Ok(()) => {
                        wanted.insert(e.lead_id.clone());
                        finish.push((e.dedupe_key.clone(), EventState::Done, String::new()));
                    }
                    Err(why) => {
                        report.ignored += 1;
                        finish.push((e.dedupe_key.clone(), EventState::Ignored, why));
                    }
                }
            }
            if !wanted.is_empty() {
                let ids: Vec<LeadId> = wanted.into_iter().collect();
                let leads = self.puller().by_ids(&ids).await?;
                report.leads += leads.len() as u64;
                let mut sync = SyncReport::default();
                let planned = self.handle_page(engine, opts, leads, &mut sync).await?;
                report.enriched += sync.enriched;
                for chunk in planned.chunks(BATCH_UPDATE) {
                    let (w, _) = self.write_batch(chunk.to_vec()).await?;
                    merge(&mut report.write, &w);
                }
            }
            report.events += events.len() as u64;
            self.store.finish_events(&self.ws.id, CRM, &finish).await?;
        }
        Ok(report)
    }

    /// Contact properties whose change can change what enrichment finds.
    pub fn input_properties(&self) -> BTreeSet<String> {
        let f = &self.ws.fields;
        // The ICP score only orders work; it does not change what is found.
        let mut set: BTreeSet<String> = f
            .names()
            .filter(|n| *n != f.icp_score)
            .map(String::from)
            .collect();
        for a in &self.ws.audiences {
            for c in &a.conditions {
                set.insert(c.field.clone());
            }
        }
        for f in self.settings.mapping.fields() {
            set.remove(f);
        }
        set
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsReport {
    pub events: u64,
    pub ignored: u64,
    pub leads: u64,
    pub enriched: u64,
    pub write: WriteReport,
}

fn merge(into: &mut WriteReport, w: &WriteReport) {
    into.batches += w.batches;
    into.records_written += w.records_written;
    into.fields_written += w.fields_written;
    into.records_failed += w.records_failed;
    into.retried += w.retried;
    into.missing_properties
        .extend(w.missing_properties.iter().cloned());
}

struct QueueSink(mpsc::Sender<Vec<Lead>>);

impl PageSink for QueueSink {
    fn page(
        &self,
        leads: Vec<Lead>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HubSpotError>> + Send + '_>>
    {
        Box::pin(async move {
            self.0
                .send(leads)
                .await
                .map_err(|_| HubSpotError::Transport {
                    endpoint: "sync".into(),
                    message: "the enrichment side of the sync stopped".into(),
                })
        })
    }
}

/// The webhook endpoint's routing for every workspace connected to
/// HubSpot: portal id (from the stored connection, or `portal_id` in the
/// config for private apps) → workspace and the secret signatures are
/// checked with. `public_url` is what HubSpot signed (`server.public_url` +
/// `/webhooks/hubspot`).
pub async fn webhook_state(
    settings: &Settings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    public_url: String,
) -> Result<super::webhook::WebhookState, HubSpotError> {
    let mut portals = std::collections::HashMap::new();
    for ws in &settings.workspaces {
        let Some(CrmSettings::HubSpot(h)) = &ws.crm else {
            continue;
        };
        let Some(secret) = h.webhook_secret.clone() else {
            tracing::warn!(workspace = %ws.id, "no webhook secret configured: HubSpot webhooks for this workspace are refused");
            continue;
        };
        let portal = match h.portal_id {
            Some(p) => Some(p),
            None => store
                .connection(&ws.id, CRM)
                .await?
                .and_then(|c| c.account.parse::<u64>().ok()),
        };
        let Some(portal) = portal else {
            tracing::warn!(workspace = %ws.id, "HubSpot portal unknown (not connected yet): its webhooks are refused");
            continue;
        };
        portals.insert(
            portal,
            super::webhook::PortalRoute {
                workspace: ws.id.clone(),
                secrets: vec![secret],
            },
        );
    }
    Ok(super::webhook::WebhookState {
        portals,
        public_url,
        sink: Arc::new(crate::crm::StoreSink {
            store,
            clock: clock.clone(),
        }),
        clock,
    })
}

//! Reading contacts (reference/hubspot.md §2.2–2.5).
//!
//! **Backfill.** The list API (100 per page, a cursor chain, general bucket)
//! reads ascending by id while the search API (200 per page, its own
//! 5-per-second bucket, offsets so two pages can be in flight) reads
//! descending by `hs_object_id`; they stop where they meet. A [`Meet`]
//! under a mutex decides which side keeps each id, so every contact is kept
//! exactly once. Search restarts with `hs_object_id < lowest seen` before
//! its 10,000-result cap.
//!
//! **Incremental.** Search on `lastmodifieddate` in [watermark − lookback,
//! sync start], sorted by `hs_object_id` ascending, 200 per page, restarting
//! with `hs_object_id > last` at the cap, so nothing is missed and nothing
//! loops even when more than 10,000 contacts share one timestamp. The
//! watermark becomes the sync's start only once every page was handled.
//!
//! **Companies.** The list API returns each contact's company inline
//! (`associations=companies`); search results need one v4 association batch
//! read per 1,000 contacts (exempt from the ten-secondly limit). Company
//! name and domain come from the store's cache, or from batch reads of 100
//! for companies not seen within `company_ttl`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::clock::Clock;
use crate::config::Workspace;
use crate::core::lead::{Lead, LeadId};
use crate::core::value::UnixMillis;
use crate::store::Store;
use crate::store::crm::{CompanyRow, SyncState};

use super::HubSpotError;
use super::auth::CRM;
use super::client::{HubSpotClient, Method};
use super::limits::BucketKind;

pub const LIST_PAGE: usize = 100;
pub const SEARCH_PAGE: usize = 200;
/// "limited to 10,000 total results for any given query".
pub const SEARCH_CAP: usize = 10_000;
/// v4 association batch read: inputs per call.
pub const ASSOC_BATCH: usize = 1_000;
pub const BATCH: usize = 100;
/// Search pages requested at once within one query (offsets are known).
const SEARCH_IN_FLIGHT: usize = 2;

pub const OBJECT: &str = "contacts";
/// HubSpot's read-only contact property holding the primary associated
/// company's id. When an answer carries it (even as null) no association
/// call is needed; when it does not, the v4 association batch read is used.
pub const PRIMARY_COMPANY: &str = "associatedcompanyid";

/// A contact as read, before company fields are merged in.
#[derive(Debug, Clone)]
pub struct RawContact {
    pub id: String,
    pub properties: serde_json::Map<String, Value>,
    /// From inline associations (list) — `None` when not read yet.
    pub company: Option<Option<String>>,
}

/// What a pull did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullReport {
    pub contacts: u64,
    pub from_list: u64,
    pub from_search: u64,
    /// Read by `batch/read` of ids found through company associations.
    pub from_batch_read: u64,
    /// The by-company backfill missed contacts and the id-range one ran too.
    pub fallback: bool,
    pub search_restarts: u64,
    pub companies_read: u64,
    pub pages: u64,
    /// The watermark saved at the end (the sync's start).
    pub watermark: Option<UnixMillis>,
}

/// Where pulled leads go (stored, then enriched and written back). Called
/// with one page at a time; an error stops the pull without moving the
/// watermark.
pub trait PageSink: Send + Sync {
    fn page(
        &self,
        leads: Vec<Lead>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HubSpotError>> + Send + '_>>;
}

/// A pull that read everything, whose sync state is not saved yet
/// ([`Puller::commit`]).
#[must_use = "the watermark moves only when the pull is committed"]
#[derive(Debug)]
pub struct Pulled {
    pub report: PullReport,
    state: SyncState,
}

pub struct Puller {
    pub client: Arc<HubSpotClient>,
    pub store: Arc<dyn Store>,
    pub ws: Arc<Workspace>,
    pub clock: Arc<dyn Clock>,
    /// A dry run reads without moving the sync's watermark (the company
    /// cache, a copy of CRM data, is still kept).
    pub dry_run: bool,
}

/// Which side of the backfill keeps which ids.
#[derive(Debug)]
struct Meet {
    /// Every id ≤ this was kept by the list.
    list_ceiling: u64,
    /// Every id ≥ this was kept by the search (`u64::MAX`: nothing yet).
    search_floor: u64,
    done: bool,
}

/// Pages waiting for their companies, and the companies still to read.
#[derive(Default)]
struct Companies {
    pages: Vec<Vec<RawContact>>,
    unknown: BTreeSet<String>,
}

/// Pages held back at most to fill company batch reads (memory stays flat).
const MAX_PARKED_PAGES: usize = 8;
/// Fetched pages waiting for their companies.
const RESOLVE_QUEUE: usize = 8;

type Pages = tokio::sync::mpsc::Sender<Vec<RawContact>>;

async fn send(out: &Pages, kept: Vec<RawContact>) -> Result<(), HubSpotError> {
    if kept.is_empty() {
        return Ok(());
    }
    out.send(kept).await.map_err(|_| HubSpotError::Transport {
        endpoint: "pull".into(),
        message: "reading companies stopped (see the error before this one)".into(),
    })
}

#[derive(Clone, Copy)]
enum Side {
    List,
    Search,
}

fn id_num(id: &str) -> u64 {
    id.parse().unwrap_or(0)
}

impl Puller {
    /// Contact properties to read: identity, audiences, mapped fields,
    /// configured extras, and the sync cursor fields.
    pub fn properties(&self) -> Vec<String> {
        let f = &self.ws.fields;
        let mut set: BTreeSet<String> = f.names().map(String::from).collect();
        for a in &self.ws.audiences {
            for c in &a.conditions {
                set.insert(c.field.clone());
            }
            if let Some(p) = &a.persona {
                set.insert(p.title_field.clone());
                set.insert(p.seniority_field.clone());
            }
        }
        if let Some(crate::config::crm::CrmSettings::HubSpot(h)) = &self.ws.crm {
            set.extend(h.mapping.fields().into_iter().map(String::from));
            set.extend(h.properties.iter().cloned());
        }
        set.insert("hs_object_id".into());
        set.insert("lastmodifieddate".into());
        // The primary company's id: the association, without a v4 call.
        set.insert(PRIMARY_COMPANY.into());
        // Company fields come from the company record.
        set.remove(&f.company_domain);
        set.into_iter().collect()
    }

    /// Reads every contact (see `backfill.rs`) and sets the watermark to
    /// the backfill's start. Only for a sink that has handled each page
    /// when `page` returns; otherwise see [`Puller::backfill_uncommitted`].
    pub async fn backfill(&self, sink: &dyn PageSink) -> Result<PullReport, HubSpotError> {
        let pulled = self.backfill_uncommitted(sink).await?;
        self.commit(pulled).await
    }

    /// Reads every contact; the watermark and `backfill_done` are saved by
    /// [`Puller::commit`], once the caller has handled every page.
    pub async fn backfill_uncommitted(&self, sink: &dyn PageSink) -> Result<Pulled, HubSpotError> {
        let start = self.clock.now();
        let report = Mutex::new(PullReport::default());
        self.backfill_by_company(sink, &report).await?;
        let mut state = self.store.sync_state(&self.ws.id, CRM, OBJECT).await?;
        state.watermark = Some(start);
        state.backfill_done = true;
        state.last_error = None;
        let mut r = report.into_inner().unwrap_or_else(|e| e.into_inner());
        r.watermark = Some(start);
        Ok(Pulled { report: r, state })
    }

    /// Saves the sync state a finished pull reached (nothing on a dry run).
    /// Call it only once every page the pull handed on was handled: a
    /// watermark saved earlier would let a crash lose the pages still in
    /// flight (the next pass starts from the watermark).
    pub async fn commit(&self, pulled: Pulled) -> Result<PullReport, HubSpotError> {
        let Pulled { report, mut state } = pulled;
        state.last_sync_at = Some(self.clock.now());
        if !self.dry_run {
            self.store
                .save_sync_state(&self.ws.id, CRM, OBJECT, &state)
                .await?;
        }
        Ok(report)
    }

    /// Reads every contact by id range: the list API ascending and the
    /// search API descending until they meet.
    pub async fn backfill_by_id(
        &self,
        sink: &dyn PageSink,
        report: &Mutex<PullReport>,
    ) -> Result<(), HubSpotError> {
        let props = self.properties();
        let meet = Mutex::new(Meet {
            list_ceiling: 0,
            search_floor: u64::MAX,
            done: false,
        });
        let (l, s) = tokio::join!(
            self.list_side(&props, &meet, report, sink),
            self.search_side(&props, &meet, report, sink)
        );
        l?;
        s
    }

    async fn list_side(
        &self,
        props: &[String],
        meet: &Mutex<Meet>,
        report: &Mutex<PullReport>,
        sink: &dyn PageSink,
    ) -> Result<(), HubSpotError> {
        let (tx, rx) = tokio::sync::mpsc::channel(RESOLVE_QUEUE);
        let fetch = async {
            let r = self.list_pages(props, meet, report, &tx).await;
            drop(tx);
            r
        };
        let (fetched, resolved) = tokio::join!(fetch, self.resolve(rx, report, sink));
        resolved?;
        fetched
    }

    async fn list_pages(
        &self,
        props: &[String],
        meet: &Mutex<Meet>,
        report: &Mutex<PullReport>,
        out: &Pages,
    ) -> Result<(), HubSpotError> {
        let mut after: Option<String> = None;
        loop {
            if meet.lock().unwrap_or_else(|e| e.into_inner()).done {
                return Ok(());
            }
            let mut path = format!(
                "/crm/v3/objects/contacts?limit={LIST_PAGE}&archived=false&associations=companies&properties={}",
                enc(&props.join(","))
            );
            if let Some(a) = &after {
                path.push_str("&after=");
                path.push_str(&enc(a));
            }
            let answer = self
                .client
                .call(BucketKind::General, Method::Get, &path, None)
                .await?;
            let contacts = parse_results(&answer.body, "GET /crm/v3/objects/contacts", true)?;
            let next = answer
                .body
                .pointer("/paging/next/after")
                .and_then(Value::as_str)
                .map(String::from);
            let (kept, finished) = {
                let mut m = meet.lock().unwrap_or_else(|e| e.into_inner());
                let floor = m.search_floor;
                let kept: Vec<RawContact> = contacts
                    .into_iter()
                    .filter(|c| id_num(&c.id) < floor)
                    .collect();
                if let Some(max) = kept.iter().map(|c| id_num(&c.id)).max() {
                    m.list_ceiling = m.list_ceiling.max(max);
                }
                let finished = next.is_none()
                    || kept.len() < LIST_PAGE && floor != u64::MAX
                    || m.list_ceiling.saturating_add(1) >= floor;
                if finished {
                    m.done = true;
                }
                (kept, finished)
            };
            self.count(&kept, Side::List, report);
            send(out, kept).await?;
            if finished {
                return Ok(());
            }
            after = next;
        }
    }

    async fn search_side(
        &self,
        props: &[String],
        meet: &Mutex<Meet>,
        report: &Mutex<PullReport>,
        sink: &dyn PageSink,
    ) -> Result<(), HubSpotError> {
        let (tx, rx) = tokio::sync::mpsc::channel(RESOLVE_QUEUE);
        let fetch = async {
            let r = self.search_pages(props, meet, report, &tx).await;
            drop(tx);
            r
        };
        let (fetched, resolved) = tokio::join!(fetch, self.resolve(rx, report, sink));
        resolved?;
        fetched
    }

    async fn search_pages(
        &self,
        props: &[String],
        meet: &Mutex<Meet>,
        report: &Mutex<PullReport>,
        out: &Pages,
    ) -> Result<(), HubSpotError> {
        // Each query: ids below the lowest kept so far, descending.
        let mut below: Option<u64> = None;
        loop {
            let filters: Vec<Value> = below
                .map(|b| vec![json!({"propertyName": "hs_object_id", "operator": "LT", "value": b.to_string()})])
                .unwrap_or_default();
            let mut offset = 0usize;
            let mut lowest_this_query: Option<u64> = None;
            let mut exhausted = false;
            while offset < SEARCH_CAP && !exhausted {
                if meet.lock().unwrap_or_else(|e| e.into_inner()).done {
                    return Ok(());
                }
                // Up to SEARCH_IN_FLIGHT pages of this query at once.
                let offsets: Vec<usize> = (0..SEARCH_IN_FLIGHT)
                    .map(|i| offset + i * SEARCH_PAGE)
                    .filter(|o| o + SEARCH_PAGE <= SEARCH_CAP)
                    .collect();
                let calls = offsets.iter().map(|o| {
                    let body = json!({
                        "filterGroups": if filters.is_empty() { json!([]) } else { json!([{"filters": filters}]) },
                        "sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}],
                        "properties": props,
                        "limit": SEARCH_PAGE,
                        "after": o.to_string(),
                    });
                    async move {
                        self.client
                            .call(BucketKind::Search, Method::Post, "/crm/v3/objects/contacts/search", Some(&body))
                            .await
                    }
                });
                let answers = futures_util::future::join_all(calls).await;
                for answer in answers {
                    let answer = answer?;
                    let contacts =
                        parse_results(&answer.body, "POST /crm/v3/objects/contacts/search", false)?;
                    let has_next = answer.body.pointer("/paging/next/after").is_some();
                    offset += SEARCH_PAGE;
                    let n = contacts.len();
                    let (kept, finished) = {
                        let mut m = meet.lock().unwrap_or_else(|e| e.into_inner());
                        if m.done {
                            return Ok(());
                        }
                        let ceiling = m.list_ceiling;
                        let kept: Vec<RawContact> = contacts
                            .into_iter()
                            .filter(|c| id_num(&c.id) > ceiling)
                            .collect();
                        if let Some(min) = kept.iter().map(|c| id_num(&c.id)).min() {
                            m.search_floor = m.search_floor.min(min);
                            lowest_this_query = Some(lowest_this_query.map_or(min, |l| l.min(min)));
                        }
                        let finished = kept.len() < n
                            || !has_next && n < SEARCH_PAGE
                            || m.search_floor <= ceiling.saturating_add(1);
                        if finished {
                            m.done = true;
                        }
                        (kept, finished)
                    };
                    self.count(&kept, Side::Search, report);
                    send(out, kept).await?;
                    if finished {
                        return Ok(());
                    }
                    if !has_next {
                        exhausted = true;
                        break;
                    }
                }
            }
            if exhausted {
                // The search reached the bottom: everything is covered.
                meet.lock().unwrap_or_else(|e| e.into_inner()).done = true;
                return Ok(());
            }
            // The cap: a new query below the lowest id seen.
            match lowest_this_query {
                Some(l) => below = Some(l),
                None => return Ok(()),
            }
            report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .search_restarts += 1;
        }
    }

    /// Counts a backfill page.
    fn count(&self, kept: &[RawContact], side: Side, report: &Mutex<PullReport>) {
        let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
        r.pages += 1;
        match side {
            Side::List => r.from_list += kept.len() as u64,
            Side::Search => r.from_search += kept.len() as u64,
        }
        r.contacts += kept.len() as u64;
    }

    /// Resolves companies for the pages one side fetched, while it goes on
    /// fetching: whatever pages queued up meanwhile share one association
    /// read (up to 1,000 contacts), company reads go out in full batches,
    /// and ready pages go to the sink.
    async fn resolve(
        &self,
        mut rx: tokio::sync::mpsc::Receiver<Vec<RawContact>>,
        report: &Mutex<PullReport>,
        sink: &dyn PageSink,
    ) -> Result<(), HubSpotError> {
        let mut q = Companies::default();
        while let Some(first) = rx.recv().await {
            let mut n = first.len();
            let mut pages = vec![first];
            while n < ASSOC_BATCH {
                match rx.try_recv() {
                    Ok(p) => {
                        n += p.len();
                        pages.push(p);
                    }
                    Err(_) => break,
                }
            }
            let r = async {
                self.park(&mut q, pages).await?;
                self.hand_on(&mut q, false, report, sink).await
            }
            .await;
            if let Err(e) = r {
                // The fetch side stops at its next send.
                rx.close();
                return Err(e);
            }
        }
        self.hand_on(&mut q, true, report, sink).await
    }

    async fn hand_on(
        &self,
        q: &mut Companies,
        flush: bool,
        report: &Mutex<PullReport>,
        sink: &dyn PageSink,
    ) -> Result<(), HubSpotError> {
        for leads in self.release(q, flush, report).await? {
            if !leads.is_empty() {
                sink.page(leads).await?;
            }
        }
        Ok(())
    }

    /// Reads contacts changed since the watermark (minus the lookback) and
    /// moves the watermark. Only for a sink that has handled each page when
    /// `page` returns; otherwise see [`Puller::incremental_uncommitted`].
    pub async fn incremental(&self, sink: &dyn PageSink) -> Result<PullReport, HubSpotError> {
        let pulled = self.incremental_uncommitted(sink).await?;
        self.commit(pulled).await
    }

    /// Reads contacts changed since the watermark (minus the lookback); the
    /// new watermark is saved by [`Puller::commit`].
    pub async fn incremental_uncommitted(
        &self,
        sink: &dyn PageSink,
    ) -> Result<Pulled, HubSpotError> {
        let mut state = self.store.sync_state(&self.ws.id, CRM, OBJECT).await?;
        let Some(watermark) = state.watermark else {
            return self.backfill_uncommitted(sink).await;
        };
        let lookback = self.lookback_ms();
        let start = self.clock.now();
        let from = watermark - lookback;
        let props = self.properties();
        let report = Mutex::new(PullReport::default());
        let mut after_id: Option<u64> = None;
        let mut pending: Vec<RawContact> = Vec::new();
        loop {
            let mut offset = 0usize;
            let mut last_id: Option<u64> = None;
            let mut more = false;
            while offset + SEARCH_PAGE <= SEARCH_CAP {
                let mut filters = vec![
                    json!({"propertyName": "lastmodifieddate", "operator": "GTE", "value": from.to_string()}),
                    json!({"propertyName": "lastmodifieddate", "operator": "LTE", "value": start.to_string()}),
                ];
                if let Some(a) = after_id {
                    filters.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": a.to_string()}));
                }
                let body = json!({
                    "filterGroups": [{"filters": filters}],
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "properties": props,
                    "limit": SEARCH_PAGE,
                    "after": offset.to_string(),
                });
                let answer = self
                    .client
                    .call(
                        BucketKind::Search,
                        Method::Post,
                        "/crm/v3/objects/contacts/search",
                        Some(&body),
                    )
                    .await?;
                let contacts =
                    parse_results(&answer.body, "POST /crm/v3/objects/contacts/search", false)?;
                more = answer.body.pointer("/paging/next/after").is_some();
                offset += SEARCH_PAGE;
                {
                    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                    r.pages += 1;
                    r.from_search += contacts.len() as u64;
                    r.contacts += contacts.len() as u64;
                }
                if let Some(l) = contacts.last() {
                    last_id = Some(id_num(&l.id));
                }
                pending.extend(contacts);
                if pending.len() >= ASSOC_BATCH {
                    let batch = std::mem::take(&mut pending);
                    let leads = self.with_companies(batch, &report).await?;
                    sink.page(leads).await?;
                }
                if !more {
                    break;
                }
            }
            if !more {
                break;
            }
            // Cap reached with more to read: restart above the last id.
            match last_id {
                Some(l) => after_id = Some(l),
                None => break,
            }
            report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .search_restarts += 1;
        }
        if !pending.is_empty() {
            let leads = self.with_companies(pending, &report).await?;
            sink.page(leads).await?;
        }
        // Everything up to the sync's start was read.
        state.watermark = Some(start.max(watermark));
        state.last_error = None;
        let mut r = report.into_inner().unwrap_or_else(|e| e.into_inner());
        r.watermark = state.watermark;
        Ok(Pulled { report: r, state })
    }

    fn lookback_ms(&self) -> i64 {
        match &self.ws.crm {
            Some(crate::config::crm::CrmSettings::HubSpot(h)) => h.lookback.as_millis() as i64,
            _ => 600_000,
        }
    }

    fn company_ttl_ms(&self) -> i64 {
        match &self.ws.crm {
            Some(crate::config::crm::CrmSettings::HubSpot(h)) => h.company_ttl.as_millis() as i64,
            _ => 86_400_000,
        }
    }

    /// Reads contacts by id (webhook-triggered work), with their companies.
    pub async fn by_ids(&self, ids: &[LeadId]) -> Result<Vec<Lead>, HubSpotError> {
        let props = self.properties();
        let report = Mutex::new(PullReport::default());
        let mut out = Vec::new();
        for chunk in ids.chunks(BATCH) {
            let body = json!({
                "inputs": chunk.iter().map(|i| json!({"id": i.as_str()})).collect::<Vec<_>>(),
                "properties": props,
                "propertiesWithHistory": [],
            });
            let answer = self
                .client
                .call(
                    BucketKind::General,
                    Method::Post,
                    "/crm/v3/objects/contacts/batch/read?archived=false",
                    Some(&body),
                )
                .await?;
            let contacts = parse_results(
                &answer.body,
                "POST /crm/v3/objects/contacts/batch/read",
                false,
            )?;
            out.extend(self.with_companies(contacts, &report).await?);
        }
        Ok(out)
    }

    /// Resolves each contact's company now (associations when unknown,
    /// then the cache or batch reads) and returns the leads.
    async fn with_companies(
        &self,
        contacts: Vec<RawContact>,
        report: &Mutex<PullReport>,
    ) -> Result<Vec<Lead>, HubSpotError> {
        let mut q = Companies::default();
        self.park(&mut q, vec![contacts]).await?;
        Ok(self.release(&mut q, true, report).await?.concat())
    }

    /// Finds each contact's company id (a v4 association batch read for
    /// those the answer did not carry) and parks the contacts in `q` with
    /// the companies still to read.
    async fn park(
        &self,
        q: &mut Companies,
        mut pages: Vec<Vec<RawContact>>,
    ) -> Result<(), HubSpotError> {
        let unknown: Vec<String> = pages
            .iter()
            .flatten()
            .filter(|c| c.company.is_none())
            .map(|c| c.id.clone())
            .collect();
        if !unknown.is_empty() {
            let mut found: HashMap<String, String> = HashMap::new();
            for r in self.associations("contact", "company", &unknown).await? {
                let Some(from) = r.pointer("/from/id").and_then(json_id) else {
                    continue;
                };
                if let Some(company) = primary_company(r.get("to")) {
                    found.insert(from, company);
                }
            }
            for c in pages.iter_mut().flatten() {
                if c.company.is_none() {
                    c.company = Some(found.get(&c.id).cloned());
                }
            }
        }
        let ids: Vec<String> = pages
            .iter()
            .flatten()
            .filter_map(|c| c.company.clone().flatten())
            .filter(|id| !q.unknown.contains(id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let now = self.clock.now();
        let cached = self.store.companies(&self.ws.id, CRM, &ids).await?;
        let ttl = self.company_ttl_ms();
        q.unknown.extend(
            ids.into_iter()
                .filter(|id| cached.get(id).is_none_or(|c| now - c.fetched_at > ttl)),
        );
        q.pages.extend(pages);
        Ok(())
    }

    /// The `results` of v4 association batch reads `from` → `to` for `ids`
    /// (1,000 per call; exempt from the ten-secondly limit).
    pub(super) async fn associations(
        &self,
        from: &str,
        to: &str,
        ids: &[String],
    ) -> Result<Vec<Value>, HubSpotError> {
        let path = format!("/crm/v4/associations/{from}/{to}/batch/read");
        let mut out = Vec::new();
        for chunk in ids.chunks(ASSOC_BATCH) {
            let body =
                json!({"inputs": chunk.iter().map(|i| json!({"id": i})).collect::<Vec<_>>()});
            let answer = self
                .client
                .call(BucketKind::Exempt, Method::Post, &path, Some(&body))
                .await?;
            if let Some(Value::Array(results)) = answer.body.get("results") {
                out.extend(results.iter().cloned());
            }
        }
        Ok(out)
    }

    /// Reads parked companies in full batches of 100 and returns the pages
    /// whose companies are all known. With `flush`, or when too many pages
    /// wait, the last partial batch is read too and every page released.
    async fn release(
        &self,
        q: &mut Companies,
        flush: bool,
        report: &Mutex<PullReport>,
    ) -> Result<Vec<Vec<Lead>>, HubSpotError> {
        let flush = flush || q.pages.len() >= MAX_PARKED_PAGES;
        while q.unknown.len() >= BATCH || flush && !q.unknown.is_empty() {
            let chunk: Vec<String> = q.unknown.iter().take(BATCH).cloned().collect();
            for id in &chunk {
                q.unknown.remove(id);
            }
            self.read_companies(&chunk, report).await?;
        }
        if !q.unknown.is_empty() {
            return Ok(Vec::new());
        }
        let pages = std::mem::take(&mut q.pages);
        let ids: Vec<String> = pages
            .iter()
            .flatten()
            .filter_map(|c| c.company.clone().flatten())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let companies = self.store.companies(&self.ws.id, CRM, &ids).await?;
        Ok(pages
            .into_iter()
            .map(|p| p.into_iter().map(|c| self.lead(c, &companies)).collect())
            .collect())
    }

    /// One company batch read into the cache.
    async fn read_companies(
        &self,
        ids: &[String],
        report: &Mutex<PullReport>,
    ) -> Result<(), HubSpotError> {
        let now = self.clock.now();
        let body = json!({
            "inputs": ids.iter().map(|i| json!({"id": i})).collect::<Vec<_>>(),
            "properties": ["name", "domain"],
            "propertiesWithHistory": [],
        });
        let answer = self
            .client
            .call(
                BucketKind::General,
                Method::Post,
                "/crm/v3/objects/companies/batch/read?archived=false",
                Some(&body),
            )
            .await?;
        let rows: Vec<CompanyRow> = answer
            .body
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let id = r.get("id").and_then(json_id)?;
                let prop = |k: &str| {
                    r.pointer(&format!("/properties/{k}"))
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                };
                Some(CompanyRow {
                    company_id: id,
                    name: prop("name"),
                    domain: prop("domain"),
                    fetched_at: now,
                })
            })
            .collect();
        report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .companies_read += rows.len() as u64;
        self.store.upsert_companies(&self.ws.id, CRM, &rows).await?;
        Ok(())
    }

    /// A contact as a lead, with its company's domain and name where the
    /// contact has none.
    pub(super) fn lead(&self, c: RawContact, companies: &HashMap<String, CompanyRow>) -> Lead {
        let f = &self.ws.fields;
        let mut lead = Lead::new(c.id.clone());
        for (k, v) in c.properties {
            if !v.is_null() {
                lead.fields.insert(k, v);
            }
        }
        if let Some(co) = c.company.flatten().and_then(|id| companies.get(&id)) {
            if let Some(d) = &co.domain
                && lead.text(&f.company_domain).is_none()
            {
                lead.fields
                    .insert(f.company_domain.clone(), Value::String(d.clone()));
            }
            if let Some(n) = &co.name
                && lead.text(&f.company_name).is_none()
            {
                lead.fields
                    .insert(f.company_name.clone(), Value::String(n.clone()));
            }
        }
        lead
    }

    /// Sync state as stored.
    pub async fn state(&self) -> Result<SyncState, HubSpotError> {
        Ok(self.store.sync_state(&self.ws.id, CRM, OBJECT).await?)
    }
}

pub(super) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(super) fn json_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The primary company among association targets (type 1), else the first.
fn primary_company(to: Option<&Value>) -> Option<String> {
    let arr = to?.as_array()?;
    let primary = arr.iter().find(|t| {
        t.get("associationTypes")
            .and_then(Value::as_array)
            .is_some_and(|types| {
                types
                    .iter()
                    .any(|ty| ty.get("typeId").and_then(Value::as_u64) == Some(1))
            })
    });
    primary
        .or(arr.first())
        .and_then(|t| t.get("toObjectId").and_then(json_id))
}

/// `results` of a list, search or batch-read answer. A record without an id
/// is skipped with a warning (never a panic).
pub fn parse_results(
    body: &Value,
    endpoint: &str,
    inline_associations: bool,
) -> Result<Vec<RawContact>, HubSpotError> {
    let results = body
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| HubSpotError::Decode {
            endpoint: endpoint.into(),
            message: "no `results` array".into(),
        })?;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        let Some(id) = r.get("id").and_then(json_id) else {
            tracing::warn!(endpoint, "a record without an id was skipped");
            continue;
        };
        let properties = r
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let from_property = properties
            .get(PRIMARY_COMPANY)
            .map(|v| json_id(v).filter(|s| !s.is_empty()));
        let company = inline_associations.then(|| {
            r.pointer("/associations/companies/results")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|x| {
                            x.get("type").and_then(Value::as_str) == Some("contact_to_company")
                        })
                        .or(a.first())
                })
                .and_then(|x| x.get("id").and_then(json_id))
        });
        out.push(RawContact {
            id,
            properties,
            company: company.or(from_property),
        });
    }
    Ok(out)
}

//! The backfill, by company (reference/hubspot.md §2.2–2.5).
//!
//! HubSpot's list API is one cursor chain: with 200 ms per call it reads
//! about 5 pages a second whatever the limit allows. This backfill keeps
//! both buckets busy with calls that can run side by side:
//!
//! - the company list (100 per page, general bucket) streams company ids
//!   with their name and domain (what providers need);
//! - each chunk of companies is taken by whichever path is free:
//!   * the **association path**: one v4 company→contact batch read (exempt
//!     from the ten-secondly limit) gives the contacts whose *primary*
//!     company it is, read with `batch/read` of 100, several in flight;
//!   * the **search path**: `associatedcompanyid IN [chunk]`, 200 per page,
//!     two pages in flight, restarting with `hs_object_id > last` at the
//!     10,000-result cap;
//! - contacts with no primary company come from one more search,
//!   `associatedcompanyid NOT_HAS_PROPERTY`.
//!
//! The batch reads take only general capacity nobody waits for
//! (`BucketKind::GeneralSpare`): when write-back shares the pass, writes go
//! first and search does more of the reading.
//!
//! A contact has at most one primary company, so each path reads a disjoint
//! set; a seen-set drops any contact read twice (an association changed
//! mid-way). If fewer contacts arrive than search counted at the start (a
//! company archived mid-way, say), the id-range backfill runs as well and
//! hands on only contacts not seen yet.
//!
//! Memory stays flat however large the portal: the seen-set is a bitmap of
//! ids (`seen`), and a company's name and domain are held only until its
//! contacts are handed on (the search that took its chunk ended, or every
//! contact the association path found for it was emitted). A contact whose
//! company is no longer held (its association changed mid-way) takes it
//! from the store's company cache, which the company list fills.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::core::lead::Lead;
use crate::store::crm::CompanyRow;

use super::HubSpotError;
use super::auth::CRM;
use super::client::Method;
use super::limits::BucketKind;
use super::pull::{
    BATCH, PRIMARY_COMPANY, PageSink, PullReport, Puller, RawContact, SEARCH_CAP, SEARCH_PAGE, enc,
    json_id, parse_results,
};
use super::seen::SeenIds;

/// Companies per chunk handed to a path. Small, so the two paths finish
/// close together; search merges up to SEARCH_CHUNKS queued chunks into one
/// query (an `IN` list of 150 ids stays well under the 3,000-character body
/// limit) so its last, partial pages are few.
const CHUNK: usize = 50;
const SEARCH_CHUNKS: usize = 3;
/// `batch/read` calls in flight on the association path.
const READERS: usize = 4;

struct Shared<'a> {
    /// Companies listed whose contacts are not all handed on yet.
    companies: Mutex<HashMap<String, Held>>,
    seen: Mutex<SeenIds>,
    report: &'a Mutex<PullReport>,
    sink: &'a dyn PageSink,
}

/// A listed company, and how many contacts found for it on the association
/// path are still to be emitted.
struct Held {
    row: CompanyRow,
    waiting: usize,
}

impl Shared<'_> {
    /// The association path found `pairs` (contact, company) for `chunk`:
    /// companies with no contact are dropped, the others wait for theirs.
    fn expect(&self, chunk: &[String], pairs: &[(String, String)]) {
        let mut m = self.companies.lock().unwrap_or_else(|e| e.into_inner());
        for (_, co) in pairs {
            if let Some(h) = m.get_mut(co) {
                h.waiting += 1;
            }
        }
        for co in chunk {
            if m.get(co).is_some_and(|h| h.waiting == 0) {
                m.remove(co);
            }
        }
    }

    /// Contacts of these companies were emitted (association path).
    fn emitted<'c>(&self, companies: impl Iterator<Item = &'c String>) {
        let mut m = self.companies.lock().unwrap_or_else(|e| e.into_inner());
        for co in companies {
            if let Some(h) = m.get_mut(co) {
                h.waiting = h.waiting.saturating_sub(1);
                if h.waiting == 0 {
                    m.remove(co);
                }
            }
        }
    }

    /// A search over these companies ended: all their contacts are out.
    fn done(&self, companies: &[String]) {
        let mut m = self.companies.lock().unwrap_or_else(|e| e.into_inner());
        for co in companies {
            m.remove(co);
        }
    }
}

impl Puller {
    /// Reads every contact: by company, then (only if some are missing)
    /// by id range. See the module doc.
    pub async fn backfill_by_company(
        &self,
        sink: &dyn PageSink,
        report: &Mutex<PullReport>,
    ) -> Result<(), HubSpotError> {
        let props = self.properties();
        let shared = Shared {
            companies: Mutex::new(HashMap::new()),
            seen: Mutex::new(SeenIds::default()),
            report,
            sink,
        };
        let (tx, rx) = mpsc::channel::<Vec<String>>(8);
        let rx = tokio::sync::Mutex::new(rx);
        let companies = async {
            let r = self.list_companies(&shared, &tx).await;
            drop(tx);
            r
        };
        let by_association = self.association_path(&props, &shared, &rx);
        let by_search = async {
            self.search_all(
                vec![json!({"propertyName": PRIMARY_COMPANY, "operator": "NOT_HAS_PROPERTY"})],
                &props,
                &shared,
            )
            .await?;
            loop {
                let mut ids = {
                    let mut rx = rx.lock().await;
                    let Some(mut ids) = rx.recv().await else {
                        return Ok::<(), HubSpotError>(());
                    };
                    for _ in 1..SEARCH_CHUNKS {
                        match rx.try_recv() {
                            Ok(more) => ids.extend(more),
                            Err(_) => break,
                        }
                    }
                    ids
                };
                ids.sort_unstable();
                let filter =
                    json!({"propertyName": PRIMARY_COMPANY, "operator": "IN", "values": ids});
                self.search_all(vec![filter], &props, &shared).await?;
                shared.done(&ids);
            }
        };
        // Counted alongside, for the completeness check at the end.
        let (total, c, a, s) =
            tokio::join!(self.count_contacts(), companies, by_association, by_search);
        c?;
        a?;
        s?;
        let total = total?;
        let seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        if seen < total {
            tracing::warn!(
                seen,
                total,
                "by-company backfill missed contacts: reading by id range as well"
            );
            report.lock().unwrap_or_else(|e| e.into_inner()).fallback = true;
            let unseen = Unseen { shared: &shared };
            self.backfill_by_id(&unseen, report).await?;
        }
        Ok(())
    }

    /// How many contacts search counts now (one search call).
    async fn count_contacts(&self) -> Result<u64, HubSpotError> {
        let body =
            json!({"filterGroups": [], "properties": ["hs_object_id"], "limit": 1, "after": "0"});
        let a = self
            .client
            .call(
                BucketKind::Search,
                Method::Post,
                "/crm/v3/objects/contacts/search",
                Some(&body),
            )
            .await?;
        Ok(a.body.get("total").and_then(Value::as_u64).unwrap_or(0))
    }

    /// The company list chain: caches name and domain, hands on the ids.
    async fn list_companies(
        &self,
        shared: &Shared<'_>,
        out: &mpsc::Sender<Vec<String>>,
    ) -> Result<(), HubSpotError> {
        let mut after: Option<String> = None;
        let mut pending: Vec<String> = Vec::new();
        loop {
            let mut path = format!(
                "/crm/v3/objects/companies?limit=100&archived=false&properties={}",
                enc("name,domain")
            );
            if let Some(a) = &after {
                path.push_str("&after=");
                path.push_str(&enc(a));
            }
            let answer = self
                .client
                .call(BucketKind::General, Method::Get, &path, None)
                .await?;
            let now = self.clock.now();
            let rows: Vec<CompanyRow> = answer
                .body
                .get("results")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let prop = |k: &str| {
                        r.pointer(&format!("/properties/{k}"))
                            .and_then(Value::as_str)
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                    };
                    Some(CompanyRow {
                        company_id: r.get("id").and_then(json_id)?,
                        name: prop("name"),
                        domain: prop("domain"),
                        fetched_at: now,
                    })
                })
                .collect();
            self.store.upsert_companies(&self.ws.id, CRM, &rows).await?;
            shared
                .report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .companies_read += rows.len() as u64;
            {
                let mut m = shared.companies.lock().unwrap_or_else(|e| e.into_inner());
                for r in rows {
                    pending.push(r.company_id.clone());
                    m.insert(r.company_id.clone(), Held { row: r, waiting: 0 });
                }
            }
            after = answer
                .body
                .pointer("/paging/next/after")
                .and_then(Value::as_str)
                .map(String::from);
            while pending.len() >= CHUNK || after.is_none() && !pending.is_empty() {
                let n = pending.len().min(CHUNK);
                let chunk: Vec<String> = pending.drain(..n).collect();
                if out.send(chunk).await.is_err() {
                    return Ok(());
                }
            }
            if after.is_none() {
                return Ok(());
            }
        }
    }

    /// Takes company chunks: their primary contacts by association, then
    /// `batch/read` of 100, READERS at a time.
    async fn association_path(
        &self,
        props: &[String],
        shared: &Shared<'_>,
        rx: &tokio::sync::Mutex<mpsc::Receiver<Vec<String>>>,
    ) -> Result<(), HubSpotError> {
        // (contact, its primary company) pairs, BATCH at a time.
        let (ids_tx, ids_rx) = mpsc::channel::<Vec<(String, String)>>(READERS * 2);
        let ids_rx = tokio::sync::Mutex::new(ids_rx);
        let find = async {
            // Ids carried over between chunks, so batch reads go out full.
            let mut carry: Vec<(String, String)> = Vec::new();
            loop {
                let chunk = rx.lock().await.recv().await;
                let Some(chunk) = chunk else { break };
                let pairs = self.primary_contacts(&chunk).await?;
                shared.expect(&chunk, &pairs);
                carry.extend(pairs);
                while carry.len() >= BATCH {
                    let ids: Vec<(String, String)> = carry.drain(..BATCH).collect();
                    if ids_tx.send(ids).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if !carry.is_empty() && ids_tx.send(carry).await.is_err() {
                return Ok(());
            }
            drop(ids_tx);
            Ok::<(), HubSpotError>(())
        };
        let reader = || async {
            loop {
                let ids = ids_rx.lock().await.recv().await;
                let Some(ids) = ids else {
                    return Ok::<(), HubSpotError>(());
                };
                let body = json!({
                    "inputs": ids.iter().map(|(i, _)| json!({"id": i})).collect::<Vec<_>>(),
                    "properties": props,
                    "propertiesWithHistory": [],
                });
                let answer = self
                    .client
                    .call(
                        BucketKind::GeneralSpare,
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
                self.emit(contacts, shared, Via::Association).await?;
                shared.emitted(ids.iter().map(|(_, co)| co));
            }
        };
        let (f, r1, r2, r3, r4) = tokio::join!(find, reader(), reader(), reader(), reader());
        f.and(r1).and(r2).and(r3).and(r4)
    }

    /// Contacts whose primary company is one of `companies` (v4 association
    /// batch read, company → contact, association type 2 = Primary).
    async fn primary_contacts(
        &self,
        companies: &[String],
    ) -> Result<Vec<(String, String)>, HubSpotError> {
        let mut out = Vec::new();
        for r in self.associations("company", "contact", companies).await? {
            let Some(from) = r.pointer("/from/id").and_then(json_id) else {
                continue;
            };
            for t in r.get("to").and_then(Value::as_array).into_iter().flatten() {
                let primary = t
                    .get("associationTypes")
                    .and_then(Value::as_array)
                    .is_some_and(|ts| {
                        ts.iter()
                            .any(|ty| ty.get("typeId").and_then(Value::as_u64) == Some(2))
                    });
                if primary && let Some(id) = t.get("toObjectId").and_then(json_id) {
                    out.push((id, from.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Every page of one search (filters ANDed), ascending by id. The first
    /// answer's `total` says how many pages follow; they are fetched two at
    /// a time (no call for a page that cannot exist), restarting above the
    /// last id at the 10,000 cap.
    async fn search_all(
        &self,
        filters: Vec<Value>,
        props: &[String],
        shared: &Shared<'_>,
    ) -> Result<(), HubSpotError> {
        let mut above: Option<String> = None;
        loop {
            let mut f = filters.clone();
            if let Some(a) = &above {
                f.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": a}));
            }
            let page = |offset: usize| {
                let body = json!({
                    "filterGroups": [{"filters": f}],
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "properties": props,
                    "limit": SEARCH_PAGE,
                    "after": offset.to_string(),
                });
                async move {
                    self.client
                        .call(
                            BucketKind::Search,
                            Method::Post,
                            "/crm/v3/objects/contacts/search",
                            Some(&body),
                        )
                        .await
                }
            };
            let first = page(0).await?;
            let total = first.body.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
            let reachable = total.min(SEARCH_CAP);
            let mut last = self.take_page(&first, shared).await?;
            let mut offset = SEARCH_PAGE;
            while offset < reachable {
                let second = offset + SEARCH_PAGE;
                if second < reachable {
                    let (a, b) = tokio::join!(page(offset), page(second));
                    last = self.take_page(&a?, shared).await?.or(last);
                    last = self.take_page(&b?, shared).await?.or(last);
                    offset += 2 * SEARCH_PAGE;
                } else {
                    last = self.take_page(&page(offset).await?, shared).await?.or(last);
                    offset += SEARCH_PAGE;
                }
            }
            if total <= SEARCH_CAP {
                return Ok(());
            }
            match last {
                Some(l) => above = Some(l),
                None => return Ok(()),
            }
            shared
                .report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .search_restarts += 1;
        }
    }

    /// Hands on one search answer; the last id on it.
    async fn take_page(
        &self,
        answer: &super::client::Answer,
        shared: &Shared<'_>,
    ) -> Result<Option<String>, HubSpotError> {
        let contacts = parse_results(&answer.body, "POST /crm/v3/objects/contacts/search", false)?;
        let last = contacts.last().map(|c| c.id.clone());
        self.emit(contacts, shared, Via::Search).await?;
        Ok(last)
    }

    /// Hands on contacts not seen before, with their company's fields.
    async fn emit(
        &self,
        contacts: Vec<RawContact>,
        shared: &Shared<'_>,
        via: Via,
    ) -> Result<(), HubSpotError> {
        let fresh: Vec<RawContact> = {
            let mut seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner());
            contacts
                .into_iter()
                .filter(|c| seen.insert(&c.id))
                .collect()
        };
        {
            let mut r = shared.report.lock().unwrap_or_else(|e| e.into_inner());
            r.pages += 1;
            match via {
                Via::Association => r.from_batch_read += fresh.len() as u64,
                Via::Search => r.from_search += fresh.len() as u64,
            }
            r.contacts += fresh.len() as u64;
        }
        if fresh.is_empty() {
            return Ok(());
        }
        // This page's companies: held ones, else from the store's cache.
        let mut page: HashMap<String, CompanyRow> = HashMap::new();
        let mut missing: Vec<String> = Vec::new();
        {
            let held = shared.companies.lock().unwrap_or_else(|e| e.into_inner());
            for id in fresh.iter().filter_map(|c| c.company.clone().flatten()) {
                match held.get(&id) {
                    Some(h) => {
                        page.insert(id, h.row.clone());
                    }
                    None => missing.push(id),
                }
            }
        }
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            page.extend(self.store.companies(&self.ws.id, CRM, &missing).await?);
        }
        let leads: Vec<Lead> = fresh.into_iter().map(|c| self.lead(c, &page)).collect();
        shared.sink.page(leads).await
    }
}

#[derive(Clone, Copy)]
enum Via {
    Association,
    Search,
}

/// The fallback's sink: only contacts the by-company pass did not see.
struct Unseen<'a, 'b> {
    shared: &'a Shared<'b>,
}

impl PageSink for Unseen<'_, '_> {
    fn page(
        &self,
        leads: Vec<Lead>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HubSpotError>> + Send + '_>>
    {
        Box::pin(async move {
            let fresh: Vec<Lead> = {
                let mut seen = self.shared.seen.lock().unwrap_or_else(|e| e.into_inner());
                leads
                    .into_iter()
                    .filter(|l| seen.insert(l.id.as_str()))
                    .collect()
            };
            if fresh.is_empty() {
                return Ok(());
            }
            self.shared.sink.page(fresh).await
        })
    }
}

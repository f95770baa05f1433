//! Reading Leads and Contacts (§2.1–§2.3): the I/O loop around
//! [`super::soql::IncrementalQuery`] and [`super::records`].
//!
//! **One pass of one object.** The window is `[watermark − lookback, sync
//! start]` (no lower bound on the first pass, the backfill), ordered by
//! `(SystemModstamp, Id)`. The first page comes from the query resource
//! with `Sforce-Query-Options: batchSize=N`; the next ones from
//! `nextRecordsUrl` (checked to be a path on the instance). The query is
//! restarted strictly after the last record handed on (the keyset) when
//! its locator expired (`INVALID_QUERY_LOCATOR`, 15 min, §2.1) or when the
//! optional per-query `LIMIT` ([`Puller::query_limit`]) was reached, so
//! equal timestamps are neither missed nor repeated.
//!
//! **What goes on.** Each page's leads go to a [`PageSink`] as they come
//! (memory holds one page). Converted Leads are excluded by the query and,
//! should one come anyway, by [`super::records::SfRecord::to_lead`]. A
//! record the previous pass already handled — read again only because of
//! the lookback — is skipped: its `SystemModstamp` is not after the stored
//! watermark and equals the stored copy's ([`super::records::is_repeat`]).
//! A record newer than the watermark is always handed on, even if a pass
//! that never committed stored it (that pass may have stopped before
//! enriching or writing it).
//!
//! **The watermark** moves only through [`Puller::commit`], called by the
//! sync once every page was stored, enriched and written (ARCHITECTURE.md
//! invariant 12); a pass stopped earlier (a crash, a pause) reads the same
//! window again.

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Workspace;
use crate::config::crm::SalesforceSettings;
use crate::core::lead::{Lead, LeadId};
use crate::core::value::UnixMillis;
use crate::store::Store;
use crate::store::crm::SyncState;

use super::client::{Request, SalesforceClient};
use super::records::{self, PageError, QueryPage};
use super::soql::{self, IncrementalQuery, Keyset, Window};
use super::{CRM, SObject, SalesforceError};

/// What a pull did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullReport {
    pub object: Option<SObject>,
    /// Records read (every page, repeats and converted Leads included).
    pub records: u64,
    /// Leads handed on (stored, enriched, written).
    pub leads: u64,
    /// Re-read within the lookback and already handled: skipped.
    pub repeats: u64,
    /// Converted Leads read (never handed on).
    pub converted: u64,
    /// Records set aside as malformed.
    pub skipped: u64,
    /// Query calls (first pages) and `nextRecordsUrl` follow-ups.
    pub queries: u64,
    pub pages: u64,
    /// Restarts after the last record handed on (LIMIT or expired locator).
    pub keyset_restarts: u64,
    /// A backfill (no watermark yet, or `--full`).
    pub backfill: bool,
    /// The watermark saved at the end (the window's upper bound).
    pub watermark: Option<UnixMillis>,
}

/// Where pulled leads go, a page at a time. An error stops the pull
/// without moving the watermark.
pub trait PageSink: Send + Sync {
    fn page(
        &self,
        leads: Vec<Lead>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SalesforceError>> + Send + '_>>;
}

/// A pull that read everything; its sync state is saved by
/// [`Puller::commit`].
#[must_use = "the watermark moves only when the pull is committed"]
#[derive(Debug)]
pub struct Pulled {
    pub report: PullReport,
    state: SyncState,
}

/// The pull of one object of one workspace.
pub struct Puller {
    pub client: Arc<SalesforceClient>,
    pub store: Arc<dyn Store>,
    /// The workspace as seen for this object (its identity fields are the
    /// object's Salesforce names: see `sync::object_workspace`).
    pub ws: Arc<Workspace>,
    pub settings: Arc<SalesforceSettings>,
    pub object: SObject,
    pub clock: Arc<dyn Clock>,
    /// Reads without ever saving the sync state.
    pub dry_run: bool,
    /// `LIMIT` per query (the query restarts after the last record with the
    /// keyset). `None`: one query per pass, followed to its end.
    pub query_limit: Option<u32>,
}

fn soql_err(e: soql::SoqlError) -> SalesforceError {
    SalesforceError::Decode {
        endpoint: "SOQL".into(),
        message: format!("{e} (check [workspaces.crm] fields and the mapping)"),
    }
}

fn page_err(endpoint: &str, e: PageError) -> SalesforceError {
    SalesforceError::Decode {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    }
}

/// Whether `e` says the query locator expired or is unknown (§2.1).
fn locator_expired(e: &SalesforceError) -> bool {
    e.failure()
        .is_some_and(|f| f.code.as_deref() == Some("INVALID_QUERY_LOCATOR"))
}

impl Puller {
    /// The sync-state key of this object (`Lead` / `Contact`).
    pub fn state_key(&self) -> &'static str {
        self.object.as_str()
    }

    /// Sync state as stored.
    pub async fn state(&self) -> Result<SyncState, SalesforceError> {
        Ok(self
            .store
            .sync_state(&self.ws.id, CRM, self.state_key())
            .await?)
    }

    /// The SELECT list: identity, mapped fields, audience conditions and
    /// the configured extra fields.
    pub fn fields(&self) -> Result<Vec<String>, SalesforceError> {
        let mapping = self.settings.object(self.object).map(|o| &*o.mapping);
        let mut extra: Vec<String> = self.settings.fields.clone();
        for a in &self.ws.audiences {
            for c in &a.conditions {
                extra.push(c.field.clone());
            }
            // A persona's fields only when it filters on them (the default
            // seniority field is HubSpot's, which no Salesforce object has).
            if let Some(p) = &a.persona {
                if !p.titles.is_empty() {
                    extra.push(p.title_field.clone());
                }
                if !p.seniorities.is_empty() {
                    extra.push(p.seniority_field.clone());
                }
            }
        }
        extra.retain(|f| soql::is_field_name(f));
        records::query_fields(self.object, &self.ws.fields, mapping, &extra).map_err(soql_err)
    }

    /// Reads the object's changes since the stored watermark (everything
    /// with `full` or on the first pass) and hands each page to `sink`. The
    /// new watermark is saved by [`Puller::commit`].
    pub async fn pull_uncommitted(
        &self,
        sink: &dyn PageSink,
        full: bool,
    ) -> Result<Pulled, SalesforceError> {
        let mut state = self.state().await?;
        let old = if full || !state.backfill_done {
            None
        } else {
            state.watermark
        };
        let lookback = self.settings.lookback.as_millis() as i64;
        let window = Window::new(old, lookback, self.clock.now());
        let mut report = PullReport {
            object: Some(self.object),
            backfill: old.is_none(),
            ..PullReport::default()
        };
        let fields = self.fields()?;
        let mut after: Option<Keyset> = None;
        loop {
            let q = IncrementalQuery {
                object: self.object,
                fields: fields.clone(),
                window,
                after: after.clone(),
                limit: self.query_limit,
            };
            let position = after.clone();
            let mut path = soql::query_path(&q.soql().map_err(soql_err)?, false);
            let mut first = true;
            let mut returned: u64 = 0;
            let mut restart = false;
            loop {
                let answer = self
                    .client
                    .call(Request::get(path.clone()).header(
                        soql::query_options_header(self.settings.query_batch_size).0,
                        soql::query_options_header(self.settings.query_batch_size).1,
                    ))
                    .await;
                let answer = match answer {
                    Ok(a) => a,
                    Err(e) if !first && locator_expired(&e) => {
                        // The cursor expired: restart after the last record
                        // handed on (nothing is read twice or missed).
                        restart = true;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                if first {
                    report.queries += 1;
                }
                first = false;
                report.pages += 1;
                let page = records::parse_query_page(&answer.body, self.object)
                    .map_err(|e| page_err(&answer.endpoint, e))?;
                returned += (page.records.len() + page.skipped.len()) as u64;
                let next = page.next_records_url.clone();
                if let Some(k) = page.last_keyset() {
                    after = Some(k);
                }
                self.hand_on(page, old, &mut report, sink).await?;
                match next {
                    Some(n) => path = n,
                    None => break,
                }
            }
            let limit_reached = self
                .query_limit
                .is_some_and(|l| returned >= u64::from(l.max(1)));
            if !(restart || limit_reached) {
                break;
            }
            // A whole query of unreadable rows: restarting from the same
            // position would repeat it forever, and stopping as if done
            // would move the watermark past the rows never read. The pass
            // stops (the watermark stays) and says why. This includes the
            // first query (no keyset yet).
            if after == position {
                return Err(SalesforceError::Decode {
                    endpoint: "GET /services/data/vXX.X/query".into(),
                    message: format!(
                        "{} rows of a {} query had no readable Id and SystemModstamp; the pull cannot move past them (see the warnings above)",
                        returned, self.object
                    ),
                });
            }
            report.keyset_restarts += 1;
        }
        state.watermark = Some(window.next_watermark().max(old.unwrap_or(i64::MIN)));
        state.backfill_done = true;
        state.last_error = None;
        report.watermark = state.watermark;
        Ok(Pulled { report, state })
    }

    /// One page: malformed records logged, converted Leads counted, repeats
    /// within the lookback skipped, the rest handed to the sink.
    async fn hand_on(
        &self,
        page: QueryPage,
        old_watermark: Option<UnixMillis>,
        report: &mut PullReport,
        sink: &dyn PageSink,
    ) -> Result<(), SalesforceError> {
        report.records += (page.records.len() + page.skipped.len()) as u64;
        for s in &page.skipped {
            report.skipped += 1;
            tracing::warn!(
                object = %self.object,
                id = s.id.as_deref().unwrap_or("-"),
                reason = %s.reason,
                "Salesforce record set aside"
            );
        }
        // Records at or before the old watermark were read by the last
        // committed pass: those whose stored copy has the same
        // SystemModstamp are that very version, already handled.
        let maybe_repeat: Vec<LeadId> = match old_watermark {
            Some(w) => page
                .records
                .iter()
                .filter(|r| r.modstamp <= w && !r.converted)
                .map(|r| LeadId(r.id.clone()))
                .collect(),
            None => Vec::new(),
        };
        let stored: HashMap<LeadId, Lead> = if maybe_repeat.is_empty() {
            HashMap::new()
        } else {
            self.store
                .leads_by_ids(&self.ws.id, &maybe_repeat)
                .await?
                .into_iter()
                .map(|l| (l.id.clone(), l))
                .collect()
        };
        let mut leads = Vec::with_capacity(page.records.len());
        for r in &page.records {
            if r.converted {
                report.converted += 1;
                continue;
            }
            let id = LeadId(r.id.clone());
            if old_watermark.is_some_and(|w| r.modstamp <= w)
                && records::is_repeat(r, stored.get(&id))
            {
                report.repeats += 1;
                continue;
            }
            if let Some(l) = r.to_lead() {
                leads.push(l);
            }
        }
        report.leads += leads.len() as u64;
        if !leads.is_empty() {
            sink.page(leads).await?;
        }
        Ok(())
    }

    /// Saves the sync state a finished pull reached (nothing on a dry run).
    /// Only once every page it handed on was stored, enriched and written.
    pub async fn commit(&self, pulled: Pulled) -> Result<PullReport, SalesforceError> {
        let Pulled { report, mut state } = pulled;
        state.last_sync_at = Some(self.clock.now());
        if !self.dry_run {
            self.store
                .save_sync_state(&self.ws.id, CRM, self.state_key(), &state)
                .await?;
        }
        Ok(report)
    }

    /// Reads records of this object by Id (`Id IN (…)`, 200 per query):
    /// what an Outbound Message asks to be re-read. Converted Leads and
    /// records not found are left out; Ids of another object are ignored.
    pub async fn by_ids(&self, ids: &[LeadId]) -> Result<Vec<Lead>, SalesforceError> {
        let fields = self.fields()?;
        let ids: Vec<&str> = ids
            .iter()
            .map(|i| i.as_str())
            .filter(|i| SObject::of_id(i) == Some(self.object) && super::is_record_id(i))
            .collect();
        let mut out = Vec::new();
        for chunk in ids.chunks(soql::MAX_IDS_PER_QUERY) {
            let q = soql::by_ids(self.object, &fields, chunk).map_err(soql_err)?;
            let mut path = soql::query_path(&q, false);
            loop {
                let answer = self.client.call(Request::get(path.clone())).await?;
                let page = records::parse_query_page(&answer.body, self.object)
                    .map_err(|e| page_err(&answer.endpoint, e))?;
                let next = page.next_records_url.clone();
                out.extend(page.leads().0);
                match next {
                    Some(n) => path = n,
                    None => break,
                }
            }
        }
        Ok(out)
    }
}

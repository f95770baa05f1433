//! The I/O edge of a preview: stored leads (or leads handed in by a dry
//! run) in pages, their stored values, what enrichd wrote before and the
//! provider statistics — reads only. Nothing here writes to the store, the
//! CRM or a provider; the estimator has no HTTP client at all.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Settings, Workspace};
use crate::core::lead::{Lead, LeadId};
use crate::core::ledger::{available, period_key};
use crate::core::mapping::{Mapping, WrittenByUs};
use crate::core::value::UnixMillis;
use crate::engine::run::prepare;
use crate::store::{Store, StoreError, StoredLead};

use super::{Estimator, Preview, Summary, preview_lead};

/// Leads read per store round trip.
const PAGE: usize = 500;

/// Which leads a preview covers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only members of this audience.
    pub audience: Option<String>,
    /// Only these leads (all stored leads when empty).
    pub ids: Vec<LeadId>,
    /// At most this many leads (after the audience filter).
    pub limit: Option<usize>,
    /// List only leads with something to write (the summary still counts
    /// every lead previewed).
    pub only_changes: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub filter: Filter,
    /// Add which providers would be asked and what it would cost.
    pub estimate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Crm(String),
    #[error("{0}")]
    Usage(String),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Current CRM records read live (free record reads), for `--live`.
pub trait Records: Send + Sync {
    fn read<'a>(&'a self, ids: &'a [LeadId]) -> BoxFuture<'a, Result<Vec<Lead>, PreviewError>>;
}

/// Accumulates a preview page by page.
pub struct Previewer<'a> {
    ws: &'a Arc<Workspace>,
    mapping: Option<&'a Mapping>,
    store: &'a dyn Store,
    opts: &'a Options,
    estimator: Option<Estimator>,
    now: UnixMillis,
    preview: Preview,
    audience: Option<String>,
}

impl<'a> Previewer<'a> {
    /// `mapping` and its file: what write-back would use (none for a
    /// workspace without a CRM).
    pub async fn new(
        settings: &'a Settings,
        ws: &'a Arc<Workspace>,
        mapping: Option<(&'a Mapping, &str)>,
        store: &'a dyn Store,
        opts: &'a Options,
        now: UnixMillis,
    ) -> Result<Previewer<'a>, PreviewError> {
        if let Some(a) = &opts.filter.audience
            && !ws.audiences.iter().any(|x| &x.name == a)
        {
            let known: Vec<&str> = ws.audiences.iter().map(|x| x.name.as_str()).collect();
            return Err(PreviewError::Usage(format!(
                "unknown audience `{a}` in workspace {} (configured: {})",
                ws.id,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        let estimator = if opts.estimate {
            let counts = store.attempt_counts(&ws.id).await?;
            Some(Estimator::new(settings, &counts))
        } else {
            None
        };
        let mut summary = Summary::default();
        if let (true, Some(b)) = (opts.estimate, ws.budget) {
            let row = store.budget(&ws.id, &period_key(b.period, now)).await?;
            let est = summary.estimate.get_or_insert_with(Default::default);
            est.budget_available = available(Some(b.credits), row.charged, row.reserved);
        }
        Ok(Previewer {
            ws,
            mapping: mapping.map(|(m, _)| m),
            store,
            opts,
            estimator,
            now,
            audience: opts.filter.audience.clone(),
            preview: Preview {
                workspace: ws.id.to_string(),
                crm: mapping.map_or("none".into(), |(m, _)| m.crm.to_string()),
                object: mapping.map_or("leads".into(), |(m, _)| m.object.clone()),
                mapping_file: mapping.map_or("none".into(), |(_, f)| f.to_string()),
                records: "stored",
                generated_at: now,
                leads: Vec::new(),
                summary,
            },
        })
    }

    /// Whether the limit is reached.
    pub fn full(&self) -> bool {
        self.opts
            .filter
            .limit
            .is_some_and(|n| self.preview.summary.leads >= n as u64)
    }

    /// Previews `leads` (as the CRM holds them) with what is stored about
    /// them. Returns whether more leads are wanted.
    pub async fn add(&mut self, leads: Vec<Lead>) -> Result<bool, PreviewError> {
        if leads.is_empty() || self.full() {
            return Ok(!self.full());
        }
        let ids: Vec<LeadId> = leads.iter().map(|l| l.id.clone()).collect();
        let mut stored = self.store.load_leads(&self.ws.id, &ids).await?;
        let mut ours = self.store.written(&self.ws.id, &ids).await?;
        self.add_loaded(leads, &mut stored, &mut ours);
        Ok(!self.full())
    }

    fn add_loaded(
        &mut self,
        leads: Vec<Lead>,
        stored: &mut HashMap<LeadId, StoredLead>,
        ours: &mut HashMap<LeadId, WrittenByUs>,
    ) {
        for lead in leads {
            if self.full() {
                return;
            }
            let id = lead.id.clone();
            let s = stored.remove(&id).unwrap_or_default();
            let p = prepare(self.ws, lead, s, self.now);
            if let Some(a) = &self.audience
                && !p.audiences.contains(a)
            {
                continue;
            }
            let written = ours.remove(&id).unwrap_or_default();
            let lp = preview_lead(
                self.ws,
                self.mapping,
                &p,
                &written,
                self.now,
                self.estimator.as_ref(),
            );
            self.preview.summary.add(&lp);
            if !self.opts.filter.only_changes || lp.writes() > 0 {
                self.preview.leads.push(lp);
            }
        }
    }

    pub fn finish(self) -> Preview {
        self.preview
    }

    /// Marks the records as re-read from the CRM.
    pub fn live(&mut self) {
        self.preview.records = "live";
    }
}

/// What a preview is of: the workspace, the mapping write-back would use
/// (and its file, for the heading), where the data is, and the time.
pub struct Scope<'a> {
    pub settings: &'a Settings,
    pub ws: &'a Arc<Workspace>,
    pub mapping: &'a Mapping,
    pub mapping_file: &'a str,
    pub store: &'a dyn Store,
    pub now: UnixMillis,
}

/// Previews the workspace's stored leads (those the filter selects), with
/// the current values as last synced, or re-read through `live`.
pub async fn preview_stored(
    scope: Scope<'_>,
    opts: &Options,
    live: Option<&dyn Records>,
) -> Result<Preview, PreviewError> {
    let Scope {
        settings,
        ws,
        mapping,
        mapping_file,
        store,
        now,
    } = scope;
    let mut pv = Previewer::new(
        settings,
        ws,
        Some((mapping, mapping_file)),
        store,
        opts,
        now,
    )
    .await?;
    if live.is_some() {
        pv.live();
    }
    let refresh = async |leads: Vec<Lead>| -> Result<Vec<Lead>, PreviewError> {
        match live {
            None => Ok(leads),
            Some(r) => {
                let ids: Vec<LeadId> = leads.iter().map(|l| l.id.clone()).collect();
                let mut fresh = r.read(&ids).await?;
                // A lead deleted in the CRM since the last sync is left out.
                fresh.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(fresh)
            }
        }
    };
    if !opts.filter.ids.is_empty() {
        let wanted: BTreeSet<&LeadId> = opts.filter.ids.iter().collect();
        let ids: Vec<LeadId> = wanted.into_iter().cloned().collect();
        let found = store.leads_by_ids(&ws.id, &ids).await?;
        if found.len() < ids.len() {
            let have: BTreeSet<&LeadId> = found.iter().map(|l| &l.id).collect();
            let missing: Vec<&str> = ids
                .iter()
                .filter(|i| !have.contains(i))
                .map(LeadId::as_str)
                .take(10)
                .collect();
            return Err(PreviewError::Usage(format!(
                "no stored lead {} in workspace {}: run `enrichd sync --once` to pull it first",
                missing.join(", "),
                ws.id
            )));
        }
        for chunk in found.chunks(PAGE) {
            let leads = refresh(chunk.to_vec()).await?;
            if !pv.add(leads).await? {
                break;
            }
        }
        return Ok(pv.finish());
    }
    let mut after: Option<LeadId> = None;
    loop {
        let page = store.lead_page(&ws.id, after.as_ref(), PAGE as i64).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let n = page.len();
        let leads = refresh(page).await?;
        if !pv.add(leads).await? || n < PAGE {
            break;
        }
    }
    Ok(pv.finish())
}

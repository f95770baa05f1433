//! Previews: exactly what enrichd would write to the CRM, lead by lead and
//! field by field, and (with an estimate) which providers it would ask for
//! what is still missing and what that would cost — without writing,
//! calling a provider or touching a ledger.
//!
//! The per-lead part is pure and shared with write-back: [`plan_lead`] is
//! the one function that turns a lead, its stored values, the current
//! audiences and the mapping into field decisions, so a preview shows what
//! a sync would send. [`estimate`] plans the waterfall the way a run would
//! (the same `prepare` and `Waterfall::plan`) but never calls anyone; it
//! weighs each provider by its hit rate from the stored attempts.
//! [`run`] is the I/O edge: it pages through stored leads (or re-reads them
//! from the CRM with `--live`) and feeds them through.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Workspace;
use crate::core::channel::Channel;
use crate::core::mapping::{self, Action, CrmFields, FieldDecision, Mapping, WrittenByUs};
use crate::core::status::EnrichmentStatus;
use crate::core::value::{ChannelValue, UnixMillis, Verification};
use crate::engine::run::Prepared;

pub mod estimate;
pub mod render;
pub mod run;

pub use estimate::{Estimator, LeadEstimate};

/// What write-back would do to one lead.
#[derive(Debug, Clone)]
pub struct LeadPlan {
    /// The enrichment status written (from the current audiences and every
    /// usable value), `None` for a lead in no audience.
    pub status: Option<EnrichmentStatus>,
    pub decisions: Vec<FieldDecision>,
}

impl LeadPlan {
    pub fn changes(&self) -> BTreeMap<String, String> {
        mapping::changes(&self.decisions)
    }
}

/// The field decisions for a prepared lead: the mapping as the lead's
/// audiences shape it, applied to the record as last read, the usable
/// stored values (a value found unusable since is never written) and what
/// enrichd wrote before.
pub(crate) fn plan_lead(
    mapping: &Mapping,
    p: &Prepared,
    ours: &WrittenByUs,
    now: UnixMillis,
) -> LeadPlan {
    let m = mapping.for_audiences(&p.audiences);
    let record: CrmFields = m
        .fields()
        .into_iter()
        .map(|f| (f.to_string(), p.lead.text(f)))
        .collect();
    let values: BTreeMap<Channel, ChannelValue> = p
        .stored
        .values
        .iter()
        .filter(|v| v.verification != Verification::Invalid)
        .map(|v| (v.channel, v.clone()))
        .collect();
    let status = p.status_before;
    let decisions = mapping::decide(&m, &record, &values, status, ours, now);
    LeadPlan { status, decisions }
}

/// One lead in a preview.
#[derive(Debug, Clone, Serialize)]
pub struct LeadPreview {
    pub lead_id: String,
    pub audiences: Vec<String>,
    /// What the CRM's status field holds now (or, without one, the status
    /// enrichd last recorded).
    pub status_before: Option<EnrichmentStatus>,
    /// Once the proposed writes are made.
    pub status_after: Option<EnrichmentStatus>,
    pub fields: Vec<FieldDecision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<LeadEstimate>,
}

impl LeadPreview {
    pub fn writes(&self) -> usize {
        self.fields.iter().filter(|d| d.action.is_write()).count()
    }
}

/// Builds a lead's preview row.
/// Without a mapping (a workspace with no CRM: nothing is written back)
/// the row has no fields.
pub(crate) fn preview_lead(
    ws: &Workspace,
    mapping: Option<&Mapping>,
    p: &Prepared,
    ours: &WrittenByUs,
    now: UnixMillis,
    estimator: Option<&Estimator>,
) -> LeadPreview {
    let plan = match mapping {
        Some(m) => plan_lead(m, p, ours, now),
        None => LeadPlan {
            status: p.status_before,
            decisions: Vec::new(),
        },
    };
    let recorded = p
        .stored
        .status
        .as_ref()
        .and_then(|s| s.enrichment_status.as_deref())
        .and_then(EnrichmentStatus::parse);
    let status_field = mapping.and_then(|m| m.status.as_ref());
    let in_crm = status_field
        .and_then(|r| p.lead.text(&r.field))
        .and_then(|t| EnrichmentStatus::parse(&t.to_lowercase()));
    let status_before = if status_field.is_some() {
        in_crm
    } else {
        recorded
    };
    LeadPreview {
        lead_id: p.lead.id.to_string(),
        audiences: p.audiences.clone(),
        status_before,
        status_after: plan.status,
        fields: plan.decisions,
        // Only leads still missing a channel have anything to estimate.
        estimate: estimator
            .map(|e| e.estimate(ws, p, now))
            .filter(|e| !e.missing.is_empty()),
    }
}

/// Counts over every previewed lead.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub leads: u64,
    /// Leads with at least one field to write.
    pub leads_with_writes: u64,
    pub writes: u64,
    /// "before → after" (`none` for a lead in no audience) → leads.
    pub status: BTreeMap<String, u64>,
    /// Field → leads it would be written on.
    pub writes_per_field: BTreeMap<String, u64>,
    /// Why fields are left alone → how many.
    pub skips: BTreeMap<String, u64>,
    /// Credits the proposed writes cost: always 0 (stored values were
    /// charged when found); kept so scripts need not special-case it.
    pub credits_to_write: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<estimate::EstimateSummary>,
}

impl Summary {
    pub fn add(&mut self, lp: &LeadPreview) {
        self.leads += 1;
        let writes = lp.writes() as u64;
        self.writes += writes;
        if writes > 0 {
            self.leads_with_writes += 1;
        }
        let name = |s: Option<EnrichmentStatus>| s.map_or("none".to_string(), |s| s.to_string());
        *self
            .status
            .entry(format!(
                "{} → {}",
                name(lp.status_before),
                name(lp.status_after)
            ))
            .or_default() += 1;
        for d in &lp.fields {
            match d.action {
                Action::Write => *self.writes_per_field.entry(d.field.clone()).or_default() += 1,
                Action::Skip(r) => {
                    *self
                        .skips
                        .entry(serde_json::to_value(r).map_or_else(
                            |_| format!("{r:?}"),
                            |v| v.as_str().unwrap_or_default().to_string(),
                        ))
                        .or_default() += 1
                }
            }
        }
        if let Some(e) = &lp.estimate {
            self.estimate.get_or_insert_with(Default::default).add(e);
        }
    }
}

/// A whole preview: what it covers, the rows shown and the summary of all
/// leads previewed.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub workspace: String,
    pub crm: String,
    pub object: String,
    pub mapping_file: String,
    /// Where the current values came from: `stored` (as last synced) or
    /// `live` (re-read from the CRM).
    pub records: &'static str,
    pub generated_at: UnixMillis,
    pub leads: Vec<LeadPreview>,
    pub summary: Summary,
}

#[cfg(test)]
mod tests;

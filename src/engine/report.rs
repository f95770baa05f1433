//! What a run did, per lead and in total: the basis of the CLI's table and
//! JSON output and of the tests' assertions.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::core::channel::Channel;
use crate::core::lead::LeadId;
use crate::core::outcome::{MilliCredits, OutcomeKind};
use crate::core::status::EnrichmentStatus;
use crate::store::{LeadState, Settlement};

/// A value stored during the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilledValue {
    pub channel: Channel,
    pub value: String,
    pub source: String,
    /// Credits charged now (0 when this value had been charged before).
    pub credits: i64,
}

/// Why a configured channel is still empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unfilled {
    pub channel: Channel,
    /// `(account, outcome)` per provider that was asked or skipped.
    pub tried: Vec<(String, OutcomeKind)>,
    /// `true` when a provider was skipped for now and the lead will be retried.
    pub retry: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadReport {
    pub lead_id: LeadId,
    pub audiences: Vec<String>,
    pub status_before: Option<EnrichmentStatus>,
    pub status_after: Option<EnrichmentStatus>,
    pub state: LeadState,
    /// Why the lead is in its state, for humans.
    pub reason: String,
    pub filled: Vec<FilledValue>,
    pub unfilled: Vec<Unfilled>,
    /// Provider requests made for this lead (retries included).
    pub provider_calls: u32,
    pub credits: i64,
    /// What providers billed for this lead, per account (milli-credits).
    pub provider_spend_milli: BTreeMap<String, MilliCredits>,
}

/// Per provider account.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProviderTotals {
    pub requests: u64,
    pub rate_limited: u64,
    pub values_supplied: u64,
    pub spend_milli: MilliCredits,
    /// Sustained request rate the limiter allows (per second).
    pub limit_per_second: f64,
    pub limiter_wait_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunTotals {
    pub leads: usize,
    pub before: BTreeMap<String, usize>,
    pub after: BTreeMap<String, usize>,
    pub states: BTreeMap<String, usize>,
    pub values_found: usize,
    pub credits_charged: i64,
    pub values_by_source: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub workspace: String,
    pub budget_period: String,
    /// Credits reserved up front (worst case of the selected leads).
    pub reserved: i64,
    pub settlement: Option<Settlement>,
    pub totals: RunTotals,
    pub providers: BTreeMap<String, ProviderTotals>,
    pub leads: Vec<LeadReport>,
}

impl RunReport {
    pub fn lead(&self, id: &str) -> Option<&LeadReport> {
        self.leads.iter().find(|l| l.lead_id.as_str() == id)
    }

    /// Recomputes the totals from the lead reports.
    pub fn tally(&mut self) {
        let key = |s: Option<EnrichmentStatus>| s.map_or("none", |s| s.as_str()).to_string();
        let mut t = RunTotals {
            leads: self.leads.len(),
            ..RunTotals::default()
        };
        for l in &self.leads {
            *t.before.entry(key(l.status_before)).or_default() += 1;
            *t.after.entry(key(l.status_after)).or_default() += 1;
            *t.states.entry(l.state.as_str().to_string()).or_default() += 1;
            t.values_found += l.filled.len();
            t.credits_charged += l.credits;
            for f in &l.filled {
                *t.values_by_source.entry(f.source.clone()).or_default() += 1;
            }
        }
        self.totals = t;
    }
}

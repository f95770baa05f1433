//! Which providers a run would ask for a lead's missing channels, and what
//! it would cost — planned exactly as a run plans ([`Waterfall::plan`] over
//! the same prepared lead), with no call made.
//!
//! Each provider is weighed by its hit rate for the channel in this
//! workspace: usable values found over definitive answers in the stored
//! attempts, with a uniform prior (`(found + 1) / (answered + 2)`), so a
//! provider never tried counts as a coin toss and says so (`basis:
//! "prior"`). A provider further down a channel's order is asked only when
//! every one before it missed, so it is asked with the product of their
//! miss rates. Customer credits follow the workspace's prices: at most the
//! price of every missing channel (what a run reserves), and in expectation
//! the price times the chance the channel is filled. Provider spend uses
//! the connectors' cost tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Settings, Workspace};
use crate::core::channel::Channel;
use crate::core::outcome::OutcomeKind;
use crate::core::plan::{ProviderView, SlotState, Waterfall};
use crate::core::value::{DAY_MS, UnixMillis};
use crate::engine::run::Prepared;
use crate::providers::Finder;
use crate::providers::def::Cost;
use crate::store::crm::AttemptCount;

/// A provider account as the estimate sees it.
struct Account {
    provider: String,
    finder: Arc<dyn Finder>,
    cost: Cost,
}

/// Plans without calling: finders built from the accounts (pure adapters,
/// no HTTP client), hit rates from the stored attempts.
pub struct Estimator {
    accounts: BTreeMap<String, Account>,
    /// (provider, channel) → (definitive answers, usable values found).
    stats: BTreeMap<(String, Channel), (u64, u64)>,
    not_found_retry_days: u32,
}

/// How a hit rate was arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// From this workspace's attempts.
    Stats,
    /// No definitive answer recorded yet: the uniform prior (0.5).
    Prior,
}

/// One provider a channel would be asked of.
#[derive(Debug, Clone, Serialize)]
pub struct Ask {
    pub account: String,
    pub provider: String,
    /// The chance the run reaches this provider for the channel.
    #[serde(serialize_with = "round4")]
    pub probability: f64,
    #[serde(serialize_with = "round4")]
    pub hit_rate: f64,
    pub basis: Basis,
}

/// A provider the run would not ask again, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Passed {
    pub account: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelEstimate {
    pub channel: Channel,
    pub asks: Vec<Ask>,
    pub passed: Vec<Passed>,
    /// The chance some provider fills it.
    #[serde(serialize_with = "round4")]
    pub fill_probability: f64,
    pub credits_max: i64,
    #[serde(serialize_with = "round4")]
    pub credits_expected: f64,
}

/// What enriching one lead now would involve.
#[derive(Debug, Clone, Serialize)]
pub struct LeadEstimate {
    /// Configured channels without a usable, fresh value.
    pub missing: Vec<Channel>,
    pub channels: Vec<ChannelEstimate>,
    /// The worst case a run reserves: every missing channel found.
    pub credits_max: i64,
    #[serde(serialize_with = "round4")]
    pub credits_expected: f64,
    /// Expected calls per provider account.
    #[serde(serialize_with = "round4_map")]
    pub calls: BTreeMap<String, f64>,
    /// Expected provider spend, in the providers' own credits.
    #[serde(serialize_with = "round4")]
    pub provider_spend_expected: f64,
    /// Why nothing would be asked, when nothing would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// Totals of the estimates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EstimateSummary {
    /// Leads missing at least one configured channel.
    pub leads_missing: u64,
    /// Of those, leads some provider would be asked for.
    pub leads_to_ask: u64,
    pub missing_per_channel: BTreeMap<Channel, u64>,
    pub credits_max: i64,
    #[serde(serialize_with = "round4")]
    pub credits_expected: f64,
    #[serde(serialize_with = "round4_map")]
    pub calls: BTreeMap<String, f64>,
    #[serde(serialize_with = "round4")]
    pub provider_spend_expected: f64,
    /// Credits left in the budget period, when the workspace has a budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_available: Option<i64>,
}

impl EstimateSummary {
    pub fn add(&mut self, e: &LeadEstimate) {
        if e.missing.is_empty() {
            return;
        }
        self.leads_missing += 1;
        if e.calls.values().any(|&c| c > 0.0) {
            self.leads_to_ask += 1;
        }
        for c in &e.missing {
            *self.missing_per_channel.entry(*c).or_default() += 1;
        }
        self.credits_max += e.credits_max;
        self.credits_expected += e.credits_expected;
        for (a, c) in &e.calls {
            *self.calls.entry(a.clone()).or_default() += c;
        }
        self.provider_spend_expected += e.provider_spend_expected;
    }
}

/// Estimates carry 4 decimals: more is noise, not precision.
fn round4<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((x * 10_000.0).round() / 10_000.0)
}

fn round4_map<S: serde::Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut out = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        out.serialize_entry(k, &((v * 10_000.0).round() / 10_000.0))?;
    }
    out.end()
}

/// Outcomes that answer a channel (a rate limit or an outage says nothing
/// about coverage).
fn definitive(o: OutcomeKind) -> bool {
    o.is_definitive() && o != OutcomeKind::InsufficientIdentity
}

impl Estimator {
    /// From the configured accounts and the workspace's attempt counts.
    /// Accounts whose adapter cannot be built are left out (`enrichd check`
    /// reports them).
    pub fn new(settings: &Settings, counts: &[AttemptCount]) -> Estimator {
        let accounts = settings
            .accounts
            .iter()
            .filter_map(|(id, a)| {
                let finder = crate::providers::build_finder(a).ok().flatten()?;
                Some((
                    id.clone(),
                    Account {
                        provider: a.connector.id.clone(),
                        finder,
                        cost: a.connector.cost,
                    },
                ))
            })
            .collect();
        let mut stats: BTreeMap<(String, Channel), (u64, u64)> = BTreeMap::new();
        for c in counts {
            let (Ok(channel), Some(outcome)) =
                (c.channel.parse::<Channel>(), OutcomeKind::parse(&c.outcome))
            else {
                continue;
            };
            if !definitive(outcome) {
                continue;
            }
            let n = u64::try_from(c.count).unwrap_or(0);
            let e = stats.entry((c.provider.clone(), channel)).or_default();
            e.0 += n;
            if outcome == OutcomeKind::Found {
                e.1 += n;
            }
        }
        Estimator {
            accounts,
            stats,
            not_found_retry_days: settings.engine.not_found_retry_days,
        }
    }

    fn hit_rate(&self, provider: &str, c: Channel) -> (f64, Basis) {
        match self.stats.get(&(provider.to_string(), c)) {
            Some(&(answered, found)) if answered > 0 => {
                ((found as f64 + 1.0) / (answered as f64 + 2.0), Basis::Stats)
            }
            _ => (0.5, Basis::Prior),
        }
    }

    /// The estimate for one prepared lead.
    pub(crate) fn estimate(&self, ws: &Workspace, p: &Prepared, now: UnixMillis) -> LeadEstimate {
        let needed = p.needed();
        let mut out = LeadEstimate {
            missing: needed.iter().collect(),
            channels: Vec::new(),
            credits_max: 0,
            credits_expected: 0.0,
            calls: BTreeMap::new(),
            provider_spend_expected: 0.0,
            blocked: None,
        };
        if needed.is_empty() {
            return out;
        }
        if !ws.enabled {
            out.blocked = Some("enrichment is off for this workspace".into());
            return out;
        }
        let views: Vec<ProviderView> = ws
            .accounts()
            .into_iter()
            .filter_map(|acc| {
                let a = self.accounts.get(&acc)?;
                Some(ProviderView {
                    provider: a.provider.clone(),
                    supplies: a.finder.supplies(),
                    accepts: a.finder.accepts(&p.identity),
                    account: acc,
                })
            })
            .collect();
        let since = now - i64::from(self.not_found_retry_days) * DAY_MS;
        let wf = Waterfall::plan(
            needed,
            |c| ws.order_for(c),
            &views,
            &p.stored.attempts,
            since,
        );
        // Per account: the chance it is asked for each channel, and the
        // chance it finds each.
        let mut reach: BTreeMap<String, f64> = BTreeMap::new();
        let mut spend = 0.0;
        let mut any_found: BTreeMap<String, f64> = BTreeMap::new();
        for run in &wf.runs {
            let price = ws.prices.of(run.channel);
            let mut miss = 1.0;
            let mut ce = ChannelEstimate {
                channel: run.channel,
                asks: Vec::new(),
                passed: Vec::new(),
                fill_probability: 0.0,
                credits_max: 0,
                credits_expected: 0.0,
            };
            for slot in &run.slots {
                match slot.state {
                    SlotState::Untried => {
                        let (h, basis) = self.hit_rate(&slot.provider, run.channel);
                        ce.asks.push(Ask {
                            account: slot.account.clone(),
                            provider: slot.provider.clone(),
                            probability: miss,
                            hit_rate: h,
                            basis,
                        });
                        let r = reach.entry(slot.account.clone()).or_default();
                        *r = r.max(miss);
                        if let Some(a) = self.accounts.get(&slot.account) {
                            spend += miss * h * a.cost.for_channel(run.channel) as f64 / 1000.0;
                        }
                        let f = any_found.entry(slot.account.clone()).or_default();
                        *f = f.max(miss * h);
                        miss *= 1.0 - h;
                    }
                    SlotState::Answered(o) | SlotState::Skipped(o) => ce.passed.push(Passed {
                        account: slot.account.clone(),
                        reason: match o {
                            OutcomeKind::InsufficientIdentity => {
                                "the lead lacks the inputs this provider needs".into()
                            }
                            o => format!(
                                "answered {} within the last {} days",
                                o.as_str(),
                                self.not_found_retry_days
                            ),
                        },
                    }),
                }
            }
            if !ce.asks.is_empty() {
                ce.fill_probability = 1.0 - miss;
                ce.credits_max = price;
                ce.credits_expected = price as f64 * ce.fill_probability;
            }
            out.credits_max += ce.credits_max;
            out.credits_expected += ce.credits_expected;
            out.channels.push(ce);
        }
        for (acc, r) in &reach {
            if let Some(a) = self.accounts.get(acc) {
                spend += r * a.cost.attempt_milli() as f64 / 1000.0;
                spend += any_found.get(acc).copied().unwrap_or(0.0) * a.cost.per_match;
            }
        }
        out.calls = reach;
        out.provider_spend_expected = spend;
        if out.calls.is_empty() {
            out.blocked = Some(if views.iter().any(|v| v.accepts) {
                "every provider in the order already answered these channels recently".into()
            } else {
                "no provider can be asked: the lead lacks the identity they need".into()
            });
        }
        out
    }
}

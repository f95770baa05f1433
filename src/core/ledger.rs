//! Ledger arithmetic: customer prices per channel, budget periods, charge
//! idempotency keys and the selection of leads that fit a budget. Pure: the
//! store applies the results atomically.

use chrono::{DateTime, Datelike};
use serde::{Deserialize, Serialize};

use super::channel::{Channel, ChannelSet};
use super::lead::LeadId;
use super::value::UnixMillis;

/// Customer credits per usable value stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Prices {
    pub work_email: i64,
    pub personal_email: i64,
    pub phone: i64,
    pub linkedin_url: i64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            work_email: 1,
            personal_email: 3,
            phone: 10,
            linkedin_url: 1,
        }
    }
}

impl Prices {
    pub fn of(&self, c: Channel) -> i64 {
        match c {
            Channel::WorkEmail => self.work_email,
            Channel::PersonalEmail => self.personal_email,
            Channel::Phone => self.phone,
            Channel::LinkedinUrl => self.linkedin_url,
        }
    }

    /// The most a lead can cost if every channel in `missing` is filled.
    pub fn worst_case(&self, missing: ChannelSet) -> i64 {
        missing.iter().map(|c| self.of(c)).sum()
    }
}

/// The length of a budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    #[default]
    Month,
}

/// The key of the period containing `at` (UTC): `2026-11-22`, `2026-W47`,
/// `2026-11`.
pub fn period_key(period: Period, at: UnixMillis) -> String {
    let t = DateTime::from_timestamp_millis(at).unwrap_or(DateTime::UNIX_EPOCH);
    match period {
        Period::Day => t.format("%Y-%m-%d").to_string(),
        Period::Week => {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }
        Period::Month => t.format("%Y-%m").to_string(),
    }
}

/// The idempotency key of the charge for a value: the same value of the same
/// channel of the same lead is charged once, ever, however often it is found
/// again (re-runs, retries, crashes, re-verification). Scoped by workspace in
/// the store.
pub fn charge_key(lead: &LeadId, channel: Channel, normalised_value: &str) -> String {
    format!(
        "{}|{}|{}",
        lead.as_str(),
        channel.as_str(),
        normalised_value
    )
}

/// A lead competing for budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetCandidate {
    pub lead: LeadId,
    pub icp_score: f64,
    /// Credits if every missing channel is filled.
    pub worst_case: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    /// Leads to enrich now, highest ICP score first.
    pub selected: Vec<LeadId>,
    /// Leads that did not fit, highest ICP score first.
    pub queued: Vec<LeadId>,
    /// Sum of the selected leads' worst cases: the reservation to take.
    pub reserve: i64,
}

/// Takes leads in descending ICP score (ties by lead id) while their worst
/// cases fit in `available` (`None` = unlimited); the first lead that does
/// not fit and every lead after it are queued, so a lower-scored lead never
/// takes budget a higher-scored one is waiting for.
pub fn select_within_budget(
    mut candidates: Vec<BudgetCandidate>,
    available: Option<i64>,
) -> Selection {
    candidates.sort_by(|a, b| {
        b.icp_score
            .total_cmp(&a.icp_score)
            .then_with(|| a.lead.cmp(&b.lead))
    });
    let mut s = Selection::default();
    let mut full = false;
    for c in candidates {
        let fits = available.is_none_or(|a| s.reserve + c.worst_case <= a);
        if !full && fits {
            s.reserve += c.worst_case;
            s.selected.push(c.lead);
        } else {
            full = true;
            s.queued.push(c.lead);
        }
    }
    s
}

/// Credits still available in a period.
pub fn available(limit: Option<i64>, charged: i64, reserved: i64) -> Option<i64> {
    limit.map(|l| (l - charged - reserved).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, icp: f64, worst: i64) -> BudgetCandidate {
        BudgetCandidate {
            lead: LeadId(id.into()),
            icp_score: icp,
            worst_case: worst,
        }
    }

    #[test]
    fn default_prices_and_worst_case() {
        let p = Prices::default();
        assert_eq!(p.worst_case(ChannelSet::ALL), 15);
        assert_eq!(p.worst_case(ChannelSet::single(Channel::Phone)), 10);
        assert_eq!(p.worst_case(ChannelSet::EMPTY), 0);
    }

    #[test]
    fn period_keys() {
        let t = 1_795_347_000_000; // 2026-11-22T...Z
        assert_eq!(period_key(Period::Month, t), "2026-11");
        assert_eq!(period_key(Period::Day, t), "2026-11-22");
        assert_eq!(period_key(Period::Week, t), "2026-W47");
    }

    #[test]
    fn selection_takes_highest_icp_first_and_stops_at_the_first_misfit() {
        let s = select_within_budget(
            vec![
                cand("low", 10.0, 1),
                cand("top", 90.0, 10),
                cand("mid", 50.0, 10),
                cand("mid2", 50.0, 1),
            ],
            Some(20),
        );
        assert_eq!(s.selected, vec![LeadId("top".into()), LeadId("mid".into())]);
        assert_eq!(s.queued, vec![LeadId("mid2".into()), LeadId("low".into())]);
        assert_eq!(s.reserve, 20);
        let none = select_within_budget(vec![cand("a", 1.0, 5)], Some(4));
        assert!(none.selected.is_empty() && none.reserve == 0);
        let unlimited = select_within_budget(vec![cand("a", 1.0, 5), cand("b", 2.0, 5)], None);
        assert_eq!(unlimited.selected.len(), 2);
        assert_eq!(unlimited.reserve, 10);
    }

    #[test]
    fn charge_keys_identify_the_value() {
        let l = LeadId("42".into());
        assert_eq!(
            charge_key(&l, Channel::Phone, "+14155552671"),
            "42|phone|+14155552671"
        );
        assert_ne!(
            charge_key(&l, Channel::WorkEmail, "a@b.co"),
            charge_key(&l, Channel::PersonalEmail, "a@b.co")
        );
        assert_eq!(available(Some(10), 4, 5), Some(1));
        assert_eq!(available(Some(10), 8, 5), Some(0));
        assert_eq!(available(None, 8, 5), None);
    }
}

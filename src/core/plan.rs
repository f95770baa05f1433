//! Waterfall planning: which provider to ask next, for which channels.
//!
//! For each missing configured channel the providers run in the workspace's
//! order for that channel. The next call goes to the head (first untried
//! provider) of the first unfilled channel, and asks it for every unfilled
//! channel whose head it also is — one call per provider for all the
//! channels it is next in line for, without ever asking a provider for a
//! channel ahead of that channel's order. A channel stops at its first usable
//! value. A provider skipped for now (rate limited, down, out of credits,
//! refusing the key) does not end the channel's waterfall: the next provider
//! is tried, and if no provider fills the channel the lead is deferred, so
//! the skipped provider is asked again later.
//!
//! Pure: the engine feeds outcomes in with [`Waterfall::record`].

use serde::Serialize;

use super::channel::{Channel, ChannelSet};
use super::outcome::OutcomeKind;
use super::value::UnixMillis;
use crate::store::PastAttempt;

/// A provider account as the planner sees it for one lead.
#[derive(Debug, Clone)]
pub struct ProviderView {
    /// Account id (config.toml `[providers.<id>]`).
    pub account: String,
    /// Connector id: the Source of its values; attempt history is kept by it.
    pub provider: String,
    pub supplies: ChannelSet,
    /// The lead's identity has the inputs this provider needs.
    pub accepts: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "outcome", rename_all = "snake_case")]
pub enum SlotState {
    Untried,
    /// A definitive answer for this channel (found, unusable, not found...).
    Answered(OutcomeKind),
    /// Skipped for now (rate limited, out of credits, down, auth, pending).
    Skipped(OutcomeKind),
}

#[derive(Debug, Clone, Serialize)]
pub struct Slot {
    pub account: String,
    pub provider: String,
    pub state: SlotState,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelRun {
    pub channel: Channel,
    pub slots: Vec<Slot>,
    /// The account that supplied the usable value.
    pub filled_by: Option<String>,
}

impl ChannelRun {
    fn head(&self) -> Option<&Slot> {
        if self.filled_by.is_some() {
            return None;
        }
        self.slots.iter().find(|s| s.state == SlotState::Untried)
    }
}

/// The next provider call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub account: String,
    pub channels: ChannelSet,
}

/// Where the waterfall ended for a lead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    pub filled: ChannelSet,
    /// Every provider answered definitively and none had a usable value.
    pub exhausted: ChannelSet,
    /// Unfilled with some provider skipped for now: retry the lead later.
    pub deferred: ChannelSet,
    /// No provider could be asked for any channel: the lead lacks the
    /// identity every provider needs (or no provider supplies the channels).
    pub no_identity: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Waterfall {
    pub runs: Vec<ChannelRun>,
}

impl Waterfall {
    /// Plans the waterfall for `needed` channels. `order(channel)` gives the
    /// account ids in the workspace's order for that channel; accounts that
    /// cannot supply the channel are left out. A provider that answered
    /// definitively for a channel at or after `since` is not asked again.
    pub fn plan<'a>(
        needed: ChannelSet,
        order: impl Fn(Channel) -> &'a [String],
        providers: &[ProviderView],
        history: &[PastAttempt],
        since: UnixMillis,
    ) -> Waterfall {
        let runs = needed
            .iter()
            .map(|channel| {
                let slots = order(channel)
                    .iter()
                    .filter_map(|acc| providers.iter().find(|p| &p.account == acc))
                    .filter(|p| p.supplies.contains(channel))
                    .map(|p| {
                        let past = history.iter().find(|h| {
                            h.channel == channel
                                && h.provider == p.provider
                                && h.at >= since
                                && h.outcome.is_definitive()
                        });
                        let state = if !p.accepts {
                            SlotState::Answered(OutcomeKind::InsufficientIdentity)
                        } else if let Some(h) = past {
                            SlotState::Answered(h.outcome)
                        } else {
                            SlotState::Untried
                        };
                        Slot {
                            account: p.account.clone(),
                            provider: p.provider.clone(),
                            state,
                        }
                    })
                    .collect();
                ChannelRun {
                    channel,
                    slots,
                    filled_by: None,
                }
            })
            .collect();
        Waterfall { runs }
    }

    /// The next call, or `None` when every channel is filled or out of
    /// providers to ask now.
    pub fn next_call(&self) -> Option<Call> {
        let account = self.runs.iter().find_map(|r| r.head())?.account.clone();
        let channels = self
            .runs
            .iter()
            .filter(|r| r.head().is_some_and(|h| h.account == account))
            .map(|r| r.channel)
            .collect();
        Some(Call { account, channels })
    }

    /// Records the outcome of asking `account` for `channel`.
    pub fn record(&mut self, account: &str, channel: Channel, outcome: OutcomeKind) {
        let Some(run) = self.runs.iter_mut().find(|r| r.channel == channel) else {
            return;
        };
        if let Some(slot) = run.slots.iter_mut().find(|s| s.account == account) {
            slot.state = if outcome.is_definitive() {
                SlotState::Answered(outcome)
            } else {
                SlotState::Skipped(outcome)
            };
        }
        if outcome == OutcomeKind::Found {
            run.filled_by = Some(account.to_string());
        }
    }

    /// Marks a provider skipped for now on every channel it has not answered
    /// (e.g. it is out of credits: no need to ask it for the others).
    pub fn skip_account(&mut self, account: &str, outcome: OutcomeKind) {
        for run in &mut self.runs {
            for slot in run.slots.iter_mut().filter(|s| s.account == account) {
                if slot.state == SlotState::Untried {
                    slot.state = SlotState::Skipped(outcome);
                }
            }
        }
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        let mut askable = false;
        for run in &self.runs {
            let c = run.channel;
            if run
                .slots
                .iter()
                .any(|sl| sl.state != SlotState::Answered(OutcomeKind::InsufficientIdentity))
            {
                askable = true;
            }
            if run.filled_by.is_some() {
                s.filled.insert(c);
            } else if run
                .slots
                .iter()
                .any(|sl| matches!(sl.state, SlotState::Skipped(_) | SlotState::Untried))
            {
                s.deferred.insert(c);
            } else {
                s.exhausted.insert(c);
            }
        }
        s.no_identity = !self.runs.is_empty() && !askable;
        s
    }

    /// Why each unfilled channel is unfilled, for reports: `(channel,
    /// [(account, outcome)])`.
    pub fn reasons(&self) -> Vec<(Channel, Vec<(String, OutcomeKind)>)> {
        self.runs
            .iter()
            .filter(|r| r.filled_by.is_none())
            .map(|r| {
                let why = r
                    .slots
                    .iter()
                    .filter_map(|s| match s.state {
                        SlotState::Answered(o) | SlotState::Skipped(o) => {
                            Some((s.account.clone(), o))
                        }
                        SlotState::Untried => None,
                    })
                    .collect();
                (r.channel, why)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Channel::*;
    use OutcomeKind::*;

    fn view(acc: &str, supplies: &[Channel]) -> ProviderView {
        ProviderView {
            account: acc.into(),
            provider: acc.into(),
            supplies: supplies.iter().copied().collect(),
            accepts: true,
        }
    }

    fn order(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn set(cs: &[Channel]) -> ChannelSet {
        cs.iter().copied().collect()
    }

    #[test]
    fn one_call_asks_for_every_channel_the_provider_is_next_for() {
        let providers = [
            view("a", &[WorkEmail, Phone]),
            view("b", &[WorkEmail, Phone, LinkedinUrl]),
        ];
        let o = order(&["a", "b"]);
        let mut w = Waterfall::plan(
            set(&[WorkEmail, Phone, LinkedinUrl]),
            |_| &o,
            &providers,
            &[],
            0,
        );
        assert_eq!(
            w.next_call(),
            Some(Call {
                account: "a".into(),
                channels: set(&[WorkEmail, Phone])
            })
        );
        w.record("a", WorkEmail, Found);
        w.record("a", Phone, NotFound);
        // b is now next for phone and linkedin (a cannot supply linkedin).
        assert_eq!(
            w.next_call(),
            Some(Call {
                account: "b".into(),
                channels: set(&[Phone, LinkedinUrl])
            })
        );
        w.record("b", Phone, Found);
        w.record("b", LinkedinUrl, Unusable);
        assert_eq!(w.next_call(), None);
        let s = w.summary();
        assert_eq!(s.filled, set(&[WorkEmail, Phone]));
        assert_eq!(s.exhausted, set(&[LinkedinUrl]));
        assert!(s.deferred.is_empty() && !s.no_identity);
    }

    #[test]
    fn per_channel_order_is_never_jumped() {
        let providers = [
            view("a", &[WorkEmail, Phone]),
            view("b", &[WorkEmail, Phone]),
        ];
        let email = order(&["a", "b"]);
        let phone = order(&["b", "a"]);
        let w = Waterfall::plan(
            set(&[WorkEmail, Phone]),
            |c| if c == Phone { &phone } else { &email },
            &providers,
            &[],
            0,
        );
        // a is first for email but second for phone: it is asked for email only.
        assert_eq!(
            w.next_call(),
            Some(Call {
                account: "a".into(),
                channels: set(&[WorkEmail])
            })
        );
    }

    #[test]
    fn a_skipped_provider_does_not_end_the_waterfall_and_defers_the_lead() {
        let providers = [
            view("a", &[WorkEmail]),
            view("b", &[WorkEmail]),
            view("c", &[WorkEmail]),
        ];
        let o = order(&["a", "b", "c"]);
        let mut w = Waterfall::plan(set(&[WorkEmail]), |_| &o, &providers, &[], 0);
        w.record("a", WorkEmail, RateLimited);
        assert_eq!(w.next_call().map(|c| c.account), Some("b".into()));
        w.record("b", WorkEmail, NotFound);
        w.record("c", WorkEmail, NotFound);
        let s = w.summary();
        assert_eq!(s.deferred, set(&[WorkEmail]), "a must be asked again later");
        assert!(s.exhausted.is_empty());

        // Filled by a later provider: nothing left to retry.
        let mut w = Waterfall::plan(set(&[WorkEmail]), |_| &o, &providers, &[], 0);
        w.record("a", WorkEmail, OutOfCredits);
        w.record("b", WorkEmail, Found);
        assert_eq!(w.next_call(), None);
        assert_eq!(w.summary().filled, set(&[WorkEmail]));
        assert!(w.summary().deferred.is_empty());
    }

    #[test]
    fn skip_account_covers_its_other_channels() {
        let providers = [view("a", &[WorkEmail, Phone]), view("b", &[Phone])];
        let o = order(&["a", "b"]);
        let mut w = Waterfall::plan(set(&[WorkEmail, Phone]), |_| &o, &providers, &[], 0);
        w.skip_account("a", OutOfCredits);
        assert_eq!(
            w.next_call(),
            Some(Call {
                account: "b".into(),
                channels: set(&[Phone])
            })
        );
    }

    #[test]
    fn recent_definitive_history_is_respected_and_temporary_history_is_retried() {
        let providers = [view("a", &[WorkEmail]), view("b", &[WorkEmail])];
        let o = order(&["a", "b"]);
        let hist = |outcome, at| PastAttempt {
            channel: WorkEmail,
            provider: "a".into(),
            outcome,
            at,
        };
        let w = Waterfall::plan(
            set(&[WorkEmail]),
            |_| &o,
            &providers,
            &[hist(NotFound, 100)],
            50,
        );
        assert_eq!(w.next_call().map(|c| c.account), Some("b".into()));
        let w = Waterfall::plan(
            set(&[WorkEmail]),
            |_| &o,
            &providers,
            &[hist(NotFound, 10)],
            50,
        );
        assert_eq!(
            w.next_call().map(|c| c.account),
            Some("a".into()),
            "older than the window"
        );
        let w = Waterfall::plan(
            set(&[WorkEmail]),
            |_| &o,
            &providers,
            &[hist(RateLimited, 100)],
            50,
        );
        assert_eq!(
            w.next_call().map(|c| c.account),
            Some("a".into()),
            "temporary outcomes are retried"
        );
    }

    #[test]
    fn lack_of_identity_is_recorded_not_retried() {
        let mut a = view("a", &[WorkEmail]);
        a.accepts = false;
        let o = order(&["a"]);
        let w = Waterfall::plan(set(&[WorkEmail]), |_| &o, &[a.clone()], &[], 0);
        assert_eq!(w.next_call(), None);
        let s = w.summary();
        assert!(s.no_identity);
        assert_eq!(s.exhausted, set(&[WorkEmail]));
        // One provider that can be asked is enough to not be "no identity".
        let o = order(&["a", "b"]);
        let w = Waterfall::plan(
            set(&[WorkEmail]),
            |_| &o,
            &[a, view("b", &[WorkEmail])],
            &[],
            0,
        );
        assert!(!w.summary().no_identity);
    }

    #[test]
    fn unknown_and_incapable_accounts_are_left_out() {
        let providers = [view("a", &[Phone])];
        let o = order(&["ghost", "a"]);
        let w = Waterfall::plan(set(&[WorkEmail, Phone]), |_| &o, &providers, &[], 0);
        assert_eq!(w.runs[0].slots.len(), 0, "a cannot supply work_email");
        assert_eq!(
            w.next_call(),
            Some(Call {
                account: "a".into(),
                channels: set(&[Phone])
            })
        );
    }
}

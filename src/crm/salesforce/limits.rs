//! Salesforce's API limits for one org (§6.2–§6.4), as pure state the I/O
//! layer consults before every call and feeds after every answer.
//!
//! **Daily allocation.** Every REST answer carries
//! `Sforce-Limit-Info: api-usage=N/M` (§6.2): N calls used of M in the
//! org's **rolling 24-hour window**, shared by every integration of the org
//! (§6.4). There is no midnight reset: capacity comes back as the calls of
//! 24 hours ago age out, so no exact resume time is knowable.
//! [`DailyBudget`] therefore:
//! - stops the org when the used share reaches `stop_share` (default 0.8,
//!   tap-salesforce's `quota_percent_total`, §9), leaving the rest to the
//!   org's people and other tools;
//! - re-checks every `recheck_ms` (default 15 min, §6.1 "check GET /limits
//!   every N minutes; don't spin") by letting exactly one probe call through
//!   ([`Gate::Probe`]; `GET /limits` or the next real call, each costs one
//!   call, §6.3);
//! - resumes once a later answer shows the share below `resume_share`
//!   (default 0.75: a margin so the org does not flap at the threshold).
//!
//! **`REQUEST_LIMIT_EXCEEDED`** (403, "TotalRequests Limit exceeded.") means
//! the allocation is gone (the soft limit's overage included, §6.4): the org
//! is paused for `request_limit_pause_ms` (default 30 min) and then probed
//! the same way; nothing is dropped, the caller keeps its work (§6.1).
//! The concurrent variant ("ConcurrentRequests … Limit exceeded.") is a
//! short back-off with jitter instead ([`concurrent_backoff_ms`]).
//!
//! **Concurrent long-running requests** (§6.4): at most 25 requests lasting
//! 20 s or more at once in production and sandbox orgs, 5 in Developer
//! Edition and trials; more fail with `REQUEST_LIMIT_EXCEEDED`. Whether a
//! request will run long is unknown when it is sent, so the I/O layer caps
//! *all* of enrichd's in-flight requests to the org at
//! [`ConcurrencyPolicy::permits`] (a share of the cap, default one half,
//! since the cap is org-wide and shared with other integrations): a
//! per-org semaphore held for the whole request, retries included.

use serde_json::Value;

use crate::core::value::UnixMillis;

/// Calls used and allowed in the org's rolling 24 h window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    pub used: u64,
    pub max: u64,
}

impl ApiUsage {
    /// Used / max (may exceed 1.0: the daily limit is soft, §6.4).
    pub fn share(&self) -> f64 {
        if self.max == 0 {
            return 1.0;
        }
        self.used as f64 / self.max as f64
    }

    pub fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }
}

/// The header's name (§6.2; recorded answers write it in lower case).
pub const LIMIT_INFO_HEADER: &str = "sforce-limit-info";

/// Parses `Sforce-Limit-Info` (§6.2): the `api-usage=N/M` entry, wherever
/// it stands among others (`per-app-api-usage=17/250(appName=x)`), with
/// any spacing and key case. `None` when absent or malformed, or when
/// `M` is 0.
pub fn parse_limit_info(header: &str) -> Option<ApiUsage> {
    header.split(',').find_map(|entry| {
        let (key, value) = entry.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("api-usage") {
            return None;
        }
        let (used, max) = value.trim().split_once('/')?;
        let used = used.trim().parse::<u64>().ok()?;
        let max = max.trim().parse::<u64>().ok()?;
        (max > 0).then_some(ApiUsage { used, max })
    })
}

/// `DailyApiRequests` of a `GET /limits` answer (§6.3; keys `Max` and
/// `Remaining`).
pub fn parse_limits_resource(body: &Value) -> Option<ApiUsage> {
    let d = body.get("DailyApiRequests")?;
    let max = d.get("Max")?.as_u64()?;
    let remaining = d.get("Remaining")?.as_i64()?;
    let used = if remaining < 0 {
        max.saturating_add(remaining.unsigned_abs())
    } else {
        max.saturating_sub(remaining as u64)
    };
    (max > 0).then_some(ApiUsage { used, max })
}

/// How much of the daily allocation enrichd may use, and how it resumes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetPolicy {
    /// Stop at this share of the allocation (0.8).
    pub stop_share: f64,
    /// Resume below this share (0.75); clamped to at most `stop_share`.
    pub resume_share: f64,
    /// While stopped, one probe call this often (15 min).
    pub recheck_ms: i64,
    /// Pause after `REQUEST_LIMIT_EXCEEDED` before the first probe (30 min).
    pub request_limit_pause_ms: i64,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            stop_share: 0.8,
            resume_share: 0.75,
            recheck_ms: 15 * 60_000,
            request_limit_pause_ms: 30 * 60_000,
        }
    }
}

impl BudgetPolicy {
    fn stop(&self) -> f64 {
        if self.stop_share.is_finite() {
            self.stop_share.clamp(0.0, 1.0)
        } else {
            0.8
        }
    }
    fn resume(&self) -> f64 {
        if self.resume_share.is_finite() {
            self.resume_share.clamp(0.0, self.stop())
        } else {
            self.stop()
        }
    }
}

/// Why the org is paused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PauseReason {
    /// The used share reached the policy's stop share.
    ShareReached { usage: ApiUsage, stop_share: f64 },
    /// Salesforce answered `REQUEST_LIMIT_EXCEEDED`.
    RequestLimitExceeded,
}

impl std::fmt::Display for PauseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PauseReason::ShareReached { usage, stop_share } => write!(
                f,
                "the org has used {} of its {} daily API calls (rolling 24 h), at or above enrichd's share of {:.0}%; \
                 enrichd re-checks periodically and resumes as older calls age out",
                usage.used,
                usage.max,
                stop_share * 100.0
            ),
            PauseReason::RequestLimitExceeded => f.write_str(
                "Salesforce answered REQUEST_LIMIT_EXCEEDED: the org's daily API allocation is used up; \
                 enrichd keeps every pending lead and re-checks periodically",
            ),
        }
    }
}

/// What the caller may do now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gate {
    /// Send.
    Go,
    /// Send exactly this one call, then [`DailyBudget::observe`] its
    /// `Sforce-Limit-Info` (or [`DailyBudget::request_limit_exceeded`]);
    /// every other caller waits meanwhile.
    Probe,
    /// Send nothing to this org before `until`.
    Wait {
        until: UnixMillis,
        reason: PauseReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Pause {
    /// No call before this; at this time one probe is let through.
    until: UnixMillis,
    reason: PauseReason,
}

/// The org's daily budget. Pure state: the I/O layer keeps one per org
/// behind a mutex and passes the time in.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyBudget {
    policy: BudgetPolicy,
    last: Option<(ApiUsage, UnixMillis)>,
    pause: Option<Pause>,
}

impl DailyBudget {
    pub fn new(policy: BudgetPolicy) -> DailyBudget {
        DailyBudget {
            policy,
            last: None,
            pause: None,
        }
    }

    pub fn policy(&self) -> &BudgetPolicy {
        &self.policy
    }

    /// The usage last seen and when.
    pub fn usage(&self) -> Option<(ApiUsage, UnixMillis)> {
        self.last
    }

    /// Why and until when the org is paused, if it is.
    pub fn paused(&self) -> Option<(UnixMillis, PauseReason)> {
        self.pause.map(|p| (p.until, p.reason))
    }

    /// Whether a call may go now. Past a pause's end, the first caller gets
    /// [`Gate::Probe`] and the pause is extended by `recheck_ms`, so
    /// concurrent callers keep waiting until the probe's answer resumes
    /// the org (or a later probe does).
    pub fn gate(&mut self, now: UnixMillis) -> Gate {
        let Some(p) = self.pause else {
            return Gate::Go;
        };
        if now < p.until {
            return Gate::Wait {
                until: p.until,
                reason: p.reason,
            };
        }
        self.pause = Some(Pause {
            until: now.saturating_add(self.policy.recheck_ms.max(1000)),
            reason: p.reason,
        });
        Gate::Probe
    }

    /// Records the usage an answer reported (`Sforce-Limit-Info`, or
    /// `GET /limits`). Stops the org at the stop share; resumes a stopped
    /// org below the resume share. An observation older than the last one
    /// kept is ignored (answers can arrive out of order).
    pub fn observe(&mut self, usage: ApiUsage, now: UnixMillis) {
        if self.last.is_some_and(|(_, at)| at > now) {
            return;
        }
        self.last = Some((usage, now));
        let share = usage.share();
        match self.pause {
            Some(_) if share < self.policy.resume() => self.pause = None,
            Some(p) => {
                if let PauseReason::ShareReached { .. } = p.reason {
                    self.pause = Some(Pause {
                        until: p.until,
                        reason: PauseReason::ShareReached {
                            usage,
                            stop_share: self.policy.stop(),
                        },
                    });
                }
            }
            None if share >= self.policy.stop() => {
                self.pause = Some(Pause {
                    until: now.saturating_add(self.policy.recheck_ms.max(1000)),
                    reason: PauseReason::ShareReached {
                        usage,
                        stop_share: self.policy.stop(),
                    },
                });
            }
            None => {}
        }
    }

    /// Salesforce answered `REQUEST_LIMIT_EXCEEDED` (the daily kind): no
    /// call to the org for `request_limit_pause_ms`, then a probe.
    pub fn request_limit_exceeded(&mut self, now: UnixMillis) {
        let until = now.saturating_add(self.policy.request_limit_pause_ms.max(1000));
        let until = self.pause.map_or(until, |p| p.until.max(until));
        self.pause = Some(Pause {
            until,
            reason: PauseReason::RequestLimitExceeded,
        });
    }
}

/// Requests lasting at least this long count as long-running (§6.4).
pub const LONG_RUNNING_MS: u64 = 20_000;

/// The kind of org, for its concurrent long-running request cap (§6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgKind {
    /// Production and sandbox orgs: 25.
    ProductionOrSandbox,
    /// Developer Edition and trial orgs: 5.
    DeveloperOrTrial,
}

impl OrgKind {
    /// The org-wide cap on concurrent long-running requests (§6.4).
    pub const fn long_running_cap(self) -> u32 {
        match self {
            OrgKind::ProductionOrSandbox => 25,
            OrgKind::DeveloperOrTrial => 5,
        }
    }

    /// A guess from the daily allocation when the org's edition is not
    /// known: Developer Edition gets 15,000 calls a day, production editions
    /// at least 100,000 (§6.4). Anything under 100,000 is treated as
    /// Developer/trial (the smaller cap: the safe side).
    pub fn from_daily_max(max: u64) -> OrgKind {
        if max < 100_000 {
            OrgKind::DeveloperOrTrial
        } else {
            OrgKind::ProductionOrSandbox
        }
    }
}

/// How much of the org's concurrent-request cap enrichd takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcurrencyPolicy {
    /// Share of the cap (0.5).
    pub share: f64,
    /// A configured ceiling, if any (never raises the computed value).
    pub max: Option<u32>,
}

impl Default for ConcurrencyPolicy {
    fn default() -> Self {
        ConcurrencyPolicy {
            share: 0.5,
            max: None,
        }
    }
}

impl ConcurrencyPolicy {
    /// Requests enrichd may have in flight to one org at once: at least 1.
    pub fn permits(&self, kind: OrgKind) -> u32 {
        let share = if self.share.is_finite() {
            self.share.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let n = (f64::from(kind.long_running_cap()) * share).floor() as u32;
        let n = self.max.map_or(n, |m| n.min(m));
        n.max(1)
    }
}

/// Back-off after a concurrent-requests `REQUEST_LIMIT_EXCEEDED` (§6.1
/// "back off with jitter"): exponential from 1 s, capped at 60 s, with
/// "full jitter" (`jitter` in [0, 1) picks the point, supplied by the
/// caller so this stays pure).
pub fn concurrent_backoff_ms(attempt: u32, jitter: f64) -> u64 {
    let base = 1000u64.saturating_mul(1u64 << attempt.min(16)).min(60_000);
    let j = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        1.0
    };
    // At least a tenth of the step, so a zero jitter never spins.
    ((base as f64) * (0.1 + 0.9 * j)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limit_info_header_forms() {
        let u = |used, max| Some(ApiUsage { used, max });
        assert_eq!(parse_limit_info("api-usage=24/15000"), u(24, 15000));
        assert_eq!(
            parse_limit_info(
                "api-usage=18/5000, per-app-api-usage=17/250(appName=sample-connected-app)"
            ),
            u(18, 5000)
        );
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=x),api-usage=18/5000"),
            u(18, 5000)
        );
        assert_eq!(parse_limit_info("  API-Usage = 7 / 100 "), u(7, 100));
        assert_eq!(parse_limit_info("api-usage=15100/15000"), u(15100, 15000));
        for bad in [
            "",
            "api-usage",
            "api-usage=",
            "api-usage=1",
            "api-usage=a/b",
            "api-usage=1/0",
            "api-usage=-1/10",
            "per-app-api-usage=17/250(appName=x)",
            "garbage=1/2",
            "api-usage=99999999999999999999999/1",
        ] {
            assert_eq!(parse_limit_info(bad), None, "{bad}");
        }
    }

    #[test]
    fn limits_resource() {
        let b = json!({"DailyApiRequests":{"Max":15000,"Remaining":14976},"DailyBulkApiBatches":{"Max":15000,"Remaining":15000}});
        assert_eq!(
            parse_limits_resource(&b),
            Some(ApiUsage {
                used: 24,
                max: 15000
            })
        );
        let over = json!({"DailyApiRequests":{"Max":100,"Remaining":-5}});
        assert_eq!(parse_limits_resource(&over).map(|u| u.used), Some(105));
        assert_eq!(parse_limits_resource(&json!({})), None);
        assert_eq!(
            parse_limits_resource(&json!({"DailyApiRequests":{"Max":"x"}})),
            None
        );
    }

    const H: i64 = 3_600_000;

    #[test]
    fn stops_at_the_share_probes_and_resumes_below_the_resume_share() {
        let mut b = DailyBudget::new(BudgetPolicy::default());
        assert_eq!(b.gate(0), Gate::Go);
        b.observe(
            ApiUsage {
                used: 7_999,
                max: 10_000,
            },
            1,
        );
        assert_eq!(b.gate(2), Gate::Go);
        b.observe(
            ApiUsage {
                used: 8_000,
                max: 10_000,
            },
            3,
        );
        let Gate::Wait { until, reason } = b.gate(4) else {
            panic!("should wait")
        };
        assert_eq!(until, 3 + 15 * 60_000);
        assert!(reason.to_string().contains("8000 of its 10000"), "{reason}");
        // After the recheck interval: one probe, the others wait.
        assert_eq!(b.gate(until), Gate::Probe);
        assert!(matches!(b.gate(until + 1), Gate::Wait { .. }));
        // The probe shows 78%: between resume and stop, still paused.
        b.observe(
            ApiUsage {
                used: 7_800,
                max: 10_000,
            },
            until + 2,
        );
        assert!(matches!(b.gate(until + 3), Gate::Wait { .. }));
        // Later, 74%: resumed.
        let later = until + H;
        assert_eq!(b.gate(later), Gate::Probe);
        b.observe(
            ApiUsage {
                used: 7_400,
                max: 10_000,
            },
            later + 1,
        );
        assert_eq!(b.gate(later + 2), Gate::Go);
        assert_eq!(b.paused(), None);
    }

    #[test]
    fn request_limit_exceeded_pauses_then_probes() {
        let mut b = DailyBudget::new(BudgetPolicy::default());
        b.observe(
            ApiUsage {
                used: 10,
                max: 10_000,
            },
            0,
        );
        b.request_limit_exceeded(1_000);
        let Gate::Wait { until, reason } = b.gate(2_000) else {
            panic!("should wait")
        };
        assert_eq!(until, 1_000 + 30 * 60_000);
        assert_eq!(reason, PauseReason::RequestLimitExceeded);
        assert!(reason.to_string().contains("REQUEST_LIMIT_EXCEEDED"));
        assert_eq!(b.gate(until), Gate::Probe);
        // The probe fails again: paused again.
        b.request_limit_exceeded(until + 10);
        assert!(matches!(b.gate(until + 20), Gate::Wait { .. }));
        // A later probe succeeds with room: resumed.
        let t = until + 10 + 30 * 60_000;
        assert_eq!(b.gate(t), Gate::Probe);
        b.observe(
            ApiUsage {
                used: 100,
                max: 10_000,
            },
            t + 1,
        );
        assert_eq!(b.gate(t + 2), Gate::Go);
    }

    #[test]
    fn out_of_order_observations_and_odd_policies() {
        let mut b = DailyBudget::new(BudgetPolicy::default());
        b.observe(
            ApiUsage {
                used: 9_000,
                max: 10_000,
            },
            100,
        );
        // An older answer arriving late does not resume.
        b.observe(
            ApiUsage {
                used: 10,
                max: 10_000,
            },
            50,
        );
        assert!(matches!(b.gate(101), Gate::Wait { .. }));
        // NaN and inverted shares fall back to something safe.
        let mut b = DailyBudget::new(BudgetPolicy {
            stop_share: f64::NAN,
            resume_share: 2.0,
            recheck_ms: 0,
            request_limit_pause_ms: -5,
        });
        b.observe(
            ApiUsage {
                used: 8_000,
                max: 10_000,
            },
            0,
        );
        assert!(matches!(b.gate(1), Gate::Wait { until: 1000, .. }));
        b.request_limit_exceeded(i64::MAX - 10);
        assert!(matches!(
            b.gate(i64::MAX - 5),
            Gate::Wait {
                until: i64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn concurrency_caps() {
        assert_eq!(OrgKind::from_daily_max(15_000), OrgKind::DeveloperOrTrial);
        assert_eq!(
            OrgKind::from_daily_max(100_000),
            OrgKind::ProductionOrSandbox
        );
        let p = ConcurrencyPolicy::default();
        assert_eq!(p.permits(OrgKind::ProductionOrSandbox), 12);
        assert_eq!(p.permits(OrgKind::DeveloperOrTrial), 2);
        let p = ConcurrencyPolicy {
            share: 1.0,
            max: Some(8),
        };
        assert_eq!(p.permits(OrgKind::ProductionOrSandbox), 8);
        let p = ConcurrencyPolicy {
            share: 0.0,
            max: None,
        };
        assert_eq!(p.permits(OrgKind::DeveloperOrTrial), 1);
        assert_eq!(concurrent_backoff_ms(0, 0.0), 100);
        assert_eq!(concurrent_backoff_ms(0, 1.0), 1000);
        assert_eq!(concurrent_backoff_ms(3, 1.0), 8000);
        assert_eq!(concurrent_backoff_ms(40, 1.0), 60_000);
        assert_eq!(concurrent_backoff_ms(2, f64::NAN), 4000);
    }
}

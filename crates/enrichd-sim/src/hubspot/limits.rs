//! The per-portal rate limiter (reference §4): a rolling 10-second window over accepted
//! general requests, a rolling 1-second window over accepted searches and an optional daily
//! count of every accepted API call (UTC days). Rejected requests do not consume quota.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::options::HubSpotLimits;
use super::stats::Bucket;

const TEN_S: Duration = Duration::from_secs(10);
const ONE_S: Duration = Duration::from_secs(1);
const DAY_MS: i64 = 86_400_000;

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    TenSecondly,
    Secondly,
    Daily,
}

impl Policy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Policy::TenSecondly => "TEN_SECONDLY_ROLLING",
            Policy::Secondly => "SECONDLY",
            Policy::Daily => "DAILY",
        }
    }
    pub(crate) fn message(self) -> &'static str {
        match self {
            Policy::TenSecondly => "You have reached your ten_secondly_rolling limit.",
            Policy::Secondly => "You have reached your secondly limit.",
            Policy::Daily => "You have reached your daily limit.",
        }
    }
}

/// The limiter's answer.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Decision {
    /// The limit that refused the request and the seconds until it frees (rounded up, ≥ 1).
    pub limited: Option<(Policy, u64)>,
    /// Ten-secondly max and remaining after this request (general bucket only).
    pub window: Option<(u32, u32)>,
    /// Daily max and remaining after this request (when a daily limit is set).
    pub daily: Option<(u64, u64)>,
}

pub(crate) struct Limiter {
    pub limits: HubSpotLimits,
    general: VecDeque<Instant>,
    search: VecDeque<Instant>,
    day: i64,
    daily_used: u64,
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, w: Duration) {
    while let Some(&t) = q.front() {
        if now.saturating_duration_since(t) >= w {
            q.pop_front();
        } else {
            break;
        }
    }
}

/// Seconds until enough entries leave the window for one more request under `max`.
fn wait_secs(q: &VecDeque<Instant>, max: u32, now: Instant, w: Duration) -> u64 {
    let over = q.len().saturating_sub(max as usize);
    let Some(&t) = q.get(over) else {
        return 1;
    };
    let free_at = t + w;
    let d = free_at.saturating_duration_since(now);
    (d.as_millis() as u64).div_ceil(1000).max(1)
}

impl Limiter {
    pub(crate) fn new(limits: HubSpotLimits) -> Limiter {
        Limiter {
            limits,
            general: VecDeque::new(),
            search: VecDeque::new(),
            day: 0,
            daily_used: 0,
        }
    }

    /// Decide on one request of `bucket` arriving at `now` (`wall_ms`: for the UTC day).
    pub(crate) fn check(&mut self, bucket: Bucket, now: Instant, wall_ms: i64) -> Decision {
        let mut d = Decision::default();
        if matches!(bucket, Bucket::Token | Bucket::Sim) {
            return d;
        }
        let day = wall_ms.div_euclid(DAY_MS);
        if day != self.day {
            self.day = day;
            self.daily_used = 0;
        }
        prune(&mut self.general, now, TEN_S);
        prune(&mut self.search, now, ONE_S);
        let max10 = self.limits.ten_secondly;
        if bucket == Bucket::General {
            d.window = Some((max10, max10.saturating_sub(self.general.len() as u32)));
        }
        if let Some(max) = self.limits.daily {
            d.daily = Some((max, max.saturating_sub(self.daily_used)));
            if self.daily_used >= max {
                let until_midnight = (day + 1) * DAY_MS - wall_ms;
                d.limited = Some((
                    Policy::Daily,
                    (until_midnight.max(0) as u64).div_ceil(1000).max(1),
                ));
                return d;
            }
        }
        match bucket {
            Bucket::General => {
                if self.general.len() >= max10 as usize {
                    d.limited = Some((
                        Policy::TenSecondly,
                        wait_secs(&self.general, max10, now, TEN_S),
                    ));
                    return d;
                }
                self.general.push_back(now);
                d.window = Some((max10, max10.saturating_sub(self.general.len() as u32)));
            }
            Bucket::Search => {
                let max = self.limits.search_per_second;
                if self.search.len() >= max as usize {
                    d.limited = Some((Policy::Secondly, wait_secs(&self.search, max, now, ONE_S)));
                    return d;
                }
                self.search.push_back(now);
            }
            _ => {}
        }
        self.daily_used += 1;
        if let Some(max) = self.limits.daily {
            d.daily = Some((max, max.saturating_sub(self.daily_used)));
        }
        d
    }
}

//! The in-process rate limiter of one provider account. Every HTTP attempt,
//! retries included, acquires it.
//!
//! - Windows up to a minute: a governor GCRA limiter with a burst of one, so
//!   requests are spread evenly and no fixed or sliding window of the
//!   provider ever sees more than its limit, at 100% of the rate.
//! - Longer windows (hour, day): a sliding-window log of the last N request
//!   times. Spreading a daily quota evenly would starve the account (600/day
//!   = one request every 144 s); the log allows bursts while still never
//!   letting N+1 requests into any window of that length. When such a window
//!   is exhausted the caller learns how long to wait instead of blocking for
//!   hours, and skips the provider for now.
//! - A concurrency cap, and a pause the provider can impose (429 with
//!   `Retry-After`, or a remaining-quota header at zero).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::providers::def::Limits;

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware>;

/// Windows longer than this are counted with a sliding log, not GCRA.
const SMOOTHED_UP_TO: Duration = Duration::from_secs(60);

/// A log of single request times is exact; above this many it keeps counts
/// per slice of the window instead, so memory never grows with the quota.
const EXACT_UP_TO: usize = 4096;
/// Slices per window once counted: a request holds its place in the window
/// for at most one slice longer than it needs to (1/1024 of a day is 84 s).
const SLICES: u32 = 1024;

/// At most `max` requests in any window of length `window`.
struct SlidingLog {
    window: Duration,
    max: usize,
    times: Mutex<Times>,
}

/// The requests still in the window: each time while there are few, else a
/// count per slice (each counted as if made at its slice's end, so the
/// window only ever over-counts and never lets `max + 1` through).
enum Times {
    Exact(VecDeque<Instant>),
    Sliced {
        slice: Duration,
        /// (slice end, requests in it), oldest first.
        slices: VecDeque<(Instant, usize)>,
        total: usize,
    },
}

impl SlidingLog {
    fn new(window: Duration, max: usize) -> SlidingLog {
        let times = if max <= EXACT_UP_TO {
            Times::Exact(VecDeque::new())
        } else {
            Times::Sliced {
                slice: (window / SLICES).max(Duration::from_millis(1)),
                slices: VecDeque::new(),
                total: 0,
            }
        };
        SlidingLog {
            window,
            max,
            times: Mutex::new(times),
        }
    }

    /// Records a request now if the window has room; otherwise how long
    /// until it will.
    fn try_take(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let window = self.window;
        let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = match &mut *t {
            Times::Exact(times) => {
                while times
                    .front()
                    .is_some_and(|f| now.duration_since(*f) >= window)
                {
                    times.pop_front();
                }
                if times.len() < self.max {
                    times.push_back(now);
                    return Ok(());
                }
                times.front().copied()
            }
            Times::Sliced {
                slice,
                slices,
                total,
            } => {
                while let Some(&(end, n)) = slices.front()
                    && now.duration_since(end) >= window
                {
                    slices.pop_front();
                    *total -= n;
                }
                if *total < self.max {
                    match slices.back_mut() {
                        Some((end, n)) if *end > now => *n += 1,
                        _ => slices.push_back((now + *slice, 1)),
                    }
                    *total += 1;
                    return Ok(());
                }
                slices.front().map(|&(end, _)| end)
            }
        };
        let oldest = oldest.unwrap_or(now);
        Err((oldest + window)
            .saturating_duration_since(now)
            .max(Duration::from_millis(1)))
    }

    /// Entries held (tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        match &*self.times.lock().unwrap_or_else(|e| e.into_inner()) {
            Times::Exact(t) => t.len(),
            Times::Sliced { slices, .. } => slices.len(),
        }
    }
}

pub struct AccountLimiter {
    /// Windows up to a minute, most restrictive first.
    windows: Vec<Gcra>,
    /// Hour and day windows.
    logs: Vec<SlidingLog>,
    concurrency: Option<std::sync::Arc<Semaphore>>,
    paused_until: Mutex<Option<Instant>>,
    /// The sustained rate this limiter allows, requests per second.
    rate: f64,
}

/// Held for the duration of one request.
pub struct Permit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl AccountLimiter {
    /// `headroom` (0 < h ≤ 1) scales every window, leaving a margin for clock
    /// skew and network jitter between us and the provider's counter.
    pub fn new(limits: &Limits, headroom: f64) -> AccountLimiter {
        let headroom = headroom.clamp(0.01, 1.0);
        let mut periods: Vec<Duration> = Vec::new();
        let mut logs = Vec::new();
        let mut rate = f64::INFINITY;
        for (window, count) in limits.windows() {
            if window <= SMOOTHED_UP_TO {
                // Headroom stretches the spacing (5/s → one per 204 ms), it
                // does not round the count down (5 × 0.98 → 4/s).
                let allowed = f64::from(count) * headroom;
                rate = rate.min(allowed / window.as_secs_f64());
                periods.push(window.div_f64(allowed));
            } else {
                let max = (f64::from(count) * headroom).floor().max(1.0);
                rate = rate.min(max / window.as_secs_f64());
                logs.push(SlidingLog::new(window, max as usize));
            }
        }
        periods.sort_by(|a, b| b.cmp(a));
        let windows = periods
            .into_iter()
            .filter_map(|p| Quota::with_period(p).map(|q| q.allow_burst(NonZeroU32::MIN)))
            .map(RateLimiter::direct)
            .collect();
        AccountLimiter {
            windows,
            logs,
            concurrency: limits
                .concurrency
                .map(|n| std::sync::Arc::new(Semaphore::new(n as usize))),
            paused_until: Mutex::new(None),
            rate,
        }
    }

    /// Requests per second this limiter sustains (∞ when unlimited).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Waits for a concurrency slot, any pause, and every window. Fails with
    /// the time still needed when a pause or an hour/day window would keep
    /// the request waiting longer than `max_wait`.
    pub async fn acquire(&self, max_wait: Duration) -> Result<Permit, Duration> {
        let slot = match &self.concurrency {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        loop {
            let pause = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match pause {
                Some(until) if until > Instant::now() => {
                    let wait = until - Instant::now();
                    if wait > max_wait {
                        return Err(wait);
                    }
                    tokio::time::sleep_until(until).await;
                }
                _ => break,
            }
        }
        for log in &self.logs {
            loop {
                match log.try_take() {
                    Ok(()) => break,
                    Err(wait) if wait > max_wait => return Err(wait),
                    Err(wait) => tokio::time::sleep(wait).await,
                }
            }
        }
        for w in &self.windows {
            w.until_ready().await;
        }
        Ok(Permit { _slot: slot })
    }

    /// Holds every request until `until` (extends, never shortens, a pause).
    pub fn pause_until(&self, until: Instant) {
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none_or(|cur| cur < until) {
            *p = Some(until);
        }
    }

    /// The current pause, if any.
    pub fn paused(&self) -> Option<Instant> {
        let p = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        p.filter(|u| *u > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spreads_requests_evenly_at_the_binding_window() {
        let l = AccountLimiter::new(
            &Limits {
                per_second: Some(1000),
                per_minute: Some(3000),
                ..Limits::default()
            },
            1.0,
        );
        assert!(
            (l.rate() - 50.0).abs() < 1e-9,
            "3000/min binds: {}",
            l.rate()
        );
        let start = std::time::Instant::now();
        for _ in 0..21 {
            let _p = l.acquire(Duration::MAX).await;
        }
        // 20 intervals of 20 ms after the first request: never faster (the
        // upper bound only guards against a stall; CI machines are noisy).
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(390), "{took:?}");
        assert!(took <= Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_requests() {
        let l = AccountLimiter::new(&Limits::default(), 1.0);
        let start = Instant::now();
        l.pause_until(start + Duration::from_secs(5));
        l.pause_until(start + Duration::from_secs(1)); // never shortens
        assert_eq!(
            l.acquire(Duration::from_secs(1))
                .await
                .err()
                .map(|w| w.as_secs()),
            Some(5)
        );
        let _p = l.acquire(Duration::MAX).await;
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn concurrency_cap() {
        let l = AccountLimiter::new(
            &Limits {
                concurrency: Some(1),
                ..Limits::default()
            },
            1.0,
        );
        let first = l.acquire(Duration::MAX).await;
        let second =
            tokio::time::timeout(Duration::from_millis(50), l.acquire(Duration::MAX)).await;
        assert!(second.is_err(), "second request must wait for the first");
        drop(first);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), l.acquire(Duration::MAX))
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn long_windows_allow_bursts_but_never_more_than_their_count() {
        let l = AccountLimiter::new(
            &Limits {
                per_day: Some(100),
                ..Limits::default()
            },
            1.0,
        );
        let start = Instant::now();
        for _ in 0..100 {
            assert!(
                l.acquire(Duration::ZERO).await.is_ok(),
                "a day's quota may be used at once"
            );
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        // The 101st must wait for the first to leave the window: it is not
        // blocked for a day, the caller is told how long.
        let wait = l
            .acquire(Duration::from_secs(60))
            .await
            .err()
            .expect("window full");
        assert!(
            wait > Duration::from_secs(86_000) && wait <= Duration::from_secs(86_400),
            "{wait:?}"
        );
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert!(l.acquire(Duration::ZERO).await.is_ok());
    }

    /// A quota too large for an exact log is counted per slice: memory
    /// stays bounded, and no window of the quota's length ever holds more
    /// than its count, checked against every request time.
    #[tokio::test(start_paused = true)]
    async fn large_quotas_are_counted_in_bounded_memory_and_never_exceeded() {
        let log = SlidingLog::new(Duration::from_secs(3600), 10_000);
        let mut sent: Vec<Instant> = Vec::new();
        // Bursts at irregular moments over three hours.
        for step in 0..3_000u64 {
            tokio::time::advance(Duration::from_millis(1_000 + (step * 7_919) % 5_000)).await;
            for _ in 0..(step % 23) {
                if log.try_take().is_ok() {
                    sent.push(Instant::now());
                }
            }
        }
        assert!(log.held() <= SLICES as usize + 1, "{} slices", log.held());
        let mut first = 0;
        for (i, t) in sent.iter().enumerate() {
            while t.duration_since(sent[first]) >= Duration::from_secs(3600) {
                first += 1;
            }
            assert!(i + 1 - first <= 10_000, "{} in one hour", i + 1 - first);
        }
        // The quota is used, not starved: over 9,900 in the busiest hour.
        let mut best = 0;
        let mut first = 0;
        for (i, t) in sent.iter().enumerate() {
            while t.duration_since(sent[first]) >= Duration::from_secs(3600) {
                first += 1;
            }
            best = best.max(i + 1 - first);
        }
        assert!(best > 9_900, "busiest hour {best}");
    }
}

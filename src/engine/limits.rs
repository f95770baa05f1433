//! The in-process rate limiter of one provider account: every documented
//! window (per second, minute, hour, day) as a governor GCRA limiter with a
//! burst of one, so requests are spread evenly and no fixed or sliding window
//! of the provider ever sees more than its limit; a concurrency cap; and a
//! pause the provider can impose (429 with `Retry-After`, or a remaining-quota
//! header at zero). Every HTTP attempt, retries included, acquires it.

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

pub struct AccountLimiter {
    /// Most restrictive window first.
    windows: Vec<Gcra>,
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
        let mut periods: Vec<Duration> = limits
            .windows()
            .into_iter()
            .map(|(window, count)| {
                let allowed = (f64::from(count) * headroom).floor().max(1.0);
                window.div_f64(allowed)
            })
            .collect();
        periods.sort_by(|a, b| b.cmp(a));
        let rate = periods
            .first()
            .map_or(f64::INFINITY, |p| 1.0 / p.as_secs_f64());
        let windows = periods
            .into_iter()
            .filter_map(|p| Quota::with_period(p).map(|q| q.allow_burst(NonZeroU32::MIN)))
            .map(RateLimiter::direct)
            .collect();
        AccountLimiter {
            windows,
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

    /// Waits for a concurrency slot, any pause, and every window.
    pub async fn acquire(&self) -> Permit {
        let slot = match &self.concurrency {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        loop {
            let pause = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match pause {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        for w in &self.windows {
            w.until_ready().await;
        }
        Permit { _slot: slot }
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
            let _p = l.acquire().await;
        }
        // 20 intervals of 20 ms after the first request.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(390) && took <= Duration::from_millis(700),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_requests() {
        let l = AccountLimiter::new(&Limits::default(), 1.0);
        let start = Instant::now();
        l.pause_until(start + Duration::from_secs(5));
        l.pause_until(start + Duration::from_secs(1)); // never shortens
        let _p = l.acquire().await;
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
        let first = l.acquire().await;
        let second = tokio::time::timeout(Duration::from_millis(50), l.acquire()).await;
        assert!(second.is_err(), "second request must wait for the first");
        drop(first);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), l.acquire())
                .await
                .is_ok()
        );
    }
}

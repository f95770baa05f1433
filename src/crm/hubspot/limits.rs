//! HubSpot's limits for one portal, enforced before every call
//! (reference/hubspot.md §4): the general bucket (110 requests per rolling
//! 10 s for OAuth apps), adapted to `X-HubSpot-RateLimit-Max` / `-Remaining`;
//! the search bucket (5 per second, no headers); an optional daily count;
//! and pauses a 429 imposes.
//!
//! Requests are spaced evenly (GCRA with a burst of one) at `headroom` of
//! the limit, so no rolling window of HubSpot's ever holds more than the
//! limit: at 110 per 10 s × 0.98, one request every 92.8 ms, at most 108 in
//! any 10 s.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware>;

/// Which limit a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketKind {
    /// Everything but search and the v4 association endpoints.
    General,
    /// CRM search (`/crm/v3/objects/*/search`).
    Search,
    /// Exempt from the ten-secondly limit (v4 associations): daily only.
    Exempt,
    /// The general bucket, yielding to every `General` caller waiting:
    /// reads that only use capacity nobody else wants (the backfill's batch
    /// reads while write-back is waiting for the bucket).
    GeneralSpare,
}

/// One evenly spaced limit that can be changed while running.
pub struct Bucket {
    window: Duration,
    limit: AtomicU32,
    headroom: f64,
    gcra: Mutex<Arc<Gcra>>,
    paused_until: Mutex<Option<Instant>>,
    waited_ms: AtomicU64,
    /// Callers of [`Bucket::acquire`] waiting now; spare callers let them pass.
    urgent: std::sync::atomic::AtomicUsize,
    released: tokio::sync::Notify,
}

impl Bucket {
    pub fn new(limit: u32, window: Duration, headroom: f64) -> Bucket {
        Bucket {
            window,
            limit: AtomicU32::new(limit.max(1)),
            headroom,
            gcra: Mutex::new(Arc::new(gcra(limit, window, headroom))),
            paused_until: Mutex::new(None),
            waited_ms: AtomicU64::new(0),
            urgent: Default::default(),
            released: tokio::sync::Notify::new(),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Total time callers waited on this bucket.
    pub fn waited(&self) -> Duration {
        Duration::from_millis(self.waited_ms.load(Ordering::Relaxed))
    }

    /// Adopts a limit the API announced (`X-HubSpot-RateLimit-Max`).
    pub fn set_limit(&self, limit: u32) {
        let limit = limit.max(1);
        if self.limit.swap(limit, Ordering::Relaxed) != limit {
            tracing::info!(
                limit,
                window_ms = self.window.as_millis() as u64,
                "HubSpot limit adapted"
            );
            let mut g = self.gcra.lock().unwrap_or_else(|e| e.into_inner());
            *g = Arc::new(gcra(limit, self.window, self.headroom));
        }
    }

    /// No request leaves before `until`.
    pub fn pause_until(&self, until: Instant) {
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none_or(|cur| cur < until) {
            *p = Some(until);
        }
    }

    /// The time one slot takes at the current limit.
    pub fn slot(&self) -> Duration {
        self.window / self.limit()
    }

    /// Waits for the bucket (pauses included).
    pub async fn acquire(&self) {
        self.urgent.fetch_add(1, Ordering::SeqCst);
        self.take().await;
        self.urgent.fetch_sub(1, Ordering::SeqCst);
        self.released.notify_waiters();
    }

    /// Waits until no [`Bucket::acquire`] caller is waiting, then for the
    /// bucket: capacity nobody else wants. (Approximate: a spare caller
    /// already waiting on the limiter may take one slot before a newcomer.)
    pub async fn acquire_spare(&self) {
        loop {
            let released = self.released.notified();
            if self.urgent.load(Ordering::SeqCst) == 0 {
                break;
            }
            released.await;
        }
        self.take().await;
    }

    async fn take(&self) {
        let start = Instant::now();
        loop {
            let pause = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = pause
                && until > Instant::now()
            {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let g = self.gcra.lock().unwrap_or_else(|e| e.into_inner()).clone();
            g.until_ready().await;
            // A pause set while we waited wins.
            let pause = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            if pause.is_none_or(|u| u <= Instant::now()) {
                break;
            }
        }
        let waited = start.elapsed().as_millis() as u64;
        self.waited_ms.fetch_add(waited, Ordering::Relaxed);
    }
}

fn gcra(limit: u32, window: Duration, headroom: f64) -> Gcra {
    let allowed = f64::from(limit.max(1)) * headroom.clamp(0.01, 1.0);
    let period = window.div_f64(allowed).max(Duration::from_micros(1));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN);
    RateLimiter::direct(quota)
}

/// A daily allowance counted in process, reset at the portal's midnight.
pub struct Daily {
    pub limit: Option<u64>,
    used: Mutex<(i64, u64)>,
}

impl Daily {
    pub fn new(limit: Option<u64>) -> Daily {
        Daily {
            limit,
            used: Mutex::new((i64::MIN, 0)),
        }
    }

    /// Counts a call on `day`; false when the allowance is used up.
    pub fn take(&self, day: i64) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let mut u = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if u.0 != day {
            *u = (day, 0);
        }
        if u.1 >= limit {
            return false;
        }
        u.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spacing_keeps_any_window_under_the_limit() {
        // 50 per second at 98%: one request every 20.4 ms.
        let b = Bucket::new(50, Duration::from_secs(1), 0.98);
        let start = Instant::now();
        for _ in 0..21 {
            b.acquire().await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn a_lower_limit_takes_effect_and_a_pause_holds_requests() {
        let b = Bucket::new(1000, Duration::from_secs(1), 1.0);
        b.set_limit(10);
        assert_eq!(b.limit(), 10);
        b.acquire().await;
        let t = Instant::now();
        b.acquire().await;
        assert!(
            t.elapsed() >= Duration::from_millis(90),
            "{:?}",
            t.elapsed()
        );
        b.pause_until(Instant::now() + Duration::from_millis(300));
        let t = Instant::now();
        b.acquire().await;
        assert!(
            t.elapsed() >= Duration::from_millis(290),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn spare_callers_let_waiting_callers_go_first() {
        // 10 per second: a slot every 100 ms.
        let b = std::sync::Arc::new(Bucket::new(10, Duration::from_secs(1), 1.0));
        b.acquire().await;
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let urgent = {
            let (b, o) = (b.clone(), order.clone());
            tokio::spawn(async move {
                for _ in 0..3 {
                    b.acquire().await;
                    o.lock().unwrap().push("urgent");
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        b.acquire_spare().await;
        order.lock().unwrap().push("spare");
        urgent.await.unwrap();
        let o = order.lock().unwrap().clone();
        assert_eq!(o.first(), Some(&"urgent"), "{o:?}");
        assert!(o.iter().filter(|x| **x == "urgent").count() == 3);
    }

    #[test]
    fn daily_allowance_resets_with_the_day() {
        let d = Daily::new(Some(2));
        assert!(d.take(1) && d.take(1));
        assert!(!d.take(1));
        assert!(d.take(2));
    }
}

//! Lease timing and naming (pure): how long a lease lasts, how often its
//! holder renews it, and what a CRM connection's lease is called.
//!
//! A lease is live while `expires_at > now`, where both times come from the
//! callers' clocks (`UnixMillis`), never the database's. Replicas therefore
//! need synchronised clocks (NTP), and the ttl must exceed the worst clock
//! skew between replicas plus the heartbeat interval: a holder renews every
//! `ttl / 3`, so a healthy holder always has at least two thirds of the ttl
//! in hand, and a replica whose clock runs ahead by less than the margin
//! never sees a live lease as expired ([`check_timing`]).

use std::time::Duration;

use super::lead::WorkspaceId;
use super::value::UnixMillis;

/// The lease owning a CRM connection (its pull, watermark and write-back):
/// `crm:<workspace>:<crm>`.
pub fn crm_lease_name(ws: &WorkspaceId, crm: &str) -> String {
    format!("crm:{}:{}", ws.as_str(), crm)
}

/// The prefix of every CRM connection lease (for listings).
pub const CRM_LEASE_PREFIX: &str = "crm:";

/// How often a holder renews a lease of `ttl`: a third of it, so two
/// heartbeats can be late or lost before the lease lapses.
pub fn heartbeat_interval(ttl: Duration) -> Duration {
    ttl / 3
}

/// `ttl` in milliseconds, saturating at `i64::MAX`.
pub fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// When a lease taken or renewed at `now` for `ttl` expires (saturating).
pub fn expiry(now: UnixMillis, ttl: Duration) -> UnixMillis {
    now.saturating_add(ttl_millis(ttl))
}

/// Whether a lease expiring at `expires_at` is still live at `now`.
pub fn is_live(expires_at: UnixMillis, now: UnixMillis) -> bool {
    expires_at > now
}

/// Lease timing that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseTimingError {
    #[error("lease ttl is zero: a lease would expire as it is taken; use a ttl of several seconds")]
    ZeroTtl,
    #[error(
        "lease ttl of {ttl_ms} ms does not exceed the heartbeat interval ({heartbeat_ms} ms, a third of the ttl) plus the allowed clock skew between replicas ({skew_ms} ms): a healthy holder could lose its lease; raise the ttl above {needed_ms} ms or synchronise the clocks (NTP) more tightly"
    )]
    TooShort {
        ttl_ms: i64,
        heartbeat_ms: i64,
        skew_ms: i64,
        needed_ms: i64,
    },
}

/// Checks that a lease of `ttl`, renewed every [`heartbeat_interval`], stays
/// live for its holder when replicas' clocks differ by up to `max_skew`:
/// the ttl must exceed `max_skew + heartbeat_interval(ttl)`.
pub fn check_timing(ttl: Duration, max_skew: Duration) -> Result<(), LeaseTimingError> {
    if ttl.is_zero() {
        return Err(LeaseTimingError::ZeroTtl);
    }
    let ttl_ms = ttl_millis(ttl);
    let heartbeat_ms = ttl_millis(heartbeat_interval(ttl));
    let skew_ms = ttl_millis(max_skew);
    let needed_ms = heartbeat_ms.saturating_add(skew_ms);
    if ttl_ms > needed_ms {
        Ok(())
    } else {
        Err(LeaseTimingError::TooShort {
            ttl_ms,
            heartbeat_ms,
            skew_ms,
            needed_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crm_lease_names() {
        let ws = WorkspaceId("acme".into());
        assert_eq!(crm_lease_name(&ws, "hubspot"), "crm:acme:hubspot");
        assert!(crm_lease_name(&ws, "salesforce").starts_with(CRM_LEASE_PREFIX));
    }

    #[test]
    fn heartbeat_is_a_third_of_the_ttl() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(100)),
            Duration::from_nanos(33_333_333)
        );
        assert_eq!(heartbeat_interval(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn expiry_adds_the_ttl_and_saturates() {
        assert_eq!(expiry(1_000, Duration::from_secs(30)), 31_000);
        assert_eq!(expiry(1_000, Duration::ZERO), 1_000);
        assert_eq!(expiry(i64::MAX - 5, Duration::from_secs(1)), i64::MAX);
        assert_eq!(expiry(0, Duration::MAX), i64::MAX);
        assert_eq!(ttl_millis(Duration::from_micros(1_999)), 1);
    }

    #[test]
    fn live_until_expiry_exclusive() {
        assert!(is_live(31_000, 30_999));
        assert!(!is_live(31_000, 31_000));
        assert!(!is_live(31_000, 40_000));
        // A released lease (expires_at = 0) is never live.
        assert!(!is_live(0, 0));
    }

    #[test]
    fn timing_needs_ttl_above_skew_plus_heartbeat() {
        assert_eq!(
            check_timing(Duration::ZERO, Duration::ZERO),
            Err(LeaseTimingError::ZeroTtl)
        );
        assert_eq!(
            check_timing(Duration::from_secs(30), Duration::from_secs(1)),
            Ok(())
        );
        // 30 s ttl: heartbeat 10 s; a skew of 20 s leaves nothing.
        let err = check_timing(Duration::from_secs(30), Duration::from_secs(20));
        assert_eq!(
            err,
            Err(LeaseTimingError::TooShort {
                ttl_ms: 30_000,
                heartbeat_ms: 10_000,
                skew_ms: 20_000,
                needed_ms: 30_000,
            })
        );
        let msg = err.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(msg.contains("raise the ttl above 30000 ms"), "{msg}");
        assert!(check_timing(Duration::from_secs(30), Duration::from_millis(19_999)).is_ok());
        assert!(check_timing(Duration::from_secs(30), Duration::MAX).is_err());
    }
}

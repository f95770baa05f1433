//! The retry policy of durable jobs (pure): how long a failed job waits
//! before its next attempt.
//!
//! Exponential backoff with full jitter: attempt `n` (1 for the first
//! failure) waits a delay drawn uniformly from `[base / 2, min(cap, base ·
//! 2^(n-1))]`. Jitter spreads the retries of jobs that failed together (a
//! provider outage) so they do not come back in step; the floor of half the
//! base keeps a retry from following its failure at once. The draw is a
//! function of a seed (e.g. the job id) and the attempt, so the core stays
//! free of a random source and a delay can be reproduced in a test.

use super::value::UnixMillis;

/// The delay (ms) before retrying after failed attempt `attempt` (1-based;
/// 0 counts as 1). Never above `cap_ms`, never below `base_ms / 2` (unless
/// the cap is lower: the cap wins). Negative inputs count as 0. Saturates
/// instead of overflowing for any attempt.
pub fn retry_delay(attempt: u32, base_ms: i64, cap_ms: i64, seed: u64) -> i64 {
    let cap = cap_ms.max(0);
    let base = base_ms.max(0);
    let floor = (base / 2).min(cap);
    let exponent = attempt.saturating_sub(1);
    let ceiling = if exponent >= 62 {
        cap
    } else {
        base.checked_mul(1_i64 << exponent)
            .map_or(cap, |d| d.min(cap))
    }
    .max(floor);
    // ceiling >= floor >= 0, so the span fits in u64 (at most i64::MAX).
    let span = u64::try_from(ceiling - floor).unwrap_or(0);
    let draw = splitmix64(seed ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let offset = match span.checked_add(1) {
        Some(n) => draw % n,
        None => draw,
    };
    floor.saturating_add(i64::try_from(offset).unwrap_or(0))
}

/// When to retry: `now` plus [`retry_delay`].
pub fn retry_at(now: UnixMillis, attempt: u32, base_ms: i64, cap_ms: i64, seed: u64) -> UnixMillis {
    now.saturating_add(retry_delay(attempt, base_ms, cap_ms, seed))
}

/// SplitMix64 (Steele, Lea, Flood): a well-mixed 64-bit value from any seed.
const fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 1_000;
    const CAP: i64 = 300_000;

    #[test]
    fn stays_between_half_the_base_and_the_exponential_ceiling_and_the_cap() {
        for attempt in 0..80u32 {
            let ceiling = if attempt <= 1 {
                BASE
            } else if attempt > 40 {
                CAP
            } else {
                (BASE << (attempt - 1)).min(CAP)
            };
            for seed in 0..500u64 {
                let d = retry_delay(attempt, BASE, CAP, seed);
                assert!(d >= BASE / 2, "attempt {attempt} seed {seed}: {d}");
                assert!(
                    d <= ceiling,
                    "attempt {attempt} seed {seed}: {d} > {ceiling}"
                );
                assert!(d <= CAP);
            }
        }
    }

    #[test]
    fn is_deterministic_per_seed_and_attempt() {
        for attempt in 1..10 {
            for seed in [0, 1, 42, u64::MAX] {
                assert_eq!(
                    retry_delay(attempt, BASE, CAP, seed),
                    retry_delay(attempt, BASE, CAP, seed)
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_jobs_that_failed_together() {
        let delays: std::collections::HashSet<i64> = (0..200u64)
            .map(|seed| retry_delay(6, BASE, CAP, seed))
            .collect();
        assert!(delays.len() > 150, "only {} distinct delays", delays.len());
        // The same job gets a different draw at each attempt.
        let per_attempt: std::collections::HashSet<i64> = (8..20u32)
            .map(|attempt| retry_delay(attempt, BASE, CAP, 7))
            .collect();
        assert!(per_attempt.len() > 8);
    }

    #[test]
    fn grows_exponentially_on_average_until_the_cap() {
        let mean = |attempt: u32| -> i64 {
            (0..2_000u64)
                .map(|seed| retry_delay(attempt, BASE, CAP, seed))
                .sum::<i64>()
                / 2_000
        };
        let means: Vec<i64> = (1..=8).map(mean).collect();
        for pair in means.windows(2) {
            assert!(pair[1] > pair[0], "{means:?}");
        }
        // Uniform on [500, 1000 · 2^7 = 128000]: mean about 64250.
        assert!((60_000..68_000).contains(&means[7]), "{means:?}");
        // Capped: uniform on [500, 300000].
        let capped = mean(30);
        assert!((140_000..160_000).contains(&capped), "{capped}");
    }

    #[test]
    fn degenerate_inputs_do_not_panic_or_overflow() {
        assert_eq!(retry_delay(1, 0, CAP, 3), 0);
        assert_eq!(retry_delay(5, BASE, 0, 3), 0);
        assert_eq!(retry_delay(5, -10, -10, 3), 0);
        // A cap below half the base: the cap wins.
        assert_eq!(retry_delay(1, 10_000, 2_000, 3), 2_000);
        for seed in 0..100 {
            let d = retry_delay(u32::MAX, i64::MAX, i64::MAX, seed);
            assert!(d >= i64::MAX / 2);
        }
        assert_eq!(retry_at(i64::MAX - 1, 3, BASE, CAP, 9), i64::MAX);
        assert!(retry_at(1_000, 1, BASE, CAP, 9) >= 1_500);
    }

    #[test]
    fn splitmix64_matches_the_reference() {
        // First outputs of the reference generator seeded with 1234567
        // (state advanced by the golden gamma before each output).
        assert_eq!(splitmix64(1_234_567), 6_457_827_717_110_365_317);
        assert_eq!(
            splitmix64(1_234_567_u64.wrapping_add(0x9E37_79B9_7F4A_7C15)),
            3_203_168_211_198_807_973
        );
    }
}

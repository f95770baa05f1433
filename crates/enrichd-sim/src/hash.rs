//! Deterministic hashing (splitmix64 over FNV-1a) used for every simulated decision.
//!
//! No random number generator is used anywhere in the crate: every "random" choice is a hash of
//! (seed, namespace, identifiers, purpose), so a given seed always yields the same population and
//! the same provider answers.

/// One splitmix64 step (finaliser of the SplitMix64 generator).
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// A small hash builder: `H::new(seed).s("purpose").n(index).unit()`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct H(u64);

impl H {
    pub(crate) fn new(seed: u64) -> H {
        H(splitmix64(seed ^ 0x5EED_0FE4_21C4_D000))
    }
    /// Mix in a string.
    pub(crate) fn s(self, s: &str) -> H {
        H(splitmix64(self.0 ^ fnv1a(s.as_bytes()).rotate_left(17)))
    }
    /// Mix in a number.
    pub(crate) fn n(self, n: u64) -> H {
        H(splitmix64(self.0.rotate_left(7) ^ splitmix64(n)))
    }
    pub(crate) fn get(self) -> u64 {
        self.0
    }
    /// Uniform in [0, 1).
    pub(crate) fn unit(self) -> f64 {
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in 0..n (n > 0; returns 0 when n == 0).
    pub(crate) fn below(self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.0 % n }
    }
    /// Uniform in lo..=hi.
    pub(crate) fn range(self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.0 % (hi - lo + 1)
        }
    }
    /// Pick one element of a non-empty slice (first element for an empty-ish call is never needed).
    pub(crate) fn pick<T>(self, items: &[T]) -> &T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// Pick by weights (weights need not sum to anything in particular).
    pub(crate) fn weighted<T>(self, items: &[(T, u32)]) -> &T {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut r = self.below(total.max(1));
        for (it, w) in items {
            let w = u64::from(*w);
            if r < w {
                return it;
            }
            r -= w;
        }
        &items[items.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(H::new(1).s("a").n(2).get(), H::new(1).s("a").n(2).get());
        assert_ne!(H::new(1).s("a").n(2).get(), H::new(1).s("a").n(3).get());
        assert_ne!(H::new(1).s("a").get(), H::new(2).s("a").get());
        let mean: f64 = (0..10_000).map(|i| H::new(9).n(i).unit()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}

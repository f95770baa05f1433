//! The backfill's seen-set in little memory.
//!
//! A backfill remembers every contact id it handed on, so a contact read by
//! two paths (an association changed mid-way) or again by the id-range
//! fallback is handed on once. A `HashSet<String>` costs about 60 bytes per
//! contact, 60 MB for a million: the daemon's memory would grow with the
//! portal. HubSpot's record ids are numbers handed out in sequence, so the
//! set keeps them as a bitmap per block of 65,536 ids (8 KiB when the block
//! is busy, a sorted list of 16-bit offsets while it holds fewer than 4,096
//! ids): about 128 KiB for a million dense ids, and never more than
//! 2 bytes per id for sparse ones. An id that is not a canonical decimal
//! number (none should be) goes to an ordinary set, so nothing is lost.

use std::collections::{HashMap, HashSet};

/// Above this many ids a block becomes a bitmap (both take 8 KiB there).
const SPARSE_MAX: usize = 4096;
const WORDS: usize = 1024;

enum Block {
    Sparse(Vec<u16>),
    Dense(Box<[u64; WORDS]>),
}

impl Block {
    fn insert(&mut self, low: u16) -> bool {
        match self {
            Block::Sparse(v) => match v.binary_search(&low) {
                Ok(_) => false,
                Err(at) => {
                    v.insert(at, low);
                    if v.len() > SPARSE_MAX {
                        let mut bits = Box::new([0u64; WORDS]);
                        for &x in v.iter() {
                            bits[usize::from(x) / 64] |= 1 << (x % 64);
                        }
                        *self = Block::Dense(bits);
                    }
                    true
                }
            },
            Block::Dense(bits) => {
                let (w, b) = (usize::from(low) / 64, low % 64);
                let fresh = bits[w] & (1 << b) == 0;
                bits[w] |= 1 << b;
                fresh
            }
        }
    }
}

#[derive(Default)]
pub(super) struct SeenIds {
    blocks: HashMap<u64, Block>,
    other: HashSet<String>,
    len: usize,
}

/// `id` as a number when it is written the one canonical way.
fn numeric(id: &str) -> Option<u64> {
    let canonical = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && (id == "0" || !id.starts_with('0'));
    if canonical { id.parse().ok() } else { None }
}

impl SeenIds {
    /// Adds `id`; true when it was not there yet.
    pub(super) fn insert(&mut self, id: &str) -> bool {
        let fresh = match numeric(id) {
            Some(n) => self
                .blocks
                .entry(n >> 16)
                .or_insert_with(|| Block::Sparse(Vec::new()))
                .insert((n & 0xffff) as u16),
            None => self.other.insert(id.to_string()),
        };
        self.len += usize::from(fresh);
        fresh
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held (approximately), for tests.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.blocks
            .values()
            .map(|b| match b {
                Block::Sparse(v) => v.capacity() * 2,
                Block::Dense(_) => WORDS * 8,
            })
            .sum::<usize>()
            + self.other.iter().map(|s| s.capacity() + 24).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_million_dense_ids_take_a_few_hundred_kilobytes() {
        let mut s = SeenIds::default();
        for id in 101..1_000_101u64 {
            assert!(s.insert(&id.to_string()));
        }
        assert_eq!(s.len(), 1_000_000);
        assert!(!s.insert("101") && !s.insert("1000100"));
        assert!(s.insert("1000101"));
        assert!(s.bytes() < 200 * 1024, "{} bytes", s.bytes());
    }

    #[test]
    fn non_canonical_ids_are_kept_apart_and_not_confused_with_numbers() {
        let mut s = SeenIds::default();
        assert!(s.insert("42"));
        assert!(s.insert("042"));
        assert!(s.insert("abc"));
        assert!(s.insert(""));
        assert!(s.insert("18446744073709551616")); // u64::MAX + 1
        assert!(!s.insert("042") && !s.insert("42") && !s.insert("abc"));
        assert_eq!(s.len(), 5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The set answers exactly as a HashSet would, across the sparse →
        /// dense switch and block boundaries.
        #[test]
        fn behaves_like_a_hash_set(ids in proptest::collection::vec(
            prop_oneof![
                0u64..70_000,
                (0u64..3).prop_map(|b| b * 65_536 + 65_535),
                any::<u64>(),
            ],
            0..6_000,
        ), words in proptest::collection::vec("[0-9a-z]{0,4}", 0..50)) {
            let mut s = SeenIds::default();
            let mut h = HashSet::new();
            for id in ids.iter().map(u64::to_string).chain(words) {
                prop_assert_eq!(s.insert(&id), h.insert(id.clone()));
            }
            prop_assert_eq!(s.len(), h.len());
        }
    }
}

//! One enrichment of a lead at a time in a process. Two runs can be handed
//! the same lead at once — the sync's pass and a webhook event about a
//! contact of the page being enriched, or a pass started again after a
//! restart next to the events left pending — and each would plan its
//! waterfall from what was stored before the other's value: the provider
//! would be asked again for a value already stored. So a run holds its
//! leads' locks from the moment it reads their stored state until each
//! lead's waterfall is written; a second run waits, then reads what the
//! first one stored (and usually has nothing left to ask).
//!
//! Locks are taken in lead-id order (a run's leads are sorted), so two runs
//! sharing several leads cannot deadlock; an entry lives only while someone
//! holds or waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::core::lead::{LeadId, WorkspaceId};

type Key = (WorkspaceId, LeadId);

#[derive(Default)]
pub struct LeadLocks {
    map: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while one run reads, enriches and records a lead.
pub struct LeadGuard {
    locks: Arc<LeadLocks>,
    key: Key,
    guard: Option<OwnedMutexGuard<()>>,
}

impl LeadLocks {
    /// Waits until no other run holds `lead`, then holds it.
    pub async fn lock(self: &Arc<Self>, ws: &WorkspaceId, lead: &LeadId) -> LeadGuard {
        let key = (ws.clone(), lead.clone());
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let guard = m.lock_owned().await;
        LeadGuard {
            locks: self.clone(),
            key,
            guard: Some(guard),
        }
    }

    /// Leads held or waited for (tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for LeadGuard {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are taken under the map's lock: the map's and this guard's
        // are the only ones when nobody waits, and the entry can go.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 2)
        {
            map.remove(&self.key);
        }
        drop(self.guard.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ids(n: &str) -> (WorkspaceId, LeadId) {
        (WorkspaceId("w".into()), LeadId(n.into()))
    }

    #[tokio::test]
    async fn a_second_run_waits_for_the_first_and_entries_go_away() {
        let locks = Arc::new(LeadLocks::default());
        let (ws, a) = ids("a");
        let first = locks.lock(&ws, &a).await;
        let l2 = locks.clone();
        let (ws2, a2) = (ws.clone(), a.clone());
        let second = tokio::spawn(async move {
            let _g = l2.lock(&ws2, &a2).await;
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!second.is_finished(), "the second run did not wait");
        // Another lead is not held up.
        let (_, b) = ids("b");
        drop(locks.lock(&ws, &b).await);
        drop(first);
        second.await.expect("second run");
        assert!(locks.is_empty());
    }
}

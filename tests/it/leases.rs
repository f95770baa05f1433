//! Leases and fencing tokens, one suite run against both backends:
//! `leases::sqlite::<test>` and `leases::pg::<test>`. Times come from the
//! test (as a `ManualClock` would give them), never the database.

use std::sync::Arc;
use std::time::Duration;

use enrichd::core::lead::{LeadId, WorkspaceId};
use enrichd::core::lease::crm_lease_name;
use enrichd::store::crm::{SyncState, WriteOutcome, Written};
use enrichd::store::lease::{FenceReason, Lease};
use enrichd::store::{self, Store, StoreError};
use tokio::sync::Barrier;

use crate::db::TestDb;

/// Generates, for each named `async fn name(db: &TestDb)`, the tests
/// `sqlite::name` and `pg::name`.
macro_rules! lease_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::db::sqlite().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = crate::db::pg().await else {
                        return;
                    };
                    super::$name(&db).await;
                }
            )*
        }
    };
}

lease_tests! {
    acquire_renews_for_the_holder_and_refuses_others,
    expired_lease_is_taken_over_with_a_larger_token,
    heartbeat_of_a_lost_lease_returns_false,
    stale_holder_fenced_writes_are_refused_and_change_nothing,
    fenced_and_unfenced_writes_store_alike,
    release_then_reacquire_gives_a_larger_token,
    leases_are_listed_by_prefix,
    concurrent_acquires_have_exactly_one_winner,
    stale_write_racing_a_takeover_never_lands_after_it,
}

const TTL: Duration = Duration::from_secs(30);
const T0: i64 = 1_700_000_000_000;

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId(s.to_string())
}

fn name() -> String {
    crm_lease_name(&ws("acme"), "hubspot")
}

async fn acquire(store: &dyn Store, holder: &str, now: i64) -> Option<Lease> {
    store
        .acquire_lease(&name(), holder, TTL, now)
        .await
        .expect("acquire lease")
}

fn sync(watermark: i64) -> SyncState {
    SyncState {
        watermark: Some(watermark),
        backfill_done: true,
        last_sync_at: Some(watermark + 1),
        last_error: None,
    }
}

fn written(lead: &str, value: &str) -> Vec<Written> {
    vec![Written {
        lead_id: LeadId(lead.to_string()),
        field: "enrichment_work_email".to_string(),
        value: value.to_string(),
    }]
}

fn outcome(lead: &str, state: &str) -> Vec<WriteOutcome> {
    vec![WriteOutcome {
        lead_id: LeadId(lead.to_string()),
        state: state.to_string(),
        reason: format!("{state} by test"),
        attempts: 1,
    }]
}

/// Asserts `result` is a fencing refusal of `lease` for `why`.
fn assert_fenced(result: Result<(), StoreError>, lease: &Lease, why: &FenceReason) {
    match result {
        Err(StoreError::Fenced {
            name,
            holder,
            token,
            why: got,
        }) => {
            assert_eq!(name, lease.name);
            assert_eq!(holder, lease.holder);
            assert_eq!(token, lease.token);
            assert_eq!(&got, why);
        }
        other => panic!("expected a fencing refusal ({why}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------

async fn acquire_renews_for_the_holder_and_refuses_others(db: &TestDb) {
    let s = db.store.as_ref();
    let a = acquire(s, "replica-a", T0).await.expect("free lease");
    assert_eq!(
        a,
        Lease {
            name: name(),
            holder: "replica-a".into(),
            token: 1,
            expires_at: T0 + 30_000,
        }
    );

    // The holder renews: same token, later expiry.
    let renewed = acquire(s, "replica-a", T0 + 5_000).await.expect("renewal");
    assert_eq!(renewed.token, 1);
    assert_eq!(renewed.expires_at, T0 + 35_000);

    // Someone else is refused while the lease is live, up to its last ms.
    assert_eq!(acquire(s, "replica-b", T0 + 6_000).await, None);
    assert_eq!(acquire(s, "replica-b", T0 + 34_999).await, None);

    let rows = s.leases("").await.expect("list");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row.holder.as_str(), row.token, row.expires_at),
        ("replica-a", 1, T0 + 35_000)
    );
    assert_eq!(row.acquired_at, T0, "a renewal keeps the ownership's start");
    assert_eq!(row.heartbeat_at, T0 + 5_000);
    assert!(row.is_live(T0 + 34_999) && !row.is_live(T0 + 35_000));
}

async fn expired_lease_is_taken_over_with_a_larger_token(db: &TestDb) {
    let s = db.store.as_ref();
    let a = acquire(s, "replica-a", T0).await.expect("free lease");
    // Expired at exactly `expires_at`.
    let b = acquire(s, "replica-b", a.expires_at)
        .await
        .expect("takeover of an expired lease");
    assert_eq!(b.holder, "replica-b");
    assert!(b.token > a.token, "{} > {}", b.token, a.token);
    assert_eq!(b.expires_at, a.expires_at + 30_000);

    // The old holder is now refused, and cannot heartbeat.
    assert_eq!(acquire(s, "replica-a", a.expires_at + 1).await, None);
    assert!(
        !s.heartbeat_lease(&a, TTL, a.expires_at + 1)
            .await
            .expect("heartbeat")
    );

    // The old holder coming back after the new one expired is a new
    // ownership again: the token never goes back.
    let a2 = acquire(s, "replica-a", b.expires_at + 1)
        .await
        .expect("takeover");
    assert_eq!(a2.token, b.token + 1);
    let row = &s.leases(&name()).await.expect("list")[0];
    assert_eq!(row.acquired_at, b.expires_at + 1);
}

async fn heartbeat_of_a_lost_lease_returns_false(db: &TestDb) {
    let s = db.store.as_ref();
    let a = acquire(s, "replica-a", T0).await.expect("free lease");

    // A live heartbeat extends the lease.
    assert!(s.heartbeat_lease(&a, TTL, T0 + 10_000).await.expect("hb"));
    let row = &s.leases(&name()).await.expect("list")[0];
    assert_eq!(
        (row.expires_at, row.heartbeat_at, row.token),
        (T0 + 40_000, T0 + 10_000, 1)
    );
    // Another holder is refused until the extended expiry.
    assert_eq!(acquire(s, "replica-b", T0 + 39_999).await, None);

    // A heartbeat after expiry fails even though nobody took it over:
    // the holder must acquire again (and gets a new token).
    assert!(!s.heartbeat_lease(&a, TTL, T0 + 40_000).await.expect("hb"));
    let a2 = acquire(s, "replica-a", T0 + 40_001).await.expect("again");
    assert_eq!(a2.token, 2);

    // A heartbeat with the old token fails while the new one holds.
    assert!(!s.heartbeat_lease(&a, TTL, T0 + 41_000).await.expect("hb"));
    assert!(s.heartbeat_lease(&a2, TTL, T0 + 41_000).await.expect("hb"));

    // A lease taken over by someone else: the old holder's heartbeat fails
    // and does not disturb the new holder.
    let b = acquire(s, "replica-b", T0 + 71_000)
        .await
        .expect("takeover");
    assert!(!s.heartbeat_lease(&a2, TTL, T0 + 71_001).await.expect("hb"));
    let row = &s.leases(&name()).await.expect("list")[0];
    assert_eq!(
        (row.holder.as_str(), row.token, row.expires_at),
        ("replica-b", b.token, b.expires_at)
    );

    // Heartbeat of a lease never taken: false, nothing created.
    let ghost = Lease {
        name: "crm:nobody:hubspot".into(),
        holder: "replica-a".into(),
        token: 1,
        expires_at: T0 + 30_000,
    };
    assert!(!s.heartbeat_lease(&ghost, TTL, T0).await.expect("hb"));
    assert!(s.leases("crm:nobody:").await.expect("list").is_empty());
}

async fn stale_holder_fenced_writes_are_refused_and_change_nothing(db: &TestDb) {
    let s = db.store.as_ref();
    let w = ws("acme");
    let a = acquire(s, "replica-a", T0).await.expect("free lease");

    // The holder writes under its lease.
    s.save_sync_state_fenced(&w, "hubspot", "contacts", &sync(100), &a, T0 + 1_000)
        .await
        .expect("fenced save by the holder");
    s.record_writes_fenced(
        &w,
        &written("1", "a@x.test"),
        &outcome("1", "done"),
        &a,
        T0 + 1_000,
    )
    .await
    .expect("fenced record by the holder");

    // Expired, nobody took it yet: refused all the same.
    let expired = FenceReason::Expired {
        expires_at: a.expires_at,
        now: a.expires_at,
    };
    assert_fenced(
        s.save_sync_state_fenced(&w, "hubspot", "contacts", &sync(150), &a, a.expires_at)
            .await,
        &a,
        &expired,
    );

    // Taken over: the stale holder's late writes are refused.
    let b = acquire(s, "replica-b", a.expires_at + 5)
        .await
        .expect("takeover");
    let taken = FenceReason::TakenOver {
        holder: "replica-b".into(),
        token: b.token,
    };
    // Even with its own (wrong) idea of the time.
    for now in [T0 + 2_000, a.expires_at + 10] {
        assert_fenced(
            s.save_sync_state_fenced(&w, "hubspot", "contacts", &sync(200), &a, now)
                .await,
            &a,
            &taken,
        );
        assert_fenced(
            s.record_writes_fenced(
                &w,
                &written("1", "stale@x.test"),
                &[outcome("1", "failed"), outcome("2", "failed")].concat(),
                &a,
                now,
            )
            .await,
            &a,
            &taken,
        );
        // Nothing to record is still checked.
        assert_fenced(
            s.record_writes_fenced(&w, &[], &[], &a, now).await,
            &a,
            &taken,
        );
    }
    // A forged lease with the current token but another holder is refused too.
    let forged = Lease {
        holder: "replica-a".into(),
        ..b.clone()
    };
    assert_fenced(
        s.save_sync_state_fenced(
            &w,
            "hubspot",
            "contacts",
            &sync(300),
            &forged,
            b.expires_at - 1,
        )
        .await,
        &forged,
        &taken,
    );
    // No such lease at all.
    let ghost = Lease {
        name: "crm:nobody:hubspot".into(),
        ..a.clone()
    };
    assert_fenced(
        s.save_sync_state_fenced(&w, "hubspot", "contacts", &sync(300), &ghost, T0)
            .await,
        &ghost,
        &FenceReason::Missing,
    );

    // Nothing changed.
    assert_eq!(
        s.sync_state(&w, "hubspot", "contacts").await.expect("read"),
        sync(100)
    );
    assert_eq!(
        s.write_outcomes(&w).await.expect("read"),
        outcome("1", "done")
    );
    let by_lead = s.written(&w, &[LeadId("1".into())]).await.expect("read");
    assert_eq!(
        by_lead[&LeadId("1".into())]["enrichment_work_email"],
        "a@x.test"
    );

    // The current holder's writes go through.
    s.save_sync_state_fenced(&w, "hubspot", "contacts", &sync(400), &b, b.expires_at - 1)
        .await
        .expect("fenced save by the new holder");
    s.record_writes_fenced(
        &w,
        &written("1", "b@x.test"),
        &outcome("1", "done"),
        &b,
        b.expires_at - 1,
    )
    .await
    .expect("fenced record by the new holder");
    assert_eq!(
        s.sync_state(&w, "hubspot", "contacts").await.expect("read"),
        sync(400)
    );
    let by_lead = s.written(&w, &[LeadId("1".into())]).await.expect("read");
    assert_eq!(
        by_lead[&LeadId("1".into())]["enrichment_work_email"],
        "b@x.test"
    );
    // The refusal names the lease and what to do.
    let msg = s
        .save_sync_state_fenced(&w, "hubspot", "contacts", &sync(500), &a, T0)
        .await
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
    assert!(msg.contains(&name()), "{msg}");
    assert!(msg.contains("acquire the lease again"), "{msg}");
}

async fn fenced_and_unfenced_writes_store_alike(db: &TestDb) {
    let s = db.store.as_ref();
    let a = acquire(s, "replica-a", T0).await.expect("free lease");
    let (fenced, plain) = (ws("fenced"), ws("plain"));
    let state = SyncState {
        watermark: Some(42),
        backfill_done: false,
        last_sync_at: None,
        last_error: Some("boom".into()),
    };
    let outcomes = [outcome("7", "failed"), outcome("8", "done")].concat();
    let values = [written("7", "x@y.test"), written("8", "z@y.test")].concat();
    for _ in 0..2 {
        s.save_sync_state_fenced(&fenced, "hubspot", "contacts", &state, &a, T0)
            .await
            .expect("fenced");
        s.record_writes_fenced(&fenced, &values, &outcomes, &a, T0)
            .await
            .expect("fenced");
        s.save_sync_state(&plain, "hubspot", "contacts", &state)
            .await
            .expect("plain");
        s.record_writes(&plain, &values, &outcomes, T0)
            .await
            .expect("plain");
    }
    assert_eq!(
        s.sync_state(&fenced, "hubspot", "contacts")
            .await
            .expect("r"),
        s.sync_state(&plain, "hubspot", "contacts")
            .await
            .expect("r")
    );
    assert_eq!(
        s.write_outcomes(&fenced).await.expect("r"),
        s.write_outcomes(&plain).await.expect("r")
    );
    let ids = [LeadId("7".into()), LeadId("8".into())];
    assert_eq!(
        s.written(&fenced, &ids).await.expect("r"),
        s.written(&plain, &ids).await.expect("r")
    );
}

async fn release_then_reacquire_gives_a_larger_token(db: &TestDb) {
    let s = db.store.as_ref();
    let w = ws("acme");
    let a = acquire(s, "replica-a", T0).await.expect("free lease");
    assert!(s.release_lease(&a, T0 + 1_000).await.expect("release"));
    // Releasing again (or a stale copy) does nothing.
    assert!(!s.release_lease(&a, T0 + 1_001).await.expect("release"));

    let row = &s.leases(&name()).await.expect("list")[0];
    assert_eq!(
        (row.token, row.expires_at, row.heartbeat_at),
        (1, 0, T0 + 1_000)
    );
    // Writes under a released lease are refused.
    assert_fenced(
        s.save_sync_state_fenced(&w, "hubspot", "contacts", &sync(1), &a, T0 + 1_002)
            .await,
        &a,
        &FenceReason::Expired {
            expires_at: 0,
            now: T0 + 1_002,
        },
    );
    assert!(!s.heartbeat_lease(&a, TTL, T0 + 1_002).await.expect("hb"));

    // The same holder re-acquiring gets a new token.
    let a2 = acquire(s, "replica-a", T0 + 2_000).await.expect("again");
    assert_eq!(a2.token, 2);
    // A stale release (old token) does not free the new ownership.
    assert!(!s.release_lease(&a, T0 + 2_001).await.expect("release"));
    assert_eq!(acquire(s, "replica-b", T0 + 2_002).await, None);

    // Released, another holder can take it at once, with the next token.
    assert!(s.release_lease(&a2, T0 + 3_000).await.expect("release"));
    let b = acquire(s, "replica-b", T0 + 3_000).await.expect("free");
    assert_eq!((b.holder.as_str(), b.token), ("replica-b", 3));
    // Releasing an expired lease does nothing (it is not ours any more).
    assert!(!s.release_lease(&b, b.expires_at).await.expect("release"));
}

async fn leases_are_listed_by_prefix(db: &TestDb) {
    let s = db.store.as_ref();
    for n in [
        "crm:a:hubspot",
        "crm:a:salesforce",
        "crm:ab:hubspot",
        "crm:a_b:hubspot",
        "crm:a%:hubspot",
        "jobs:scheduler",
    ] {
        s.acquire_lease(n, "r", TTL, T0)
            .await
            .expect("acquire")
            .expect("free");
    }
    let names = |rows: Vec<enrichd::store::lease::LeaseRow>| {
        rows.into_iter().map(|r| r.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(s.leases("crm:a:").await.expect("list")),
        ["crm:a:hubspot", "crm:a:salesforce"]
    );
    // `_` and `%` are plain characters in a prefix.
    assert_eq!(
        names(s.leases("crm:a_").await.expect("list")),
        ["crm:a_b:hubspot"]
    );
    assert_eq!(
        names(s.leases("crm:a%").await.expect("list")),
        ["crm:a%:hubspot"]
    );
    assert_eq!(s.leases("crm:").await.expect("list").len(), 5);
    assert_eq!(s.leases("").await.expect("list").len(), 6);
    assert!(s.leases("nothing").await.expect("list").is_empty());
}

async fn concurrent_acquires_have_exactly_one_winner(db: &TestDb) {
    // Eight replicas: separate store handles (separate pools; on SQLite,
    // separate writer connections to one file, as separate processes).
    const REPLICAS: usize = 8;
    let mut stores: Vec<Arc<dyn Store>> = vec![db.store.clone()];
    for _ in 1..REPLICAS {
        stores.push(store::open(&db.url).await.expect("another store"));
    }
    let mut last_token = 0;
    // Round 0 races on a name never taken (the insert path); later rounds
    // race on an expired row (the update path), then on a released one.
    for round in 0..4_i64 {
        // Round 3 comes right after round 2's winner released the lease
        // (long before it would have expired).
        let now = if round == 3 {
            T0 + 200_002
        } else {
            T0 + round * 100_000
        };
        let barrier = Arc::new(Barrier::new(REPLICAS));
        let mut tasks = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .acquire_lease(&name(), &format!("replica-{i}"), TTL, now)
                    .await
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(lease) = task.await.expect("task").expect("acquire") {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let won = &winners[0];
        assert_eq!(won.token, last_token + 1, "round {round}");
        last_token = won.token;
        let rows = db.store.leases(&name()).await.expect("list");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].holder.as_str(), rows[0].token),
            (won.holder.as_str(), won.token)
        );
        if round == 2 {
            assert!(db.store.release_lease(won, now + 1).await.expect("release"));
        }
    }
}

async fn stale_write_racing_a_takeover_never_lands_after_it(db: &TestDb) {
    // A stale holder (whose clock says its lease is still live) writes while
    // another replica takes the lease over and then writes: the stale write
    // is either refused or ordered before the takeover, so the new holder's
    // watermark is what stays.
    let other: Arc<dyn Store> = store::open(&db.url).await.expect("another store");
    let w = ws("acme");
    for round in 0..50_i64 {
        let lease_name = format!("crm:race{round}:hubspot");
        let object = format!("contacts{round}");
        let a = db
            .store
            .acquire_lease(&lease_name, "replica-a", TTL, T0)
            .await
            .expect("acquire")
            .expect("free");
        let barrier = Arc::new(Barrier::new(2));
        let stale = {
            let (store, barrier, w, object, a) = (
                db.store.clone(),
                barrier.clone(),
                w.clone(),
                object.clone(),
                a.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .save_sync_state_fenced(&w, "hubspot", &object, &sync(1), &a, T0 + 1)
                    .await
            })
        };
        let fresh = {
            let (store, barrier, w, object, lease_name) = (
                other.clone(),
                barrier.clone(),
                w.clone(),
                object.clone(),
                lease_name.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                let now = T0 + 30_000;
                let b = store
                    .acquire_lease(&lease_name, "replica-b", TTL, now)
                    .await
                    .expect("acquire")
                    .expect("expired lease taken over");
                store
                    .save_sync_state_fenced(&w, "hubspot", &object, &sync(2), &b, now)
                    .await
            })
        };
        match stale.await.expect("task") {
            Ok(()) | Err(StoreError::Fenced { .. }) => {}
            Err(e) => panic!("round {round}: {e}"),
        }
        fresh.await.expect("task").expect("the new holder writes");
        assert_eq!(
            db.store
                .sync_state(&w, "hubspot", &object)
                .await
                .expect("read")
                .watermark,
            Some(2),
            "round {round}"
        );
    }
}

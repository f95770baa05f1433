//! The store contract, one suite run against both backends:
//! `store::sqlite::<test>` and `store::pg::<test>`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd::core::channel::{Channel, ChannelSet};
use enrichd::core::lead::{Lead, LeadId, WorkspaceId};
use enrichd::core::outcome::OutcomeKind;
use enrichd::core::value::{ChannelValue, Source, Verification};
use enrichd::store::{
    self, Applied, AttemptRecord, BudgetRow, Charge, JobItem, JobState, LeadState, LeadStatusRow,
    PastAttempt, ProviderJob, Settlement, SpendEntry, Store, StoreError, WriteOp,
};
use tokio::sync::Barrier;

use crate::db::TestDb;

/// Generates, for each named `async fn name(db: &TestDb)`, the tests
/// `sqlite::name` and `pg::name`.
macro_rules! store_tests {
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

store_tests! {
    migrate_is_idempotent,
    leads_round_trip,
    upsert_ten_thousand_leads,
    value_with_charge_is_stored_and_charged,
    same_charge_key_is_charged_once,
    value_replaces_previous_value_of_channel,
    apply_returns_one_result_per_op_in_order,
    apply_is_all_or_nothing,
    concurrent_same_charge_is_taken_once,
    concurrent_overlapping_batches_charge_each_key_once,
    two_stores_on_one_database_charge_and_reserve_once,
    reserve_respects_limit,
    reserve_without_limit_always_fits,
    concurrent_reservations_never_exceed_limit,
    charges_consume_their_reservation,
    duplicate_charge_does_not_consume_reservation,
    charge_against_settled_reservation_is_counted_not_reserved,
    settle_releases_what_was_not_used,
    settle_expired_settles_lapsed_reservations,
    budget_of_unknown_period_is_zero,
    load_leads_returns_values_attempts_and_status,
    load_leads_handles_large_batches,
    leads_in_state_orders_by_icp_then_id,
    totals_count_everything,
    spend_is_idempotent_and_ordered,
    attempts_round_trip_oldest_first,
    statuses_are_upserted,
    jobs_round_trip,
    workspaces_are_isolated,
    corrupt_rows_are_reported_not_panicked,
}

// ---------------------------------------------------------------------------
// Helpers

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId(s.to_string())
}

fn lid(s: &str) -> LeadId {
    LeadId(s.to_string())
}

fn cv(channel: Channel, value: &str, source: &str, found_at: i64) -> ChannelValue {
    ChannelValue {
        channel,
        value: value.to_string(),
        source: Source::provider(source),
        verification: Verification::Verified,
        found_at,
        verified_at: Some(found_at + 1),
    }
}

fn charge(key: &str, credits: i64, period: &str, reservation: Option<i64>) -> Charge {
    Charge {
        key: key.to_string(),
        credits,
        period: period.to_string(),
        reservation,
    }
}

fn value_op(lead: &str, value: ChannelValue, charge: Option<Charge>) -> WriteOp {
    WriteOp::Value {
        lead_id: lid(lead),
        value,
        charge,
    }
}

fn email_charge(lead: &str, key: &str, credits: i64, reservation: Option<i64>) -> WriteOp {
    value_op(
        lead,
        cv(
            Channel::WorkEmail,
            &format!("{lead}@acme.io"),
            "hunter",
            1_000,
        ),
        Some(charge(key, credits, "2026-11", reservation)),
    )
}

fn attempt(
    lead: &str,
    channel: Channel,
    provider: &str,
    outcome: OutcomeKind,
    at: i64,
) -> AttemptRecord {
    AttemptRecord {
        run_id: "run-1".into(),
        lead_id: lid(lead),
        channel,
        provider: provider.into(),
        account: format!("{provider}-main"),
        outcome,
        detail: format!("HTTP 200 {outcome}"),
        value: None,
        provider_cost: 0,
        credits: 0,
        http_status: Some(200),
        tries: 1,
        latency_ms: 12,
        at,
    }
}

fn status(lead: &str, state: LeadState, retry_at: Option<i64>) -> LeadStatusRow {
    LeadStatusRow {
        lead_id: lid(lead),
        state,
        enrichment_status: Some("partial".into()),
        reason: format!("{} for now", state.as_str()),
        retry_at,
        updated_at: 5_000,
    }
}

fn spend(key: &str, account: &str, amount: i64, at: i64) -> SpendEntry {
    SpendEntry {
        key: key.into(),
        provider: "apollo".into(),
        account: account.into(),
        lead_id: Some(lid("l1")),
        amount,
        detail: "1 credit".into(),
        at,
    }
}

fn job(account: &str, job_id: &str, token: &str, state: JobState) -> ProviderJob {
    ProviderJob {
        account: account.into(),
        provider: "fullenrich".into(),
        job_id: job_id.into(),
        token: token.into(),
        items: vec![
            JobItem {
                lead_id: lid("l1"),
                channels: [Channel::WorkEmail, Channel::Phone].into_iter().collect(),
            },
            JobItem {
                lead_id: lid("l2"),
                channels: ChannelSet::single(Channel::Phone),
            },
        ],
        run_id: "run-7".into(),
        submitted_at: 1_000,
        deadline: 90_000,
        state,
        result: None,
    }
}

async fn apply(db: &TestDb, w: &WorkspaceId, ops: Vec<WriteOp>) -> Vec<Applied> {
    db.store.apply(w, &ops).await.expect("apply")
}

async fn budget(db: &TestDb, w: &WorkspaceId, period: &str) -> BudgetRow {
    db.store.budget(w, period).await.expect("budget")
}

async fn reserve(db: &TestDb, w: &WorkspaceId, limit: Option<i64>, amount: i64) -> Option<i64> {
    db.store
        .reserve(w, "2026-11", limit, amount, "worker-1", 1_000_000)
        .await
        .expect("reserve")
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, table: &str, what: &str) {
    match result {
        Err(StoreError::Corrupt { table: t, message }) => {
            assert_eq!(t, table, "wrong table for {what}: {message}");
        }
        other => panic!("{what}: expected Corrupt {{ table: {table} }}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Tests that do not depend on a backend

#[tokio::test]
async fn open_rejects_unknown_urls() {
    for url in ["mysql://localhost/x", "file.db", ""] {
        match store::open(url).await {
            Err(StoreError::UnsupportedUrl(u)) => assert_eq!(u, url),
            Err(e) => panic!("{url}: expected UnsupportedUrl, got {e}"),
            Ok(_) => panic!("{url}: expected UnsupportedUrl, got a store"),
        }
    }
}

#[tokio::test]
async fn sqlite_in_memory_store_works() {
    let store = store::open("sqlite::memory:").await.expect("open");
    store.migrate().await.expect("migrate");
    let w = ws("a");
    let ops = vec![email_charge("l1", "k1", 1, None)];
    let applied = store.apply(&w, &ops).await.expect("apply");
    assert_eq!(applied, vec![Applied::Value { charged: true }]);
    assert_eq!(store.values(&w, &lid("l1")).await.expect("values").len(), 1);
    assert_eq!(store.totals(&w).await.expect("totals").charges, 1);
}

// ---------------------------------------------------------------------------
// The shared suite

async fn migrate_is_idempotent(db: &TestDb) {
    db.store.migrate().await.expect("second migrate");
    db.store.migrate().await.expect("third migrate");
}

async fn leads_round_trip(db: &TestDb) {
    let w = ws("a");
    let ada = Lead::new("l1")
        .with("firstname", "Ada")
        .with("icp_score", "87.5")
        .with("tags", serde_json::json!(["x", 1, null]));
    db.store
        .upsert_leads(&w, &[(ada.clone(), 87.5), (Lead::new("l2"), 10.0)], 100)
        .await
        .expect("upsert");
    assert_eq!(
        db.store.get_lead(&w, &lid("l1")).await.expect("get"),
        Some(ada)
    );
    assert_eq!(
        db.store.get_lead(&w, &lid("nope")).await.expect("get"),
        None
    );

    // Upserting again replaces fields and score.
    let ada2 = Lead::new("l1").with("firstname", "Augusta");
    db.store
        .upsert_leads(&w, &[(ada2.clone(), 1.0)], 200)
        .await
        .expect("upsert again");
    assert_eq!(
        db.store.get_lead(&w, &lid("l1")).await.expect("get"),
        Some(ada2)
    );
    assert_eq!(db.store.totals(&w).await.expect("totals").leads, 2);

    // Duplicates in one batch: the last one wins. Non-finite scores are stored.
    let batch = vec![
        (Lead::new("d").with("v", 1), 1.0),
        (Lead::new("d").with("v", 2), f64::NAN),
    ];
    db.store.upsert_leads(&w, &batch, 300).await.expect("dups");
    let d = db
        .store
        .get_lead(&w, &lid("d"))
        .await
        .expect("get")
        .expect("d");
    assert_eq!(d.fields.get("v"), Some(&serde_json::json!(2)));
    db.store
        .upsert_leads(&w, &[], 400)
        .await
        .expect("empty batch");
}

async fn upsert_ten_thousand_leads(db: &TestDb) {
    let w = ws("a");
    let leads: Vec<(Lead, f64)> = (0..10_000)
        .map(|i| {
            let lead = Lead::new(format!("lead-{i:05}"))
                .with("firstname", format!("First{i}"))
                .with("lastname", "Last")
                .with("company_domain", "acme.io");
            (lead, f64::from(i % 100))
        })
        .collect();
    let started = Instant::now();
    db.store
        .upsert_leads(&w, &leads, 1)
        .await
        .expect("insert 10k");
    db.store
        .upsert_leads(&w, &leads, 2)
        .await
        .expect("update 10k");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "{}: 2 x 10k leads took {took:?}",
        db.backend
    );
    assert_eq!(db.store.totals(&w).await.expect("totals").leads, 10_000);
    let l = db
        .store
        .get_lead(&w, &lid("lead-09999"))
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(l.text("firstname").as_deref(), Some("First9999"));
}

async fn value_with_charge_is_stored_and_charged(db: &TestDb) {
    let w = ws("a");
    let v = cv(Channel::Phone, "+14155550100", "apollo", 7_000);
    let applied = apply(
        db,
        &w,
        vec![value_op(
            "l1",
            v.clone(),
            Some(charge("k1", 3, "2026-11", None)),
        )],
    )
    .await;
    assert_eq!(applied, vec![Applied::Value { charged: true }]);
    assert_eq!(
        db.store.values(&w, &lid("l1")).await.expect("values"),
        vec![v]
    );
    let ledger = db.store.ledger(&w).await.expect("ledger");
    assert_eq!(ledger.len(), 1);
    let e = &ledger[0];
    assert_eq!(e.key, "k1");
    assert_eq!(e.lead_id, lid("l1"));
    assert_eq!(e.channel, Channel::Phone);
    assert_eq!(e.value, "+14155550100");
    assert_eq!(e.source, "apollo");
    assert_eq!(e.credits, 3);
    assert_eq!(e.period, "2026-11");
    assert_eq!(e.reservation, None);
    assert_eq!(e.at, 7_000, "a charge is dated when its value was found");
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: None,
            charged: 3,
            reserved: 0
        }
    );

    // A value without a charge is stored, nothing is charged.
    let free = cv(
        Channel::LinkedinUrl,
        "https://www.linkedin.com/in/ada",
        "crm",
        1,
    );
    let applied = apply(db, &w, vec![value_op("l1", free, None)]).await;
    assert_eq!(applied, vec![Applied::Value { charged: false }]);
    assert_eq!(
        db.store.values(&w, &lid("l1")).await.expect("values").len(),
        2
    );
    assert_eq!(db.store.ledger(&w).await.expect("ledger").len(), 1);
    assert_eq!(budget(db, &w, "2026-11").await.charged, 3);
}

async fn same_charge_key_is_charged_once(db: &TestDb) {
    let w = ws("a");
    for round in 0..3 {
        let applied = apply(db, &w, vec![email_charge("l1", "k1", 2, None)]).await;
        assert_eq!(
            applied,
            vec![Applied::Value {
                charged: round == 0
            }],
            "round {round}"
        );
    }
    // Twice in one batch: the first takes it.
    let applied = apply(
        db,
        &w,
        vec![
            email_charge("l2", "k2", 2, None),
            email_charge("l2", "k2", 2, None),
        ],
    )
    .await;
    assert_eq!(
        applied,
        vec![
            Applied::Value { charged: true },
            Applied::Value { charged: false }
        ]
    );
    assert_eq!(db.store.ledger(&w).await.expect("ledger").len(), 2);
    assert_eq!(budget(db, &w, "2026-11").await.charged, 4);
    let t = db.store.totals(&w).await.expect("totals");
    assert_eq!((t.charges, t.credits), (2, 4));
}

async fn value_replaces_previous_value_of_channel(db: &TestDb) {
    let w = ws("a");
    let old = cv(Channel::WorkEmail, "old@acme.io", "hunter", 1);
    let new = ChannelValue {
        verification: Verification::CatchAll,
        verified_at: None,
        ..cv(Channel::WorkEmail, "new@acme.io", "findymail", 2)
    };
    apply(
        db,
        &w,
        vec![value_op(
            "l1",
            old,
            Some(charge("k-old", 1, "2026-11", None)),
        )],
    )
    .await;
    let applied = apply(
        db,
        &w,
        vec![value_op(
            "l1",
            new.clone(),
            Some(charge("k-new", 1, "2026-11", None)),
        )],
    )
    .await;
    assert_eq!(applied, vec![Applied::Value { charged: true }]);
    assert_eq!(
        db.store.values(&w, &lid("l1")).await.expect("values"),
        vec![new]
    );
    // Values come back in channel order.
    let phone = cv(Channel::Phone, "+33123456789", "pdl", 3);
    let personal = cv(Channel::PersonalEmail, "ada@gmail.com", "pdl", 3);
    apply(
        db,
        &w,
        vec![value_op("l1", phone, None), value_op("l1", personal, None)],
    )
    .await;
    let channels: Vec<Channel> = db
        .store
        .values(&w, &lid("l1"))
        .await
        .expect("values")
        .iter()
        .map(|v| v.channel)
        .collect();
    assert_eq!(
        channels,
        vec![Channel::WorkEmail, Channel::PersonalEmail, Channel::Phone]
    );
}

async fn apply_returns_one_result_per_op_in_order(db: &TestDb) {
    let w = ws("a");
    let ops = vec![
        WriteOp::Attempt(attempt(
            "l1",
            Channel::WorkEmail,
            "hunter",
            OutcomeKind::Found,
            10,
        )),
        email_charge("l1", "k1", 1, None),
        WriteOp::Spend(spend("s1", "apollo-main", 1_000, 10)),
        WriteOp::Spend(spend("s1", "apollo-main", 1_000, 10)),
        email_charge("l1", "k1", 1, None),
        WriteOp::Status(status("l1", LeadState::Done, None)),
        WriteOp::Job(job("fe-main", "j1", "tok-1", JobState::Pending)),
        WriteOp::JobState {
            account: "fe-main".into(),
            job_id: "j1".into(),
            state: JobState::Received,
            result: Some(b"{}".to_vec()),
        },
        value_op("l1", cv(Channel::Phone, "+14155550100", "crm", 1), None),
    ];
    let applied = apply(db, &w, ops).await;
    assert_eq!(
        applied,
        vec![
            Applied::Done,
            Applied::Value { charged: true },
            Applied::Spend { recorded: true },
            Applied::Spend { recorded: false },
            Applied::Value { charged: false },
            Applied::Done,
            Applied::Done,
            Applied::Done,
            Applied::Value { charged: false },
        ]
    );
    assert_eq!(apply(db, &w, vec![]).await, vec![]);
    let j = db
        .store
        .job(&w, "fe-main", "j1")
        .await
        .expect("job")
        .expect("stored");
    assert_eq!(j.state, JobState::Received);
}

async fn apply_is_all_or_nothing(db: &TestDb) {
    let w = ws("a");
    apply(
        db,
        &w,
        vec![WriteOp::Job(job(
            "fe",
            "j1",
            "tok-taken",
            JobState::Pending,
        ))],
    )
    .await;
    let before = budget(db, &w, "2026-11").await;
    // The last op violates the unique callback token: nothing of the batch
    // may remain.
    let ops = vec![
        email_charge("l1", "k1", 5, None),
        WriteOp::Attempt(attempt(
            "l1",
            Channel::WorkEmail,
            "hunter",
            OutcomeKind::Found,
            1,
        )),
        WriteOp::Spend(spend("s1", "apollo-main", 10, 1)),
        WriteOp::Status(status("l1", LeadState::Done, None)),
        WriteOp::Job(job("fe", "j2", "tok-taken", JobState::Pending)),
    ];
    let result = db.store.apply(&w, &ops).await;
    assert!(result.is_err(), "a token collision must fail the batch");
    assert_eq!(
        db.store.values(&w, &lid("l1")).await.expect("values"),
        vec![]
    );
    assert_eq!(db.store.ledger(&w).await.expect("ledger"), vec![]);
    assert_eq!(db.store.spend(&w).await.expect("spend"), vec![]);
    assert_eq!(
        db.store.attempts(&w, &lid("l1")).await.expect("attempts"),
        vec![]
    );
    assert_eq!(db.store.statuses(&w).await.expect("statuses"), vec![]);
    assert_eq!(budget(db, &w, "2026-11").await, before);
    assert_eq!(db.store.job(&w, "fe", "j2").await.expect("job"), None);

    // The same charge still goes through afterwards, once.
    let applied = apply(db, &w, vec![email_charge("l1", "k1", 5, None)]).await;
    assert_eq!(applied, vec![Applied::Value { charged: true }]);
    assert_eq!(budget(db, &w, "2026-11").await.charged, 5);
}

async fn concurrent_same_charge_is_taken_once(db: &TestDb) {
    let w = ws("a");
    const ROUNDS: usize = 10;
    const TASKS: usize = 8;
    let rid = reserve(db, &w, Some(1_000), 100)
        .await
        .expect("reservation");
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut handles = Vec::new();
        for _ in 0..TASKS {
            let store = db.store.clone();
            let barrier = barrier.clone();
            let w = w.clone();
            let key = format!("k{round}");
            handles.push(tokio::spawn(async move {
                let ops = vec![email_charge(&format!("l{round}"), &key, 2, Some(rid))];
                barrier.wait().await;
                store.apply(&w, &ops).await
            }));
        }
        let mut taken = 0;
        for h in handles {
            match h.await.expect("task").expect("apply").as_slice() {
                [Applied::Value { charged: true }] => taken += 1,
                [Applied::Value { charged: false }] => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(taken, 1, "round {round}: exactly one task takes the charge");
    }
    let ledger = db.store.ledger(&w).await.expect("ledger");
    assert_eq!(ledger.len(), ROUNDS);
    let b = budget(db, &w, "2026-11").await;
    assert_eq!(b.charged, 2 * ROUNDS as i64);
    assert_eq!(
        b.reserved,
        100 - 2 * ROUNDS as i64,
        "each charge consumed the reservation once"
    );
    let s = db
        .store
        .settle(&w, rid)
        .await
        .expect("settle")
        .expect("open");
    assert_eq!(s.used, 2 * ROUNDS as i64);
}

async fn concurrent_overlapping_batches_charge_each_key_once(db: &TestDb) {
    // Batches sharing keys in different orders, with values and statuses of
    // the same leads, against one reservation, while another task reserves
    // and settles: every key is charged once and the counters add up.
    let w = ws("a");
    const TASKS: usize = 8;
    const KEYS: usize = 12;
    let rid = reserve(db, &w, Some(10_000), 30)
        .await
        .expect("reservation");
    let barrier = Arc::new(Barrier::new(TASKS + 1));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = db.store.clone();
        let barrier = barrier.clone();
        let w = w.clone();
        handles.push(tokio::spawn(async move {
            let mut keys: Vec<usize> = (0..KEYS).collect();
            if t % 2 == 1 {
                keys.reverse();
            }
            keys.rotate_left(t % KEYS);
            barrier.wait().await;
            let mut taken = 0;
            for pair in keys.chunks(3) {
                let mut ops = Vec::new();
                for &k in pair {
                    let lead = format!("l{}", k % 4);
                    ops.push(email_charge(&lead, &format!("key-{k}"), 1, Some(rid)));
                    ops.push(WriteOp::Status(status(&lead, LeadState::Done, None)));
                }
                let applied = store.apply(&w, &ops).await.expect("apply");
                taken += applied
                    .iter()
                    .filter(|a| matches!(a, Applied::Value { charged: true }))
                    .count();
            }
            taken
        }));
    }
    let churn = {
        let store = db.store.clone();
        let barrier = barrier.clone();
        let w = w.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            for _ in 0..10 {
                if let Some(id) = store
                    .reserve(&w, "2026-11", Some(10_000), 5, "churn", 1)
                    .await
                    .expect("reserve")
                {
                    store.settle(&w, id).await.expect("settle");
                }
            }
        })
    };
    let mut taken = 0;
    for h in handles {
        taken += h.await.expect("task");
    }
    churn.await.expect("churn");
    assert_eq!(taken, KEYS, "each key is taken by exactly one batch");
    assert_eq!(db.store.ledger(&w).await.expect("ledger").len(), KEYS);
    let b = budget(db, &w, "2026-11").await;
    assert_eq!(b.charged, KEYS as i64);
    assert_eq!(b.reserved, 30 - KEYS as i64);
    let s = db
        .store
        .settle(&w, rid)
        .await
        .expect("settle")
        .expect("open");
    assert_eq!(
        s,
        Settlement {
            reserved: 30,
            used: KEYS as i64,
            released: 30 - KEYS as i64
        }
    );
    assert_eq!(budget(db, &w, "2026-11").await.reserved, 0);
}

async fn two_stores_on_one_database_charge_and_reserve_once(db: &TestDb) {
    // Two stores on one database: two replicas on PostgreSQL; on SQLite two
    // writer connections, as two processes sharing a file would have (their
    // write transactions must queue on the file lock, not fail).
    let stores: [Arc<dyn Store>; 2] = [
        db.store.clone(),
        store::open(&db.url).await.expect("second store"),
    ];
    let w = ws("a");
    const ROUNDS: usize = 6;
    const TASKS: usize = 6;
    let rid = reserve(db, &w, None, 1_000).await.expect("reservation");
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let store = stores[t % 2].clone();
            let barrier = barrier.clone();
            let w = w.clone();
            handles.push(tokio::spawn(async move {
                let lead = format!("l{round}");
                let ops = vec![
                    WriteOp::Attempt(attempt(
                        &lead,
                        Channel::WorkEmail,
                        "hunter",
                        OutcomeKind::Found,
                        1,
                    )),
                    email_charge(&lead, &format!("k{round}"), 5, Some(rid)),
                    WriteOp::Status(status(&lead, LeadState::Done, None)),
                ];
                barrier.wait().await;
                store.apply(&w, &ops).await
            }));
        }
        let mut taken = 0;
        for h in handles {
            let applied = h.await.expect("task").expect("apply on a shared database");
            if applied[1] == (Applied::Value { charged: true }) {
                taken += 1;
            }
        }
        assert_eq!(taken, 1, "round {round}");
    }
    let b = budget(db, &w, "2026-11").await;
    assert_eq!(
        (b.charged, b.reserved),
        (5 * ROUNDS as i64, 1_000 - 5 * ROUNDS as i64)
    );
    assert_eq!(
        db.store.totals(&w).await.expect("totals").attempts,
        (ROUNDS * TASKS) as u64
    );

    // Reservers on both stores share one limit.
    db.store
        .settle(&w, rid)
        .await
        .expect("settle")
        .expect("open");
    let barrier = Arc::new(Barrier::new(10));
    let mut handles = Vec::new();
    for t in 0..10 {
        let store = stores[t % 2].clone();
        let barrier = barrier.clone();
        let w = w.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .reserve(&w, "2026-11", Some(60), 10, "r", 1)
                .await
                .expect("reserve")
        }));
    }
    let mut granted = 0;
    for h in handles {
        granted += usize::from(h.await.expect("task").is_some());
    }
    assert_eq!(granted, 3, "30 charged + 3 x 10 = 60");

    // Settling reads before it writes: across two writers this is where a
    // read lock would have to be upgraded.
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(reserve(db, &w, None, 1).await.expect("reservation"));
    }
    let barrier = Arc::new(Barrier::new(ids.len()));
    let mut handles = Vec::new();
    for (t, id) in ids.into_iter().enumerate() {
        let store = stores[t % 2].clone();
        let barrier = barrier.clone();
        let w = w.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store.settle(&w, id).await
        }));
    }
    for h in handles {
        let settled = h.await.expect("task").expect("settle on a shared database");
        assert_eq!(settled.map(|s| s.released), Some(1));
    }
    assert_eq!(budget(db, &w, "2026-11").await.reserved, 30);
}

async fn reserve_respects_limit(db: &TestDb) {
    let w = ws("a");
    let a = reserve(db, &w, Some(10), 6).await;
    assert!(a.is_some());
    assert_eq!(reserve(db, &w, Some(10), 5).await, None, "6 + 5 > 10");
    let b = reserve(db, &w, Some(10), 4).await;
    assert!(b.is_some() && b != a, "distinct ids");
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(10),
            charged: 0,
            reserved: 10
        }
    );
    assert_eq!(reserve(db, &w, Some(10), 1).await, None);
    // Charges count against the limit too.
    db.store.settle(&w, b.expect("b")).await.expect("settle");
    apply(db, &w, vec![email_charge("l1", "k1", 3, None)]).await;
    assert_eq!(reserve(db, &w, Some(10), 2).await, None, "3 + 6 + 2 > 10");
    assert!(
        reserve(db, &w, Some(10), 1).await.is_some(),
        "3 + 6 + 1 = 10"
    );
    // The limit given is recorded, even when the reservation fails.
    assert_eq!(reserve(db, &w, Some(5), 1).await, None);
    assert_eq!(budget(db, &w, "2026-11").await.limit, Some(5));
    assert!(reserve(db, &w, Some(100), 1).await.is_some());
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(100),
            charged: 3,
            reserved: 8
        }
    );
    // Another period has its own counters.
    let other = db
        .store
        .reserve(&w, "2026-12", Some(10), 10, "w", 1)
        .await
        .expect("reserve");
    assert!(other.is_some());
}

async fn reserve_without_limit_always_fits(db: &TestDb) {
    let w = ws("a");
    apply(db, &w, vec![email_charge("l1", "k1", 1_000, None)]).await;
    for _ in 0..3 {
        assert!(reserve(db, &w, None, 1_000_000).await.is_some());
    }
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: None,
            charged: 1_000,
            reserved: 3_000_000
        }
    );
}

async fn concurrent_reservations_never_exceed_limit(db: &TestDb) {
    let w = ws("a");
    apply(db, &w, vec![email_charge("l1", "k1", 3, None)]).await;
    const TASKS: usize = 20;
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut handles = Vec::new();
    for i in 0..TASKS {
        let store = db.store.clone();
        let barrier = barrier.clone();
        let w = w.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .reserve(&w, "2026-11", Some(50), 7, &format!("task-{i}"), 1_000)
                .await
                .expect("reserve")
        }));
    }
    let mut ids = HashSet::new();
    for h in handles {
        if let Some(id) = h.await.expect("task") {
            assert!(ids.insert(id), "duplicate reservation id {id}");
        }
    }
    // 3 charged + 6 * 7 = 45 <= 50 < 52.
    assert_eq!(ids.len(), 6, "{}: granted {ids:?}", db.backend);
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(50),
            charged: 3,
            reserved: 42
        }
    );
}

async fn charges_consume_their_reservation(db: &TestDb) {
    let w = ws("a");
    let rid = reserve(db, &w, Some(100), 10).await.expect("reservation");
    apply(db, &w, vec![email_charge("l1", "k1", 3, Some(rid))]).await;
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(100),
            charged: 3,
            reserved: 7
        }
    );
    assert_eq!(
        db.store.ledger(&w).await.expect("ledger")[0].reservation,
        Some(rid)
    );
    // More than remains: only what remains is consumed.
    apply(db, &w, vec![email_charge("l2", "k2", 8, Some(rid))]).await;
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(100),
            charged: 11,
            reserved: 0
        }
    );
    assert_eq!(
        db.store.settle(&w, rid).await.expect("settle"),
        Some(Settlement {
            reserved: 10,
            used: 10,
            released: 0
        })
    );
    assert_eq!(budget(db, &w, "2026-11").await.reserved, 0);
}

async fn duplicate_charge_does_not_consume_reservation(db: &TestDb) {
    let w = ws("a");
    let rid = reserve(db, &w, Some(100), 10).await.expect("reservation");
    for _ in 0..3 {
        apply(db, &w, vec![email_charge("l1", "k1", 4, Some(rid))]).await;
    }
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(100),
            charged: 4,
            reserved: 6
        }
    );
    assert_eq!(
        db.store.settle(&w, rid).await.expect("settle"),
        Some(Settlement {
            reserved: 10,
            used: 4,
            released: 6
        })
    );
}

async fn charge_against_settled_reservation_is_counted_not_reserved(db: &TestDb) {
    let w = ws("a");
    let rid = reserve(db, &w, Some(100), 10).await.expect("reservation");
    db.store
        .settle(&w, rid)
        .await
        .expect("settle")
        .expect("open");
    let applied = apply(db, &w, vec![email_charge("l1", "k1", 4, Some(rid))]).await;
    assert_eq!(applied, vec![Applied::Value { charged: true }]);
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(100),
            charged: 4,
            reserved: 0
        }
    );
    // An unknown reservation id: the charge is still taken.
    let applied = apply(db, &w, vec![email_charge("l2", "k2", 1, Some(987_654))]).await;
    assert_eq!(applied, vec![Applied::Value { charged: true }]);
    assert_eq!(budget(db, &w, "2026-11").await.charged, 5);
}

async fn settle_releases_what_was_not_used(db: &TestDb) {
    let w = ws("a");
    let rid = reserve(db, &w, Some(100), 10).await.expect("reservation");
    let other = reserve(db, &w, Some(100), 20).await.expect("reservation");
    apply(db, &w, vec![email_charge("l1", "k1", 4, Some(rid))]).await;
    assert_eq!(
        db.store.settle(&w, rid).await.expect("settle"),
        Some(Settlement {
            reserved: 10,
            used: 4,
            released: 6
        })
    );
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(100),
            charged: 4,
            reserved: 20
        }
    );
    assert_eq!(db.store.settle(&w, rid).await.expect("settle twice"), None);
    assert_eq!(db.store.settle(&w, 987_654).await.expect("unknown"), None);
    assert_eq!(
        db.store.settle(&w, other).await.expect("settle"),
        Some(Settlement {
            reserved: 20,
            used: 0,
            released: 20
        })
    );
    assert_eq!(budget(db, &w, "2026-11").await.reserved, 0);
}

async fn settle_expired_settles_lapsed_reservations(db: &TestDb) {
    let w = ws("a");
    let mut ids = Vec::new();
    for (period, expires_at) in [("2026-11", 100), ("2026-12", 200), ("2026-11", 300)] {
        let id = db
            .store
            .reserve(&w, period, None, 10, "w", expires_at)
            .await
            .expect("reserve")
            .expect("fits");
        ids.push(id);
    }
    apply(db, &w, vec![email_charge("l1", "k1", 4, Some(ids[0]))]).await;
    assert_eq!(
        db.store.settle_expired(&w, 100).await.expect("none yet"),
        0,
        "strictly before"
    );
    assert_eq!(db.store.settle_expired(&w, 250).await.expect("settle"), 2);
    assert_eq!(
        budget(db, &w, "2026-11").await.reserved,
        10,
        "the third is still open"
    );
    assert_eq!(budget(db, &w, "2026-12").await.reserved, 0);
    assert_eq!(budget(db, &w, "2026-11").await.charged, 4);
    assert_eq!(db.store.settle(&w, ids[0]).await.expect("settle"), None);
    assert_eq!(db.store.settle_expired(&w, 250).await.expect("again"), 0);
    assert_eq!(db.store.settle_expired(&w, 10_000).await.expect("rest"), 1);
    assert_eq!(budget(db, &w, "2026-11").await.reserved, 0);
}

async fn budget_of_unknown_period_is_zero(db: &TestDb) {
    assert_eq!(budget(db, &ws("a"), "1999-01").await, BudgetRow::default());
}

async fn load_leads_returns_values_attempts_and_status(db: &TestDb) {
    let w = ws("a");
    let mut ops = vec![
        value_op("l1", cv(Channel::Phone, "+14155550100", "apollo", 1), None),
        value_op(
            "l1",
            cv(Channel::WorkEmail, "ada@acme.io", "hunter", 2),
            None,
        ),
        WriteOp::Status(status("l1", LeadState::Deferred, Some(9_000))),
        value_op(
            "l2",
            cv(
                Channel::LinkedinUrl,
                "https://www.linkedin.com/in/x",
                "pdl",
                3,
            ),
            None,
        ),
    ];
    // 130 attempts for l1 (the newest 100 come back), 2 for l2.
    for i in 0..130 {
        let outcome = if i % 2 == 0 {
            OutcomeKind::NotFound
        } else {
            OutcomeKind::RateLimited
        };
        ops.push(WriteOp::Attempt(attempt(
            "l1",
            Channel::Phone,
            "apollo",
            outcome,
            1_000 + i,
        )));
    }
    ops.push(WriteOp::Attempt(attempt(
        "l2",
        Channel::WorkEmail,
        "hunter",
        OutcomeKind::Found,
        5,
    )));
    ops.push(WriteOp::Attempt(attempt(
        "l2",
        Channel::WorkEmail,
        "pdl",
        OutcomeKind::NotFound,
        6,
    )));
    apply(db, &w, ops).await;
    // Same lead in another workspace: must not leak in.
    apply(
        db,
        &ws("b"),
        vec![
            value_op("l1", cv(Channel::PersonalEmail, "b@b.io", "pdl", 1), None),
            WriteOp::Attempt(attempt(
                "l1",
                Channel::Phone,
                "apollo",
                OutcomeKind::Found,
                99_999,
            )),
        ],
    )
    .await;

    let ids = vec![lid("l1"), lid("l2"), lid("absent"), lid("l1")];
    let loaded = db.store.load_leads(&w, &ids).await.expect("load");
    assert_eq!(loaded.len(), 3);
    let l1 = &loaded[&lid("l1")];
    assert_eq!(
        l1.values.iter().map(|v| v.channel).collect::<Vec<_>>(),
        vec![Channel::WorkEmail, Channel::Phone]
    );
    assert_eq!(l1.attempts.len(), 100);
    assert_eq!(
        l1.attempts[0],
        PastAttempt {
            channel: Channel::Phone,
            provider: "apollo".into(),
            outcome: OutcomeKind::RateLimited,
            at: 1_129
        }
    );
    assert_eq!(l1.attempts[99].at, 1_030);
    assert!(
        l1.attempts.windows(2).all(|p| p[0].at > p[1].at),
        "newest first"
    );
    assert_eq!(
        l1.status,
        Some(status("l1", LeadState::Deferred, Some(9_000)))
    );
    let l2 = &loaded[&lid("l2")];
    assert_eq!(l2.values.len(), 1);
    assert_eq!(
        l2.attempts
            .iter()
            .map(|a| a.provider.as_str())
            .collect::<Vec<_>>(),
        vec!["pdl", "hunter"]
    );
    assert_eq!(l2.status, None);
    assert_eq!(loaded[&lid("absent")], store::StoredLead::default());
    assert!(
        db.store
            .load_leads(&w, &[])
            .await
            .expect("empty")
            .is_empty()
    );
}

async fn load_leads_handles_large_batches(db: &TestDb) {
    let w = ws("a");
    let n = 1_200;
    let mut ops = Vec::new();
    for i in 0..n {
        let lead = format!("lead-{i}");
        ops.push(value_op(
            &lead,
            cv(Channel::WorkEmail, &format!("{i}@acme.io"), "hunter", 1),
            None,
        ));
        ops.push(WriteOp::Attempt(attempt(
            &lead,
            Channel::WorkEmail,
            "hunter",
            OutcomeKind::Found,
            1,
        )));
        if i % 3 == 0 {
            ops.push(WriteOp::Status(status(&lead, LeadState::Done, None)));
        }
    }
    apply(db, &w, ops).await;
    let ids: Vec<LeadId> = (0..n + 300).map(|i| lid(&format!("lead-{i}"))).collect();
    let started = Instant::now();
    let loaded = db.store.load_leads(&w, &ids).await.expect("load");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "{}: loading took {took:?}",
        db.backend
    );
    assert_eq!(loaded.len(), n + 300);
    for i in 0..n + 300 {
        let s = &loaded[&lid(&format!("lead-{i}"))];
        let stored = i < n;
        assert_eq!(s.values.len(), usize::from(stored), "lead-{i}");
        assert_eq!(s.attempts.len(), usize::from(stored), "lead-{i}");
        assert_eq!(s.status.is_some(), stored && i % 3 == 0, "lead-{i}");
    }
}

async fn leads_in_state_orders_by_icp_then_id(db: &TestDb) {
    let w = ws("a");
    let leads = vec![
        (Lead::new("c"), 50.0),
        (Lead::new("a"), 50.0),
        (Lead::new("b"), 90.0),
        (Lead::new("d"), 10.0),
        (Lead::new("e"), 99.0),
        (Lead::new("f"), 95.0),
    ];
    db.store.upsert_leads(&w, &leads, 1).await.expect("upsert");
    apply(
        db,
        &w,
        vec![
            WriteOp::Status(status("a", LeadState::Queued, None)),
            WriteOp::Status(status("b", LeadState::Queued, Some(100))),
            WriteOp::Status(status("c", LeadState::Queued, Some(500))),
            WriteOp::Status(status("d", LeadState::Queued, None)),
            WriteOp::Status(status("e", LeadState::Done, None)),
            WriteOp::Status(status("f", LeadState::Queued, Some(1_000))),
            // A status whose lead row is missing sorts last.
            WriteOp::Status(status("z-orphan", LeadState::Queued, None)),
        ],
    )
    .await;
    assert_eq!(
        queued(db, 500, 100).await,
        vec!["b", "a", "c", "d", "z-orphan"]
    );
    assert_eq!(queued(db, 499, 100).await, vec!["b", "a", "d", "z-orphan"]);
    assert_eq!(
        queued(db, 1_000, 100).await,
        vec!["f", "b", "a", "c", "d", "z-orphan"]
    );
    assert_eq!(queued(db, 1_000, 2).await, vec!["f", "b"]);
    assert_eq!(queued(db, 0, 0).await, Vec::<String>::new());
    let done = db
        .store
        .leads_in_state(&w, LeadState::Done, i64::MAX, 10)
        .await
        .expect("done");
    assert_eq!(done, vec![lid("e")]);
}

async fn queued(db: &TestDb, due_by: i64, limit: u32) -> Vec<String> {
    db.store
        .leads_in_state(&ws("a"), LeadState::Queued, due_by, limit)
        .await
        .expect("leads_in_state")
        .into_iter()
        .map(|l| l.0)
        .collect()
}

async fn totals_count_everything(db: &TestDb) {
    let w = ws("a");
    db.store
        .upsert_leads(&w, &[(Lead::new("l1"), 1.0), (Lead::new("l2"), 2.0)], 1)
        .await
        .expect("upsert");
    apply(
        db,
        &w,
        vec![
            email_charge("l1", "k1", 2, None),
            email_charge("l2", "k2", 3, None),
            value_op("l2", cv(Channel::Phone, "+1", "crm", 1), None),
            WriteOp::Attempt(attempt(
                "l1",
                Channel::WorkEmail,
                "hunter",
                OutcomeKind::Found,
                1,
            )),
            WriteOp::Spend(spend("s1", "zeta", 500, 1)),
            WriteOp::Spend(spend("s2", "alpha", 250, 2)),
            WriteOp::Spend(spend("s3", "zeta", 1_500, 3)),
        ],
    )
    .await;
    let t = db.store.totals(&w).await.expect("totals");
    assert_eq!(
        t,
        store::Totals {
            leads: 2,
            values: 3,
            charges: 2,
            credits: 5,
            attempts: 1,
            spend: vec![("alpha".into(), 250), ("zeta".into(), 2_000)],
        }
    );
    assert_eq!(
        db.store.totals(&ws("empty")).await.expect("totals"),
        store::Totals::default()
    );
}

async fn spend_is_idempotent_and_ordered(db: &TestDb) {
    let w = ws("a");
    let late = spend("s-late", "apollo-main", 30, 300);
    let early = SpendEntry {
        lead_id: None,
        ..spend("s-early", "apollo-main", 10, 100)
    };
    let applied = apply(
        db,
        &w,
        vec![WriteOp::Spend(late.clone()), WriteOp::Spend(early.clone())],
    )
    .await;
    assert_eq!(applied, vec![Applied::Spend { recorded: true }; 2]);
    let applied = apply(db, &w, vec![WriteOp::Spend(late.clone())]).await;
    assert_eq!(applied, vec![Applied::Spend { recorded: false }]);
    assert_eq!(db.store.spend(&w).await.expect("spend"), vec![early, late]);
}

async fn attempts_round_trip_oldest_first(db: &TestDb) {
    let w = ws("a");
    let full = AttemptRecord {
        run_id: "run-42".into(),
        lead_id: lid("l1"),
        channel: Channel::PersonalEmail,
        provider: "pdl".into(),
        account: "pdl-eu".into(),
        outcome: OutcomeKind::Unusable,
        detail: "catch-all under the strict policy".into(),
        value: Some("ada@gmail.com".into()),
        provider_cost: 2_500,
        credits: 0,
        http_status: Some(u16::MAX),
        tries: u32::MAX,
        latency_ms: 1_234,
        at: 200,
    };
    let bare = AttemptRecord {
        http_status: None,
        value: None,
        outcome: OutcomeKind::InsufficientIdentity,
        at: 100,
        ..full.clone()
    };
    apply(
        db,
        &w,
        vec![
            WriteOp::Attempt(full.clone()),
            WriteOp::Attempt(bare.clone()),
        ],
    )
    .await;
    assert_eq!(
        db.store.attempts(&w, &lid("l1")).await.expect("attempts"),
        vec![bare, full]
    );
    assert_eq!(
        db.store.attempts(&w, &lid("l2")).await.expect("attempts"),
        vec![]
    );
}

async fn statuses_are_upserted(db: &TestDb) {
    let w = ws("a");
    apply(
        db,
        &w,
        vec![
            WriteOp::Status(status("l2", LeadState::Deferred, Some(10))),
            WriteOp::Status(status("l1", LeadState::Waiting, None)),
        ],
    )
    .await;
    let replaced = LeadStatusRow {
        enrichment_status: None,
        reason: "all providers refused authentication".into(),
        updated_at: 6_000,
        ..status("l2", LeadState::Failed, None)
    };
    apply(db, &w, vec![WriteOp::Status(replaced.clone())]).await;
    assert_eq!(
        db.store.statuses(&w).await.expect("statuses"),
        vec![status("l1", LeadState::Waiting, None), replaced]
    );
}

async fn jobs_round_trip(db: &TestDb) {
    let w = ws("a");
    let j1 = job("fe-main", "j1", "tok-1", JobState::Pending);
    let j2 = ProviderJob {
        submitted_at: 2_000,
        ..job("fe-main", "j2", "tok-2", JobState::Pending)
    };
    let j3 = ProviderJob {
        submitted_at: 500,
        ..job("fe-other", "j1", "tok-3", JobState::Done)
    };
    apply(
        db,
        &w,
        vec![
            WriteOp::Job(j1.clone()),
            WriteOp::Job(j2.clone()),
            WriteOp::Job(j3.clone()),
        ],
    )
    .await;
    assert_eq!(
        db.store.job(&w, "fe-main", "j1").await.expect("job"),
        Some(j1.clone())
    );
    assert_eq!(
        db.store.job(&w, "fe-main", "nope").await.expect("job"),
        None
    );
    assert_eq!(
        db.store.job_by_token("tok-2").await.expect("by token"),
        Some((w.clone(), j2.clone()))
    );
    assert_eq!(
        db.store
            .job_by_token("tok-unknown")
            .await
            .expect("by token"),
        None
    );
    assert_eq!(
        db.store.open_jobs(&w).await.expect("open"),
        vec![j1.clone(), j2.clone()]
    );

    // Received with a body; then done without one keeps the body.
    let body = b"{\"datas\":[1,2,3]}".to_vec();
    apply(
        db,
        &w,
        vec![WriteOp::JobState {
            account: "fe-main".into(),
            job_id: "j1".into(),
            state: JobState::Received,
            result: Some(body.clone()),
        }],
    )
    .await;
    let got = db
        .store
        .job(&w, "fe-main", "j1")
        .await
        .expect("job")
        .expect("j1");
    assert_eq!(
        (got.state, got.result.clone()),
        (JobState::Received, Some(body.clone()))
    );
    assert_eq!(db.store.open_jobs(&w).await.expect("open").len(), 2);
    apply(
        db,
        &w,
        vec![WriteOp::JobState {
            account: "fe-main".into(),
            job_id: "j1".into(),
            state: JobState::Done,
            result: None,
        }],
    )
    .await;
    let got = db
        .store
        .job(&w, "fe-main", "j1")
        .await
        .expect("job")
        .expect("j1");
    assert_eq!((got.state, got.result), (JobState::Done, Some(body)));
    assert_eq!(
        db.store.open_jobs(&w).await.expect("open"),
        vec![j2.clone()]
    );

    // Upserting a job replaces it.
    let j2b = ProviderJob {
        deadline: 123_456,
        state: JobState::Expired,
        items: vec![],
        ..j2
    };
    apply(db, &w, vec![WriteOp::Job(j2b.clone())]).await;
    assert_eq!(
        db.store.job(&w, "fe-main", "j2").await.expect("job"),
        Some(j2b)
    );
    assert_eq!(db.store.open_jobs(&w).await.expect("open"), vec![]);
}

async fn workspaces_are_isolated(db: &TestDb) {
    let a = ws("a");
    let b = ws("b");
    db.store
        .upsert_leads(&a, &[(Lead::new("l1"), 50.0)], 1)
        .await
        .expect("upsert");
    let rid = reserve(db, &a, Some(100), 10).await.expect("reservation");
    let _lapsing = db
        .store
        .reserve(&a, "2026-11", None, 1, "w", 5)
        .await
        .expect("reserve");
    apply(
        db,
        &a,
        vec![
            email_charge("l1", "k1", 2, Some(rid)),
            WriteOp::Attempt(attempt(
                "l1",
                Channel::WorkEmail,
                "hunter",
                OutcomeKind::Found,
                1,
            )),
            WriteOp::Spend(spend("s1", "apollo-main", 10, 1)),
            WriteOp::Status(status("l1", LeadState::Queued, None)),
            WriteOp::Job(job("fe", "j1", "tok-a", JobState::Pending)),
        ],
    )
    .await;

    let s = &db.store;
    let l1 = lid("l1");
    assert_eq!(s.get_lead(&b, &l1).await.expect("get"), None);
    assert_eq!(
        s.load_leads(&b, std::slice::from_ref(&l1))
            .await
            .expect("load")[&l1],
        Default::default()
    );
    assert_eq!(s.values(&b, &l1).await.expect("values"), vec![]);
    assert_eq!(s.attempts(&b, &l1).await.expect("attempts"), vec![]);
    assert_eq!(s.ledger(&b).await.expect("ledger"), vec![]);
    assert_eq!(s.spend(&b).await.expect("spend"), vec![]);
    assert_eq!(s.statuses(&b).await.expect("statuses"), vec![]);
    assert_eq!(
        s.leads_in_state(&b, LeadState::Queued, i64::MAX, 10)
            .await
            .expect("state"),
        vec![]
    );
    assert_eq!(
        s.totals(&b).await.expect("totals"),
        store::Totals::default()
    );
    assert_eq!(budget(db, &b, "2026-11").await, BudgetRow::default());
    assert_eq!(s.job(&b, "fe", "j1").await.expect("job"), None);
    assert_eq!(s.open_jobs(&b).await.expect("open"), vec![]);
    // B cannot settle A's reservations.
    assert_eq!(s.settle(&b, rid).await.expect("settle"), None);
    assert_eq!(s.settle_expired(&b, i64::MAX).await.expect("expired"), 0);
    assert_eq!(budget(db, &a, "2026-11").await.reserved, 8 + 1);
    // The same charge key in B is B's own, and does not touch A's reservation.
    let applied = apply(db, &b, vec![email_charge("l1", "k1", 2, Some(rid))]).await;
    assert_eq!(applied, vec![Applied::Value { charged: true }]);
    assert_eq!(budget(db, &b, "2026-11").await.charged, 2);
    assert_eq!(budget(db, &b, "2026-11").await.reserved, 0);
    assert_eq!(budget(db, &a, "2026-11").await.reserved, 9);
    // The token still finds the job, with its workspace.
    assert_eq!(
        s.job_by_token("tok-a")
            .await
            .expect("token")
            .map(|(w, _)| w),
        Some(a.clone())
    );
    // A still sees its own.
    assert_eq!(s.totals(&a).await.expect("totals").charges, 1);
    assert_eq!(
        s.settle(&a, rid).await.expect("settle"),
        Some(Settlement {
            reserved: 10,
            used: 2,
            released: 8
        })
    );
}

async fn corrupt_rows_are_reported_not_panicked(db: &TestDb) {
    let w = ws("a");
    db.execute(
        "INSERT INTO channel_values
             (workspace, lead_id, channel, value, source, verification, found_at, verified_at)
         VALUES ('a', 'l1', 'fax', '+1', 'apollo', 'verified', 1, NULL)",
    )
    .await;
    assert_corrupt(
        db.store.values(&w, &lid("l1")).await,
        "channel_values",
        "values",
    );
    assert_corrupt(
        db.store.load_leads(&w, &[lid("l1")]).await,
        "channel_values",
        "load_leads",
    );
    db.execute(
        "INSERT INTO channel_values
             (workspace, lead_id, channel, value, source, verification, found_at, verified_at)
         VALUES ('a', 'l2', 'phone', '+1', 'apollo', 'sort_of', 1, NULL)",
    )
    .await;
    assert_corrupt(
        db.store.values(&w, &lid("l2")).await,
        "channel_values",
        "verification",
    );

    db.execute(
        "INSERT INTO attempts
             (workspace, run_id, lead_id, channel, provider, account, outcome, detail, value,
              provider_cost, credits, http_status, tries, latency_ms, at)
         VALUES ('a', 'r', 'l3', 'phone', 'apollo', 'main', 'exploded', '', NULL, 0, 0, NULL, 1, 1, 1)",
    )
    .await;
    assert_corrupt(
        db.store.attempts(&w, &lid("l3")).await,
        "attempts",
        "attempts",
    );
    assert_corrupt(
        db.store.load_leads(&w, &[lid("l3")]).await,
        "attempts",
        "load_leads",
    );
    db.execute(
        "INSERT INTO attempts
             (workspace, run_id, lead_id, channel, provider, account, outcome, detail, value,
              provider_cost, credits, http_status, tries, latency_ms, at)
         VALUES ('a', 'r', 'l4', 'phone', 'apollo', 'main', 'found', '', NULL, 0, 0, 70000, 1, 1, 1)",
    )
    .await;
    assert_corrupt(
        db.store.attempts(&w, &lid("l4")).await,
        "attempts",
        "http_status range",
    );

    db.execute(
        "INSERT INTO lead_status (workspace, lead_id, state, enrichment_status, reason, retry_at, updated_at)
         VALUES ('a', 'l5', 'zombie', NULL, '', NULL, 1)",
    )
    .await;
    assert_corrupt(db.store.statuses(&w).await, "lead_status", "statuses");

    db.execute(
        "INSERT INTO ledger (workspace, key, lead_id, channel, value, source, credits, period, reservation, at)
         VALUES ('a', 'k', 'l6', 'fax', '+1', 'apollo', 1, '2026-11', NULL, 1)",
    )
    .await;
    assert_corrupt(db.store.ledger(&w).await, "ledger", "ledger");

    db.execute(
        "INSERT INTO provider_jobs
             (workspace, account, job_id, token, provider, items, run_id, submitted_at, deadline, state, result)
         VALUES ('a', 'fe', 'j-bad-items', 't1', 'fullenrich', '[{\"lead_id\":\"l1\",\"channels\":[\"fax\"]}]',
                 'r', 1, 2, 'pending', NULL)",
    )
    .await;
    assert_corrupt(
        db.store.job(&w, "fe", "j-bad-items").await,
        "provider_jobs",
        "job items",
    );
    assert_corrupt(
        db.store.job_by_token("t1").await,
        "provider_jobs",
        "job_by_token",
    );
    db.execute(
        "INSERT INTO provider_jobs
             (workspace, account, job_id, token, provider, items, run_id, submitted_at, deadline, state, result)
         VALUES ('a', 'fe', 'j-bad-state', 't2', 'fullenrich', '[]', 'r', 1, 2, 'lost', NULL)",
    )
    .await;
    assert_corrupt(
        db.store.job(&w, "fe", "j-bad-state").await,
        "provider_jobs",
        "job state",
    );

    db.execute(
        "INSERT INTO leads (workspace, lead_id, fields, icp_score, updated_at)
         VALUES ('a', 'l7', 'not json', 0, 1)",
    )
    .await;
    assert_corrupt(
        db.store.get_lead(&w, &lid("l7")).await,
        "leads",
        "lead fields",
    );
}

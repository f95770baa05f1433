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
    crm_companies_and_written_values_are_read_in_batches,
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
    batch_mixing_every_kind_returns_each_result_in_order,
    batch_duplicate_charge_keys_charge_the_first_op_once,
    batch_duplicate_spend_keys_record_the_first_op,
    batch_statuses_and_values_last_op_wins,
    batch_charges_cap_what_they_take_from_reservations,
    batch_of_five_thousand_ops,
    batch_equals_applying_its_ops_one_by_one,
    concurrent_batches_racing_on_the_same_keys,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_batch_aborted_by_a_deadlock_is_rerun_exactly() {
    use sqlx::Connection;
    // A raw transaction holds ledger key k2 while the batch inserts k1 and
    // waits for k2; the raw transaction then inserts k1: a deadlock. The
    // batch, waiting longest, detects it and is aborted; `apply` reruns it.
    // The raw transaction rolls back: the rerun takes both charges, counted
    // once in the budget and the reservation.
    let Some(db) = crate::db::pg().await else {
        return;
    };
    let w = ws("a");
    let rid = reserve(&db, &w, Some(100), 10).await.expect("reservation");
    let mut raw = sqlx::PgConnection::connect(&db.url).await.expect("raw");
    let mut watch = sqlx::PgConnection::connect(&db.url).await.expect("watch");
    let raw_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut raw)
        .await
        .expect("pid");
    const INSERT: &str = "INSERT INTO ledger
        (workspace, key, lead_id, channel, value, source, credits, period, reservation, at)
        VALUES ('a', $1, 'raw', 'phone', '+1', 'raw', 1, '2026-11', NULL, 1)";
    sqlx::query("BEGIN").execute(&mut raw).await.expect("begin");
    sqlx::query(INSERT)
        .bind("k2")
        .execute(&mut raw)
        .await
        .expect("k2");
    let ops = vec![
        email_charge("l1", "k1", 3, Some(rid)),
        email_charge("l2", "k2", 4, Some(rid)),
        WriteOp::Status(status("l1", LeadState::Done, None)),
    ];
    let batch = {
        let store = db.store.clone();
        let w = w.clone();
        tokio::spawn(async move { store.apply(&w, &ops).await })
    };
    // Wait until the batch is blocked by the raw transaction (on k2).
    let started = Instant::now();
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(raw_pid)
        .fetch_one(&mut watch)
        .await
        .expect("blocked");
        if blocked > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the batch never blocked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Succeeds once the batch, the deadlock victim, has rolled back.
    sqlx::query(INSERT)
        .bind("k1")
        .execute(&mut raw)
        .await
        .expect("the raw transaction must win the deadlock");
    sqlx::query("ROLLBACK")
        .execute(&mut raw)
        .await
        .expect("rollback");
    let applied = batch.await.expect("task").expect("apply after a rerun");
    assert_eq!(
        applied,
        vec![
            Applied::Value { charged: true },
            Applied::Value { charged: true },
            Applied::Done
        ]
    );
    assert_eq!(
        budget(&db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(100),
            charged: 7,
            reserved: 3
        }
    );
    let ledger = db.store.ledger(&w).await.expect("ledger");
    assert_eq!(ledger.len(), 2);
    assert!(ledger.iter().all(|e| e.source == "hunter"));
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

// ---------------------------------------------------------------------------
// Batches: `apply` writes each kind of op with multi-row statements; the
// result must be what applying the ops one by one, in order, would give.

async fn batch_mixing_every_kind_returns_each_result_in_order(db: &TestDb) {
    let w = ws("a");
    // Keys already taken before the batch.
    apply(
        db,
        &w,
        vec![
            email_charge("l0", "k-old", 1, None),
            WriteOp::Spend(spend("s-old", "apollo-main", 5, 1)),
        ],
    )
    .await;
    let ops = vec![
        WriteOp::Attempt(attempt(
            "l1",
            Channel::WorkEmail,
            "hunter",
            OutcomeKind::Found,
            10,
        )),
        email_charge("l1", "k1", 2, None),
        WriteOp::Spend(spend("s1", "apollo-main", 100, 10)),
        WriteOp::Status(status("l1", LeadState::Waiting, None)),
        value_op("l1", cv(Channel::Phone, "+14155550100", "crm", 1), None),
        email_charge("l2", "k-old", 1, None),
        WriteOp::Spend(spend("s-old", "apollo-main", 5, 1)),
        WriteOp::Job(job("fe-main", "j1", "tok-1", JobState::Pending)),
        WriteOp::Attempt(attempt(
            "l2",
            Channel::Phone,
            "apollo",
            OutcomeKind::NotFound,
            11,
        )),
        email_charge("l2", "k1", 2, None),
        WriteOp::Spend(spend("s1", "apollo-main", 100, 10)),
        WriteOp::JobState {
            account: "fe-main".into(),
            job_id: "j1".into(),
            state: JobState::Received,
            result: Some(b"[]".to_vec()),
        },
        email_charge("l3", "k3", 4, None),
        WriteOp::Status(status("l1", LeadState::Done, None)),
        WriteOp::Spend(spend("s2", "hunter-main", 50, 12)),
    ];
    let applied = apply(db, &w, ops).await;
    assert_eq!(
        applied,
        vec![
            Applied::Done,
            Applied::Value { charged: true },
            Applied::Spend { recorded: true },
            Applied::Done,
            Applied::Value { charged: false },
            Applied::Value { charged: false },
            Applied::Spend { recorded: false },
            Applied::Done,
            Applied::Done,
            Applied::Value { charged: false },
            Applied::Spend { recorded: false },
            Applied::Done,
            Applied::Value { charged: true },
            Applied::Done,
            Applied::Spend { recorded: true },
        ],
        "{}",
        db.backend
    );
    let keys: Vec<String> = db
        .store
        .ledger(&w)
        .await
        .expect("ledger")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, vec!["k-old", "k1", "k3"]);
    assert_eq!(budget(db, &w, "2026-11").await.charged, 1 + 2 + 4);
    let spent: Vec<(String, i64)> = db
        .store
        .spend(&w)
        .await
        .expect("spend")
        .into_iter()
        .map(|s| (s.key, s.amount))
        .collect();
    assert_eq!(
        spent,
        vec![("s-old".into(), 5), ("s1".into(), 100), ("s2".into(), 50)]
    );
    assert_eq!(
        db.store.statuses(&w).await.expect("statuses"),
        vec![status("l1", LeadState::Done, None)]
    );
    assert_eq!(
        db.store.values(&w, &lid("l1")).await.expect("values").len(),
        2
    );
    assert_eq!(
        db.store.values(&w, &lid("l2")).await.expect("values"),
        vec![cv(Channel::WorkEmail, "l2@acme.io", "hunter", 1_000)],
        "a value is stored even when its charge key was taken"
    );
    let t = db.store.totals(&w).await.expect("totals");
    assert_eq!((t.attempts, t.charges, t.credits), (2, 3, 7));
    let j = db
        .store
        .job(&w, "fe-main", "j1")
        .await
        .expect("job")
        .expect("stored");
    assert_eq!(
        (j.state, j.result),
        (JobState::Received, Some(b"[]".to_vec()))
    );
}

async fn batch_duplicate_charge_keys_charge_the_first_op_once(db: &TestDb) {
    let w = ws("a");
    let rid = reserve(db, &w, Some(100), 10).await.expect("reservation");
    let ops = vec![
        value_op(
            "l1",
            cv(Channel::WorkEmail, "a@acme.io", "hunter", 10),
            Some(charge("K", 3, "2026-11", Some(rid))),
        ),
        value_op(
            "l2",
            cv(Channel::WorkEmail, "b@acme.io", "apollo", 20),
            Some(charge("K", 5, "2026-12", None)),
        ),
        email_charge("l3", "other", 1, None),
        value_op(
            "l1",
            cv(Channel::WorkEmail, "c@acme.io", "pdl", 30),
            Some(charge("K", 7, "2026-11", Some(rid))),
        ),
    ];
    let applied = apply(db, &w, ops.clone()).await;
    assert_eq!(
        applied,
        vec![
            Applied::Value { charged: true },
            Applied::Value { charged: false },
            Applied::Value { charged: true },
            Applied::Value { charged: false },
        ]
    );
    let ledger = db.store.ledger(&w).await.expect("ledger");
    assert_eq!(ledger.len(), 2);
    let k = &ledger[0];
    assert_eq!(
        (
            k.key.as_str(),
            k.lead_id.as_str(),
            k.value.as_str(),
            k.source.as_str(),
            k.credits,
            k.period.as_str(),
            k.reservation,
            k.at
        ),
        (
            "K",
            "l1",
            "a@acme.io",
            "hunter",
            3,
            "2026-11",
            Some(rid),
            10
        ),
        "the ledger row is the first op's"
    );
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(100),
            charged: 3 + 1,
            reserved: 10 - 3
        }
    );
    assert_eq!(budget(db, &w, "2026-12").await.charged, 0);
    // The values are upserted whatever happened to the charges.
    assert_eq!(
        db.store.values(&w, &lid("l1")).await.expect("values")[0].value,
        "c@acme.io"
    );
    assert_eq!(
        db.store.values(&w, &lid("l2")).await.expect("values")[0].value,
        "b@acme.io"
    );
    // The same batch again: nothing is charged twice.
    let applied = apply(db, &w, ops).await;
    assert_eq!(applied, vec![Applied::Value { charged: false }; 4]);
    assert_eq!(db.store.ledger(&w).await.expect("ledger").len(), 2);
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(100),
            charged: 4,
            reserved: 7
        }
    );
}

async fn batch_duplicate_spend_keys_record_the_first_op(db: &TestDb) {
    let w = ws("a");
    let applied = apply(
        db,
        &w,
        vec![
            WriteOp::Spend(spend("s1", "apollo-main", 10, 1)),
            WriteOp::Spend(spend("s1", "apollo-other", 20, 2)),
            WriteOp::Spend(spend("s2", "apollo-main", 5, 3)),
            WriteOp::Spend(spend("s1", "apollo-main", 30, 4)),
        ],
    )
    .await;
    assert_eq!(
        applied,
        vec![
            Applied::Spend { recorded: true },
            Applied::Spend { recorded: false },
            Applied::Spend { recorded: true },
            Applied::Spend { recorded: false },
        ]
    );
    assert_eq!(
        db.store.spend(&w).await.expect("spend"),
        vec![
            spend("s1", "apollo-main", 10, 1),
            spend("s2", "apollo-main", 5, 3)
        ]
    );
    let applied = apply(
        db,
        &w,
        vec![
            WriteOp::Spend(spend("s2", "apollo-main", 5, 3)),
            WriteOp::Spend(spend("s3", "apollo-main", 7, 5)),
            WriteOp::Spend(spend("s3", "apollo-main", 7, 5)),
        ],
    )
    .await;
    assert_eq!(
        applied,
        vec![
            Applied::Spend { recorded: false },
            Applied::Spend { recorded: true },
            Applied::Spend { recorded: false },
        ]
    );
    let t = db.store.totals(&w).await.expect("totals");
    assert_eq!(t.spend, vec![("apollo-main".into(), 22)]);
}

async fn batch_statuses_and_values_last_op_wins(db: &TestDb) {
    let w = ws("a");
    // Rows from before the batch are replaced too.
    apply(
        db,
        &w,
        vec![
            WriteOp::Status(status("l1", LeadState::Queued, None)),
            value_op("l1", cv(Channel::WorkEmail, "v0@acme.io", "crm", 1), None),
        ],
    )
    .await;
    let last_status = LeadStatusRow {
        enrichment_status: None,
        reason: "all channels settled".into(),
        updated_at: 9_000,
        ..status("l1", LeadState::Done, None)
    };
    let v3 = ChannelValue {
        verification: Verification::CatchAll,
        verified_at: None,
        ..cv(Channel::WorkEmail, "v3@acme.io", "pdl", 3)
    };
    let ops = vec![
        WriteOp::Status(status("l1", LeadState::Deferred, Some(100))),
        value_op(
            "l1",
            cv(Channel::WorkEmail, "v1@acme.io", "hunter", 1),
            Some(charge("k1", 1, "2026-11", None)),
        ),
        WriteOp::Status(status("l2", LeadState::Waiting, None)),
        value_op(
            "l1",
            cv(Channel::WorkEmail, "v2@acme.io", "apollo", 2),
            Some(charge("k2", 1, "2026-11", None)),
        ),
        value_op("l1", cv(Channel::Phone, "+1", "apollo", 2), None),
        WriteOp::Status(status("l1", LeadState::Queued, Some(50))),
        value_op("l1", v3.clone(), Some(charge("k3", 1, "2026-11", None))),
        WriteOp::Status(last_status.clone()),
    ];
    let applied = apply(db, &w, ops).await;
    assert_eq!(
        applied,
        vec![
            Applied::Done,
            Applied::Value { charged: true },
            Applied::Done,
            Applied::Value { charged: true },
            Applied::Value { charged: false },
            Applied::Done,
            Applied::Value { charged: true },
            Applied::Done,
        ]
    );
    assert_eq!(
        db.store.statuses(&w).await.expect("statuses"),
        vec![last_status, status("l2", LeadState::Waiting, None)]
    );
    assert_eq!(
        db.store.values(&w, &lid("l1")).await.expect("values"),
        vec![v3, cv(Channel::Phone, "+1", "apollo", 2)]
    );
    // Each charge recorded the value it was taken for.
    let charged: Vec<String> = db
        .store
        .ledger(&w)
        .await
        .expect("ledger")
        .into_iter()
        .map(|e| e.value)
        .collect();
    assert_eq!(charged, vec!["v1@acme.io", "v2@acme.io", "v3@acme.io"]);
    let loaded = db.store.load_leads(&w, &[lid("l1")]).await.expect("load");
    assert_eq!(
        loaded[&lid("l1")].status.as_ref().map(|s| s.state),
        Some(LeadState::Done)
    );
}

async fn batch_charges_cap_what_they_take_from_reservations(db: &TestDb) {
    let w = ws("a");
    let nov = reserve(db, &w, Some(1_000), 10).await.expect("reservation");
    let dec = db
        .store
        .reserve(&w, "2026-12", Some(1_000), 20, "w", 1_000_000)
        .await
        .expect("reserve")
        .expect("fits");
    let part = reserve(db, &w, Some(1_000), 5).await.expect("reservation");
    // `part` is partly used before the batch: 3 left.
    apply(db, &w, vec![email_charge("p0", "p0", 2, Some(part))]).await;
    let settled = reserve(db, &w, Some(1_000), 4).await.expect("reservation");
    db.store
        .settle(&w, settled)
        .await
        .expect("settle")
        .expect("open");
    assert_eq!(budget(db, &w, "2026-11").await.reserved, 10 + 3);

    let c = |lead: &str, key: &str, credits: i64, period: &str, r: Option<i64>| {
        value_op(
            lead,
            cv(Channel::Phone, &format!("+1{lead}"), "apollo", 5),
            Some(charge(key, credits, period, r)),
        )
    };
    let ops = vec![
        // 4 + 3 + 5 + 0 = 12 against `nov`, which has 10.
        c("n1", "n1", 4, "2026-11", Some(nov)),
        c("n2", "n2", 3, "2026-11", Some(nov)),
        c("n1", "n1", 4, "2026-11", Some(nov)), // duplicate: not counted
        c("n3", "n3", 5, "2026-11", Some(nov)),
        c("n4", "n4", 0, "2026-11", Some(nov)),
        c("p0", "p0", 2, "2026-11", Some(part)), // taken before the batch
        // 2 + 2 against `part`, which has 3.
        c("p1", "p1", 2, "2026-11", Some(part)),
        c("p2", "p2", 2, "2026-11", Some(part)),
        // `dec` (20): 6, one of them counted in November.
        c("d1", "d1", 4, "2026-12", Some(dec)),
        c("d2", "d2", 2, "2026-11", Some(dec)),
        // Settled or unknown reservations: counted, nothing consumed.
        c("s1", "s1", 3, "2026-11", Some(settled)),
        c("u1", "u1", 1, "2026-12", Some(987_654)),
    ];
    let applied = apply(db, &w, ops).await;
    let charged: Vec<bool> = applied
        .iter()
        .map(|a| matches!(a, Applied::Value { charged: true }))
        .collect();
    assert_eq!(
        charged,
        vec![
            true, true, false, true, true, false, true, true, true, true, true, true
        ]
    );
    // November: 4+3+5+0 + 2+2 + 2 + 3 = 21 charged; reserved was 13, minus
    // 10 (nov, capped) and 3 (part, capped).
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(1_000),
            charged: 2 + 21,
            reserved: 0
        }
    );
    // December: 4 + 1 charged; `dec` gave back 4 + 2.
    assert_eq!(
        budget(db, &w, "2026-12").await,
        BudgetRow {
            limit: Some(1_000),
            charged: 5,
            reserved: 20 - 6
        }
    );
    let settle = |id| {
        let store = db.store.clone();
        let w = w.clone();
        async move { store.settle(&w, id).await.expect("settle") }
    };
    assert_eq!(
        settle(nov).await,
        Some(Settlement {
            reserved: 10,
            used: 10,
            released: 0
        })
    );
    assert_eq!(
        settle(part).await,
        Some(Settlement {
            reserved: 5,
            used: 5,
            released: 0
        })
    );
    assert_eq!(
        settle(dec).await,
        Some(Settlement {
            reserved: 20,
            used: 6,
            released: 14
        })
    );
    assert_eq!(budget(db, &w, "2026-12").await.reserved, 0);
}

async fn batch_of_five_thousand_ops(db: &TestDb) {
    // 1,000 leads x (value + charge, spend, 2 attempts, status), all found
    // at the same instant, keys in no particular order: more than a chunk of
    // every kind, duplicates across chunk boundaries, and ids that must
    // follow the op order.
    let w = ws("a");
    const LEADS: usize = 1_000;
    let rid = reserve(db, &w, Some(1_000_000), 1_500)
        .await
        .expect("reservation");
    let key = |i: usize| format!("key-{:04}", (i * 7_919) % LEADS);
    let mut ops = Vec::with_capacity(5 * LEADS + 2);
    for i in 0..LEADS {
        let lead = format!("lead-{i:04}");
        ops.push(value_op(
            &lead,
            cv(Channel::WorkEmail, &format!("{lead}@acme.io"), "hunter", 7),
            Some(charge(&key(i), 2, "2026-11", Some(rid))),
        ));
        ops.push(WriteOp::Spend(spend(
            &format!("s-{}", key(i)),
            "apollo-main",
            3,
            7,
        )));
        for (n, channel) in [Channel::WorkEmail, Channel::Phone].into_iter().enumerate() {
            ops.push(WriteOp::Attempt(AttemptRecord {
                run_id: format!("run-{i}-{n}"),
                ..attempt(&lead, channel, "apollo", OutcomeKind::Found, 7)
            }));
        }
        ops.push(WriteOp::Status(status(&lead, LeadState::Done, None)));
    }
    // Duplicates of the first keys at the very end.
    ops.push(email_charge("lead-0000", &key(0), 2, Some(rid)));
    ops.push(WriteOp::Spend(spend(
        &format!("s-{}", key(1)),
        "apollo-main",
        3,
        7,
    )));
    assert_eq!(ops.len(), 5 * LEADS + 2);

    let started = Instant::now();
    let applied = apply(db, &w, ops.clone()).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "{}: 5,002 ops took {took:?}",
        db.backend
    );
    assert_eq!(applied.len(), ops.len());
    for (i, (op, a)) in ops.iter().zip(&applied).enumerate() {
        let expected = match op {
            WriteOp::Value { .. } => Applied::Value {
                charged: i < 5 * LEADS,
            },
            WriteOp::Spend(_) => Applied::Spend {
                recorded: i < 5 * LEADS,
            },
            _ => Applied::Done,
        };
        assert_eq!(*a, expected, "op {i}");
    }
    let t = db.store.totals(&w).await.expect("totals");
    assert_eq!(
        (t.values, t.charges, t.credits, t.attempts),
        (
            LEADS as u64,
            LEADS as u64,
            2 * LEADS as i64,
            2 * LEADS as u64
        )
    );
    assert_eq!(t.spend, vec![("apollo-main".into(), 3 * LEADS as i64)]);
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: Some(1_000_000),
            charged: 2 * LEADS as i64,
            reserved: 0
        },
        "2,000 charged against 1,500 reserved: 1,500 used"
    );
    // Same `at` everywhere: ties are broken by id, which follows op order.
    let ledger: Vec<String> = db
        .store
        .ledger(&w)
        .await
        .expect("ledger")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(ledger, (0..LEADS).map(key).collect::<Vec<_>>());
    let spent: Vec<String> = db
        .store
        .spend(&w)
        .await
        .expect("spend")
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(
        spent,
        (0..LEADS)
            .map(|i| format!("s-{}", key(i)))
            .collect::<Vec<_>>()
    );
    let runs: Vec<String> = db
        .store
        .attempts(&w, &lid("lead-0999"))
        .await
        .expect("attempts")
        .into_iter()
        .map(|a| a.run_id)
        .collect();
    assert_eq!(runs, vec!["run-999-0", "run-999-1"]);
    assert_eq!(
        db.store
            .leads_in_state(&w, LeadState::Done, 0, 10_000)
            .await
            .expect("done")
            .len(),
        LEADS
    );
    // Again: every key is taken, everything else is written again.
    let applied = apply(db, &w, ops).await;
    assert!(applied.iter().all(|a| !matches!(
        a,
        Applied::Value { charged: true } | Applied::Spend { recorded: true }
    )));
    let t = db.store.totals(&w).await.expect("totals");
    assert_eq!((t.charges, t.attempts), (LEADS as u64, 4 * LEADS as u64));
}

/// A small deterministic generator (no `rand` among the dev-dependencies).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Random ops over a small universe (many key and row collisions);
/// `reservations` are this workspace's ids, `tokens` makes job tokens
/// unique across workspaces.
fn random_ops(rng: &mut Lcg, n: usize, reservations: &[i64], tokens: &str) -> Vec<WriteOp> {
    const CHANNELS: [Channel; 3] = [Channel::WorkEmail, Channel::Phone, Channel::LinkedinUrl];
    const STATES: [LeadState; 4] = [
        LeadState::Done,
        LeadState::Deferred,
        LeadState::Queued,
        LeadState::Waiting,
    ];
    const PERIODS: [&str; 2] = ["2026-11", "2026-12"];
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let lead = format!("l{}", rng.below(6));
        let at = 1_000 + rng.below(5) as i64;
        let op = match rng.below(10) {
            0..=3 => {
                let channel = CHANNELS[rng.below(3) as usize];
                let value = cv(channel, &format!("v{}", rng.below(1_000)), "apollo", at);
                let charge = (rng.below(4) != 0).then(|| {
                    // Mostly positive, sometimes 0 or negative.
                    let credits = rng.below(7) as i64 - 1;
                    let reservation = match rng.below(5) {
                        0 => None,
                        i => Some(reservations[(i - 1) as usize % reservations.len()]),
                    };
                    charge(
                        &format!("k{}", rng.below(14)),
                        credits,
                        PERIODS[rng.below(2) as usize],
                        reservation,
                    )
                });
                WriteOp::Value {
                    lead_id: lid(&lead),
                    value,
                    charge,
                }
            }
            4 => WriteOp::Spend(SpendEntry {
                lead_id: Some(lid(&lead)),
                ..spend(
                    &format!("s{}", rng.below(8)),
                    "apollo-main",
                    rng.below(100) as i64,
                    at,
                )
            }),
            5 | 6 => WriteOp::Attempt(AttemptRecord {
                run_id: format!("run-{}", rng.below(1_000)),
                ..attempt(
                    &lead,
                    CHANNELS[rng.below(3) as usize],
                    "apollo",
                    OutcomeKind::NotFound,
                    at,
                )
            }),
            7 | 8 => WriteOp::Status(LeadStatusRow {
                updated_at: at,
                reason: format!("r{}", rng.below(1_000)),
                ..status(&lead, STATES[rng.below(4) as usize], Some(at))
            }),
            _ => {
                let job_id = format!("j{}", rng.below(2));
                if rng.below(2) == 0 {
                    WriteOp::Job(ProviderJob {
                        submitted_at: at,
                        ..job(
                            "fe",
                            &job_id,
                            &format!("tok-{tokens}-{job_id}"),
                            JobState::Pending,
                        )
                    })
                } else {
                    WriteOp::JobState {
                        account: "fe".into(),
                        job_id,
                        state: JobState::Received,
                        result: Some(format!("{}", rng.below(1_000)).into_bytes()),
                    }
                }
            }
        };
        ops.push(op);
    }
    ops
}

async fn batch_equals_applying_its_ops_one_by_one(db: &TestDb) {
    // Workspace `batched` gets each round as one batch, `single` gets the
    // same ops one `apply` at a time: results and state must be identical.
    let batched = ws("batched");
    let single = ws("single");
    let mut reservations = Vec::new();
    for w in [&batched, &single] {
        let mut ids = Vec::new();
        for (period, amount) in [("2026-11", 9), ("2026-12", 6), ("2026-11", 30)] {
            ids.push(
                db.store
                    .reserve(w, period, None, amount, "w", 1_000_000)
                    .await
                    .expect("reserve")
                    .expect("fits"),
            );
        }
        // One settled before anything is charged against it.
        let settled = db
            .store
            .reserve(w, "2026-12", None, 4, "w", 1_000_000)
            .await
            .expect("reserve")
            .expect("fits");
        db.store.settle(w, settled).await.expect("settle");
        ids.push(settled);
        reservations.push(ids);
    }
    for round in 0..4u64 {
        let mut rng = Lcg(round * 7 + 1);
        let ops_b = random_ops(&mut rng, 80, &reservations[0], "b");
        let mut rng = Lcg(round * 7 + 1);
        let ops_s = random_ops(&mut rng, 80, &reservations[1], "s");
        let got = apply(db, &batched, ops_b).await;
        let mut want = Vec::new();
        for op in ops_s {
            want.extend(apply(db, &single, vec![op]).await);
        }
        assert_eq!(got, want, "{} round {round}: results", db.backend);
    }
    let s = &db.store;
    for i in 0..6 {
        let l = lid(&format!("l{i}"));
        assert_eq!(
            s.values(&batched, &l).await.expect("values"),
            s.values(&single, &l).await.expect("values"),
            "values of {l}"
        );
        assert_eq!(
            s.attempts(&batched, &l).await.expect("attempts"),
            s.attempts(&single, &l).await.expect("attempts"),
            "attempts of {l}"
        );
    }
    assert_eq!(
        s.statuses(&batched).await.expect("statuses"),
        s.statuses(&single).await.expect("statuses")
    );
    assert_eq!(
        s.spend(&batched).await.expect("spend"),
        s.spend(&single).await.expect("spend")
    );
    // Reservation ids differ between the workspaces: compare their index.
    let ledger = |w: &WorkspaceId, ids: Vec<i64>| {
        let store = s.clone();
        let w = w.clone();
        async move {
            store
                .ledger(&w)
                .await
                .expect("ledger")
                .into_iter()
                .map(|mut e| {
                    e.reservation = e
                        .reservation
                        .map(|r| ids.iter().position(|&x| x == r).map_or(-1, |p| p as i64));
                    e
                })
                .collect::<Vec<_>>()
        }
    };
    let lb = ledger(&batched, reservations[0].clone()).await;
    assert!(!lb.is_empty());
    assert_eq!(lb, ledger(&single, reservations[1].clone()).await);
    for period in ["2026-11", "2026-12"] {
        assert_eq!(
            budget(db, &batched, period).await,
            budget(db, &single, period).await,
            "budget {period}"
        );
    }
    for j in ["j0", "j1"] {
        let job = |w: &WorkspaceId| {
            let store = s.clone();
            let w = w.clone();
            async move {
                store
                    .job(&w, "fe", j)
                    .await
                    .expect("job")
                    .map(|j| (j.state, j.result, j.submitted_at))
            }
        };
        assert_eq!(job(&batched).await, job(&single).await, "job {j}");
    }
    for (b, o) in reservations[0].iter().zip(&reservations[1]) {
        assert_eq!(
            s.settle(&batched, *b).await.expect("settle"),
            s.settle(&single, *o).await.expect("settle"),
            "settling reservation {b} / {o}"
        );
    }
}

async fn concurrent_batches_racing_on_the_same_keys(db: &TestDb) {
    // Large batches on two stores (two replicas; on SQLite two writer
    // connections on one file) charging and spending the same keys in
    // different orders, at the same moment. Phase 0: the batches share
    // their leads (values, statuses) too. Phase 1: each batch has its own
    // leads, so they meet only on the ledger and spend keys (on PostgreSQL,
    // on the unique indexes: opposite orders may deadlock, and the loser is
    // rerun). Phase 2: as phase 0, all charging one reservation.
    let stores: [Arc<dyn Store>; 2] = [
        db.store.clone(),
        store::open(&db.url).await.expect("second store"),
    ];
    let w = ws("a");
    const TASKS: usize = 6;
    const KEYS: usize = 300;
    const PHASES: usize = 3;
    let rid = reserve(db, &w, None, 250).await.expect("reservation");
    for phase in 0..PHASES {
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let store = stores[t % 2].clone();
            let barrier = barrier.clone();
            let w = w.clone();
            handles.push(tokio::spawn(async move {
                let mut keys: Vec<usize> = (0..KEYS).collect();
                if t % 2 == 1 {
                    keys.reverse();
                }
                keys.rotate_left(t * 37 % KEYS);
                let mut ops = Vec::new();
                for &k in &keys {
                    let lead = if phase == 1 {
                        format!("t{t}-l{}", k % 50)
                    } else {
                        format!("l{}", k % 50)
                    };
                    ops.push(email_charge(
                        &lead,
                        &format!("k{phase}-{k}"),
                        1,
                        (phase == 2).then_some(rid),
                    ));
                    ops.push(WriteOp::Spend(spend(
                        &format!("s{phase}-{k}"),
                        "apollo-main",
                        1,
                        1,
                    )));
                    ops.push(WriteOp::Attempt(attempt(
                        &lead,
                        Channel::WorkEmail,
                        "hunter",
                        OutcomeKind::Found,
                        1,
                    )));
                    ops.push(WriteOp::Status(status(&lead, LeadState::Done, None)));
                }
                barrier.wait().await;
                let applied = store.apply(&w, &ops).await.expect("apply");
                let charged = applied
                    .iter()
                    .filter(|a| matches!(a, Applied::Value { charged: true }))
                    .count();
                let recorded = applied
                    .iter()
                    .filter(|a| matches!(a, Applied::Spend { recorded: true }))
                    .count();
                (charged, recorded)
            }));
        }
        let (mut charged, mut recorded) = (0, 0);
        for h in handles {
            let (c, r) = h.await.expect("task");
            charged += c;
            recorded += r;
        }
        assert_eq!(
            (charged, recorded),
            (KEYS, KEYS),
            "{} phase {phase}: each key is taken by one batch",
            db.backend
        );
    }
    let n = PHASES * KEYS;
    let t = db.store.totals(&w).await.expect("totals");
    assert_eq!(
        (t.charges, t.credits, t.attempts, t.values),
        (
            n as u64,
            n as i64,
            (PHASES * TASKS * KEYS) as u64,
            (50 + TASKS * 50) as u64
        )
    );
    assert_eq!(t.spend, vec![("apollo-main".into(), n as i64)]);
    assert_eq!(db.store.ledger(&w).await.expect("ledger").len(), n);
    assert_eq!(
        budget(db, &w, "2026-11").await,
        BudgetRow {
            limit: None,
            charged: n as i64,
            reserved: 0
        },
        "{}: the reservation (250) was used up by phase 2 (300)",
        db.backend
    );
    assert_eq!(
        db.store.settle(&w, rid).await.expect("settle"),
        Some(Settlement {
            reserved: 250,
            used: 250,
            released: 0
        })
    );
}

async fn crm_companies_and_written_values_are_read_in_batches(db: &TestDb) {
    use enrichd::store::crm::{CompanyRow, WriteOutcome, Written};
    let (a, b) = (ws("a"), ws("b"));
    let rows: Vec<CompanyRow> = (0..1_200)
        .map(|i| CompanyRow {
            company_id: format!("{}", 9_000_000 + i),
            name: Some(format!("Company {i}")),
            domain: (i % 2 == 0).then(|| format!("c{i}.example")),
            fetched_at: 1_000 + i,
        })
        .collect();
    db.store
        .upsert_companies(&a, "hubspot", &rows)
        .await
        .unwrap();
    // More ids than one statement takes, some unknown.
    let ids: Vec<String> = (0..1_300).map(|i| format!("{}", 9_000_000 + i)).collect();
    let got = db.store.companies(&a, "hubspot", &ids).await.unwrap();
    assert_eq!(got.len(), 1_200);
    assert_eq!(got["9000002"].domain.as_deref(), Some("c2.example"));
    assert_eq!(got["9000003"].domain, None);
    assert!(
        db.store
            .companies(&b, "hubspot", &ids)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        db.store
            .companies(&a, "salesforce", &ids)
            .await
            .unwrap()
            .is_empty()
    );

    let written: Vec<Written> = (0..700)
        .flat_map(|i| {
            ["enrichment_work_email", "enrichment_work_email_source"].map(|f| Written {
                lead_id: LeadId(format!("l{i}")),
                field: f.to_string(),
                value: format!("{f}-{i}"),
            })
        })
        .collect();
    let outcomes = vec![WriteOutcome {
        lead_id: LeadId("l1".into()),
        state: "failed".into(),
        reason: "refused".into(),
        attempts: 3,
    }];
    db.store
        .record_writes(&a, &written, &outcomes, 5)
        .await
        .unwrap();
    let leads: Vec<LeadId> = (0..800).map(|i| LeadId(format!("l{i}"))).collect();
    let w = db.store.written(&a, &leads).await.unwrap();
    assert_eq!(w.len(), 700);
    assert_eq!(
        w[&LeadId("l650".into())]["enrichment_work_email_source"],
        "enrichment_work_email_source-650"
    );
    assert!(db.store.written(&b, &leads).await.unwrap().is_empty());
    assert_eq!(db.store.write_outcomes(&a).await.unwrap(), outcomes);
}

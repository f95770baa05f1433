//! The durable job queue, run against both backends: `jobs::sqlite::<test>`
//! and `jobs::pg::<test>`. Times are passed in (`now`), never slept.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use enrichd::core::jobs::retry_at;
use enrichd::core::lead::WorkspaceId;
use enrichd::store::jobs::{Job, JobSpec, JobState};
use enrichd::store::{self, Store, StoreError};
use serde_json::json;
use tokio::sync::Barrier;

use crate::db::TestDb;

/// Generates, for each named `async fn name(db: &TestDb)`, the tests
/// `sqlite::name` and `pg::name`.
macro_rules! job_tests {
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

job_tests! {
    enqueue_is_idempotent_per_open_dedupe_key,
    concurrent_enqueues_of_one_key_create_one_job,
    claim_is_exclusive_across_concurrent_claimers,
    claim_filters_kinds_across_workspaces_and_honours_limit,
    lapsed_lease_is_reclaimed_and_the_old_worker_refused,
    fail_requeues_at_run_after_then_dies_at_the_last_attempt,
    release_does_not_count_an_attempt,
    workspaces_only_see_their_own_jobs,
    corrupt_job_rows_are_reported_not_panicked,
}

// ---------------------------------------------------------------------------
// Helpers

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId(s.to_string())
}

fn spec(kind: &str, key: Option<&str>) -> JobSpec {
    let s = JobSpec::new(kind, json!({ "kind": kind, "key": key }));
    match key {
        Some(k) => s.dedupe(k),
        None => s,
    }
}

async fn enqueue(db: &TestDb, w: &WorkspaceId, spec: &JobSpec, now: i64) -> (i64, bool) {
    db.store.enqueue(w, spec, now).await.expect("enqueue")
}

async fn get(db: &TestDb, w: &WorkspaceId, id: i64) -> Job {
    db.store
        .job_by_id(w, id)
        .await
        .expect("read job")
        .expect("job exists")
}

async fn claim(
    db: &TestDb,
    worker: &str,
    kinds: &[&str],
    limit: u32,
    lease: i64,
    now: i64,
) -> Vec<Job> {
    db.store
        .claim(worker, kinds, limit, lease, now)
        .await
        .expect("claim")
}

/// Stores on the test database: `db.store` and `extra` more opened from its
/// URL (on PostgreSQL, separate pools: claims race as replicas' would; on
/// SQLite, separate writer connections, as separate processes would have).
async fn stores(db: &TestDb, extra: usize) -> Vec<Arc<dyn Store>> {
    let mut out = vec![db.store.clone()];
    for _ in 0..extra {
        out.push(store::open(&db.url).await.expect("another store"));
    }
    out
}

// ---------------------------------------------------------------------------
// The suite

async fn enqueue_is_idempotent_per_open_dedupe_key(db: &TestDb) {
    let w = ws("a");
    let (id, created) = enqueue(db, &w, &spec("sync", Some("hubspot")), 1_000).await;
    assert!(created);
    let job = get(db, &w, id).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.workspace, w);
    assert_eq!(job.kind, "sync");
    assert_eq!(job.dedupe_key.as_deref(), Some("hubspot"));
    assert_eq!(job.payload, json!({ "kind": "sync", "key": "hubspot" }));
    assert_eq!(
        (job.attempts, job.max_attempts),
        (0, JobSpec::DEFAULT_MAX_ATTEMPTS)
    );
    assert_eq!(
        (job.created_at, job.updated_at, job.finished_at),
        (1_000, 1_000, None)
    );
    assert_eq!(
        (
            job.claimed_by.as_deref(),
            job.lease_until,
            job.result.as_ref()
        ),
        (None, None, None)
    );

    // The same key while it is queued: the same job, nothing new.
    assert_eq!(
        enqueue(db, &w, &spec("sync", Some("hubspot")), 1_001).await,
        (id, false)
    );
    // Another kind, another workspace, or no key: new jobs.
    let (other_kind, c1) = enqueue(db, &w, &spec("backfill", Some("hubspot")), 1_002).await;
    let (other_ws, c2) = enqueue(db, &ws("b"), &spec("sync", Some("hubspot")), 1_002).await;
    let (no_key_1, c3) = enqueue(db, &w, &spec("sync", None), 1_003).await;
    let (no_key_2, c4) = enqueue(db, &w, &spec("sync", None), 1_003).await;
    assert!(c1 && c2 && c3 && c4);
    let ids: HashSet<i64> = [id, other_kind, other_ws, no_key_1, no_key_2].into();
    assert_eq!(ids.len(), 5);

    // While it runs: still the same job.
    let claimed = claim(db, "w1", &["sync"], 1, 60_000, 2_000).await;
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(
        enqueue(db, &w, &spec("sync", Some("hubspot")), 2_001).await,
        (id, false)
    );

    // Once it is done, the key opens a new job.
    assert!(
        db.store
            .complete(id, "w1", &json!({"ok": true}), 3_000)
            .await
            .expect("complete")
    );
    let (next, created) = enqueue(db, &w, &spec("sync", Some("hubspot")), 3_001).await;
    assert!(created);
    assert_ne!(next, id);
    assert_eq!(
        enqueue(db, &w, &spec("sync", Some("hubspot")), 3_002).await,
        (next, false)
    );
    let done = get(db, &w, id).await;
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert_eq!(done.finished_at, Some(3_000));

    // A dead job frees its key too.
    let dead_spec = spec("push", Some("lead-1")).max_attempts(1);
    let (dead, _) = enqueue(db, &w, &dead_spec, 4_000).await;
    let claimed = claim(db, "w1", &["push"], 1, 60_000, 4_000).await;
    assert_eq!(claimed.len(), 1);
    assert!(
        db.store
            .fail(dead, "w1", "nope", 5_000, 4_500)
            .await
            .expect("fail")
    );
    assert_eq!(get(db, &w, dead).await.state, JobState::Dead);
    let (again, created) = enqueue(db, &w, &dead_spec, 4_600).await;
    assert!(created && again != dead);
}

async fn concurrent_enqueues_of_one_key_create_one_job(db: &TestDb) {
    const TASKS: usize = 8;
    let stores = stores(db, 2).await;
    let w = ws("a");
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let store = stores[t % stores.len()].clone();
            let barrier = barrier.clone();
            let w = w.clone();
            handles.push(tokio::spawn(async move {
                let s = spec("sync", Some(&format!("key-{round}")));
                barrier.wait().await;
                store.enqueue(&w, &s, 1_000 + t as i64).await
            }));
        }
        let mut ids = HashSet::new();
        let mut created = 0;
        for h in handles {
            let (id, new) = h.await.expect("task").expect("enqueue");
            ids.insert(id);
            created += usize::from(new);
        }
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
        assert_eq!(created, 1, "round {round}");
    }
    let counts = db.store.job_counts(&w).await.expect("counts");
    assert_eq!(counts, vec![("sync".to_string(), JobState::Queued, 5)]);
}

async fn claim_is_exclusive_across_concurrent_claimers(db: &TestDb) {
    const JOBS: usize = 500;
    const CLAIMERS: usize = 8;
    let w = ws("a");
    for i in 0..JOBS {
        enqueue(db, &w, &JobSpec::new("enrich", json!({ "n": i })), 1_000).await;
    }
    let stores = stores(db, 2).await;
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut handles = Vec::new();
    for c in 0..CLAIMERS {
        let store = stores[c % stores.len()].clone();
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            let worker = format!("worker-{c}");
            let mut mine = Vec::new();
            barrier.wait().await;
            loop {
                let jobs = store
                    .claim(&worker, &["enrich"], 7, 600_000, 2_000)
                    .await
                    .map_err(|e| format!("{worker}: {e}"))?;
                if jobs.is_empty() {
                    break;
                }
                for job in jobs {
                    if job.state != JobState::Running
                        || job.claimed_by.as_deref() != Some(worker.as_str())
                        || job.attempts != 1
                        || job.lease_until != Some(602_000)
                    {
                        return Err(format!("{worker} got {job:?}"));
                    }
                    let done = store
                        .complete(job.id, &worker, &json!({ "by": worker }), 3_000)
                        .await
                        .map_err(|e| format!("{worker}: {e}"))?;
                    if !done {
                        return Err(format!("{worker} could not complete job {}", job.id));
                    }
                    mine.push(job.id);
                }
            }
            Ok::<_, String>((worker, mine))
        }));
    }
    let mut by_job: HashMap<i64, Vec<String>> = HashMap::new();
    let mut per_worker = Vec::new();
    for h in handles {
        let (worker, mine) = h.await.expect("task").unwrap_or_else(|e| panic!("{e}"));
        per_worker.push(mine.len());
        for id in mine {
            by_job.entry(id).or_default().push(worker.clone());
        }
    }
    eprintln!(
        "{}: {JOBS} jobs claimed and completed by {CLAIMERS} claimers on {} stores in {:?} (per claimer {per_worker:?})",
        db.backend,
        stores.len(),
        started.elapsed()
    );
    let twice: Vec<_> = by_job.iter().filter(|(_, ws)| ws.len() > 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    assert_eq!(by_job.len(), JOBS, "every job claimed");
    assert!(claim(db, "late", &[], 10, 600_000, 2_000).await.is_empty());
    let counts = db.store.job_counts(&w).await.expect("counts");
    assert_eq!(
        counts,
        vec![("enrich".to_string(), JobState::Done, JOBS as i64)]
    );
    for job in db.store.jobs(&w, None, 1_000).await.expect("jobs") {
        assert_eq!(job.attempts, 1);
        let by = by_job.get(&job.id).and_then(|v| v.first()).cloned();
        assert_eq!(job.result, Some(json!({ "by": by })));
        assert_eq!(job.claimed_by, by);
    }
}

async fn claim_filters_kinds_across_workspaces_and_honours_limit(db: &TestDb) {
    // Leases longer than the test, so nothing lapses.
    const LEASE: i64 = 1_000_000;
    let (a, b) = (ws("a"), ws("b"));
    // Due at 100, 300, 200 in a; 150 in b; one not due before 10_000.
    let (a1, _) = enqueue(db, &a, &spec("sync", None).run_after(100), 0).await;
    let (a2, _) = enqueue(db, &a, &spec("sync", None).run_after(300), 0).await;
    let (a3, _) = enqueue(db, &a, &spec("enrich", None).run_after(200), 0).await;
    let (b1, _) = enqueue(db, &b, &spec("sync", None).run_after(150), 0).await;
    let (later, _) = enqueue(db, &b, &spec("sync", None).run_after(10_000), 0).await;

    assert!(claim(db, "w", &["sync"], 10, LEASE, 99).await.is_empty());
    assert!(claim(db, "w", &["sync"], 0, LEASE, 1_000).await.is_empty());
    // Earliest due first, across workspaces, each job with its workspace.
    let got = claim(db, "w", &["sync", "nothing"], 2, LEASE, 1_000).await;
    let got: Vec<(i64, WorkspaceId)> = got.into_iter().map(|j| (j.id, j.workspace)).collect();
    assert_eq!(got, vec![(a1, a.clone()), (b1, b.clone())]);
    let got = claim(db, "w", &["sync"], 10, LEASE, 1_000).await;
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a2]);
    // Every kind when none is named; the job not due stays.
    let got = claim(db, "w", &[], 10, LEASE, 1_000).await;
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a3]);
    assert_eq!(got[0].kind, "enrich");
    assert!(claim(db, "w", &[], 10, LEASE, 1_000).await.is_empty());
    let got = claim(db, "w", &[], 10, LEASE, 10_000).await;
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![later]);
}

async fn lapsed_lease_is_reclaimed_and_the_old_worker_refused(db: &TestDb) {
    let w = ws("a");
    let t0 = 1_000_000;
    const LEASE: i64 = 30_000;
    let (id, _) = enqueue(db, &w, &spec("sync", Some("k")).max_attempts(3), t0).await;

    let got = claim(db, "w1", &[], 10, LEASE, t0).await;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].attempts, got[0].lease_until), (1, Some(t0 + LEASE)));
    // Not claimable while the lease runs, nor after a heartbeat extended it.
    assert!(
        claim(db, "w2", &[], 10, LEASE, t0 + 10_000)
            .await
            .is_empty()
    );
    assert!(
        db.store
            .heartbeat(id, "w1", t0 + 50_000, t0 + 20_000)
            .await
            .expect("heartbeat")
    );
    assert!(
        db.store
            .progress(id, "w1", 3, 10, t0 + 20_000)
            .await
            .expect("progress")
    );
    assert!(
        claim(db, "w2", &[], 10, LEASE, t0 + 49_999)
            .await
            .is_empty()
    );
    // w1 stopped heartbeating: w2 takes it over when the lease ends.
    let got = claim(db, "w2", &[], 10, LEASE, t0 + 50_000).await;
    assert_eq!(got.len(), 1);
    let job = &got[0];
    assert_eq!(job.id, id);
    assert_eq!(job.claimed_by.as_deref(), Some("w2"));
    assert_eq!(job.attempts, 2);
    assert_eq!(job.lease_until, Some(t0 + 50_000 + LEASE));
    assert!(
        job.last_error.contains("w1") && job.last_error.contains("lease expired"),
        "{}",
        job.last_error
    );
    assert_eq!((job.progress_done, job.progress_total), (3, 10));

    // The old worker is refused everything.
    let t1 = t0 + 51_000;
    assert!(
        !db.store
            .heartbeat(id, "w1", t1 + LEASE, t1)
            .await
            .expect("heartbeat")
    );
    assert!(
        !db.store
            .progress(id, "w1", 9, 10, t1)
            .await
            .expect("progress")
    );
    assert!(
        !db.store
            .complete(id, "w1", &json!(1), t1)
            .await
            .expect("complete")
    );
    assert!(!db.store.fail(id, "w1", "late", t1, t1).await.expect("fail"));
    assert!(!db.store.release(id, "w1", t1).await.expect("release"));
    let job = get(db, &w, id).await;
    assert_eq!(
        (job.state, job.claimed_by.as_deref(), job.attempts),
        (JobState::Running, Some("w2"), 2)
    );
    // The open job still holds its dedupe key.
    assert_eq!(
        enqueue(db, &w, &spec("sync", Some("k")), t1).await,
        (id, false)
    );

    // w2 stops too; w3 gets the last attempt and stops as well.
    let t2 = t0 + 50_000 + LEASE;
    let got = claim(db, "w3", &[], 10, LEASE, t2).await;
    assert_eq!(
        got.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        vec![(id, 3)]
    );
    // After its lease: no attempt left, so dead, not claimed.
    let t3 = t2 + LEASE;
    assert!(claim(db, "w4", &[], 10, LEASE, t3).await.is_empty());
    let job = get(db, &w, id).await;
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempts, 3);
    assert_eq!(job.finished_at, Some(t3));
    assert_eq!(job.lease_until, None);
    assert!(
        job.last_error.contains("w3")
            && job.last_error.contains("lease expired")
            && job.last_error.contains("3 attempts"),
        "{}",
        job.last_error
    );
    assert!(
        !db.store
            .complete(id, "w3", &json!(1), t3)
            .await
            .expect("complete")
    );
    assert!(
        claim(db, "w4", &[], 10, LEASE, t3 + 1_000_000)
            .await
            .is_empty()
    );
    assert_eq!(
        db.store.job_counts(&w).await.expect("counts"),
        vec![("sync".to_string(), JobState::Dead, 1)]
    );
    // Dead: the key may be enqueued again.
    assert!(enqueue(db, &w, &spec("sync", Some("k")), t3).await.1);
}

async fn fail_requeues_at_run_after_then_dies_at_the_last_attempt(db: &TestDb) {
    let w = ws("a");
    let (id, _) = enqueue(db, &w, &spec("push", None).max_attempts(2), 1_000).await;
    let got = claim(db, "w", &["push"], 1, 60_000, 1_000).await;
    assert_eq!(got.len(), 1);

    let retry = retry_at(1_500, got[0].attempts, 1_000, 60_000, id as u64);
    assert!((2_000..=2_500).contains(&retry), "{retry}");
    assert!(
        db.store
            .fail(id, "w", "HTTP 503 from hubspot", retry, 1_500)
            .await
            .expect("fail")
    );
    let job = get(db, &w, id).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.run_after, retry);
    assert_eq!(job.last_error, "HTTP 503 from hubspot");
    assert_eq!(
        (job.attempts, job.claimed_by, job.lease_until),
        (1, None, None)
    );
    assert_eq!(job.finished_at, None);
    // Refused a second time: it is no longer the worker's.
    assert!(
        !db.store
            .fail(id, "w", "again", retry, 1_600)
            .await
            .expect("fail")
    );

    assert!(claim(db, "w", &[], 10, 60_000, retry - 1).await.is_empty());
    let got = claim(db, "w", &[], 10, 60_000, retry).await;
    assert_eq!(
        got.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        vec![(id, 2)]
    );

    // The last attempt fails: dead, the error as its reason.
    assert!(
        db.store
            .fail(
                id,
                "w",
                "HTTP 400: bad property",
                retry + 10_000,
                retry + 100
            )
            .await
            .expect("fail")
    );
    let job = get(db, &w, id).await;
    assert_eq!(job.state, JobState::Dead);
    assert!(
        job.last_error.starts_with("HTTP 400: bad property"),
        "{}",
        job.last_error
    );
    assert!(job.last_error.contains("2 attempts"), "{}", job.last_error);
    assert_eq!(job.finished_at, Some(retry + 100));
    assert_eq!(job.run_after, retry);
    assert!(
        claim(db, "w", &[], 10, 60_000, i64::MAX / 2)
            .await
            .is_empty()
    );
    assert!(
        !db.store
            .fail(id, "w", "again", 0, retry + 200)
            .await
            .expect("fail")
    );
    let dead = db
        .store
        .jobs(&w, Some(JobState::Dead), 10)
        .await
        .expect("dead jobs");
    assert_eq!(dead.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
}

async fn release_does_not_count_an_attempt(db: &TestDb) {
    let w = ws("a");
    let (id, _) = enqueue(
        db,
        &w,
        &spec("backfill", None).max_attempts(1).run_after(500),
        100,
    )
    .await;
    let got = claim(db, "w1", &[], 1, 60_000, 1_000).await;
    assert_eq!(got[0].attempts, 1);
    // Graceful shutdown: queued again, due now, the attempt given back.
    assert!(db.store.release(id, "w1", 2_000).await.expect("release"));
    let job = get(db, &w, id).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!((job.attempts, job.run_after), (0, 2_000));
    assert_eq!((job.claimed_by, job.lease_until), (None, None));
    assert!(
        !db.store
            .heartbeat(id, "w1", 99_000, 2_001)
            .await
            .expect("heartbeat")
    );
    assert!(!db.store.release(id, "w1", 2_001).await.expect("release"));

    // Released as often as a worker restarts, it keeps its one attempt.
    for i in 0..3 {
        let got = claim(db, "w2", &[], 1, 60_000, 3_000 + i).await;
        assert_eq!(got.iter().map(|j| j.attempts).collect::<Vec<_>>(), vec![1]);
        assert!(
            db.store
                .release(id, "w2", 3_000 + i)
                .await
                .expect("release")
        );
    }
    let got = claim(db, "w3", &[], 1, 60_000, 4_000).await;
    assert_eq!(got[0].attempts, 1);
    assert!(
        db.store
            .progress(id, "w3", 40, 100, 4_100)
            .await
            .expect("progress")
    );
    let job = get(db, &w, id).await;
    assert_eq!(
        (job.progress_done, job.progress_total, job.updated_at),
        (40, 100, 4_100)
    );
    assert!(
        db.store
            .complete(id, "w3", &json!({"leads": 100}), 4_200)
            .await
            .expect("complete")
    );
    let job = get(db, &w, id).await;
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.result, Some(json!({"leads": 100})));
    assert_eq!(job.claimed_by.as_deref(), Some("w3"));
    assert!(!db.store.release(id, "w3", 4_300).await.expect("release"));
}

async fn workspaces_only_see_their_own_jobs(db: &TestDb) {
    let (a, b) = (ws("a"), ws("b"));
    let (a1, _) = enqueue(db, &a, &spec("sync", None), 1).await;
    let (a2, _) = enqueue(db, &a, &spec("sync", None), 2).await;
    let (a3, _) = enqueue(db, &a, &spec("enrich", None), 3).await;
    let got = claim(db, "w", &["enrich"], 10, 60_000, 10).await;
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a3]);

    assert!(db.store.job_by_id(&b, a1).await.expect("read").is_none());
    assert!(db.store.job_by_id(&a, a1).await.expect("read").is_some());
    assert!(
        db.store
            .job_by_id(&a, 1_000_000)
            .await
            .expect("read")
            .is_none()
    );
    assert!(db.store.jobs(&b, None, 100).await.expect("jobs").is_empty());
    assert!(db.store.job_counts(&b).await.expect("counts").is_empty());

    let (b1, _) = enqueue(db, &b, &spec("sync", None), 4).await;
    let only_b = db.store.jobs(&b, None, 100).await.expect("jobs");
    assert_eq!(only_b.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b1]);
    assert_eq!(
        db.store.job_counts(&b).await.expect("counts"),
        vec![("sync".to_string(), JobState::Queued, 1)]
    );
    // a: newest first, filtered by state, limited.
    let all = db.store.jobs(&a, None, 100).await.expect("jobs");
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![a3, a2, a1]
    );
    let queued = db
        .store
        .jobs(&a, Some(JobState::Queued), 100)
        .await
        .expect("jobs");
    assert_eq!(
        queued.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![a2, a1]
    );
    let newest = db.store.jobs(&a, None, 1).await.expect("jobs");
    assert_eq!(newest.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a3]);
    assert_eq!(
        db.store.job_counts(&a).await.expect("counts"),
        vec![
            ("enrich".to_string(), JobState::Running, 1),
            ("sync".to_string(), JobState::Queued, 2),
        ]
    );
}

async fn corrupt_job_rows_are_reported_not_panicked(db: &TestDb) {
    let w = ws("c");
    db.execute(
        "INSERT INTO jobs (workspace, kind, payload, state, max_attempts, run_after, created_at, updated_at)
         VALUES ('c', 'sync', '{not json', 'queued', 1, 0, 0, 0)",
    )
    .await;
    let result = db.store.jobs(&w, None, 10).await;
    assert!(
        matches!(&result, Err(StoreError::Corrupt { table: "jobs", message }) if message.contains("payload")),
        "{result:?}"
    );
    db.execute(
        "INSERT INTO jobs (workspace, kind, payload, state, max_attempts, run_after, created_at, updated_at)
         VALUES ('d', 'sync', '{}', 'exploded', 1, 0, 0, 0)",
    )
    .await;
    let result = db.store.job_counts(&ws("d")).await;
    assert!(
        matches!(&result, Err(StoreError::Corrupt { table: "jobs", .. })),
        "{result:?}"
    );
    let result = db.store.jobs(&ws("d"), None, 10).await;
    assert!(
        matches!(&result, Err(StoreError::Corrupt { table: "jobs", .. })),
        "{result:?}"
    );
}

//! The durable job queue: work that must survive a crash (a sync pass, a
//! backfill, a batch of leads to enrich) is a row of `jobs`, claimed by a
//! worker under a lease.
//!
//! * **Idempotent enqueue.** A partial unique index keeps at most one open
//!   (`queued` or `running`) job per `(workspace, kind, dedupe_key)`;
//!   `enqueue` is `INSERT ... ON CONFLICT (...) WHERE <the index's
//!   predicate> DO NOTHING RETURNING id`, then, when nothing was inserted,
//!   a read of the open job that won. Two replicas enqueueing the same key
//!   at once create one job (on PostgreSQL the second insert waits on the
//!   index until the first commits). A finished job leaves the index, so
//!   the key can be enqueued again.
//! * **Atomic claim, no lock held across work.** `claim` is one `UPDATE`
//!   statement that picks due jobs and marks them `running` for the worker
//!   with a lease (`lease_until`), counting the attempt. On PostgreSQL the
//!   pick is `SELECT ... FOR UPDATE SKIP LOCKED` in a materialised CTE:
//!   concurrent claimers (replicas included) skip each other's rows instead
//!   of waiting, and a row claimed and committed after a claimer's snapshot
//!   is re-checked under the lock (no longer due: dropped). On SQLite the
//!   statement runs on the single writer connection (a write statement takes
//!   the write lock before it reads; other processes wait on the file lock),
//!   so claims are serialised. Either way the row locks end with the
//!   statement: the worker then does its remote calls holding nothing but
//!   its lease.
//! * **Leases.** A worker extends its lease with `heartbeat`. A job whose
//!   lease lapsed (its worker stopped or hung) is claimable again; one with
//!   no attempt left is moved to `dead` instead (by the statement `claim`
//!   runs first), with a reason naming the lapsed lease. Every later call of
//!   the old worker (`heartbeat`, `progress`, `complete`, `fail`, `release`)
//!   is refused (`false`): each is conditional on the job still being
//!   `running` and claimed by that worker.
//! * **Retries.** `fail` puts the job back to `queued` at the `run_after`
//!   the caller computed (see `core::jobs::retry_delay`), or to `dead` with
//!   the error as its reason once `attempts` reached `max_attempts`.
//!   `release` (graceful shutdown) gives the attempt back.
//!
//! Scoping (invariant 6): reads take the workspace. `claim` is the one
//! deliberate exception: workers serve every workspace, and each claimed
//! [`Job`] says its workspace. The calls on a claimed job are keyed by job
//! id and worker (the claim), not by workspace.
//!
//! Every statement is the same text on both backends except the two that
//! pick rows (`FOR UPDATE SKIP LOCKED` and JSON expansion differ), so one
//! macro implements [`JobStore`] for both, like `store::crm`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::sql::read_err;
use super::{StoreError, StoreFuture};
use crate::core::lead::WorkspaceId;
use crate::core::value::UnixMillis;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `run_after`.
    Queued,
    /// Claimed by a worker until its lease ends.
    Running,
    Done,
    /// Gave up: `last_error` says why.
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Dead,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Queued or running: what the dedupe key is unique among.
    pub const fn is_open(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub kind: String,
    /// At most one open job per (workspace, kind, dedupe key); none: never deduplicated.
    pub dedupe_key: Option<String>,
    pub payload: serde_json::Value,
    /// Claims allowed before the job is dead (at least 1).
    pub max_attempts: u32,
    /// Not claimed before this.
    pub run_after: UnixMillis,
}

impl JobSpec {
    /// Attempts a job gets unless told otherwise.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

    /// A job due at once, not deduplicated, with the default attempts.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        JobSpec {
            kind: kind.into(),
            dedupe_key: None,
            payload,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            run_after: 0,
        }
    }

    pub fn dedupe(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    pub fn run_after(mut self, at: UnixMillis) -> Self {
        self.run_after = at;
        self
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub workspace: WorkspaceId,
    pub kind: String,
    pub dedupe_key: Option<String>,
    pub payload: serde_json::Value,
    pub state: JobState,
    /// Claims so far (a released claim is not counted).
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_after: UnixMillis,
    /// The worker running it (or that last ran it, once done or dead).
    pub claimed_by: Option<String>,
    /// While running: claimable by another worker from then on.
    pub lease_until: Option<UnixMillis>,
    /// The last failure (or, once dead, why it gave up); empty when none.
    pub last_error: String,
    pub progress_done: i64,
    pub progress_total: i64,
    pub result: Option<serde_json::Value>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
}

/// The durable job queue. Implemented for both backends (see the module doc).
pub trait JobStore: Send + Sync {
    /// Enqueues a job. Idempotent: when an open job (queued or running) of
    /// the same (workspace, kind, dedupe key) exists, its id is returned
    /// instead of a new one. Returns `(id, created)`.
    fn enqueue<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        spec: &'a JobSpec,
        now: UnixMillis,
    ) -> StoreFuture<'a, (i64, bool)>;

    /// Atomically claims up to `limit` due jobs of `kinds` (every kind when
    /// empty), in every workspace, for `worker`: queued jobs with
    /// `run_after <= now` and running jobs whose lease ended (`lease_until
    /// <= now`), earliest `run_after` first. Each is returned `running`,
    /// leased until `now + lease_ms`, its attempt counted. A lapsed job with
    /// no attempt left becomes dead instead (its worker stopped: lease
    /// expired) and is not returned. No lock outlives the call.
    fn claim<'a>(
        &'a self,
        worker: &'a str,
        kinds: &'a [&'a str],
        limit: u32,
        lease_ms: i64,
        now: UnixMillis,
    ) -> StoreFuture<'a, Vec<Job>>;

    /// Extends the lease to `lease_until`. `false` when the job is no longer
    /// this worker's (claimed by another after its lease lapsed, finished).
    fn heartbeat<'a>(
        &'a self,
        id: i64,
        worker: &'a str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> StoreFuture<'a, bool>;

    /// Records progress (`done` of `total`). `false` when not this worker's.
    fn progress<'a>(
        &'a self,
        id: i64,
        worker: &'a str,
        done: i64,
        total: i64,
        now: UnixMillis,
    ) -> StoreFuture<'a, bool>;

    /// Marks the job done with its result. `false` when not this worker's.
    fn complete<'a>(
        &'a self,
        id: i64,
        worker: &'a str,
        result: &'a serde_json::Value,
        now: UnixMillis,
    ) -> StoreFuture<'a, bool>;

    /// A failed attempt: back to queued at `run_after` with `error` as
    /// `last_error`, or dead (reason: the error and the attempts made) when
    /// `attempts >= max_attempts`. `false` when not this worker's.
    fn fail<'a>(
        &'a self,
        id: i64,
        worker: &'a str,
        error: &'a str,
        run_after: UnixMillis,
        now: UnixMillis,
    ) -> StoreFuture<'a, bool>;

    /// Graceful shutdown: back to queued, due now, the attempt not counted.
    /// `false` when not this worker's.
    fn release<'a>(&'a self, id: i64, worker: &'a str, now: UnixMillis) -> StoreFuture<'a, bool>;

    /// A job of the workspace (`None` for a job of another workspace).
    ///
    /// (Not `job`: `Store::job` reads a provider's async job, and a second
    /// `job` on `dyn Store` would make every call of either ambiguous.)
    fn job_by_id<'a>(&'a self, ws: &'a WorkspaceId, id: i64) -> StoreFuture<'a, Option<Job>>;

    /// Jobs of the workspace, in `state` when given, newest first.
    fn jobs<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        state: Option<JobState>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Job>>;

    /// How many jobs of the workspace per (kind, state), ordered by kind
    /// then state (for `enrichd status` and metrics).
    fn job_counts<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> StoreFuture<'a, Vec<(String, JobState, i64)>>;
}

/// The columns a [`JobDbRow`] reads, in table order.
macro_rules! job_columns {
    () => {
        "id, workspace, kind, dedupe_key, payload, state, attempts, max_attempts, run_after, \
         claimed_by, lease_until, last_error, progress_done, progress_total, result, \
         created_at, updated_at, finished_at"
    };
}

/// How many times `enqueue` retries when the open job it collided with
/// finished before it could be read (each retry needs another job of the
/// same key to open and close in between).
const ENQUEUE_TRIES: usize = 8;

/// $1 ws, $2 kind, $3 dedupe key, $4 payload, $5 max_attempts, $6
/// run_after, $7 now. Returns the id when inserted.
const INSERT_JOB: &str = "\
INSERT INTO jobs
    (workspace, kind, dedupe_key, payload, state, attempts, max_attempts, run_after,
     last_error, progress_done, progress_total, created_at, updated_at)
VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, '', 0, 0, $7, $7)
ON CONFLICT (workspace, kind, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state IN ('queued', 'running')
DO NOTHING
RETURNING id";

/// $1 ws, $2 kind, $3 dedupe key.
const OPEN_JOB_BY_KEY: &str = "\
SELECT id FROM jobs
WHERE workspace = $1 AND kind = $2 AND dedupe_key = $3 AND state IN ('queued', 'running')";

/// The `SET` of a claim. $1 worker, $2 lease_until, $3 now.
macro_rules! claim_set {
    () => {
        "UPDATE jobs SET
    state = 'running',
    claimed_by = $1,
    lease_until = $2,
    attempts = attempts + 1,
    last_error = CASE WHEN state = 'running'
        THEN 'worker ' || COALESCE(claimed_by, '?') || ' stopped (lease expired)'
        ELSE last_error END,
    updated_at = $3"
    };
}

/// Which rows are due. $3 now, $4 every kind (bool), $5 kinds (JSON array).
macro_rules! due_where {
    ($kinds:literal) => {
        concat!(
            "WHERE ((state = 'queued' AND run_after <= $3)
        OR (state = 'running' AND lease_until <= $3 AND attempts < max_attempts))
      AND ($4 OR kind IN (",
            $kinds,
            "))
    ORDER BY run_after, id
    LIMIT $6"
        )
    };
}

/// The claim on SQLite: one statement on the single writer. $1 worker, $2
/// lease_until, $3 now, $4 every kind, $5 kinds (JSON), $6 limit.
const CLAIM_SQLITE: &str = concat!(
    claim_set!(),
    "
WHERE id IN (
    SELECT id FROM jobs
    ",
    due_where!("SELECT value FROM json_each($5)"),
    ")
RETURNING ",
    job_columns!()
);

/// The claim on PostgreSQL: the rows are picked and locked, skipping rows
/// another claimer holds, then updated, in one statement. Same parameters.
const CLAIM_PG: &str = concat!(
    "WITH due(job_id) AS MATERIALIZED (
    SELECT id FROM jobs
    ",
    due_where!("SELECT jsonb_array_elements_text(CAST($5 AS TEXT)::jsonb)"),
    "
    FOR UPDATE SKIP LOCKED)
",
    claim_set!(),
    "
FROM due WHERE jobs.id = due.job_id
RETURNING ",
    job_columns!()
);

/// The `SET` that buries a job whose worker stopped at its last attempt. $1 now.
macro_rules! bury_set {
    () => {
        "UPDATE jobs SET
    state = 'dead',
    last_error = 'worker ' || COALESCE(claimed_by, '?') || ' stopped (lease expired) after '
        || CAST(attempts AS TEXT) || ' attempts',
    lease_until = NULL,
    finished_at = $1,
    updated_at = $1"
    };
}

/// Lapsed leases with no attempt left, on SQLite. $1 now.
const BURY_SQLITE: &str = concat!(
    bury_set!(),
    "
WHERE state = 'running' AND lease_until <= $1 AND attempts >= max_attempts"
);

/// The same on PostgreSQL, skipping rows another claimer holds. $1 now.
const BURY_PG: &str = concat!(
    "WITH lapsed(job_id) AS MATERIALIZED (
    SELECT id FROM jobs
    WHERE state = 'running' AND lease_until <= $1 AND attempts >= max_attempts
    FOR UPDATE SKIP LOCKED)
",
    bury_set!(),
    "
FROM lapsed WHERE jobs.id = lapsed.job_id"
);

/// Conditions every call on a claimed job carries: $1 id, $2 worker.
macro_rules! mine {
    () => {
        "
WHERE id = $1 AND claimed_by = $2 AND state = 'running'"
    };
}

/// $3 lease_until, $4 now.
const HEARTBEAT: &str = concat!("UPDATE jobs SET lease_until = $3, updated_at = $4", mine!());

/// $3 done, $4 total, $5 now.
const PROGRESS: &str = concat!(
    "UPDATE jobs SET progress_done = $3, progress_total = $4, updated_at = $5",
    mine!()
);

/// $3 result (JSON), $4 now.
const COMPLETE: &str = concat!(
    "UPDATE jobs SET state = 'done', result = $3, lease_until = NULL, finished_at = $4,
    updated_at = $4",
    mine!()
);

/// $3 error, $4 run_after, $5 now.
const FAIL: &str = concat!(
    "UPDATE jobs SET
    state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
    last_error = CASE WHEN attempts >= max_attempts
        THEN $3 || ' (gave up after ' || CAST(attempts AS TEXT) || ' attempts)'
        ELSE $3 END,
    run_after = CASE WHEN attempts >= max_attempts THEN run_after ELSE $4 END,
    claimed_by = CASE WHEN attempts >= max_attempts THEN claimed_by ELSE NULL END,
    lease_until = NULL,
    finished_at = CASE WHEN attempts >= max_attempts THEN $5 ELSE NULL END,
    updated_at = $5",
    mine!()
);

/// $3 now.
const RELEASE: &str = concat!(
    "UPDATE jobs SET
    state = 'queued',
    attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
    run_after = $3,
    claimed_by = NULL,
    lease_until = NULL,
    updated_at = $3",
    mine!()
);

/// $1 ws, $2 id.
const SELECT_JOB: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE workspace = $1 AND id = $2"
);

/// $1 ws, $2 state (or NULL for all), $3 limit.
const SELECT_JOBS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs
WHERE workspace = $1 AND (CAST($2 AS TEXT) IS NULL OR state = $2)
ORDER BY id DESC
LIMIT $3"
);

/// $1 ws.
const JOB_COUNTS: &str = "\
SELECT kind, state, COUNT(*) AS n FROM jobs
WHERE workspace = $1
GROUP BY kind, state
ORDER BY kind, state";

#[derive(sqlx::FromRow)]
pub(crate) struct JobDbRow {
    id: i64,
    workspace: String,
    kind: String,
    dedupe_key: Option<String>,
    payload: String,
    state: String,
    attempts: i64,
    max_attempts: i64,
    run_after: i64,
    claimed_by: Option<String>,
    lease_until: Option<i64>,
    last_error: String,
    progress_done: i64,
    progress_total: i64,
    result: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

impl JobDbRow {
    fn into_job(self) -> Result<Job, StoreError> {
        let id = self.id;
        let json = |what: &str, text: &str| {
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| corrupt(format!("{what} of job {id}: {e}")))
        };
        let count = |what: &str, n: i64| {
            u32::try_from(n).map_err(|_| corrupt(format!("{what} of job {id}: {n}")))
        };
        Ok(Job {
            id,
            workspace: WorkspaceId(self.workspace),
            kind: self.kind,
            dedupe_key: self.dedupe_key,
            payload: json("payload", &self.payload)?,
            state: JobState::parse(&self.state)
                .ok_or_else(|| corrupt(format!("state of job {id}: `{}`", self.state)))?,
            attempts: count("attempts", self.attempts)?,
            max_attempts: count("max_attempts", self.max_attempts)?,
            run_after: self.run_after,
            claimed_by: self.claimed_by,
            lease_until: self.lease_until,
            last_error: self.last_error,
            progress_done: self.progress_done,
            progress_total: self.progress_total,
            result: self
                .result
                .as_deref()
                .map(|r| json("result", r))
                .transpose()?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobCountDbRow {
    kind: String,
    state: String,
    n: i64,
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt {
        table: "jobs",
        message,
    }
}

fn rows_into_jobs(rows: Vec<JobDbRow>) -> Result<Vec<Job>, StoreError> {
    rows.into_iter().map(JobDbRow::into_job).collect()
}

/// Implements [`JobStore`] for a backend: `$read` is the pool reads use,
/// `$write` the pool (SQLite: the single writer connection) writes use;
/// `$claim` and `$bury` are the backend's row-picking statements.
macro_rules! impl_job_store {
    ($ty:ty, $read:ident, $write:ident, $claim:expr, $bury:expr) => {
        impl $crate::store::jobs::JobStore for $ty {
            fn enqueue<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                spec: &'a JobSpec,
                now: UnixMillis,
            ) -> StoreFuture<'a, (i64, bool)> {
                Box::pin(async move {
                    let payload = spec.payload.to_string();
                    let max_attempts = i64::from(spec.max_attempts.max(1));
                    for _ in 0..ENQUEUE_TRIES {
                        let inserted: Option<i64> = sqlx::query_scalar(INSERT_JOB)
                            .bind(ws.as_str())
                            .bind(spec.kind.as_str())
                            .bind(spec.dedupe_key.as_deref())
                            .bind(payload.as_str())
                            .bind(max_attempts)
                            .bind(spec.run_after)
                            .bind(now)
                            .fetch_optional(&self.$write)
                            .await
                            .map_err(StoreError::db("enqueue job"))?;
                        if let Some(id) = inserted {
                            return Ok((id, true));
                        }
                        // Only a dedupe key conflicts: read the open job
                        // that holds it (on PostgreSQL a concurrent
                        // enqueue's insert has committed by now).
                        let open: Option<i64> = sqlx::query_scalar(OPEN_JOB_BY_KEY)
                            .bind(ws.as_str())
                            .bind(spec.kind.as_str())
                            .bind(spec.dedupe_key.as_deref())
                            .fetch_optional(&self.$write)
                            .await
                            .map_err(StoreError::db("read open job"))?;
                        if let Some(id) = open {
                            return Ok((id, false));
                        }
                        // It finished in between: insert again.
                    }
                    Err(StoreError::Db {
                        op: "enqueue job (the open job of its dedupe key kept finishing)",
                        source: sqlx::Error::RowNotFound,
                    })
                })
            }

            fn claim<'a>(
                &'a self,
                worker: &'a str,
                kinds: &'a [&'a str],
                limit: u32,
                lease_ms: i64,
                now: UnixMillis,
            ) -> StoreFuture<'a, Vec<Job>> {
                Box::pin(async move {
                    sqlx::query($bury)
                        .bind(now)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("bury jobs whose lease lapsed"))?;
                    if limit == 0 {
                        return Ok(Vec::new());
                    }
                    let kinds_json =
                        serde_json::to_string(kinds).map_err(|e| StoreError::Corrupt {
                            table: "jobs",
                            message: format!("job kinds: {e}"),
                        })?;
                    let rows: Vec<JobDbRow> = sqlx::query_as($claim)
                        .bind(worker)
                        .bind(now.saturating_add(lease_ms.max(0)))
                        .bind(now)
                        .bind(kinds.is_empty())
                        .bind(kinds_json)
                        .bind(i64::from(limit))
                        .fetch_all(&self.$write)
                        .await
                        .map_err(read_err("jobs", "claim jobs"))?;
                    let mut jobs = rows_into_jobs(rows)?;
                    jobs.sort_by_key(|j| (j.run_after, j.id));
                    Ok(jobs)
                })
            }

            fn heartbeat<'a>(
                &'a self,
                id: i64,
                worker: &'a str,
                lease_until: UnixMillis,
                now: UnixMillis,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(HEARTBEAT)
                        .bind(id)
                        .bind(worker)
                        .bind(lease_until)
                        .bind(now)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("extend job lease"))?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn progress<'a>(
                &'a self,
                id: i64,
                worker: &'a str,
                done: i64,
                total: i64,
                now: UnixMillis,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let updated = sqlx::query(PROGRESS)
                        .bind(id)
                        .bind(worker)
                        .bind(done)
                        .bind(total)
                        .bind(now)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("record job progress"))?;
                    Ok(updated.rows_affected() == 1)
                })
            }

            fn complete<'a>(
                &'a self,
                id: i64,
                worker: &'a str,
                result: &'a serde_json::Value,
                now: UnixMillis,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(COMPLETE)
                        .bind(id)
                        .bind(worker)
                        .bind(result.to_string())
                        .bind(now)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("complete job"))?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn fail<'a>(
                &'a self,
                id: i64,
                worker: &'a str,
                error: &'a str,
                run_after: UnixMillis,
                now: UnixMillis,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(FAIL)
                        .bind(id)
                        .bind(worker)
                        .bind(error)
                        .bind(run_after)
                        .bind(now)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("fail job"))?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn release<'a>(
                &'a self,
                id: i64,
                worker: &'a str,
                now: UnixMillis,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(RELEASE)
                        .bind(id)
                        .bind(worker)
                        .bind(now)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("release job"))?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn job_by_id<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                id: i64,
            ) -> StoreFuture<'a, Option<Job>> {
                Box::pin(async move {
                    let row: Option<JobDbRow> = sqlx::query_as(SELECT_JOB)
                        .bind(ws.as_str())
                        .bind(id)
                        .fetch_optional(&self.$read)
                        .await
                        .map_err(read_err("jobs", "read job"))?;
                    row.map(JobDbRow::into_job).transpose()
                })
            }

            fn jobs<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                state: Option<JobState>,
                limit: u32,
            ) -> StoreFuture<'a, Vec<Job>> {
                Box::pin(async move {
                    let rows: Vec<JobDbRow> = sqlx::query_as(SELECT_JOBS)
                        .bind(ws.as_str())
                        .bind(state.map(JobState::as_str))
                        .bind(i64::from(limit))
                        .fetch_all(&self.$read)
                        .await
                        .map_err(read_err("jobs", "read jobs"))?;
                    rows_into_jobs(rows)
                })
            }

            fn job_counts<'a>(
                &'a self,
                ws: &'a WorkspaceId,
            ) -> StoreFuture<'a, Vec<(String, JobState, i64)>> {
                Box::pin(async move {
                    let rows: Vec<JobCountDbRow> = sqlx::query_as(JOB_COUNTS)
                        .bind(ws.as_str())
                        .fetch_all(&self.$read)
                        .await
                        .map_err(read_err("jobs", "count jobs"))?;
                    rows.into_iter()
                        .map(|r| {
                            let state = JobState::parse(&r.state).ok_or_else(|| {
                                corrupt(format!("state of {} jobs: `{}`", r.kind, r.state))
                            })?;
                            Ok((r.kind, state, r.n))
                        })
                        .collect()
                })
            }
        }
    };
}

mod imp {
    use super::*;
    impl_job_store!(
        crate::store::sqlite::SqliteStore,
        pool,
        writer,
        CLAIM_SQLITE,
        BURY_SQLITE
    );
    impl_job_store!(
        crate::store::postgres::PgStore,
        pool,
        pool,
        CLAIM_PG,
        BURY_PG
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_state_round_trips() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::Value::String(s.as_str().into()))
            );
        }
        assert_eq!(JobState::parse("pending"), None);
        assert!(JobState::Queued.is_open() && JobState::Running.is_open());
        assert!(!JobState::Done.is_open() && !JobState::Dead.is_open());
    }

    #[test]
    fn job_spec_builder() {
        let spec = JobSpec::new("sync", serde_json::json!({"a": 1}))
            .dedupe("k")
            .max_attempts(3)
            .run_after(42);
        assert_eq!(spec.kind, "sync");
        assert_eq!(spec.dedupe_key.as_deref(), Some("k"));
        assert_eq!((spec.max_attempts, spec.run_after), (3, 42));
    }

    #[test]
    fn claim_statements_read_as_intended() {
        assert!(CLAIM_PG.contains("FOR UPDATE SKIP LOCKED"));
        assert!(BURY_PG.contains("FOR UPDATE SKIP LOCKED"));
        assert!(!CLAIM_SQLITE.contains("FOR UPDATE"));
        assert!(CLAIM_SQLITE.contains("json_each($5)"));
    }
}

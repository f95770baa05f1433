-- The durable job queue. Same shape on PostgreSQL (0003_jobs.sql there).
-- Times are unix milliseconds.
--
-- A job is `queued` (waiting for `run_after`), `running` (claimed by
-- `claimed_by` until `lease_until`; a lease that lapses makes it claimable
-- again), `done` or `dead` (gave up: `last_error` says why). `attempts`
-- counts claims (a graceful release gives its attempt back).
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace      TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    dedupe_key     TEXT,
    payload        TEXT    NOT NULL,             -- JSON
    state          TEXT    NOT NULL,             -- 'queued' | 'running' | 'done' | 'dead'
    attempts       INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL,
    run_after      INTEGER NOT NULL,
    claimed_by     TEXT,
    lease_until    INTEGER,
    last_error     TEXT    NOT NULL DEFAULT '',
    progress_done  INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    result         TEXT,                         -- JSON, once done
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    finished_at    INTEGER
) STRICT;
-- At most one open job per (workspace, kind, dedupe key): what makes
-- `enqueue` idempotent, concurrent enqueues included. A finished job leaves
-- the index, so the same key may be enqueued again.
CREATE UNIQUE INDEX jobs_open_dedupe ON jobs (workspace, kind, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state IN ('queued', 'running');
-- `claim` (across workspaces): due queued jobs, lapsed leases.
CREATE INDEX jobs_due ON jobs (state, run_after);
CREATE INDEX jobs_leases ON jobs (state, lease_until);
-- Listing (newest first) and counting per workspace.
CREATE INDEX jobs_by_workspace ON jobs (workspace, state, id);
CREATE INDEX jobs_by_kind ON jobs (workspace, kind, state);

-- The durable job queue. Same shape as SQLite (0003_jobs.sql there).
-- Times are unix milliseconds.
--
-- A job is `queued` (waiting for `run_after`), `running` (claimed by
-- `claimed_by` until `lease_until`; a lease that lapses makes it claimable
-- again), `done` or `dead` (gave up: `last_error` says why). `attempts`
-- counts claims (a graceful release gives its attempt back).
CREATE TABLE jobs (
    id             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace      TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    dedupe_key     TEXT,
    payload        TEXT    NOT NULL,             -- JSON
    state          TEXT    NOT NULL,             -- 'queued' | 'running' | 'done' | 'dead'
    attempts       BIGINT  NOT NULL DEFAULT 0,
    max_attempts   BIGINT  NOT NULL,
    run_after      BIGINT  NOT NULL,
    claimed_by     TEXT,
    lease_until    BIGINT,
    last_error     TEXT    NOT NULL DEFAULT '',
    progress_done  BIGINT  NOT NULL DEFAULT 0,
    progress_total BIGINT  NOT NULL DEFAULT 0,
    result         TEXT,                         -- JSON, once done
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    finished_at    BIGINT
);
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

-- enrichd schema, SQLite flavour. Every table is keyed or indexed by
-- workspace first and every query is scoped by workspace. Times are unix
-- milliseconds (INTEGER), credits and milli-credits are INTEGER.
-- STRICT tables: a value of the wrong type is refused at write time.

CREATE TABLE leads (
    workspace  TEXT    NOT NULL,
    lead_id    TEXT    NOT NULL,
    fields     TEXT    NOT NULL,              -- JSON object: the CRM fields
    icp_score  REAL    NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workspace, lead_id)
) STRICT;

CREATE TABLE channel_values (
    workspace    TEXT    NOT NULL,
    lead_id      TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    value        TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    verification TEXT    NOT NULL,
    found_at     INTEGER NOT NULL,
    verified_at  INTEGER,
    PRIMARY KEY (workspace, lead_id, channel)
) STRICT;

-- Audit of every provider attempt (append only).
CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace     TEXT    NOT NULL,
    run_id        TEXT    NOT NULL,
    lead_id       TEXT    NOT NULL,
    channel       TEXT    NOT NULL,
    provider      TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    detail        TEXT    NOT NULL,
    value         TEXT,
    provider_cost INTEGER NOT NULL,
    credits       INTEGER NOT NULL,
    http_status   INTEGER,
    tries         INTEGER NOT NULL,
    latency_ms    INTEGER NOT NULL,
    at            INTEGER NOT NULL
) STRICT;
CREATE INDEX attempts_by_lead ON attempts (workspace, lead_id, at, id);

-- Customer credits. UNIQUE (workspace, key) is what makes a charge exactly once.
CREATE TABLE ledger (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace   TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    lead_id     TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    credits     INTEGER NOT NULL,
    period      TEXT    NOT NULL,
    reservation INTEGER,
    at          INTEGER NOT NULL,
    UNIQUE (workspace, key)
) STRICT;
CREATE INDEX ledger_by_time ON ledger (workspace, at, id);

-- Provider spend (milli-credits), idempotent under (workspace, key).
CREATE TABLE spend (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    provider  TEXT    NOT NULL,
    account   TEXT    NOT NULL,
    lead_id   TEXT,
    amount    INTEGER NOT NULL,
    detail    TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    UNIQUE (workspace, key)
) STRICT;
CREATE INDEX spend_by_time ON spend (workspace, at, id);

CREATE TABLE lead_status (
    workspace         TEXT    NOT NULL,
    lead_id           TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    enrichment_status TEXT,
    reason            TEXT    NOT NULL,
    retry_at          INTEGER,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (workspace, lead_id)
) STRICT;
CREATE INDEX lead_status_by_state ON lead_status (workspace, state, retry_at);

CREATE TABLE budget_periods (
    workspace     TEXT    NOT NULL,
    period        TEXT    NOT NULL,
    limit_credits INTEGER,
    charged       INTEGER NOT NULL DEFAULT 0,
    reserved      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace, period)
) STRICT;

CREATE TABLE reservations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace  TEXT    NOT NULL,
    period     TEXT    NOT NULL,
    amount     INTEGER NOT NULL,
    remaining  INTEGER NOT NULL,
    holder     TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('open', 'settled')),
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX reservations_open ON reservations (workspace, state, expires_at);

CREATE TABLE provider_jobs (
    workspace    TEXT    NOT NULL,
    account      TEXT    NOT NULL,
    job_id       TEXT    NOT NULL,
    token        TEXT    NOT NULL UNIQUE,
    provider     TEXT    NOT NULL,
    items        TEXT    NOT NULL,              -- JSON array of {lead_id, channels}
    run_id       TEXT    NOT NULL,
    submitted_at INTEGER NOT NULL,
    deadline     INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    result       BLOB,
    PRIMARY KEY (workspace, account, job_id)
) STRICT;
CREATE INDEX provider_jobs_by_state ON provider_jobs (workspace, state);

-- enrichd schema, PostgreSQL flavour. Every table is keyed or indexed by
-- workspace first and every query is scoped by workspace. Times are unix
-- milliseconds (BIGINT), credits and milli-credits are BIGINT.
-- Lead ids use the "C" collation so that ordering by lead id is byte order,
-- as on SQLite, whatever the database's locale.

CREATE TABLE leads (
    workspace  TEXT             NOT NULL,
    lead_id    TEXT COLLATE "C" NOT NULL,
    fields     TEXT             NOT NULL,     -- JSON object: the CRM fields
    icp_score  DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at BIGINT           NOT NULL,
    PRIMARY KEY (workspace, lead_id)
);

CREATE TABLE channel_values (
    workspace    TEXT             NOT NULL,
    lead_id      TEXT COLLATE "C" NOT NULL,
    channel      TEXT             NOT NULL,
    value        TEXT             NOT NULL,
    source       TEXT             NOT NULL,
    verification TEXT             NOT NULL,
    found_at     BIGINT           NOT NULL,
    verified_at  BIGINT,
    PRIMARY KEY (workspace, lead_id, channel)
);

-- Audit of every provider attempt (append only).
CREATE TABLE attempts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace     TEXT             NOT NULL,
    run_id        TEXT             NOT NULL,
    lead_id       TEXT COLLATE "C" NOT NULL,
    channel       TEXT             NOT NULL,
    provider      TEXT             NOT NULL,
    account       TEXT             NOT NULL,
    outcome       TEXT             NOT NULL,
    detail        TEXT             NOT NULL,
    value         TEXT,
    provider_cost BIGINT           NOT NULL,
    credits       BIGINT           NOT NULL,
    http_status   BIGINT,
    tries         BIGINT           NOT NULL,
    latency_ms    BIGINT           NOT NULL,
    at            BIGINT           NOT NULL
);
CREATE INDEX attempts_by_lead ON attempts (workspace, lead_id, at, id);

-- Customer credits. UNIQUE (workspace, key) is what makes a charge exactly once.
CREATE TABLE ledger (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace   TEXT             NOT NULL,
    key         TEXT             NOT NULL,
    lead_id     TEXT COLLATE "C" NOT NULL,
    channel     TEXT             NOT NULL,
    value       TEXT             NOT NULL,
    source      TEXT             NOT NULL,
    credits     BIGINT           NOT NULL,
    period      TEXT             NOT NULL,
    reservation BIGINT,
    at          BIGINT           NOT NULL,
    UNIQUE (workspace, key)
);
CREATE INDEX ledger_by_time ON ledger (workspace, at, id);

-- Provider spend (milli-credits), idempotent under (workspace, key).
CREATE TABLE spend (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace TEXT             NOT NULL,
    key       TEXT             NOT NULL,
    provider  TEXT             NOT NULL,
    account   TEXT             NOT NULL,
    lead_id   TEXT COLLATE "C",
    amount    BIGINT           NOT NULL,
    detail    TEXT             NOT NULL,
    at        BIGINT           NOT NULL,
    UNIQUE (workspace, key)
);
CREATE INDEX spend_by_time ON spend (workspace, at, id);

CREATE TABLE lead_status (
    workspace         TEXT             NOT NULL,
    lead_id           TEXT COLLATE "C" NOT NULL,
    state             TEXT             NOT NULL,
    enrichment_status TEXT,
    reason            TEXT             NOT NULL,
    retry_at          BIGINT,
    updated_at        BIGINT           NOT NULL,
    PRIMARY KEY (workspace, lead_id)
);
CREATE INDEX lead_status_by_state ON lead_status (workspace, state, retry_at);

CREATE TABLE budget_periods (
    workspace     TEXT   NOT NULL,
    period        TEXT   NOT NULL,
    limit_credits BIGINT,
    charged       BIGINT NOT NULL DEFAULT 0,
    reserved      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace, period)
);

CREATE TABLE reservations (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace  TEXT   NOT NULL,
    period     TEXT   NOT NULL,
    amount     BIGINT NOT NULL,
    remaining  BIGINT NOT NULL,
    holder     TEXT   NOT NULL,
    state      TEXT   NOT NULL CHECK (state IN ('open', 'settled')),
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX reservations_open ON reservations (workspace, state, expires_at);

CREATE TABLE provider_jobs (
    workspace    TEXT   NOT NULL,
    account      TEXT   NOT NULL,
    job_id       TEXT   NOT NULL,
    token        TEXT   NOT NULL UNIQUE,
    provider     TEXT   NOT NULL,
    items        TEXT   NOT NULL,               -- JSON array of {lead_id, channels}
    run_id       TEXT   NOT NULL,
    submitted_at BIGINT NOT NULL,
    deadline     BIGINT NOT NULL,
    state        TEXT   NOT NULL,
    result       BYTEA,
    PRIMARY KEY (workspace, account, job_id)
);
CREATE INDEX provider_jobs_by_state ON provider_jobs (workspace, state);

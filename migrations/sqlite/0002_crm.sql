-- CRM connections, sync state, company cache, change notifications and
-- write-back bookkeeping. Same shape on PostgreSQL (0002_crm.sql there).

-- One connection per workspace and CRM. Tokens are sealed (XChaCha20-Poly1305,
-- AAD bound to the row) and never stored in clear.
CREATE TABLE crm_connections (
    workspace      TEXT    NOT NULL,
    crm            TEXT    NOT NULL,
    account        TEXT    NOT NULL,             -- HubSpot portal (hub) id
    auth           TEXT    NOT NULL,             -- 'oauth' | 'private_app'
    sealed_access  TEXT,
    sealed_refresh TEXT,
    expires_at     INTEGER,                      -- access token expiry (unix ms)
    scopes         TEXT    NOT NULL,             -- JSON array
    state          TEXT    NOT NULL,             -- 'connected' | 'reconnect_required'
    reason         TEXT    NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (workspace, crm)
) STRICT;

-- Per object: the incremental watermark (never past a sync's start) and the
-- backfill's progress.
CREATE TABLE crm_sync (
    workspace     TEXT    NOT NULL,
    crm           TEXT    NOT NULL,
    object        TEXT    NOT NULL,
    watermark     INTEGER,
    backfill_done INTEGER NOT NULL DEFAULT 0,
    last_sync_at  INTEGER,
    last_error    TEXT,
    PRIMARY KEY (workspace, crm, object)
) STRICT;

-- Company fields providers need (name, domain), read in batches.
CREATE TABLE crm_companies (
    workspace  TEXT    NOT NULL,
    crm        TEXT    NOT NULL,
    company_id TEXT    NOT NULL,
    name       TEXT,
    domain     TEXT,
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (workspace, crm, company_id)
) STRICT;

-- Change notifications, recorded before they are acknowledged; the primary
-- key is what makes a redelivery a duplicate.
CREATE TABLE crm_events (
    workspace   TEXT    NOT NULL,
    crm         TEXT    NOT NULL,
    dedupe_key  TEXT    NOT NULL,
    lead_id     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    property    TEXT,
    value       TEXT,
    occurred_at INTEGER NOT NULL,
    payload     TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    state       TEXT    NOT NULL,                -- 'pending' | 'done' | 'ignored'
    reason      TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (workspace, crm, dedupe_key)
) STRICT;
CREATE INDEX crm_events_pending ON crm_events (workspace, crm, state, received_at);

-- The last value enrichd wrote to each CRM field of each lead: what
-- `if_enriched_by_us` compares with, and how enrichd recognises its own
-- writes coming back as change notifications.
CREATE TABLE crm_written (
    workspace  TEXT    NOT NULL,
    lead_id    TEXT    NOT NULL,
    field      TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    written_at INTEGER NOT NULL,
    PRIMARY KEY (workspace, lead_id, field)
) STRICT;

-- Write-back outcome per lead: failures are reported with their reason.
CREATE TABLE crm_writes (
    workspace  TEXT    NOT NULL,
    lead_id    TEXT    NOT NULL,
    state      TEXT    NOT NULL,                 -- 'done' | 'failed'
    reason     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workspace, lead_id)
) STRICT;
CREATE INDEX crm_writes_by_state ON crm_writes (workspace, state);

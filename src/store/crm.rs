//! The CRM half of the store: connections (sealed tokens), sync watermarks,
//! the company cache, change notifications and write-back bookkeeping.
//!
//! Every statement here is the same text on SQLite and PostgreSQL (`$N`
//! placeholders, `ON CONFLICT`) except how a JSON array of ids is expanded,
//! so one macro implements [`CrmStore`] for both backends. SQLite writes go through its single writer connection.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::core::lead::{Lead, LeadId, WorkspaceId};
use crate::core::value::UnixMillis;
use crate::crm::{CrmEvent, Recorded};

use super::{StoreError, StoreFuture};

/// Whether a CRM connection can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    Connected,
    /// The grant was revoked or is invalid: a person must run `enrichd
    /// connect` again. Nothing retries until then.
    ReconnectRequired,
}

impl ConnectionState {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connected => "connected",
            ConnectionState::ReconnectRequired => "reconnect_required",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "connected" => Some(ConnectionState::Connected),
            "reconnect_required" => Some(ConnectionState::ReconnectRequired),
            _ => None,
        }
    }
}

/// A stored CRM connection. Tokens are sealed text (see `crate::crypto`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub crm: String,
    /// HubSpot portal (hub) id.
    pub account: String,
    /// "oauth" or "private_app".
    pub auth: String,
    pub sealed_access: Option<String>,
    pub sealed_refresh: Option<String>,
    pub expires_at: Option<UnixMillis>,
    pub scopes: Vec<String>,
    pub state: ConnectionState,
    pub reason: String,
    pub updated_at: UnixMillis,
}

/// Sync progress of one CRM object type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// Every change up to here has been read (never past a sync's start).
    pub watermark: Option<UnixMillis>,
    pub backfill_done: bool,
    pub last_sync_at: Option<UnixMillis>,
    pub last_error: Option<String>,
}

/// Company fields providers need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyRow {
    pub company_id: String,
    pub name: Option<String>,
    pub domain: Option<String>,
    pub fetched_at: UnixMillis,
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    Pending,
    Done,
    Ignored,
}

impl EventState {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Done => "done",
            EventState::Ignored => "ignored",
        }
    }
}

/// A recorded notification and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event: CrmEvent,
    pub state: String,
    pub reason: String,
    pub received_at: UnixMillis,
}

/// A field value enrichd wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub lead_id: LeadId,
    pub field: String,
    pub value: String,
}

/// The write-back outcome of one lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    pub lead_id: LeadId,
    /// "done" or "failed".
    pub state: String,
    pub reason: String,
    pub attempts: u32,
}

/// Per lead, per field: the last value enrichd wrote.
pub type WrittenByLead = HashMap<LeadId, BTreeMap<String, String>>;

pub trait CrmStore: Send + Sync {
    fn connection<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        crm: &'a str,
    ) -> StoreFuture<'a, Option<ConnectionRow>>;
    fn save_connection<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        row: &'a ConnectionRow,
    ) -> StoreFuture<'a, ()>;
    /// Marks the connection; tokens stay as they are.
    fn set_connection_state<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        crm: &'a str,
        state: ConnectionState,
        reason: &'a str,
        now: UnixMillis,
    ) -> StoreFuture<'a, ()>;

    fn sync_state<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        crm: &'a str,
        object: &'a str,
    ) -> StoreFuture<'a, SyncState>;
    fn save_sync_state<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        crm: &'a str,
        object: &'a str,
        state: &'a SyncState,
    ) -> StoreFuture<'a, ()>;

    fn companies<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        crm: &'a str,
        ids: &'a [String],
    ) -> StoreFuture<'a, HashMap<String, CompanyRow>>;
    fn upsert_companies<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        crm: &'a str,
        rows: &'a [CompanyRow],
    ) -> StoreFuture<'a, ()>;

    /// Stores notifications not seen before (by dedupe key) as pending.
    fn record_events<'a>(
        &'a self,
        events: &'a [CrmEvent],
        now: UnixMillis,
    ) -> StoreFuture<'a, Recorded>;
    fn pending_events<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        crm: &'a str,
        limit: i64,
    ) -> StoreFuture<'a, Vec<CrmEvent>>;
    fn events<'a>(&'a self, ws: &'a WorkspaceId, crm: &'a str)
    -> StoreFuture<'a, Vec<StoredEvent>>;
    fn finish_events<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        crm: &'a str,
        done: &'a [(String, EventState, String)],
    ) -> StoreFuture<'a, ()>;

    fn written<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        ids: &'a [LeadId],
    ) -> StoreFuture<'a, WrittenByLead>;
    /// Records values written and the per-lead outcomes, in one transaction.
    fn record_writes<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        written: &'a [Written],
        outcomes: &'a [WriteOutcome],
        now: UnixMillis,
    ) -> StoreFuture<'a, ()>;
    fn write_outcomes<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<WriteOutcome>>;

    /// Up to `limit` stored leads with ids after `after`, in id order (the
    /// preview pages through a workspace with it).
    fn lead_page<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        after: Option<&'a LeadId>,
        limit: i64,
    ) -> StoreFuture<'a, Vec<Lead>>;
    /// The stored leads among `ids`, in id order (unknown ids are left out).
    fn leads_by_ids<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        ids: &'a [LeadId],
    ) -> StoreFuture<'a, Vec<Lead>>;
    /// Attempts per provider, channel and outcome: the provider statistics
    /// behind a preview's estimate.
    fn attempt_counts<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<AttemptCount>>;
    /// Leads per enrichment status (`none` for a lead in no audience), one
    /// grouped statement: what `/metrics` shows.
    fn status_counts<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<(String, i64)>>;
}

/// How often a provider answered a channel one way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptCount {
    pub provider: String,
    pub channel: String,
    pub outcome: String,
    pub count: i64,
}

const SELECT_CONNECTION: &str = "\
SELECT account, auth, sealed_access, sealed_refresh, expires_at, scopes, state, reason, updated_at
FROM crm_connections WHERE workspace = $1 AND crm = $2";

const UPSERT_CONNECTION: &str = "\
INSERT INTO crm_connections
    (workspace, crm, account, auth, sealed_access, sealed_refresh, expires_at, scopes, state,
     reason, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (workspace, crm) DO UPDATE SET
    account = excluded.account, auth = excluded.auth, sealed_access = excluded.sealed_access,
    sealed_refresh = excluded.sealed_refresh, expires_at = excluded.expires_at,
    scopes = excluded.scopes, state = excluded.state, reason = excluded.reason,
    updated_at = excluded.updated_at";

const SET_CONNECTION_STATE: &str = "\
UPDATE crm_connections SET state = $3, reason = $4, updated_at = $5
WHERE workspace = $1 AND crm = $2";

const SELECT_SYNC: &str = "\
SELECT watermark, backfill_done, last_sync_at, last_error
FROM crm_sync WHERE workspace = $1 AND crm = $2 AND object = $3";

pub(super) const UPSERT_SYNC: &str = "\
INSERT INTO crm_sync (workspace, crm, object, watermark, backfill_done, last_sync_at, last_error)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (workspace, crm, object) DO UPDATE SET
    watermark = excluded.watermark, backfill_done = excluded.backfill_done,
    last_sync_at = excluded.last_sync_at, last_error = excluded.last_error";

/// Companies by id: $1 ws, $2 crm, $3 a JSON array of ids (expanded by
/// the backend's JSON function, so one statement reads a whole batch).
const SELECT_COMPANIES_SQLITE: &str = "\
SELECT company_id, name, domain, fetched_at FROM crm_companies
WHERE workspace = $1 AND crm = $2 AND company_id IN (SELECT value FROM json_each($3))";
const SELECT_COMPANIES_PG: &str = "\
SELECT company_id, name, domain, fetched_at FROM crm_companies
WHERE workspace = $1 AND crm = $2
  AND company_id IN (SELECT jsonb_array_elements_text(CAST($3 AS TEXT)::jsonb))";

const UPSERT_COMPANY: &str = "\
INSERT INTO crm_companies (workspace, crm, company_id, name, domain, fetched_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (workspace, crm, company_id) DO UPDATE SET
    name = excluded.name, domain = excluded.domain, fetched_at = excluded.fetched_at";

const INSERT_EVENT: &str = "\
INSERT INTO crm_events
    (workspace, crm, dedupe_key, lead_id, kind, property, value, occurred_at, payload,
     received_at, state, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', '')
ON CONFLICT (workspace, crm, dedupe_key) DO NOTHING";

const PENDING_EVENTS: &str = "\
SELECT workspace, crm, dedupe_key, lead_id, kind, property, value, occurred_at, payload,
       received_at, state, reason
FROM crm_events WHERE workspace = $1 AND crm = $2 AND state = 'pending'
ORDER BY received_at, dedupe_key LIMIT $3";

const ALL_EVENTS: &str = "\
SELECT workspace, crm, dedupe_key, lead_id, kind, property, value, occurred_at, payload,
       received_at, state, reason
FROM crm_events WHERE workspace = $1 AND crm = $2
ORDER BY received_at, dedupe_key";

const FINISH_EVENT: &str = "\
UPDATE crm_events SET state = $4, reason = $5
WHERE workspace = $1 AND crm = $2 AND dedupe_key = $3";

/// What enrichd wrote: $1 ws, $2 a JSON array of lead ids.
const SELECT_WRITTEN_SQLITE: &str = "\
SELECT lead_id, field, value FROM crm_written
WHERE workspace = $1 AND lead_id IN (SELECT value FROM json_each($2))";
const SELECT_WRITTEN_PG: &str = "\
SELECT lead_id, field, value FROM crm_written
WHERE workspace = $1 AND lead_id IN (SELECT jsonb_array_elements_text(CAST($2 AS TEXT)::jsonb))";

/// $1 ws, $2 after (exclusive, '' for the start), $3 limit.
const LEAD_PAGE: &str = "\
SELECT lead_id, fields FROM leads WHERE workspace = $1 AND lead_id > $2
ORDER BY lead_id LIMIT $3";
const LEADS_BY_IDS_SQLITE: &str = "\
SELECT lead_id, fields FROM leads
WHERE workspace = $1 AND lead_id IN (SELECT value FROM json_each($2)) ORDER BY lead_id";
const LEADS_BY_IDS_PG: &str = "\
SELECT lead_id, fields FROM leads
WHERE workspace = $1 AND lead_id IN (SELECT jsonb_array_elements_text(CAST($2 AS TEXT)::jsonb))
ORDER BY lead_id";
const ATTEMPT_COUNTS: &str = "\
SELECT provider, channel, outcome, COUNT(*) AS count FROM attempts
WHERE workspace = $1 GROUP BY provider, channel, outcome ORDER BY provider, channel, outcome";

const STATUS_COUNTS: &str = "\
SELECT COALESCE(enrichment_status, 'none') AS status, COUNT(*) AS count FROM lead_status
WHERE workspace = $1 GROUP BY COALESCE(enrichment_status, 'none') ORDER BY 1";

/// Ids per statement for the batched reads.
const IDS_PER_QUERY: usize = 500;

pub(super) const UPSERT_WRITTEN: &str = "\
INSERT INTO crm_written (workspace, lead_id, field, value, written_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (workspace, lead_id, field) DO UPDATE SET
    value = excluded.value, written_at = excluded.written_at";

pub(super) const UPSERT_WRITE_OUTCOME: &str = "\
INSERT INTO crm_writes (workspace, lead_id, state, reason, attempts, updated_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (workspace, lead_id) DO UPDATE SET
    state = excluded.state, reason = excluded.reason, attempts = excluded.attempts,
    updated_at = excluded.updated_at";

const SELECT_WRITE_OUTCOMES: &str = "\
SELECT lead_id, state, reason, attempts FROM crm_writes WHERE workspace = $1 ORDER BY lead_id";

#[derive(sqlx::FromRow)]
pub(crate) struct ConnectionDbRow {
    account: String,
    auth: String,
    sealed_access: Option<String>,
    sealed_refresh: Option<String>,
    expires_at: Option<i64>,
    scopes: String,
    state: String,
    reason: String,
    updated_at: i64,
}

impl ConnectionDbRow {
    fn into_row(self, crm: &str) -> Result<ConnectionRow, StoreError> {
        const T: &str = "crm_connections";
        let scopes: Vec<String> = serde_json::from_str(&self.scopes)
            .map_err(|e| corrupt(T, format!("scopes of the {crm} connection: {e}")))?;
        let state = ConnectionState::parse(&self.state)
            .ok_or_else(|| corrupt(T, format!("unknown connection state `{}`", self.state)))?;
        Ok(ConnectionRow {
            crm: crm.to_string(),
            account: self.account,
            auth: self.auth,
            sealed_access: self.sealed_access,
            sealed_refresh: self.sealed_refresh,
            expires_at: self.expires_at,
            scopes,
            state,
            reason: self.reason,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SyncDbRow {
    watermark: Option<i64>,
    backfill_done: bool,
    last_sync_at: Option<i64>,
    last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct CompanyDbRow {
    company_id: String,
    name: Option<String>,
    domain: Option<String>,
    fetched_at: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventDbRow {
    workspace: String,
    crm: String,
    dedupe_key: String,
    lead_id: String,
    kind: String,
    property: Option<String>,
    value: Option<String>,
    occurred_at: i64,
    payload: String,
    received_at: i64,
    state: String,
    reason: String,
}

impl EventDbRow {
    fn into_stored(self) -> Result<StoredEvent, StoreError> {
        let payload = serde_json::from_str(&self.payload).map_err(|e| {
            corrupt(
                "crm_events",
                format!("payload of event {}: {e}", self.dedupe_key),
            )
        })?;
        Ok(StoredEvent {
            event: CrmEvent {
                workspace: WorkspaceId(self.workspace),
                crm: self.crm,
                dedupe_key: self.dedupe_key,
                lead_id: LeadId(self.lead_id),
                kind: self.kind,
                property: self.property,
                value: self.value,
                occurred_at: self.occurred_at,
                payload,
            },
            state: self.state,
            reason: self.reason,
            received_at: self.received_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct WrittenDbRow {
    lead_id: String,
    field: String,
    value: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttemptCountDbRow {
    provider: String,
    channel: String,
    outcome: String,
    count: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct WriteOutcomeDbRow {
    lead_id: String,
    state: String,
    reason: String,
    attempts: i64,
}

fn corrupt(table: &'static str, message: String) -> StoreError {
    StoreError::Corrupt { table, message }
}

/// Implements [`CrmStore`] for a backend: `$read` is the pool reads use,
/// `$write` the pool (or single writer connection) writes use; the two
/// batched reads take the backend's statement (JSON expansion differs).
/// The `crm_sync` upsert of a [`SyncState`], bound alike on both backends
/// (the plain and the fenced save run it).
macro_rules! sync_state_query {
    ($ws:expr, $crm:expr, $object:expr, $state:expr) => {
        sqlx::query($crate::store::crm::UPSERT_SYNC)
            .bind($ws.as_str())
            .bind($crm)
            .bind($object)
            .bind($state.watermark)
            .bind($state.backfill_done)
            .bind($state.last_sync_at)
            .bind($state.last_error.as_deref())
    };
}

/// Records written values and write outcomes in the transaction `$tx`
/// (the plain and the fenced `record_writes` run it).
macro_rules! record_writes_in {
    ($tx:expr, $ws:expr, $written:expr, $outcomes:expr, $now:expr) => {
        for w in $written {
            sqlx::query($crate::store::crm::UPSERT_WRITTEN)
                .bind($ws.as_str())
                .bind(w.lead_id.as_str())
                .bind(w.field.as_str())
                .bind(w.value.as_str())
                .bind($now)
                .execute(&mut *$tx)
                .await
                .map_err($crate::store::StoreError::db("record writes"))?;
        }
        for o in $outcomes {
            sqlx::query($crate::store::crm::UPSERT_WRITE_OUTCOME)
                .bind($ws.as_str())
                .bind(o.lead_id.as_str())
                .bind(o.state.as_str())
                .bind(o.reason.as_str())
                .bind(i64::from(o.attempts))
                .bind($now)
                .execute(&mut *$tx)
                .await
                .map_err($crate::store::StoreError::db("record writes"))?;
        }
    };
}
pub(super) use {record_writes_in, sync_state_query};

macro_rules! impl_crm_store {
    ($ty:ty, $read:ident, $write:ident, $companies_sql:expr, $written_sql:expr, $leads_sql:expr) => {
        impl $crate::store::crm::CrmStore for $ty {
            fn connection<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                crm: &'a str,
            ) -> StoreFuture<'a, Option<ConnectionRow>> {
                Box::pin(async move {
                    let row: Option<ConnectionDbRow> = sqlx::query_as(SELECT_CONNECTION)
                        .bind(ws.as_str())
                        .bind(crm)
                        .fetch_optional(&self.$read)
                        .await
                        .map_err(StoreError::db("read crm connection"))?;
                    row.map(|r| r.into_row(crm)).transpose()
                })
            }

            fn save_connection<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                row: &'a ConnectionRow,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let scopes = serde_json::to_string(&row.scopes).unwrap_or_else(|_| "[]".into());
                    sqlx::query(UPSERT_CONNECTION)
                        .bind(ws.as_str())
                        .bind(row.crm.as_str())
                        .bind(row.account.as_str())
                        .bind(row.auth.as_str())
                        .bind(row.sealed_access.as_deref())
                        .bind(row.sealed_refresh.as_deref())
                        .bind(row.expires_at)
                        .bind(scopes)
                        .bind(row.state.as_str())
                        .bind(row.reason.as_str())
                        .bind(row.updated_at)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("save crm connection"))?;
                    Ok(())
                })
            }

            fn set_connection_state<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                crm: &'a str,
                state: ConnectionState,
                reason: &'a str,
                now: UnixMillis,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(SET_CONNECTION_STATE)
                        .bind(ws.as_str())
                        .bind(crm)
                        .bind(state.as_str())
                        .bind(reason)
                        .bind(now)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("mark crm connection"))?;
                    Ok(())
                })
            }

            fn sync_state<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                crm: &'a str,
                object: &'a str,
            ) -> StoreFuture<'a, SyncState> {
                Box::pin(async move {
                    let row: Option<SyncDbRow> = sqlx::query_as(SELECT_SYNC)
                        .bind(ws.as_str())
                        .bind(crm)
                        .bind(object)
                        .fetch_optional(&self.$read)
                        .await
                        .map_err(StoreError::db("read sync state"))?;
                    Ok(row
                        .map(|r| SyncState {
                            watermark: r.watermark,
                            backfill_done: r.backfill_done,
                            last_sync_at: r.last_sync_at,
                            last_error: r.last_error,
                        })
                        .unwrap_or_default())
                })
            }

            fn save_sync_state<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                crm: &'a str,
                object: &'a str,
                state: &'a SyncState,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sync_state_query!(ws, crm, object, state)
                        .execute(&self.$write)
                        .await
                        .map_err(StoreError::db("save sync state"))?;
                    Ok(())
                })
            }

            fn companies<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                crm: &'a str,
                ids: &'a [String],
            ) -> StoreFuture<'a, HashMap<String, CompanyRow>> {
                Box::pin(async move {
                    let mut out = HashMap::with_capacity(ids.len());
                    for chunk in ids.chunks(IDS_PER_QUERY) {
                        let list = serde_json::to_string(chunk).unwrap_or_else(|_| "[]".into());
                        let rows: Vec<CompanyDbRow> = sqlx::query_as($companies_sql)
                            .bind(ws.as_str())
                            .bind(crm)
                            .bind(list)
                            .fetch_all(&self.$read)
                            .await
                            .map_err(StoreError::db("read companies"))?;
                        for r in rows {
                            out.insert(
                                r.company_id.clone(),
                                CompanyRow {
                                    company_id: r.company_id,
                                    name: r.name,
                                    domain: r.domain,
                                    fetched_at: r.fetched_at,
                                },
                            );
                        }
                    }
                    Ok(out)
                })
            }

            fn upsert_companies<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                crm: &'a str,
                rows: &'a [CompanyRow],
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    if rows.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self
                        .$write
                        .begin()
                        .await
                        .map_err(StoreError::db("save companies"))?;
                    for r in rows {
                        sqlx::query(UPSERT_COMPANY)
                            .bind(ws.as_str())
                            .bind(crm)
                            .bind(r.company_id.as_str())
                            .bind(r.name.as_deref())
                            .bind(r.domain.as_deref())
                            .bind(r.fetched_at)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::db("save companies"))?;
                    }
                    tx.commit()
                        .await
                        .map_err(StoreError::db("save companies"))?;
                    Ok(())
                })
            }

            fn record_events<'a>(
                &'a self,
                events: &'a [CrmEvent],
                now: UnixMillis,
            ) -> StoreFuture<'a, Recorded> {
                Box::pin(async move {
                    let mut recorded = Recorded::default();
                    if events.is_empty() {
                        return Ok(recorded);
                    }
                    let mut tx = self
                        .$write
                        .begin()
                        .await
                        .map_err(StoreError::db("record events"))?;
                    for e in events {
                        let payload = e.payload.to_string();
                        let done = sqlx::query(INSERT_EVENT)
                            .bind(e.workspace.as_str())
                            .bind(e.crm.as_str())
                            .bind(e.dedupe_key.as_str())
                            .bind(e.lead_id.as_str())
                            .bind(e.kind.as_str())
                            .bind(e.property.as_deref())
                            .bind(e.value.as_deref())
                            .bind(e.occurred_at)
                            .bind(payload)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::db("record events"))?;
                        if done.rows_affected() == 1 {
                            recorded.inserted += 1;
                        } else {
                            recorded.duplicates += 1;
                        }
                    }
                    tx.commit().await.map_err(StoreError::db("record events"))?;
                    Ok(recorded)
                })
            }

            fn pending_events<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                crm: &'a str,
                limit: i64,
            ) -> StoreFuture<'a, Vec<CrmEvent>> {
                Box::pin(async move {
                    let rows: Vec<EventDbRow> = sqlx::query_as(PENDING_EVENTS)
                        .bind(ws.as_str())
                        .bind(crm)
                        .bind(limit)
                        .fetch_all(&self.$read)
                        .await
                        .map_err(StoreError::db("read pending events"))?;
                    rows.into_iter()
                        .map(|r| r.into_stored().map(|s| s.event))
                        .collect()
                })
            }

            fn events<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                crm: &'a str,
            ) -> StoreFuture<'a, Vec<StoredEvent>> {
                Box::pin(async move {
                    let rows: Vec<EventDbRow> = sqlx::query_as(ALL_EVENTS)
                        .bind(ws.as_str())
                        .bind(crm)
                        .fetch_all(&self.$read)
                        .await
                        .map_err(StoreError::db("read events"))?;
                    rows.into_iter().map(EventDbRow::into_stored).collect()
                })
            }

            fn finish_events<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                crm: &'a str,
                done: &'a [(String, EventState, String)],
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    if done.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self
                        .$write
                        .begin()
                        .await
                        .map_err(StoreError::db("finish events"))?;
                    for (key, state, reason) in done {
                        sqlx::query(FINISH_EVENT)
                            .bind(ws.as_str())
                            .bind(crm)
                            .bind(key.as_str())
                            .bind(state.as_str())
                            .bind(reason.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::db("finish events"))?;
                    }
                    tx.commit().await.map_err(StoreError::db("finish events"))?;
                    Ok(())
                })
            }

            fn written<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                ids: &'a [LeadId],
            ) -> StoreFuture<'a, WrittenByLead> {
                Box::pin(async move {
                    let mut out: WrittenByLead = HashMap::new();
                    for chunk in ids.chunks(IDS_PER_QUERY) {
                        let ids: Vec<&str> = chunk.iter().map(LeadId::as_str).collect();
                        let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
                        let rows: Vec<WrittenDbRow> = sqlx::query_as($written_sql)
                            .bind(ws.as_str())
                            .bind(list)
                            .fetch_all(&self.$read)
                            .await
                            .map_err(StoreError::db("read written values"))?;
                        for r in rows {
                            out.entry(LeadId(r.lead_id))
                                .or_default()
                                .insert(r.field, r.value);
                        }
                    }
                    Ok(out)
                })
            }

            fn record_writes<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                written: &'a [Written],
                outcomes: &'a [WriteOutcome],
                now: UnixMillis,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    if written.is_empty() && outcomes.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self
                        .$write
                        .begin()
                        .await
                        .map_err(StoreError::db("record writes"))?;
                    record_writes_in!(tx, ws, written, outcomes, now);
                    tx.commit().await.map_err(StoreError::db("record writes"))?;
                    Ok(())
                })
            }

            fn write_outcomes<'a>(
                &'a self,
                ws: &'a WorkspaceId,
            ) -> StoreFuture<'a, Vec<WriteOutcome>> {
                Box::pin(async move {
                    let rows: Vec<WriteOutcomeDbRow> = sqlx::query_as(SELECT_WRITE_OUTCOMES)
                        .bind(ws.as_str())
                        .fetch_all(&self.$read)
                        .await
                        .map_err(StoreError::db("read write outcomes"))?;
                    Ok(rows
                        .into_iter()
                        .map(|r| WriteOutcome {
                            lead_id: LeadId(r.lead_id),
                            state: r.state,
                            reason: r.reason,
                            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
                        })
                        .collect())
                })
            }

            fn lead_page<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                after: Option<&'a LeadId>,
                limit: i64,
            ) -> StoreFuture<'a, Vec<Lead>> {
                Box::pin(async move {
                    let rows: Vec<crate::store::sql::LeadRow> = sqlx::query_as(LEAD_PAGE)
                        .bind(ws.as_str())
                        .bind(after.map_or("", LeadId::as_str))
                        .bind(limit)
                        .fetch_all(&self.$read)
                        .await
                        .map_err(StoreError::db("read a page of leads"))?;
                    rows.into_iter()
                        .map(crate::store::sql::LeadRow::into_lead)
                        .collect()
                })
            }

            fn leads_by_ids<'a>(
                &'a self,
                ws: &'a WorkspaceId,
                ids: &'a [LeadId],
            ) -> StoreFuture<'a, Vec<Lead>> {
                Box::pin(async move {
                    let mut out = Vec::with_capacity(ids.len());
                    for chunk in ids.chunks(IDS_PER_QUERY) {
                        let ids: Vec<&str> = chunk.iter().map(LeadId::as_str).collect();
                        let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
                        let rows: Vec<crate::store::sql::LeadRow> = sqlx::query_as($leads_sql)
                            .bind(ws.as_str())
                            .bind(list)
                            .fetch_all(&self.$read)
                            .await
                            .map_err(StoreError::db("read leads by id"))?;
                        for r in rows {
                            out.push(r.into_lead()?);
                        }
                    }
                    out.sort_by(|a, b| a.id.cmp(&b.id));
                    out.dedup_by(|a, b| a.id == b.id);
                    Ok(out)
                })
            }

            fn attempt_counts<'a>(
                &'a self,
                ws: &'a WorkspaceId,
            ) -> StoreFuture<'a, Vec<AttemptCount>> {
                Box::pin(async move {
                    let rows: Vec<AttemptCountDbRow> = sqlx::query_as(ATTEMPT_COUNTS)
                        .bind(ws.as_str())
                        .fetch_all(&self.$read)
                        .await
                        .map_err(StoreError::db("count attempts"))?;
                    Ok(rows
                        .into_iter()
                        .map(|r| AttemptCount {
                            provider: r.provider,
                            channel: r.channel,
                            outcome: r.outcome,
                            count: r.count,
                        })
                        .collect())
                })
            }

            fn status_counts<'a>(
                &'a self,
                ws: &'a WorkspaceId,
            ) -> StoreFuture<'a, Vec<(String, i64)>> {
                Box::pin(async move {
                    sqlx::query_as(STATUS_COUNTS)
                        .bind(ws.as_str())
                        .fetch_all(&self.$read)
                        .await
                        .map_err(StoreError::db("count leads by status"))
                })
            }
        }
    };
}

mod imp {
    use super::*;
    impl_crm_store!(
        crate::store::sqlite::SqliteStore,
        pool,
        writer,
        SELECT_COMPANIES_SQLITE,
        SELECT_WRITTEN_SQLITE,
        LEADS_BY_IDS_SQLITE
    );
    impl_crm_store!(
        crate::store::postgres::PgStore,
        pool,
        pool,
        SELECT_COMPANIES_PG,
        SELECT_WRITTEN_PG,
        LEADS_BY_IDS_PG
    );
}

//! The SQLite backend: the embedded default for a single replica.
//!
//! * **One writer.** SQLite allows one writing transaction at a time, so the
//!   store keeps a dedicated pool of exactly one connection for writes and
//!   starts every write transaction with `BEGIN IMMEDIATE`: the write lock is
//!   taken up front, so a transaction never has to upgrade a read lock to a
//!   write lock (the upgrade is what fails with `SQLITE_BUSY` regardless of
//!   the busy timeout). Inside the process, writers queue on that one
//!   connection; another process writing the same file waits up to the busy
//!   timeout (5 s). Reads go to a separate pool and, in WAL mode, never block
//!   the writer nor wait for it.
//! * **Exactly once.** A charge is an `INSERT ... ON CONFLICT (workspace, key)
//!   DO NOTHING` into `ledger`; the budget counters and the reservation are
//!   only touched when that insert added a row, in the same transaction as
//!   the stored value. As write transactions are serialised, the second of
//!   two identical charges always sees the first one's row.
//! * **Durability.** WAL journal with `synchronous = NORMAL`: a committed
//!   transaction survives a crash of the process; a power loss may lose the
//!   last transactions but never corrupts the file.
//! * `sqlite::memory:` URLs use one connection for everything (each
//!   connection of an in-memory database would otherwise see its own copy).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::sql::{self, read_err};
use super::{
    Applied, BudgetRow, Charge, LeadState, LeadStatusRow, LedgerEntry, ProviderJob, Settlement,
    SpendEntry, Store, StoreError, StoreFuture, StoredLead, Totals, WriteOp,
};
use crate::core::lead::{Lead, LeadId, WorkspaceId};
use crate::core::value::{ChannelValue, UnixMillis};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// `INSERT ... SELECT` from a JSON array of `[lead_id, fields_json, icp_score]`.
/// (`WHERE true` keeps SQLite's parser from reading `ON CONFLICT` as a join
/// constraint.) $1 ws, $2 JSON array, $3 updated_at.
const UPSERT_LEADS: &str = "\
INSERT INTO leads (workspace, lead_id, fields, icp_score, updated_at)
SELECT $1, j.value ->> 0, j.value ->> 1, CAST(j.value ->> 2 AS REAL), $3
FROM json_each($2) AS j WHERE true
ON CONFLICT (workspace, lead_id) DO UPDATE SET
    fields = excluded.fields,
    icp_score = excluded.icp_score,
    updated_at = excluded.updated_at";

/// $1 ws, $2 JSON array of lead ids.
const LOAD_VALUES: &str = "\
SELECT lead_id, channel, value, source, verification, found_at, verified_at
FROM channel_values
WHERE workspace = $1 AND lead_id IN (SELECT value FROM json_each($2))";

/// The last attempts of each lead, newest first. $1 ws, $2 JSON ids, $3 per lead.
const LOAD_ATTEMPTS: &str = "\
SELECT lead_id, channel, provider, outcome, at FROM (
    SELECT lead_id, channel, provider, outcome, at, id,
           row_number() OVER (PARTITION BY lead_id ORDER BY at DESC, id DESC) AS n
    FROM attempts
    WHERE workspace = $1 AND lead_id IN (SELECT value FROM json_each($2))
) WHERE n <= $3
ORDER BY at DESC, id DESC";

/// $1 ws, $2 JSON array of lead ids.
const LOAD_STATUSES: &str = "\
SELECT lead_id, state, enrichment_status, reason, retry_at, updated_at
FROM lead_status
WHERE workspace = $1 AND lead_id IN (SELECT value FROM json_each($2))";

/// $1 ws, $2 id. (The single writer makes a row lock unnecessary.)
const OPEN_RESERVATION: &str = "\
SELECT id, period, amount, remaining FROM reservations
WHERE workspace = $1 AND id = $2 AND state = 'open'";

/// $1 ws, $2 now.
const EXPIRED_RESERVATIONS: &str = "\
SELECT id, period, amount, remaining FROM reservations
WHERE workspace = $1 AND state = 'open' AND expires_at < $2
ORDER BY id";

/// $1 ws, $2 period, $3 amount, $4 holder, $5 expires_at.
const INSERT_RESERVATION: &str = "\
INSERT INTO reservations
    (workspace, period, amount, remaining, holder, state, expires_at, created_at)
VALUES ($1, $2, $3, $3, $4, 'open', $5, CAST(unixepoch('subsec') * 1000 AS INTEGER))
RETURNING id";

pub struct SqliteStore {
    /// Readers (WAL: they run alongside the writer).
    pool: SqlitePool,
    /// Exactly one connection: every write transaction goes through it.
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating the file and its directory if missing) the database a
    /// `sqlite:` URL names. Runs no migration.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::db("parse sqlite url"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory
            && let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Db {
                op: "create database directory",
                source: sqlx::Error::Io(e),
            })?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await
            .map_err(StoreError::db("open sqlite"))?;
        let pool = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await
                .map_err(StoreError::db("open sqlite"))?
        };
        Ok(SqliteStore { pool, writer })
    }

    /// A write transaction holding SQLite's write lock from its first statement.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db("begin write"))
    }

    async fn apply_all(&self, ws: &str, ops: &[WriteOp]) -> Result<Vec<Applied>, StoreError> {
        let mut tx = self.write().await?;
        let mut applied = Vec::with_capacity(ops.len());
        for op in ops {
            applied.push(apply_op(&mut tx, ws, op).await?);
        }
        tx.commit().await.map_err(StoreError::db("commit apply"))?;
        Ok(applied)
    }

    async fn upsert(
        &self,
        ws: &str,
        leads: &[(Lead, f64)],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let leads = sql::dedup_leads(leads);
        let mut tx = self.write().await?;
        for chunk in leads.chunks(sql::BATCH) {
            let rows = chunk
                .iter()
                .map(|(lead, score)| {
                    Ok((
                        lead.id.as_str(),
                        sql::fields_json(lead)?,
                        sql::finite_score(*score),
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let payload = serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt {
                table: "leads",
                message: e.to_string(),
            })?;
            sqlx::query(UPSERT_LEADS)
                .bind(ws)
                .bind(payload)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("upsert leads"))?;
        }
        tx.commit().await.map_err(StoreError::db("commit leads"))
    }

    async fn load(
        &self,
        ws: &str,
        ids: &[LeadId],
    ) -> Result<HashMap<LeadId, StoredLead>, StoreError> {
        let ids = sql::dedup_ids(ids);
        let mut out: HashMap<LeadId, StoredLead> = ids
            .iter()
            .map(|id| (LeadId(id.clone()), StoredLead::default()))
            .collect();
        // One read transaction: the three reads see the same snapshot.
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::db("begin read"))?;
        for chunk in ids.chunks(sql::BATCH) {
            let list = serde_json::to_string(chunk).map_err(|e| StoreError::Corrupt {
                table: "leads",
                message: e.to_string(),
            })?;
            let values: Vec<sql::ValueRow> = sqlx::query_as(LOAD_VALUES)
                .bind(ws)
                .bind(&list)
                .fetch_all(&mut *tx)
                .await
                .map_err(read_err("channel_values", "load values"))?;
            for row in values {
                let (id, value) = row.into_value()?;
                out.entry(id).or_default().values.push(value);
            }
            let attempts: Vec<sql::PastAttemptRow> = sqlx::query_as(LOAD_ATTEMPTS)
                .bind(ws)
                .bind(&list)
                .bind(sql::ATTEMPTS_PER_LEAD)
                .fetch_all(&mut *tx)
                .await
                .map_err(read_err("attempts", "load attempts"))?;
            for row in attempts {
                let (id, attempt) = row.into_past()?;
                out.entry(id).or_default().attempts.push(attempt);
            }
            let statuses: Vec<sql::StatusRow> = sqlx::query_as(LOAD_STATUSES)
                .bind(ws)
                .bind(&list)
                .fetch_all(&mut *tx)
                .await
                .map_err(read_err("lead_status", "load statuses"))?;
            for row in statuses {
                let status = row.into_status()?;
                let id = status.lead_id.clone();
                out.entry(id).or_default().status = Some(status);
            }
        }
        tx.commit().await.map_err(StoreError::db("end read"))?;
        for stored in out.values_mut() {
            sql::sort_values(&mut stored.values);
        }
        Ok(out)
    }

    async fn reserve_credits(
        &self,
        ws: &str,
        period: &str,
        limit: Option<i64>,
        amount: i64,
        holder: &str,
        expires_at: UnixMillis,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(sql::SET_LIMIT)
            .bind(ws)
            .bind(period)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("set budget limit"))?;
        let fits = sqlx::query(sql::RESERVE_IF_FITS)
            .bind(ws)
            .bind(period)
            .bind(amount)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("reserve credits"))?
            .rows_affected()
            == 1;
        let id = if fits {
            let id: i64 = sqlx::query_scalar(INSERT_RESERVATION)
                .bind(ws)
                .bind(period)
                .bind(amount)
                .bind(holder)
                .bind(expires_at)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db("insert reservation"))?;
            Some(id)
        } else {
            None
        };
        tx.commit()
            .await
            .map_err(StoreError::db("commit reservation"))?;
        Ok(id)
    }

    async fn settle_one(&self, ws: &str, id: i64) -> Result<Option<Settlement>, StoreError> {
        let mut tx = self.write().await?;
        let open: Option<sql::ReservationRow> = sqlx::query_as(OPEN_RESERVATION)
            .bind(ws)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(read_err("reservations", "read reservation"))?;
        let Some(r) = open else {
            return Ok(None);
        };
        close_reservation(&mut tx, ws, r.id).await?;
        release_reserved(&mut tx, ws, &r.period, r.remaining).await?;
        tx.commit().await.map_err(StoreError::db("commit settle"))?;
        Ok(Some(Settlement {
            reserved: r.amount,
            used: r.amount - r.remaining,
            released: r.remaining,
        }))
    }

    async fn settle_lapsed(&self, ws: &str, now: UnixMillis) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let lapsed: Vec<sql::ReservationRow> = sqlx::query_as(EXPIRED_RESERVATIONS)
            .bind(ws)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(read_err("reservations", "read expired reservations"))?;
        let mut per_period: BTreeMap<&str, i64> = BTreeMap::new();
        for r in &lapsed {
            close_reservation(&mut tx, ws, r.id).await?;
            *per_period.entry(&r.period).or_default() += r.remaining;
        }
        for (period, released) in per_period {
            release_reserved(&mut tx, ws, period, released).await?;
        }
        tx.commit().await.map_err(StoreError::db("commit settle"))?;
        Ok(lapsed.len() as u64)
    }
}

/// Applies one op inside the caller's write transaction.
async fn apply_op(
    conn: &mut SqliteConnection,
    ws: &str,
    op: &WriteOp,
) -> Result<Applied, StoreError> {
    match op {
        WriteOp::Attempt(a) => {
            sqlx::query(sql::INSERT_ATTEMPT)
                .bind(ws)
                .bind(&a.run_id)
                .bind(a.lead_id.as_str())
                .bind(a.channel.as_str())
                .bind(&a.provider)
                .bind(&a.account)
                .bind(a.outcome.as_str())
                .bind(&a.detail)
                .bind(a.value.as_deref())
                .bind(a.provider_cost)
                .bind(a.credits)
                .bind(a.http_status.map(i64::from))
                .bind(i64::from(a.tries))
                .bind(i64::from(a.latency_ms))
                .bind(a.at)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db("insert attempt"))?;
            Ok(Applied::Done)
        }
        WriteOp::Value {
            lead_id,
            value,
            charge,
        } => {
            upsert_value(conn, ws, lead_id, value).await?;
            let charged = match charge {
                Some(charge) => take_charge(conn, ws, lead_id, value, charge).await?,
                None => false,
            };
            Ok(Applied::Value { charged })
        }
        WriteOp::Spend(s) => {
            let recorded = sqlx::query(sql::INSERT_SPEND)
                .bind(ws)
                .bind(&s.key)
                .bind(&s.provider)
                .bind(&s.account)
                .bind(s.lead_id.as_ref().map(LeadId::as_str))
                .bind(s.amount)
                .bind(&s.detail)
                .bind(s.at)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db("insert spend"))?
                .rows_affected()
                == 1;
            Ok(Applied::Spend { recorded })
        }
        WriteOp::Status(s) => {
            sqlx::query(sql::UPSERT_STATUS)
                .bind(ws)
                .bind(s.lead_id.as_str())
                .bind(s.state.as_str())
                .bind(s.enrichment_status.as_deref())
                .bind(&s.reason)
                .bind(s.retry_at)
                .bind(s.updated_at)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db("upsert status"))?;
            Ok(Applied::Done)
        }
        WriteOp::Job(j) => {
            sqlx::query(sql::UPSERT_JOB)
                .bind(ws)
                .bind(&j.account)
                .bind(&j.job_id)
                .bind(&j.token)
                .bind(&j.provider)
                .bind(sql::items_json(&j.items)?)
                .bind(&j.run_id)
                .bind(j.submitted_at)
                .bind(j.deadline)
                .bind(j.state.as_str())
                .bind(j.result.as_deref())
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db("upsert job"))?;
            Ok(Applied::Done)
        }
        WriteOp::JobState {
            account,
            job_id,
            state,
            result,
        } => {
            sqlx::query(sql::UPDATE_JOB_STATE)
                .bind(ws)
                .bind(account)
                .bind(job_id)
                .bind(state.as_str())
                .bind(result.as_deref())
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db("update job state"))?;
            Ok(Applied::Done)
        }
    }
}

async fn upsert_value(
    conn: &mut SqliteConnection,
    ws: &str,
    lead_id: &LeadId,
    v: &ChannelValue,
) -> Result<(), StoreError> {
    sqlx::query(sql::UPSERT_VALUE)
        .bind(ws)
        .bind(lead_id.as_str())
        .bind(v.channel.as_str())
        .bind(&v.value)
        .bind(v.source.as_str())
        .bind(v.verification.as_str())
        .bind(v.found_at)
        .bind(v.verified_at)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("upsert value"))?;
    Ok(())
}

/// Inserts the ledger row; only if it is new, counts the charge in its
/// budget period and against its reservation. Returns whether it was new.
async fn take_charge(
    conn: &mut SqliteConnection,
    ws: &str,
    lead_id: &LeadId,
    v: &ChannelValue,
    charge: &Charge,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(sql::INSERT_LEDGER)
        .bind(ws)
        .bind(&charge.key)
        .bind(lead_id.as_str())
        .bind(v.channel.as_str())
        .bind(&v.value)
        .bind(v.source.as_str())
        .bind(charge.credits)
        .bind(&charge.period)
        .bind(charge.reservation)
        .bind(v.found_at)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("insert ledger"))?
        .rows_affected()
        == 1;
    if !inserted {
        return Ok(false);
    }
    sqlx::query(sql::ADD_CHARGED)
        .bind(ws)
        .bind(&charge.period)
        .bind(charge.credits)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("count charge"))?;
    if let Some(id) = charge.reservation {
        let open: Option<sql::ReservationRow> = sqlx::query_as(OPEN_RESERVATION)
            .bind(ws)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(read_err("reservations", "read reservation"))?;
        if let Some(r) = open {
            let used = charge.credits.min(r.remaining).max(0);
            if used > 0 {
                sqlx::query(sql::CONSUME_RESERVATION)
                    .bind(ws)
                    .bind(id)
                    .bind(used)
                    .execute(&mut *conn)
                    .await
                    .map_err(StoreError::db("consume reservation"))?;
                release_reserved(conn, ws, &r.period, used).await?;
            }
        }
    }
    Ok(true)
}

async fn close_reservation(
    conn: &mut SqliteConnection,
    ws: &str,
    id: i64,
) -> Result<(), StoreError> {
    sqlx::query(sql::CLOSE_RESERVATION)
        .bind(ws)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("settle reservation"))?;
    Ok(())
}

async fn release_reserved(
    conn: &mut SqliteConnection,
    ws: &str,
    period: &str,
    credits: i64,
) -> Result<(), StoreError> {
    sqlx::query(sql::RELEASE_RESERVED)
        .bind(ws)
        .bind(period)
        .bind(credits)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("release reserved credits"))?;
    Ok(())
}

impl Store for SqliteStore {
    fn migrate(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            MIGRATOR.run(&self.writer).await?;
            Ok(())
        })
    }

    fn upsert_leads<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        leads: &'a [(Lead, f64)],
        now: UnixMillis,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.upsert(ws.as_str(), leads, now))
    }

    fn get_lead<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        id: &'a LeadId,
    ) -> StoreFuture<'a, Option<Lead>> {
        Box::pin(async move {
            let row: Option<sql::LeadRow> = sqlx::query_as(sql::SELECT_LEAD)
                .bind(ws.as_str())
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(read_err("leads", "get lead"))?;
            row.map(sql::LeadRow::into_lead).transpose()
        })
    }

    fn load_leads<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        ids: &'a [LeadId],
    ) -> StoreFuture<'a, HashMap<LeadId, StoredLead>> {
        Box::pin(self.load(ws.as_str(), ids))
    }

    fn apply<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        ops: &'a [WriteOp],
    ) -> StoreFuture<'a, Vec<Applied>> {
        Box::pin(self.apply_all(ws.as_str(), ops))
    }

    fn budget<'a>(&'a self, ws: &'a WorkspaceId, period: &'a str) -> StoreFuture<'a, BudgetRow> {
        Box::pin(async move {
            let row: Option<sql::BudgetDbRow> = sqlx::query_as(sql::SELECT_BUDGET)
                .bind(ws.as_str())
                .bind(period)
                .fetch_optional(&self.pool)
                .await
                .map_err(read_err("budget_periods", "read budget"))?;
            Ok(row.map(BudgetRow::from).unwrap_or_default())
        })
    }

    fn reserve<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        period: &'a str,
        limit: Option<i64>,
        amount: i64,
        holder: &'a str,
        expires_at: UnixMillis,
    ) -> StoreFuture<'a, Option<i64>> {
        Box::pin(self.reserve_credits(ws.as_str(), period, limit, amount, holder, expires_at))
    }

    fn settle<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        reservation: i64,
    ) -> StoreFuture<'a, Option<Settlement>> {
        Box::pin(self.settle_one(ws.as_str(), reservation))
    }

    fn settle_expired<'a>(&'a self, ws: &'a WorkspaceId, now: UnixMillis) -> StoreFuture<'a, u64> {
        Box::pin(self.settle_lapsed(ws.as_str(), now))
    }

    fn values<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        id: &'a LeadId,
    ) -> StoreFuture<'a, Vec<ChannelValue>> {
        Box::pin(async move {
            let rows: Vec<sql::ValueRow> = sqlx::query_as(sql::SELECT_VALUES)
                .bind(ws.as_str())
                .bind(id.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("channel_values", "read values"))?;
            let mut values = rows
                .into_iter()
                .map(|r| r.into_value().map(|(_, v)| v))
                .collect::<Result<Vec<_>, _>>()?;
            sql::sort_values(&mut values);
            Ok(values)
        })
    }

    fn attempts<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        id: &'a LeadId,
    ) -> StoreFuture<'a, Vec<super::AttemptRecord>> {
        Box::pin(async move {
            let rows: Vec<sql::AttemptRow> = sqlx::query_as(sql::SELECT_ATTEMPTS)
                .bind(ws.as_str())
                .bind(id.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("attempts", "read attempts"))?;
            rows.into_iter().map(sql::AttemptRow::into_record).collect()
        })
    }

    fn ledger<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<LedgerEntry>> {
        Box::pin(async move {
            let rows: Vec<sql::LedgerRow> = sqlx::query_as(sql::SELECT_LEDGER)
                .bind(ws.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("ledger", "read ledger"))?;
            rows.into_iter().map(sql::LedgerRow::into_entry).collect()
        })
    }

    fn spend<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<SpendEntry>> {
        Box::pin(async move {
            let rows: Vec<sql::SpendRow> = sqlx::query_as(sql::SELECT_SPEND)
                .bind(ws.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("spend", "read spend"))?;
            Ok(rows.into_iter().map(sql::SpendRow::into_entry).collect())
        })
    }

    fn statuses<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<LeadStatusRow>> {
        Box::pin(async move {
            let rows: Vec<sql::StatusRow> = sqlx::query_as(sql::SELECT_STATUSES)
                .bind(ws.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("lead_status", "read statuses"))?;
            rows.into_iter().map(sql::StatusRow::into_status).collect()
        })
    }

    fn leads_in_state<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        state: LeadState,
        due_by: UnixMillis,
        limit: u32,
    ) -> StoreFuture<'a, Vec<LeadId>> {
        Box::pin(async move {
            let ids: Vec<String> = sqlx::query_scalar(sql::LEADS_IN_STATE)
                .bind(ws.as_str())
                .bind(state.as_str())
                .bind(due_by)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("lead_status", "leads in state"))?;
            Ok(ids.into_iter().map(LeadId).collect())
        })
    }

    fn totals<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Totals> {
        Box::pin(async move {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(StoreError::db("begin read"))?;
            let counts: sql::TotalsRow = sqlx::query_as(sql::TOTALS)
                .bind(ws.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(read_err("totals", "totals"))?;
            let spend: Vec<(String, i64)> = sqlx::query_as(sql::SPEND_PER_ACCOUNT)
                .bind(ws.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(read_err("spend", "spend per account"))?;
            tx.commit().await.map_err(StoreError::db("end read"))?;
            counts.into_totals(spend)
        })
    }

    fn job_by_token<'a>(
        &'a self,
        token: &'a str,
    ) -> StoreFuture<'a, Option<(WorkspaceId, ProviderJob)>> {
        Box::pin(async move {
            let row: Option<sql::JobRow> = sqlx::query_as(sql::JOB_BY_TOKEN)
                .bind(token)
                .fetch_optional(&self.pool)
                .await
                .map_err(read_err("provider_jobs", "job by token"))?;
            row.map(sql::JobRow::into_job).transpose()
        })
    }

    fn job<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        account: &'a str,
        job_id: &'a str,
    ) -> StoreFuture<'a, Option<ProviderJob>> {
        Box::pin(async move {
            let row: Option<sql::JobRow> = sqlx::query_as(sql::SELECT_JOB)
                .bind(ws.as_str())
                .bind(account)
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(read_err("provider_jobs", "read job"))?;
            Ok(row.map(sql::JobRow::into_job).transpose()?.map(|(_, j)| j))
        })
    }

    fn open_jobs<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<ProviderJob>> {
        Box::pin(async move {
            let rows: Vec<sql::JobRow> = sqlx::query_as(sql::OPEN_JOBS)
                .bind(ws.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("provider_jobs", "open jobs"))?;
            rows.into_iter()
                .map(|r| r.into_job().map(|(_, j)| j))
                .collect()
        })
    }
}

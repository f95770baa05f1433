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
//! * **Batches.** `apply` groups its ops by kind (see `sql::Batch`) and
//!   writes each kind with multi-row statements: a JSON array of rows bound
//!   as one parameter and read with `json_each`, at most
//!   `sql::APPLY_CHUNK` rows per statement. Every statement is a round trip
//!   to the connection's worker thread, so a batch of any size costs a
//!   handful of them: values, ledger, (when charges settle against
//!   reservations) reservations read and consumed, budget counters, spend,
//!   attempts, statuses, plus one per `Job`/`JobState` op (rare). The rows
//!   written are those applying the ops one by one would leave: the last
//!   value per (lead, channel) and the last status per lead; the first op
//!   per charge or spend key (a later one would find the key taken).
//! * **Exactly once.** Charges are one `INSERT ... ON CONFLICT (workspace,
//!   key) DO NOTHING RETURNING key` into `ledger`: only the keys returned
//!   were inserted now, and only those (matched by key, for the first op
//!   carrying each) are reported `charged` and counted, with one statement
//!   per table that updates each row once: every budget period gets
//!   `charged +=` its new credits, every open reservation gives up
//!   `used = min(new credits against it, remaining)` from `remaining` and
//!   from its period's `reserved` (what charging them one by one adds up
//!   to). All of it commits with the stored values or not at all. As write
//!   transactions are serialised, the second of two identical charges
//!   always sees the first one's row.
//! * **Durability.** WAL journal with `synchronous = NORMAL`: a committed
//!   transaction survives a crash of the process; a power loss may lose the
//!   last transactions but never corrupts the file.
//! * `sqlite::memory:` URLs use one connection for everything (each
//!   connection of an in-memory database would otherwise see its own copy).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::sql::{self, read_err};
use super::{
    Applied, BudgetRow, LeadState, LeadStatusRow, LedgerEntry, ProviderJob, Settlement, SpendEntry,
    Store, StoreError, StoreFuture, StoredLead, Totals, WriteOp,
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

// The multi-row writes of `apply`: each reads a JSON array of rows (arrays
// of column values, in the order listed) bound as one parameter. `WHERE
// true` keeps SQLite's parser from reading `ON CONFLICT` as a join
// constraint; `ORDER BY j.key` keeps the rows (and so their ids) in op order.

/// $1 ws, $2 `[[lead, channel, value, source, verification, found_at,
/// verified_at], ...]`, distinct (lead, channel).
const UPSERT_VALUES: &str = "\
INSERT INTO channel_values
    (workspace, lead_id, channel, value, source, verification, found_at, verified_at)
SELECT $1, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
       j.value ->> 5, j.value ->> 6
FROM json_each($2) AS j WHERE true
ON CONFLICT (workspace, lead_id, channel) DO UPDATE SET
    value = excluded.value,
    source = excluded.source,
    verification = excluded.verification,
    found_at = excluded.found_at,
    verified_at = excluded.verified_at";

/// The exactly-once point: a key already in the ledger inserts nothing and
/// is not returned. $1 ws, $2 `[[key, lead, channel, value, source, credits,
/// period, reservation, at], ...]`, distinct keys.
const INSERT_LEDGER: &str = "\
INSERT INTO ledger
    (workspace, key, lead_id, channel, value, source, credits, period, reservation, at)
SELECT $1, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
       j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8
FROM json_each($2) AS j WHERE true ORDER BY j.key
ON CONFLICT (workspace, key) DO NOTHING
RETURNING key";

/// $1 ws, $2 JSON array of reservation ids.
const OPEN_RESERVATIONS: &str = "\
SELECT id, period, amount, remaining FROM reservations
WHERE workspace = $1 AND state = 'open' AND id IN (SELECT value FROM json_each($2))";

/// $1 ws, $2 `[[id, used], ...]`, distinct ids.
const CONSUME_RESERVATIONS: &str = "\
UPDATE reservations SET remaining = remaining - d.used
FROM (SELECT j.value ->> 0 AS id, j.value ->> 1 AS used FROM json_each($2) AS j) AS d
WHERE reservations.workspace = $1 AND reservations.id = d.id AND reservations.state = 'open'";

/// `charged += charged`, `reserved -= released`, per period. A period with
/// a new charge gets its row created if absent; one that only gets credits
/// back from a reservation is only updated. $1 ws, $2 `[[period, charged,
/// has_charges (0/1), released], ...]`, distinct periods.
const COUNT_CHARGES: &str = "\
INSERT INTO budget_periods (workspace, period, limit_credits, charged, reserved)
SELECT $1, j.value ->> 0, NULL, j.value ->> 1, 0 - (j.value ->> 3)
FROM json_each($2) AS j
WHERE j.value ->> 2 = 1 OR EXISTS (
    SELECT 1 FROM budget_periods AS b WHERE b.workspace = $1 AND b.period = j.value ->> 0)
ON CONFLICT (workspace, period) DO UPDATE SET
    charged = budget_periods.charged + excluded.charged,
    reserved = budget_periods.reserved + excluded.reserved";

/// $1 ws, $2 `[[key, provider, account, lead, amount, detail, at], ...]`,
/// distinct keys. Returns the keys inserted now.
const INSERT_SPEND: &str = "\
INSERT INTO spend (workspace, key, provider, account, lead_id, amount, detail, at)
SELECT $1, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
       j.value ->> 5, j.value ->> 6
FROM json_each($2) AS j WHERE true ORDER BY j.key
ON CONFLICT (workspace, key) DO NOTHING
RETURNING key";

/// $1 ws, $2 `[[run, lead, channel, provider, account, outcome, detail,
/// value, provider_cost, credits, http_status, tries, latency_ms, at], ...]`.
const INSERT_ATTEMPTS: &str = "\
INSERT INTO attempts
    (workspace, run_id, lead_id, channel, provider, account, outcome, detail, value,
     provider_cost, credits, http_status, tries, latency_ms, at)
SELECT $1, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
       j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9,
       j.value ->> 10, j.value ->> 11, j.value ->> 12, j.value ->> 13
FROM json_each($2) AS j ORDER BY j.key";

/// $1 ws, $2 `[[lead, state, enrichment_status, reason, retry_at,
/// updated_at], ...]`, distinct leads.
const UPSERT_STATUSES: &str = "\
INSERT INTO lead_status
    (workspace, lead_id, state, enrichment_status, reason, retry_at, updated_at)
SELECT $1, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
       j.value ->> 5
FROM json_each($2) AS j WHERE true
ON CONFLICT (workspace, lead_id) DO UPDATE SET
    state = excluded.state,
    enrichment_status = excluded.enrichment_status,
    reason = excluded.reason,
    retry_at = excluded.retry_at,
    updated_at = excluded.updated_at";

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

/// Whether a `sqlite:` URL names an in-memory database (no file).
fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// The database file a `sqlite:` URL names, as [`SqliteStore::open`] reads
/// it; `None` for an in-memory database. Used for `enrichd run`'s
/// single-process lock (`store::lockfile`).
pub fn database_file(url: &str) -> Result<Option<std::path::PathBuf>, StoreError> {
    if is_in_memory(url) {
        return Ok(None);
    }
    let options =
        SqliteConnectOptions::from_str(url).map_err(StoreError::db("parse sqlite url"))?;
    Ok(Some(options.get_filename().to_path_buf()))
}

pub struct SqliteStore {
    /// Readers (WAL: they run alongside the writer).
    pub(crate) pool: SqlitePool,
    /// Exactly one connection: every write transaction goes through it.
    pub(crate) writer: SqlitePool,
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
        let in_memory = is_in_memory(url);
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

    /// One write transaction; a handful of statements whatever the batch
    /// size (see the module doc).
    async fn apply_all(&self, ws: &str, ops: &[WriteOp]) -> Result<Vec<Applied>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let batch = sql::Batch::new(ops);
        let mut tx = self.write().await?;
        upsert_values(&mut tx, ws, &batch).await?;
        let taken = take_charges(&mut tx, ws, &batch).await?;
        let recorded = insert_spend(&mut tx, ws, &batch).await?;
        insert_attempts(&mut tx, ws, &batch).await?;
        upsert_statuses(&mut tx, ws, &batch).await?;
        for op in &batch.jobs {
            apply_job(&mut tx, ws, op).await?;
        }
        tx.commit().await.map_err(StoreError::db("commit apply"))?;
        Ok(batch.applied(&taken, &recorded))
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

async fn upsert_values(
    conn: &mut SqliteConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
) -> Result<(), StoreError> {
    for chunk in batch.values.chunks(sql::APPLY_CHUNK) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|(lead, v)| {
                (
                    lead.as_str(),
                    v.channel.as_str(),
                    &v.value,
                    v.source.as_str(),
                    v.verification.as_str(),
                    v.found_at,
                    v.verified_at,
                )
            })
            .collect();
        sqlx::query(UPSERT_VALUES)
            .bind(ws)
            .bind(sql::json_payload("channel_values", &rows)?)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("upsert values"))?;
    }
    Ok(())
}

/// Inserts the batch's ledger rows; then, for the keys inserted now (and
/// only those), counts the charges in their budget periods and against
/// their open reservations. Returns the keys inserted now.
async fn take_charges(
    conn: &mut SqliteConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
) -> Result<HashSet<String>, StoreError> {
    let mut taken = HashSet::new();
    for chunk in batch.charges.chunks(sql::APPLY_CHUNK) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|c| {
                (
                    &c.charge.key,
                    c.lead_id.as_str(),
                    c.value.channel.as_str(),
                    &c.value.value,
                    c.value.source.as_str(),
                    c.charge.credits,
                    &c.charge.period,
                    c.charge.reservation,
                    c.value.found_at,
                )
            })
            .collect();
        let keys: Vec<String> = sqlx::query_scalar(INSERT_LEDGER)
            .bind(ws)
            .bind(sql::json_payload("ledger", &rows)?)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_err("ledger", "insert ledger"))?;
        taken.extend(keys);
    }
    if taken.is_empty() {
        return Ok(taken);
    }
    let ids = batch.charge_reservations(Some(&taken));
    let open: Vec<sql::ReservationRow> = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(OPEN_RESERVATIONS)
            .bind(ws)
            .bind(sql::json_payload("reservations", &ids)?)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_err("reservations", "read reservations"))?
    };
    let acc = batch.account(&taken, &open);
    if !acc.consumed.is_empty() {
        sqlx::query(CONSUME_RESERVATIONS)
            .bind(ws)
            .bind(sql::json_payload("reservations", &acc.consumed)?)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("consume reservations"))?;
    }
    if !acc.periods.is_empty() {
        let rows: Vec<_> = acc
            .periods
            .iter()
            .map(|p| (&p.period, p.charged, i64::from(p.has_charges), p.released))
            .collect();
        sqlx::query(COUNT_CHARGES)
            .bind(ws)
            .bind(sql::json_payload("budget_periods", &rows)?)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("count charges"))?;
    }
    Ok(taken)
}

/// Returns the keys inserted now.
async fn insert_spend(
    conn: &mut SqliteConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
) -> Result<HashSet<String>, StoreError> {
    let mut recorded = HashSet::new();
    for chunk in batch.spends.chunks(sql::APPLY_CHUNK) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|s| {
                (
                    &s.key,
                    &s.provider,
                    &s.account,
                    s.lead_id.as_ref().map(LeadId::as_str),
                    s.amount,
                    &s.detail,
                    s.at,
                )
            })
            .collect();
        let keys: Vec<String> = sqlx::query_scalar(INSERT_SPEND)
            .bind(ws)
            .bind(sql::json_payload("spend", &rows)?)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_err("spend", "insert spend"))?;
        recorded.extend(keys);
    }
    Ok(recorded)
}

async fn insert_attempts(
    conn: &mut SqliteConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
) -> Result<(), StoreError> {
    for chunk in batch.attempts.chunks(sql::APPLY_CHUNK) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|a| {
                (
                    &a.run_id,
                    a.lead_id.as_str(),
                    a.channel.as_str(),
                    &a.provider,
                    &a.account,
                    a.outcome.as_str(),
                    &a.detail,
                    a.value.as_deref(),
                    a.provider_cost,
                    a.credits,
                    a.http_status,
                    a.tries,
                    a.latency_ms,
                    a.at,
                )
            })
            .collect();
        sqlx::query(INSERT_ATTEMPTS)
            .bind(ws)
            .bind(sql::json_payload("attempts", &rows)?)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("insert attempts"))?;
    }
    Ok(())
}

async fn upsert_statuses(
    conn: &mut SqliteConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
) -> Result<(), StoreError> {
    for chunk in batch.statuses.chunks(sql::APPLY_CHUNK) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|s| {
                (
                    s.lead_id.as_str(),
                    s.state.as_str(),
                    s.enrichment_status.as_deref(),
                    &s.reason,
                    s.retry_at,
                    s.updated_at,
                )
            })
            .collect();
        sqlx::query(UPSERT_STATUSES)
            .bind(ws)
            .bind(sql::json_payload("lead_status", &rows)?)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("upsert statuses"))?;
    }
    Ok(())
}

/// A `Job` or `JobState` op (rare: one statement each).
async fn apply_job(conn: &mut SqliteConnection, ws: &str, op: &WriteOp) -> Result<(), StoreError> {
    match op {
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
        }
        WriteOp::Attempt(_) | WriteOp::Value { .. } | WriteOp::Spend(_) | WriteOp::Status(_) => {}
    }
    Ok(())
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

    fn pending_migrations(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::db("read applied migrations"))?;
            let applied: Vec<i64> = if exists > 0 {
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::db("read applied migrations"))?
            } else {
                Vec::new()
            };
            Ok(super::pending_of(&MIGRATOR, &applied))
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

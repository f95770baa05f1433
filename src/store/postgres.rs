//! The PostgreSQL backend: for several replicas sharing one database.
//!
//! * **Batches.** `apply` groups its ops by kind (see `sql::Batch`) and
//!   writes each kind with multi-row statements reading one typed array per
//!   column with `unnest`, at most `sql::APPLY_CHUNK` rows per statement: a
//!   batch of any size costs a handful of statements (the charge locks
//!   below, values, ledger, reservations, budget counters, spend, attempts,
//!   statuses, plus one per `Job`/`JobState` op, which are rare). The rows
//!   written are those applying the ops one by one would leave: the last
//!   value per (lead, channel) and the last status per lead (one statement
//!   may not upsert a row twice); the first op per charge or spend key (a
//!   later one would find the key taken). Ledger, spend and attempt rows are
//!   inserted in op order, so their ids are.
//! * **Exactly once.** Charges are one `INSERT ... ON CONFLICT (workspace,
//!   key) DO NOTHING RETURNING key` into `ledger`, in the same transaction
//!   (READ COMMITTED) as the stored values. Two replicas inserting the same
//!   key: the second waits on the unique index until the first commits, then
//!   inserts nothing and does not get the key back, so it neither reports
//!   the charge nor counts it in the budget nor consumes the reservation.
//!   Had the first rolled back, the second inserts. Only the keys returned
//!   (matched by key, for the first op carrying each) are counted, with one
//!   statement per table that updates each row once: every budget period
//!   gets `charged +=` its new credits, every open reservation gives up
//!   `used = min(new credits against it, remaining)` from `remaining` and
//!   from its period's `reserved` (what charging them one by one adds up
//!   to).
//! * **Budget counters.** `reserve` upserts the period row (which locks it)
//!   and reserves with one conditional `UPDATE ... WHERE charged + reserved +
//!   amount <= limit`, so concurrent reservers are serialised on that row and
//!   can never exceed the limit together.
//! * **Lock order.** Transactions that touch reservations or budget rows lock
//!   them in one global order: reservations by id, then budget rows by
//!   period, before any other write. `apply` takes these locks up front for
//!   every charge in its batch (and reads the reservations under them): this
//!   is also what makes reading a reservation's `remaining` and decrementing
//!   it safe against a concurrent charge or settle. Values and statuses are
//!   upserted in key order, so batches sharing leads queue on the first one
//!   rather than deadlock. A deadlock can still arise between batches that
//!   insert the same new ledger or spend keys in opposite orders (these
//!   follow op order): PostgreSQL then aborts one of them and `apply` reruns
//!   it (the whole transaction was rolled back, so rerunning is exact), as it
//!   does on a serialization failure.
//! * **Migrations.** Replicas may all call `migrate` at start-up: sqlx's
//!   `Migrator` (locking on, its default) takes the session advisory lock
//!   `pg_advisory_lock(0x3d32ad9e * crc32(current_database()))` before it
//!   reads `_sqlx_migrations`, and each migration commits in one transaction
//!   with its `_sqlx_migrations` row; the others wait on the lock, then find
//!   every version applied and do nothing. The key covers the whole
//!   database, so stores in different schemas of one database (the tests'
//!   schema per test) migrate one after the other, which is safe. The
//!   migrator runs on a connection of its own that is closed afterwards (see
//!   `migrate`). Session advisory locks do not survive PgBouncer's
//!   transaction pooling: migrate through a direct connection there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::sql::{self, read_err};
use super::{
    Applied, BudgetRow, LeadState, LeadStatusRow, LedgerEntry, ProviderJob, Settlement, SpendEntry,
    Store, StoreError, StoreFuture, StoredLead, Totals, WriteOp,
};
use crate::core::lead::{Lead, LeadId, WorkspaceId};
use crate::core::value::{ChannelValue, UnixMillis};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How many times `apply` reruns a batch aborted by a deadlock or a
/// serialization failure.
const APPLY_RETRIES: usize = 5;

/// $1 ws, $2 ids, $3 fields (JSON text), $4 scores, $5 updated_at.
const UPSERT_LEADS: &str = "\
INSERT INTO leads (workspace, lead_id, fields, icp_score, updated_at)
SELECT $1, u.lead_id, u.fields, u.icp_score, $5
FROM unnest($2::text[], $3::text[], $4::float8[]) AS u(lead_id, fields, icp_score)
ON CONFLICT (workspace, lead_id) DO UPDATE SET
    fields = excluded.fields,
    icp_score = excluded.icp_score,
    updated_at = excluded.updated_at";

/// $1 ws, $2 ids.
const LOAD_VALUES: &str = "\
SELECT lead_id, channel, value, source, verification, found_at, verified_at
FROM channel_values WHERE workspace = $1 AND lead_id = ANY($2)";

/// The last attempts of each lead, newest first, each read from the index
/// on (workspace, lead_id, at). $1 ws, $2 ids (distinct), $3 per lead.
const LOAD_ATTEMPTS: &str = "\
SELECT a.lead_id, a.channel, a.provider, a.outcome, a.at
FROM unnest($2::text[]) AS ids(lead_id)
CROSS JOIN LATERAL (
    SELECT lead_id, channel, provider, outcome, at, id FROM attempts
    WHERE workspace = $1 AND lead_id = ids.lead_id
    ORDER BY at DESC, id DESC
    LIMIT $3
) AS a
ORDER BY a.at DESC, a.id DESC";

/// $1 ws, $2 ids.
const LOAD_STATUSES: &str = "\
SELECT lead_id, state, enrichment_status, reason, retry_at, updated_at
FROM lead_status WHERE workspace = $1 AND lead_id = ANY($2)";

/// Locks the open reservations a batch charges against, in id order, and
/// reads them (the lock keeps what is read current until commit).
/// $1 ws, $2 ids.
const LOCK_RESERVATIONS: &str = "\
SELECT id, period, amount, remaining FROM reservations
WHERE workspace = $1 AND id = ANY($2) AND state = 'open'
ORDER BY id FOR UPDATE";

/// $1 ws, $2 periods.
const ENSURE_BUDGETS: &str = "\
INSERT INTO budget_periods (workspace, period, limit_credits, charged, reserved)
SELECT $1, p, NULL, 0, 0 FROM unnest($2::text[]) AS p ORDER BY p
ON CONFLICT (workspace, period) DO NOTHING";

/// $1 ws, $2 periods.
const LOCK_BUDGETS: &str = "\
SELECT period FROM budget_periods
WHERE workspace = $1 AND period = ANY($2)
ORDER BY period FOR UPDATE";

// The multi-row writes of `apply`: one typed array per column, read with
// `unnest`. `WITH ORDINALITY ... ORDER BY` keeps the rows (and so their
// ids) in op order.

/// $1 ws, $2 leads, $3 channels, $4 values, $5 sources, $6 verifications,
/// $7 found_at, $8 verified_at; distinct (lead, channel).
const UPSERT_VALUES: &str = "\
INSERT INTO channel_values
    (workspace, lead_id, channel, value, source, verification, found_at, verified_at)
SELECT $1, u.lead_id, u.channel, u.value, u.source, u.verification, u.found_at, u.verified_at
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::int8[])
    AS u(lead_id, channel, value, source, verification, found_at, verified_at)
ON CONFLICT (workspace, lead_id, channel) DO UPDATE SET
    value = excluded.value,
    source = excluded.source,
    verification = excluded.verification,
    found_at = excluded.found_at,
    verified_at = excluded.verified_at";

/// The exactly-once point: a key already in the ledger (or being inserted by
/// a concurrent transaction that then commits) inserts nothing and is not
/// returned. $1 ws, $2 keys, $3 leads, $4 channels, $5 values, $6 sources,
/// $7 credits, $8 periods, $9 reservations, $10 at; distinct keys.
const INSERT_LEDGER: &str = "\
INSERT INTO ledger
    (workspace, key, lead_id, channel, value, source, credits, period, reservation, at)
SELECT $1, u.key, u.lead_id, u.channel, u.value, u.source, u.credits, u.period,
       u.reservation, u.at
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[],
            $8::text[], $9::int8[], $10::int8[]) WITH ORDINALITY
    AS u(key, lead_id, channel, value, source, credits, period, reservation, at, n)
ORDER BY u.n
ON CONFLICT (workspace, key) DO NOTHING
RETURNING key";

/// Rows locked by [`LOCK_RESERVATIONS`]. $1 ws, $2 ids, $3 credits used; distinct ids.
const CONSUME_RESERVATIONS: &str = "\
UPDATE reservations AS r SET remaining = r.remaining - d.used
FROM unnest($2::int8[], $3::int8[]) AS d(id, used)
WHERE r.workspace = $1 AND r.id = d.id AND r.state = 'open'";

/// Rows created and locked by [`lock_for_charges`]. $1 ws, $2 periods,
/// $3 charged, $4 released; distinct periods.
const COUNT_CHARGES: &str = "\
UPDATE budget_periods AS b
SET charged = b.charged + d.charged, reserved = b.reserved - d.released
FROM unnest($2::text[], $3::int8[], $4::int8[]) AS d(period, charged, released)
WHERE b.workspace = $1 AND b.period = d.period";

/// $1 ws, $2 keys, $3 providers, $4 accounts, $5 leads, $6 amounts,
/// $7 details, $8 at; distinct keys. Returns the keys inserted now.
const INSERT_SPEND: &str = "\
INSERT INTO spend (workspace, key, provider, account, lead_id, amount, detail, at)
SELECT $1, u.key, u.provider, u.account, u.lead_id, u.amount, u.detail, u.at
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[],
            $8::int8[]) WITH ORDINALITY
    AS u(key, provider, account, lead_id, amount, detail, at, n)
ORDER BY u.n
ON CONFLICT (workspace, key) DO NOTHING
RETURNING key";

/// $1 ws, $2 runs, $3 leads, $4 channels, $5 providers, $6 accounts,
/// $7 outcomes, $8 details, $9 values, $10 provider_cost, $11 credits,
/// $12 http_status, $13 tries, $14 latency_ms, $15 at.
const INSERT_ATTEMPTS: &str = "\
INSERT INTO attempts
    (workspace, run_id, lead_id, channel, provider, account, outcome, detail, value,
     provider_cost, credits, http_status, tries, latency_ms, at)
SELECT $1, u.run_id, u.lead_id, u.channel, u.provider, u.account, u.outcome, u.detail,
       u.value, u.provider_cost, u.credits, u.http_status, u.tries, u.latency_ms, u.at
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::int8[], $11::int8[], $12::int8[], $13::int8[],
            $14::int8[], $15::int8[]) WITH ORDINALITY
    AS u(run_id, lead_id, channel, provider, account, outcome, detail, value,
         provider_cost, credits, http_status, tries, latency_ms, at, n)
ORDER BY u.n";

/// $1 ws, $2 leads, $3 states, $4 enrichment statuses, $5 reasons,
/// $6 retry_at, $7 updated_at; distinct leads.
const UPSERT_STATUSES: &str = "\
INSERT INTO lead_status
    (workspace, lead_id, state, enrichment_status, reason, retry_at, updated_at)
SELECT $1, u.lead_id, u.state, u.enrichment_status, u.reason, u.retry_at, u.updated_at
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[])
    AS u(lead_id, state, enrichment_status, reason, retry_at, updated_at)
ON CONFLICT (workspace, lead_id) DO UPDATE SET
    state = excluded.state,
    enrichment_status = excluded.enrichment_status,
    reason = excluded.reason,
    retry_at = excluded.retry_at,
    updated_at = excluded.updated_at";

/// $1 ws, $2 id.
const OPEN_RESERVATION_FOR_UPDATE: &str = "\
SELECT id, period, amount, remaining FROM reservations
WHERE workspace = $1 AND id = $2 AND state = 'open'
FOR UPDATE";

/// $1 ws, $2 now.
const EXPIRED_RESERVATIONS: &str = "\
SELECT id, period, amount, remaining FROM reservations
WHERE workspace = $1 AND state = 'open' AND expires_at < $2
ORDER BY id FOR UPDATE";

/// $1 ws, $2 period, $3 amount, $4 holder, $5 expires_at.
const INSERT_RESERVATION: &str = "\
INSERT INTO reservations
    (workspace, period, amount, remaining, holder, state, expires_at, created_at)
VALUES ($1, $2, $3, $3, $4, 'open', $5,
        CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))
RETURNING id";

pub struct PgStore {
    pub(crate) pool: PgPool,
}

impl PgStore {
    /// Connects to the database a `postgres://` URL names. Runs no migration.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options =
            PgConnectOptions::from_str(url).map_err(StoreError::db("parse postgres url"))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(StoreError::db("connect to postgres"))?;
        Ok(PgStore { pool })
    }

    async fn apply_all(&self, ws: &str, ops: &[WriteOp]) -> Result<Vec<Applied>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempt = 0;
        loop {
            match self.apply_once(ws, ops).await {
                Err(e) if attempt < APPLY_RETRIES && is_retryable(&e) => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "rerunning an aborted store batch");
                }
                result => return result,
            }
        }
    }

    /// One transaction; a handful of statements whatever the batch size
    /// (see the module doc).
    async fn apply_once(&self, ws: &str, ops: &[WriteOp]) -> Result<Vec<Applied>, StoreError> {
        let batch = sql::Batch::new(ops);
        let mut tx = self.pool.begin().await.map_err(StoreError::db("begin"))?;
        let open = lock_for_charges(&mut tx, ws, &batch).await?;
        upsert_values(&mut tx, ws, &batch).await?;
        let taken = take_charges(&mut tx, ws, &batch, &open).await?;
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
        // Duplicates would make one statement update a row twice (an error).
        let leads = sql::dedup_leads(leads);
        let mut tx = self.pool.begin().await.map_err(StoreError::db("begin"))?;
        for chunk in leads.chunks(sql::BATCH) {
            let mut ids = Vec::with_capacity(chunk.len());
            let mut fields = Vec::with_capacity(chunk.len());
            let mut scores = Vec::with_capacity(chunk.len());
            for (lead, score) in chunk {
                ids.push(lead.id.as_str());
                fields.push(sql::fields_json(lead)?);
                scores.push(sql::finite_score(*score));
            }
            sqlx::query(UPSERT_LEADS)
                .bind(ws)
                .bind(ids)
                .bind(fields)
                .bind(scores)
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
        // One snapshot for the three reads.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(StoreError::db("begin read"))?;
        for chunk in ids.chunks(sql::BATCH) {
            let values: Vec<sql::ValueRow> = sqlx::query_as(LOAD_VALUES)
                .bind(ws)
                .bind(chunk)
                .fetch_all(&mut *tx)
                .await
                .map_err(read_err("channel_values", "load values"))?;
            for row in values {
                let (id, value) = row.into_value()?;
                out.entry(id).or_default().values.push(value);
            }
            let attempts: Vec<sql::PastAttemptRow> = sqlx::query_as(LOAD_ATTEMPTS)
                .bind(ws)
                .bind(chunk)
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
                .bind(chunk)
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
        let mut tx = self.pool.begin().await.map_err(StoreError::db("begin"))?;
        // Creates or updates the period row, and so locks it until commit:
        // concurrent reservers of the period queue here.
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
        let mut tx = self.pool.begin().await.map_err(StoreError::db("begin"))?;
        let open: Option<sql::ReservationRow> = sqlx::query_as(OPEN_RESERVATION_FOR_UPDATE)
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
        let mut tx = self.pool.begin().await.map_err(StoreError::db("begin"))?;
        let lapsed: Vec<sql::ReservationRow> = sqlx::query_as(EXPIRED_RESERVATIONS)
            .bind(ws)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(read_err("reservations", "read expired reservations"))?;
        if lapsed.is_empty() {
            return Ok(0);
        }
        let mut per_period: BTreeMap<String, i64> = BTreeMap::new();
        for r in &lapsed {
            *per_period.entry(r.period.clone()).or_default() += r.remaining;
        }
        let periods: Vec<String> = per_period.keys().cloned().collect();
        lock_budgets(&mut tx, ws, &periods).await?;
        for r in &lapsed {
            close_reservation(&mut tx, ws, r.id).await?;
        }
        for (period, released) in &per_period {
            release_reserved(&mut tx, ws, period, *released).await?;
        }
        tx.commit().await.map_err(StoreError::db("commit settle"))?;
        Ok(lapsed.len() as u64)
    }
}

/// A deadlock or serialization failure: the transaction was rolled back and
/// can be run again.
fn is_retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Db {
            source: sqlx::Error::Database(db),
            ..
        } => matches!(db.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

/// Takes, in the global lock order, the row locks the batch's charges need:
/// the open reservations they settle against (by id), then the budget rows
/// of their periods and of those reservations' periods (by period), created
/// first if absent. Returns the open reservations, read under their lock.
async fn lock_for_charges(
    conn: &mut PgConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
) -> Result<Vec<sql::ReservationRow>, StoreError> {
    if batch.charges.is_empty() {
        return Ok(Vec::new());
    }
    let mut periods = batch.charge_periods();
    let reservations = batch.charge_reservations(None);
    let open: Vec<sql::ReservationRow> = if reservations.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(LOCK_RESERVATIONS)
            .bind(ws)
            .bind(&reservations)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_err("reservations", "lock reservations"))?
    };
    periods.extend(open.iter().map(|r| r.period.clone()));
    periods.sort();
    periods.dedup();
    sqlx::query(ENSURE_BUDGETS)
        .bind(ws)
        .bind(&periods)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("create budget periods"))?;
    lock_budgets(conn, ws, &periods).await?;
    Ok(open)
}

async fn lock_budgets(
    conn: &mut PgConnection,
    ws: &str,
    periods: &[String],
) -> Result<(), StoreError> {
    sqlx::query(LOCK_BUDGETS)
        .bind(ws)
        .bind(periods)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("lock budget periods"))?;
    Ok(())
}

async fn upsert_values(
    conn: &mut PgConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
) -> Result<(), StoreError> {
    for chunk in batch.values.chunks(sql::APPLY_CHUNK) {
        let n = chunk.len();
        let (mut leads, mut channels, mut values, mut sources, mut verifications) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut found_at, mut verified_at) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (lead, v) in chunk {
            leads.push(lead.as_str());
            channels.push(v.channel.as_str());
            values.push(v.value.as_str());
            sources.push(v.source.as_str());
            verifications.push(v.verification.as_str());
            found_at.push(v.found_at);
            verified_at.push(v.verified_at);
        }
        sqlx::query(UPSERT_VALUES)
            .bind(ws)
            .bind(leads)
            .bind(channels)
            .bind(values)
            .bind(sources)
            .bind(verifications)
            .bind(found_at)
            .bind(verified_at)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("upsert values"))?;
    }
    Ok(())
}

/// Inserts the batch's ledger rows; then, for the keys inserted now (and
/// only those), counts the charges in their budget periods and against
/// their open reservations (`open`, locked by [`lock_for_charges`], as are
/// the budget rows). Returns the keys inserted now.
async fn take_charges(
    conn: &mut PgConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
    open: &[sql::ReservationRow],
) -> Result<HashSet<String>, StoreError> {
    let mut taken = HashSet::new();
    for chunk in batch.charges.chunks(sql::APPLY_CHUNK) {
        let n = chunk.len();
        let (mut keys, mut leads, mut channels, mut values, mut sources) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut credits, mut periods, mut reservations, mut at) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for c in chunk {
            keys.push(c.charge.key.as_str());
            leads.push(c.lead_id.as_str());
            channels.push(c.value.channel.as_str());
            values.push(c.value.value.as_str());
            sources.push(c.value.source.as_str());
            credits.push(c.charge.credits);
            periods.push(c.charge.period.as_str());
            reservations.push(c.charge.reservation);
            at.push(c.value.found_at);
        }
        let inserted: Vec<String> = sqlx::query_scalar(INSERT_LEDGER)
            .bind(ws)
            .bind(keys)
            .bind(leads)
            .bind(channels)
            .bind(values)
            .bind(sources)
            .bind(credits)
            .bind(periods)
            .bind(reservations)
            .bind(at)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_err("ledger", "insert ledger"))?;
        taken.extend(inserted);
    }
    if taken.is_empty() {
        return Ok(taken);
    }
    let acc = batch.account(&taken, open);
    if !acc.consumed.is_empty() {
        let (ids, used): (Vec<i64>, Vec<i64>) = acc.consumed.iter().copied().unzip();
        sqlx::query(CONSUME_RESERVATIONS)
            .bind(ws)
            .bind(ids)
            .bind(used)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("consume reservations"))?;
    }
    if !acc.periods.is_empty() {
        let periods: Vec<&str> = acc.periods.iter().map(|p| p.period.as_str()).collect();
        let charged: Vec<i64> = acc.periods.iter().map(|p| p.charged).collect();
        let released: Vec<i64> = acc.periods.iter().map(|p| p.released).collect();
        sqlx::query(COUNT_CHARGES)
            .bind(ws)
            .bind(periods)
            .bind(charged)
            .bind(released)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("count charges"))?;
    }
    Ok(taken)
}

/// Returns the keys inserted now.
async fn insert_spend(
    conn: &mut PgConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
) -> Result<HashSet<String>, StoreError> {
    let mut recorded = HashSet::new();
    for chunk in batch.spends.chunks(sql::APPLY_CHUNK) {
        let n = chunk.len();
        let (mut keys, mut providers, mut accounts, mut leads) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut amounts, mut details, mut at) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for s in chunk {
            keys.push(s.key.as_str());
            providers.push(s.provider.as_str());
            accounts.push(s.account.as_str());
            leads.push(s.lead_id.as_ref().map(LeadId::as_str));
            amounts.push(s.amount);
            details.push(s.detail.as_str());
            at.push(s.at);
        }
        let inserted: Vec<String> = sqlx::query_scalar(INSERT_SPEND)
            .bind(ws)
            .bind(keys)
            .bind(providers)
            .bind(accounts)
            .bind(leads)
            .bind(amounts)
            .bind(details)
            .bind(at)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_err("spend", "insert spend"))?;
        recorded.extend(inserted);
    }
    Ok(recorded)
}

async fn insert_attempts(
    conn: &mut PgConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
) -> Result<(), StoreError> {
    for chunk in batch.attempts.chunks(sql::APPLY_CHUNK) {
        let n = chunk.len();
        let (mut runs, mut leads, mut channels, mut providers, mut accounts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut outcomes, mut details, mut values, mut costs, mut credits) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut statuses, mut tries, mut latencies, mut at) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for a in chunk {
            runs.push(a.run_id.as_str());
            leads.push(a.lead_id.as_str());
            channels.push(a.channel.as_str());
            providers.push(a.provider.as_str());
            accounts.push(a.account.as_str());
            outcomes.push(a.outcome.as_str());
            details.push(a.detail.as_str());
            values.push(a.value.as_deref());
            costs.push(a.provider_cost);
            credits.push(a.credits);
            statuses.push(a.http_status.map(i64::from));
            tries.push(i64::from(a.tries));
            latencies.push(i64::from(a.latency_ms));
            at.push(a.at);
        }
        sqlx::query(INSERT_ATTEMPTS)
            .bind(ws)
            .bind(runs)
            .bind(leads)
            .bind(channels)
            .bind(providers)
            .bind(accounts)
            .bind(outcomes)
            .bind(details)
            .bind(values)
            .bind(costs)
            .bind(credits)
            .bind(statuses)
            .bind(tries)
            .bind(latencies)
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("insert attempts"))?;
    }
    Ok(())
}

async fn upsert_statuses(
    conn: &mut PgConnection,
    ws: &str,
    batch: &sql::Batch<'_>,
) -> Result<(), StoreError> {
    for chunk in batch.statuses.chunks(sql::APPLY_CHUNK) {
        let n = chunk.len();
        let (mut leads, mut states, mut enrichment, mut reasons) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut retry_at, mut updated_at) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for s in chunk {
            leads.push(s.lead_id.as_str());
            states.push(s.state.as_str());
            enrichment.push(s.enrichment_status.as_deref());
            reasons.push(s.reason.as_str());
            retry_at.push(s.retry_at);
            updated_at.push(s.updated_at);
        }
        sqlx::query(UPSERT_STATUSES)
            .bind(ws)
            .bind(leads)
            .bind(states)
            .bind(enrichment)
            .bind(reasons)
            .bind(retry_at)
            .bind(updated_at)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db("upsert statuses"))?;
    }
    Ok(())
}

/// A `Job` or `JobState` op (rare: one statement each).
async fn apply_job(conn: &mut PgConnection, ws: &str, op: &WriteOp) -> Result<(), StoreError> {
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

async fn close_reservation(conn: &mut PgConnection, ws: &str, id: i64) -> Result<(), StoreError> {
    sqlx::query(sql::CLOSE_RESERVATION)
        .bind(ws)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("settle reservation"))?;
    Ok(())
}

async fn release_reserved(
    conn: &mut PgConnection,
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

impl Store for PgStore {
    /// Safe to run from every replica at once: see the module doc.
    fn migrate(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(StoreError::db("connect to migrate"))?;
            // sqlx's advisory lock is a session lock, and a failed migration
            // returns without unlocking: this connection is closed, never
            // handed back to the pool, so the lock ends with it whatever
            // happens (error, or this future dropped midway).
            conn.close_on_drop();
            // `run_direct` is what `run` calls once it holds a connection
            // (`run` itself trips "Acquire is not general enough" here).
            let result = MIGRATOR.run_direct(None, &mut *conn, false).await;
            let _ = conn.close().await;
            result?;
            Ok(())
        })
    }

    fn pending_migrations(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'")
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
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
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

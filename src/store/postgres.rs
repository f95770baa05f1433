//! The PostgreSQL backend: for several replicas sharing one database.
//!
//! * **Exactly once.** A charge is an `INSERT ... ON CONFLICT (workspace, key)
//!   DO NOTHING` into `ledger`, in the same transaction (READ COMMITTED) as
//!   the stored value. Two replicas inserting the same key: the second waits
//!   on the unique index until the first commits, then inserts nothing
//!   (`rows_affected = 0`), so it neither counts the charge in the budget nor
//!   consumes the reservation. Had the first rolled back, the second inserts.
//! * **Budget counters.** `reserve` upserts the period row (which locks it)
//!   and reserves with one conditional `UPDATE ... WHERE charged + reserved +
//!   amount <= limit`, so concurrent reservers are serialised on that row and
//!   can never exceed the limit together.
//! * **Lock order.** Transactions that touch reservations or budget rows lock
//!   them in one global order: reservations by id, then budget rows by
//!   period, before any other write. `apply` takes these locks up front for
//!   every charge in its batch: this is also what makes reading a
//!   reservation's `remaining` and decrementing it safe against a concurrent
//!   charge or settle. A deadlock can still arise between batches that
//!   upsert the same values or statuses in opposite orders: PostgreSQL then
//!   aborts one of them and `apply` reruns it (the whole transaction was
//!   rolled back, so rerunning is exact), as it does on a serialization
//!   failure.
//! * Migrations run under sqlx's advisory lock, so replicas may all call
//!   `migrate` at start-up.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::sql::{self, read_err};
use super::{
    Applied, BudgetRow, Charge, LeadState, LeadStatusRow, LedgerEntry, ProviderJob, Settlement,
    SpendEntry, Store, StoreError, StoreFuture, StoredLead, Totals, WriteOp,
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

/// Locks the open reservations a batch charges against, in id order.
/// $1 ws, $2 ids.
const LOCK_RESERVATIONS: &str = "\
SELECT period FROM reservations
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

/// Read while holding the row lock taken by [`LOCK_RESERVATIONS`].
/// $1 ws, $2 id.
const OPEN_RESERVATION: &str = "\
SELECT id, period, amount, remaining FROM reservations
WHERE workspace = $1 AND id = $2 AND state = 'open'";

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
    pool: PgPool,
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

    async fn apply_once(&self, ws: &str, ops: &[WriteOp]) -> Result<Vec<Applied>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::db("begin"))?;
        lock_for_charges(&mut tx, ws, ops).await?;
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
/// of their periods and of those reservations' periods (by period).
async fn lock_for_charges(
    conn: &mut PgConnection,
    ws: &str,
    ops: &[WriteOp],
) -> Result<(), StoreError> {
    let charges: Vec<&Charge> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Value {
                charge: Some(c), ..
            } => Some(c),
            _ => None,
        })
        .collect();
    if charges.is_empty() {
        return Ok(());
    }
    let mut periods: Vec<String> = charges.iter().map(|c| c.period.clone()).collect();
    let mut reservations: Vec<i64> = charges.iter().filter_map(|c| c.reservation).collect();
    reservations.sort_unstable();
    reservations.dedup();
    if !reservations.is_empty() {
        let reserved_in: Vec<String> = sqlx::query_scalar(LOCK_RESERVATIONS)
            .bind(ws)
            .bind(&reservations)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_err("reservations", "lock reservations"))?;
        periods.extend(reserved_in);
    }
    periods.sort();
    periods.dedup();
    sqlx::query(ENSURE_BUDGETS)
        .bind(ws)
        .bind(&periods)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("create budget periods"))?;
    lock_budgets(conn, ws, &periods).await
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

/// Applies one op inside the caller's transaction.
async fn apply_op(conn: &mut PgConnection, ws: &str, op: &WriteOp) -> Result<Applied, StoreError> {
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
    conn: &mut PgConnection,
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
/// budget period and against its reservation (whose row lock
/// [`lock_for_charges`] already holds). Returns whether it was new.
async fn take_charge(
    conn: &mut PgConnection,
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
    fn migrate(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            MIGRATOR.run(&self.pool).await?;
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

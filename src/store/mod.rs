//! Durable state behind one trait, two implementations: SQLite (the embedded
//! default) and PostgreSQL (several replicas). The store owns all SQL; every
//! query is scoped by workspace. Times are `UnixMillis` (`i64`) on both
//! databases; credits are integers; provider spend is in milli-credits.
//!
//! Writes that belong together go through [`Store::apply`], which runs a
//! batch of [`WriteOp`]s in one transaction: a stored value and its charge
//! commit together or not at all, and a charge is inserted under a unique
//! idempotency key, so it is taken exactly once whatever runs twice.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::core::channel::{Channel, ChannelSet};
use crate::core::lead::{Lead, LeadId, WorkspaceId};
use crate::core::outcome::{MilliCredits, OutcomeKind};
use crate::core::value::{ChannelValue, UnixMillis};

pub mod crm;
pub mod jobs;
pub mod keys;
pub mod lease;
pub mod lockfile;
pub mod postgres;
mod sql;
pub mod sqlite;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error during {op}: {source}")]
    Db {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
    #[error("unsupported database URL `{0}`: use sqlite://<file> or postgres://<user>@<host>/<db>")]
    UnsupportedUrl(String),
    /// `enrichd run`'s single-process lock of a SQLite file (see [`lockfile`]).
    #[error("{0}")]
    Locked(#[from] lockfile::LockError),
    /// A fenced write (see [`lease`]) under a lease this holder no longer
    /// has: nothing was written.
    #[error(
        "write refused: lease `{name}` is no longer held by `{holder}` with token {token} ({why}); nothing was written. This replica lost the work the lease guards: stop it, and acquire the lease again before writing"
    )]
    Fenced {
        name: String,
        holder: String,
        token: i64,
        why: lease::FenceReason,
    },
}

impl StoreError {
    pub fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Db { op, source }
    }
}

/// One provider attempt for one channel of one lead (the audit history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The run (CLI invocation, job) that made it.
    pub run_id: String,
    pub lead_id: LeadId,
    pub channel: Channel,
    /// Connector id (the Source a found value would carry).
    pub provider: String,
    /// Account id from config.toml.
    pub account: String,
    pub outcome: OutcomeKind,
    /// Human reason: HTTP status and the provider's words, or why a value was unusable.
    pub detail: String,
    /// The normalised value offered, when one was (found or unusable).
    pub value: Option<String>,
    /// What the provider billed for this attempt, attributed to this channel.
    pub provider_cost: MilliCredits,
    /// Customer credits charged (0 unless a usable value was stored and charged now).
    pub credits: i64,
    pub http_status: Option<u16>,
    /// HTTP tries made (retries included).
    pub tries: u32,
    pub latency_ms: u32,
    pub at: UnixMillis,
}

/// A customer charge for a stored value, idempotent under `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// Unique per workspace; see `core::ledger::charge_key`.
    pub key: String,
    pub credits: i64,
    /// Budget period the charge counts in, e.g. `2026-11`.
    pub period: String,
    /// The reservation it settles against, if any.
    pub reservation: Option<i64>,
}

/// A row of the customer-credit ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub key: String,
    pub lead_id: LeadId,
    pub channel: Channel,
    pub value: String,
    pub source: String,
    pub credits: i64,
    pub period: String,
    pub reservation: Option<i64>,
    pub at: UnixMillis,
}

/// A row of the provider-spend ledger, idempotent under `key` (e.g. the
/// provider's request or job id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendEntry {
    pub key: String,
    pub provider: String,
    pub account: String,
    pub lead_id: Option<LeadId>,
    pub amount: MilliCredits,
    pub detail: String,
    pub at: UnixMillis,
}

/// Where a lead stands in enrichd's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadState {
    /// Every reachable channel settled (filled, or every provider answered).
    Done,
    /// Some provider was skipped for now (rate limited, down, out of
    /// credits): retry at `retry_at`.
    Deferred,
    /// Waiting for budget (bulk selection by ICP score).
    Queued,
    /// Waiting for an async provider's callback or poll.
    Waiting,
    /// Not enough identity for any provider: not retried until the lead changes.
    NoIdentity,
    /// Gave up with a reason (e.g. every provider refused authentication).
    Failed,
}

impl LeadState {
    pub const fn as_str(self) -> &'static str {
        match self {
            LeadState::Done => "done",
            LeadState::Deferred => "deferred",
            LeadState::Queued => "queued",
            LeadState::Waiting => "waiting",
            LeadState::NoIdentity => "no_identity",
            LeadState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            LeadState::Done,
            LeadState::Deferred,
            LeadState::Queued,
            LeadState::Waiting,
            LeadState::NoIdentity,
            LeadState::Failed,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// The stored status row of a lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadStatusRow {
    pub lead_id: LeadId,
    pub state: LeadState,
    /// `full`, `partial`, `empty` (see `core::status`), or none for a lead in no audience.
    pub enrichment_status: Option<String>,
    pub reason: String,
    pub retry_at: Option<UnixMillis>,
    pub updated_at: UnixMillis,
}

/// An async provider job awaiting its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderJob {
    pub account: String,
    pub provider: String,
    pub job_id: String,
    /// Unguessable token carried in the callback URL.
    pub token: String,
    /// The leads and channels asked for, in request order.
    pub items: Vec<JobItem>,
    pub run_id: String,
    pub submitted_at: UnixMillis,
    /// After this, the result is no longer awaited (the lead is deferred).
    pub deadline: UnixMillis,
    pub state: JobState,
    /// The result body once received (callback or poll).
    pub result: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobItem {
    pub lead_id: LeadId,
    pub channels: ChannelSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    /// Result received and stored in `result`.
    Received,
    /// Result applied to the leads.
    Done,
    Expired,
}

impl JobState {
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Received => "received",
            JobState::Done => "done",
            JobState::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            JobState::Pending,
            JobState::Received,
            JobState::Done,
            JobState::Expired,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// A past attempt, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastAttempt {
    pub channel: Channel,
    pub provider: String,
    pub outcome: OutcomeKind,
    pub at: UnixMillis,
}

/// Everything stored about a lead that planning its enrichment needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredLead {
    pub values: Vec<ChannelValue>,
    /// Attempts, newest first, at most the last 100 per lead.
    pub attempts: Vec<PastAttempt>,
    pub status: Option<LeadStatusRow>,
}

/// A batch element for [`Store::apply`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Attempt(AttemptRecord),
    /// Upsert the lead's value for `value.channel`, and take `charge` if it is
    /// given and its key is new. Applied → [`Applied::Value`].
    Value {
        lead_id: LeadId,
        value: ChannelValue,
        charge: Option<Charge>,
    },
    Spend(SpendEntry),
    Status(LeadStatusRow),
    /// Insert or replace an async job (keyed by account + job id).
    Job(ProviderJob),
    /// Move a job to a new state, storing a result body if given.
    JobState {
        account: String,
        job_id: String,
        state: JobState,
        result: Option<Vec<u8>>,
    },
}

/// The effect of one [`WriteOp`], in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// `charged` is true when this op took the charge (its key was new).
    Value {
        charged: bool,
    },
    /// Spend entries: `recorded` is false for a duplicate key.
    Spend {
        recorded: bool,
    },
    Done,
}

/// The counters of one budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BudgetRow {
    pub limit: Option<i64>,
    pub charged: i64,
    /// Open reservations not yet consumed by charges.
    pub reserved: i64,
}

/// The result of settling a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub reserved: i64,
    /// Charged against it.
    pub used: i64,
    /// Given back to the budget now.
    pub released: i64,
}

/// Totals for reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub leads: u64,
    pub values: u64,
    pub charges: u64,
    pub credits: i64,
    pub attempts: u64,
    /// Provider spend per provider account, milli-credits.
    pub spend: Vec<(String, MilliCredits)>,
}

/// Durable state. Implementations: [`sqlite::SqliteStore`], [`postgres::PgStore`].
pub trait Store:
    crm::CrmStore + jobs::JobStore + keys::KeyStore + lease::LeaseStore + Send + Sync + 'static
{
    /// Applies the embedded migrations (idempotent; safe for replicas
    /// starting together on PostgreSQL).
    fn migrate(&self) -> StoreFuture<'_, ()>;

    /// The embedded migrations not applied yet (`version description`), in
    /// order: what `migrate` would do. Reads only.
    fn pending_migrations(&self) -> StoreFuture<'_, Vec<String>>;

    /// Inserts or updates leads (fields and ICP score).
    fn upsert_leads<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        leads: &'a [(Lead, f64)],
        now: UnixMillis,
    ) -> StoreFuture<'a, ()>;

    fn get_lead<'a>(&'a self, ws: &'a WorkspaceId, id: &'a LeadId)
    -> StoreFuture<'a, Option<Lead>>;

    /// Values, recent attempts and status of each lead (absent ids get a
    /// default `StoredLead`).
    fn load_leads<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        ids: &'a [LeadId],
    ) -> StoreFuture<'a, HashMap<LeadId, StoredLead>>;

    /// Applies `ops` in one transaction; the result has one entry per op.
    fn apply<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        ops: &'a [WriteOp],
    ) -> StoreFuture<'a, Vec<Applied>>;

    /// The counters of a budget period (zeros when it has none yet).
    fn budget<'a>(&'a self, ws: &'a WorkspaceId, period: &'a str) -> StoreFuture<'a, BudgetRow>;

    /// Atomically reserves `amount` credits in `period` if
    /// `charged + reserved + amount <= limit` (no check when `limit` is
    /// `None`). Returns the reservation id, or `None` when it does not fit.
    /// The reservation lapses at `expires_at` if never settled.
    fn reserve<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        period: &'a str,
        limit: Option<i64>,
        amount: i64,
        holder: &'a str,
        expires_at: UnixMillis,
    ) -> StoreFuture<'a, Option<i64>>;

    /// Settles a reservation: what was not charged against it returns to the
    /// budget. Settling twice is a no-op that returns `None`.
    fn settle<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        reservation: i64,
    ) -> StoreFuture<'a, Option<Settlement>>;

    /// Settles every open reservation past its `expires_at` (after a crash).
    fn settle_expired<'a>(&'a self, ws: &'a WorkspaceId, now: UnixMillis) -> StoreFuture<'a, u64>;

    fn values<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        id: &'a LeadId,
    ) -> StoreFuture<'a, Vec<ChannelValue>>;

    /// Attempts of a lead, oldest first.
    fn attempts<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        id: &'a LeadId,
    ) -> StoreFuture<'a, Vec<AttemptRecord>>;

    /// Customer-credit ledger of a workspace, oldest first.
    fn ledger<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<LedgerEntry>>;

    /// Provider-spend ledger of a workspace, oldest first.
    fn spend<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<SpendEntry>>;

    fn statuses<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<LeadStatusRow>>;

    /// Leads in `state` whose `retry_at` is due (or unset), highest ICP first.
    fn leads_in_state<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        state: LeadState,
        due_by: UnixMillis,
        limit: u32,
    ) -> StoreFuture<'a, Vec<LeadId>>;

    fn totals<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Totals>;

    /// Finds an async job by its callback token (tokens are unique across
    /// workspaces and unguessable), with its workspace.
    fn job_by_token<'a>(
        &'a self,
        token: &'a str,
    ) -> StoreFuture<'a, Option<(WorkspaceId, ProviderJob)>>;

    fn job<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        account: &'a str,
        job_id: &'a str,
    ) -> StoreFuture<'a, Option<ProviderJob>>;

    /// Jobs still pending or received but not applied.
    fn open_jobs<'a>(&'a self, ws: &'a WorkspaceId) -> StoreFuture<'a, Vec<ProviderJob>>;
}

/// Opens the store a URL names: `sqlite://path` (created if missing) or
/// `postgres://...`. Runs no migration.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

/// Opens the store for `enrichd run`, the one long-lived process: as
/// [`open`], but a SQLite file is first locked for this process
/// ([`lockfile::ProcessLock`], before the store is opened or migrated), so a
/// second `enrichd run` on the same file fails at once with
/// [`StoreError::Locked`]. Keep the returned lock for the process's life.
/// In-memory SQLite and PostgreSQL (where replicas share one database) take
/// no lock.
pub async fn open_exclusive(
    url: &str,
) -> Result<(std::sync::Arc<dyn Store>, Option<lockfile::ProcessLock>), StoreError> {
    let lock = if url.starts_with("sqlite:") {
        match sqlite::database_file(url)? {
            Some(db) => Some(lockfile::ProcessLock::acquire(&db)?),
            None => None,
        }
    } else {
        None
    };
    Ok((open(url).await?, lock))
}

/// Migrations of `migrator` whose version is not in `applied`.
pub(crate) fn pending_of(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> Vec<String> {
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect()
}

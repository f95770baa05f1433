//! What the two backends share: SQL text that is identical on SQLite and
//! PostgreSQL (`$N` placeholders, `ON CONFLICT`, `RETURNING`, `NULLS LAST`
//! all work on both), the raw row shapes read back (`sqlx::FromRow`, generic
//! over the database), and their conversion into domain types, which turns
//! unknown text (a channel `fax`, an outcome nobody defined) into
//! [`StoreError::Corrupt`] instead of a panic.
//!
//! SQL that must differ (row locks, batch id lists, the database clock)
//! lives in the backend modules.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::core::channel::Channel;
use crate::core::lead::{Lead, LeadId, WorkspaceId};
use crate::core::outcome::OutcomeKind;
use crate::core::value::{ChannelValue, Source, Verification};

use super::{
    AttemptRecord, BudgetRow, JobItem, JobState, LeadState, LeadStatusRow, LedgerEntry,
    PastAttempt, ProviderJob, SpendEntry, StoreError, Totals,
};

/// Rows per statement when writing or reading leads in batches.
pub(crate) const BATCH: usize = 500;

/// How many past attempts per lead `load_leads` returns.
pub(crate) const ATTEMPTS_PER_LEAD: i64 = 100;

// ---------------------------------------------------------------------------
// Writes ([`super::Store::apply`] and friends)

/// $1 ws, $2 lead, $3 channel, $4 value, $5 source, $6 verification,
/// $7 found_at, $8 verified_at.
pub(crate) const UPSERT_VALUE: &str = "\
INSERT INTO channel_values
    (workspace, lead_id, channel, value, source, verification, found_at, verified_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (workspace, lead_id, channel) DO UPDATE SET
    value = excluded.value,
    source = excluded.source,
    verification = excluded.verification,
    found_at = excluded.found_at,
    verified_at = excluded.verified_at";

/// The exactly-once point: a second insert of the same key does nothing
/// (rows affected = 0). $1 ws, $2 key, $3 lead, $4 channel, $5 value,
/// $6 source, $7 credits, $8 period, $9 reservation, $10 at.
pub(crate) const INSERT_LEDGER: &str = "\
INSERT INTO ledger
    (workspace, key, lead_id, channel, value, source, credits, period, reservation, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (workspace, key) DO NOTHING";

/// `charged += credits`, creating the period row if absent.
/// $1 ws, $2 period, $3 credits.
pub(crate) const ADD_CHARGED: &str = "\
INSERT INTO budget_periods (workspace, period, limit_credits, charged, reserved)
VALUES ($1, $2, NULL, $3, 0)
ON CONFLICT (workspace, period) DO UPDATE SET
    charged = budget_periods.charged + excluded.charged";

/// $1 ws, $2 reservation id, $3 credits used.
pub(crate) const CONSUME_RESERVATION: &str = "\
UPDATE reservations SET remaining = remaining - $3
WHERE workspace = $1 AND id = $2 AND state = 'open'";

/// $1 ws, $2 period, $3 credits no longer reserved.
pub(crate) const RELEASE_RESERVED: &str = "\
UPDATE budget_periods SET reserved = reserved - $3
WHERE workspace = $1 AND period = $2";

/// $1 ws, $2 run, $3 lead, $4 channel, $5 provider, $6 account, $7 outcome,
/// $8 detail, $9 value, $10 provider_cost, $11 credits, $12 http_status,
/// $13 tries, $14 latency_ms, $15 at.
pub(crate) const INSERT_ATTEMPT: &str = "\
INSERT INTO attempts
    (workspace, run_id, lead_id, channel, provider, account, outcome, detail, value,
     provider_cost, credits, http_status, tries, latency_ms, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// $1 ws, $2 key, $3 provider, $4 account, $5 lead, $6 amount, $7 detail, $8 at.
pub(crate) const INSERT_SPEND: &str = "\
INSERT INTO spend (workspace, key, provider, account, lead_id, amount, detail, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (workspace, key) DO NOTHING";

/// $1 ws, $2 lead, $3 state, $4 enrichment_status, $5 reason, $6 retry_at, $7 updated_at.
pub(crate) const UPSERT_STATUS: &str = "\
INSERT INTO lead_status
    (workspace, lead_id, state, enrichment_status, reason, retry_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (workspace, lead_id) DO UPDATE SET
    state = excluded.state,
    enrichment_status = excluded.enrichment_status,
    reason = excluded.reason,
    retry_at = excluded.retry_at,
    updated_at = excluded.updated_at";

/// $1 ws, $2 account, $3 job_id, $4 token, $5 provider, $6 items (JSON),
/// $7 run, $8 submitted_at, $9 deadline, $10 state, $11 result.
pub(crate) const UPSERT_JOB: &str = "\
INSERT INTO provider_jobs
    (workspace, account, job_id, token, provider, items, run_id, submitted_at, deadline,
     state, result)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (workspace, account, job_id) DO UPDATE SET
    token = excluded.token,
    provider = excluded.provider,
    items = excluded.items,
    run_id = excluded.run_id,
    submitted_at = excluded.submitted_at,
    deadline = excluded.deadline,
    state = excluded.state,
    result = excluded.result";

/// $1 ws, $2 account, $3 job_id, $4 state, $5 result (kept when NULL).
pub(crate) const UPDATE_JOB_STATE: &str = "\
UPDATE provider_jobs SET state = $4, result = COALESCE($5, result)
WHERE workspace = $1 AND account = $2 AND job_id = $3";

// ---------------------------------------------------------------------------
// Budget and reservations

/// Ensures the period row and records the limit in force.
/// $1 ws, $2 period, $3 limit.
pub(crate) const SET_LIMIT: &str = "\
INSERT INTO budget_periods (workspace, period, limit_credits, charged, reserved)
VALUES ($1, $2, $3, 0, 0)
ON CONFLICT (workspace, period) DO UPDATE SET limit_credits = excluded.limit_credits";

/// One conditional statement: it either reserves or changes nothing.
/// $1 ws, $2 period, $3 amount.
pub(crate) const RESERVE_IF_FITS: &str = "\
UPDATE budget_periods SET reserved = reserved + $3
WHERE workspace = $1 AND period = $2
  AND (limit_credits IS NULL OR charged + reserved + $3 <= limit_credits)";

/// $1 ws, $2 reservation id.
pub(crate) const CLOSE_RESERVATION: &str = "\
UPDATE reservations SET state = 'settled', remaining = 0
WHERE workspace = $1 AND id = $2";

/// $1 ws, $2 period.
pub(crate) const SELECT_BUDGET: &str = "\
SELECT limit_credits, charged, reserved FROM budget_periods
WHERE workspace = $1 AND period = $2";

// ---------------------------------------------------------------------------
// Reads

/// $1 ws, $2 lead.
pub(crate) const SELECT_LEAD: &str = "\
SELECT lead_id, fields FROM leads WHERE workspace = $1 AND lead_id = $2";

/// $1 ws, $2 lead.
pub(crate) const SELECT_VALUES: &str = "\
SELECT lead_id, channel, value, source, verification, found_at, verified_at
FROM channel_values WHERE workspace = $1 AND lead_id = $2";

/// $1 ws, $2 lead; oldest first.
pub(crate) const SELECT_ATTEMPTS: &str = "\
SELECT run_id, lead_id, channel, provider, account, outcome, detail, value, provider_cost,
       credits, http_status, tries, latency_ms, at
FROM attempts WHERE workspace = $1 AND lead_id = $2 ORDER BY at, id";

/// $1 ws; oldest first.
pub(crate) const SELECT_LEDGER: &str = "\
SELECT key, lead_id, channel, value, source, credits, period, reservation, at
FROM ledger WHERE workspace = $1 ORDER BY at, id";

/// $1 ws; oldest first.
pub(crate) const SELECT_SPEND: &str = "\
SELECT key, provider, account, lead_id, amount, detail, at
FROM spend WHERE workspace = $1 ORDER BY at, id";

/// $1 ws.
pub(crate) const SELECT_STATUSES: &str = "\
SELECT lead_id, state, enrichment_status, reason, retry_at, updated_at
FROM lead_status WHERE workspace = $1 ORDER BY lead_id";

/// $1 ws, $2 state, $3 due_by, $4 limit. A status without a lead row sorts
/// after every scored lead.
pub(crate) const LEADS_IN_STATE: &str = "\
SELECT s.lead_id FROM lead_status s
LEFT JOIN leads l ON l.workspace = s.workspace AND l.lead_id = s.lead_id
WHERE s.workspace = $1 AND s.state = $2 AND (s.retry_at IS NULL OR s.retry_at <= $3)
ORDER BY l.icp_score DESC NULLS LAST, s.lead_id
LIMIT $4";

/// $1 ws.
pub(crate) const TOTALS: &str = "\
SELECT
    (SELECT COUNT(*) FROM leads WHERE workspace = $1) AS leads,
    (SELECT COUNT(*) FROM channel_values WHERE workspace = $1) AS n_values,
    (SELECT COUNT(*) FROM ledger WHERE workspace = $1) AS charges,
    (SELECT CAST(COALESCE(SUM(credits), 0) AS BIGINT) FROM ledger WHERE workspace = $1) AS credits,
    (SELECT COUNT(*) FROM attempts WHERE workspace = $1) AS attempts";

/// $1 ws.
pub(crate) const SPEND_PER_ACCOUNT: &str = "\
SELECT account, CAST(SUM(amount) AS BIGINT) AS amount FROM spend
WHERE workspace = $1 GROUP BY account";

/// $1 token (the only query not scoped by workspace: it finds the workspace).
pub(crate) const JOB_BY_TOKEN: &str = "\
SELECT workspace, account, provider, job_id, token, items, run_id, submitted_at, deadline,
       state, result
FROM provider_jobs WHERE token = $1";

/// $1 ws, $2 account, $3 job_id.
pub(crate) const SELECT_JOB: &str = "\
SELECT workspace, account, provider, job_id, token, items, run_id, submitted_at, deadline,
       state, result
FROM provider_jobs WHERE workspace = $1 AND account = $2 AND job_id = $3";

/// $1 ws.
pub(crate) const OPEN_JOBS: &str = "\
SELECT workspace, account, provider, job_id, token, items, run_id, submitted_at, deadline,
       state, result
FROM provider_jobs WHERE workspace = $1 AND state IN ('pending', 'received')
ORDER BY submitted_at, account, job_id";

// ---------------------------------------------------------------------------
// Errors

/// Maps a read error: a value that does not decode is a corrupt row of
/// `table`; anything else is a database error during `op`.
pub(crate) fn read_err(
    table: &'static str,
    op: &'static str,
) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt {
            table,
            message: e.to_string(),
        },
        source => StoreError::Db { op, source },
    }
}

fn corrupt(table: &'static str, message: String) -> StoreError {
    StoreError::Corrupt { table, message }
}

fn parse_channel(table: &'static str, s: &str) -> Result<Channel, StoreError> {
    Channel::from_str(s).map_err(|e| corrupt(table, e.to_string()))
}

fn parse_outcome(table: &'static str, s: &str) -> Result<OutcomeKind, StoreError> {
    OutcomeKind::parse(s).ok_or_else(|| corrupt(table, format!("unknown outcome `{s}`")))
}

fn parse_verification(table: &'static str, s: &str) -> Result<Verification, StoreError> {
    Verification::parse(s).ok_or_else(|| corrupt(table, format!("unknown verification `{s}`")))
}

fn int<T: TryFrom<i64>>(table: &'static str, column: &str, v: i64) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| corrupt(table, format!("{column} out of range: {v}")))
}

// ---------------------------------------------------------------------------
// Domain -> storage

/// The storage form of a job's items (JSON text).
pub(crate) fn items_json(items: &[JobItem]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|e| corrupt("provider_jobs", e.to_string()))
}

/// The storage form of a lead's fields (JSON text).
pub(crate) fn fields_json(lead: &Lead) -> Result<String, StoreError> {
    serde_json::to_string(&lead.fields).map_err(|e| corrupt("leads", e.to_string()))
}

/// ICP scores are stored as finite numbers (NaN would sort first on PostgreSQL).
pub(crate) fn finite_score(score: f64) -> f64 {
    if score.is_finite() { score } else { 0.0 }
}

/// The last occurrence of each lead wins; the order of first appearance is kept.
pub(crate) fn dedup_leads(leads: &[(Lead, f64)]) -> Vec<&(Lead, f64)> {
    let mut last: std::collections::HashMap<&LeadId, usize> = std::collections::HashMap::new();
    for (i, (lead, _)) in leads.iter().enumerate() {
        last.insert(&lead.id, i);
    }
    leads
        .iter()
        .enumerate()
        .filter(|(i, (lead, _))| last.get(&lead.id) == Some(i))
        .map(|(_, l)| l)
        .collect()
}

/// Distinct ids, in the order asked.
pub(crate) fn dedup_ids(ids: &[LeadId]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .map(|id| id.0.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// Storage -> domain

#[derive(sqlx::FromRow)]
pub(crate) struct LeadRow {
    pub lead_id: String,
    pub fields: String,
}

impl LeadRow {
    pub fn into_lead(self) -> Result<Lead, StoreError> {
        let fields: BTreeMap<String, serde_json::Value> = serde_json::from_str(&self.fields)
            .map_err(|e| corrupt("leads", format!("fields of lead {}: {e}", self.lead_id)))?;
        Ok(Lead {
            id: LeadId(self.lead_id),
            fields,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ValueRow {
    pub lead_id: String,
    pub channel: String,
    pub value: String,
    pub source: String,
    pub verification: String,
    pub found_at: i64,
    pub verified_at: Option<i64>,
}

impl ValueRow {
    pub fn into_value(self) -> Result<(LeadId, ChannelValue), StoreError> {
        const T: &str = "channel_values";
        Ok((
            LeadId(self.lead_id),
            ChannelValue {
                channel: parse_channel(T, &self.channel)?,
                value: self.value,
                source: Source(self.source),
                verification: parse_verification(T, &self.verification)?,
                found_at: self.found_at,
                verified_at: self.verified_at,
            },
        ))
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PastAttemptRow {
    pub lead_id: String,
    pub channel: String,
    pub provider: String,
    pub outcome: String,
    pub at: i64,
}

impl PastAttemptRow {
    pub fn into_past(self) -> Result<(LeadId, PastAttempt), StoreError> {
        const T: &str = "attempts";
        Ok((
            LeadId(self.lead_id),
            PastAttempt {
                channel: parse_channel(T, &self.channel)?,
                provider: self.provider,
                outcome: parse_outcome(T, &self.outcome)?,
                at: self.at,
            },
        ))
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttemptRow {
    pub run_id: String,
    pub lead_id: String,
    pub channel: String,
    pub provider: String,
    pub account: String,
    pub outcome: String,
    pub detail: String,
    pub value: Option<String>,
    pub provider_cost: i64,
    pub credits: i64,
    pub http_status: Option<i64>,
    pub tries: i64,
    pub latency_ms: i64,
    pub at: i64,
}

impl AttemptRow {
    pub fn into_record(self) -> Result<AttemptRecord, StoreError> {
        const T: &str = "attempts";
        Ok(AttemptRecord {
            run_id: self.run_id,
            lead_id: LeadId(self.lead_id),
            channel: parse_channel(T, &self.channel)?,
            provider: self.provider,
            account: self.account,
            outcome: parse_outcome(T, &self.outcome)?,
            detail: self.detail,
            value: self.value,
            provider_cost: self.provider_cost,
            credits: self.credits,
            http_status: self
                .http_status
                .map(|s| int(T, "http_status", s))
                .transpose()?,
            tries: int(T, "tries", self.tries)?,
            latency_ms: int(T, "latency_ms", self.latency_ms)?,
            at: self.at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct LedgerRow {
    pub key: String,
    pub lead_id: String,
    pub channel: String,
    pub value: String,
    pub source: String,
    pub credits: i64,
    pub period: String,
    pub reservation: Option<i64>,
    pub at: i64,
}

impl LedgerRow {
    pub fn into_entry(self) -> Result<LedgerEntry, StoreError> {
        Ok(LedgerEntry {
            key: self.key,
            lead_id: LeadId(self.lead_id),
            channel: parse_channel("ledger", &self.channel)?,
            value: self.value,
            source: self.source,
            credits: self.credits,
            period: self.period,
            reservation: self.reservation,
            at: self.at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SpendRow {
    pub key: String,
    pub provider: String,
    pub account: String,
    pub lead_id: Option<String>,
    pub amount: i64,
    pub detail: String,
    pub at: i64,
}

impl SpendRow {
    pub fn into_entry(self) -> SpendEntry {
        SpendEntry {
            key: self.key,
            provider: self.provider,
            account: self.account,
            lead_id: self.lead_id.map(LeadId),
            amount: self.amount,
            detail: self.detail,
            at: self.at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct StatusRow {
    pub lead_id: String,
    pub state: String,
    pub enrichment_status: Option<String>,
    pub reason: String,
    pub retry_at: Option<i64>,
    pub updated_at: i64,
}

impl StatusRow {
    pub fn into_status(self) -> Result<LeadStatusRow, StoreError> {
        let state = LeadState::parse(&self.state).ok_or_else(|| {
            corrupt(
                "lead_status",
                format!("unknown state `{}` of lead {}", self.state, self.lead_id),
            )
        })?;
        Ok(LeadStatusRow {
            lead_id: LeadId(self.lead_id),
            state,
            enrichment_status: self.enrichment_status,
            reason: self.reason,
            retry_at: self.retry_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct BudgetDbRow {
    pub limit_credits: Option<i64>,
    pub charged: i64,
    pub reserved: i64,
}

impl From<BudgetDbRow> for BudgetRow {
    fn from(r: BudgetDbRow) -> Self {
        BudgetRow {
            limit: r.limit_credits,
            charged: r.charged,
            reserved: r.reserved,
        }
    }
}

/// An open reservation as settling needs it.
#[derive(sqlx::FromRow)]
pub(crate) struct ReservationRow {
    pub id: i64,
    pub period: String,
    pub amount: i64,
    pub remaining: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct TotalsRow {
    pub leads: i64,
    pub n_values: i64,
    pub charges: i64,
    pub credits: i64,
    pub attempts: i64,
}

impl TotalsRow {
    pub fn into_totals(self, mut spend: Vec<(String, i64)>) -> Result<Totals, StoreError> {
        const T: &str = "totals";
        spend.sort();
        Ok(Totals {
            leads: int(T, "leads", self.leads)?,
            values: int(T, "values", self.n_values)?,
            charges: int(T, "charges", self.charges)?,
            credits: self.credits,
            attempts: int(T, "attempts", self.attempts)?,
            spend,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    pub workspace: String,
    pub account: String,
    pub provider: String,
    pub job_id: String,
    pub token: String,
    pub items: String,
    pub run_id: String,
    pub submitted_at: i64,
    pub deadline: i64,
    pub state: String,
    pub result: Option<Vec<u8>>,
}

impl JobRow {
    pub fn into_job(self) -> Result<(WorkspaceId, ProviderJob), StoreError> {
        const T: &str = "provider_jobs";
        let items: Vec<JobItem> = serde_json::from_str(&self.items)
            .map_err(|e| corrupt(T, format!("items of job {}: {e}", self.job_id)))?;
        let state = JobState::parse(&self.state).ok_or_else(|| {
            corrupt(
                T,
                format!("unknown state `{}` of job {}", self.state, self.job_id),
            )
        })?;
        Ok((
            WorkspaceId(self.workspace),
            ProviderJob {
                account: self.account,
                provider: self.provider,
                job_id: self.job_id,
                token: self.token,
                items,
                run_id: self.run_id,
                submitted_at: self.submitted_at,
                deadline: self.deadline,
                state,
                result: self.result,
            },
        ))
    }
}

/// Values of one lead in channel order (the order reports list them in).
pub(crate) fn sort_values(values: &mut [ChannelValue]) {
    values.sort_by_key(|v| v.channel);
}

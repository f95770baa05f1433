//! What the two backends share: SQL text that is identical on SQLite and
//! PostgreSQL (`$N` placeholders, `ON CONFLICT`, `RETURNING`, `NULLS LAST`
//! all work on both), the raw row shapes read back (`sqlx::FromRow`, generic
//! over the database), and their conversion into domain types, which turns
//! unknown text (a channel `fax`, an outcome nobody defined) into
//! [`StoreError::Corrupt`] instead of a panic.
//!
//! Also the backend-independent half of [`super::Store::apply`]: [`Batch`]
//! groups a batch's ops by kind and reduces them to the rows applying them
//! one by one would leave behind (last value per lead and channel, last
//! status per lead, first op per charge or spend key); [`Batch::account`]
//! turns the charge keys actually inserted into per-period and
//! per-reservation counter updates; [`Batch::applied`] maps the inserted
//! keys back to one [`super::Applied`] per op.
//!
//! SQL that must differ (row locks, batch id lists and multi-row writes,
//! the database clock) lives in the backend modules.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use crate::core::channel::Channel;
use crate::core::lead::{Lead, LeadId, WorkspaceId};
use crate::core::outcome::OutcomeKind;
use crate::core::value::{ChannelValue, Source, Verification};

use super::{
    Applied, AttemptRecord, BudgetRow, Charge, JobItem, JobState, LeadState, LeadStatusRow,
    LedgerEntry, PastAttempt, ProviderJob, SpendEntry, StoreError, Totals, WriteOp,
};

/// Rows per statement when writing or reading leads in batches.
pub(crate) const BATCH: usize = 500;

/// How many past attempts per lead `load_leads` returns.
pub(crate) const ATTEMPTS_PER_LEAD: i64 = 100;

// ---------------------------------------------------------------------------
// Writes ([`super::Store::apply`] and friends). The multi-row statements of
// `apply` differ per backend (JSON array vs typed arrays) and live there.

/// $1 ws, $2 period, $3 credits no longer reserved.
pub(crate) const RELEASE_RESERVED: &str = "\
UPDATE budget_periods SET reserved = reserved - $3
WHERE workspace = $1 AND period = $2";

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
// Batches ([`super::Store::apply`])

/// Most rows one multi-row statement of `apply` carries.
pub(crate) const APPLY_CHUNK: usize = 1_000;

/// A `WriteOp::Value` that carries a charge: what its ledger row needs.
pub(crate) struct ChargeOp<'a> {
    pub lead_id: &'a LeadId,
    pub value: &'a ChannelValue,
    pub charge: &'a Charge,
}

/// The ops of one `apply` batch grouped by kind and reduced to the rows that
/// applying them one by one, in order, would leave behind. Each group is
/// then written with multi-row statements.
pub(crate) struct Batch<'a> {
    ops: &'a [WriteOp],
    /// The last value per (lead, channel) (an upsert: the last op wins), in
    /// key order (so that concurrent batches lock rows in one order).
    pub values: Vec<(&'a LeadId, &'a ChannelValue)>,
    /// The first charge per key, in op order: a later op with the same key
    /// would find the key taken and insert nothing.
    pub charges: Vec<ChargeOp<'a>>,
    /// The first spend entry per key, in op order (same reason).
    pub spends: Vec<&'a SpendEntry>,
    /// Every attempt, in op order (their ids follow it).
    pub attempts: Vec<&'a AttemptRecord>,
    /// The last status per lead (an upsert: the last op wins), in lead order.
    pub statuses: Vec<&'a LeadStatusRow>,
    /// `Job` and `JobState` ops, in op order: rare, applied one by one.
    pub jobs: Vec<&'a WriteOp>,
}

impl<'a> Batch<'a> {
    pub fn new(ops: &'a [WriteOp]) -> Self {
        let mut values: HashMap<(&str, Channel), (&LeadId, &ChannelValue)> = HashMap::new();
        let mut statuses: HashMap<&str, &LeadStatusRow> = HashMap::new();
        let mut charge_keys: HashSet<&str> = HashSet::new();
        let mut spend_keys: HashSet<&str> = HashSet::new();
        let mut batch = Batch {
            ops,
            values: Vec::new(),
            charges: Vec::new(),
            spends: Vec::new(),
            attempts: Vec::new(),
            statuses: Vec::new(),
            jobs: Vec::new(),
        };
        for op in ops {
            match op {
                WriteOp::Attempt(a) => batch.attempts.push(a),
                WriteOp::Value {
                    lead_id,
                    value,
                    charge,
                } => {
                    values.insert((lead_id.as_str(), value.channel), (lead_id, value));
                    if let Some(charge) = charge
                        && charge_keys.insert(&charge.key)
                    {
                        batch.charges.push(ChargeOp {
                            lead_id,
                            value,
                            charge,
                        });
                    }
                }
                WriteOp::Spend(s) => {
                    if spend_keys.insert(&s.key) {
                        batch.spends.push(s);
                    }
                }
                WriteOp::Status(s) => {
                    statuses.insert(s.lead_id.as_str(), s);
                }
                WriteOp::Job(_) | WriteOp::JobState { .. } => batch.jobs.push(op),
            }
        }
        batch.values = values.into_values().collect();
        batch
            .values
            .sort_unstable_by(|a, b| (a.0.as_str(), a.1.channel).cmp(&(b.0.as_str(), b.1.channel)));
        batch.statuses = statuses.into_values().collect();
        batch
            .statuses
            .sort_unstable_by(|a, b| a.lead_id.as_str().cmp(b.lead_id.as_str()));
        batch
    }

    /// Distinct periods of the batch's charges, sorted.
    pub fn charge_periods(&self) -> Vec<String> {
        let periods: BTreeSet<&str> = self
            .charges
            .iter()
            .map(|c| c.charge.period.as_str())
            .collect();
        periods.into_iter().map(str::to_string).collect()
    }

    /// Distinct reservations the batch's charges settle against (only those
    /// whose key is in `taken`, if given), sorted.
    pub fn charge_reservations(&self, taken: Option<&HashSet<String>>) -> Vec<i64> {
        let ids: BTreeSet<i64> = self
            .charges
            .iter()
            .filter(|c| taken.is_none_or(|t| t.contains(&c.charge.key)))
            .filter_map(|c| c.charge.reservation)
            .collect();
        ids.into_iter().collect()
    }

    /// What the newly taken charges (keys in `taken`) do to the counters,
    /// given the open reservations they may settle against (`open`, any
    /// superset will do). Per reservation, charging one by one consumes
    /// `min(credits, remaining)` each time, clamped at 0, so the total is
    /// `clamp(sum of positive credits, 0, remaining)`; the reservation's
    /// period gets the same amount back from `reserved`.
    pub fn account(&self, taken: &HashSet<String>, open: &[ReservationRow]) -> Accounting {
        let mut periods: BTreeMap<&str, PeriodDelta> = BTreeMap::new();
        let mut against: BTreeMap<i64, i64> = BTreeMap::new();
        for c in self.charges.iter().map(|c| c.charge) {
            if !taken.contains(&c.key) {
                continue;
            }
            let p = periods
                .entry(&c.period)
                .or_insert_with(|| PeriodDelta::new(&c.period));
            p.charged = p.charged.saturating_add(c.credits);
            p.has_charges = true;
            if let Some(id) = c.reservation {
                let sum = against.entry(id).or_default();
                *sum = sum.saturating_add(c.credits.max(0));
            }
        }
        let open: HashMap<i64, &ReservationRow> = open.iter().map(|r| (r.id, r)).collect();
        let mut consumed = Vec::new();
        for (id, credits) in against {
            let Some(r) = open.get(&id) else {
                continue; // settled or unknown: the charge is counted, nothing is consumed
            };
            let used = credits.min(r.remaining).max(0);
            if used > 0 {
                consumed.push((id, used));
                let p = periods
                    .entry(&r.period)
                    .or_insert_with(|| PeriodDelta::new(&r.period));
                p.released = p.released.saturating_add(used);
            }
        }
        Accounting {
            consumed,
            periods: periods.into_values().collect(),
        }
    }

    /// One result per op, in op order: a charge or a spend entry is taken by
    /// the first op carrying its key, if that key was inserted now.
    pub fn applied(&self, taken: &HashSet<String>, recorded: &HashSet<String>) -> Vec<Applied> {
        let mut charge_seen: HashSet<&str> = HashSet::new();
        let mut spend_seen: HashSet<&str> = HashSet::new();
        self.ops
            .iter()
            .map(|op| match op {
                WriteOp::Value { charge, .. } => Applied::Value {
                    charged: charge.as_ref().is_some_and(|c| {
                        charge_seen.insert(c.key.as_str()) && taken.contains(&c.key)
                    }),
                },
                WriteOp::Spend(s) => Applied::Spend {
                    recorded: spend_seen.insert(s.key.as_str()) && recorded.contains(&s.key),
                },
                WriteOp::Attempt(_)
                | WriteOp::Status(_)
                | WriteOp::Job(_)
                | WriteOp::JobState { .. } => Applied::Done,
            })
            .collect()
    }
}

/// The counter updates of a batch's new charges.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Accounting {
    /// (reservation id, credits consumed), by id; only positive amounts.
    pub consumed: Vec<(i64, i64)>,
    /// One entry per budget period touched, by period.
    pub periods: Vec<PeriodDelta>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PeriodDelta {
    pub period: String,
    /// `charged += charged`.
    pub charged: i64,
    /// A new charge counts in this period: its row is created if absent (as
    /// the first charge of a period does). Otherwise the row is only updated.
    pub has_charges: bool,
    /// `reserved -= released` (consumed reservations of this period).
    pub released: i64,
}

impl PeriodDelta {
    fn new(period: &str) -> Self {
        PeriodDelta {
            period: period.to_string(),
            charged: 0,
            has_charges: false,
            released: 0,
        }
    }
}

/// A JSON payload for SQLite's `json_each` (one array element per row).
pub(crate) fn json_payload<T: serde::Serialize + ?Sized>(
    table: &'static str,
    rows: &T,
) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| corrupt(table, e.to_string()))
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

//! Write-back planning (§3): sObject Collections for steady state, Bulk API
//! 2.0 ingest above a threshold; pure bodies in, per-record outcomes out.
//!
//! **Items.** A [`WriteItem`] is one record's changes, built from the same
//! field decisions the preview shows ([`WriteItem::from_decisions`] over
//! `preview::plan_lead(…).decisions`, as `crm::hubspot::sync::plan_writes`
//! does). It carries its *groups* (a channel's value field and its Source
//! field): when Salesforce refuses one, the other is dropped too
//! (ARCHITECTURE.md invariant 11: a value never goes without its Source, a
//! Source never without its value), and the enriched-at field is dropped
//! when no channel value is left to date.
//!
//! **Collections** (§3.3): `PATCH /composite/sobjects` with at most
//! [`COLLECTION_MAX`] records, `allOrNone: false`; records sorted by type
//! so a request holds at most two type chunks (the limit is 10), each Id
//! at most once. The answer is HTTP 200 even when records fail; results
//! come in request order, errors keyed `statusCode`. [`CollectionRequest::outcomes`]
//! turns them into [`RecordOutcome`]s: written; retry (a retryable code
//! such as `UNABLE_TO_LOCK_ROW`, up to [`MAX_ATTEMPTS`]; or the record
//! without the fields an error named, with their partners); failed with
//! the reason. With `allOrNone: false` a failing record writes nothing, so
//! re-sending it without the refused fields writes the rest.
//!
//! **Headers** (§3.1) as data: `Sforce-Auto-Assign: FALSE` (otherwise
//! assignment rules may reassign a Lead's owner on update), the duplicate-
//! rule header (policy configurable; default `allowSave=true`, which
//! overrides "alert" rules only), `Sforce-Call-Options: client=enrichd`.
//!
//! **Bulk 2.0 ingest** (§3.6) for more than [`DEFAULT_BULK_THRESHOLD`]
//! pending records of one object (configurable): the job JSON, the CSV
//! (header `Id` + the union of changed fields; an empty cell leaves a field
//! unchanged, `#N/A` sets it to null; RFC 4180 quoting; LF line endings),
//! job states, and `failedResults` (`sf__Id`, `sf__Error` + the original
//! columns) read into the same per-record outcomes, joined on `Id` (result
//! order is not guaranteed). A `JobComplete` job's other rows were written
//! unless `unprocessedrecords` lists them ([`bulk_outcomes`]); a `Failed` or
//! `Aborted` job's rows count as written only when `successfulResults`
//! names them, and all the others are retried ([`bulk_outcomes_unfinished`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::errors::{RecordError, RecordErrorKind, field_in_message, record_error_kind};
use super::{SObject, data_path, same_id};
use crate::core::lead::LeadId;
use crate::core::mapping::{Action, FieldDecision, FieldRole};

/// Records per sObject Collections request (§3.3).
pub const COLLECTION_MAX: usize = 200;
/// Above this many pending records of one object, Bulk 2.0 ingest (§3.6:
/// Salesforce recommends Bulk above roughly 2,000 records).
pub const DEFAULT_BULK_THRESHOLD: usize = 2_000;
/// Sends per record for retryable per-record failures.
pub const MAX_ATTEMPTS: u32 = 3;
/// A Bulk CSV cell that sets a field to null (§3.6).
pub const CSV_NULL: &str = "#N/A";
/// Largest raw CSV per upload (§3.6: 100 MB raw, 150 MB base64); uploads
/// are split well below it.
pub const MAX_CSV_BYTES: usize = 64 * 1024 * 1024;
/// `Sforce-Call-Options: client=…` value: lets enrichd recognise its own
/// changes where Salesforce reports the client (CDC `changeOrigin`, §3.1).
pub const CLIENT_NAME: &str = "enrichd";

/// Why a write could not be planned or its answer read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("a Collections request holds 1 to {COLLECTION_MAX} records, not {0}")]
    BatchSize(usize),
    #[error("Salesforce {endpoint}: unexpected answer: {message}")]
    Decode { endpoint: String, message: String },
    #[error(
        "Salesforce {endpoint}: {got} results for {sent} records sent; the batch is sent again (updates are idempotent)"
    )]
    ResultCount {
        endpoint: String,
        sent: usize,
        got: usize,
    },
    #[error("Salesforce {endpoint}: result {index} is about record {got}, not {sent}")]
    ResultMismatch {
        endpoint: String,
        index: usize,
        sent: String,
        got: String,
    },
    #[error("CSV: {0}")]
    Csv(String),
    #[error("`{0}` is not a Bulk API job id")]
    BadJobId(String),
}

/// One record's changes and the fields that go together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteItem {
    pub object: SObject,
    pub id: LeadId,
    /// Field → new value; `None` (or blank text) sets the field to null.
    pub changes: BTreeMap<String, Option<String>>,
    /// Fields written together or not at all (a value and its Source).
    pub groups: Vec<Vec<String>>,
    /// Channel value fields: while one is written, the enriched-at field
    /// may be.
    pub value_fields: BTreeSet<String>,
    /// The enriched-at field: written only with a channel value.
    pub enriched_at: Option<String>,
}

fn eq_field(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl WriteItem {
    /// The writes among `decisions` (from `preview::plan_lead`, the one
    /// decision shared with the preview), with a group per channel that has
    /// a Source field.
    pub fn from_decisions(object: SObject, id: LeadId, decisions: &[FieldDecision]) -> WriteItem {
        let changes: BTreeMap<String, Option<String>> = decisions
            .iter()
            .filter(|d| d.action == Action::Write)
            .filter_map(|d| Some((d.field.clone(), Some(d.proposed.clone()?))))
            .collect();
        let mut groups = Vec::new();
        for v in decisions.iter().filter(|d| d.role == FieldRole::Value) {
            if let Some(s) = decisions
                .iter()
                .find(|s| s.role == FieldRole::Source && s.channel == v.channel)
            {
                groups.push(vec![v.field.clone(), s.field.clone()]);
            }
        }
        WriteItem {
            object,
            id,
            changes,
            groups,
            value_fields: decisions
                .iter()
                .filter(|d| d.role == FieldRole::Value)
                .map(|d| d.field.clone())
                .collect(),
            enriched_at: decisions
                .iter()
                .find(|d| d.role == FieldRole::EnrichedAt)
                .map(|d| d.field.clone()),
        }
    }

    /// `field` and every field of a group holding it (case-insensitively).
    pub fn companions(&self, field: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::from([field.to_string()]);
        for g in self
            .groups
            .iter()
            .filter(|g| g.iter().any(|f| eq_field(f, field)))
        {
            out.extend(g.iter().cloned());
        }
        out
    }

    /// The changed field spelt `field` in any case.
    fn changed_field(&self, field: &str) -> Option<String> {
        self.changes.keys().find(|k| eq_field(k, field)).cloned()
    }
}

/// A field dropped from a record's write, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedField {
    pub field: String,
    /// The error code that caused it (for a partner: the partner's).
    pub code: String,
    pub reason: String,
}

/// A record on its way: sends so far, retryable failures so far, fields
/// dropped so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWrite {
    pub item: WriteItem,
    pub attempts: u32,
    pub transient_failures: u32,
    pub dropped: Vec<DroppedField>,
}

impl PendingWrite {
    pub fn new(item: WriteItem) -> PendingWrite {
        PendingWrite {
            item,
            attempts: 0,
            transient_failures: 0,
            dropped: Vec::new(),
        }
    }

    /// Drops `fields` (changed ones only, any case) with their partners
    /// and, when no channel value is left, the enriched-at field. Returns
    /// how many changes were removed.
    fn drop_fields(&mut self, fields: &BTreeSet<String>, code: &str, reason: &str) -> usize {
        let mut removed = 0;
        let mut all: BTreeSet<String> = BTreeSet::new();
        for f in fields {
            if let Some(k) = self.item.changed_field(f) {
                all.extend(self.item.companions(&k));
            }
        }
        for f in &all {
            if let Some(k) = self.item.changed_field(f) {
                self.item.changes.remove(&k);
                removed += 1;
                let partner = !fields.iter().any(|x| eq_field(x, &k));
                self.dropped.push(DroppedField {
                    field: k.clone(),
                    code: code.to_string(),
                    reason: if partner {
                        "dropped with its partner field (a value is never written without its Source)"
                            .to_string()
                    } else {
                        reason.to_string()
                    },
                });
            }
        }
        let value_left = self
            .item
            .changes
            .keys()
            .any(|k| self.item.value_fields.iter().any(|v| eq_field(v, k)));
        if !value_left
            && removed > 0
            && let Some(e) = self.item.enriched_at.clone()
            && let Some(k) = self.item.changed_field(&e)
        {
            self.item.changes.remove(&k);
            removed += 1;
            self.dropped.push(DroppedField {
                field: k,
                code: code.to_string(),
                reason: "no channel value is written any more, so neither is the enriched-at time"
                    .into(),
            });
        }
        removed
    }
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Salesforce wrote `written` (some fields may have been dropped on the way).
    Written {
        object: SObject,
        id: LeadId,
        written: BTreeMap<String, Option<String>>,
        dropped: Vec<DroppedField>,
        attempts: u32,
    },
    /// Send it again (after a back-off for a retryable code).
    Retry {
        pending: PendingWrite,
        reason: String,
    },
    /// It cannot be written; `reason` says what, where and what to do.
    Failed {
        object: SObject,
        id: LeadId,
        error: Option<RecordError>,
        reason: String,
        dropped: Vec<DroppedField>,
        attempts: u32,
    },
}

impl RecordOutcome {
    pub fn id(&self) -> &LeadId {
        match self {
            RecordOutcome::Written { id, .. } | RecordOutcome::Failed { id, .. } => id,
            RecordOutcome::Retry { pending, .. } => &pending.item.id,
        }
    }
}

fn failed(p: PendingWrite, error: Option<RecordError>, reason: String) -> RecordOutcome {
    RecordOutcome::Failed {
        object: p.item.object,
        id: p.item.id,
        error,
        reason,
        dropped: p.dropped,
        attempts: p.attempts,
    }
}

/// The duplicate-rule policy sent with writes (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateRulePolicy {
    /// `allowSave=true, includeRecordDetails=true, runAsCurrentUser=true`:
    /// "alert" rules do not stop a write; "block" rules still do.
    #[default]
    AllowSave,
    /// `allowSave=false, …`: every active rule applies.
    Enforce,
    /// No header: the org's defaults.
    Omit,
}

/// The headers every write request carries (§3.1), as data.
pub fn write_headers(duplicates: DuplicateRulePolicy) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("Sforce-Auto-Assign", "FALSE".to_string()),
        ("Sforce-Call-Options", format!("client={CLIENT_NAME}")),
    ];
    let allow = match duplicates {
        DuplicateRulePolicy::AllowSave => Some(true),
        DuplicateRulePolicy::Enforce => Some(false),
        DuplicateRulePolicy::Omit => None,
    };
    if let Some(a) = allow {
        h.push((
            "Sforce-Duplicate-Rule-Header",
            format!("allowSave={a}, includeRecordDetails=true, runAsCurrentUser=true"),
        ));
    }
    h
}

/// Which API a set of pending writes goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    Collections,
    Bulk,
}

/// Collections up to `threshold` records of one object, Bulk 2.0 above
/// (§3.6).
pub fn choose_path(records: usize, threshold: usize) -> WritePath {
    if records > threshold {
        WritePath::Bulk
    } else {
        WritePath::Collections
    }
}

fn json_value(v: &Option<String>) -> Value {
    match v {
        Some(s) if !s.trim().is_empty() => Value::String(s.clone()),
        _ => Value::Null,
    }
}

/// One `PATCH /composite/sobjects` request.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionRequest {
    /// In request order (results come in the same order).
    pub records: Vec<PendingWrite>,
    pub body: Value,
}

impl CollectionRequest {
    /// The endpoint, for paths and secret-free labels.
    pub fn path() -> String {
        data_path("composite/sobjects")
    }

    pub const ENDPOINT: &'static str = "PATCH /composite/sobjects";

    /// Builds the body and counts a send for each record. 1 to 200 records
    /// with changes, distinct Ids (see [`plan_collections`]).
    pub fn build(mut records: Vec<PendingWrite>) -> Result<CollectionRequest, WriteError> {
        if records.is_empty() || records.len() > COLLECTION_MAX {
            return Err(WriteError::BatchSize(records.len()));
        }
        records.sort_by_key(|p| p.item.object);
        let body_records: Vec<Value> = records
            .iter_mut()
            .map(|p| {
                p.attempts += 1;
                let mut o = Map::new();
                o.insert("attributes".into(), json!({"type": p.item.object.as_str()}));
                o.insert("id".into(), Value::String(p.item.id.0.clone()));
                for (k, v) in &p.item.changes {
                    o.insert(k.clone(), json_value(v));
                }
                Value::Object(o)
            })
            .collect();
        Ok(CollectionRequest {
            records,
            body: json!({"allOrNone": false, "records": body_records}),
        })
    }

    /// Reads a 200 answer's per-record results (§3.3) into outcomes, in
    /// request order. A count or Id mismatch is an error: nothing can be
    /// attributed, and the whole request may be sent again.
    pub fn outcomes(
        self,
        body: &[u8],
        max_attempts: u32,
    ) -> Result<Vec<RecordOutcome>, WriteError> {
        let decode = |message: String| WriteError::Decode {
            endpoint: Self::ENDPOINT.into(),
            message,
        };
        let v: Value =
            serde_json::from_slice(body).map_err(|e| decode(format!("not JSON: {e}")))?;
        let results = v
            .as_array()
            .ok_or_else(|| decode("not an array of results".into()))?;
        if results.len() != self.records.len() {
            return Err(WriteError::ResultCount {
                endpoint: Self::ENDPOINT.into(),
                sent: self.records.len(),
                got: results.len(),
            });
        }
        for (i, (r, p)) in results.iter().zip(&self.records).enumerate() {
            if let Some(id) = r.get("id").and_then(Value::as_str)
                && !id.is_empty()
                && !same_id(id, p.item.id.as_str())
            {
                return Err(WriteError::ResultMismatch {
                    endpoint: Self::ENDPOINT.into(),
                    index: i,
                    sent: p.item.id.0.clone(),
                    got: id.to_string(),
                });
            }
        }
        let mut out = Vec::with_capacity(results.len());
        for (r, p) in results.iter().zip(self.records) {
            let success = r.get("success").and_then(Value::as_bool).unwrap_or(false);
            if success {
                out.push(written(p));
                continue;
            }
            let errors: Vec<RecordError> = r
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(RecordError::from_json).collect())
                .unwrap_or_default();
            out.push(record_failure(p, errors, max_attempts));
        }
        Ok(out)
    }
}

/// Totals over final outcomes (retries are counted by the runner).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteSummary {
    pub records_written: u64,
    pub fields_written: u64,
    pub records_failed: u64,
    pub retries: u64,
    /// Fields dropped from at least one record, with their codes.
    pub dropped_fields: BTreeMap<String, BTreeSet<String>>,
    /// Fields Salesforce said do not exist or are not visible/editable
    /// (`INVALID_FIELD*`): the mapping or the field-level security needs
    /// fixing (`enrichd check`).
    pub missing_fields: BTreeSet<String>,
}

impl WriteSummary {
    /// Adds outcomes.
    pub fn add(&mut self, outcomes: &[RecordOutcome]) {
        for o in outcomes {
            let dropped = match o {
                RecordOutcome::Written {
                    written, dropped, ..
                } => {
                    self.records_written += 1;
                    self.fields_written += written.len() as u64;
                    dropped
                }
                RecordOutcome::Failed { dropped, .. } => {
                    self.records_failed += 1;
                    dropped
                }
                RecordOutcome::Retry { .. } => {
                    self.retries += 1;
                    continue;
                }
            };
            for d in dropped {
                self.dropped_fields
                    .entry(d.field.clone())
                    .or_default()
                    .insert(d.code.clone());
                if d.code.starts_with("INVALID_FIELD") && !d.reason.starts_with("dropped with") {
                    self.missing_fields.insert(d.field.clone());
                }
            }
        }
    }
}

fn written(p: PendingWrite) -> RecordOutcome {
    RecordOutcome::Written {
        object: p.item.object,
        id: p.item.id,
        written: p.item.changes,
        dropped: p.dropped,
        attempts: p.attempts,
    }
}

/// What to do with a record whose write failed with `errors`.
fn record_failure(
    mut p: PendingWrite,
    errors: Vec<RecordError>,
    max_attempts: u32,
) -> RecordOutcome {
    let what = |p: &PendingWrite| {
        format!(
            "Salesforce refused the update of {} {}",
            p.item.object, p.item.id
        )
    };
    if errors.is_empty() {
        let e = RecordError {
            code: "UNKNOWN".into(),
            message: "the record failed without an error".into(),
            fields: vec![],
        };
        return retry_or_fail(p, e, max_attempts);
    }
    let kinds: Vec<RecordErrorKind> = errors.iter().map(record_error_kind).collect();
    if let Some(i) = kinds.iter().position(|k| *k == RecordErrorKind::Permanent) {
        let e = errors[i].clone();
        let reason = format!("{}: {e}. {}", what(&p), record_hint(&e.code));
        return failed(p, Some(e), reason);
    }
    if kinds.iter().all(|k| *k == RecordErrorKind::Retryable) {
        return retry_or_fail(p, errors[0].clone(), max_attempts);
    }
    // Field-level errors (retryable ones alongside are retried with the rest).
    let mut dropped_any = false;
    let mut unplaced: Option<RecordError> = None;
    for (e, k) in errors.iter().zip(&kinds) {
        if *k != RecordErrorKind::FieldLevel {
            continue;
        }
        let mut named: BTreeSet<String> = e.fields.iter().cloned().collect();
        if named.is_empty()
            && let Some(f) = field_in_message(&e.message)
        {
            named.insert(f);
        }
        let named: BTreeSet<String> = named
            .into_iter()
            .filter(|f| p.item.changed_field(f).is_some())
            .collect();
        if named.is_empty() {
            unplaced.get_or_insert_with(|| e.clone());
            continue;
        }
        let reason = format!("{e}. {}", record_hint(&e.code));
        if p.drop_fields(&named, &e.code, &reason) > 0 {
            dropped_any = true;
        }
    }
    if let Some(e) = unplaced.filter(|_| !dropped_any) {
        let reason = format!(
            "{}: {e}; the field it names is not among those written. {}",
            what(&p),
            record_hint(&e.code)
        );
        return failed(p, Some(e), reason);
    }
    if p.item.changes.is_empty() {
        let fields: Vec<String> = p.dropped.iter().map(|d| format!("`{}`", d.field)).collect();
        let first = errors[0].clone();
        let reason = format!(
            "{}: every field was refused ({}): {first}. {}",
            what(&p),
            fields.join(", "),
            record_hint(&first.code)
        );
        return failed(p, Some(first), reason);
    }
    let reason = format!(
        "sending {} {} again without {}",
        p.item.object,
        p.item.id,
        p.dropped
            .iter()
            .map(|d| d.field.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    RecordOutcome::Retry { pending: p, reason }
}

fn retry_or_fail(mut p: PendingWrite, e: RecordError, max_attempts: u32) -> RecordOutcome {
    p.transient_failures += 1;
    if p.transient_failures < max_attempts.max(1) {
        let reason = format!("{e} (retryable)");
        return RecordOutcome::Retry { pending: p, reason };
    }
    let reason = format!(
        "Salesforce refused the update of {} {} after {} attempt(s): {e}. {}",
        p.item.object,
        p.item.id,
        p.attempts,
        record_hint(&e.code)
    );
    failed(p, Some(e), reason)
}

/// What a person can do about a per-record code.
pub fn record_hint(code: &str) -> &'static str {
    match code {
        "CANNOT_UPDATE_CONVERTED_LEAD" => {
            "The Lead was converted; enrichd no longer writes to it (its Contact is synced instead)"
        }
        "STRING_TOO_LONG" => {
            "The field is shorter than the value: lengthen it in Setup (see mappings/salesforce.toml for the sizes needed)"
        }
        "INVALID_FIELD" | "INVALID_FIELD_FOR_INSERT_UPDATE" => {
            "Create the field or give the integration user Edit access in its field-level security, or fix the mapping (`enrichd check`)"
        }
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" => {
            "Add the value to the restricted picklist, or make the field a Text field"
        }
        "FIELD_CUSTOM_VALIDATION_EXCEPTION" => {
            "An org validation rule refused the value; adjust the rule or the mapping"
        }
        "DUPLICATES_DETECTED" => {
            "A duplicate rule blocks the write; change the rule to \"Alert\" or map the value to another field"
        }
        "INVALID_EMAIL_ADDRESS" => {
            "Salesforce did not accept the address; it is reported, not retried"
        }
        "UNABLE_TO_LOCK_ROW" => "Another process held the record; enrichd retries later",
        "ENTITY_IS_DELETED" | "INVALID_CROSS_REFERENCE_KEY" | "NOT_FOUND" => {
            "The record no longer exists"
        }
        "INSUFFICIENT_ACCESS_OR_READONLY" => {
            "The integration user cannot edit this record (sharing rules or a read-only profile)"
        }
        _ => "It is reported and not retried",
    }
}

/// Splits pending writes into Collections requests of at most 200
/// records, each Id at most once per request, records without changes
/// reported as failed (every field dropped) rather than sent.
pub fn plan_collections(
    pending: Vec<PendingWrite>,
) -> (Vec<CollectionRequest>, Vec<RecordOutcome>) {
    let mut empty = Vec::new();
    let mut batches: Vec<(HashSet<String>, Vec<PendingWrite>)> = Vec::new();
    for p in pending {
        if p.item.changes.is_empty() {
            let reason = if p.dropped.is_empty() {
                format!("nothing to write to {} {}", p.item.object, p.item.id)
            } else {
                format!(
                    "nothing left to write to {} {}: every change was refused",
                    p.item.object, p.item.id
                )
            };
            empty.push(failed(p, None, reason));
            continue;
        }
        let key = p.item.id.0.get(..15).unwrap_or(&p.item.id.0).to_string();
        match batches
            .iter_mut()
            .find(|(ids, b)| b.len() < COLLECTION_MAX && !ids.contains(&key))
        {
            Some((ids, b)) => {
                ids.insert(key);
                b.push(p);
            }
            None => batches.push((HashSet::from([key]), vec![p])),
        }
    }
    let requests = batches
        .into_iter()
        .filter_map(|(_, b)| CollectionRequest::build(b).ok())
        .collect();
    (requests, empty)
}

// ---------------------------------------------------------------------------
// Bulk API 2.0 ingest (§3.6)
// ---------------------------------------------------------------------------

/// The upload's content type (§3.6).
pub const BULK_CSV_CONTENT_TYPE: &str = "text/csv";

/// `POST /jobs/ingest` body: an update job taking LF-terminated,
/// comma-separated CSV. No `assignmentRuleId` is set, so no assignment
/// rule is asked for (§3.6 lists it as optional; the reference is silent
/// on whether Bulk runs Lead assignment rules without it). The I/O layer
/// sends [`write_headers`] with every Bulk request too: harmless where
/// Bulk ignores them, and `Sforce-Call-Options` names the client.
pub fn bulk_job_request(object: SObject) -> Value {
    json!({
        "object": object.as_str(),
        "operation": "update",
        "contentType": "CSV",
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    })
}

/// `PATCH /jobs/ingest/{id}` to start processing.
pub fn bulk_close_body() -> Value {
    json!({"state": "UploadComplete"})
}

/// `PATCH /jobs/ingest/{id}` to give up on a job.
pub fn bulk_abort_body() -> Value {
    json!({"state": "Aborted"})
}

fn job_id_ok(id: &str) -> Result<&str, WriteError> {
    if !id.is_empty() && id.len() <= 18 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(WriteError::BadJobId(id.chars().take(40).collect()))
    }
}

/// Paths of an ingest job's resources.
pub fn bulk_create_path() -> String {
    data_path("jobs/ingest")
}

pub fn bulk_job_path(id: &str) -> Result<String, WriteError> {
    Ok(data_path(&format!("jobs/ingest/{}", job_id_ok(id)?)))
}

pub fn bulk_failed_results_path(id: &str) -> Result<String, WriteError> {
    Ok(data_path(&format!(
        "jobs/ingest/{}/failedResults/",
        job_id_ok(id)?
    )))
}

pub fn bulk_successful_results_path(id: &str) -> Result<String, WriteError> {
    Ok(data_path(&format!(
        "jobs/ingest/{}/successfulResults/",
        job_id_ok(id)?
    )))
}

pub fn bulk_unprocessed_path(id: &str) -> Result<String, WriteError> {
    Ok(data_path(&format!(
        "jobs/ingest/{}/unprocessedrecords/",
        job_id_ok(id)?
    )))
}

/// Where to `PUT` the CSV: the job's `contentUrl` (relative, under
/// `services/data/`, §3.6) or, without one, `jobs/ingest/{id}/batches`.
/// A `contentUrl` elsewhere (absolute, another host) is refused so the
/// access token never leaves the instance.
pub fn bulk_upload_path(job: &JobInfo) -> Result<String, WriteError> {
    match &job.content_url {
        Some(u) => {
            let u = u.trim_start_matches('/');
            if u.starts_with("services/data/") && !u.contains("//") && !u.contains("..") {
                Ok(format!("/{u}"))
            } else {
                Err(WriteError::Decode {
                    endpoint: "GET /jobs/ingest/{id}".into(),
                    message: format!("contentUrl `{u}` is not a path under services/data/"),
                })
            }
        }
        None => Ok(data_path(&format!(
            "jobs/ingest/{}/batches",
            job_id_ok(&job.id)?
        ))),
    }
}

/// One CSV upload: one job's data.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkUpload {
    pub object: SObject,
    /// `Id` then the changed fields.
    pub columns: Vec<String>,
    pub csv: Vec<u8>,
    /// The rows' records, each counted as sent once.
    pub records: Vec<PendingWrite>,
}

fn csv_err(e: impl std::fmt::Display) -> WriteError {
    WriteError::Csv(e.to_string())
}

/// Builds the uploads (one job each) for pending writes of `object`: rows
/// of records with changes, split so no upload exceeds [`MAX_CSV_BYTES`].
/// Returns the uploads and the records this CSV cannot carry: those of
/// another object (partition by object first), and those with a value
/// that is literally `#N/A` (Bulk would read it as null), which go through
/// Collections instead. Records without changes are left out.
pub fn bulk_uploads(
    object: SObject,
    pending: Vec<PendingWrite>,
) -> Result<(Vec<BulkUpload>, Vec<PendingWrite>), WriteError> {
    let mut fallback = Vec::new();
    let mut rows: Vec<PendingWrite> = Vec::new();
    for p in pending {
        if p.item.changes.is_empty() {
            continue;
        }
        if p.item.object != object
            || p.item
                .changes
                .values()
                .any(|v| v.as_deref().is_some_and(|s| s.trim() == CSV_NULL))
        {
            fallback.push(p);
        } else {
            rows.push(p);
        }
    }
    let mut uploads = Vec::new();
    let mut chunk: Vec<PendingWrite> = Vec::new();
    let mut size = 0usize;
    for p in rows {
        // A generous estimate of the row's size (quotes doubled at worst).
        let est = p.item.id.0.len()
            + p.item
                .changes
                .iter()
                .map(|(k, v)| k.len() + 2 * v.as_deref().map_or(4, str::len) + 4)
                .sum::<usize>()
            + 2;
        if !chunk.is_empty() && size + est > MAX_CSV_BYTES {
            uploads.push(bulk_csv(object, std::mem::take(&mut chunk))?);
            size = 0;
        }
        size += est;
        chunk.push(p);
    }
    if !chunk.is_empty() {
        uploads.push(bulk_csv(object, chunk)?);
    }
    Ok((uploads, fallback))
}

/// The CSV of one upload: header `Id` + the union of changed fields
/// (first spelling wins, case-insensitively, sorted), a row per record;
/// unchanged cells empty, nulls [`CSV_NULL`].
fn bulk_csv(object: SObject, mut records: Vec<PendingWrite>) -> Result<BulkUpload, WriteError> {
    let mut columns: Vec<String> = Vec::new();
    for p in &records {
        for k in p.item.changes.keys() {
            if !columns.iter().any(|c| eq_field(c, k)) && !eq_field(k, "Id") {
                columns.push(k.clone());
            }
        }
    }
    columns.sort_by_key(|c| c.to_ascii_lowercase());
    columns.insert(0, "Id".into());
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(Vec::new());
    w.write_record(&columns).map_err(csv_err)?;
    for p in &mut records {
        p.attempts += 1;
        let mut row: Vec<String> = Vec::with_capacity(columns.len());
        row.push(p.item.id.0.clone());
        for c in &columns[1..] {
            let cell = match p.item.changes.iter().find(|(k, _)| eq_field(k, c)) {
                None => String::new(),
                Some((_, Some(v))) if !v.trim().is_empty() => v.clone(),
                Some(_) => CSV_NULL.to_string(),
            };
            row.push(cell);
        }
        w.write_record(&row).map_err(csv_err)?;
    }
    let csv = w.into_inner().map_err(csv_err)?;
    Ok(BulkUpload {
        object,
        columns,
        csv,
        records,
    })
}

/// An ingest job's state (§3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Open,
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
    Other(String),
}

impl JobState {
    pub fn parse(s: &str) -> JobState {
        match s {
            "Open" => JobState::Open,
            "UploadComplete" => JobState::UploadComplete,
            "InProgress" => JobState::InProgress,
            "JobComplete" => JobState::JobComplete,
            "Failed" => JobState::Failed,
            "Aborted" => JobState::Aborted,
            other => JobState::Other(other.to_string()),
        }
    }

    /// No further change: stop polling.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::JobComplete | JobState::Failed | JobState::Aborted
        )
    }
}

/// What `GET /jobs/ingest/{id}` (or the create answer) says of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    pub state: JobState,
    pub object: Option<String>,
    pub operation: Option<String>,
    pub content_url: Option<String>,
    pub records_processed: u64,
    pub records_failed: u64,
    pub error_message: Option<String>,
    pub retries: u64,
}

fn count(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// Parses job info JSON (create answer or status, §3.6).
pub fn parse_job_info(body: &[u8]) -> Result<JobInfo, WriteError> {
    let decode = |message: String| WriteError::Decode {
        endpoint: "GET /jobs/ingest/{id}".into(),
        message,
    };
    let v: Value = serde_json::from_slice(body).map_err(|e| decode(format!("not JSON: {e}")))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let id = s("id").ok_or_else(|| decode("no job `id`".into()))?;
    let state = s("state").ok_or_else(|| decode("no job `state`".into()))?;
    Ok(JobInfo {
        id,
        state: JobState::parse(&state),
        object: s("object"),
        operation: s("operation"),
        content_url: s("contentUrl"),
        records_processed: count(v.get("numberRecordsProcessed")),
        records_failed: count(v.get("numberRecordsFailed")),
        error_message: s("errorMessage").map(|m| super::errors::redact(&m)),
        retries: count(v.get("retries")),
    })
}

/// One row of `failedResults`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkFailure {
    /// The record's Id (the `Id` column, else `sf__Id`).
    pub id: String,
    pub error: RecordError,
}

/// Splits an `sf__Error` cell, `CODE:message[:Field1,Field2] --`, into
/// code, message and fields; `columns` are the upload's columns, so only
/// real field names are taken as fields.
pub fn split_sf_error(cell: &str, columns: &[String]) -> RecordError {
    let s = cell.trim();
    let s = s.strip_suffix("--").map(str::trim_end).unwrap_or(s);
    let (code, rest) = match s.split_once(':') {
        Some((c, r))
            if !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()) =>
        {
            (c.to_string(), r.trim())
        }
        _ => ("UNKNOWN".to_string(), s),
    };
    let is_col = |f: &str| {
        columns
            .iter()
            .any(|c| eq_field(c, f) && !c.starts_with("sf__"))
    };
    let (message, fields) = match rest.rsplit_once(':') {
        Some((m, tail)) if tail.trim().is_empty() => (m.trim().to_string(), vec![]),
        Some((m, tail)) => {
            let toks: Vec<&str> = tail.split(',').map(str::trim).collect();
            if toks.iter().all(|t| !t.is_empty() && is_col(t)) {
                (
                    m.trim().to_string(),
                    toks.into_iter().map(String::from).collect(),
                )
            } else {
                (rest.to_string(), vec![])
            }
        }
        None => (rest.to_string(), vec![]),
    };
    RecordError {
        code,
        message: super::errors::redact(&message),
        fields,
    }
}

fn read_csv(body: &[u8]) -> Result<(Vec<String>, Vec<csv::StringRecord>), WriteError> {
    let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(body);
    let header: Vec<String> = r
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    let mut rows = Vec::new();
    for rec in r.records() {
        rows.push(rec.map_err(csv_err)?);
    }
    Ok((header, rows))
}

/// Parses `GET …/failedResults/` CSV (§3.6).
pub fn parse_failed_results(body: &[u8]) -> Result<Vec<BulkFailure>, WriteError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let (header, rows) = read_csv(body)?;
    let col = |name: &str| header.iter().position(|h| eq_field(h, name));
    let err_col = col("sf__Error").ok_or_else(|| WriteError::Decode {
        endpoint: "GET /jobs/ingest/{id}/failedResults/".into(),
        message: "no `sf__Error` column".into(),
    })?;
    let id_col = col("Id");
    let sf_id_col = col("sf__Id");
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let get = |i: Option<usize>| {
            i.and_then(|i| row.get(i))
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let Some(id) = get(id_col).or(get(sf_id_col)) else {
            continue;
        };
        out.push(BulkFailure {
            id: id.to_string(),
            error: split_sf_error(get(Some(err_col)).unwrap_or(""), &header),
        });
    }
    Ok(out)
}

/// Ids in `GET …/unprocessedrecords/` CSV (the upload's own columns).
pub fn parse_unprocessed(body: &[u8]) -> Result<Vec<String>, WriteError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let (header, rows) = read_csv(body)?;
    let Some(i) = header.iter().position(|h| eq_field(h, "Id")) else {
        return Err(WriteError::Decode {
            endpoint: "GET /jobs/ingest/{id}/unprocessedrecords/".into(),
            message: "no `Id` column".into(),
        });
    };
    Ok(rows
        .iter()
        .filter_map(|r| {
            r.get(i)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        })
        .collect())
}

/// The key [`super::same_id`] compares on: the 15-character id (None for
/// a string that is no record id).
fn id_key(id: &str) -> Option<&str> {
    let id = id.trim();
    if super::is_record_id(id) {
        id.get(..15)
    } else {
        None
    }
}

/// Failures grouped by record, for joins on the record's own Id.
fn failures_by_id(failures: &[BulkFailure]) -> HashMap<&str, Vec<RecordError>> {
    let mut by_id: HashMap<&str, Vec<RecordError>> = HashMap::new();
    for f in failures {
        if let Some(k) = id_key(&f.id) {
            by_id.entry(k).or_default().push(f.error.clone());
        }
    }
    by_id
}

/// The outcomes of a finished job: rows in `failures` failed (field-level
/// ones come back as retries without the refused fields, to be sent
/// through Collections), rows in `unprocessed` are retried, every other
/// row of the upload was written. Call it for a `JobComplete` job only; a
/// `Failed`/`Aborted` job goes through [`bulk_outcomes_unfinished`].
pub fn bulk_outcomes(
    upload: BulkUpload,
    failures: &[BulkFailure],
    unprocessed: &[String],
    max_attempts: u32,
) -> Vec<RecordOutcome> {
    let failed = failures_by_id(failures);
    let unprocessed: HashSet<&str> = unprocessed.iter().filter_map(|u| id_key(u)).collect();
    let mut out = Vec::with_capacity(upload.records.len());
    for p in upload.records {
        let key = id_key(&p.item.id.0).map(str::to_string);
        let errs = key.as_deref().and_then(|k| failed.get(k)).cloned();
        if let Some(errs) = errs {
            out.push(record_failure(p, errs, max_attempts));
        } else if key.as_deref().is_some_and(|k| unprocessed.contains(k)) {
            out.push(RecordOutcome::Retry {
                pending: p,
                reason: "the Bulk job did not process the record".into(),
            });
        } else {
            out.push(written(p));
        }
    }
    out
}

/// The outcomes of a job that ended `Failed` or `Aborted` (or could not be
/// followed to its end): only what Salesforce confirms is taken as done.
/// Rows in `successful` (ids of `successfulResults/`) were written, rows in
/// `failures` failed as in [`bulk_outcomes`], and every other row is
/// retried with `reason` — a row is never taken as written on the strength
/// of a missing entry, so nothing is lost, and a row Salesforce wrote is
/// not sent again.
pub fn bulk_outcomes_unfinished(
    upload: BulkUpload,
    successful: &[String],
    failures: &[BulkFailure],
    reason: &str,
    max_attempts: u32,
) -> Vec<RecordOutcome> {
    let failed = failures_by_id(failures);
    let done: HashSet<&str> = successful.iter().filter_map(|u| id_key(u)).collect();
    let mut out = Vec::with_capacity(upload.records.len());
    for p in upload.records {
        let key = id_key(&p.item.id.0).map(str::to_string);
        let errs = key.as_deref().and_then(|k| failed.get(k)).cloned();
        if let Some(errs) = errs {
            out.push(record_failure(p, errs, max_attempts));
        } else if key.as_deref().is_some_and(|k| done.contains(k)) {
            out.push(written(p));
        } else {
            out.push(RecordOutcome::Retry {
                pending: p,
                reason: reason.to_string(),
            });
        }
    }
    out
}

/// Ids in `GET …/successfulResults/` CSV (`sf__Id`, `sf__Created`, then
/// the upload's columns): the upload's own `Id` column, else `sf__Id`.
pub fn parse_successful_results(body: &[u8]) -> Result<Vec<String>, WriteError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let (header, rows) = read_csv(body)?;
    let col = |name: &str| header.iter().position(|h| h == name);
    let Some(i) = col("Id")
        .or_else(|| header.iter().position(|h| eq_field(h, "Id")))
        .or_else(|| col("sf__Id"))
    else {
        return Err(WriteError::Decode {
            endpoint: "GET /jobs/ingest/{id}/successfulResults/".into(),
            message: "no `Id` or `sf__Id` column".into(),
        });
    };
    Ok(rows
        .iter()
        .filter_map(|r| {
            r.get(i)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::channel::Channel;
    use crate::core::mapping::{Policy, SkipReason};

    const L1: &str = "00Qxx0000001aaaEAA";
    const L2: &str = "00Qxx0000001bbbEAA";
    const C1: &str = "003xx000004TmiQAAS";

    fn item(object: SObject, id: &str, fields: &[(&str, &str)]) -> WriteItem {
        WriteItem {
            object,
            id: LeadId(id.into()),
            changes: fields
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect(),
            groups: vec![
                vec!["Enrichment_Phone__c".into(), "Phone_Source__c".into()],
                vec![
                    "Enrichment_Work_Email__c".into(),
                    "Work_Email_Source__c".into(),
                ],
            ],
            value_fields: ["Enrichment_Phone__c", "Enrichment_Work_Email__c"]
                .into_iter()
                .map(String::from)
                .collect(),
            enriched_at: Some("Enriched_At__c".into()),
        }
    }

    fn full(id: &str) -> PendingWrite {
        PendingWrite::new(item(
            SObject::Lead,
            id,
            &[
                ("Enrichment_Phone__c", "+14155552671"),
                ("Phone_Source__c", "apollo"),
                ("Enrichment_Work_Email__c", "jane@acme.com"),
                ("Work_Email_Source__c", "hunter"),
                ("Enrichment_Status__c", "Full"),
                ("Enriched_At__c", "2026-05-01T07:25:37.000Z"),
            ],
        ))
    }

    fn decision(
        field: &str,
        role: FieldRole,
        channel: Option<Channel>,
        action: Action,
        v: &str,
    ) -> FieldDecision {
        FieldDecision {
            field: field.into(),
            role,
            channel,
            policy: Policy::IfEnrichedByUs,
            current: None,
            proposed: Some(v.into()),
            source: None,
            action,
            audience: None,
        }
    }

    #[test]
    fn items_from_decisions() {
        let ds = vec![
            decision(
                "Enrichment_Phone__c",
                FieldRole::Value,
                Some(Channel::Phone),
                Action::Write,
                "+1415",
            ),
            decision(
                "Phone_Source__c",
                FieldRole::Source,
                Some(Channel::Phone),
                Action::Write,
                "apollo",
            ),
            decision(
                "Enrichment_Work_Email__c",
                FieldRole::Value,
                Some(Channel::WorkEmail),
                Action::Skip(SkipReason::Unchanged),
                "a@b.c",
            ),
            decision(
                "Work_Email_Source__c",
                FieldRole::Source,
                Some(Channel::WorkEmail),
                Action::Skip(SkipReason::SourceWithoutValue),
                "x",
            ),
            decision(
                "Enriched_At__c",
                FieldRole::EnrichedAt,
                None,
                Action::Write,
                "2026",
            ),
        ];
        let it = WriteItem::from_decisions(SObject::Lead, LeadId(L1.into()), &ds);
        assert_eq!(it.changes.len(), 3);
        assert_eq!(it.groups.len(), 2);
        assert!(it.groups.contains(&vec![
            "Enrichment_Phone__c".to_string(),
            "Phone_Source__c".to_string()
        ]));
        assert_eq!(it.enriched_at.as_deref(), Some("Enriched_At__c"));
        assert_eq!(
            it.companions("phone_source__c"),
            BTreeSet::from([
                "Enrichment_Phone__c".to_string(),
                "Phone_Source__c".to_string(),
                "phone_source__c".to_string()
            ])
        );
    }

    /// The shipped mapping, the pure decision, then the request: what a
    /// sync would send for one Lead.
    #[test]
    fn from_the_shipped_mapping_through_decide_to_a_request() {
        use crate::core::mapping::{CrmFields, WrittenByUs, decide};
        use crate::core::status::EnrichmentStatus;
        use crate::core::value::{ChannelValue, Source, Verification};
        let m = crate::config::mapping::parse_mapping(
            std::path::Path::new("mappings/salesforce.toml"),
            include_str!("../../../mappings/salesforce.toml"),
        )
        .unwrap();
        let now = 1_777_620_337_000;
        let v = |c: Channel, value: &str, src: &str| ChannelValue {
            channel: c,
            value: value.into(),
            source: Source::provider(src),
            verification: Verification::Verified,
            found_at: now,
            verified_at: None,
        };
        let values = BTreeMap::from([
            (
                Channel::WorkEmail,
                v(Channel::WorkEmail, "jane@acme.com", "hunter"),
            ),
            (Channel::Phone, v(Channel::Phone, "+14155552671", "apollo")),
        ]);
        let record: CrmFields = m
            .fields()
            .into_iter()
            .map(|f| (f.to_string(), None))
            .collect();
        let ds = decide(
            &m,
            &record,
            &values,
            Some(EnrichmentStatus::Partial),
            &WrittenByUs::new(),
            now,
        );
        let it = WriteItem::from_decisions(SObject::Lead, LeadId(L1.into()), &ds);
        assert_eq!(it.groups.len(), 4, "{:?}", it.groups);
        let req = CollectionRequest::build(vec![PendingWrite::new(it.clone())]).unwrap();
        let r = &req.body["records"][0];
        assert_eq!(r["attributes"]["type"], "Lead");
        assert_eq!(r["Enrichment_Work_Email__c"], "jane@acme.com");
        assert_eq!(r["Work_Email_Source__c"], "hunter");
        assert_eq!(r["Enrichment_Phone__c"], "+14155552671");
        assert_eq!(r["Phone_Source__c"], "apollo");
        assert_eq!(r["Enrichment_Status__c"], "Partial");
        assert_eq!(r["Enriched_At__c"], "2026-05-01T07:25:37.000Z");
        assert!(r.get("Enrichment_LinkedIn_URL__c").is_none());
        // Salesforce refuses the phone's Source (a picklist without `apollo`):
        // the phone goes too; the email, its Source, status and date stay.
        let body = json!([{"success": false, "errors": [{"statusCode":"INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST","message":"Phone Source: bad value for restricted picklist field: apollo","fields":["Phone_Source__c"]}]}]);
        let out = req
            .outcomes(body.to_string().as_bytes(), MAX_ATTEMPTS)
            .unwrap();
        let RecordOutcome::Retry { pending, .. } = &out[0] else {
            panic!("{out:?}")
        };
        let left: Vec<&str> = pending.item.changes.keys().map(String::as_str).collect();
        assert_eq!(
            left,
            vec![
                "Enriched_At__c",
                "Enrichment_Status__c",
                "Enrichment_Work_Email__c",
                "Work_Email_Source__c"
            ]
        );
        // The same item through Bulk.
        let (uploads, _) = bulk_uploads(SObject::Lead, vec![PendingWrite::new(it)]).unwrap();
        let text = String::from_utf8(uploads[0].csv.clone()).unwrap();
        assert!(
            text.starts_with("Id,Enriched_At__c,Enrichment_Phone__c,Enrichment_Status__c,"),
            "{text}"
        );
    }

    #[test]
    fn collection_body_matches_the_reference_shape() {
        let mut a = full(L1);
        a.item.changes.insert("Fax".into(), None);
        a.item.changes.insert("Blank".into(), Some("  ".into()));
        let b = PendingWrite::new(item(SObject::Contact, C1, &[("MobilePhone", "+1")]));
        let c = PendingWrite::new(item(
            SObject::Lead,
            L2,
            &[("Enrichment_Status__c", "Empty")],
        ));
        let req = CollectionRequest::build(vec![b, a, c]).unwrap();
        assert_eq!(req.body["allOrNone"], false);
        let recs = req.body["records"].as_array().unwrap();
        // Sorted by type (Lead before Contact), so at most two chunks.
        let types: Vec<&str> = recs
            .iter()
            .map(|r| r["attributes"]["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, vec!["Lead", "Lead", "Contact"]);
        assert_eq!(recs[0]["id"], L1);
        assert_eq!(recs[0]["Phone_Source__c"], "apollo");
        assert_eq!(recs[0]["Fax"], Value::Null);
        assert_eq!(recs[0]["Blank"], Value::Null);
        assert_eq!(
            recs[2],
            json!({"attributes":{"type":"Contact"},"id":C1,"MobilePhone":"+1"})
        );
        assert!(req.records.iter().all(|p| p.attempts == 1));
        assert_eq!(
            CollectionRequest::path(),
            "/services/data/v62.0/composite/sobjects"
        );
        assert_eq!(
            CollectionRequest::build(vec![]),
            Err(WriteError::BatchSize(0))
        );
    }

    #[test]
    fn a_thousand_leads_take_five_requests_and_repeated_ids_are_split() {
        let pending: Vec<PendingWrite> =
            (0..1000).map(|i| full(&format!("00Q{i:012}AAA"))).collect();
        let (reqs, empty) = plan_collections(pending);
        assert_eq!(reqs.len(), 5);
        assert!(empty.is_empty());
        assert!(reqs.iter().all(|r| r.records.len() == 200));
        let (reqs, _) = plan_collections(vec![full(L1), full(L1), full(L2)]);
        assert_eq!(reqs.len(), 2);
        let mut none = full(L2);
        none.item.changes.clear();
        let (reqs, empty) = plan_collections(vec![none]);
        assert!(reqs.is_empty());
        assert!(matches!(empty[0], RecordOutcome::Failed { .. }));
    }

    #[test]
    fn headers() {
        let h = write_headers(DuplicateRulePolicy::AllowSave);
        assert!(h.contains(&("Sforce-Auto-Assign", "FALSE".into())));
        assert!(h.contains(&("Sforce-Call-Options", "client=enrichd".into())));
        assert!(h.contains(&(
            "Sforce-Duplicate-Rule-Header",
            "allowSave=true, includeRecordDetails=true, runAsCurrentUser=true".into()
        )));
        let h = write_headers(DuplicateRulePolicy::Enforce);
        assert!(h.iter().any(|(_, v)| v.starts_with("allowSave=false")));
        assert_eq!(write_headers(DuplicateRulePolicy::Omit).len(), 2);
        assert_eq!(
            choose_path(2000, DEFAULT_BULK_THRESHOLD),
            WritePath::Collections
        );
        assert_eq!(choose_path(2001, DEFAULT_BULK_THRESHOLD), WritePath::Bulk);
        assert_eq!(choose_path(10_000, DEFAULT_BULK_THRESHOLD), WritePath::Bulk);
    }

    #[test]
    fn per_record_results() {
        let l3 = "00Qxx0000001cccEAA";
        let l4 = "00Qxx0000001dddEAA";
        let l5 = "00Qxx0000001eeeEAA";
        let req = CollectionRequest::build(vec![full(L1), full(L2), full(l3), full(l4), full(l5)])
            .unwrap();
        let body = json!([
            {"id": L1, "success": true, "errors": []},
            {"success": false, "errors": [{"statusCode":"STRING_TOO_LONG","message":"Phone Source: data value too large","fields":["Phone_Source__c"]}]},
            {"success": false, "errors": [{"statusCode":"CANNOT_UPDATE_CONVERTED_LEAD","message":"cannot reference converted lead","fields":[]}]},
            {"id": l4, "success": false, "errors": [{"statusCode":"UNABLE_TO_LOCK_ROW","message":"unable to obtain exclusive access to this record","fields":[]}]},
            {"success": false, "errors": [{"statusCode":"INVALID_FIELD","message":"No such column 'Enrichment_Work_Email__c' on sobject of type Lead","fields":[]}]}
        ]);
        let out = req
            .outcomes(body.to_string().as_bytes(), MAX_ATTEMPTS)
            .unwrap();
        assert_eq!(out.len(), 5);
        assert!(matches!(&out[0], RecordOutcome::Written { written, .. } if written.len() == 6));
        // STRING_TOO_LONG on the Source: value and Source dropped, the rest retried.
        let RecordOutcome::Retry { pending, reason } = &out[1] else {
            panic!("{:?}", out[1])
        };
        assert!(!pending.item.changes.contains_key("Phone_Source__c"));
        assert!(!pending.item.changes.contains_key("Enrichment_Phone__c"));
        assert!(
            pending
                .item
                .changes
                .contains_key("Enrichment_Work_Email__c")
        );
        assert!(pending.item.changes.contains_key("Enriched_At__c"));
        assert_eq!(pending.dropped.len(), 2);
        assert!(reason.contains("without"), "{reason}");
        // Converted Lead: failed with a reason.
        let RecordOutcome::Failed { reason, error, .. } = &out[2] else {
            panic!()
        };
        assert!(reason.contains("converted"), "{reason}");
        assert!(reason.contains(l3), "{reason}");
        assert_eq!(error.as_ref().unwrap().code, "CANNOT_UPDATE_CONVERTED_LEAD");
        // Lock: retried as is.
        let RecordOutcome::Retry { pending, .. } = &out[3] else {
            panic!()
        };
        assert_eq!(pending.item.changes.len(), 6);
        assert_eq!(pending.transient_failures, 1);
        // INVALID_FIELD named in the message: the email and its Source dropped.
        let RecordOutcome::Retry { pending, .. } = &out[4] else {
            panic!()
        };
        assert!(!pending.item.changes.contains_key("Work_Email_Source__c"));
        assert!(pending.item.changes.contains_key("Phone_Source__c"));
    }

    #[test]
    fn invariant_eleven_holds_through_repeated_drops() {
        let mut p = full(L1);
        for round in 0..3 {
            let req = CollectionRequest::build(vec![p.clone()]).unwrap();
            let field = [
                "Enrichment_Work_Email__c",
                "Phone_Source__c",
                "Enrichment_Status__c",
            ][round];
            let body = json!([{"success": false, "errors": [{"statusCode":"FIELD_CUSTOM_VALIDATION_EXCEPTION","message":"no","fields":[field]}]}]);
            let out = req
                .outcomes(body.to_string().as_bytes(), MAX_ATTEMPTS)
                .unwrap();
            match out.into_iter().next().unwrap() {
                RecordOutcome::Retry { pending, .. } => {
                    for g in &pending.item.groups {
                        let n = g
                            .iter()
                            .filter(|f| pending.item.changes.contains_key(*f))
                            .count();
                        assert!(
                            n == 0 || n == g.len(),
                            "{g:?} split in {:?}",
                            pending.item.changes
                        );
                    }
                    p = pending;
                }
                RecordOutcome::Failed {
                    dropped, reason, ..
                } => {
                    assert_eq!(round, 2, "{reason}");
                    // The enriched-at left with the last channel value.
                    assert!(dropped.iter().any(|d| d.field == "Enriched_At__c"));
                    assert!(reason.contains("every field was refused"), "{reason}");
                    return;
                }
                other => panic!("{other:?}"),
            }
        }
        panic!("should have failed in the last round");
    }

    #[test]
    fn summaries() {
        let req = CollectionRequest::build(vec![full(L1), full(L2)]).unwrap();
        let body = json!([
            {"id": L1, "success": true, "errors": []},
            {"success": false, "errors": [{"statusCode":"INVALID_FIELD","message":"No such column 'Enrichment_Phone__c' on sobject of type Lead","fields":[]}]}
        ]);
        let out = req.outcomes(body.to_string().as_bytes(), 3).unwrap();
        let mut s = WriteSummary::default();
        s.add(&out);
        assert_eq!((s.records_written, s.fields_written, s.retries), (1, 6, 1));
        let RecordOutcome::Retry { pending, .. } = out[1].clone() else {
            panic!()
        };
        let req = CollectionRequest::build(vec![pending]).unwrap();
        let out = req
            .outcomes(json!([{"success": true}]).to_string().as_bytes(), 3)
            .unwrap();
        s.add(&out);
        assert_eq!(s.records_written, 2);
        assert_eq!(
            s.missing_fields,
            BTreeSet::from(["Enrichment_Phone__c".to_string()])
        );
        assert_eq!(s.dropped_fields.len(), 2);
    }

    #[test]
    fn retryable_errors_stop_after_max_attempts() {
        let mut p = full(L1);
        let body = json!([{"success": false, "errors": [{"statusCode":"UNABLE_TO_LOCK_ROW","message":"locked"}]}]).to_string();
        for i in 1..=MAX_ATTEMPTS {
            let req = CollectionRequest::build(vec![p.clone()]).unwrap();
            match req
                .outcomes(body.as_bytes(), MAX_ATTEMPTS)
                .unwrap()
                .remove(0)
            {
                RecordOutcome::Retry { pending, .. } => {
                    assert!(i < MAX_ATTEMPTS);
                    p = pending;
                }
                RecordOutcome::Failed {
                    attempts, reason, ..
                } => {
                    assert_eq!(i, MAX_ATTEMPTS);
                    assert_eq!(attempts, MAX_ATTEMPTS);
                    assert!(reason.contains("after 3 attempt(s)"), "{reason}");
                    return;
                }
                other => panic!("{other:?}"),
            }
        }
        panic!("never failed");
    }

    #[test]
    fn a_field_error_about_a_field_not_written_fails_the_record() {
        let req = CollectionRequest::build(vec![full(L1)]).unwrap();
        let body = json!([{"success": false, "errors": [{"statusCode":"FIELD_CUSTOM_VALIDATION_EXCEPTION","message":"LastName required","fields":["LastName"]}]}]);
        let out = req.outcomes(body.to_string().as_bytes(), 3).unwrap();
        assert!(
            matches!(&out[0], RecordOutcome::Failed { reason, .. } if reason.contains("not among those written"))
        );
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let req = || CollectionRequest::build(vec![full(L1), full(L2)]).unwrap();
        assert!(matches!(
            req().outcomes(b"", 3),
            Err(WriteError::Decode { .. })
        ));
        assert!(matches!(
            req().outcomes(b"{}", 3),
            Err(WriteError::Decode { .. })
        ));
        assert!(matches!(
            req().outcomes(b"[{\"success\":true}]", 3),
            Err(WriteError::ResultCount {
                sent: 2,
                got: 1,
                ..
            })
        ));
        let swapped = json!([{"id": L2, "success": true}, {"id": L1, "success": true}]).to_string();
        assert!(matches!(
            req().outcomes(swapped.as_bytes(), 3),
            Err(WriteError::ResultMismatch { .. })
        ));
        // 15-character ids in results match 18-character ones sent.
        let short = json!([{"id": &L1[..15], "success": true}, {"success": "yes"}]).to_string();
        let out = req().outcomes(short.as_bytes(), 3).unwrap();
        assert!(matches!(out[0], RecordOutcome::Written { .. }));
        // A failure without errors is retried.
        assert!(matches!(out[1], RecordOutcome::Retry { .. }));
    }

    #[test]
    fn bulk_job_and_csv() {
        assert_eq!(
            bulk_job_request(SObject::Lead),
            json!({"object":"Lead","operation":"update","contentType":"CSV","lineEnding":"LF","columnDelimiter":"COMMA"})
        );
        assert_eq!(bulk_close_body(), json!({"state":"UploadComplete"}));
        let a = PendingWrite::new(item(
            SObject::Lead,
            L1,
            &[
                ("Enrichment_Work_Email__c", "a@x.com"),
                ("Work_Email_Source__c", "Provider, \"A\""),
            ],
        ));
        let mut b = PendingWrite::new(item(SObject::Lead, L2, &[("Enrichment_Phone__c", "+1\n2")]));
        b.item.changes.insert("Fax".into(), None);
        let c = PendingWrite::new(item(
            SObject::Lead,
            "00Qxx0000001cccEAA",
            &[("Enrichment_Phone__c", "#N/A")],
        ));
        let d = PendingWrite::new(item(SObject::Contact, C1, &[("Email", "x@y.z")]));
        let (uploads, fallback) = bulk_uploads(SObject::Lead, vec![a, b, c, d]).unwrap();
        assert_eq!(fallback.len(), 2);
        assert_eq!(uploads.len(), 1);
        let u = &uploads[0];
        assert_eq!(
            u.columns,
            vec![
                "Id",
                "Enrichment_Phone__c",
                "Enrichment_Work_Email__c",
                "Fax",
                "Work_Email_Source__c"
            ]
        );
        let text = String::from_utf8(u.csv.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "Id,Enrichment_Phone__c,Enrichment_Work_Email__c,Fax,Work_Email_Source__c\n\
                 {L1},,a@x.com,,\"Provider, \"\"A\"\"\"\n\
                 {L2},\"+1\n2\",,#N/A,\n"
            )
        );
        assert!(!text.contains('\r'));
        assert!(u.records.iter().all(|p| p.attempts == 1));
    }

    #[test]
    fn job_info_states() {
        let create = br#"{"id":"7505fEXAMPLE4C2AAM","operation":"update","object":"Lead","state":"Open","contentUrl":"services/data/v62.0/jobs/ingest/7505fEXAMPLE4C2AAM/batches","concurrencyMode":"Parallel","contentType":"CSV","lineEnding":"LF","columnDelimiter":"COMMA","jobType":"V2Ingest"}"#;
        let j = parse_job_info(create).unwrap();
        assert_eq!(j.state, JobState::Open);
        assert!(!j.state.is_terminal());
        assert_eq!(
            bulk_upload_path(&j).unwrap(),
            "/services/data/v62.0/jobs/ingest/7505fEXAMPLE4C2AAM/batches"
        );
        let done = br#"{"id":"7505fEXAMPLE4C2AAM","state":"JobComplete","numberRecordsProcessed":10000,"numberRecordsFailed":"3","retries":0,"totalProcessingTime":1200}"#;
        let j = parse_job_info(done).unwrap();
        assert_eq!(j.state, JobState::JobComplete);
        assert!(j.state.is_terminal());
        assert_eq!((j.records_processed, j.records_failed), (10000, 3));
        assert_eq!(
            bulk_upload_path(&j).unwrap(),
            "/services/data/v62.0/jobs/ingest/7505fEXAMPLE4C2AAM/batches"
        );
        let failed = br#"{"id":"750x","state":"Failed","errorMessage":"InvalidBatch : Field name not found : Foo__c"}"#;
        let j = parse_job_info(failed).unwrap();
        assert_eq!(j.state, JobState::Failed);
        assert!(j.error_message.unwrap().contains("Foo__c"));
        assert_eq!(
            parse_job_info(br#"{"id":"x","state":"Weird"}"#)
                .unwrap()
                .state,
            JobState::Other("Weird".into())
        );
        assert!(parse_job_info(b"{}").is_err());
        assert!(parse_job_info(b"<html>").is_err());
        let evil = br#"{"id":"750x","state":"Open","contentUrl":"https://evil.example/steal"}"#;
        assert!(bulk_upload_path(&parse_job_info(evil).unwrap()).is_err());
        assert!(bulk_job_path("../x").is_err());
        assert_eq!(
            bulk_failed_results_path("750x").unwrap(),
            "/services/data/v62.0/jobs/ingest/750x/failedResults/"
        );
    }

    #[test]
    fn sf_error_cells() {
        let cols: Vec<String> = ["sf__Id", "sf__Error", "Id", "Phone", "Email"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = split_sf_error(
            "STRING_TOO_LONG:Phone: data value too large: 1234 (max length=40):Phone --",
            &cols,
        );
        assert_eq!(e.code, "STRING_TOO_LONG");
        assert_eq!(e.fields, vec!["Phone"]);
        assert_eq!(
            e.message,
            "Phone: data value too large: 1234 (max length=40)"
        );
        let e = split_sf_error(
            "CANNOT_UPDATE_CONVERTED_LEAD:cannot reference converted lead:--",
            &cols,
        );
        assert_eq!(e.code, "CANNOT_UPDATE_CONVERTED_LEAD");
        assert!(e.fields.is_empty());
        assert_eq!(e.message, "cannot reference converted lead");
        let e = split_sf_error(
            "INVALID_EMAIL_ADDRESS:Email: invalid email address: bad:Email,Phone --",
            &cols,
        );
        assert_eq!(e.fields, vec!["Email", "Phone"]);
        let e = split_sf_error("something odd: with colons", &cols);
        assert_eq!(e.code, "UNKNOWN");
        assert_eq!(e.message, "something odd: with colons");
        let e = split_sf_error("", &cols);
        assert_eq!(e.code, "UNKNOWN");
    }

    #[test]
    fn bulk_failed_results_become_per_record_outcomes() {
        let l3 = "00Qxx0000001cccEAA";
        let l4 = "00Qxx0000001dddEAA";
        let (mut uploads, _) =
            bulk_uploads(SObject::Lead, vec![full(L1), full(L2), full(l3), full(l4)]).unwrap();
        let upload = uploads.remove(0);
        let failed_csv = format!(
            "\"sf__Id\",\"sf__Error\",Id,Enrichment_Phone__c,Phone_Source__c\n\
             \"\",\"STRING_TOO_LONG:Phone Source: data value too large:Phone_Source__c --\",{L2},+14155552671,apollo\n\
             {l3},\"CANNOT_UPDATE_CONVERTED_LEAD:cannot reference converted lead:--\",{l3},,\n"
        );
        let failures = parse_failed_results(failed_csv.as_bytes()).unwrap();
        assert_eq!(failures.len(), 2);
        assert_eq!(failures[0].id, L2);
        assert_eq!(failures[0].error.fields, vec!["Phone_Source__c"]);
        let unprocessed =
            parse_unprocessed(format!("Id,Enrichment_Phone__c\n{l4},+1\n").as_bytes()).unwrap();
        assert_eq!(unprocessed, vec![l4.to_string()]);
        let out = bulk_outcomes(upload, &failures, &unprocessed, MAX_ATTEMPTS);
        assert!(matches!(&out[0], RecordOutcome::Written { id, .. } if id.0 == L1));
        let RecordOutcome::Retry { pending, .. } = &out[1] else {
            panic!("{:?}", out[1])
        };
        assert!(!pending.item.changes.contains_key("Enrichment_Phone__c"));
        assert!(
            matches!(&out[2], RecordOutcome::Failed { reason, .. } if reason.contains("converted"))
        );
        assert!(matches!(&out[3], RecordOutcome::Retry { .. }));
        assert_eq!(parse_failed_results(b"").unwrap(), vec![]);
        assert!(parse_failed_results(b"a,b\n1,2\n").is_err());
    }

    #[test]
    fn an_unfinished_job_keeps_only_the_rows_salesforce_confirms() {
        let l3 = "00Qxx0000001cccEAA";
        let l4 = "00Qxx0000001dddEAA";
        let (mut uploads, _) =
            bulk_uploads(SObject::Lead, vec![full(L1), full(L2), full(l3), full(l4)]).unwrap();
        let upload = uploads.remove(0);
        // L1 written (named by its 15-character sf__Id only), L2 failed, the
        // others neither: retried, never taken as written.
        let ok_csv = format!(
            "\"sf__Id\",\"sf__Created\",Id,Enrichment_Phone__c\n\"{}\",\"false\",{L1},+1\n",
            &L1[..15]
        );
        let successful = parse_successful_results(ok_csv.as_bytes()).unwrap();
        assert_eq!(successful, vec![L1.to_string()]);
        let only_sf_id = parse_successful_results(
            format!("\"sf__Id\",\"sf__Created\"\n\"{}\",\"false\"\n", &L1[..15]).as_bytes(),
        )
        .unwrap();
        assert_eq!(only_sf_id, vec![L1[..15].to_string()]);
        let failed_csv = format!(
            "\"sf__Id\",\"sf__Error\",Id\n\"{L2}\",\"UNABLE_TO_LOCK_ROW:unable to obtain exclusive access:--\",{L2}\n"
        );
        let failures = parse_failed_results(failed_csv.as_bytes()).unwrap();
        let out = bulk_outcomes_unfinished(
            upload,
            &only_sf_id,
            &failures,
            "the Bulk job ended Failed",
            MAX_ATTEMPTS,
        );
        assert!(matches!(&out[0], RecordOutcome::Written { id, .. } if id.0 == L1));
        assert!(matches!(&out[1], RecordOutcome::Retry { pending, .. } if pending.item.id.0 == L2));
        for o in &out[2..] {
            assert!(
                matches!(o, RecordOutcome::Retry { reason, .. } if reason == "the Bulk job ended Failed"),
                "{o:?}"
            );
        }
        assert_eq!(parse_successful_results(b"").unwrap(), Vec::<String>::new());
        assert!(parse_successful_results(b"a,b\n1,2\n").is_err());
    }
}

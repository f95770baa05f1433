//! Batched write-back (reference/hubspot.md §2.4, §3.3): `batch/update` in
//! chunks of 100 inputs, each with a unique `objectWriteTraceId`.
//!
//! - `200`: every input written.
//! - `207`: failed inputs are named by `errors[].context.objectWriteTraceId`
//!   (or `context.ids`); retryable ones (rate limits, locks, 5xx-like) are
//!   sent again, up to [`MAX_ATTEMPTS`], the rest reported per record.
//! - Whole-batch `400`: `PROPERTY_DOESNT_EXIST` (and `READ_ONLY_VALUE`)
//!   names are parsed from the message; those properties are dropped from
//!   the batch, reported, and the rest is sent again. Any other whole-batch
//!   `400` is narrowed by splitting the batch in halves until the failing
//!   records are alone, so one bad record never blocks 99 good ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::core::lead::LeadId;

use super::HubSpotError;
use super::client::{HubSpotClient, Method};
use super::limits::BucketKind;

pub const BATCH_UPDATE: usize = 100;
/// Attempts per record for retryable per-record failures.
pub const MAX_ATTEMPTS: u32 = 3;

/// The field changes of one contact.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteItem {
    pub lead_id: LeadId,
    pub changes: BTreeMap<String, String>,
    /// Fields written together or not at all (a value and its Source): when
    /// HubSpot refuses one, the others of its group are dropped too.
    pub groups: Vec<Vec<String>>,
}

/// What happened to one contact's write.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    pub lead_id: LeadId,
    /// Fields written (with their values).
    pub written: BTreeMap<String, String>,
    /// Set when the record (or some of its fields) could not be written.
    pub failure: Option<String>,
    pub attempts: u32,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteReport {
    pub batches: u64,
    pub records_written: u64,
    pub fields_written: u64,
    pub records_failed: u64,
    pub retried: u64,
    /// Properties HubSpot said do not exist (the mapping needs them).
    pub missing_properties: BTreeSet<String>,
}

struct Pending {
    item: WriteItem,
    attempts: u32,
    dropped: BTreeSet<String>,
}

/// Writes `items` (contacts with at least one change) and reports per record.
pub async fn write_back(
    client: &HubSpotClient,
    items: Vec<WriteItem>,
) -> Result<(WriteReport, Vec<ItemResult>), HubSpotError> {
    let mut report = WriteReport::default();
    let mut results = Vec::with_capacity(items.len());
    let mut pending: Vec<Pending> = items
        .into_iter()
        .filter(|i| !i.changes.is_empty())
        .map(|item| Pending {
            item,
            attempts: 0,
            dropped: BTreeSet::new(),
        })
        .collect();
    let mut queue: Vec<Vec<Pending>> = Vec::new();
    while !pending.is_empty() {
        let rest = pending.split_off(pending.len().min(BATCH_UPDATE));
        queue.push(std::mem::replace(&mut pending, rest));
    }
    while let Some(batch) = queue.pop() {
        // A record whose every change was dropped is reported, not sent.
        let (emptied, mut batch): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| p.item.changes.is_empty());
        for p in emptied {
            results.push(ItemResult {
                lead_id: p.item.lead_id,
                written: BTreeMap::new(),
                failure: Some(dropped_reason(&p.dropped)),
                attempts: p.attempts,
            });
        }
        if batch.is_empty() {
            continue;
        }
        for p in &mut batch {
            p.attempts += 1;
        }
        let body = json!({
            "inputs": batch.iter().map(|p| json!({
                "id": p.item.lead_id.as_str(),
                "objectWriteTraceId": p.item.lead_id.as_str(),
                "properties": p.item.changes,
            })).collect::<Vec<_>>()
        });
        report.batches += 1;
        let answer = client
            .call(
                BucketKind::General,
                Method::Post,
                "/crm/v3/objects/contacts/batch/update",
                Some(&body),
            )
            .await;
        match answer {
            Ok(a) => {
                let failed = failed_inputs(&a.body);
                let mut retry = Vec::new();
                for p in batch {
                    match failed.get(p.item.lead_id.as_str()) {
                        None => {
                            report.records_written += 1;
                            report.fields_written += p.item.changes.len() as u64;
                            results.push(ItemResult {
                                lead_id: p.item.lead_id.clone(),
                                failure: (!p.dropped.is_empty())
                                    .then(|| dropped_reason(&p.dropped)),
                                written: p.item.changes,
                                attempts: p.attempts,
                            });
                        }
                        Some(f) if f.retryable && p.attempts < MAX_ATTEMPTS => {
                            report.retried += 1;
                            retry.push(p);
                        }
                        Some(f) => {
                            report.records_failed += 1;
                            results.push(ItemResult {
                                lead_id: p.item.lead_id.clone(),
                                written: BTreeMap::new(),
                                failure: Some(format!(
                                    "HubSpot refused the update of contact {} after {} attempt(s): {}",
                                    p.item.lead_id, p.attempts, f.reason
                                )),
                                attempts: p.attempts,
                            });
                        }
                    }
                }
                if !retry.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    queue.push(retry);
                }
            }
            Err(HubSpotError::Api {
                status: 400,
                body,
                message,
                ..
            }) => {
                let bad = invalid_properties(&body);
                let names: BTreeSet<String> = bad
                    .iter()
                    .filter(|b| {
                        matches!(
                            b.error.as_str(),
                            "PROPERTY_DOESNT_EXIST" | "READ_ONLY_VALUE"
                        )
                    })
                    .map(|b| b.name.clone())
                    .collect();
                let present: bool = batch
                    .iter()
                    .any(|p| names.iter().any(|n| p.item.changes.contains_key(n)));
                if !names.is_empty() && present {
                    report.missing_properties.extend(
                        bad.iter()
                            .filter(|b| b.error == "PROPERTY_DOESNT_EXIST")
                            .map(|b| b.name.clone()),
                    );
                    for p in &mut batch {
                        for n in &names {
                            let mut drop: BTreeSet<String> = BTreeSet::from([n.clone()]);
                            for g in p.item.groups.iter().filter(|g| g.contains(n)) {
                                drop.extend(g.iter().cloned());
                            }
                            for d in drop {
                                if p.item.changes.remove(&d).is_some() {
                                    p.dropped.insert(d);
                                }
                            }
                        }
                        p.attempts -= 1;
                    }
                    queue.push(batch);
                } else if batch.len() > 1 {
                    // Narrow down: which records make the batch invalid?
                    let mut second = batch.split_off(batch.len() / 2);
                    for p in batch.iter_mut().chain(second.iter_mut()) {
                        p.attempts -= 1;
                    }
                    queue.push(second);
                    queue.push(batch);
                } else {
                    for p in batch {
                        report.records_failed += 1;
                        results.push(ItemResult {
                            lead_id: p.item.lead_id.clone(),
                            written: BTreeMap::new(),
                            failure: Some(format!(
                                "HubSpot refused the update of contact {}: {message}",
                                p.item.lead_id
                            )),
                            attempts: p.attempts,
                        });
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok((report, results))
}

fn dropped_reason(dropped: &BTreeSet<String>) -> String {
    format!(
        "HubSpot has no writable propert{} {}: create {} (enrichd check) or fix mappings/hubspot.toml",
        if dropped.len() == 1 { "y" } else { "ies" },
        dropped
            .iter()
            .map(|d| format!("`{d}`"))
            .collect::<Vec<_>>()
            .join(", "),
        if dropped.len() == 1 { "it" } else { "them" },
    )
}

struct Failed {
    reason: String,
    retryable: bool,
}

/// Failed inputs of a 200/207 answer, by trace id (= contact id).
fn failed_inputs(body: &Value) -> HashMap<String, Failed> {
    let mut out = HashMap::new();
    for e in body
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let category = e.get("category").and_then(Value::as_str).unwrap_or("");
        let message = e.get("message").and_then(Value::as_str).unwrap_or("");
        let status = e.get("status").and_then(Value::as_str).unwrap_or("");
        let retryable = matches!(
            category,
            "RATE_LIMITS" | "LOCKED" | "INTERNAL_ERROR" | "TIMEOUT"
        ) || message.to_ascii_lowercase().contains("lock")
            || message.to_ascii_lowercase().contains("try again");
        let reason = format!(
            "{} {}{}",
            if category.is_empty() {
                status
            } else {
                category
            },
            message,
            if retryable { " (retryable)" } else { "" }
        );
        let ids: Vec<String> = ["/context/objectWriteTraceId", "/context/ids", "/context/id"]
            .iter()
            .filter_map(|p| e.pointer(p).and_then(Value::as_array))
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        for id in ids {
            out.entry(id).or_insert(Failed {
                reason: reason.clone(),
                retryable,
            });
        }
    }
    out
}

/// One entry of "Property values were not valid: [...]".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProperty {
    pub name: String,
    pub error: String,
    pub message: String,
}

/// Parses the JSON array HubSpot embeds in a 400 message (§3.3).
pub fn invalid_properties(body: &Value) -> Vec<InvalidProperty> {
    let mut out = Vec::new();
    let mut messages: Vec<&str> = Vec::new();
    if let Some(m) = body.get("message").and_then(Value::as_str) {
        messages.push(m);
    }
    for e in body
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(m) = e.get("message").and_then(Value::as_str) {
            messages.push(m);
        }
    }
    for m in messages {
        let Some(start) = m.find('[') else { continue };
        let Ok(list) = serde_json::from_str::<Vec<Value>>(&m[start..]) else {
            continue;
        };
        for entry in list {
            let s = |k: &str| {
                entry
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            if !s("name").is_empty() {
                out.push(InvalidProperty {
                    name: s("name"),
                    error: s("error"),
                    message: s("message"),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_property_doesnt_exist_from_the_documented_body() {
        let body = json!({"status":"error",
            "message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Property \\\"segment_group_id\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"segment_group_id\"}]",
            "correlationId":"ef6f8b25-6ef2-47d3-ba8e-8eeb04a92045","category":"VALIDATION_ERROR"});
        let bad = invalid_properties(&body);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].name, "segment_group_id");
        assert_eq!(bad[0].error, "PROPERTY_DOESNT_EXIST");
    }

    #[test]
    fn failed_inputs_are_found_by_trace_id() {
        let body = json!({"status":"COMPLETE","results":[],"numErrors":1,
            "errors":[{"status":"error","category":"VALIDATION_ERROR",
            "message":"Property values were not valid","context":{"objectWriteTraceId":["549"]}}]});
        let f = failed_inputs(&body);
        assert!(f.contains_key("549"));
        assert!(!f["549"].retryable);
    }
}

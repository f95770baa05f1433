//! Write-back runner (§3): the I/O around [`super::write`].
//!
//! - **Collections** ([`write_collections`]): [`write::plan_collections`]
//!   into `PATCH /composite/sobjects` requests of ≤ 200 records with
//!   `allOrNone: false`, [`COLLECTIONS_IN_FLIGHT`] at once (each also
//!   holds one of the client's concurrency permits). Per-record results
//!   come back as [`RecordOutcome`]s: written; retry (a retryable code, or
//!   the record without the fields an error named *and their partners* —
//!   a value never goes without its Source, invariant 11) after a short
//!   back-off; failed with what/where/what-to-do.
//! - **Bulk API 2.0** ([`write_bulk`]) for more than `bulk_threshold`
//!   records of one object: create the job, `PUT` the CSV, close it, poll
//!   with back-off until it ends, then read `failedResults/` (only when the
//!   job counted failures) and `unprocessedrecords/` (only when it did not
//!   process every row) into per-record outcomes. Retries (field drops,
//!   unprocessed rows, a `Failed`/`Aborted` job's rows) go through
//!   Collections.
//! - Every write request carries [`write::write_headers`]:
//!   `Sforce-Auto-Assign: FALSE`, the duplicate-rule header and
//!   `Sforce-Call-Options: client=enrichd`.
//!
//! A [`SalesforceError`] (a pause, an expired connection, a transport
//! failure after retries) stops the run: outcomes already final are
//! returned with it ([`WriteRun::error`]) so what was written is recorded;
//! the rest is written by a later pass (the watermark has not moved).

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::SalesforceError;
use super::client::{Body, Method, Request, SalesforceClient};
use super::write::{
    self, BulkUpload, CollectionRequest, JobState, MAX_ATTEMPTS, PendingWrite, RecordOutcome,
    WriteError, WriteItem, WritePath, WriteSummary,
};

/// Collections requests in flight at once (within the client's permits).
pub const COLLECTIONS_IN_FLIGHT: usize = 4;
/// Rows per Bulk ingest job enrichd builds (a job's data is one CSV).
pub const BULK_JOB_RECORDS: usize = 10_000;
/// How long a Bulk job may take before enrichd gives up on it (the rows
/// are then sent through Collections).
pub const BULK_JOB_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What a write run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteReport {
    pub summary: WriteSummary,
    pub collection_calls: u64,
    pub bulk_jobs: u64,
    /// Bulk API calls (create, upload, close, polls, results).
    pub bulk_calls: u64,
    pub records_via_bulk: u64,
}

impl WriteReport {
    pub fn merge(&mut self, o: &WriteReport) {
        let s = &mut self.summary;
        s.records_written += o.summary.records_written;
        s.fields_written += o.summary.fields_written;
        s.records_failed += o.summary.records_failed;
        s.retries += o.summary.retries;
        for (k, v) in &o.summary.dropped_fields {
            s.dropped_fields
                .entry(k.clone())
                .or_default()
                .extend(v.iter().cloned());
        }
        s.missing_fields
            .extend(o.summary.missing_fields.iter().cloned());
        self.collection_calls += o.collection_calls;
        self.bulk_jobs += o.bulk_jobs;
        self.bulk_calls += o.bulk_calls;
        self.records_via_bulk += o.records_via_bulk;
    }
}

/// The final outcomes of a run (only `Written` and `Failed`), and the
/// error that stopped it early, if one did.
#[derive(Debug, Default)]
pub struct WriteRun {
    pub report: WriteReport,
    pub outcomes: Vec<RecordOutcome>,
    pub error: Option<SalesforceError>,
}

fn decode(endpoint: &str, e: WriteError) -> SalesforceError {
    SalesforceError::Decode {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    }
}

/// Writes `items` through Collections or Bulk, as `threshold` says.
pub async fn write_items(
    client: &SalesforceClient,
    items: Vec<WriteItem>,
    threshold: usize,
) -> WriteRun {
    let pending: Vec<PendingWrite> = items
        .into_iter()
        .filter(|i| !i.changes.is_empty())
        .map(PendingWrite::new)
        .collect();
    match write::choose_path(pending.len(), threshold) {
        WritePath::Collections => write_collections(client, pending).await,
        WritePath::Bulk => write_bulk(client, pending).await,
    }
}

/// Writes through sObject Collections until every record is written or
/// failed (retries included).
pub async fn write_collections(client: &SalesforceClient, pending: Vec<PendingWrite>) -> WriteRun {
    let mut run = WriteRun::default();
    let headers = write::write_headers(client.settings.duplicate_rule);
    let mut todo = pending;
    let mut round = 0u32;
    while !todo.is_empty() {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(round.min(10)))).await;
        }
        round += 1;
        let (requests, empty) = write::plan_collections(std::mem::take(&mut todo));
        run.report.summary.add(&empty);
        run.outcomes.extend(empty);
        let mut requests = requests.into_iter();
        let mut running = FuturesUnordered::new();
        let send = |req: CollectionRequest| {
            let headers = headers.clone();
            async move {
                let r = client
                    .call(
                        Request::json(Method::Patch, CollectionRequest::path(), req.body.clone())
                            .headers(headers),
                    )
                    .await;
                (req, r)
            }
        };
        for req in requests.by_ref().take(COLLECTIONS_IN_FLIGHT) {
            running.push(send(req));
        }
        while let Some((req, answer)) = running.next().await {
            run.report.collection_calls += 1;
            match answer {
                Ok(a) => match req.clone().outcomes(&a.body, MAX_ATTEMPTS) {
                    Ok(outs) => {
                        run.report.summary.add(&outs);
                        for o in outs {
                            match o {
                                RecordOutcome::Retry { pending, reason } => {
                                    tracing::debug!(id = %pending.item.id, %reason, "Salesforce write retried");
                                    todo.push(pending);
                                }
                                o => run.outcomes.push(o),
                            }
                        }
                    }
                    // Nothing can be attributed: the whole request is sent
                    // again (updates are idempotent), within the attempts.
                    Err(e) => {
                        tracing::warn!(error = %e, "Salesforce Collections answer unreadable");
                        for p in req.records {
                            if p.attempts < MAX_ATTEMPTS {
                                todo.push(p);
                            } else {
                                let reason = format!(
                                    "Salesforce's answer to the update of {} {} could not be read after {} attempt(s): {e}",
                                    p.item.object, p.item.id, p.attempts
                                );
                                let o = RecordOutcome::Failed {
                                    object: p.item.object,
                                    id: p.item.id,
                                    error: None,
                                    reason,
                                    dropped: p.dropped,
                                    attempts: p.attempts,
                                };
                                run.report.summary.add(std::slice::from_ref(&o));
                                run.outcomes.push(o);
                            }
                        }
                    }
                },
                Err(e) => {
                    // Stop sending; what is in flight finishes and is kept.
                    if run.error.is_none() {
                        run.error = Some(e);
                    }
                }
            }
            if run.error.is_none()
                && let Some(next) = requests.next()
            {
                running.push(send(next));
            }
        }
        if run.error.is_some() {
            return run;
        }
    }
    run
}

/// Writes through Bulk API 2.0 ingest jobs of up to [`BULK_JOB_RECORDS`]
/// rows (per object), then the retries through Collections.
pub async fn write_bulk(client: &SalesforceClient, pending: Vec<PendingWrite>) -> WriteRun {
    let mut run = WriteRun::default();
    let mut by_object: std::collections::BTreeMap<super::SObject, Vec<PendingWrite>> =
        Default::default();
    for p in pending {
        by_object.entry(p.item.object).or_default().push(p);
    }
    let mut retry: Vec<PendingWrite> = Vec::new();
    for (object, mut records) in by_object {
        while !records.is_empty() {
            let rest = records.split_off(records.len().min(BULK_JOB_RECORDS));
            let chunk = std::mem::replace(&mut records, rest);
            let (uploads, fallback) = match write::bulk_uploads(object, chunk) {
                Ok(x) => x,
                Err(e) => {
                    run.error = Some(decode("Bulk CSV", e));
                    return run;
                }
            };
            retry.extend(fallback);
            for upload in uploads {
                match bulk_job(client, upload, &mut run.report).await {
                    Ok(outs) => {
                        run.report.summary.add(&outs);
                        for o in outs {
                            match o {
                                RecordOutcome::Retry { pending, .. } => retry.push(pending),
                                o => run.outcomes.push(o),
                            }
                        }
                    }
                    Err(e) => {
                        run.error = Some(e);
                        return run;
                    }
                }
            }
        }
    }
    if !retry.is_empty() {
        let more = write_collections(client, retry).await;
        run.report.merge(&more.report);
        run.outcomes.extend(more.outcomes);
        run.error = more.error;
    }
    run
}

/// One ingest job, from creation to per-record outcomes.
async fn bulk_job(
    client: &SalesforceClient,
    upload: BulkUpload,
    report: &mut WriteReport,
) -> Result<Vec<RecordOutcome>, SalesforceError> {
    let headers = write::write_headers(client.settings.duplicate_rule);
    let rows = upload.records.len() as u64;
    report.bulk_jobs += 1;
    report.records_via_bulk += rows;
    report.bulk_calls += 1;
    let created = client
        .call(
            Request::json(
                Method::Post,
                write::bulk_create_path(),
                write::bulk_job_request(upload.object),
            )
            .headers(headers.clone())
            .bulk(),
        )
        .await?;
    let job = write::parse_job_info(&created.body).map_err(|e| decode(&created.endpoint, e))?;
    let job_path = write::bulk_job_path(&job.id).map_err(|e| decode(&created.endpoint, e))?;
    let csv = String::from_utf8(upload.csv.clone()).map_err(|e| SalesforceError::Decode {
        endpoint: "Bulk CSV".into(),
        message: format!("not UTF-8: {e}"),
    })?;
    let upload_path = write::bulk_upload_path(&job).map_err(|e| decode(&created.endpoint, e))?;
    report.bulk_calls += 1;
    let mut put = Request::new(Method::Put, upload_path)
        .headers(headers.clone())
        .bulk();
    put.body = Some(Body::Csv(csv));
    client.call(put).await?;
    report.bulk_calls += 1;
    client
        .call(
            Request::json(Method::Patch, job_path.clone(), write::bulk_close_body())
                .headers(headers.clone())
                .bulk(),
        )
        .await?;
    // Poll with back-off until the job ends.
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(100);
    let info = loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 3 / 2).min(Duration::from_secs(10));
        report.bulk_calls += 1;
        let a = client.call(Request::get(job_path.clone()).bulk()).await?;
        let info = write::parse_job_info(&a.body).map_err(|e| decode(&a.endpoint, e))?;
        if info.state.is_terminal() {
            break info;
        }
        if started.elapsed() > BULK_JOB_TIMEOUT {
            tracing::warn!(job = %info.id, "Salesforce Bulk job still running after 30 min: aborting it; its rows go through Collections");
            report.bulk_calls += 1;
            let _ = client
                .call(
                    Request::json(Method::Patch, job_path.clone(), write::bulk_abort_body())
                        .headers(headers.clone())
                        .bulk(),
                )
                .await;
            break info;
        }
    };
    if info.state != JobState::JobComplete {
        tracing::warn!(
            job = %info.id,
            state = ?info.state,
            error = info.error_message.as_deref().unwrap_or(""),
            "Salesforce Bulk job did not complete; its rows go through Collections"
        );
        let reason = format!(
            "the Bulk job ended {:?}{}",
            info.state,
            info.error_message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        return Ok(upload
            .records
            .into_iter()
            .map(|pending| RecordOutcome::Retry {
                pending,
                reason: reason.clone(),
            })
            .collect());
    }
    let failures = if info.records_failed > 0 {
        let path = write::bulk_failed_results_path(&info.id).map_err(|e| decode("Bulk", e))?;
        report.bulk_calls += 1;
        let a = client.call(Request::get(path).bulk()).await?;
        write::parse_failed_results(&a.body).map_err(|e| decode(&a.endpoint, e))?
    } else {
        Vec::new()
    };
    let unprocessed = if info.records_processed < rows {
        let path = write::bulk_unprocessed_path(&info.id).map_err(|e| decode("Bulk", e))?;
        report.bulk_calls += 1;
        let a = client.call(Request::get(path).bulk()).await?;
        write::parse_unprocessed(&a.body).map_err(|e| decode(&a.endpoint, e))?
    } else {
        Vec::new()
    };
    Ok(write::bulk_outcomes(
        upload,
        &failures,
        &unprocessed,
        MAX_ATTEMPTS,
    ))
}

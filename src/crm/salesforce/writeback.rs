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
//! - **Bulk API 2.0** ([`write_bulk`], [`write_bulk_on`]) for more than
//!   `bulk_threshold` records of one object: create the job, `PUT` the
//!   CSV, close it, poll with back-off until it ends, then read
//!   `failedResults/` (only when the job counted failures) and
//!   `unprocessedrecords/` (only when it did not process every row) into
//!   per-record outcomes. A job still running after [`BULK_JOB_TIMEOUT`]
//!   (measured on the connector's clock) is aborted. A job that ends
//!   `Failed` or `Aborted` keeps only the rows `successfulResults/` names
//!   (none are read when it processed nothing); its other rows are
//!   retried. A job Salesforce will not take (creation refused — e.g. the
//!   daily Bulk allocation used up —, or the upload or close refused and
//!   the job aborted) sends all its rows through Collections; a pause
//!   (`REQUEST_LIMIT_EXCEEDED`), an expired connection or a transport
//!   failure stops the run instead. Retries (field drops, unprocessed
//!   rows, the rows of a job that did not complete) go through
//!   Collections, so no row is lost and none Salesforce confirmed is sent
//!   twice.
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
use super::errors::ErrorClass;
use super::write::{
    self, BulkUpload, CollectionRequest, JobState, MAX_ATTEMPTS, PendingWrite, RecordOutcome,
    WriteError, WriteSummary,
};
use crate::clock::{Clock, SystemClock};

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
/// rows (per object), then the retries through Collections. The
/// [`BULK_JOB_TIMEOUT`] is measured on the system clock; see
/// [`write_bulk_on`].
pub async fn write_bulk(client: &SalesforceClient, pending: Vec<PendingWrite>) -> WriteRun {
    write_bulk_on(client, pending, &SystemClock).await
}

/// [`write_bulk`] with the [`BULK_JOB_TIMEOUT`] measured on `clock` (the
/// connector's clock: a test moves a `ManualClock` past the timeout).
pub async fn write_bulk_on(
    client: &SalesforceClient,
    pending: Vec<PendingWrite>,
    clock: &dyn Clock,
) -> WriteRun {
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
                match bulk_job(client, upload, &mut run.report, clock).await {
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

/// Whether a failed Bulk call leaves Collections worth trying: the Bulk API
/// refused this job (its own quota, permissions, a server error after the
/// retries, an unreadable answer) while the org and the session are fine.
/// A pause, an expired connection or a transport failure stops the run.
fn bulk_refused(e: &SalesforceError) -> bool {
    match e {
        SalesforceError::Api(f) => !matches!(
            f.class,
            ErrorClass::InvalidSession | ErrorClass::ReconnectRequired
        ),
        SalesforceError::Decode { .. } => true,
        _ => false,
    }
}

/// Every row of `upload` back to Collections, `reason` logged. `sent`:
/// whether the rows reached Salesforce (a row never sent does not use up
/// one of its attempts).
fn all_retried(upload: BulkUpload, reason: &str, sent: bool) -> Vec<RecordOutcome> {
    upload
        .records
        .into_iter()
        .map(|mut pending| {
            if !sent {
                pending.attempts = pending.attempts.saturating_sub(1);
            }
            RecordOutcome::Retry {
                pending,
                reason: reason.to_string(),
            }
        })
        .collect()
}

/// Aborts a job that never started processing (upload or close failed),
/// so its rows can go through Collections. True only when Salesforce's
/// answer says the job is `Aborted`.
async fn abort_unstarted(
    client: &SalesforceClient,
    job_path: &str,
    headers: &[(&'static str, String)],
    report: &mut WriteReport,
) -> bool {
    report.bulk_calls += 1;
    let answer = client
        .call(
            Request::json(
                Method::Patch,
                job_path.to_string(),
                write::bulk_abort_body(),
            )
            .headers(headers.to_vec())
            .bulk(),
        )
        .await;
    match answer {
        Ok(a) => write::parse_job_info(&a.body).is_ok_and(|i| i.state == JobState::Aborted),
        Err(_) => false,
    }
}

/// One ingest job, from creation to per-record outcomes. A job Salesforce
/// refuses before it holds the rows (creation, upload or close refused,
/// and the job then aborted) sends its rows through Collections; a job
/// that ends `Failed` or `Aborted` — or runs past [`BULK_JOB_TIMEOUT`] on
/// `clock` and is aborted — keeps the rows `successfulResults/` confirms
/// and sends the others through Collections.
async fn bulk_job(
    client: &SalesforceClient,
    upload: BulkUpload,
    report: &mut WriteReport,
    clock: &dyn Clock,
) -> Result<Vec<RecordOutcome>, SalesforceError> {
    let headers = write::write_headers(client.settings.duplicate_rule);
    let rows = upload.records.len() as u64;
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
        .await;
    let job = created.and_then(|created| {
        let job = write::parse_job_info(&created.body).map_err(|e| decode(&created.endpoint, e))?;
        let job_path = write::bulk_job_path(&job.id).map_err(|e| decode(&created.endpoint, e))?;
        let upload_path =
            write::bulk_upload_path(&job).map_err(|e| decode(&created.endpoint, e))?;
        Ok((job, job_path, upload_path))
    });
    let (job, job_path, upload_path) = match job {
        Ok(j) => j,
        Err(e) if bulk_refused(&e) => {
            tracing::warn!(error = %e, "Salesforce Bulk job not created; its rows go through Collections");
            return Ok(all_retried(
                upload,
                &format!("the Bulk job could not be created: {e}"),
                false,
            ));
        }
        Err(e) => return Err(e),
    };
    report.bulk_jobs += 1;
    let csv = String::from_utf8(upload.csv.clone()).map_err(|e| SalesforceError::Decode {
        endpoint: "Bulk CSV".into(),
        message: format!("not UTF-8: {e}"),
    })?;
    report.bulk_calls += 1;
    let mut put = Request::new(Method::Put, upload_path)
        .headers(headers.clone())
        .bulk();
    put.body = Some(Body::Csv(csv));
    let mut sent = client.call(put).await.map(|_| ());
    if sent.is_ok() {
        report.bulk_calls += 1;
        sent = client
            .call(
                Request::json(Method::Patch, job_path.clone(), write::bulk_close_body())
                    .headers(headers.clone())
                    .bulk(),
            )
            .await
            .map(|_| ());
    }
    if let Err(e) = sent {
        // Not started: once aborted, the rows cannot be written by the job.
        if bulk_refused(&e) && abort_unstarted(client, &job_path, &headers, report).await {
            tracing::warn!(job = %job.id, error = %e, "Salesforce Bulk job refused its data and was aborted; its rows go through Collections");
            return Ok(all_retried(
                upload,
                &format!("the Bulk job {} refused its data: {e}", job.id),
                false,
            ));
        }
        return Err(e);
    }
    report.records_via_bulk += rows;
    // Poll with back-off until the job ends, or give up after the timeout
    // (on the connector's clock).
    let started = clock.now();
    let timeout_ms = BULK_JOB_TIMEOUT.as_millis() as i64;
    let mut wait = Duration::from_millis(100);
    let mut timed_out = false;
    let info = loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 3 / 2).min(Duration::from_secs(10));
        report.bulk_calls += 1;
        let a = client.call(Request::get(job_path.clone()).bulk()).await?;
        let info = write::parse_job_info(&a.body).map_err(|e| decode(&a.endpoint, e))?;
        if info.state.is_terminal() {
            break info;
        }
        if clock.now().saturating_sub(started) > timeout_ms {
            timed_out = true;
            tracing::warn!(job = %info.id, state = ?info.state, "Salesforce Bulk job still running after 30 min: aborting it; the rows it did not write go through Collections");
            report.bulk_calls += 1;
            let aborted = client
                .call(
                    Request::json(Method::Patch, job_path.clone(), write::bulk_abort_body())
                        .headers(headers.clone())
                        .bulk(),
                )
                .await;
            if let Err(e) = &aborted {
                tracing::warn!(job = %info.id, error = %e, "Salesforce Bulk job could not be aborted");
            }
            // What the job did until it stopped (it may have ended just
            // before the abort).
            report.bulk_calls += 1;
            break match client.call(Request::get(job_path.clone()).bulk()).await {
                Ok(a) => write::parse_job_info(&a.body).unwrap_or(info),
                Err(_) => info,
            };
        }
    };
    if info.state == JobState::JobComplete {
        let failures = bulk_failures(client, &info, report).await?;
        let unprocessed = if info.records_processed < rows {
            let path = write::bulk_unprocessed_path(&info.id).map_err(|e| decode("Bulk", e))?;
            report.bulk_calls += 1;
            let a = client.call(Request::get(path).bulk()).await?;
            write::parse_unprocessed(&a.body).map_err(|e| decode(&a.endpoint, e))?
        } else {
            Vec::new()
        };
        return Ok(write::bulk_outcomes(
            upload,
            &failures,
            &unprocessed,
            MAX_ATTEMPTS,
        ));
    }
    let reason = format!(
        "the Bulk job {} {}{}",
        info.id,
        if timed_out && info.state != JobState::Aborted {
            format!(
                "ran past {} min and could not be aborted (state {:?})",
                BULK_JOB_TIMEOUT.as_secs() / 60,
                info.state
            )
        } else if timed_out {
            format!(
                "ran past {} min and was aborted",
                BULK_JOB_TIMEOUT.as_secs() / 60
            )
        } else {
            format!("ended {:?}", info.state)
        },
        info.error_message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    tracing::warn!(
        job = %info.id,
        state = ?info.state,
        processed = info.records_processed,
        error = info.error_message.as_deref().unwrap_or(""),
        "Salesforce Bulk job did not complete; the rows it did not write go through Collections"
    );
    if info.records_processed == 0 && info.state.is_terminal() {
        return Ok(all_retried(upload, &reason, true));
    }
    // Some rows may have been written: keep those Salesforce confirms.
    let path = write::bulk_successful_results_path(&info.id).map_err(|e| decode("Bulk", e))?;
    report.bulk_calls += 1;
    let a = client.call(Request::get(path).bulk()).await?;
    let successful =
        write::parse_successful_results(&a.body).map_err(|e| decode(&a.endpoint, e))?;
    let failures = bulk_failures(client, &info, report).await?;
    Ok(write::bulk_outcomes_unfinished(
        upload,
        &successful,
        &failures,
        &reason,
        MAX_ATTEMPTS,
    ))
}

/// `failedResults/` of a job that counted failures.
async fn bulk_failures(
    client: &SalesforceClient,
    info: &write::JobInfo,
    report: &mut WriteReport,
) -> Result<Vec<write::BulkFailure>, SalesforceError> {
    if info.records_failed == 0 {
        return Ok(Vec::new());
    }
    let path = write::bulk_failed_results_path(&info.id).map_err(|e| decode("Bulk", e))?;
    report.bulk_calls += 1;
    let a = client.call(Request::get(path).bulk()).await?;
    write::parse_failed_results(&a.body).map_err(|e| decode(&a.endpoint, e))
}

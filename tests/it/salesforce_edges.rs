//! The Salesforce connector's failure paths against the simulator: Bulk
//! API 2.0 jobs that end `Failed` (whole or part-way), run past the
//! 30-minute timeout, or cannot be created; query locators that expire in
//! the middle of a pass (time-to-live, too many open cursors, an injected
//! `INVALID_QUERY_LOCATOR`). Each checks that no row is lost and none is
//! written (or handed on) twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enrichd::clock::ManualClock;
use enrichd::core::lead::{Lead, LeadId, WorkspaceId};
use enrichd::crm::salesforce::client::{Request, SalesforceClient};
use enrichd::crm::salesforce::pull::PageSink;
use enrichd::crm::salesforce::sync::SyncOptions;
use enrichd::crm::salesforce::write::{PendingWrite, RecordOutcome, WriteItem};
use enrichd::crm::salesforce::writeback::{self, BULK_JOB_TIMEOUT};
use enrichd::crm::salesforce::{SObject, SalesforceError};
use enrichd::store::Store;
use enrichd_sim::salesforce::{SalesforceFault, SalesforceOptions, SalesforceSim, SeedSpec};
use enrichd_sim::{ProviderKind, SimOptions};

use crate::support::{FAST_LIMITS, Harness, HarnessBuilder, SalesforceSpec};

const WORKSPACE: &str = r#"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "linkedin_url"]
"#;

const WRITE_NO_ENRICH: SyncOptions = SyncOptions {
    full: false,
    enrich: false,
    write: true,
};

/// Above this many pending writes a pass uses Bulk (the lowest allowed).
const BULK_ABOVE_200: &str = "bulk_threshold = 200\n";

async fn harness(leads: usize, opts: SalesforceOptions, crm_extra: &str) -> Harness {
    let mut spec = SalesforceSpec::new(opts);
    spec.seed = SeedSpec::new(leads, 0);
    spec.crm_extra = crm_extra.to_string();
    HarnessBuilder::new(leads)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .workspace(WORKSPACE)
        .salesforce(spec)
        .start()
        .await
}

fn live_leads(h: &Harness) -> Vec<String> {
    let converted: HashSet<String> = h.sf().converted_lead_ids().into_iter().collect();
    h.sf()
        .lead_ids()
        .into_iter()
        .filter(|i| !converted.contains(i))
        .collect()
}

/// enrichd's writes to `id` (client=enrichd), by path (`bulk`, `collections`, …).
fn enrichd_writes(sim: &SalesforceSim, id: &str) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for w in sim.history(id) {
        if w.client.as_deref() == Some("enrichd") {
            *by.entry(w.via.clone()).or_default() += 1;
        }
    }
    by
}

fn total(by: &BTreeMap<String, usize>) -> usize {
    by.values().sum()
}

/// Every live Lead written exactly once by enrichd, every converted one
/// never; returns how many went through Bulk.
fn each_written_once(h: &Harness, live: &[String]) -> usize {
    let mut via_bulk = 0;
    for id in live {
        let by = enrichd_writes(h.sf(), id);
        assert_eq!(total(&by), 1, "{id} written {by:?}");
        via_bulk += by.get("bulk").copied().unwrap_or(0);
    }
    for id in h.sf().converted_lead_ids() {
        assert_eq!(total(&enrichd_writes(h.sf(), &id)), 0, "converted {id}");
    }
    via_bulk
}

// ------------------------------------------------------------------ Bulk jobs that fail

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_job_that_ends_failed_sends_every_row_through_collections_once() {
    let h = harness(300, SalesforceOptions::defaults(), BULK_ABOVE_200).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    let live = live_leads(&h);
    assert!(live.len() > 200);
    // The whole job fails before any row is processed.
    h.sf().inject(SalesforceFault::FailBulkJobs {
        processed: 0,
        count: 1,
        error_message: Some("InvalidBatch : Failed to process the upload".into()),
    });
    h.sf().reset_stats();
    let r = sf.sync(None, WRITE_NO_ENRICH).await.expect("sync");
    let jobs = h.sf().bulk_jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].state, "Failed");
    assert_eq!(jobs[0].unprocessed, live.len());
    assert_eq!(r.write.bulk_jobs, 1, "{r:?}");
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.write.summary.records_written, live.len() as u64);
    let via_bulk = each_written_once(&h, &live);
    assert_eq!(via_bulk, 0, "the failed job wrote nothing");
    let st = h.sf().stats();
    assert_eq!(st.collection_records, live.len() as u64, "{st:?}");
    assert_eq!(st.collection_calls, live.len().div_ceil(200) as u64);
    // Recorded as written, once each.
    let outcomes = h.store.write_outcomes(&h.ws.id).await.unwrap();
    assert_eq!(
        outcomes.iter().filter(|o| o.state == "done").count(),
        live.len()
    );
    assert!(st.owner_changes.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_job_that_fails_part_way_keeps_what_it_wrote_and_retries_only_the_rest() {
    let h = harness(300, SalesforceOptions::defaults(), BULK_ABOVE_200).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    let live = live_leads(&h);
    // 100 rows processed (3 of them refused per record), then the job
    // fails: the rest are in unprocessedrecords/.
    // Three rows are locked once: those among the processed rows fail in
    // the job (failedResults/), the others in their first Collections call.
    let locked: Vec<String> = live[10..13].to_vec();
    h.sf().inject(SalesforceFault::FailRecords {
        ids: locked.clone(),
        status_code: "UNABLE_TO_LOCK_ROW".into(),
        times: 1,
    });
    h.sf().inject(SalesforceFault::FailBulkJobs {
        processed: 100,
        count: 1,
        error_message: None,
    });
    h.sf().reset_stats();
    let r = sf.sync(None, WRITE_NO_ENRICH).await.expect("sync");
    let jobs = h.sf().bulk_jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job.state, "Failed");
    assert_eq!(job.successful + job.failed, 100, "{jobs:?}");
    assert_eq!(job.unprocessed, live.len() - 100);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.write.summary.records_written, live.len() as u64, "{r:?}");
    // The rows the job wrote are not written again; the locked ones and
    // the unprocessed ones go through Collections, each written once.
    let via_bulk = each_written_once(&h, &live);
    assert_eq!(via_bulk, job.successful);
    for id in &locked {
        assert_eq!(enrichd_writes(h.sf(), id).get("collections"), Some(&1));
    }
    let st = h.sf().stats();
    let locked_in_collections = 3 - job.failed;
    assert_eq!(
        st.collection_records,
        (live.len() - job.successful + locked_in_collections) as u64,
        "{st:?}"
    );
    assert_eq!(
        h.store
            .write_outcomes(&h.ws.id)
            .await
            .unwrap()
            .iter()
            .filter(|o| o.state == "done")
            .count(),
        live.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_failed_for_a_column_that_is_no_field_reports_each_record_with_the_reason() {
    // Writes naming a field the org does not have: the Bulk job fails as a
    // whole (InvalidBatch), then Collections refuses the field per record.
    // Records with another change are written without it; records with
    // nothing else are reported failed with the reason. None is lost.
    let h = harness(300, SalesforceOptions::defaults(), BULK_ABOVE_200).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    let live = live_leads(&h);
    let only_bad: HashSet<String> = live.iter().step_by(5).cloned().collect();
    let pending: Vec<PendingWrite> = live
        .iter()
        .map(|id| {
            let mut changes = BTreeMap::new();
            changes.insert("Nope__c".to_string(), Some("x".to_string()));
            if !only_bad.contains(id) {
                changes.insert("Title".to_string(), Some("Head of Data".to_string()));
            }
            PendingWrite::new(WriteItem {
                object: SObject::Lead,
                id: LeadId(id.clone()),
                changes,
                groups: vec![],
                value_fields: Default::default(),
                enriched_at: None,
            })
        })
        .collect();
    let run = writeback::write_bulk(&sf.client, pending).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let jobs = h.sf().bulk_jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].state, "Failed");
    assert_eq!(
        jobs[0].error_message.as_deref(),
        Some("InvalidBatch : Field name not found : Nope__c")
    );
    assert_eq!(jobs[0].successful, 0);
    assert_eq!(run.outcomes.len(), live.len());
    let mut seen = HashSet::new();
    for o in &run.outcomes {
        match o {
            RecordOutcome::Written {
                id,
                dropped,
                written,
                ..
            } => {
                assert!(!only_bad.contains(id.as_str()), "{o:?}");
                assert!(written.contains_key("Title") && !written.contains_key("Nope__c"));
                assert_eq!(dropped.len(), 1, "{o:?}");
                assert_eq!(
                    (dropped[0].field.as_str(), dropped[0].code.as_str()),
                    ("Nope__c", "INVALID_FIELD")
                );
                seen.insert(id.to_string());
            }
            RecordOutcome::Failed {
                id,
                dropped,
                reason,
                ..
            } => {
                assert!(only_bad.contains(id.as_str()), "{o:?}");
                assert!(reason.contains("refused"), "{reason}");
                assert!(
                    dropped
                        .iter()
                        .any(|d| d.field == "Nope__c" && d.code == "INVALID_FIELD"),
                    "{o:?}"
                );
                seen.insert(id.to_string());
            }
            RecordOutcome::Retry { .. } => panic!("{o:?}"),
        }
    }
    assert_eq!(seen.len(), live.len(), "every record has an outcome");
    assert_eq!(
        run.report.summary.records_failed,
        only_bad.len() as u64,
        "{:?}",
        run.report
    );
    for id in &live {
        let n = total(&enrichd_writes(h.sf(), id));
        if only_bad.contains(id) {
            assert_eq!(n, 0, "{id}");
        } else {
            assert_eq!(n, 1, "{id}");
            assert_eq!(
                h.sf().field(id, "Title"),
                Some(serde_json::json!("Head of Data"))
            );
        }
    }
}

// ------------------------------------------------------------------ the 30-minute timeout

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_job_still_running_after_30_minutes_is_aborted_and_its_rows_go_through_collections()
{
    // Jobs take ten hours of the simulator's time: only the timeout ends it.
    let mut opts = SalesforceOptions::defaults();
    opts.bulk_job_duration = Duration::from_secs(10 * 3600);
    let h = harness(300, opts, BULK_ABOVE_200).await;
    h.connect_salesforce().await;
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let sf = h.salesforce_sync_on(Arc::new(clock.clone()));
    let live = live_leads(&h);
    let pending: Vec<PendingWrite> = live
        .iter()
        .map(|id| {
            PendingWrite::new(WriteItem {
                object: SObject::Lead,
                id: LeadId(id.clone()),
                changes: [("Enrichment_Status__c".to_string(), Some("Partial".into()))]
                    .into_iter()
                    .collect(),
                groups: vec![],
                value_fields: Default::default(),
                enriched_at: None,
            })
        })
        .collect();
    let client: Arc<SalesforceClient> = sf.client.clone();
    let task_clock = clock.clone();
    let task =
        tokio::spawn(async move { writeback::write_bulk_on(&client, pending, &task_clock).await });
    // The job is running; enrichd keeps polling it.
    let started = Instant::now();
    loop {
        let jobs = h.sf().bulk_jobs();
        if jobs.first().is_some_and(|j| j.state == "InProgress") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{jobs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished(), "enrichd waits for a running job");
    assert_eq!(h.sf().bulk_jobs()[0].state, "InProgress");
    // 29 minutes: still waiting.
    clock.advance(29 * 60 * 1000);
    h.sf().advance(Duration::from_secs(29 * 60));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!task.is_finished(), "not before the timeout");
    assert_eq!(h.sf().bulk_jobs()[0].state, "InProgress");
    // Past 30 minutes on the connector's clock: aborted.
    let past = BULK_JOB_TIMEOUT.as_millis() as i64 - 29 * 60 * 1000 + 60_000;
    clock.advance(past);
    h.sf().advance(Duration::from_millis(past as u64));
    let run = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the run ends after the timeout")
        .unwrap();
    assert!(run.error.is_none(), "{:?}", run.error);
    let jobs = h.sf().bulk_jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, "Aborted", "{jobs:?}");
    assert_eq!((jobs[0].successful, jobs[0].unprocessed), (0, live.len()));
    assert_eq!(run.report.bulk_jobs, 1);
    assert_eq!(run.report.summary.records_written, live.len() as u64);
    let written: HashSet<String> = run
        .outcomes
        .iter()
        .map(|o| match o {
            RecordOutcome::Written { id, .. } => id.to_string(),
            o => panic!("not written: {o:?}"),
        })
        .collect();
    assert_eq!(written.len(), live.len());
    for id in &live {
        let by = enrichd_writes(h.sf(), id);
        assert_eq!(by.get("collections"), Some(&1), "{id}: {by:?}");
        assert_eq!(total(&by), 1, "{id}: {by:?}");
        assert_eq!(
            h.sf().field(id, "Enrichment_Status__c"),
            Some(serde_json::json!("Partial"))
        );
    }
    // Even once its ten hours are over, the aborted job writes nothing.
    h.sf().advance(Duration::from_secs(11 * 3600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.sf().bulk_jobs()[0].state, "Aborted");
    assert!(
        live.iter()
            .all(|id| total(&enrichd_writes(h.sf(), id)) == 1)
    );
}

// ------------------------------------------------------------------ Bulk jobs not created

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_job_salesforce_will_not_create_falls_back_to_collections() {
    // No Bulk batch left today: creation refused (ExceededQuota).
    let mut opts = SalesforceOptions::defaults();
    opts.daily_bulk_batches = 0;
    let h = harness(300, opts, BULK_ABOVE_200).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    let live = live_leads(&h);
    let r = sf.sync(None, WRITE_NO_ENRICH).await.expect("sync");
    assert!(h.sf().bulk_jobs().is_empty());
    assert_eq!(r.write.bulk_jobs, 0, "{r:?}");
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.write.summary.records_written, live.len() as u64);
    assert_eq!(each_written_once(&h, &live), 0);
    let st = h.sf().stats();
    assert_eq!(st.by_status.get(&400), Some(&1), "{:?}", st.by_status);
    assert_eq!(st.collection_calls, live.len().div_ceil(200) as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_api_refused_with_403_falls_back_to_collections_but_a_request_limit_pauses() {
    let h = harness(300, SalesforceOptions::defaults(), BULK_ABOVE_200).await;
    h.connect_salesforce().await;
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let sf = h.salesforce_sync_on(Arc::new(clock.clone()));
    let live = live_leads(&h);
    let jobs_path = sf.client.data_path("jobs/ingest");
    // The integration user may not use the Bulk API.
    h.sf().inject(SalesforceFault::Status {
        path_prefix: jobs_path.clone(),
        status: 403,
        count: 1,
        error_code: Some("FUNCTIONALITY_NOT_ENABLED".into()),
        message: Some("Bulk API is not enabled for this user".into()),
    });
    let r = sf.sync(None, WRITE_NO_ENRICH).await.expect("sync");
    assert!(h.sf().bulk_jobs().is_empty());
    assert_eq!(r.write.summary.records_written, live.len() as u64, "{r:?}");
    assert_eq!(each_written_once(&h, &live), 0);

    // A 403 REQUEST_LIMIT_EXCEEDED is the org's daily limit, not Bulk's:
    // the pass pauses (Collections would be refused too) and writes
    // nothing; the next day's pass writes every row once.
    let h = harness(300, SalesforceOptions::defaults(), BULK_ABOVE_200).await;
    h.connect_salesforce().await;
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let sf = h.salesforce_sync_on(Arc::new(clock.clone()));
    let live = live_leads(&h);
    h.sf().inject(SalesforceFault::Status {
        path_prefix: sf.client.data_path("jobs/ingest"),
        status: 403,
        count: 1,
        error_code: None,
        message: None,
    });
    let e = sf.sync(None, WRITE_NO_ENRICH).await.expect_err("paused");
    assert!(e.paused_until().is_some(), "{e}");
    assert!(
        live.iter()
            .all(|id| total(&enrichd_writes(h.sf(), id)) == 0)
    );
    assert!(h.store.write_outcomes(&h.ws.id).await.unwrap().is_empty());
    assert!(
        sf.puller(SObject::Lead)
            .state()
            .await
            .unwrap()
            .watermark
            .is_none()
    );
    h.sf().advance(Duration::from_secs(24 * 3600 + 60));
    clock.advance((24 * 3600 + 60) * 1000);
    let r = sf.sync(None, WRITE_NO_ENRICH).await.expect("resumed");
    assert_eq!(r.write.summary.records_written, live.len() as u64, "{r:?}");
    assert_eq!(each_written_once(&h, &live), live.len());
}

// ------------------------------------------------------------------ expired query locators

/// Stores each page (as the sync's workers do), counts each Id, and runs
/// `between` after the pages it names (1-based).
struct Counting<'a> {
    store: Arc<dyn Store>,
    ws: WorkspaceId,
    seen: Mutex<HashMap<String, u32>>,
    pages: Mutex<u32>,
    after_pages: Vec<u32>,
    between: Box<dyn Fn() -> Option<Request> + Send + Sync + 'a>,
    client: Arc<SalesforceClient>,
}

impl<'a> Counting<'a> {
    fn new(
        h: &Harness,
        client: Arc<SalesforceClient>,
        after_pages: &[u32],
        between: impl Fn() -> Option<Request> + Send + Sync + 'a,
    ) -> Counting<'a> {
        Counting {
            store: h.store.clone(),
            ws: h.ws.id.clone(),
            seen: Mutex::new(HashMap::new()),
            pages: Mutex::new(0),
            after_pages: after_pages.to_vec(),
            between: Box::new(between),
            client,
        }
    }
    fn counts(&self) -> HashMap<String, u32> {
        self.seen.lock().unwrap().clone()
    }
}

impl PageSink for Counting<'_> {
    fn page(
        &self,
        leads: Vec<Lead>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SalesforceError>> + Send + '_>>
    {
        Box::pin(async move {
            let page = {
                let mut s = self.seen.lock().unwrap();
                for l in &leads {
                    *s.entry(l.id.to_string()).or_default() += 1;
                }
                let mut p = self.pages.lock().unwrap();
                *p += 1;
                *p
            };
            let rows: Vec<(Lead, f64)> = leads.into_iter().map(|l| (l, 0.0)).collect();
            self.store
                .upsert_leads(&self.ws, &rows, chrono::Utc::now().timestamp_millis())
                .await?;
            if self.after_pages.contains(&page)
                && let Some(req) = (self.between)()
            {
                self.client.call(req).await?;
            }
            Ok(())
        })
    }
}

/// 1,000 Leads read 200 at a time (five `nextRecordsUrl` pages per query).
const BATCH_200: &str = "query_batch_size = 200\n";

/// Backfills with `sink`; checks every live Lead was handed on exactly
/// once and returns the report.
async fn pull_all(
    h: &Harness,
    sf: &enrichd::crm::salesforce::sync::SalesforceSync,
    sink: &Counting<'_>,
) -> enrichd::crm::salesforce::pull::PullReport {
    let live = live_leads(h);
    let puller = sf.puller(SObject::Lead);
    let pulled = puller.pull_uncommitted(sink, false).await.expect("pull");
    let r = puller.commit(pulled).await.unwrap();
    let seen = sink.counts();
    assert_eq!(seen.len(), live.len(), "every live Lead: {r:?}");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "handed on more than once: {twice:?}");
    assert!(live.iter().all(|id| seen.contains_key(id)));
    assert_eq!(r.leads, live.len() as u64, "{r:?}");
    assert!(puller.state().await.unwrap().watermark.is_some());
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_locator_that_times_out_between_pages_restarts_from_the_keyset() {
    let h = harness(1_000, SalesforceOptions::defaults(), BATCH_200).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    h.sf().reset_stats();
    // After pages 1 and 3 the pass is idle for 16 minutes (sim time): the
    // locator (15 min) has expired when the next page is asked for.
    let sim = h.sf();
    let sink = Counting::new(&h, sf.client.clone(), &[1, 3], || {
        sim.advance(Duration::from_secs(16 * 60));
        None
    });
    let r = pull_all(&h, &sf, &sink).await;
    assert_eq!(r.keyset_restarts, 2, "{r:?}");
    let st = h.sf().stats();
    // Nothing read twice: the simulator served each live Lead once.
    assert_eq!(st.rows_returned, r.records, "{st:?}");
    assert_eq!(r.records, r.leads);
    assert_eq!(st.by_status.get(&400), Some(&2), "{:?}", st.by_status);
    assert_eq!(st.query_calls, 3, "the first query and two restarts");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_locator_evicted_by_too_many_open_cursors_restarts_from_the_keyset() {
    let mut opts = SalesforceOptions::defaults();
    opts.max_open_cursors = 1;
    let h = harness(1_000, opts, BATCH_200).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    h.sf().reset_stats();
    // After pages 2 and 4, another query of the same user opens a cursor:
    // the pull's, the oldest, is closed.
    let other = sf
        .client
        .data_path("query?q=SELECT+Id+FROM+Lead+ORDER+BY+Id");
    let sink = Counting::new(&h, sf.client.clone(), &[2, 4], || {
        Some(Request::get(other.clone()).header("Sforce-Query-Options", "batchSize=200"))
    });
    let r = pull_all(&h, &sf, &sink).await;
    assert_eq!(r.keyset_restarts, 2, "{r:?}");
    let st = h.sf().stats();
    // The pull's rows were each served once; the other queries served a
    // page of 200 each.
    assert_eq!(st.rows_returned, r.records + 400, "{st:?}");
    assert_eq!(r.records, r.leads);
    assert_eq!(st.by_status.get(&400), Some(&2), "{:?}", st.by_status);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_query_locator_on_query_more_restarts_from_the_keyset() {
    let h = harness(1_000, SalesforceOptions::defaults(), BATCH_200).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    h.sf().reset_stats();
    // The second nextRecordsUrl follow-up is refused (a locator the server
    // lost), once.
    let more = format!("{}/", sf.client.data_path("query"));
    let sim = h.sf();
    let sink = Counting::new(&h, sf.client.clone(), &[2], || {
        sim.inject(SalesforceFault::Status {
            path_prefix: more.clone(),
            status: 400,
            count: 1,
            error_code: Some("INVALID_QUERY_LOCATOR".into()),
            message: Some("invalid query locator".into()),
        });
        None
    });
    let r = pull_all(&h, &sf, &sink).await;
    assert_eq!(r.keyset_restarts, 1, "{r:?}");
    let st = h.sf().stats();
    assert_eq!(st.rows_returned, r.records, "{st:?}");
    assert_eq!(st.query_calls, 2);
    assert_eq!(st.by_status.get(&400), Some(&1), "{:?}", st.by_status);
}

//! The Salesforce pass over HTTP against the simulator: the SOQL pull
//! (keyset over 5,000 equal SystemModstamps, lookback repeats, converted
//! Leads), write-back through sObject Collections and Bulk API 2.0 with
//! per-record failures, owners never reassigned, the daily allocation's
//! pause and resume with nothing lost, and recorded Outbound-Message
//! events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enrichd::clock::ManualClock;
use enrichd::core::lead::{Lead, LeadId, WorkspaceId};
use enrichd::crm::salesforce::client::{Method, Request};
use enrichd::crm::salesforce::outbound::{self, Notification, OutboundMessage};
use enrichd::crm::salesforce::pull::PageSink;
use enrichd::crm::salesforce::sync::SyncOptions;
use enrichd::crm::salesforce::{CRM, SObject, SalesforceError};
use enrichd::store::Store;
use enrichd_sim::salesforce::{SalesforceFault, SalesforceOptions, SeedSpec};
use enrichd_sim::{ProviderKind, SimOptions};

use crate::support::{FAST_LIMITS, Harness, HarnessBuilder, SalesforceSpec};

const WORKSPACE: &str = r#"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "linkedin_url"]
"#;

const PULL_ONLY: SyncOptions = SyncOptions {
    full: false,
    enrich: false,
    write: false,
};

const WRITE_NO_ENRICH: SyncOptions = SyncOptions {
    full: false,
    enrich: false,
    write: true,
};

async fn harness(size: usize, spec: SalesforceSpec) -> Harness {
    HarnessBuilder::new(size)
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

fn spec(leads: usize, opts: SalesforceOptions) -> SalesforceSpec {
    let mut s = SalesforceSpec::new(opts);
    s.seed = SeedSpec::new(leads, 0);
    s
}

/// Stores each page (as the sync's workers do) and counts each Id.
struct Counting {
    store: Arc<dyn Store>,
    ws: WorkspaceId,
    seen: Mutex<HashMap<String, u32>>,
}

impl Counting {
    fn new(h: &Harness) -> Counting {
        Counting {
            store: h.store.clone(),
            ws: h.ws.id.clone(),
            seen: Mutex::new(HashMap::new()),
        }
    }
    fn counts(&self) -> HashMap<String, u32> {
        self.seen.lock().unwrap().clone()
    }
}

impl PageSink for Counting {
    fn page(
        &self,
        leads: Vec<Lead>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SalesforceError>> + Send + '_>>
    {
        Box::pin(async move {
            {
                let mut s = self.seen.lock().unwrap();
                for l in &leads {
                    *s.entry(l.id.to_string()).or_default() += 1;
                }
            }
            let rows: Vec<(Lead, f64)> = leads.into_iter().map(|l| (l, 0.0)).collect();
            self.store
                .upsert_leads(&self.ws, &rows, chrono::Utc::now().timestamp_millis())
                .await?;
            Ok(())
        })
    }
}

/// Writes to `id` by enrichd (client=enrichd) in the simulator's history.
fn enrichd_writes(h: &Harness, id: &str) -> usize {
    h.sf()
        .history(id)
        .iter()
        .filter(|w| w.client.as_deref() == Some("enrichd"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_then_incremental_read_every_lead_exactly_once_with_5000_tied() {
    let started = Instant::now();
    let mut s = spec(50_000, SalesforceOptions::defaults());
    s.seed.shared_modstamp = 5_000;
    let h = harness(50_000, s).await;
    h.connect_salesforce().await;
    let mut sf = h.salesforce_sync();
    // Restart the query every 3,000 rows: keyset restarts land inside the
    // 5,000-record tie group (and the query's pages still follow
    // nextRecordsUrl with the batch-size header).
    sf.query_limit = Some(3_000);
    let ids = h.sf().lead_ids();
    assert_eq!(ids.len(), 50_000);
    let converted: HashSet<String> = h.sf().converted_lead_ids().into_iter().collect();
    assert!(!converted.is_empty());
    let live: Vec<String> = ids
        .iter()
        .filter(|i| !converted.contains(*i))
        .cloned()
        .collect();
    // The tie group really is there.
    let mut stamps: HashMap<String, usize> = HashMap::new();
    for id in ids.iter().step_by(10) {
        if let Some(t) = h.sf().field(id, "SystemModstamp") {
            *stamps.entry(t.to_string()).or_default() += 1;
        }
    }
    assert!(stamps.values().copied().max().unwrap_or(0) >= 450, "ties");
    // Two Leads edited just before the backfill: the incremental's
    // lookback reads them again, and they are recognised as handled.
    let early = [live[1].clone(), live[2].clone()];
    for id in &early {
        h.sf()
            .human_edit(id, &[("Title", "VP Early")], None)
            .unwrap();
    }
    h.sf().reset_stats();

    let puller = sf.puller(SObject::Lead);
    let sink = Counting::new(&h);
    let pulled = puller
        .pull_uncommitted(&sink, false)
        .await
        .expect("backfill");
    // Nothing saved before the commit.
    assert!(puller.state().await.unwrap().watermark.is_none());
    let r = puller.commit(pulled).await.unwrap();
    let seen = sink.counts();
    assert_eq!(seen.len(), live.len(), "every Lead: {r:?}");
    assert!(seen.values().all(|&n| n == 1), "none twice");
    assert!(
        converted.iter().all(|c| !seen.contains_key(c)),
        "no converted Lead"
    );
    assert!(r.backfill && r.keyset_restarts >= 10, "{r:?}");
    let st = h.sf().stats();
    assert!(st.query_more_calls > 0, "nextRecordsUrl followed");
    // 47,5xx rows at 3,000 per query, 2 pages each.
    let queries = live.len().div_ceil(3_000) as u64 + 1;
    assert!(r.queries <= queries && r.pages <= 2 * queries, "{r:?}");
    assert_eq!(st.query_calls + st.query_more_calls, r.pages);
    // The simulator's own count of rows served matches: nothing read twice.
    assert_eq!(st.rows_returned, r.records);
    assert_eq!(r.records, live.len() as u64);
    eprintln!(
        "backfill of {} Leads: {} query calls, {} pages, {} restarts, {:?}",
        live.len(),
        r.queries,
        r.pages,
        r.keyset_restarts,
        started.elapsed()
    );

    // Changes after the backfill: 300 edits and one conversion.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let edited: Vec<String> = live
        .iter()
        .skip(10)
        .step_by(150)
        .take(300)
        .cloned()
        .collect();
    for id in &edited {
        h.sf()
            .human_edit(id, &[("Title", "Head of Growth")], None)
            .unwrap();
    }
    let newly_converted = live[5].clone();
    h.sf().convert_lead(&newly_converted).unwrap();
    let sink = Counting::new(&h);
    let pulled = puller
        .pull_uncommitted(&sink, false)
        .await
        .expect("incremental");
    let r = puller.commit(pulled).await.unwrap();
    let seen = sink.counts();
    let want: HashSet<String> = edited.iter().cloned().collect();
    let got: HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(got, want, "exactly the changed Leads: {r:?}");
    assert!(seen.values().all(|&n| n == 1));
    assert_eq!(r.repeats, 2, "the lookback's re-reads were skipped: {r:?}");
    assert!(!r.backfill);
    assert!(!seen.contains_key(&newly_converted));
    let stored = h
        .store
        .leads_by_ids(&h.ws.id, &[LeadId(edited[0].clone())])
        .await
        .unwrap();
    assert_eq!(stored[0].text("Title").as_deref(), Some("Head of Growth"));
    eprintln!("incremental: {r:?}; whole test {:?}", started.elapsed());
}

/// Provider requests per population person (Apollo's call log).
fn asked_per_person(h: &Harness) -> HashMap<usize, u32> {
    let mut asked: HashMap<usize, u32> = HashMap::new();
    for c in &h.sims["apollo"].stats().log {
        for p in &c.persons {
            *asked.entry(*p).or_default() += 1;
        }
    }
    asked
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_thousand_leads_are_enriched_and_written_exactly_once_and_converted_never() {
    // The whole pass, not only the pull: 50,000 Leads (5,000 sharing one
    // SystemModstamp, the query restarted inside the tie group) pulled,
    // enriched through the provider and written back; then an incremental
    // pass over 300 edited Leads and a conversion.
    let started = Instant::now();
    let mut s = spec(50_000, SalesforceOptions::defaults());
    s.seed.shared_modstamp = 5_000;
    let h = harness(50_000, s).await;
    h.connect_salesforce().await;
    let mut sf = h.salesforce_sync();
    sf.query_limit = Some(3_000);
    let converted: HashSet<String> = h.sf().converted_lead_ids().into_iter().collect();
    assert!(!converted.is_empty());
    let live: Vec<String> = h
        .sf()
        .lead_ids()
        .into_iter()
        .filter(|i| !converted.contains(i))
        .collect();
    h.sf().reset_stats();

    let all = SyncOptions {
        full: false,
        enrich: true,
        write: true,
    };
    let r = sf.sync(Some(&h.engine), all).await.expect("backfill");
    let pull = &r.objects[0].pull;
    assert!(pull.backfill && pull.keyset_restarts >= 10, "{pull:?}");
    assert_eq!(
        pull.leads,
        live.len() as u64,
        "every live Lead handed on once"
    );
    // The query leaves converted Leads out (`IsConverted = false`).
    assert_eq!(pull.converted, 0, "{pull:?}");
    assert_eq!(pull.records, live.len() as u64, "nothing read twice");
    assert_eq!(h.sf().stats().rows_returned, pull.records);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.limit_exceeded, 0);

    // The provider was asked about each person at most once, and only
    // about the people behind live Leads.
    let asked = asked_per_person(&h);
    assert!(asked.len() > live.len() / 2, "{} people asked", asked.len());
    let twice: Vec<_> = asked.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "asked twice: {twice:?}");
    assert!(asked.len() <= live.len());

    // One charge per stored value, and each stored value is in Salesforce
    // with its Source.
    let ledger = h.store.ledger(&h.ws.id).await.expect("ledger");
    let keys: HashSet<&str> = ledger.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), ledger.len(), "a charge twice");
    let mut values = 0usize;
    let mut with_email = 0usize;
    for id in &live {
        for v in h.store.values(&h.ws.id, &LeadId(id.clone())).await.unwrap() {
            values += 1;
            if v.channel == enrichd::core::channel::Channel::WorkEmail {
                with_email += 1;
                assert_eq!(
                    h.sf().field(id, "Enrichment_Work_Email__c"),
                    Some(serde_json::Value::String(v.value.clone())),
                    "{id}"
                );
                assert_eq!(
                    h.sf().field(id, "Work_Email_Source__c"),
                    Some(serde_json::Value::String("apollo".into())),
                    "{id}"
                );
            }
        }
    }
    assert_eq!(values, ledger.len(), "one charge per stored value");
    assert!(with_email > live.len() / 4, "{with_email} work emails");
    assert_eq!(r.enriched, live.len() as u64, "{r:?}");

    // Every live Lead written by enrichd exactly once (its status at
    // least), no converted Lead ever, and no owner changed.
    let st = h.sf().stats();
    assert!(st.owner_changes.is_empty(), "{:?}", st.owner_changes);
    for id in &live {
        assert_eq!(enrichd_writes(&h, id), 1, "{id}");
    }
    for c in &converted {
        assert_eq!(enrichd_writes(&h, c), 0, "converted {c} written");
    }
    assert_eq!(r.write.summary.records_written, live.len() as u64);
    assert!(r.write.bulk_jobs >= 1, "{:?}", r.write);
    eprintln!(
        "enriched backfill of {} Leads: {} API calls, {} values, {:?}",
        live.len(),
        r.api_calls,
        values,
        started.elapsed()
    );

    // The next pass reads enrichd's own writes again (their SystemModstamp
    // moved after the backfill's upper bound): nothing is asked, written
    // or charged for them.
    let requests = h.sims["apollo"].stats().requests;
    let r = sf.sync(Some(&h.engine), all).await.expect("echo pass");
    let pull = &r.objects[0].pull;
    assert!(!pull.backfill);
    assert_eq!(pull.leads, live.len() as u64, "{pull:?}");
    assert_eq!(h.sims["apollo"].stats().requests, requests, "asked again");
    assert_eq!(r.write.summary.records_written, 0, "{r:?}");

    // 300 edits and one conversion: exactly those Leads come back; nothing
    // is asked again and nothing is written again (their values and status
    // are unchanged), and the newly converted Lead is not handed on.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let edited: Vec<String> = live
        .iter()
        .skip(10)
        .step_by(150)
        .take(300)
        .cloned()
        .collect();
    for id in &edited {
        h.sf()
            .human_edit(id, &[("Title", "Head of Growth")], None)
            .unwrap();
    }
    h.sf().convert_lead(&live[5]).unwrap();
    let requests = h.sims["apollo"].stats().requests;
    let r = sf.sync(Some(&h.engine), all).await.expect("incremental");
    let pull = &r.objects[0].pull;
    assert!(!pull.backfill);
    assert_eq!(pull.leads, edited.len() as u64, "{pull:?}");
    assert_eq!(h.sims["apollo"].stats().requests, requests, "asked again");
    assert_eq!(r.write.summary.records_written, 0, "{r:?}");
    for id in edited.iter().take(20) {
        assert_eq!(enrichd_writes(&h, id), 1, "{id} written again");
    }
    assert_eq!(enrichd_writes(&h, &live[5]), 1);
    assert_eq!(
        h.store.ledger(&h.ws.id).await.unwrap().len(),
        ledger.len(),
        "charged again"
    );
    eprintln!("incremental: {pull:?}; whole test {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pass_stopped_before_its_commit_reads_the_same_leads_again() {
    let h = harness(300, spec(300, SalesforceOptions::defaults())).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    // A pass whose handling fails half-way (the store is fine, the sink
    // refuses): the watermark stays.
    struct Failing(Mutex<u32>);
    impl PageSink for Failing {
        fn page(
            &self,
            _leads: Vec<Lead>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), SalesforceError>> + Send + '_>,
        > {
            Box::pin(async move {
                *self.0.lock().unwrap() += 1;
                Err(SalesforceError::Transport {
                    endpoint: "test".into(),
                    message: "killed".into(),
                })
            })
        }
    }
    let puller = sf.puller(SObject::Lead);
    assert!(
        puller
            .pull_uncommitted(&Failing(Mutex::new(0)), false)
            .await
            .is_err()
    );
    assert!(puller.state().await.unwrap().watermark.is_none());
    // The next pass (a restart) reads everything.
    let r = sf.sync(None, PULL_ONLY).await.expect("sync");
    let live = 300 - h.sf().converted_lead_ids().len() as u64;
    assert_eq!(r.objects[0].pull.leads, live);
    assert!(puller.state().await.unwrap().watermark.is_some());
    // And an immediate second pass reads nothing new.
    let r = sf.sync(None, PULL_ONLY).await.expect("sync");
    assert_eq!(r.objects[0].pull.leads, 0, "{:?}", r.objects[0].pull);
}

#[tokio::test(flavor = "multi_thread")]
async fn writing_back_1000_leads_takes_at_most_5_collection_calls_and_never_reassigns_an_owner() {
    let h = harness(1_000, spec(1_000, SalesforceOptions::defaults())).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    h.sf().reset_stats();
    let started = Instant::now();
    // Every Lead is in the audience: each gets its status written.
    let r = sf.sync(None, WRITE_NO_ENRICH).await.expect("sync");
    let elapsed = started.elapsed();
    let converted: HashSet<String> = h.sf().converted_lead_ids().into_iter().collect();
    let live = 1_000 - converted.len() as u64;
    let st = h.sf().stats();
    assert_eq!(r.write.summary.records_written, live, "{r:?}");
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(
        st.collection_calls <= 5,
        "{} collection calls",
        st.collection_calls
    );
    assert_eq!(r.write.collection_calls, st.collection_calls);
    assert_eq!(st.collection_records, live);
    assert_eq!(st.bulk_jobs, 0);
    // The headers on every write.
    assert_eq!(
        st.auto_assign_headers.get("FALSE").copied(),
        Some(st.collection_calls),
        "{:?}",
        st.auto_assign_headers
    );
    assert_eq!(
        st.call_options_clients.get("enrichd").copied(),
        Some(st.collection_calls)
    );
    assert!(
        st.duplicate_rule_headers
            .keys()
            .all(|k| k.contains("allowSave=true")),
        "{:?}",
        st.duplicate_rule_headers
    );
    assert!(st.owner_changes.is_empty(), "{:?}", st.owner_changes);
    // Converted Leads were never written; the others once.
    for id in h.sf().lead_ids() {
        let n = enrichd_writes(&h, &id);
        if converted.contains(&id) {
            assert_eq!(n, 0, "{id} converted");
        } else {
            assert_eq!(n, 1, "{id}");
            assert!(
                h.sf()
                    .field(&id, "Enrichment_Status__c")
                    .is_some_and(|v| v.is_string())
            );
        }
    }
    // Recorded as written by enrichd.
    let first = h
        .sf()
        .lead_ids()
        .into_iter()
        .find(|i| !converted.contains(i))
        .unwrap();
    let ours = h
        .store
        .written(&h.ws.id, &[LeadId(first.clone())])
        .await
        .unwrap();
    assert!(ours[&LeadId(first.clone())].contains_key("Enrichment_Status__c"));
    eprintln!(
        "1,000 Leads: {} collection calls, {} API calls in {elapsed:?}",
        st.collection_calls, r.api_calls
    );

    // A second pass writes nothing (the pull re-reads enrichd's own writes,
    // whose SystemModstamp moved, and finds nothing to change).
    let r = sf.sync(None, WRITE_NO_ENRICH).await.expect("sync");
    assert_eq!(r.write.summary.records_written, 0, "{r:?}");

    // The test can fail: the same write without Sforce-Auto-Assign lets
    // the assignment rule reassign the owner.
    let owner = h.sf().field(&first, "OwnerId");
    let body = serde_json::json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Lead"}, "id": first, "Title": "Director"}]});
    sf.client
        .call(Request::json(
            Method::Patch,
            sf.client.data_path("composite/sobjects"),
            body,
        ))
        .await
        .expect("raw write");
    let st = h.sf().stats();
    assert_eq!(
        st.owner_changes.len(),
        1,
        "the rule reassigns without the header"
    );
    assert_ne!(h.sf().field(&first, "OwnerId"), owner);
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_writes_go_through_bulk_and_failures_are_reported_per_record() {
    let h = harness(10_000, spec(10_000, SalesforceOptions::defaults())).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    let converted: HashSet<String> = h.sf().converted_lead_ids().into_iter().collect();
    let live: Vec<String> = h
        .sf()
        .lead_ids()
        .into_iter()
        .filter(|i| !converted.contains(i))
        .collect();
    let locked: Vec<String> = live[100..103].to_vec();
    let invalid: Vec<String> = live[200..202].to_vec();
    let too_long: Vec<String> = live[300..302].to_vec();
    h.sf().inject(SalesforceFault::FailRecords {
        ids: locked.clone(),
        status_code: "UNABLE_TO_LOCK_ROW".into(),
        times: 1,
    });
    h.sf().inject(SalesforceFault::FailRecords {
        ids: invalid.clone(),
        status_code: "INVALID_FIELD".into(),
        times: u32::MAX,
    });
    h.sf().inject(SalesforceFault::FailRecords {
        ids: too_long.clone(),
        status_code: "STRING_TOO_LONG".into(),
        times: u32::MAX,
    });
    h.sf().reset_stats();
    let started = Instant::now();
    let r = sf.sync(None, WRITE_NO_ENRICH).await.expect("sync");
    let elapsed = started.elapsed();
    let st = h.sf().stats();
    assert_eq!(r.write.bulk_jobs, 1, "{r:?}");
    assert_eq!(st.bulk_jobs, 1);
    // 9,5xx Leads in 5 query calls (2,000 per page).
    assert_eq!(st.query_calls + st.query_more_calls, 5, "{st:?}");
    assert_eq!(r.write.records_via_bulk, live.len() as u64);
    assert_eq!(st.bulk_records_failed, 7, "{st:?}");
    // The lock failures went again through Collections, and succeeded.
    assert_eq!(st.collection_calls, 1, "{st:?}");
    assert_eq!(
        r.write.summary.records_written,
        live.len() as u64 - 4,
        "{r:?}"
    );
    assert_eq!(r.write.summary.records_failed, 4);
    let failed: BTreeMap<String, String> = r.failures.iter().cloned().collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    for id in &invalid {
        assert!(failed[id].contains("INVALID_FIELD"), "{}", failed[id]);
    }
    for id in &too_long {
        assert!(failed[id].contains("STRING_TOO_LONG"), "{}", failed[id]);
    }
    for id in &locked {
        assert!(!failed.contains_key(id));
        assert_eq!(enrichd_writes(&h, id), 1);
    }
    // Failures are recorded per record in the store too.
    let outcomes = h.store.write_outcomes(&h.ws.id).await.unwrap();
    let bad: Vec<_> = outcomes.iter().filter(|o| o.state == "failed").collect();
    assert_eq!(bad.len(), 4);
    assert!(st.owner_changes.is_empty(), "{:?}", st.owner_changes);
    for c in &converted {
        assert_eq!(enrichd_writes(&h, c), 0, "converted {c} written");
    }
    eprintln!(
        "10,000 Leads ({} live): {} API calls ({} Bulk calls) in {elapsed:?}",
        live.len(),
        r.api_calls,
        r.write.bulk_calls
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn field_failures_drop_the_value_with_its_source_and_a_converted_lead_is_reported() {
    // The work email goes to a Text(20) field: long addresses are refused
    // with STRING_TOO_LONG, and their Source must go with them.
    let mapping = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/salesforce.toml"),
    )
    .unwrap()
    .replace(
        "field = \"Enrichment_Work_Email__c\"",
        "field = \"Secondary_Email__c\"",
    );
    let mut s = spec(120, SalesforceOptions::defaults());
    s.seed.email_share = 0.0;
    s.mapping = Some(mapping);
    let h = harness(120, s).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    let r = sf
        .sync(
            Some(&h.engine),
            SyncOptions {
                full: false,
                enrich: true,
                write: false,
            },
        )
        .await
        .expect("enrich");
    assert!(r.enriched > 0);
    let ids: Vec<LeadId> = h.sf().lead_ids().into_iter().map(LeadId).collect();
    let leads = h.store.leads_by_ids(&h.ws.id, &ids).await.unwrap();
    // Leads with a stored work email.
    let mut with_email = Vec::new();
    for l in &leads {
        let v = h.store.values(&h.ws.id, &l.id).await.unwrap();
        if v.iter()
            .any(|v| v.channel == enrichd::core::channel::Channel::WorkEmail)
        {
            with_email.push(l.id.to_string());
        }
    }
    assert!(with_email.len() >= 5, "{}", with_email.len());
    let converted = with_email[0].clone();
    let invalid = with_email[1].clone();
    let locked = with_email[2].clone();
    h.sf().convert_lead(&converted).unwrap();
    h.sf().inject(SalesforceFault::FailRecords {
        ids: vec![invalid.clone()],
        status_code: "INVALID_FIELD".into(),
        times: u32::MAX,
    });
    h.sf().inject(SalesforceFault::FailRecords {
        ids: vec![locked.clone()],
        status_code: "UNABLE_TO_LOCK_ROW".into(),
        times: 1,
    });
    h.sf().reset_stats();
    let (w, failures) = sf.write_leads(SObject::Lead, leads).await.expect("write");
    let failed: BTreeMap<String, String> = failures.into_iter().collect();
    assert!(
        failed[&converted].contains("converted"),
        "{}",
        failed[&converted]
    );
    assert!(
        failed[&invalid].contains("INVALID_FIELD"),
        "{}",
        failed[&invalid]
    );
    assert!(!failed.contains_key(&locked) || !failed[&locked].contains("LOCK"));
    assert_eq!(enrichd_writes(&h, &locked), 1);
    assert_eq!(enrichd_writes(&h, &converted), 0);
    assert_eq!(w.summary.records_failed, 2, "{w:?}");
    // Every record: the email and its Source together or not at all.
    let mut dropped = 0;
    for id in &with_email[3..] {
        let email = h
            .sf()
            .field(id, "Secondary_Email__c")
            .filter(|v| !v.is_null());
        let source = h
            .sf()
            .field(id, "Work_Email_Source__c")
            .filter(|v| !v.is_null());
        assert_eq!(
            email.is_some(),
            source.is_some(),
            "{id}: {email:?} {source:?}"
        );
        if email.is_none() {
            dropped += 1;
            assert!(
                failed
                    .get(id)
                    .is_some_and(|f| f.contains("STRING_TOO_LONG")),
                "{id}: {failed:?}"
            );
            // The rest of the record was written.
            assert_eq!(enrichd_writes(&h, id), 1);
            let ours = h
                .store
                .written(&h.ws.id, &[LeadId(id.clone())])
                .await
                .unwrap();
            let ours = ours.get(&LeadId(id.clone())).cloned().unwrap_or_default();
            assert!(!ours.contains_key("Secondary_Email__c"));
            assert!(!ours.contains_key("Work_Email_Source__c"));
        }
    }
    assert!(dropped > 0, "some address is longer than 20 characters");
    assert!(h.sf().stats().owner_changes.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn reaching_the_daily_allocation_pauses_and_the_next_day_resumes_with_nothing_lost() {
    // 3 calls a day. Day 1: the query, then four Collections calls at
    // once: two fit, two are refused (REQUEST_LIMIT_EXCEEDED) and pause the
    // org. Each following day (the simulator's and enrichd's clocks
    // advanced 24 h) the pass resumes where the store says it is.
    let h = harness(
        1_000,
        spec(1_000, SalesforceOptions::defaults().with_daily_limit(3)),
    )
    .await;
    h.connect_salesforce().await;
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let sf = h.salesforce_sync_on(Arc::new(clock.clone()));
    let converted: HashSet<String> = h.sf().converted_lead_ids().into_iter().collect();
    let live = 1_000 - converted.len();
    let e = sf.sync(None, WRITE_NO_ENRICH).await.expect_err("paused");
    assert!(e.paused_until().is_some(), "{e}");
    assert!(!e.needs_a_person());
    let state = sf.puller(SObject::Lead).state().await.unwrap();
    assert!(state.watermark.is_none(), "the watermark did not move");
    let written = |h: &Harness| {
        h.sf()
            .lead_ids()
            .iter()
            .filter(|i| enrichd_writes(h, i) > 0)
            .count()
    };
    // Two Collections calls fit the day. Which of the four in flight get
    // them, and whether a third is held by the client's own gate or refused
    // by Salesforce, depends on timing; the count of calls that fit does
    // not, except that under load the gate may stop after one.
    let day1 = written(&h);
    assert!(day1 == 400 || day1 == 200, "{day1} written on day 1");
    // What was written is recorded: it is not written again.
    assert_eq!(h.store.write_outcomes(&h.ws.id).await.unwrap().len(), day1);
    // Still paused: nothing is sent. (A request the stopped pass had on
    // the wire may still be arriving: count once the simulator is quiet.)
    let mut calls = h.sf().stats().requests;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = h.sf().stats().requests;
        if now == calls {
            break;
        }
        calls = now;
    }
    assert!(
        sf.sync(None, WRITE_NO_ENRICH)
            .await
            .unwrap_err()
            .paused_until()
            .is_some()
    );
    assert_eq!(h.sf().stats().requests, calls, "a paused org is not called");

    let mut days = 1;
    loop {
        assert!(days < 10, "never finished");
        days += 1;
        h.sf().advance(Duration::from_secs(24 * 3600 + 60));
        clock.advance((24 * 3600 + 60) * 1000);
        match sf.sync(None, WRITE_NO_ENRICH).await {
            Ok(_) => break,
            Err(e) => assert!(e.paused_until().is_some(), "{e}"),
        }
    }
    // 948 writes at (at most) two calls a day after the query.
    assert!((3..=6).contains(&days), "{days} days");
    for id in h.sf().lead_ids() {
        let n = enrichd_writes(&h, &id);
        if converted.contains(&id) {
            assert_eq!(n, 0);
        } else {
            assert_eq!(n, 1, "{id} written exactly once");
        }
    }
    assert_eq!(written(&h), live);
    let state = sf.puller(SObject::Lead).state().await.unwrap();
    assert!(state.backfill_done && state.watermark.is_some());
    assert!(h.sf().stats().owner_changes.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daily_stop_share_pauses_before_the_limit_is_reached() {
    // Stop at 80% of 1: after the query, nothing else is sent today.
    let h = harness(
        300,
        spec(300, SalesforceOptions::defaults().with_daily_limit(1)),
    )
    .await;
    h.connect_salesforce().await;
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let sf = h.salesforce_sync_on(Arc::new(clock.clone()));
    let e = sf.sync(None, WRITE_NO_ENRICH).await.expect_err("paused");
    assert!(e.paused_until().is_some(), "{e}");
    assert_eq!(
        h.sf().stats().limit_exceeded_daily,
        0,
        "stopped before the limit"
    );
    assert_eq!(h.sf().stats().collection_calls, 0);
    h.sf().advance(Duration::from_secs(24 * 3600 + 60));
    clock.advance((24 * 3600 + 60) * 1000);
    h.sf().set_daily_limit(1_000);
    let r = sf.sync(None, WRITE_NO_ENRICH).await.expect("resumed");
    let live = 300 - h.sf().converted_lead_ids().len() as u64;
    assert_eq!(r.write.summary.records_written, live);
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_message_events_are_enriched_and_written_and_enrichds_own_are_ignored() {
    let h = harness(40, spec(40, SalesforceOptions::defaults())).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    let converted: HashSet<String> = h.sf().converted_lead_ids().into_iter().collect();
    let live: Vec<String> = h
        .sf()
        .lead_ids()
        .into_iter()
        .filter(|i| !converted.contains(i))
        .collect();
    let users = h.sf().users();
    let integration = users[0].id.clone();
    let rep = users[1].id.clone();
    let (a, b) = (live[0].clone(), live[1].clone());
    let note = |n: &str, id: &str, by: &str| Notification {
        id: n.to_string(),
        object: SObject::Lead,
        record_id: id.to_string(),
        fields: [
            ("Id".to_string(), Some(id.to_string())),
            ("LastModifiedById".to_string(), Some(by.to_string())),
        ]
        .into_iter()
        .collect(),
    };
    let msg = OutboundMessage {
        organization_id: h.sf().org_id().to_string(),
        action_id: None,
        has_session_id: false,
        notifications: vec![
            note("04lxx0000000001AAA", &a, &rep),
            note("04lxx0000000002AAA", &b, &integration),
        ],
        rejected: vec![],
    };
    let now = chrono::Utc::now().timestamp_millis();
    let events = outbound::to_crm_events(&h.ws.id, &msg, now);
    let rec = h.store.record_events(&events, now).await.unwrap();
    assert_eq!(rec.inserted, 2);

    let r = sf
        .process_events(Some(&h.engine), SyncOptions::default())
        .await
        .expect("events");
    assert_eq!((r.events, r.ignored, r.leads), (2, 1, 1), "{r:?}");
    assert_eq!(r.enriched, 1);
    assert_eq!(r.write.summary.records_written, 1, "{r:?}");
    assert_eq!(enrichd_writes(&h, &a), 1);
    assert_eq!(
        enrichd_writes(&h, &b),
        0,
        "enrichd's own change triggers nothing"
    );
    let stored = h.store.events(&h.ws.id, CRM).await.unwrap();
    let by_lead: HashMap<String, (String, String)> = stored
        .iter()
        .map(|e| {
            (
                e.event.lead_id.to_string(),
                (e.state.clone(), e.reason.clone()),
            )
        })
        .collect();
    assert_eq!(by_lead[&a].0, "done");
    assert_eq!(by_lead[&b].0, "ignored");
    assert!(
        by_lead[&b].1.contains("integration user"),
        "{:?}",
        by_lead[&b]
    );
    // Nothing left.
    let r = sf
        .process_events(Some(&h.engine), SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(r.events, 0);
}

async fn cli(h: &Harness, args: &[&str]) -> serde_json::Value {
    let mut all = vec![
        "--config",
        h.config_path.to_str().unwrap(),
        "sync",
        "--once",
    ];
    all.extend_from_slice(args);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(&all)
        .envs(&h.secrets)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_dry_run_previews_exactly_what_the_sync_then_writes() {
    let h = harness(200, spec(200, SalesforceOptions::defaults())).await;
    h.connect_salesforce().await;
    h.sf().reset_stats();
    let preview = cli(
        &h,
        &["--dry-run", "--no-enrich", "--preview-format", "json"],
    )
    .await;
    let st = h.sf().stats();
    assert_eq!(
        st.collection_calls + st.bulk_jobs,
        0,
        "a dry run writes nothing"
    );
    assert!(
        h.store
            .sync_state(&h.ws.id, CRM, "Lead")
            .await
            .unwrap()
            .watermark
            .is_none(),
        "the watermark held"
    );
    let live = 200 - h.sf().converted_lead_ids().len() as u64;
    assert_eq!(preview["summary"]["leads"], live, "{preview}");
    let writes = preview["summary"]["writes"].as_u64().unwrap();
    let with_writes = preview["summary"]["leads_with_writes"].as_u64().unwrap();
    assert!(with_writes > 0);

    let report = cli(&h, &["--no-enrich", "--format", "json"]).await;
    let w = &report["sync"]["write"]["summary"];
    assert_eq!(w["records_written"].as_u64(), Some(with_writes), "{report}");
    assert_eq!(w["fields_written"].as_u64(), Some(writes), "{report}");
    assert_eq!(report["sync"]["objects"][0]["pull"]["leads"], live);
    assert!(h.sf().stats().owner_changes.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn values_found_before_a_pause_are_not_asked_for_again_after_it() {
    // Stop at 80% of 1: the query goes out, the leads are stored and
    // enriched, and every write waits for the next day.
    let h = harness(
        150,
        spec(150, SalesforceOptions::defaults().with_daily_limit(1)),
    )
    .await;
    h.connect_salesforce().await;
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let sf = h.salesforce_sync_on(Arc::new(clock.clone()));
    let e = sf
        .sync(Some(&h.engine), SyncOptions::default())
        .await
        .expect_err("paused");
    assert!(e.paused_until().is_some(), "{e}");
    assert_eq!(h.sf().stats().collection_calls, 0);
    let asked = h.sims["apollo"].stats().requests;
    assert!(asked > 0, "enriched before the pause");
    let found = h.store.totals(&h.ws.id).await.unwrap().values;
    assert!(found > 0);

    h.sf().advance(Duration::from_secs(24 * 3600 + 60));
    clock.advance((24 * 3600 + 60) * 1000);
    h.sf().set_daily_limit(1_000);
    let r = sf
        .sync(Some(&h.engine), SyncOptions::default())
        .await
        .expect("resumed");
    assert_eq!(
        h.sims["apollo"].stats().requests,
        asked,
        "no provider asked again"
    );
    assert_eq!(h.store.totals(&h.ws.id).await.unwrap().values, found);
    let converted: HashSet<String> = h.sf().converted_lead_ids().into_iter().collect();
    assert_eq!(
        r.write.summary.records_written,
        150 - converted.len() as u64,
        "{r:?}"
    );
    // The values found are in Salesforce, each with its Source.
    let mut with_email = 0;
    for id in h.sf().lead_ids() {
        let v = h
            .sf()
            .field(&id, "Enrichment_Work_Email__c")
            .filter(|v| !v.is_null());
        let s = h
            .sf()
            .field(&id, "Work_Email_Source__c")
            .filter(|v| !v.is_null());
        assert_eq!(v.is_some(), s.is_some(), "{id}");
        with_email += usize::from(v.is_some());
    }
    assert!(with_email > 0);
}

/// A workspace syncing Leads and Contacts (`contact_mapping`): the Contact pass reads each
/// Contact with its Account's name and website (`Account.Name`, `Account.Website`), enriches
/// it and writes back to the Contact; Contacts are never reassigned, and a converted Lead's
/// Contact is a Contact like any other.
#[tokio::test(flavor = "multi_thread")]
async fn contacts_are_pulled_with_their_account_enriched_and_written_back() {
    // Leads are people 0..60, Contacts 60..160 (their companies' Accounts).
    let (n_leads, n_contacts) = (60, 100);
    let mapping_dir = tempfile::tempdir().unwrap();
    let mut s = SalesforceSpec::new(SalesforceOptions::defaults());
    s.seed = SeedSpec::new(n_leads, n_contacts);
    s.crm_extra = crate::support::salesforce_contact_mapping(mapping_dir.path());
    let h = harness(n_leads + n_contacts, s).await;
    h.connect_salesforce().await;
    let sf = h.salesforce_sync();
    assert_eq!(sf.objects(), vec![SObject::Lead, SObject::Contact]);

    // A converted Lead whose person also has a Contact (as a conversion makes): the Contact
    // is an ordinary Contact.
    let converted_lead = h.sf().converted_lead_ids().into_iter().next().unwrap();
    let company = h.sf().field(&converted_lead, "Company");
    let accounts = h.sf().account_ids();
    let account = accounts
        .iter()
        .find(|a| h.sf().field(a, "Name") == company)
        .unwrap_or(&accounts[0])
        .clone();
    let first = h.sf().field(&converted_lead, "FirstName").unwrap();
    let last = h.sf().field(&converted_lead, "LastName").unwrap();
    let converted_contact = h
        .sf()
        .create_record(
            enrichd_sim::salesforce::SObject::Contact,
            &[
                ("FirstName", first.as_str().unwrap()),
                ("LastName", last.as_str().unwrap()),
                ("AccountId", account.as_str()),
            ],
        )
        .unwrap();
    h.sf().reset_stats();

    let r = sf
        .sync(Some(&h.engine), SyncOptions::default())
        .await
        .expect("sync");
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.objects.len(), 2, "{r:?}");
    let contacts = h.sf().contact_ids();
    assert_eq!(contacts.len(), n_contacts + 1);
    assert_eq!(r.objects[1].pull.records, contacts.len() as u64, "{r:?}");

    // Stored with their Account's name and website (and MailingCountry).
    for id in &contacts {
        let stored = h
            .store
            .get_lead(&h.ws.id, &LeadId(id.clone()))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} stored"));
        let acct = h.sf().field(id, "AccountId").unwrap();
        let acct = acct.as_str().unwrap();
        assert_eq!(
            stored.fields.get("Account.Name"),
            h.sf().field(acct, "Name").as_ref(),
            "{id}: {stored:?}"
        );
        assert_eq!(
            stored.fields.get("Account.Website"),
            h.sf().field(acct, "Website").as_ref(),
            "{id}"
        );
        assert!(
            stored.fields["Account.Website"]
                .as_str()
                .is_some_and(|w| w.starts_with("https://www.")),
            "{id}"
        );
        if *id != converted_contact {
            assert!(stored.fields["MailingCountry"].is_string(), "{id}");
        }
    }

    // Read by Id too (the Outbound-Message path): the same Account fields.
    let third = contacts[2].clone();
    let by_id = sf
        .puller(SObject::Contact)
        .by_ids(&[LeadId(third.clone()), LeadId(converted_lead.clone())])
        .await
        .expect("by ids");
    assert_eq!(by_id.len(), 1, "{by_id:?}");
    let acct = h.sf().field(&third, "AccountId").unwrap();
    assert_eq!(
        by_id[0].fields.get("Account.Name"),
        h.sf().field(acct.as_str().unwrap(), "Name").as_ref(),
        "{by_id:?}"
    );

    // Enriched and written back to every Contact (one write each, by enrichd, as the
    // integration user), values with their Source; never reassigned.
    let integration = h.sf().users()[0].id.clone();
    let mut with_email = 0;
    for id in &contacts {
        assert_eq!(enrichd_writes(&h, id), 1, "{id}");
        let hist = h.sf().history(id);
        let ours = hist.iter().find(|w| w.client.as_deref() == Some("enrichd"));
        let ours = ours.unwrap();
        assert_eq!(ours.via, "collections");
        assert_eq!(ours.user_id, integration);
        assert!(ours.owner_reassigned.is_none(), "{id}");
        assert!(ours.changed.iter().all(|c| c.field != "OwnerId"), "{id}");
        let rec = h.sf().record(id).unwrap();
        assert!(rec["Enrichment_Status__c"].is_string(), "{id}: {rec:?}");
        let v = &rec["Enrichment_Work_Email__c"];
        assert_eq!(v.is_null(), rec["Work_Email_Source__c"].is_null(), "{id}");
        if v.is_string() {
            assert_eq!(rec["Work_Email_Source__c"], "apollo", "{id}");
            assert!(rec["Enriched_At__c"].is_string(), "{id}");
            with_email += 1;
        }
    }
    assert!(with_email > 0);
    // The provider identified every seeded Contact's person: the Account's name and website
    // reached enrichment.
    let matched: HashSet<usize> = h.sims["apollo"]
        .stats()
        .log
        .iter()
        .flat_map(|c| c.persons.clone())
        .collect();
    let missed: Vec<usize> = (n_leads..n_leads + n_contacts)
        .filter(|p| !matched.contains(p))
        .collect();
    assert!(missed.is_empty(), "Contacts not identified: {missed:?}");
    let st = h.sf().stats();
    assert!(st.owner_changes.is_empty(), "{:?}", st.owner_changes);
    // The converted Lead was not written; its Contact was, like any other.
    assert_eq!(enrichd_writes(&h, &converted_lead), 0);
    assert_eq!(enrichd_writes(&h, &converted_contact), 1);
    // Leads too (the Lead pass is unchanged).
    let converted: HashSet<String> = h.sf().converted_lead_ids().into_iter().collect();
    assert_eq!(
        r.write.summary.records_written,
        (n_leads - converted.len() + contacts.len()) as u64,
        "{r:?}"
    );

    // A second pass writes nothing more.
    let r = sf
        .sync(Some(&h.engine), SyncOptions::default())
        .await
        .expect("sync");
    assert_eq!(r.write.summary.records_written, 0, "{r:?}");
    // Every Contact write asked Salesforce not to run assignment rules.
    let st = h.sf().stats();
    assert_eq!(
        st.auto_assign_headers.values().sum::<u64>(),
        st.auto_assign_headers.get("FALSE").copied().unwrap_or(0),
        "{:?}",
        st.auto_assign_headers
    );

    // A Contact taken off its Account is read with `"Account": null`: no company any more.
    let detached = contacts[1].clone();
    // (A later second than enrichd's write: SystemModstamp has second precision.)
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    h.sf()
        .human_edit(&detached, &[("AccountId", "")], None)
        .unwrap();
    let r = sf
        .sync(Some(&h.engine), SyncOptions::default())
        .await
        .expect("sync");
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.objects[1].pull.leads, 1, "{r:?}");
    let stored = h
        .store
        .get_lead(&h.ws.id, &LeadId(detached.clone()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored
            .fields
            .get("Account.Name")
            .is_none_or(|v| v.is_null()),
        "{stored:?}"
    );
    assert!(h.sf().stats().owner_changes.is_empty());
}

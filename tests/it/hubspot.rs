//! The HubSpot connector over HTTP against the HubSpot simulator: connect,
//! backfill and incremental pull, token refresh, write-back with 207s,
//! limits, and signed webhooks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enrichd::clock::SystemClock;
use enrichd::core::lead::Lead;
use enrichd::crm::hubspot::HubSpotError;
use enrichd::crm::hubspot::pull::PageSink;
use enrichd::crm::hubspot::sync::SyncOptions;
use enrichd::store::crm::ConnectionState;
use enrichd_sim::ProviderKind;
use enrichd_sim::SimOptions;
use enrichd_sim::hubspot::{Bucket, HubSpotFault, HubSpotLimits, HubSpotOptions};

use crate::support::{FAST_LIMITS, Harness, HarnessBuilder, HubSpotSpec};

const AUDIENCE: &str = r#"
providers = ["apollo", "hunter"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]
"#;

fn spec(opts: HubSpotOptions) -> HubSpotSpec {
    HubSpotSpec {
        opts,
        email_share: 0.0,
        crm_extra: String::new(),
        mapping: None,
    }
}

async fn harness(size: usize, spec: HubSpotSpec) -> Harness {
    HarnessBuilder::new(size)
        .provider_with(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).unlimited(),
            FAST_LIMITS,
        )
        .provider_with(
            "hunter",
            ProviderKind::Hunter,
            SimOptions::defaults(ProviderKind::Hunter).unlimited(),
            FAST_LIMITS,
        )
        .workspace(AUDIENCE)
        .hubspot(spec)
        .start()
        .await
}

type PageHook = Box<dyn FnMut(usize) + Send>;

/// Collects pulled leads and counts how often each id arrived.
#[derive(Default)]
struct Collect {
    seen: Mutex<HashMap<String, u32>>,
    on_page: Mutex<Option<PageHook>>,
    pages: Mutex<usize>,
}

impl PageSink for Collect {
    fn page(
        &self,
        leads: Vec<Lead>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HubSpotError>> + Send + '_>>
    {
        Box::pin(async move {
            {
                let mut s = self.seen.lock().unwrap();
                for l in &leads {
                    *s.entry(l.id.to_string()).or_default() += 1;
                }
            }
            let n = {
                let mut p = self.pages.lock().unwrap();
                *p += 1;
                *p
            };
            if let Some(f) = self.on_page.lock().unwrap().as_mut() {
                f(n);
            }
            Ok(())
        })
    }
}

impl Collect {
    fn counts(&self) -> HashMap<String, u32> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_flow_end_to_end_stores_sealed_tokens_and_creates_properties() {
    let h = harness(20, spec(HubSpotOptions::defaults())).await;
    let c = h.connect_hubspot().await;
    assert_eq!(c.portal, h.hs().portal_id().to_string());
    assert!(
        c.scopes.iter().any(|s| s == "crm.objects.contacts.write"),
        "{:?}",
        c.scopes
    );
    let row = h
        .store
        .connection(&h.ws.id, "hubspot")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(row.state, ConnectionState::Connected);
    // Sealed, never in clear.
    let sealed = row.sealed_access.clone().expect("access");
    assert!(sealed.starts_with("v1."), "{sealed}");
    let stats = h.hs().stats();
    assert_eq!(stats.token_grants.get("authorization_code"), Some(&1));
    assert_eq!(
        stats.count("POST /oauth/v1/token"),
        0,
        "the deprecated endpoint is never used"
    );
    // The connector works with the stored tokens, and creates its properties.
    let hub = h.hub();
    let m = hub.settings.mapping.clone();
    let r = enrichd::crm::hubspot::schema::ensure(&hub.client, &m, true)
        .await
        .expect("schema");
    assert!(r.created.len() >= 8, "{:?}", r.created);
    assert!(h.hs().property("enrichment_work_email").is_some());
    assert!(h.hs().property_group_exists("enrichd"));
    // A second check creates nothing.
    let again = enrichd::crm::hubspot::schema::ensure(&hub.client, &m, true)
        .await
        .expect("schema");
    assert!(again.created.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_schema_scope_is_a_clear_error_listing_properties_and_scope() {
    let opts = HubSpotOptions::defaults().with_scopes(&[
        "oauth",
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
        "crm.objects.companies.read",
        "crm.schemas.contacts.read",
    ]);
    let h = harness(5, spec(opts)).await;
    h.connect_hubspot().await;
    let hub = h.hub();
    let err = enrichd::crm::hubspot::schema::ensure(&hub.client, &hub.settings.mapping, true)
        .await
        .expect_err("no write scope");
    let msg = err.to_string();
    assert!(msg.contains("crm.schemas.contacts.write"), "{msg}");
    assert!(msg.contains("enrichment_work_email"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_then_incremental_read_every_contact_once_despite_12000_equal_timestamps() {
    let h = harness(
        25_000,
        spec(HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited())),
    )
    .await;
    h.connect_hubspot().await;
    let hub = h.hub();
    let ids = h.hs().contact_ids();
    assert_eq!(ids.len(), 25_000);
    // 12,000 contacts share one lastmodifieddate (a bulk update).
    let bulk: Vec<String> = ids.iter().step_by(2).take(12_000).cloned().collect();
    let t = chrono::Utc::now().timestamp_millis() - 3 * 86_400_000;
    h.hs().set_modified_at(&bulk, t);

    let sink = Collect::default();
    let r = hub.puller().backfill(&sink).await.expect("backfill");
    let seen = sink.counts();
    assert_eq!(seen.len(), 25_000, "every contact");
    assert!(seen.values().all(|&n| n == 1), "none twice");
    assert!(
        r.from_batch_read > 0 && r.from_search > 0,
        "both paths read: {r:?}"
    );
    assert!(!r.fallback, "{r:?}");
    assert_eq!(r.contacts, 25_000);

    // The id-range backfill (the fallback) also reads each contact once.
    let sink = Collect::default();
    let report = std::sync::Mutex::new(Default::default());
    hub.puller()
        .backfill_by_id(&sink, &report)
        .await
        .expect("by id");
    let seen = sink.counts();
    assert_eq!(seen.len(), 25_000);
    assert!(seen.values().all(|&n| n == 1));
    let r: enrichd::crm::hubspot::pull::PullReport = report.into_inner().unwrap();
    assert!(r.from_list > 0 && r.from_search > 0, "{r:?}");

    // Now a bulk update after the backfill: 12,000 contacts, one timestamp.
    let now = chrono::Utc::now().timestamp_millis();
    h.hs().set_modified_at(&bulk, now);
    let sink = Collect::default();
    let r = hub.puller().incremental(&sink).await.expect("incremental");
    let seen = sink.counts();
    assert_eq!(seen.len(), 12_000, "exactly the changed contacts: {r:?}");
    assert!(seen.values().all(|&n| n == 1));
    assert!(
        r.search_restarts >= 1,
        "the 10,000 cap was crossed by restarting: {r:?}"
    );
    // 12,000 / 200 = 60 pages (+1 at most per restart), no loop.
    assert!(r.pages <= 62, "{r:?}");
    let state = hub.puller().state().await.unwrap();
    assert!(state.watermark.unwrap() <= chrono::Utc::now().timestamp_millis());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backfill_reads_contacts_without_a_company_too() {
    let h = harness(
        500,
        spec(HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited())),
    )
    .await;
    h.connect_hubspot().await;
    let mut alone = Vec::new();
    for i in 0..30 {
        alone.push(h.hs().create_contact(
            &[("firstname", "Solo"), ("lastname", &format!("Person{i}"))],
            None,
        ));
    }
    let sink = Collect::default();
    let r = h.hub().puller().backfill(&sink).await.expect("backfill");
    let seen = sink.counts();
    assert_eq!(seen.len(), 530, "{r:?}");
    assert!(seen.values().all(|&n| n == 1));
    assert!(alone.iter().all(|id| seen.contains_key(id)));
    assert!(!r.fallback, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_sync_after_one_percent_changed_costs_calls_in_proportion() {
    let h = harness(
        10_000,
        spec(HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited())),
    )
    .await;
    h.connect_hubspot().await;
    let hub = h.hub();
    hub.puller()
        .backfill(&Collect::default())
        .await
        .expect("backfill");
    let ids = h.hs().contact_ids();
    let touched: Vec<String> = ids.iter().step_by(100).cloned().collect();
    assert_eq!(touched.len(), 100);
    h.hs().touch(&touched);
    h.hs().reset_stats();
    let sink = Collect::default();
    hub.puller().incremental(&sink).await.expect("incremental");
    assert_eq!(sink.counts().len(), 100);
    let calls = h.hs().stats().api_calls();
    // One search page and one association read; companies are cached.
    assert!(
        calls <= 3,
        "{calls} calls for 100 changed contacts: {:?}",
        h.hs().stats().by_endpoint
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_expiring_mid_sync_is_refreshed_without_losing_a_contact() {
    // Some latency, so the backfill is still reading when the tokens expire.
    let h = harness(
        6_000,
        spec(
            HubSpotOptions::defaults()
                .with_limits(HubSpotLimits::unlimited())
                .with_latency(Duration::from_millis(100)),
        ),
    )
    .await;
    h.connect_hubspot().await;
    let hub = h.hub();
    let sink = Collect::default();
    let sim = h.hs();
    let expired = Arc::new(Mutex::new(false));
    {
        // Flag the first page; the expiry itself happens below, while the
        // backfill (about 2.5 s of reading at 100 ms per call) is still reading.
        let flag = expired.clone();
        *sink.on_page.lock().unwrap() = Some(Box::new(move |n| {
            if n == 1 {
                *flag.lock().unwrap() = true;
            }
        }));
    }
    let puller = hub.puller();
    let run = puller.backfill(&sink);
    let expire = async {
        while !*expired.lock().unwrap() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sim.expire_access_tokens();
    };
    let (r, ()) = tokio::join!(run, expire);
    r.expect("backfill survives the expiry");
    assert_eq!(sink.counts().len(), 6_000);
    // Both sides of the backfill hit the expiry; one refresh served them.
    assert_eq!(hub.client.tokens.refreshes(), 1);
    assert_eq!(
        sim.stats().token_grants.get("refresh_token").copied(),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_near_expiry_is_refreshed_ahead_and_once() {
    // Tokens live 3 s; enrichd refreshes 2 s ahead.
    let mut s = spec(
        HubSpotOptions::defaults()
            .with_token_ttl(Duration::from_secs(3))
            .with_latency(Duration::from_millis(20)),
    );
    s.crm_extra = "refresh_margin_secs = 2\n".into();
    let h = harness(2_000, s).await;
    h.connect_hubspot().await;
    let hub = h.hub();
    let sink = Collect::default();
    hub.puller().backfill(&sink).await.expect("backfill");
    let stats = h.hs().stats();
    assert_eq!(sink.counts().len(), 2_000);
    assert_eq!(
        stats.by_status.get(&401),
        None,
        "refreshed before expiry, never refused"
    );
    assert!(hub.client.tokens.refreshes() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_refresh_token_means_reconnect_required_not_a_retry_loop() {
    let h = harness(50, spec(HubSpotOptions::defaults())).await;
    h.connect_hubspot().await;
    h.hs().revoke_refresh_tokens();
    h.hs().expire_access_tokens();
    let hub = h.hub();
    let err = hub
        .sync(
            None,
            SyncOptions {
                full: false,
                enrich: false,
                write: false,
            },
        )
        .await
        .expect_err("cannot refresh");
    assert!(
        matches!(err, HubSpotError::ReconnectRequired { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("enrichd connect hubspot"), "{err}");
    let row = h
        .store
        .connection(&h.ws.id, "hubspot")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, ConnectionState::ReconnectRequired);
    // No loop: the next sync stops before the token endpoint.
    let grants_before = h.hs().stats().requests;
    let err = h
        .hub()
        .sync(
            None,
            SyncOptions {
                full: false,
                enrich: false,
                write: false,
            },
        )
        .await
        .expect_err("still revoked");
    assert!(matches!(err, HubSpotError::ReconnectRequired { .. }));
    assert_eq!(h.hs().stats().requests, grants_before, "nothing was sent");
    // Connecting again restores it.
    h.connect_hubspot().await;
    let r = h
        .hub()
        .sync(
            None,
            SyncOptions {
                full: false,
                enrich: false,
                write: false,
            },
        )
        .await
        .expect("sync");
    assert_eq!(r.pull.contacts, 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_endpoint_429_is_retried() {
    let h = harness(10, spec(HubSpotOptions::defaults())).await;
    h.connect_hubspot().await;
    h.hs().expire_access_tokens();
    h.hs().inject(HubSpotFault::TokenRateLimited { count: 2 });
    let r = h
        .hub()
        .sync(
            None,
            SyncOptions {
                full: false,
                enrich: false,
                write: false,
            },
        )
        .await
        .expect("sync");
    assert_eq!(r.pull.contacts, 10);
    assert_eq!(h.hs().stats().limited("TOKEN_ENDPOINT"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_app_token_works_without_oauth() {
    let mut s = spec(HubSpotOptions::defaults());
    s.crm_extra = "private_app_token_env = \"HS_PRIVATE_APP_TOKEN\"\nportal_id = 62515\n".into();
    let h = harness(30, s).await;
    h.connect_hubspot().await;
    let r = h
        .hub()
        .sync(
            None,
            SyncOptions {
                full: false,
                enrich: false,
                write: false,
            },
        )
        .await
        .expect("sync");
    assert_eq!(r.pull.contacts, 30);
    assert!(h.hs().stats().token_grants.is_empty());
}

/// The leads as stored (fields as last read from HubSpot or written).
async fn stored_leads(h: &Harness, ids: &[String]) -> Vec<Lead> {
    let mut out = Vec::new();
    for id in ids {
        let lead = h
            .store
            .get_lead(&h.ws.id, &enrichd::core::lead::LeadId(id.clone()))
            .await;
        out.push(lead.unwrap().expect("stored lead"));
    }
    out
}

fn written_email(h: &Harness, id: &str) -> Option<String> {
    h.hs()
        .contact(id)
        .and_then(|c| c.get("enrichment_work_email").map(String::from))
}

#[tokio::test(flavor = "multi_thread")]
async fn writing_back_1000_leads_takes_10_batch_calls_and_handles_207s_per_record() {
    let h = harness(
        1_000,
        spec(HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited())),
    )
    .await;
    h.connect_hubspot().await;
    let hub = h.hub();
    enrichd::crm::hubspot::schema::ensure(&hub.client, &hub.settings.mapping, true)
        .await
        .unwrap();
    // Enrich without writing, then write everything back in one pass.
    let r = hub
        .sync(
            Some(&h.engine),
            SyncOptions {
                full: false,
                enrich: true,
                write: false,
            },
        )
        .await
        .expect("sync");
    assert_eq!(r.enriched, 1_000);
    let ids = h.hs().contact_ids();
    let mut enriched = Vec::new();
    for id in &ids {
        let v = h
            .store
            .values(&h.ws.id, &enrichd::core::lead::LeadId(id.clone()))
            .await
            .unwrap();
        if !v.is_empty() {
            enriched.push(id.clone());
        }
    }
    let transient: Vec<String> = enriched[10..15].to_vec();
    let permanent: Vec<String> = enriched[20..23].to_vec();
    h.hs().inject(HubSpotFault::FailRecords {
        ids: transient.clone(),
        times: 1,
        transient: true,
    });
    h.hs().inject(HubSpotFault::FailRecords {
        ids: permanent.clone(),
        times: u32::MAX,
        transient: false,
    });
    h.hs().reset_stats();
    let leads = stored_leads(&h, &ids).await;
    let (w, failures) = hub.write_leads(&leads).await.expect("write");
    let stats = h.hs().stats();
    let batch_calls = stats.count("POST /crm/v3/objects/contacts/batch/update");
    // 1,000 leads = 10 batches of 100, plus one retry batch for the 5 transient failures.
    assert_eq!(w.batches, batch_calls);
    assert!(batch_calls <= 11, "{batch_calls}");
    assert_eq!(stats.count("PATCH /crm/v3/objects/contacts/{id}"), 0);
    assert_eq!(w.records_failed, 3);
    assert_eq!(failures.len(), 3, "{failures:?}");
    for id in &permanent {
        assert!(
            failures
                .iter()
                .any(|(l, why)| l == id && why.contains("VALIDATION_ERROR")),
            "{failures:?}"
        );
        assert_eq!(written_email(&h, id), None);
    }
    for id in &transient {
        assert!(written_email(&h, id).is_some(), "retried and written: {id}");
    }
    // Every written value carries its Source.
    let mut with_value = 0;
    for id in &ids {
        let c = h.hs().contact(id).unwrap();
        if let Some(v) = c.get("enrichment_work_email") {
            with_value += 1;
            let src = c
                .get("enrichment_work_email_source")
                .expect("source with value");
            assert!(src == "apollo" || src == "hunter", "{src}");
            let stored = h
                .store
                .values(&h.ws.id, &enrichd::core::lead::LeadId(id.clone()))
                .await
                .unwrap();
            assert!(stored.iter().any(|s| s.value == v && s.source.0 == src));
        }
    }
    assert_eq!(
        with_value,
        enriched.len() - permanent.len(),
        "every enriched lead but the refused ones"
    );
    assert!(with_value > 500, "{with_value}");
    let outcomes = h.store.write_outcomes(&h.ws.id).await.unwrap();
    assert_eq!(outcomes.iter().filter(|o| o.state == "failed").count(), 3);
    // Writing again changes nothing: no call at all.
    h.hs().clear_faults();
    h.hs().reset_stats();
    let leads = stored_leads(&h, &ids).await;
    let (w2, _) = hub.write_leads(&leads).await.unwrap();
    assert!(
        w2.records_written <= 3,
        "only the 3 failed ones are tried again: {w2:?}"
    );
}

const EMAIL_IF_EMPTY: &str = r#"
crm = "hubspot"
object = "contacts"
[channels.work_email]
field = "email"
source_field = "enrichment_work_email_source"
policy = "if_empty"
[status]
field = "enrichment_status"
[enriched_at]
field = "enrichment_enriched_at"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_human_entered_email_is_untouched_under_if_empty() {
    let mut s = spec(HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited()));
    s.email_share = 0.5;
    s.mapping = Some(EMAIL_IF_EMPTY.into());
    let h = harness(200, s).await;
    h.connect_hubspot().await;
    let ids = h.hs().contact_ids();
    // People typed their own emails for some contacts (a different address).
    let typed: Vec<String> = ids.iter().take(20).cloned().collect();
    for id in &typed {
        h.hs()
            .human_edit(id, &[("email", "typed.by.hand@example.org")]);
    }
    let before: BTreeMap<String, Option<String>> = ids
        .iter()
        .map(|id| {
            (
                id.clone(),
                h.hs()
                    .contact(id)
                    .and_then(|c| c.get("email").map(String::from)),
            )
        })
        .collect();
    let hub = h.hub();
    let r = hub
        .sync(
            Some(&h.engine),
            SyncOptions {
                full: false,
                enrich: true,
                write: true,
            },
        )
        .await
        .expect("sync");
    assert!(r.write.records_written > 0);
    let mut filled = 0;
    for id in &ids {
        let c = h.hs().contact(id).unwrap();
        match &before[id] {
            Some(v) => {
                assert_eq!(
                    c.get("email"),
                    Some(v.as_str()),
                    "contact {id}: a human value was overwritten"
                );
                let by_us = c
                    .history
                    .get("email")
                    .map(|hs| hs.iter().any(|x| x.source_type == "INTEGRATION"))
                    .unwrap_or(false);
                assert!(!by_us, "contact {id}: enrichd wrote over `email`");
            }
            None => {
                if c.get("email").is_some() {
                    filled += 1;
                    assert!(c.get("enrichment_work_email_source").is_some());
                }
            }
        }
    }
    assert!(filled > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn under_default_limits_no_429_and_lowered_limits_mid_run_lose_nothing() {
    let mut s = spec(HubSpotOptions::defaults().with_latency(Duration::from_millis(5)));
    s.crm_extra = "limits = { ten_secondly = 110, search_per_second = 5 }\n".into();
    let h = harness(1_500, s).await;
    h.connect_hubspot().await;
    let hub = h.hub();
    enrichd::crm::hubspot::schema::ensure(&hub.client, &hub.settings.mapping, true)
        .await
        .unwrap();
    let r = hub
        .sync(
            None,
            SyncOptions {
                full: false,
                enrich: false,
                write: false,
            },
        )
        .await
        .expect("sync");
    assert_eq!(r.pull.contacts, 1_500);
    let stats = h.hs().stats();
    assert!(stats.rate_limited.is_empty(), "{:?}", stats.rate_limited);
    assert!(stats.max_in_window(Bucket::General, Duration::from_secs(10)) <= 110);
    assert!(stats.max_in_window(Bucket::Search, Duration::from_secs(1)) <= 5);

    // Enrich, then lower the limit while writing back.
    hub.sync(
        Some(&h.engine),
        SyncOptions {
            full: true,
            enrich: true,
            write: false,
        },
    )
    .await
    .expect("enrich");
    let ids = h.hs().contact_ids();
    let leads = stored_leads(&h, &ids).await;
    let hs = h.hs();
    let lower = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        hs.set_limits(HubSpotLimits {
            ten_secondly: 5,
            search_per_second: 5,
            daily: None,
        });
    };
    let (w, ()) = tokio::join!(hub.write_leads(&leads), lower);
    let (w, failures) = w.expect("write-back adapts");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        hub.client.general.limit(),
        5,
        "adapted to X-HubSpot-RateLimit-Max"
    );
    let mut missing = 0;
    for l in &leads {
        let stored = h.store.values(&h.ws.id, &l.id).await.unwrap();
        if let Some(v) = stored.first()
            && written_email(&h, l.id.as_str()).as_deref() != Some(v.value.as_str())
        {
            missing += 1;
        }
    }
    assert_eq!(missing, 0, "every stored value written: {w:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daily_429_parks_the_portal() {
    let mut s = spec(HubSpotOptions::defaults().with_limits(HubSpotLimits {
        ten_secondly: 1000,
        search_per_second: 100,
        daily: Some(3),
    }));
    s.crm_extra = "limits = { ten_secondly = 1000, search_per_second = 100 }\n".into();
    let h = harness(1_000, s).await;
    h.connect_hubspot().await;
    let err = h
        .hub()
        .sync(
            None,
            SyncOptions {
                full: false,
                enrich: false,
                write: false,
            },
        )
        .await
        .expect_err("daily limit");
    assert!(matches!(err, HubSpotError::DailyLimit { .. }), "{err}");
    assert!(h.hs().stats().limited("DAILY") >= 1);
    let _ = SystemClock;
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_webhooks_trigger_enrichment_and_enrichds_own_writes_do_not() {
    use enrichd_sim::hubspot::{Delivery, Subscription};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/hubspot", listener.local_addr().unwrap());
    let subs = vec![
        Subscription::creation(),
        Subscription::property_change("firstname"),
        Subscription::property_change("company"),
        Subscription::property_change("enrichment_work_email"),
        Subscription::property_change("enrichment_status"),
    ];
    let opts = HubSpotOptions::defaults()
        .with_limits(HubSpotLimits::unlimited())
        .with_webhooks(url.clone(), subs);
    let h = harness(60, spec(opts)).await;
    h.connect_hubspot().await;
    let state = enrichd::crm::hubspot::sync::webhook_state(
        &h.settings,
        h.store.clone(),
        Arc::new(SystemClock),
        url.clone(),
    )
    .await
    .unwrap();
    assert_eq!(state.portals.len(), 1);
    let app = enrichd::crm::hubspot::webhook::router(Arc::new(state));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // Backfill, enrich, write: the writes fire propertyChange events on
    // enrichd's own properties.
    let hub = h.hub();
    let opts = SyncOptions {
        full: false,
        enrich: true,
        write: true,
    };
    let first = hub.sync(Some(&h.engine), opts).await.expect("sync");
    assert!(first.write.records_written > 0);
    h.hs().flush_webhooks().await;
    let deliveries = h.hs().stats().webhook_deliveries;
    assert!(
        !deliveries.is_empty() && deliveries.iter().all(|(s, _)| *s == 200),
        "{deliveries:?}"
    );
    let r = hub
        .process_events(Some(&h.engine), opts)
        .await
        .expect("events");
    assert!(r.events > 0);
    assert_eq!(r.enriched, 0, "enrichd's own writes trigger nothing: {r:?}");
    assert_eq!(r.ignored, r.events);

    // A contact created in HubSpot is enriched and written back.
    let i = (0..60)
        .find(|&i| {
            h.usable_from("apollo", i, enrichd::core::channel::Channel::WorkEmail)
                .is_some()
        })
        .expect("someone Apollo knows");
    let p = h.population.person(i).crm_fields();
    let props: Vec<(&str, &str)> = ["firstname", "lastname", "company", "jobtitle", "country"]
        .iter()
        .filter_map(|k| p.get(*k).and_then(|v| v.as_str()).map(|v| (*k, v)))
        .collect();
    let company = h
        .hs()
        .contact(&h.hs().contact_ids()[i])
        .and_then(|c| c.company_id.clone());
    let new_id = h.hs().create_contact(&props, company.as_deref());
    h.hs().flush_webhooks().await;
    let r = hub
        .process_events(Some(&h.engine), opts)
        .await
        .expect("events");
    assert_eq!(r.leads, 1, "{r:?}");
    assert_eq!(r.enriched, 1);
    let c = h.hs().contact(&new_id).unwrap();
    assert!(
        c.get("enrichment_work_email").is_some(),
        "{:?}",
        c.properties
    );
    // ...and its write-back events do not come back as work.
    h.hs().flush_webhooks().await;
    let r = hub
        .process_events(Some(&h.engine), opts)
        .await
        .expect("events");
    assert_eq!(r.enriched, 0, "{r:?}");

    // Manual deliveries: valid is recorded; every bad one is 401 and changes nothing.
    let event = serde_json::json!([{"eventId": 9001, "subscriptionId": 1, "portalId": h.hs().portal_id(),
        "appId": 54321, "occurredAt": chrono::Utc::now().timestamp_millis(),
        "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
        "objectId": new_id.parse::<u64>().unwrap(), "propertyName": "firstname",
        "propertyValue": "Renamed", "changeSource": "CRM_UI"}]);
    let count = |h: &Harness| {
        let store = h.store.clone();
        let ws = h.ws.id.clone();
        async move { store.events(&ws, "hubspot").await.unwrap().len() }
    };
    let before = count(&h).await;
    let bad = [
        Delivery {
            tamper_body: true,
            ..Delivery::default()
        },
        Delivery {
            secret: Some("wrong-secret".into()),
            ..Delivery::default()
        },
        Delivery {
            timestamp_ms: Some(chrono::Utc::now().timestamp_millis() - 10 * 60_000),
            ..Delivery::default()
        },
        Delivery {
            omit_signature: true,
            ..Delivery::default()
        },
    ];
    for how in bad {
        let status = h.hs().deliver(&event, how.clone()).await.unwrap();
        assert_eq!(status, 401, "{how:?}");
    }
    assert_eq!(
        count(&h).await,
        before,
        "rejected deliveries change nothing"
    );
    assert_eq!(
        h.hs().deliver(&event, Delivery::default()).await.unwrap(),
        200
    );
    assert_eq!(count(&h).await, before + 1);
    // A redelivery is a duplicate.
    assert_eq!(
        h.hs().deliver(&event, Delivery::default()).await.unwrap(),
        200
    );
    assert_eq!(count(&h).await, before + 1);
    let r = hub
        .process_events(Some(&h.engine), opts)
        .await
        .expect("events");
    assert_eq!(
        r.leads, 1,
        "a change to an input property triggers enrichment"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipelined_sync_writes_1000_leads_in_at_most_10_batch_calls() {
    let h = harness(
        1_000,
        spec(HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited())),
    )
    .await;
    h.connect_hubspot().await;
    let hub = h.hub();
    let r = hub
        .sync(
            Some(&h.engine),
            SyncOptions {
                full: false,
                enrich: true,
                write: true,
            },
        )
        .await
        .expect("sync");
    assert_eq!(r.pull.contacts, 1_000);
    let stats = h.hs().stats();
    let calls = stats.count("POST /crm/v3/objects/contacts/batch/update");
    // Every contact gets at least its status written: 1,000 records.
    assert_eq!(r.write.records_written, 1_000, "{:?}", r.write);
    assert_eq!(calls, 10, "full batches of 100 across pull pages");
    assert_eq!(stats.records_updated, 1_000);
    // A second sync (nothing changed in HubSpot but our own writes) writes nothing new.
    h.hs().reset_stats();
    let again = hub
        .sync(
            Some(&h.engine),
            SyncOptions {
                full: false,
                enrich: true,
                write: true,
            },
        )
        .await
        .expect("sync");
    assert_eq!(again.write.records_written, 0, "{:?}", again.write);
    assert_eq!(
        h.hs()
            .stats()
            .count("POST /crm/v3/objects/contacts/batch/update"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_connects_by_following_the_authorize_redirect_and_syncs() {
    use tokio::io::AsyncBufReadExt;
    let h = harness(120, spec(HubSpotOptions::defaults())).await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_enrichd"));
    cmd.args([
        "--config",
        h.config_path.to_str().unwrap(),
        "connect",
        "hubspot",
        "--no-browser",
        "--timeout-secs",
        "20",
    ])
    .envs(&h.secrets)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("enrichd connect");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut url = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("http") {
            url = Some(line);
            break;
        }
    }
    let url = url.expect("the authorize URL is printed");
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );
    // The browser step: follow the authorize redirect to enrichd's loopback.
    let page = reqwest::Client::new().get(&url).send().await.unwrap();
    assert!(page.status().is_success());
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        rest.contains("connected workspace t to HubSpot portal 62515"),
        "{rest}"
    );
    assert!(rest.contains("created"), "{rest}");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args([
            "--config",
            h.config_path.to_str().unwrap(),
            "sync",
            "--once",
            "--format",
            "json",
        ])
        .envs(&h.secrets)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(v["sync"]["pull"]["contacts"], 120);
    assert_eq!(v["sync"]["write"]["records_written"], 120);
}

const MAPS_A_MISSING_PROPERTY: &str = r#"
crm = "hubspot"
object = "contacts"
[channels.work_email]
field = "enrichment_work_email"
source_field = "enrichment_work_email_source"
[channels.linkedin_url]
field = "no_such_linkedin_property"
source_field = "enrichment_linkedin_url_source"
[status]
field = "enrichment_status"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_batch_400_names_the_missing_property_and_the_rest_is_written() {
    let mut s = spec(HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited()));
    s.mapping = Some(MAPS_A_MISSING_PROPERTY.into());
    s.crm_extra = "create_properties = false\n".into();
    let h = HarnessBuilder::new(150)
        .provider_with("apollo", ProviderKind::Apollo, SimOptions::defaults(ProviderKind::Apollo).unlimited(), FAST_LIMITS)
        .workspace("providers = [\"apollo\"]\n[[workspaces.audiences]]\nname = \"all\"\nchannels = [\"work_email\", \"linkedin_url\"]\n")
        .hubspot(s)
        .start()
        .await;
    h.connect_hubspot().await;
    let hub = h.hub();
    // The check refuses the mapping and names what is missing.
    let err = hub.ensure_schema().await.expect_err("missing properties");
    assert!(
        err.to_string().contains("no_such_linkedin_property"),
        "{err}"
    );
    // Create the other enrichd properties by hand (as an admin would), then
    // write without the check: HubSpot itself refuses the batch.
    let created = {
        let Some(enrichd::config::crm::CrmSettings::HubSpot(hs)) = &h.ws.crm else {
            unreachable!()
        };
        let mut m = (*hs.mapping).clone();
        m.channels
            .remove(&enrichd::core::channel::Channel::LinkedinUrl);
        enrichd::crm::hubspot::schema::ensure(&hub.client, &m, true)
            .await
            .expect("create the rest")
    };
    assert!(!created.created.is_empty());
    hub.sync(
        Some(&h.engine),
        SyncOptions {
            full: false,
            enrich: true,
            write: false,
        },
    )
    .await
    .expect("enrich");
    let ids = h.hs().contact_ids();
    let leads = stored_leads(&h, &ids).await;
    let (w, failures) = hub.write_leads(&leads).await.expect("write");
    assert!(
        w.missing_properties.contains("no_such_linkedin_property"),
        "{w:?}"
    );
    assert!(w.records_written > 100, "{w:?}");
    // LinkedIn values and their Source were dropped together and reported.
    let mut linkedin_reported = 0;
    for id in &ids {
        let c = h.hs().contact(id).unwrap();
        assert!(
            c.get("enrichment_linkedin_url_source").is_none(),
            "a Source without its value"
        );
        let stored = h
            .store
            .values(&h.ws.id, &enrichd::core::lead::LeadId(id.clone()))
            .await
            .unwrap();
        if stored
            .iter()
            .any(|v| v.channel == enrichd::core::channel::Channel::LinkedinUrl)
        {
            linkedin_reported += 1;
            assert!(
                failures
                    .iter()
                    .any(|(l, why)| l == id && why.contains("no_such_linkedin_property")),
                "contact {id} not reported"
            );
        }
        if let Some(v) = stored
            .iter()
            .find(|v| v.channel == enrichd::core::channel::Channel::WorkEmail)
        {
            assert_eq!(c.get("enrichment_work_email"), Some(v.value.as_str()));
        }
    }
    assert!(linkedin_reported > 0);
}

//! Credits are charged exactly once per usable value stored, whatever runs
//! twice: two runs at the same time, or a run interrupted and run again.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use enrichd_sim::{ProviderKind, ProviderProfile, Quality, SimChannel, SimOptions};

use crate::support::{Harness, HarnessBuilder, eventually};

const WS: &str = r#"providers = ["apollo", "prospeo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "phone", "linkedin_url"]"#;

async fn harness(n: usize, latency_ms: u64, store_url: Option<&str>) -> Harness {
    let q = |c| Quality::new(c, 1.0, 1.0, 0.0);
    let lat = Duration::from_millis(latency_ms);
    let mut b = HarnessBuilder::new(n)
        .provider(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo)
                .with_latency(lat, lat * 2)
                .with_profile(ProviderProfile::uniform(&[
                    (SimChannel::WorkEmail, q(0.5)),
                    (SimChannel::LinkedinUrl, q(0.8)),
                ])),
        )
        .provider_with(
            "prospeo",
            ProviderKind::Prospeo,
            SimOptions::defaults(ProviderKind::Prospeo)
                .unlimited()
                .with_latency(lat, lat * 2)
                .with_profile(ProviderProfile::uniform(&[
                    (SimChannel::WorkEmail, q(0.9)),
                    (SimChannel::Phone, q(0.6)),
                ])),
            "limits = { per_second = 5000, per_minute = 300000, per_day = 100000000 }",
        )
        .workspace(WS);
    if let Some(u) = store_url {
        b = b.store_url(u);
    }
    b.start().await
}

/// The ledger holds one charge per stored value, at the workspace's price,
/// and nothing else.
async fn ledger_matches_values(h: &Harness, n: usize) -> i64 {
    let ledger = h.store.ledger(&h.ws.id).await.expect("ledger");
    let keys: HashSet<&str> = ledger.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), ledger.len(), "duplicate charge keys");
    let mut charged: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in &ledger {
        *charged
            .entry((e.lead_id.0.clone(), e.channel.to_string()))
            .or_default() += e.credits;
    }
    let mut values = 0;
    for i in 0..n {
        let id = Harness::lead_id(i);
        for v in h.store.values(&h.ws.id, &id).await.expect("values") {
            values += 1;
            let c = charged.remove(&(id.0.clone(), v.channel.to_string()));
            assert_eq!(
                c,
                Some(h.ws.prices.of(v.channel)),
                "lead {i} {}: charged {c:?}",
                v.channel
            );
        }
    }
    assert!(
        charged.is_empty(),
        "charges without a stored value: {charged:?}"
    );
    assert_eq!(values, ledger.len());
    ledger.iter().map(|e| e.credits).sum()
}

#[tokio::test]
async fn the_same_work_run_twice_at_the_same_time_is_charged_once() {
    let h = harness(150, 5, None).await;
    let other = h.second_engine();
    let (a, b) = tokio::join!(
        h.engine.enrich(&h.ws, h.leads(0..150), Default::default()),
        other.enrich(&h.ws, h.leads(0..150), Default::default()),
    );
    let (a, b) = (a.expect("run a"), b.expect("run b"));
    let total = ledger_matches_values(&h, 150).await;
    assert!(total > 0);
    assert_eq!(
        a.totals.credits_charged + b.totals.credits_charged,
        total,
        "each charge reported by exactly one run"
    );
}

#[tokio::test]
async fn a_run_interrupted_and_run_again_is_charged_once() {
    let h = harness(200, 20, None).await;
    let engine = h.engine.clone();
    let ws = h.ws.clone();
    let leads = h.leads(0..200);
    let run = tokio::spawn(async move { engine.enrich(&ws, leads, Default::default()).await });
    // Interrupt once work is under way.
    assert!(eventually(Duration::from_secs(20), || h.total_requests() >= 60).await);
    run.abort();
    let _ = run.await;
    let partial = h.store.ledger(&h.ws.id).await.expect("ledger").len();
    assert!(partial > 0, "the interrupted run stored something");
    h.run(h.leads(0..200)).await;
    let total = ledger_matches_values(&h, 200).await;
    assert!(h.store.ledger(&h.ws.id).await.expect("ledger").len() > partial);
    assert!(total > 0);
    // A value stored before the interruption is never asked for again.
    let requests = h.total_requests();
    h.run(h.leads(0..200)).await;
    let repeat = h.total_requests() - requests;
    let before = h.store.ledger(&h.ws.id).await.expect("ledger").len();
    assert_eq!(ledger_matches_values(&h, 200).await, total);
    assert_eq!(
        h.store.ledger(&h.ws.id).await.expect("ledger").len(),
        before
    );
    assert_eq!(repeat, 0, "a third run found nothing new to ask");
}

#[tokio::test]
async fn the_same_work_run_twice_at_the_same_time_is_charged_once_on_postgres() {
    // A fresh schema (dropped with `db`); the harness opens its own pool on it.
    let Some(db) = crate::db::pg().await else {
        return;
    };
    let h = harness(80, 5, Some(&db.url)).await;
    let other = h.second_engine();
    let (a, b) = tokio::join!(
        h.engine.enrich(&h.ws, h.leads(0..80), Default::default()),
        other.enrich(&h.ws, h.leads(0..80), Default::default()),
    );
    let (a, b) = (a.expect("run a"), b.expect("run b"));
    let total = ledger_matches_values(&h, 80).await;
    assert_eq!(a.totals.credits_charged + b.totals.credits_charged, total);
}

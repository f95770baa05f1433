//! Bulk selection under a credit budget: reserve at worst case, enrich the
//! highest ICP scores that fit, queue the rest, settle to what was found.

use std::collections::HashSet;

use enrichd::core::ledger::{Period, period_key};
use enrichd::store::LeadState;
use enrichd_sim::{ProviderKind, ProviderProfile, Quality, SimChannel, SimOptions};

use crate::support::{Harness, HarnessBuilder};

const FAST: &str = "limits = { per_second = 5000, per_minute = 300000, per_day = 100000000 }";

fn workspace(credits: i64) -> String {
    format!(
        r#"providers = ["prospeo"]
budget = {{ credits = {credits}, period = "month" }}
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "phone"]"#
    )
}

#[tokio::test]
async fn a_budget_for_200_worst_cases_enriches_the_top_icp_leads_and_queues_the_rest() {
    let profile = ProviderProfile::uniform(&[
        (SimChannel::WorkEmail, Quality::new(0.7, 1.0, 1.0, 0.0)),
        (SimChannel::Phone, Quality::new(0.4, 1.0, 1.0, 0.0)),
    ]);
    // Worst case per lead: work email 1 + phone 10 = 11 credits.
    let h = HarnessBuilder::new(1000)
        .provider_with(
            "prospeo",
            ProviderKind::Prospeo,
            SimOptions::defaults(ProviderKind::Prospeo)
                .unlimited()
                .with_profile(profile),
            FAST,
        )
        .workspace(&workspace(200 * 11))
        .engine("concurrency = 64")
        .start()
        .await;
    let report = h.run(h.leads(0..1000)).await;

    // The expected 200: highest ICP score first, ties by lead id.
    let mut ranked: Vec<(u32, String, usize)> = (0..1000)
        .map(|i| (h.population.person(i).icp_score, Harness::lead_id(i).0, i))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let top: HashSet<usize> = ranked.iter().take(200).map(|r| r.2).collect();
    let min_selected = ranked[199].0;
    let max_queued = ranked[200].0;
    assert!(min_selected >= max_queued);

    let mut queued = 0;
    for i in 0..1000 {
        let l = report.lead(Harness::lead_id(i).as_str()).expect("lead");
        if top.contains(&i) {
            assert_ne!(
                l.state,
                LeadState::Queued,
                "lead {i} (ICP {}) should be enriched",
                h.population.person(i).icp_score
            );
        } else {
            assert_eq!(l.state, LeadState::Queued, "lead {i} should be queued");
            assert_eq!(
                h.sim("prospeo").stats().calls_for(i),
                0,
                "queued lead {i} reached a provider"
            );
            queued += 1;
        }
    }
    assert_eq!(queued, 800);
    let stored_queued = h
        .store
        .statuses(&h.ws.id)
        .await
        .expect("statuses")
        .into_iter()
        .filter(|s| s.state == LeadState::Queued)
        .count();
    assert_eq!(stored_queued, 800);

    // Reserved at worst case, settled to what was found.
    assert_eq!(report.reserved, 2200);
    let s = report.settlement.expect("settled");
    let charged = report.totals.credits_charged;
    assert!(
        charged > 0 && charged < 2200,
        "some but not all channels found: {charged}"
    );
    assert_eq!(s.reserved, 2200);
    assert_eq!(s.used, charged);
    assert_eq!(s.released, 2200 - charged);
    let period = period_key(Period::Month, chrono::Utc::now().timestamp_millis());
    let counters = h.store.budget(&h.ws.id, &period).await.expect("budget");
    assert_eq!(counters.charged, charged);
    assert_eq!(
        counters.reserved, 0,
        "nothing stays reserved after settlement"
    );
    let ledger: i64 = h
        .store
        .ledger(&h.ws.id)
        .await
        .expect("ledger")
        .iter()
        .map(|e| e.credits)
        .sum();
    assert_eq!(ledger, charged);
    assert!(h.sim("prospeo").stats().credits_charged > 0);

    // Raising the budget lets the queued leads through, best ICP first.
    let (ws, engine) = h.reconfigure(&workspace(charged + 100 * 11));
    let queued_ids = h
        .store
        .leads_in_state(&h.ws.id, LeadState::Queued, i64::MAX, 1000)
        .await
        .expect("queued");
    assert_eq!(queued_ids.len(), 800);
    let next: Vec<usize> = queued_ids
        .iter()
        .map(|id| id.as_str()[1..].parse().expect("index"))
        .collect();
    assert_eq!(next[0], ranked[200].2, "the best queued lead comes first");
    let second = engine
        .enrich(
            &ws,
            next.iter().map(|i| h.lead(*i)).collect(),
            Default::default(),
        )
        .await
        .expect("run");
    let enriched = second
        .leads
        .iter()
        .filter(|l| l.state != LeadState::Queued)
        .count();
    assert_eq!(enriched, 100);
    for r in ranked.iter().skip(200).take(100) {
        let l = second.lead(Harness::lead_id(r.2).as_str()).expect("lead");
        assert_ne!(l.state, LeadState::Queued);
    }
}

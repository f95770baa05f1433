//! The verifier step (ZeroBounce) for emails without a usable status, and
//! re-verification of stored values past their freshness.

use enrichd::core::channel::Channel;
use enrichd::core::outcome::OutcomeKind;
use enrichd::core::value::{ChannelValue, DAY_MS, Source, Verification};
use enrichd::store::WriteOp;
use enrichd_sim::{ProviderKind, ProviderProfile, Quality, SimChannel, SimOptions};

use crate::support::{Harness, HarnessBuilder};

const WS: &str = r#"providers = ["pdl", "prospeo"]
verifier = "zb"
catch_all = "strict"
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]"#;

/// PDL (emails without status) with the given email accuracy, then a
/// Prospeo that knows every verified email, and ZeroBounce as verifier.
async fn harness(pdl_accuracy: f64) -> Harness {
    // PDL scores wrong matches at likelihood 2-5: accept them (min_likelihood
    // 2) so that its wrong emails reach the verifier.
    HarnessBuilder::new(200)
        .provider_with(
            "pdl",
            ProviderKind::Pdl,
            SimOptions::defaults(ProviderKind::Pdl)
                .unlimited()
                .with_profile(ProviderProfile::uniform(&[(
                    SimChannel::WorkEmail,
                    Quality::new(1.0, pdl_accuracy, 1.0, 0.0),
                )])),
            &format!(
                "{}\noptions = {{ min_likelihood = 2 }}",
                crate::support::FAST_LIMITS
            ),
        )
        .fast_provider(
            "prospeo",
            ProviderKind::Prospeo,
            SimOptions::defaults(ProviderKind::Prospeo)
                .with_profile(ProviderProfile::perfect(&[SimChannel::WorkEmail])),
        )
        .provider(
            "zb",
            ProviderKind::ZeroBounce,
            SimOptions::defaults(ProviderKind::ZeroBounce),
        )
        .workspace(WS)
        .start()
        .await
}

fn plain(h: &Harness, n: usize) -> Vec<usize> {
    (0..h.population.len())
        .filter(|i| {
            !h.population
                .is_catch_all_domain(&h.population.person(*i).domain)
        })
        .take(n)
        .collect()
}

#[tokio::test]
async fn an_unverified_email_confirmed_by_the_verifier_is_usable() {
    let h = harness(1.0).await;
    let leads = plain(&h, 8);
    let report = h.run(leads.iter().map(|i| h.lead(*i)).collect()).await;
    for i in &leads {
        let id = Harness::lead_id(*i);
        let l = report.lead(id.as_str()).expect("lead");
        assert_eq!(l.filled.len(), 1, "{}", l.reason);
        assert_eq!(
            l.filled[0].source, "pdl",
            "the first provider's value, once verified"
        );
        assert_eq!(l.filled[0].value, h.population.person(*i).work_email);
        let v = h.store.values(&h.ws.id, &id).await.expect("values");
        assert_eq!(v[0].verification, Verification::Verified);
        assert!(v[0].verified_at.is_some());
        let a = h.store.attempts(&h.ws.id, &id).await.expect("attempts");
        assert!(
            a.iter()
                .any(|x| x.provider == "zerobounce" && x.outcome == OutcomeKind::Found)
        );
    }
    assert_eq!(
        h.sim("zb").stats().requests,
        leads.len() as u64,
        "one check per email"
    );
    assert_eq!(
        h.sim("prospeo").stats().requests,
        0,
        "nobody after pdl was asked"
    );
}

#[tokio::test]
async fn an_email_the_verifier_rejects_is_unusable_and_the_waterfall_goes_on() {
    let h = harness(0.0).await; // PDL's emails are all wrong
    let leads = plain(&h, 6);
    let report = h.run(leads.iter().map(|i| h.lead(*i)).collect()).await;
    for l in &report.leads {
        assert_eq!(l.filled.len(), 1, "{}", l.reason);
        assert_eq!(l.filled[0].source, "prospeo");
    }
    let ledger = h.store.ledger(&h.ws.id).await.expect("ledger");
    assert_eq!(ledger.len(), leads.len());
    assert!(
        ledger.iter().all(|e| e.source == "prospeo"),
        "nothing charged for the rejected emails"
    );
    let a = h
        .store
        .attempts(&h.ws.id, &Harness::lead_id(leads[0]))
        .await
        .expect("attempts");
    let zb = a
        .iter()
        .find(|x| x.provider == "zerobounce")
        .expect("verifier attempt");
    assert_eq!(zb.outcome, OutcomeKind::Unusable);
    assert!(zb.detail.contains("invalid"), "{}", zb.detail);
}

#[tokio::test]
async fn a_stale_email_is_re_verified_not_bought_again() {
    let h = harness(1.0).await;
    let leads = plain(&h, 4);
    let old = chrono::Utc::now().timestamp_millis() - 120 * DAY_MS;
    let mut ops = Vec::new();
    for (k, i) in leads.iter().enumerate() {
        let p = h.population.person(*i);
        // The first two hold their true email; the others a wrong one.
        let value = if k < 2 {
            p.work_email.clone()
        } else {
            format!("nobody.{k}@{}", p.domain)
        };
        ops.push(WriteOp::Value {
            lead_id: Harness::lead_id(*i),
            value: ChannelValue {
                channel: Channel::WorkEmail,
                value,
                source: Source::provider("hunter"),
                verification: Verification::Verified,
                found_at: old,
                verified_at: Some(old),
            },
            charge: None,
        });
    }
    h.store.apply(&h.ws.id, &ops).await.expect("seed values");
    let report = h.run(leads.iter().map(|i| h.lead(*i)).collect()).await;
    for (k, i) in leads.iter().enumerate() {
        let id = Harness::lead_id(*i);
        let l = report.lead(id.as_str()).expect("lead");
        let v = h.store.values(&h.ws.id, &id).await.expect("values");
        if k < 2 {
            // Still deliverable: refreshed in place, nobody asked, nothing charged.
            assert!(l.filled.is_empty(), "{l:?}");
            assert_eq!(v[0].source.as_str(), "hunter");
            assert!(v[0].verified_at.is_some_and(|t| t > old));
        } else {
            // Rejected: another one is found and charged.
            assert_eq!(l.filled.len(), 1, "{}", l.reason);
            assert_eq!(v[0].value, h.population.person(*i).work_email);
            assert_eq!(l.credits, 1);
        }
    }
    assert_eq!(
        h.sim("zb").stats().requests,
        4 + 2,
        "4 re-checks, then 2 new pdl emails checked"
    );
}

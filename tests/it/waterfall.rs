//! The per-channel waterfall over real HTTP against three simulated
//! providers of different coverage.

use enrichd::core::channel::Channel;
use enrichd::core::status::EnrichmentStatus;
use enrichd_sim::{ProviderKind, ProviderProfile, Quality, SimChannel, SimOptions};

use crate::support::{Harness, HarnessBuilder};

fn q(coverage: f64) -> Quality {
    Quality::new(coverage, 1.0, 1.0, 0.0)
}

/// apollo (work email 30%, LinkedIn 40%), prospeo (work email 60%, phone
/// 50%), pdl (everything 90%, but emails without a status: unusable with no
/// verifier), in that order.
async fn three_providers(size: usize) -> Harness {
    use SimChannel::*;
    HarnessBuilder::new(size)
        .fast_provider(
            "apollo",
            ProviderKind::Apollo,
            SimOptions::defaults(ProviderKind::Apollo).with_profile(ProviderProfile::uniform(&[
                (WorkEmail, q(0.3)),
                (LinkedinUrl, q(0.4)),
            ])),
        )
        .fast_provider(
            "prospeo",
            ProviderKind::Prospeo,
            SimOptions::defaults(ProviderKind::Prospeo).with_profile(ProviderProfile::uniform(&[
                (WorkEmail, q(0.6)),
                (Phone, q(0.5)),
            ])),
        )
        .fast_provider(
            "pdl",
            ProviderKind::Pdl,
            SimOptions::defaults(ProviderKind::Pdl).with_profile(ProviderProfile::uniform(&[
                (WorkEmail, q(0.9)),
                (Phone, q(0.9)),
                (LinkedinUrl, q(0.9)),
            ])),
        )
        .workspace(
            r#"providers = ["apollo", "prospeo", "pdl"]
catch_all = "strict"
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "phone", "linkedin_url"]"#,
        )
        .start()
        .await
}

#[tokio::test]
async fn each_channel_is_filled_by_the_first_provider_holding_a_usable_value() {
    let h = three_providers(240).await;
    let report = h.run(h.leads(0..240)).await;
    assert_eq!(report.totals.leads, 240);
    let channels = [Channel::WorkEmail, Channel::Phone, Channel::LinkedinUrl];
    let mut filled = 0;
    let mut pdl_untouched = 0;
    for i in 0..240 {
        let id = Harness::lead_id(i);
        let lead = report.lead(id.as_str()).expect("lead in report");
        let attempts = h.store.attempts(&h.ws.id, &id).await.expect("attempts");
        for c in channels {
            // The oracle: the first provider in the channel's order whose
            // hidden record for this person passes the bar.
            let order = h.ws.order_for(c);
            let expected = order
                .iter()
                .find_map(|acc| h.usable_from(acc, i, c).map(|v| (acc.clone(), v)));
            let got = lead.filled.iter().find(|f| f.channel == c);
            match (&expected, got) {
                (Some((acc, value)), Some(f)) => {
                    assert_eq!(&f.source, acc, "lead {i} {c}: wrong Source");
                    assert_eq!(&f.value, value, "lead {i} {c}: wrong value");
                    filled += 1;
                    // Stored with its Source.
                    let stored = h.store.values(&h.ws.id, &id).await.expect("values");
                    let v = stored
                        .iter()
                        .find(|v| v.channel == c)
                        .expect("value stored");
                    assert_eq!(v.source.as_str(), acc);
                }
                (None, None) => {}
                (e, g) => panic!("lead {i} {c}: expected {e:?}, got {g:?}"),
            }
            // Nobody after the provider that filled the channel was asked for it.
            let asked: Vec<&str> = attempts
                .iter()
                .filter(|a| a.channel == c)
                .map(|a| a.provider.as_str())
                .collect();
            if let Some((acc, _)) = &expected {
                let pos = order.iter().position(|a| a == acc).expect("in order");
                for p in &asked {
                    let at = order
                        .iter()
                        .position(|a| a == p)
                        .expect("asked provider is in the order");
                    assert!(
                        at <= pos,
                        "lead {i} {c}: {p} asked after {acc} had filled it"
                    );
                }
                assert_eq!(
                    asked.last(),
                    Some(&acc.as_str()),
                    "lead {i} {c}: the filler is the last asked"
                );
            }
        }
        // When apollo and prospeo filled every channel, pdl never heard of the lead.
        let all_early = channels.iter().all(|c| {
            lead.filled
                .iter()
                .any(|f| f.channel == *c && (f.source == "apollo" || f.source == "prospeo"))
        });
        if all_early {
            assert_eq!(
                h.sim("pdl").stats().calls_for(i),
                0,
                "lead {i}: pdl called although nothing was missing"
            );
            pdl_untouched += 1;
        }
    }
    assert!(
        filled > 300,
        "the scenario should fill many channels, got {filled}"
    );
    assert!(
        pdl_untouched > 5,
        "the scenario should have leads pdl never sees, got {pdl_untouched}"
    );
    // Every provider had work to do.
    for acc in ["apollo", "prospeo", "pdl"] {
        assert!(
            report.providers[acc].values_supplied > 0,
            "{acc} supplied nothing"
        );
    }
    // Exactly one charge per stored value, at the workspace's prices.
    let ledger = h.store.ledger(&h.ws.id).await.expect("ledger");
    assert_eq!(ledger.len(), filled);
    let expected_credits: i64 = ledger.iter().map(|e| h.ws.prices.of(e.channel)).sum();
    assert_eq!(report.totals.credits_charged, expected_credits);
    // The report's provider spend is the spend ledger's.
    let spend = h.store.spend(&h.ws.id).await.expect("spend");
    for acc in ["apollo", "prospeo", "pdl"] {
        let ledger: i64 = spend
            .iter()
            .filter(|e| e.account == acc)
            .map(|e| e.amount)
            .sum();
        assert!(ledger > 0, "{acc} billed nothing");
        assert_eq!(report.providers[acc].spend_milli, ledger, "{acc}");
    }
}

#[tokio::test]
async fn re_running_a_full_lead_makes_no_call_and_charges_nothing() {
    let h = three_providers(120).await;
    let first = h.run(h.leads(0..120)).await;
    let full: Vec<usize> = (0..120)
        .filter(|i| {
            first
                .lead(Harness::lead_id(*i).as_str())
                .and_then(|l| l.status_after)
                == Some(EnrichmentStatus::Full)
        })
        .collect();
    assert!(
        full.len() >= 10,
        "need Full leads for this test, got {}",
        full.len()
    );
    let requests = h.total_requests();
    let ledger = h.store.ledger(&h.ws.id).await.expect("ledger").len();
    let again = h.run(full.iter().map(|i| h.lead(*i)).collect()).await;
    assert_eq!(
        h.total_requests(),
        requests,
        "no provider may be called for Full leads"
    );
    assert_eq!(again.totals.credits_charged, 0);
    assert_eq!(
        h.store.ledger(&h.ws.id).await.expect("ledger").len(),
        ledger
    );
    for l in &again.leads {
        assert_eq!(l.status_before, Some(EnrichmentStatus::Full));
        assert_eq!(l.provider_calls, 0);
    }
}

#[tokio::test]
async fn a_value_already_on_the_crm_record_is_not_searched_for() {
    let h = three_providers(20).await;
    let mut lead = h.lead(3);
    let p = h.population.person(3);
    lead.fields
        .insert("email".into(), p.work_email.clone().into());
    lead.fields.insert("phone".into(), p.phone.clone().into());
    lead.fields
        .insert("linkedin_url".into(), p.linkedin_url.clone().into());
    let report = h.run(vec![lead]).await;
    assert_eq!(h.total_requests(), 0);
    let l = &report.leads[0];
    assert_eq!(l.status_before, Some(EnrichmentStatus::Full));
    assert!(l.filled.is_empty());
}

#[tokio::test]
async fn changing_an_audience_enriches_only_what_is_newly_missing() {
    let ws = |channels: &str| {
        format!(
            "providers = [\"apollo\", \"prospeo\", \"pdl\"]\n[[workspaces.audiences]]\nname = \"everyone\"\nchannels = [{channels}]"
        )
    };
    let h = three_providers(80).await;
    let (email_only, engine) = h.reconfigure(&ws("\"work_email\""));
    engine
        .enrich(&email_only, h.leads(0..80), Default::default())
        .await
        .expect("run");
    let email_attempts = |attempts: &[enrichd::store::AttemptRecord]| {
        attempts
            .iter()
            .filter(|a| a.channel == Channel::WorkEmail)
            .count()
    };
    let mut before = Vec::new();
    for i in 0..80 {
        let a = h
            .store
            .attempts(&h.ws.id, &Harness::lead_id(i))
            .await
            .expect("attempts");
        assert!(
            a.iter().all(|a| a.channel == Channel::WorkEmail),
            "only work_email was configured"
        );
        before.push(email_attempts(&a));
    }
    let (with_linkedin, engine) = h.reconfigure(&ws("\"work_email\", \"linkedin_url\""));
    let report = engine
        .enrich(&with_linkedin, h.leads(0..80), Default::default())
        .await
        .expect("run");
    for (i, n) in before.iter().enumerate() {
        let a = h
            .store
            .attempts(&h.ws.id, &Harness::lead_id(i))
            .await
            .expect("attempts");
        assert_eq!(
            email_attempts(&a),
            *n,
            "lead {i}: work_email was asked again"
        );
    }
    let new_values: Vec<Channel> = report
        .leads
        .iter()
        .flat_map(|l| l.filled.iter().map(|f| f.channel))
        .collect();
    assert!(!new_values.is_empty());
    assert!(
        new_values.iter().all(|c| *c == Channel::LinkedinUrl),
        "{new_values:?}"
    );
}

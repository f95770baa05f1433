//! Every way a provider can fail charges nothing and falls through to the
//! next provider; a provider skipped for now defers the lead instead of
//! ending its waterfall.

use std::time::Duration;

use enrichd::core::channel::Channel;
use enrichd::core::outcome::OutcomeKind;
use enrichd::store::LeadState;
use enrichd_sim::{
    Fault, FaultKind, FaultScope, ProviderKind, ProviderProfile, SimChannel, SimOptions,
};

use crate::support::{Harness, HarnessBuilder};

const EMAIL_ONLY: &str = r#"
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]"#;

/// Provider `a` (under test) first, then `good`: a Prospeo that knows every
/// work email, verified.
async fn pair(a: ProviderKind, opts: SimOptions, extra: &str, n: usize) -> Harness {
    HarnessBuilder::new(n)
        .provider_with("a", a, opts, extra)
        .provider(
            "good",
            ProviderKind::Prospeo,
            SimOptions::defaults(ProviderKind::Prospeo)
                .with_profile(ProviderProfile::perfect(&[SimChannel::WorkEmail])),
        )
        .workspace(&format!(
            "providers = [\"a\", \"good\"]\ncatch_all = \"strict\"\n{EMAIL_ONLY}"
        ))
        .start()
        .await
}

fn perfect(kind: ProviderKind) -> SimOptions {
    SimOptions::defaults(kind).with_profile(ProviderProfile::perfect(&[SimChannel::WorkEmail]))
}

/// Leads at domains that are not catch-all (where a perfect provider's
/// answer is usable).
fn plain_leads(h: &Harness, n: usize) -> Vec<usize> {
    (0..h.population.len())
        .filter(|i| {
            !h.population
                .is_catch_all_domain(&h.population.person(*i).domain)
        })
        .take(n)
        .collect()
}

/// Runs the leads, then checks: `a` answered `kind` for each, charged
/// nothing, and `good` filled every lead.
async fn falls_through(h: &Harness, leads: &[usize], kind: OutcomeKind) {
    let report = h.run(leads.iter().map(|i| h.lead(*i)).collect()).await;
    for i in leads {
        let id = Harness::lead_id(*i);
        let l = report.lead(id.as_str()).expect("lead");
        assert_eq!(l.filled.len(), 1, "lead {i}: {l:?}");
        assert_eq!(
            l.filled[0].source, "prospeo",
            "lead {i}: filled by the next provider"
        );
        assert_eq!(l.state, LeadState::Done, "lead {i}: {}", l.reason);
        let attempts = h.store.attempts(&h.ws.id, &id).await.expect("attempts");
        let a: Vec<_> = attempts.iter().filter(|x| x.account == "a").collect();
        assert!(!a.is_empty(), "lead {i}: provider a was not asked");
        assert!(
            a.iter().all(|x| x.outcome == kind && x.credits == 0),
            "lead {i}: {a:?}"
        );
    }
    let ledger = h.store.ledger(&h.ws.id).await.expect("ledger");
    assert_eq!(ledger.len(), leads.len());
    assert!(
        ledger.iter().all(|e| e.source == "prospeo"),
        "only the good provider's values are charged"
    );
}

#[tokio::test]
async fn not_found_falls_through() {
    let h = pair(
        ProviderKind::Apollo,
        SimOptions::defaults(ProviderKind::Apollo).with_profile(ProviderProfile::empty()),
        "",
        40,
    )
    .await;
    let leads = plain_leads(&h, 10);
    falls_through(&h, &leads, OutcomeKind::NotFound).await;
}

#[tokio::test]
async fn an_unverified_email_is_unusable_without_a_verifier() {
    // PDL gives emails without any deliverability status.
    let h = pair(ProviderKind::Pdl, perfect(ProviderKind::Pdl), "", 40).await;
    let leads = plain_leads(&h, 10);
    falls_through(&h, &leads, OutcomeKind::Unusable).await;
    let id = Harness::lead_id(leads[0]);
    let a = h.store.attempts(&h.ws.id, &id).await.expect("attempts");
    assert!(a[0].detail.contains("not verified"), "{}", a[0].detail);
}

#[tokio::test]
async fn catch_all_is_unusable_under_the_strict_policy_and_usable_when_accepted() {
    let h = HarnessBuilder::new(400)
        .provider(
            "hunter",
            ProviderKind::Hunter,
            perfect(ProviderKind::Hunter),
        )
        .workspace(&format!(
            "providers = [\"hunter\"]\ncatch_all = \"strict\"\n{EMAIL_ONLY}"
        ))
        .start()
        .await;
    let catch_all: Vec<usize> = (0..400)
        .filter(|i| {
            h.population
                .is_catch_all_domain(&h.population.person(*i).domain)
        })
        .take(5)
        .collect();
    assert!(catch_all.len() >= 3, "population needs catch-all domains");
    let report = h.run(catch_all.iter().map(|i| h.lead(*i)).collect()).await;
    assert_eq!(report.totals.credits_charged, 0);
    assert!(h.store.ledger(&h.ws.id).await.expect("ledger").is_empty());
    for l in &report.leads {
        assert!(l.filled.is_empty());
        assert_eq!(
            l.unfilled[0].tried,
            vec![("hunter".to_string(), OutcomeKind::Unusable)]
        );
    }
    let a = h
        .store
        .attempts(&h.ws.id, &Harness::lead_id(catch_all[0]))
        .await
        .expect("attempts");
    assert!(a[0].detail.contains("catch-all"), "{}", a[0].detail);

    // The same leads under `accept`, on a fresh store: usable and charged.
    let h = HarnessBuilder::new(400)
        .provider(
            "hunter",
            ProviderKind::Hunter,
            perfect(ProviderKind::Hunter),
        )
        .workspace(&format!(
            "providers = [\"hunter\"]\ncatch_all = \"accept\"\n{EMAIL_ONLY}"
        ))
        .start()
        .await;
    let report = h.run(catch_all.iter().map(|i| h.lead(*i)).collect()).await;
    assert_eq!(report.totals.values_found, catch_all.len());
    assert_eq!(report.totals.credits_charged, catch_all.len() as i64);
}

#[tokio::test]
async fn out_of_credits_falls_through_and_the_account_is_left_alone() {
    let h = HarnessBuilder::new(60)
        .provider(
            "a",
            ProviderKind::Apollo,
            perfect(ProviderKind::Apollo).with_credits(Some(0)),
        )
        .provider(
            "good",
            ProviderKind::Prospeo,
            perfect(ProviderKind::Prospeo),
        )
        .workspace(&format!("providers = [\"a\", \"good\"]\n{EMAIL_ONLY}"))
        .engine("concurrency = 2")
        .start()
        .await;
    let leads = plain_leads(&h, 20);
    falls_through(&h, &leads, OutcomeKind::OutOfCredits).await;
    // The breaker stops asking an account that has no credits left: only the
    // requests already in flight when the first answer came were sent.
    let asked = h.sim("a").stats().requests;
    assert!(
        asked <= 2,
        "an account out of credits was asked {asked} times for 20 leads"
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_fall_through() {
    let h = pair(
        ProviderKind::Apollo,
        perfect(ProviderKind::Apollo),
        "max_retries = 2",
        40,
    )
    .await;
    h.sim("a").inject(Fault {
        kind: FaultKind::Status(503),
        scope: FaultScope::Always,
    });
    let leads = plain_leads(&h, 5);
    falls_through(&h, &leads, OutcomeKind::Transient).await;
    assert_eq!(
        h.sim("a").stats().requests,
        5 * 3,
        "one try and two retries per lead"
    );
}

#[tokio::test]
async fn a_malformed_body_falls_through() {
    let h = pair(
        ProviderKind::Apollo,
        perfect(ProviderKind::Apollo),
        "max_retries = 0",
        40,
    )
    .await;
    h.sim("a").inject(Fault {
        kind: FaultKind::MalformedBody,
        scope: FaultScope::Always,
    });
    let leads = plain_leads(&h, 5);
    falls_through(&h, &leads, OutcomeKind::Transient).await;
    let a = h
        .store
        .attempts(&h.ws.id, &Harness::lead_id(leads[0]))
        .await
        .expect("attempts");
    assert!(a[0].detail.contains("malformed"), "{}", a[0].detail);
}

#[tokio::test]
async fn a_timeout_falls_through() {
    let h = pair(
        ProviderKind::Apollo,
        perfect(ProviderKind::Apollo),
        "timeout_secs = 1\nmax_retries = 0",
        40,
    )
    .await;
    h.sim("a").inject(Fault {
        kind: FaultKind::Delay(Duration::from_millis(2500)),
        scope: FaultScope::Always,
    });
    let leads = plain_leads(&h, 4);
    falls_through(&h, &leads, OutcomeKind::Transient).await;
    let a = h
        .store
        .attempts(&h.ws.id, &Harness::lead_id(leads[0]))
        .await
        .expect("attempts");
    assert!(a[0].detail.contains("timeout"), "{}", a[0].detail);
}

#[tokio::test]
async fn a_provider_skipped_for_now_defers_the_lead_instead_of_ending_it() {
    // Only one provider, down: the lead is not "done", it is deferred.
    let h = HarnessBuilder::new(20)
        .provider_with(
            "a",
            ProviderKind::Apollo,
            perfect(ProviderKind::Apollo),
            "max_retries = 0",
        )
        .workspace(&format!("providers = [\"a\"]\n{EMAIL_ONLY}"))
        .start()
        .await;
    h.sim("a").inject(Fault {
        kind: FaultKind::Status(502),
        scope: FaultScope::Always,
    });
    let report = h.run(h.leads(0..3)).await;
    for l in &report.leads {
        assert_eq!(l.state, LeadState::Deferred, "{}", l.reason);
        assert!(l.unfilled[0].retry);
    }
    let statuses = h.store.statuses(&h.ws.id).await.expect("statuses");
    assert!(
        statuses
            .iter()
            .all(|s| s.state == LeadState::Deferred && s.retry_at.is_some())
    );
    // The provider recovers: the deferred leads are enriched on the next run.
    h.sim("a").clear_faults();
    let report = h.run(h.leads(0..3)).await;
    assert!(report.leads.iter().all(|l| l.state == LeadState::Done));
}

#[tokio::test]
async fn a_rate_limited_provider_is_retried_after_its_window() {
    // The simulated account allows 3 requests per 2 s, but enrichd was told a
    // much higher limit (a plan mismatch): Apollo answers 429 with
    // retry-after, which enrichd honours and then succeeds.
    let opts = perfect(ProviderKind::Apollo).with_limits(vec![(Duration::from_secs(2), 3)]);
    let h = HarnessBuilder::new(40)
        .provider_with(
            "a",
            ProviderKind::Apollo,
            opts,
            "max_retries = 4\nlimits = { per_minute = 6000 }",
        )
        .workspace(&format!("providers = [\"a\"]\n{EMAIL_ONLY}"))
        .start()
        .await;
    let leads = plain_leads(&h, 6);
    let report = h.run(leads.iter().map(|i| h.lead(*i)).collect()).await;
    assert!(
        h.sim("a").stats().rate_limited > 0,
        "the scenario must provoke 429s"
    );
    for l in &report.leads {
        assert_eq!(l.filled.len(), 1, "{}: {}", l.lead_id, l.reason);
        assert_eq!(l.filled[0].source, "apollo");
    }
    assert_eq!(report.totals.credits_charged, 6);
}

#[tokio::test]
async fn a_long_rate_limit_defers_the_lead_until_the_window_has_passed() {
    // 2 requests per 3 s window, but enrichd waits at most 1 s inline.
    let opts = perfect(ProviderKind::Apollo).with_limits(vec![(Duration::from_secs(3), 2)]);
    let h = HarnessBuilder::new(40)
        .provider_with(
            "a",
            ProviderKind::Apollo,
            opts,
            "limits = { per_minute = 6000 }",
        )
        .workspace(&format!("providers = [\"a\"]\n{EMAIL_ONLY}"))
        .engine("max_retry_wait_secs = 1")
        .start()
        .await;
    let leads = plain_leads(&h, 5);
    let report = h.run(leads.iter().map(|i| h.lead(*i)).collect()).await;
    let deferred: Vec<_> = report
        .leads
        .iter()
        .filter(|l| l.state == LeadState::Deferred)
        .collect();
    assert!(!deferred.is_empty(), "some leads must hit the limit");
    for l in &deferred {
        assert_eq!(
            l.unfilled[0].tried,
            vec![("a".to_string(), OutcomeKind::RateLimited)]
        );
        assert_eq!(l.credits, 0);
    }
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let retry: Vec<_> = deferred
        .iter()
        .map(|l| {
            let i: usize = l.lead_id.as_str()[1..].parse().expect("index");
            h.lead(i)
        })
        .take(2)
        .collect();
    let report = h.run(retry).await;
    for l in &report.leads {
        assert_eq!(l.filled.len(), 1, "{}: {}", l.lead_id, l.reason);
        assert_eq!(l.filled[0].channel, Channel::WorkEmail);
    }
}

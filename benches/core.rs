//! Core overhead per lead, without network: identity, audiences, what is
//! missing, the waterfall plan, classifying a provider answer, the
//! usability rules, charge keys and budget selection. Target: < 20 µs.
//!
//! Run: `cargo bench --bench core` (release build). Prints µs per lead.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd::config::Settings;
use enrichd::core::audience::membership;
use enrichd::core::channel::ChannelSet;
use enrichd::core::lead::{Identity, Lead, LeadId};
use enrichd::core::ledger::{BudgetCandidate, charge_key, select_within_budget};
use enrichd::core::outcome::ProviderOutcome;
use enrichd::core::plan::{ProviderView, Waterfall};
use enrichd::core::status::status;
use enrichd::core::usable::assess;
use enrichd::providers::{BatchOutcome, FindItem, HttpResponse};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config.toml")).expect("config.toml");
    let secrets: BTreeMap<String, String> = [
        "APOLLO_API_KEY",
        "HUNTER_API_KEY",
        "PDL_API_KEY",
        "FULLENRICH_API_KEY",
        "PROSPEO_API_KEY",
        "ZEROBOUNCE_API_KEY",
    ]
    .iter()
    .map(|k| (k.to_string(), "k".to_string()))
    .collect();
    let settings =
        Settings::from_str(&root.join("config.toml"), &text, &secrets).expect("valid config");
    let ws = settings.workspaces[0].clone();
    let apollo = enrichd::providers::build_finder(&settings.accounts["apollo"])
        .expect("build")
        .expect("finder");
    let found = HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: std::fs::read(root.join("fixtures/providers/apollo/match_found.json"))
            .expect("fixture"),
    };
    let population = enrichd_sim::Population::generate(3, 10_000);
    let leads: Vec<Lead> = population
        .people()
        .iter()
        .map(|p| Lead {
            id: LeadId(format!("p{}", p.index)),
            fields: p.crm_fields().into_iter().collect(),
        })
        .collect();
    let views: Vec<ProviderView> = ws
        .accounts()
        .into_iter()
        .filter_map(|acc| {
            let a = settings.accounts.get(&acc)?;
            Some(ProviderView {
                provider: a.connector.id.clone(),
                supplies: a.connector.supplies,
                accepts: true,
                account: acc,
            })
        })
        .collect();
    let policy = ws.usability();
    let ws = Arc::new(ws);

    let per_lead = |lead: &Lead| {
        let identity = Identity::from_lead(lead, &ws.fields);
        let m = membership(lead, &ws.audiences);
        let before = status(m.channels, ChannelSet::EMPTY);
        let mut wf = Waterfall::plan(m.channels, |c| ws.order_for(c), &views, &[], 0);
        let mut charged = 0i64;
        if let Some(call) = wf.next_call() {
            let items = [FindItem {
                key: lead.id.as_str(),
                identity: &identity,
                channels: call.channels,
            }];
            let out = black_box(apollo.classify_find(&items, &found));
            let cands = match out {
                BatchOutcome::Each(mut v) => match v.pop().map(|c| c.outcome) {
                    Some(ProviderOutcome::Found { values, .. }) => values,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            for c in call.channels.iter() {
                let usable = cands
                    .iter()
                    .filter(|v| v.channel == c)
                    .map(|v| assess(v, &policy, identity.country.as_deref()))
                    .find(|a| matches!(a, enrichd::core::usable::Assessment::Usable { .. }));
                let kind = match usable {
                    Some(enrichd::core::usable::Assessment::Usable { value, .. }) => {
                        black_box(charge_key(&lead.id, c, &value));
                        charged += ws.prices.of(c);
                        enrichd::core::outcome::OutcomeKind::Found
                    }
                    _ => enrichd::core::outcome::OutcomeKind::NotFound,
                };
                wf.record(&call.account, c, kind);
            }
        }
        black_box((before, wf.summary(), charged))
    };

    // Warm up, then measure batches.
    for l in leads.iter().take(1000) {
        per_lead(l);
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        for l in &leads {
            per_lead(l);
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6 / leads.len() as f64);
    }
    // Budget selection over the batch (per lead).
    let t = Instant::now();
    let cands: Vec<BudgetCandidate> = leads
        .iter()
        .map(|l| BudgetCandidate {
            lead: l.id.clone(),
            icp_score: l.number("icp_score").unwrap_or(0.0),
            worst_case: 11,
        })
        .collect();
    black_box(select_within_budget(cands, Some(11 * 2000)));
    let select_us = t.elapsed().as_secs_f64() * 1e6 / leads.len() as f64;

    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    println!(
        "core overhead per lead: median {median:.2} µs, best {:.2} µs over {} batches of {} leads; budget selection {select_us:.2} µs per lead; total {:.2} µs (target < 20 µs)",
        samples[0],
        samples.len(),
        leads.len(),
        median + select_us
    );
}

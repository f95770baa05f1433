//! A 10,000-lead preview from stored data: page through the stored leads,
//! load their values, attempts and what enrichd wrote, decide every mapped
//! field (the shipped config.toml workspace and mappings/hubspot.toml), and
//! render the table, JSON and CSV. Target: under 2 s.
//!
//! Run: `cargo bench --bench preview` (release build). Set
//! `PREVIEW_BENCH_LEADS` to change the size. Prints the median of 5 runs,
//! each step's share, and the ratio to the target.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use enrichd::config::Settings;
use enrichd::config::crm::CrmSettings;
use enrichd::core::channel::Channel;
use enrichd::core::lead::{Lead, LeadId};
use enrichd::core::outcome::OutcomeKind;
use enrichd::core::value::{ChannelValue, Source, Verification};
use enrichd::preview::render;
use enrichd::preview::run::{Filter, Options, Scope, preview_stored};
use enrichd::store::crm::Written;
use enrichd::store::{AttemptRecord, WriteOp};

const NOW: i64 = 1_773_489_600_000;
const TARGET: Duration = Duration::from_secs(2);

fn main() {
    let n: usize = std::env::var("PREVIEW_BENCH_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config.toml")).expect("config.toml");
    let secrets: BTreeMap<String, String> = [
        "APOLLO_API_KEY",
        "HUNTER_API_KEY",
        "PDL_API_KEY",
        "FULLENRICH_API_KEY",
        "PROSPEO_API_KEY",
        "ZEROBOUNCE_API_KEY",
        "HUBSPOT_CLIENT_ID",
        "HUBSPOT_CLIENT_SECRET",
    ]
    .iter()
    .map(|k| (k.to_string(), "k".to_string()))
    .collect();
    let settings =
        Settings::from_str(&root.join("config.toml"), &text, &secrets).expect("valid config");
    let ws = settings.workspaces[0].clone();
    let Some(CrmSettings::HubSpot(h)) = &ws.crm else {
        panic!("the shipped workspace has HubSpot");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = enrichd::store::open(&format!("sqlite://{}/bench.db", dir.path().display()))
        .await
        .expect("store");
    store.migrate().await.expect("migrate");

    // Stored data: leads as pulled, values for most, attempts, and what
    // enrichd wrote for a third of them.
    let population = enrichd_sim::Population::generate(7, n);
    let leads: Vec<(Lead, f64)> = population
        .people()
        .iter()
        .map(|p| {
            let mut lead = Lead {
                id: LeadId(format!("{:08}", p.index)),
                fields: p.crm_fields().into_iter().collect(),
            };
            if p.index % 3 == 0 {
                lead = lead
                    .with(
                        "enrichment_work_email",
                        format!("old{}@example.com", p.index),
                    )
                    .with("enrichment_work_email_source", "hunter");
            }
            (lead, 50.0)
        })
        .collect();
    let started = Instant::now();
    for chunk in leads.chunks(1_000) {
        store.upsert_leads(&ws.id, chunk, NOW).await.expect("leads");
    }
    let mut ops = Vec::new();
    let mut written = Vec::new();
    for (lead, _) in &leads {
        let i: usize = lead.id.as_str().parse().unwrap_or(0);
        if (i % 10) < 7 {
            for (c, v, src) in [
                (
                    Channel::WorkEmail,
                    format!("p{i}@acme{}.com", i % 97),
                    "apollo",
                ),
                (
                    Channel::LinkedinUrl,
                    format!("https://www.linkedin.com/in/person-{i}"),
                    "apollo",
                ),
            ] {
                ops.push(WriteOp::Value {
                    lead_id: lead.id.clone(),
                    value: ChannelValue {
                        channel: c,
                        value: v,
                        source: Source(src.into()),
                        verification: Verification::Verified,
                        found_at: NOW - 86_400_000,
                        verified_at: None,
                    },
                    charge: None,
                });
            }
        }
        ops.push(WriteOp::Attempt(AttemptRecord {
            run_id: "bench".into(),
            lead_id: lead.id.clone(),
            channel: Channel::Phone,
            provider: "prospeo".into(),
            account: "prospeo".into(),
            outcome: if i.is_multiple_of(2) {
                OutcomeKind::Found
            } else {
                OutcomeKind::NotFound
            },
            detail: String::new(),
            value: None,
            provider_cost: 0,
            credits: 0,
            http_status: Some(200),
            tries: 1,
            latency_ms: 0,
            at: NOW - 3_600_000,
        }));
        if i.is_multiple_of(3) {
            for (f, v) in [
                ("enrichment_work_email", format!("old{i}@example.com")),
                ("enrichment_work_email_source", "hunter".to_string()),
            ] {
                written.push(Written {
                    lead_id: lead.id.clone(),
                    field: f.into(),
                    value: v,
                });
            }
        }
        if ops.len() >= 2_000 {
            store.apply(&ws.id, &ops).await.expect("values");
            ops.clear();
        }
    }
    store.apply(&ws.id, &ops).await.expect("values");
    for chunk in written.chunks(1_000) {
        store
            .record_writes(&ws.id, chunk, &[], NOW)
            .await
            .expect("written");
    }
    println!(
        "stored {n} leads in {:.1} s (setup, not measured)",
        started.elapsed().as_secs_f64()
    );

    let file = h.mapping_file.display().to_string();
    let mut runs = Vec::new();
    let mut last = None;
    for estimate in [false, true] {
        let opts = Options {
            filter: Filter::default(),
            estimate,
        };
        let mut times = Vec::new();
        for _ in 0..5 {
            let t0 = Instant::now();
            let scope = Scope {
                settings: &settings,
                ws: &ws,
                mapping: &h.mapping,
                mapping_file: &file,
                store: &*store,
                now: NOW,
            };
            let p = preview_stored(scope, &opts, None).await.expect("preview");
            let t1 = Instant::now();
            let table = render::table(&p);
            let json = render::json(&p);
            let csv = render::csv(&p).expect("csv");
            let t2 = Instant::now();
            assert_eq!(p.summary.leads as usize, n);
            std::hint::black_box((table.len(), json.len(), csv.len()));
            times.push((t2 - t0, t1 - t0, t2 - t1));
            last = Some(p.summary.clone());
        }
        times.sort();
        let (total, decide, render) = times[times.len() / 2];
        println!(
            "preview of {n} leads{}: {:.3} s median of 5 (read + decide {:.3} s, render table+json+csv {:.3} s) · {:.2}× the 2 s target · {}",
            if estimate { " with --estimate" } else { "" },
            total.as_secs_f64(),
            decide.as_secs_f64(),
            render.as_secs_f64(),
            total.as_secs_f64() / TARGET.as_secs_f64(),
            if total < TARGET { "ok" } else { "OVER TARGET" }
        );
        runs.push(total);
    }
    if let Some(s) = last {
        println!(
            "summary: {} leads, {} with writes, {} field writes, statuses {:?}",
            s.leads, s.leads_with_writes, s.writes, s.status
        );
    }
}

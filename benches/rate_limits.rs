//! Limit compliance against simulators with realistic latency (300–800 ms)
//! and each provider's documented limits: every provider, in its own
//! workspace and at the same time, gets more leads than its limit allows,
//! and the simulator's log is read back. Target: the sustained request rate
//! to each provider is at least 95% of its limit, with zero 429 answers.
//!
//! Run: `cargo bench --bench rate_limits [-- <seconds>]` (default 75 s of
//! demand per provider; the per-minute windows need more than a minute).

#[path = "../tests/it/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use enrichd_sim::{ProviderKind, ProviderProfile, SimChannel, SimOptions};

struct Case {
    account: &'static str,
    kind: ProviderKind,
    opts: SimOptions,
    channel: &'static str,
    sim_channel: SimChannel,
    engine: &'static str,
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(75.0);
    let latency = (Duration::from_millis(300), Duration::from_millis(800));
    let cases = vec![
        Case {
            account: "apollo",
            kind: ProviderKind::Apollo,
            opts: SimOptions::defaults(ProviderKind::Apollo),
            channel: "work_email",
            sim_channel: SimChannel::WorkEmail,
            engine: "concurrency = 64",
        },
        Case {
            account: "hunter",
            kind: ProviderKind::Hunter,
            opts: SimOptions::defaults(ProviderKind::Hunter),
            channel: "work_email",
            sim_channel: SimChannel::WorkEmail,
            engine: "concurrency = 64",
        },
        Case {
            account: "pdl",
            kind: ProviderKind::Pdl,
            opts: SimOptions::defaults(ProviderKind::Pdl),
            channel: "phone",
            sim_channel: SimChannel::Phone,
            engine: "concurrency = 64",
        },
        // connectors/prospeo.toml carries the Starter plan's limits.
        Case {
            account: "prospeo",
            kind: ProviderKind::Prospeo,
            opts: SimOptions::prospeo_starter_plan(),
            channel: "work_email",
            sim_channel: SimChannel::WorkEmail,
            engine: "concurrency = 32",
        },
        // Async: submissions and polls share 60/min; no callbacks, so polling carries the load.
        Case {
            account: "fullenrich",
            kind: ProviderKind::FullEnrich,
            opts: SimOptions::defaults(ProviderKind::FullEnrich),
            channel: "work_email",
            sim_channel: SimChannel::WorkEmail,
            engine: "concurrency = 400\nbatch_window_ms = 20\npoll_interval_secs = 1\nasync_timeout_secs = 600",
        },
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut runs = Vec::new();
        for c in cases {
            let limits = c.opts.limits.clone();
            // The binding rate over this run: count/window for windows that fit
            // in it, count/run-length for longer ones (a day's quota may all
            // be used within the run).
            let rate = limits
                .iter()
                .map(|(w, n)| {
                    let w = w.as_secs_f64();
                    f64::from(*n) / if w <= seconds { w } else { seconds }
                })
                .fold(f64::INFINITY, f64::min);
            let leads = match c.kind {
                // One async request carries many leads: give it plenty.
                ProviderKind::FullEnrich => 4000,
                _ => (rate * seconds).ceil() as usize,
            };
            let opts = c
                .opts
                .with_latency(latency.0, latency.1)
                .with_processing_delay(Duration::from_secs(2))
                .with_profile(ProviderProfile::perfect(&[c.sim_channel]));
            let h = support::HarnessBuilder::new(leads)
                .provider_with(c.account, c.kind, opts, "timeout_secs = 5")
                .workspace(&format!(
                    "providers = [\"{}\"]\ncatch_all = \"accept\"\n[[workspaces.audiences]]\nname = \"all\"\nchannels = [\"{}\"]",
                    c.account, c.channel
                ))
                .engine(c.engine)
                .start()
                .await;
            runs.push(tokio::spawn(async move {
                let report = h.run(h.leads(0..leads)).await;
                (c.account, limits, rate, h.sim(c.account).stats(), report.totals.values_found, leads)
            }));
        }
        println!("provider     limit            requests  429s  sustained/limit  busiest window vs limit");
        let mut ok = true;
        for r in runs {
            let (account, limits, rate, stats, found, leads) = r.await.expect("run");
            // Steady state: from 5 s after the first request to 5 s before the last.
            let first = stats.log.first().map_or(0, |c| c.at_ms);
            let last = stats.log.last().map_or(0, |c| c.at_ms);
            let (from, to) = (first + 5_000, last.saturating_sub(5_000));
            let n = stats.log.iter().filter(|c| c.at_ms >= from && c.at_ms < to).count();
            let sustained = if to > from { n as f64 / ((to - from) as f64 / 1000.0) } else { 0.0 };
            let share = sustained / rate;
            let windows: Vec<String> = limits
                .iter()
                .map(|(w, lim)| format!("{}/{}s≤{}", stats.max_in_window(*w), w.as_secs(), lim))
                .collect();
            let over = limits.iter().any(|(w, lim)| stats.max_in_window(*w) > *lim);
            let lim: Vec<String> = limits.iter().map(|(w, n)| format!("{n}/{}s", w.as_secs())).collect();
            println!(
                "{account:<12} {:<16} {:>8}  {:>4}  {:>6.1}%          {}   ({found} values for {leads} leads over {:.0} s)",
                lim.join(","),
                stats.requests,
                stats.rate_limited,
                share * 100.0,
                windows.join(" "),
                (last - first) as f64 / 1000.0,
            );
            ok &= stats.rate_limited == 0 && !over && share >= 0.95;
        }
        println!("{}", if ok { "target met: every provider ≥ 95% of its limit, zero 429s" } else { "TARGET MISSED" });
    });
}

//! End-to-end throughput against simulators with zero latency: leads per
//! second through the whole engine (SQLite store, HTTP on loopback,
//! classification, charges, audit) and process CPU per lead. The simulators
//! run in this process, so the CPU figure includes their share.
//! Target: at least 5,000 leads/s on a 2-core machine.
//!
//! Run: `cargo bench --bench throughput [-- <leads>]`.

#[path = "../tests/it/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::Instant;

use enrichd_sim::{ProviderKind, ProviderProfile, Quality, SimChannel, SimOptions};

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let q = |c| Quality::new(c, 1.0, 1.0, 0.0);
        let h = support::HarnessBuilder::new(n)
            .fast_provider(
                "apollo",
                ProviderKind::Apollo,
                SimOptions::defaults(ProviderKind::Apollo)
                    .with_profile(ProviderProfile::uniform(&[(SimChannel::WorkEmail, q(0.9)), (SimChannel::LinkedinUrl, q(0.9))])),
            )
            .fast_provider(
                "hunter",
                ProviderKind::Hunter,
                SimOptions::defaults(ProviderKind::Hunter).with_profile(ProviderProfile::uniform(&[(SimChannel::WorkEmail, q(0.8))])),
            )
            .workspace(
                r#"providers = ["apollo", "hunter"]
catch_all = "accept"
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "linkedin_url"]"#,
            )
            .engine("concurrency = 1024")
            .start()
            .await;
        let leads = h.leads(0..n);
        let cpu0 = cpu_seconds();
        let t = Instant::now();
        let report = h.run(leads).await;
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let requests = h.total_requests();
        println!(
            "throughput: {n} leads in {secs:.2} s = {:.0} leads/s; {requests} provider requests ({:.2}/lead); {} values stored; CPU {:.1} µs per lead (engine + simulators + SQLite, {:.2} cores busy) on {} cores",
            n as f64 / secs,
            requests as f64 / n as f64,
            report.totals.values_found,
            cpu * 1e6 / n as f64,
            cpu / secs,
            std::thread::available_parallelism().map_or(0, |p| p.get()),
        );
    });
}

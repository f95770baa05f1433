//! Peak memory of `enrichd run` during a whole-workspace backfill: the
//! daemon's first sync pass over every HubSpot contact (pull, audiences,
//! waterfall over three providers, store, map, write-back), against the
//! simulators with every limit off and no added latency, so the pipeline
//! runs as fast as this machine allows and nothing waits on a limiter.
//!
//! `enrichd run` is the release binary in its own process; the simulators
//! run in this one, so the figures are the daemon's alone: its peak RSS
//! (`VmHWM` in `/proc/<pid>/status`) and its RSS at 10%, 25%, 50%, 75% and
//! 100% of the contacts written back. Target: at most 200 MB at 1,000,000
//! leads, and flat as the workspace grows: the peak at the largest size
//! within 25% of the peak at the smallest, and within one run RSS at 100%
//! within 10% of RSS at 25%.
//!
//! The smallest default size is 300,000: a smaller backfill ends while the
//! bounded pools are still filling (connections up to the engine's
//! concurrency per provider, SQLite page caches up to their size), so its
//! RSS is still rising when it ends (measured: 100,000 leads, 76 MB at 10%,
//! 95 MB at 100%) and its peak is below the steady state.
//!
//! Run: `cargo bench --bench backfill_rss [-- --sizes 300000,1000000]`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd::clock::SystemClock;
use enrichd::config::Settings;
use enrichd::config::crm::CrmSettings;
use enrichd::crm::hubspot::auth::{ConnectContext, connect};
use enrichd_sim::hubspot::{HubSpotData, HubSpotLimits, HubSpotOptions, start_hubspot};
use enrichd_sim::{Population, ProviderKind, SimOptions, SimServer};

const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const TARGET_MB: f64 = 200.0;
/// The largest size's peak may be at most this much above the smallest's.
const FLAT: f64 = 1.25;
/// Within one run, RSS at 100% of the pass may be at most this much above
/// RSS at 25%.
const WITHIN: f64 = 1.10;
const PROVIDERS: [(&str, ProviderKind); 3] = [
    ("apollo", ProviderKind::Apollo),
    ("hunter", ProviderKind::Hunter),
    ("pdl", ProviderKind::Pdl),
];

fn sizes() -> Vec<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![300_000, 1_000_000])
}

/// (VmRSS, VmHWM) of a process in MB.
fn rss_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn build_enrichd() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "enrichd",
            "--bin",
            "enrichd",
        ])
        .status()
        .expect("cargo build enrichd");
    assert!(status.success(), "building enrichd failed");
    // Next to this benchmark's own executable (target/release/deps/…), so a
    // CARGO_TARGET_DIR elsewhere works too.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("enrichd")))
        .expect("the target directory")
}

struct Outcome {
    size: usize,
    written: u64,
    wall: Duration,
    peak_mb: f64,
    /// (share of contacts written, RSS in MB) at 10/25/50/75/100%.
    marks: Vec<(f64, f64)>,
    provider_calls: u64,
}

fn main() {
    let bin = build_enrichd();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut outcomes = Vec::new();
    for size in sizes() {
        outcomes.push(rt.block_on(backfill(&bin, size)));
    }
    println!();
    println!(
        "| leads | written | wall | leads/s | provider calls | peak RSS | RSS at 10% / 25% / 50% / 75% / 100% |"
    );
    println!("|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let marks: Vec<String> = o.marks.iter().map(|(_, mb)| format!("{mb:.0}")).collect();
        println!(
            "| {} | {} | {:.0} s | {:.0} | {} | {:.1} MB | {} MB |",
            o.size,
            o.written,
            o.wall.as_secs_f64(),
            o.written as f64 / o.wall.as_secs_f64(),
            o.provider_calls,
            o.peak_mb,
            marks.join(" / "),
        );
    }
    let (Some(first), Some(last)) = (outcomes.first(), outcomes.last()) else {
        return;
    };
    let growth = last.peak_mb / first.peak_mb;
    // Within the largest run: RSS at 100% against RSS at 25%.
    let within = match (last.marks.get(1), last.marks.last()) {
        (Some((_, at25)), Some((_, at100))) if *at25 > 0.0 => at100 / at25,
        _ => f64::NAN,
    };
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    let complete = outcomes.iter().all(|o| o.written >= o.size as u64);
    println!(
        "peak at {} leads: {:.1} MB (target ≤ {TARGET_MB:.0} MB: {}); {:.2}× the peak at {} leads (flat ≤ {FLAT}×: {}); RSS at 100% {:.2}× RSS at 25% (≤ {WITHIN}×: {}); every contact written back: {}",
        last.size,
        last.peak_mb,
        verdict(last.peak_mb <= TARGET_MB),
        growth,
        first.size,
        verdict(growth <= FLAT),
        within,
        verdict(within <= WITHIN),
        if complete { "yes" } else { "NO" },
    );
}

async fn backfill(bin: &Path, size: usize) -> Outcome {
    let t = Instant::now();
    let population = Arc::new(Population::generate(11, size));
    let mut sims: Vec<(&str, SimServer)> = Vec::new();
    for (account, kind) in PROVIDERS {
        let sim = enrichd_sim::start(
            kind,
            population.clone(),
            SimOptions::defaults(kind)
                .unlimited()
                .with_latency(Duration::ZERO, Duration::ZERO),
        )
        .await
        .expect("provider simulator");
        sims.push((account, sim));
    }
    let base_ms = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let hs = start_hubspot(
        HubSpotData::from_population(&population, base_ms, 0.0),
        HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited()),
    )
    .await
    .expect("HubSpot simulator");
    eprintln!(
        "{size} leads: simulators up in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("mappings")).expect("mappings");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/hubspot.toml"),
        dir.path().join("mappings/hubspot.toml"),
    )
    .expect("mapping");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let limits = "limits = { per_second = 1000000, per_minute = 60000000, per_hour = 3600000000, per_day = 2000000000 }";
    let mut toml = format!(
        r#"[storage]
url = "sqlite://{db}"
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
shutdown_grace_secs = 5
[security]
master_key_env = "KEY"
"#,
        db = dir.path().join("bench.db").display(),
    );
    let mut env: Vec<(String, String)> = vec![("KEY".into(), MASTER_KEY.into())];
    for (account, sim) in &sims {
        let var = format!("KEY_{}", account.to_uppercase());
        toml.push_str(&format!(
            "[providers.{account}]\napi_key_env = \"{var}\"\nbase_url = \"{}\"\n{limits}\n",
            sim.base_url()
        ));
        env.push((var, sim.api_key().to_string()));
    }
    toml.push_str(&format!(
        r#"[[workspaces]]
id = "bench"
providers = ["apollo", "hunter", "pdl"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email", "phone", "linkedin_url"]
[workspaces.crm]
kind = "hubspot"
auth_url = "{u}"
api_url = "{u}"
client_id_env = "HS_ID"
client_secret_env = "HS_SECRET"
redirect_uri = "http://127.0.0.1:0/oauth/callback"
sync_interval_secs = 86400
limits = {{ ten_secondly = 100000000, search_per_second = 10000000 }}
"#,
        u = hs.base_url(),
    ));
    env.push(("HS_ID".into(), hs.options().client_id.clone()));
    env.push(("HS_SECRET".into(), hs.options().client_secret.clone()));
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &toml).expect("write config");

    // Connect once (the real OAuth flow against the simulator), then leave
    // the database to the daemon.
    {
        let secrets: std::collections::BTreeMap<String, String> = env.iter().cloned().collect();
        let settings = Settings::from_str(&path, &toml, &secrets).expect("config");
        let ws = settings.workspace("bench").expect("workspace").clone();
        let store = enrichd::store::open(&settings.storage_url)
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        let Some(CrmSettings::HubSpot(h)) = &ws.crm else {
            panic!("the bench workspace has HubSpot");
        };
        let cipher = enrichd::crypto::TokenCipher::from_key_text("KEY", MASTER_KEY).expect("key");
        connect(
            &ConnectContext {
                ws: &ws.id,
                settings: h,
                store: &store,
                cipher: Some(&cipher),
                clock: &SystemClock,
                http: &reqwest::Client::new(),
                wait: Duration::from_secs(30),
            },
            |url: String| async move {
                let _ = reqwest::Client::new().get(&url).send().await;
            },
        )
        .await
        .expect("connect");
        drop(store);
    }

    let log = std::fs::File::create(dir.path().join("run.log")).expect("log file");
    // BENCH_WRAP="heaptrack -o /tmp/run" runs the daemon under a profiler
    // (the RSS figures are then the wrapper's, not comparable).
    let wrap: Vec<String> = std::env::var("BENCH_WRAP")
        .map(|w| w.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let mut command = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child: Child = command
        .arg("--config")
        .arg(&path)
        .arg("run")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(log.try_clone().expect("log file")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start enrichd run");
    let pid = child.id();

    let start = Instant::now();
    let mut marks: Vec<(f64, f64)> = Vec::new();
    let steps = [0.10, 0.25, 0.50, 0.75, 1.0];
    let mut peak = 0.0_f64;
    let mut last_progress = (0_u64, Instant::now());
    let written = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let written = hs.stats().records_updated;
        let Some((rss, hwm)) = rss_mb(pid) else {
            eprintln!("enrichd run exited early; log in {}", dir.path().display());
            break written;
        };
        peak = peak.max(hwm);
        let share = written as f64 / size as f64;
        while marks.len() < steps.len() && share >= steps[marks.len()] {
            marks.push((steps[marks.len()], rss));
            eprintln!(
                "{size} leads: {:.0}% written after {:.0} s, RSS {rss:.1} MB (peak {hwm:.1} MB)",
                share * 100.0,
                start.elapsed().as_secs_f64()
            );
        }
        if written >= size as u64 {
            break written;
        }
        if written > last_progress.0 {
            last_progress = (written, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(120) {
            eprintln!("{size} leads: no progress for 120 s at {written} written");
            break written;
        }
    };
    let wall = start.elapsed();
    if let Some((_, hwm)) = rss_mb(pid) {
        peak = peak.max(hwm);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    if written < size as u64 {
        let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!(
            "last log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let provider_calls = sims.iter().map(|(_, s)| s.stats().requests).sum();
    for (_, sim) in sims {
        sim.shutdown().await;
    }
    hs.shutdown().await;
    Outcome {
        size,
        written,
        wall,
        peak_mb: peak,
        marks,
        provider_calls,
    }
}

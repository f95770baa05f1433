//! The HubSpot connector against the HubSpot simulator run as a separate
//! process (so this process's peak RSS is the client's alone), at HubSpot's
//! limits: 110 requests per 10 s, 5 searches per second, and a fixed
//! latency per call (200 ms by default).
//!
//! 1. Pull-only backfill of every contact: wall time, calls per contact,
//!    429s, peak RSS. (Open-source peers take 128–170 s at these limits with
//!    no latency; the general bucket alone allows 90 s, both buckets about
//!    48 s. Target: 55 s.)
//! 2. Pull plus write-back of already-stored results, pipelined: wall time
//!    against the floor the limits allow for the calls made
//!    (max(general calls / 11 per s, searches / 5 per s)).
//! 3. Incremental sync after 1% of contacts changed: calls.
//!
//! Run: `cargo bench --bench hubspot [-- --contacts 100000 --latency-ms 200]`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd::clock::{Clock, SystemClock};
use enrichd::config::{Settings, crm::CrmSettings};
use enrichd::core::channel::Channel;
use enrichd::core::lead::LeadId;
use enrichd::core::value::{ChannelValue, Source, Verification};
use enrichd::crm::hubspot::auth::{ConnectContext, connect};
use enrichd::crm::hubspot::sync::{HubSpot, SyncOptions};
use enrichd::store::WriteOp;
use enrichd_sim::hubspot::{Bucket, HubSpotStats};
use serde_json::Value;

const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Sim {
    child: std::process::Child,
    info: Value,
    http: reqwest::Client,
}

impl Sim {
    fn base(&self) -> &str {
        self.info["base_url"].as_str().expect("base_url")
    }
    async fn stats(&self) -> HubSpotStats {
        let r = self
            .http
            .get(format!("{}/_sim/stats?log=true", self.base()))
            .send()
            .await
            .expect("stats");
        serde_json::from_slice(&r.bytes().await.expect("stats body")).expect("stats json")
    }
    async fn reset(&self) {
        self.http
            .post(format!("{}/_sim/stats/reset", self.base()))
            .send()
            .await
            .expect("reset");
    }
    async fn edit(&self, id: &str) {
        self.http
            .post(format!("{}/_sim/contacts/{id}/human-edit", self.base()))
            .header("content-type", "application/json")
            .body(r#"{"jobtitle":"Head of Revenue"}"#)
            .send()
            .await
            .expect("edit");
    }
}

/// Accepted and refused calls per bucket, the busiest windows, and the
/// floor the limits allow for the calls made.
struct Calls {
    general: u64,
    search: u64,
    exempt: u64,
    limited: u64,
    max_10s: u32,
    max_1s_search: u32,
    floor: f64,
}

fn calls(stats: &HubSpotStats) -> Calls {
    let n = |b: Bucket| stats.log.iter().filter(|c| c.bucket == b).count() as u64;
    let (general, search) = (n(Bucket::General), n(Bucket::Search));
    Calls {
        general,
        search,
        exempt: n(Bucket::Exempt),
        limited: stats.rate_limited.values().sum(),
        max_10s: stats.max_in_window(Bucket::General, Duration::from_secs(10)),
        max_1s_search: stats.max_in_window(Bucket::Search, Duration::from_secs(1)),
        floor: (general as f64 / 11.0).max(search as f64 / 5.0),
    }
}

fn main() {
    let contacts = arg("--contacts", 100_000) as usize;
    let latency = arg("--latency-ms", 200);
    // The simulator, built and started out of process.
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "enrichd-sim",
            "--bin",
            "enrichd-sim",
        ])
        .status()
        .expect("cargo build enrichd-sim");
    assert!(status.success());
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/enrichd-sim");
    let mut child = Command::new(bin)
        .args([
            "hubspot",
            "--contacts",
            &contacts.to_string(),
            "--seed",
            "7",
            "--latency-ms",
            &latency.to_string(),
            "--ten-secondly",
            "110",
            "--search-per-second",
            "5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start simulator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("simulator line");
    let info: Value = serde_json::from_str(&line).expect("simulator json");
    let sim = Sim {
        child,
        info,
        http: reqwest::Client::new(),
    };

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("mappings")).expect("mappings");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/hubspot.toml"),
        dir.path().join("mappings/hubspot.toml"),
    )
    .expect("mapping");
    let toml = format!(
        r#"[storage]
url = "sqlite://{db}"
[security]
master_key_env = "KEY"
[providers.apollo]
api_key_env = "APOLLO"
base_url = "http://127.0.0.1:9"
[[workspaces]]
id = "bench"
providers = ["apollo"]
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]
[workspaces.crm]
kind = "hubspot"
auth_url = "{u}"
api_url = "{u}"
client_id_env = "HS_ID"
client_secret_env = "HS_SECRET"
redirect_uri = "http://127.0.0.1:0/oauth/callback"
limits = {{ ten_secondly = 110, search_per_second = 5 }}
"#,
        db = dir.path().join("bench.db").display(),
        u = sim.base(),
    );
    let path = dir.path().join("config.toml");
    let secrets: std::collections::BTreeMap<String, String> = [
        ("KEY", MASTER_KEY.to_string()),
        ("APOLLO", "unused".to_string()),
        (
            "HS_ID",
            sim.info["client_id"].as_str().unwrap_or("").to_string(),
        ),
        (
            "HS_SECRET",
            sim.info["client_secret"].as_str().unwrap_or("").to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings = Settings::from_str(&path, &toml, &secrets).expect("config");
    let ws = settings.workspace("bench").expect("ws").clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = enrichd::store::open(&settings.storage_url).await.expect("store");
        store.migrate().await.expect("migrate");
        let Some(CrmSettings::HubSpot(h)) = &ws.crm else { unreachable!() };
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
                reqwest::Client::new().get(&url).send().await.expect("browser");
            },
        )
        .await
        .expect("connect");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let hub = HubSpot::open(&settings, &ws, store.clone(), clock.clone()).expect("open").expect("hubspot");

        // 1. Pull-only backfill.
        sim.reset().await;
        let rss_before = peak_rss_mb();
        let t = Instant::now();
        let r = hub
            .sync(None, SyncOptions { full: true, enrich: false, write: false })
            .await
            .expect("backfill");
        let secs = t.elapsed().as_secs_f64();
        let stats = sim.stats().await;
        let c = calls(&stats);
        let api = c.general + c.search + c.exempt;
        println!(
            "backfill: {} contacts in {secs:.1} s ({} by batch read, {} from search, {} from list, {} search restarts, {} company list pages, {} company batch reads); \
             {api} API calls = {:.4} per contact (general {}, search {}, exempt {}); limits floor for these calls {:.1} s; \
             429s {}; busiest 10 s {} / 110, busiest search second {} / 5; peak RSS {:.1} MB (before {:.1} MB)",
            r.pull.contacts,
            r.pull.from_batch_read,
            r.pull.from_search,
            r.pull.from_list,
            r.pull.search_restarts,
            stats.count("GET /crm/v3/objects/companies"),
            stats.count("POST /crm/v3/objects/companies/batch/read"),
            api as f64 / r.pull.contacts.max(1) as f64,
            c.general,
            c.search,
            c.exempt,
            c.floor,
            c.limited,
            c.max_10s,
            c.max_1s_search,
            peak_rss_mb(),
            rss_before,
        );
        assert_eq!(r.pull.contacts as usize, contacts, "every contact once");

        // 3. Incremental after 1% changed.
        let step = 100;
        let mut touched = 0;
        for i in (0..contacts).step_by(step) {
            // Contact ids start at 101 in creation order.
            sim.edit(&(101 + i).to_string()).await;
            touched += 1;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        sim.reset().await;
        let t = Instant::now();
        let r = hub
            .sync(None, SyncOptions { full: false, enrich: false, write: false })
            .await
            .expect("incremental");
        let stats = sim.stats().await;
        let c = calls(&stats);
        println!(
            "incremental after {touched} changed ({}%): {} contacts read with {} API calls in {:.1} s ({:?}); 429s {}",
            touched * 100 / contacts.max(1),
            r.pull.contacts,
            c.general + c.search + c.exempt,
            t.elapsed().as_secs_f64(),
            stats.by_endpoint,
            c.limited,
        );

        // 2. Pull + write-back of stored results, pipelined.
        let now = clock.now();
        let mut ops = Vec::new();
        for i in 0..contacts {
            let id = LeadId((101 + i).to_string());
            ops.push(WriteOp::Value {
                lead_id: id.clone(),
                value: ChannelValue {
                    channel: Channel::WorkEmail,
                    value: format!("person{i}@example.com"),
                    source: Source::provider("apollo"),
                    verification: Verification::Verified,
                    found_at: now,
                    verified_at: Some(now),
                },
                charge: None,
            });
            if ops.len() == 5_000 {
                store.apply(&ws.id, &ops).await.expect("seed values");
                ops.clear();
            }
        }
        store.apply(&ws.id, &ops).await.expect("seed values");
        hub.ensure_schema().await.expect("schema");
        sim.reset().await;
        let t = Instant::now();
        let r = hub
            .sync(None, SyncOptions { full: true, enrich: false, write: true })
            .await
            .expect("pull + write");
        let secs = t.elapsed().as_secs_f64();
        let stats = sim.stats().await;
        let c = calls(&stats);
        println!(
            "pull + write-back: {} contacts read, {} written in {} batch calls, in {secs:.1} s; API calls general {}, \
             search {}, exempt {}; limits floor {:.1} s → {:.3} × floor; 429s {}; busiest 10 s {} / 110; failures {}",
            r.pull.contacts,
            r.write.records_written,
            stats.count("POST /crm/v3/objects/contacts/batch/update"),
            c.general,
            c.search,
            c.exempt,
            c.floor,
            secs / c.floor,
            c.limited,
            c.max_10s,
            r.failures.len(),
        );
    });
    let mut child = sim.child;
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

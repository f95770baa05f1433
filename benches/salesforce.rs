//! The Salesforce connector against the Salesforce simulator run as a
//! separate process (`enrichd-sim salesforce`), so the client's figures
//! (wall time, CPU) are its own.
//!
//! 1. **Pull only**: every Lead of an org of `--pull-leads` (10,000) Leads,
//!    no added latency, `--reps` times (each a full pass: `full = true`
//!    ignores the watermark), through `SalesforceSync::sync` with neither
//!    enrichment nor write-back (the leads are stored, as in a real pass).
//!    Reference: singer tap-salesforce reads 10,000 Leads in 5 query calls
//!    and about 4.3 s on this machine (2,326 records/s). Target: the same
//!    call count (10,000 / 2,000 per page) and at least 4× its records per
//!    second (≤ 1.07 s for 10,000). The median of the repetitions is
//!    compared; a read-only variant (a dry-run puller whose pages are
//!    dropped, nothing stored) is shown beside it.
//! 2. **Backfill**: a `--leads` (100,000) Lead org with `--latency-ms` (75)
//!    per API call and its limits on (the daily allocation, 100,000 by
//!    default, and the concurrent long-running request limit, 25 above
//!    20 s): one pass that pulls, enriches against the provider simulators
//!    (in this process, limits off, no latency) and writes back. API calls
//!    per Lead next to the floor (1/2000 query + 1/200 Collections write =
//!    0.0055 per Lead; Bulk 2.0 when the pass goes through it, whose calls
//!    are reported), wall time, and zero limit errors (403
//!    REQUEST_LIMIT_EXCEEDED, daily or concurrent, as the simulator counts
//!    them). `--no-enrich` skips enrichment: a pull-only pass stores the
//!    Leads, a work email is stored for each, and the measured pass is pull
//!    + write-back of those.
//!
//! 3. **Daily allocation binding**: a `--daily-leads` (100,000) Lead org
//!    whose allocation (`--daily-allocation`, 300 calls per rolling 24 h)
//!    is smaller than one pass needs (50 query pages + 500 Collections
//!    calls): each simulated day a `full` pass writes every Lead's status
//!    until the client's gate stops it at the stop share (80%); then the
//!    simulator's and enrichd's clocks move 24 h and the next day's pass
//!    goes on. Per day: calls in the window against the allocation. Targets:
//!    no day above the stop share plus the writes already in flight, zero
//!    403 REQUEST_LIMIT_EXCEEDED, every Lead written exactly once, and no
//!    more days than the minimum (each day re-reads the query pages, as a
//!    pass commits only when it finishes).
//!
//! Run: `cargo bench --bench salesforce [-- --leads 100000 --latency-ms 75
//! --pull-leads 10000 --reps 5 --no-enrich --bulk-threshold 2000
//! --daily-limit 100000 --bulk-delay-ms 30 --daily-leads 100000
//! --daily-allocation 300 --daily-latency-ms 20 --skip-pull --skip-backfill
//! --skip-daily]`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enrichd::clock::{Clock, ManualClock, SystemClock};
use enrichd::config::crm::CrmSettings;
use enrichd::config::{Settings, Workspace};
use enrichd::core::channel::Channel;
use enrichd::core::lead::{Lead, LeadId, WorkspaceId};
use enrichd::core::value::{ChannelValue, Source, Verification};
use enrichd::crm::salesforce::auth;
use enrichd::crm::salesforce::pull::PageSink;
use enrichd::crm::salesforce::sync::{SalesforceSync, SyncOptions, SyncReport};
use enrichd::crm::salesforce::writeback::BULK_JOB_RECORDS;
use enrichd::crm::salesforce::{SObject, SalesforceError};
use enrichd::engine::{Engine, EngineOptions};
use enrichd::store::{Store, WriteOp};
use enrichd_sim::salesforce::SalesforceStats;
use enrichd_sim::{Population, ProviderKind, SimOptions, SimServer};
use serde_json::Value;

const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// singer tap-salesforce on this machine: 10,000 Leads, 5 query calls, 4.3 s.
const TAP_RECORDS: f64 = 10_000.0;
const TAP_SECS: f64 = 4.3;
const TAP_QUERY_CALLS: u64 = 5;
const SPEEDUP: f64 = 4.0;
const PAGE: u64 = 2_000;
const DAY_MS: i64 = 24 * 3_600_000 + 60_000;
const COLLECTION: u64 = 200;
/// Bulk API 2.0 calls a job takes at least: create, upload, close, one poll.
const BULK_JOB_CALLS: u64 = 4;
const PROVIDERS: [(&str, ProviderKind); 3] = [
    ("apollo", ProviderKind::Apollo),
    ("hunter", ProviderKind::Hunter),
    ("pdl", ProviderKind::Pdl),
];

fn args() -> Vec<String> {
    std::env::args().collect()
}

fn arg(name: &str, default: u64) -> u64 {
    let args = args();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn opt(name: &str) -> Option<u64> {
    let args = args();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn flag(name: &str) -> bool {
    args().iter().any(|a| a == name)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn sim_binary() -> std::path::PathBuf {
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
    assert!(status.success(), "building enrichd-sim failed");
    // Next to this benchmark's own executable (target/release/deps/…).
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("enrichd-sim")))
        .expect("the target directory")
}

/// The Salesforce simulator in its own process.
struct Sim {
    child: Child,
    info: Value,
    http: reqwest::Client,
}

impl Sim {
    fn start(bin: &Path, extra: &[String]) -> Sim {
        let mut child = Command::new(bin)
            .arg("salesforce")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start simulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("simulator line");
        let info: Value = serde_json::from_str(&line).expect("simulator json");
        Sim {
            child,
            info,
            http: reqwest::Client::new(),
        }
    }
    fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap_or_default().to_string()
    }
    async fn stats(&self) -> SalesforceStats {
        let r = self
            .http
            .get(format!("{}/_sim/stats", self.s("instance_url")))
            .send()
            .await
            .expect("stats");
        serde_json::from_slice(&r.bytes().await.expect("stats body")).expect("stats json")
    }
    async fn reset(&self) {
        self.http
            .post(format!("{}/_sim/stats/reset", self.s("instance_url")))
            .send()
            .await
            .expect("reset");
    }
    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A workspace connected to the simulator (the real web-server flow).
struct Conn {
    _dir: tempfile::TempDir,
    ws: Arc<Workspace>,
    store: Arc<dyn Store>,
    sync: SalesforceSync,
    engine: Option<Arc<Engine>>,
}

async fn connect(
    sim: &Sim,
    providers: &[(&str, SimServer)],
    bulk_threshold: Option<u64>,
    clock: Arc<dyn Clock>,
) -> Conn {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("mappings")).expect("mappings");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/salesforce.toml"),
        dir.path().join("mappings/salesforce.toml"),
    )
    .expect("mapping");
    let mut secrets: BTreeMap<String, String> = BTreeMap::new();
    secrets.insert("KEY".into(), MASTER_KEY.into());
    secrets.insert("SF_ID".into(), sim.s("client_id"));
    secrets.insert("SF_SECRET".into(), sim.s("client_secret"));
    let mut toml = format!(
        "[storage]\nurl = \"sqlite://{}\"\n[security]\nmaster_key_env = \"KEY\"\n",
        dir.path().join("bench.db").display()
    );
    let limits = "limits = { per_second = 1000000, per_minute = 60000000, per_hour = 3600000000, per_day = 2000000000 }";
    let names: Vec<&str> = if providers.is_empty() {
        secrets.insert("KEY_APOLLO".into(), "unused".into());
        toml.push_str(
            "[providers.apollo]\napi_key_env = \"KEY_APOLLO\"\nbase_url = \"http://127.0.0.1:9\"\n",
        );
        vec!["apollo"]
    } else {
        for (account, s) in providers {
            let var = format!("KEY_{}", account.to_uppercase());
            toml.push_str(&format!(
                "[providers.{account}]\napi_key_env = \"{var}\"\nbase_url = \"{}\"\n{limits}\n",
                s.base_url()
            ));
            secrets.insert(var, s.api_key().to_string());
        }
        providers.iter().map(|(a, _)| *a).collect()
    };
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    toml.push_str(&format!(
        r#"[[workspaces]]
id = "bench"
providers = [{}]
[[workspaces.audiences]]
name = "everyone"
channels = [{}]
[workspaces.crm]
kind = "salesforce"
login_url = "{}"
client_id_env = "SF_ID"
client_secret_env = "SF_SECRET"
redirect_uri = "http://127.0.0.1:0/oauth/callback"
timeout_secs = 60
max_retries = 3
"#,
        list.join(", "),
        if providers.is_empty() {
            r#""work_email""#
        } else {
            r#""work_email", "phone", "linkedin_url""#
        },
        sim.s("login_url"),
    ));
    if let Some(t) = bulk_threshold {
        toml.push_str(&format!("bulk_threshold = {t}\n"));
    }
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &toml).expect("write config");
    let settings = match Settings::from_str(&path, &toml, &secrets) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("bench config invalid:\n{e}\n---\n{toml}"),
    };
    let ws = settings.workspace("bench").expect("workspace").clone();
    let store = enrichd::store::open(&settings.storage_url)
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    let Some(CrmSettings::Salesforce(s)) = &ws.crm else {
        panic!("the bench workspace has Salesforce");
    };
    let cipher = enrichd::crypto::TokenCipher::from_key_text("KEY", MASTER_KEY).expect("key");
    let http = auth::http_client(Duration::from_secs(30)).expect("http");
    auth::connect(
        &auth::ConnectContext {
            ws: &ws.id,
            settings: s,
            store: &store,
            cipher: Some(&cipher),
            clock: &SystemClock,
            http: &http,
            wait: Duration::from_secs(30),
        },
        |url: String| async move {
            // The browser follows Salesforce's 302 to enrichd's loopback.
            reqwest::Client::new()
                .get(&url)
                .send()
                .await
                .expect("browser");
        },
    )
    .await
    .expect("connect");
    let sync = SalesforceSync::open(&settings, &ws, store.clone(), clock.clone())
        .expect("open")
        .expect("salesforce");
    let engine = (!providers.is_empty()).then(|| {
        Arc::new(
            Engine::new(
                settings.clone(),
                store.clone(),
                clock,
                EngineOptions::default(),
            )
            .expect("engine"),
        )
    });
    Conn {
        _dir: dir,
        ws,
        store,
        sync,
        engine,
    }
}

/// Drops every page (read-only timing) or stores it and keeps the Ids.
struct Sink {
    store: Option<(Arc<dyn Store>, WorkspaceId)>,
    ids: Mutex<Vec<LeadId>>,
}

impl PageSink for Sink {
    fn page(
        &self,
        leads: Vec<Lead>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), SalesforceError>> + Send + '_>> {
        Box::pin(async move {
            let Some((store, ws)) = &self.store else {
                return Ok(());
            };
            self.ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(leads.iter().map(|l| l.id.clone()));
            let rows: Vec<(Lead, f64)> = leads.into_iter().map(|l| (l, 0.0)).collect();
            store
                .upsert_leads(ws, &rows, chrono::Utc::now().timestamp_millis())
                .await?;
            Ok(())
        })
    }
}

struct PullRun {
    secs: f64,
    records: u64,
    query_calls: u64,
    api_calls: u64,
}

struct PullOutcome {
    leads: usize,
    runs: Vec<PullRun>,
    read_only: Vec<PullRun>,
}

async fn pull_only(bin: &Path, leads: usize, reps: usize, seed: u64) -> PullOutcome {
    let sim = Sim::start(
        bin,
        &[
            "--leads".into(),
            leads.to_string(),
            "--contacts".into(),
            "0".into(),
            "--converted-share".into(),
            "0".into(),
            "--seed".into(),
            seed.to_string(),
            "--latency-ms".into(),
            "0".into(),
        ],
    );
    let c = connect(&sim, &[], None, Arc::new(SystemClock)).await;
    let mut runs = Vec::new();
    for rep in 0..reps {
        sim.reset().await;
        let t = Instant::now();
        let r = c
            .sync
            .sync(
                None,
                SyncOptions {
                    full: true,
                    enrich: false,
                    write: false,
                },
            )
            .await
            .expect("pull");
        let secs = t.elapsed().as_secs_f64();
        let st = sim.stats().await;
        let records: u64 = r.objects.iter().map(|o| o.pull.records).sum();
        let run = PullRun {
            secs,
            records,
            query_calls: st.query_calls + st.query_more_calls,
            api_calls: st.api_calls,
        };
        eprintln!(
            "pull {}/{reps}{}: {} records in {secs:.3} s ({:.0}/s), {} query calls ({} query + {} nextRecordsUrl), {} API calls {:?}",
            rep + 1,
            if rep == 0 { " (empty store)" } else { "" },
            run.records,
            run.records as f64 / secs,
            run.query_calls,
            st.query_calls,
            st.query_more_calls,
            run.api_calls,
            st.by_endpoint,
        );
        runs.push(run);
    }
    // Read only: the same query pages, parsed, then dropped.
    let mut read_only = Vec::new();
    let puller = c.sync.dry_run_puller(SObject::Lead);
    for rep in 0..reps {
        sim.reset().await;
        let sink = Sink {
            store: None,
            ids: Mutex::new(Vec::new()),
        };
        let t = Instant::now();
        let p = puller.pull_uncommitted(&sink, true).await.expect("read");
        let secs = t.elapsed().as_secs_f64();
        let st = sim.stats().await;
        eprintln!(
            "read-only {}/{reps}: {} records in {secs:.3} s, {} query calls",
            rep + 1,
            p.report.records,
            st.query_calls + st.query_more_calls
        );
        read_only.push(PullRun {
            secs,
            records: p.report.records,
            query_calls: st.query_calls + st.query_more_calls,
            api_calls: st.api_calls,
        });
    }
    drop(c);
    sim.stop();
    PullOutcome {
        leads,
        runs,
        read_only,
    }
}

struct BackfillOutcome {
    leads: usize,
    latency_ms: u64,
    enrich: bool,
    secs: f64,
    report: SyncReport,
    stats: SalesforceStats,
    setup_secs: f64,
}

async fn backfill(
    bin: &Path,
    leads: usize,
    latency_ms: u64,
    enrich: bool,
    seed: u64,
) -> BackfillOutcome {
    let t0 = Instant::now();
    let mut sim_args: Vec<String> = vec![
        "--leads".into(),
        leads.to_string(),
        "--contacts".into(),
        "0".into(),
        "--converted-share".into(),
        "0".into(),
        "--seed".into(),
        seed.to_string(),
        "--latency-ms".into(),
        latency_ms.to_string(),
        // Salesforce's production figures: 25 requests longer than 20 s.
        "--long-running-ms".into(),
        "20000".into(),
        "--long-running-max".into(),
        "25".into(),
        "--daily-limit".into(),
        arg("--daily-limit", 100_000).to_string(),
    ];
    if let Some(ms) = opt("--bulk-delay-ms") {
        sim_args.extend(["--bulk-delay-ms".into(), ms.to_string()]);
    }
    let sim = Sim::start(bin, &sim_args);
    let mut providers: Vec<(&str, SimServer)> = Vec::new();
    if enrich {
        // The people the simulator seeded its Leads from.
        let population = Arc::new(Population::generate(seed, leads));
        for (account, kind) in PROVIDERS {
            let s = enrichd_sim::start(
                kind,
                population.clone(),
                SimOptions::defaults(kind)
                    .unlimited()
                    .with_latency(Duration::ZERO, Duration::ZERO),
            )
            .await
            .expect("provider simulator");
            providers.push((account, s));
        }
    }
    let c = connect(
        &sim,
        &providers,
        opt("--bulk-threshold"),
        Arc::new(SystemClock),
    )
    .await;
    let engine = c.engine.clone();
    if !enrich {
        // Store the Leads (a pull-only pass), then a work email for each,
        // so the measured pass has something to write.
        let sink = Sink {
            store: Some((c.store.clone(), c.ws.id.clone())),
            ids: Mutex::new(Vec::new()),
        };
        let puller = c.sync.puller(SObject::Lead);
        let p = puller.pull_uncommitted(&sink, true).await.expect("pull");
        puller.commit(p).await.expect("commit");
        let now = chrono::Utc::now().timestamp_millis();
        let ids = sink.ids.into_inner().unwrap_or_else(|e| e.into_inner());
        for chunk in ids.chunks(5_000) {
            let ops: Vec<WriteOp> = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| WriteOp::Value {
                    lead_id: id.clone(),
                    value: ChannelValue {
                        channel: Channel::WorkEmail,
                        value: format!("person{i}.{}@example.com", id.as_str().to_lowercase()),
                        source: Source::provider("apollo"),
                        verification: Verification::Verified,
                        found_at: now,
                        verified_at: Some(now),
                    },
                    charge: None,
                })
                .collect();
            c.store.apply(&c.ws.id, &ops).await.expect("seed values");
        }
    }
    let setup_secs = t0.elapsed().as_secs_f64();
    sim.reset().await;
    let t = Instant::now();
    let report = c
        .sync
        .sync(
            engine.as_ref(),
            SyncOptions {
                full: true,
                enrich,
                write: true,
            },
        )
        .await
        .expect("backfill");
    let secs = t.elapsed().as_secs_f64();
    let stats = sim.stats().await;
    drop(c);
    for (_, s) in providers {
        s.shutdown().await;
    }
    sim.stop();
    BackfillOutcome {
        leads,
        latency_ms,
        enrich,
        secs,
        report,
        stats,
        setup_secs,
    }
}

impl Sim {
    async fn advance(&self, ms: i64) {
        self.http
            .post(format!("{}/_sim/clock/advance", self.s("instance_url")))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "ms": ms }).to_string())
            .send()
            .await
            .expect("advance");
    }
    /// Calls counted in the org's rolling 24 h window.
    async fn used_today(&self) -> u64 {
        let r = self
            .http
            .get(format!("{}/_sim/limits", self.s("instance_url")))
            .send()
            .await
            .expect("limits");
        let v: Value =
            serde_json::from_slice(&r.bytes().await.expect("limits body")).expect("limits json");
        v["used"].as_u64().unwrap_or_default()
    }
}

/// One simulated day of a pass the daily allocation stops.
struct Day {
    calls: u64,
    written: u64,
    outcome: String,
}

struct DailyOutcome {
    leads: usize,
    allocation: u64,
    stop_share: f64,
    days: Vec<Day>,
    stats: SalesforceStats,
    written_once: u64,
}

/// A Lead org whose write-back needs several days of its allocation: each
/// day a pass (`full`, write-back of every Lead's status through
/// Collections) runs until the client's gate stops it at the stop share;
/// then the simulator's and enrichd's clocks move 24 h and the next day's
/// pass continues. Nothing may be refused (403) and every Lead must be
/// written exactly once in the end.
async fn daily_bound(bin: &Path, leads: usize, allocation: u64, seed: u64) -> DailyOutcome {
    let sim = Sim::start(
        bin,
        &[
            "--leads".into(),
            leads.to_string(),
            "--contacts".into(),
            "0".into(),
            "--converted-share".into(),
            "0".into(),
            "--seed".into(),
            seed.to_string(),
            "--latency-ms".into(),
            arg("--daily-latency-ms", 20).to_string(),
            "--daily-limit".into(),
            allocation.to_string(),
        ],
    );
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    // Collections only: the allocation, not Bulk's batch count, binds.
    let c = connect(&sim, &[], Some(10_000_000), Arc::new(clock.clone())).await;
    let stop_share = enrichd::crm::salesforce::limits::BudgetPolicy::default().stop_share;
    // The connect flow's calls are yesterday's.
    sim.advance(DAY_MS).await;
    clock.advance(DAY_MS);
    sim.reset().await;
    let mut days = Vec::new();
    loop {
        if days.len() >= 30 {
            break;
        }
        let before = c
            .store
            .write_outcomes(&c.ws.id)
            .await
            .expect("outcomes")
            .len() as u64;
        let r = c
            .sync
            .sync(
                None,
                SyncOptions {
                    full: true,
                    enrich: false,
                    write: true,
                },
            )
            .await;
        let after = c
            .store
            .write_outcomes(&c.ws.id)
            .await
            .expect("outcomes")
            .len() as u64;
        let outcome = match &r {
            Ok(_) => "finished".to_string(),
            Err(e) if e.paused_until().is_some() => "stopped for the day".to_string(),
            Err(e) => format!("error: {e}"),
        };
        days.push(Day {
            calls: sim.used_today().await,
            written: after - before,
            outcome,
        });
        if r.is_ok() || !matches!(&r, Err(e) if e.paused_until().is_some()) {
            break;
        }
        sim.advance(DAY_MS).await;
        clock.advance(DAY_MS);
    }
    let stats = sim.stats().await;
    let written_once = c
        .store
        .write_outcomes(&c.ws.id)
        .await
        .expect("outcomes")
        .iter()
        .filter(|o| o.state == "done")
        .count() as u64;
    drop(c);
    sim.stop();
    DailyOutcome {
        leads,
        allocation,
        stop_share,
        days,
        stats,
        written_once,
    }
}

fn print_daily(d: &DailyOutcome) {
    let st = &d.stats;
    let n = d.leads as u64;
    let stop_at = (d.allocation as f64 * d.stop_share).floor() as u64;
    // Per day the query pages are read again (the pass commits only when
    // it finishes), then as many Collections calls as the day allows.
    let pages = n.div_ceil(PAGE);
    let writes = n.div_ceil(COLLECTION);
    let per_day_writes = stop_at.saturating_sub(pages).max(1);
    let min_days = writes.div_ceil(per_day_writes);
    println!();
    println!(
        "## Daily allocation binding: {} Leads, allocation {} calls per 24 h, stop share {} ({} calls), Collections only",
        d.leads, d.allocation, d.stop_share, stop_at
    );
    println!();
    println!("| day | calls in the 24 h window | share of the allocation | Leads written | pass |");
    println!("|---|---|---|---|---|");
    for (i, day) in d.days.iter().enumerate() {
        println!(
            "| {} | {} | {:.1}% | {} | {} |",
            i + 1,
            day.calls,
            100.0 * day.calls as f64 / d.allocation as f64,
            day.written,
            day.outcome
        );
    }
    let max_day = d.days.iter().map(|x| x.calls).max().unwrap_or(0);
    let limit_errors = st.limit_exceeded_daily + st.limit_exceeded_concurrent;
    let finished = d.days.last().is_some_and(|x| x.outcome == "finished");
    println!();
    println!("| measure | enrichd | target | |");
    println!("|---|---|---|---|");
    println!(
        "| days to finish | {} | {min_days} (each day {pages} query pages again, then {per_day_writes} of the {writes} Collections calls) | {} |",
        d.days.len(),
        verdict(finished && d.days.len() as u64 <= min_days)
    );
    println!(
        "| most calls in one day | {max_day} ({:.1}%) | ≤ {stop_at} + calls already in flight at the stop (4 writers), < {} | {} |",
        100.0 * max_day as f64 / d.allocation as f64,
        d.allocation,
        verdict(max_day <= stop_at + 4 && max_day < d.allocation)
    );
    println!(
        "| limit errors (403 REQUEST_LIMIT_EXCEEDED) | {limit_errors} | 0 | {} |",
        verdict(limit_errors == 0)
    );
    println!(
        "| Leads written once / records sent | {} / {} | {n} / {n} | {} |",
        d.written_once,
        st.collection_records,
        verdict(d.written_once == n && st.collection_records == n)
    );
}

fn print_pull(p: &PullOutcome) {
    let secs: Vec<f64> = p.runs.iter().map(|r| r.secs).collect();
    let ro: Vec<f64> = p.read_only.iter().map(|r| r.secs).collect();
    let med = median(&secs);
    let med_ro = median(&ro);
    let records = p.runs.first().map_or(0, |r| r.records);
    let queries = p.runs.iter().map(|r| r.query_calls).max().unwrap_or(0);
    let api = p.runs.iter().map(|r| r.api_calls).max().unwrap_or(0);
    let tap_rate = TAP_RECORDS / TAP_SECS;
    let rate = records as f64 / med;
    let target_secs = records as f64 / (SPEEDUP * tap_rate);
    let all: Vec<String> = secs.iter().map(|s| format!("{s:.3}")).collect();
    let all_ro: Vec<String> = ro.iter().map(|s| format!("{s:.3}")).collect();
    println!();
    println!(
        "## Pull only: {} Leads, no added latency, {} repetitions (median)",
        p.leads,
        secs.len()
    );
    println!();
    println!("| measure | enrichd | target | |");
    println!("|---|---|---|---|");
    println!(
        "| records read | {records} | {} | {} |",
        p.leads,
        verdict(records == p.leads as u64)
    );
    println!(
        "| query calls (query + nextRecordsUrl) | {queries} (all API calls {api}) | {} (tap-salesforce {TAP_QUERY_CALLS}) | {} |",
        (p.leads as u64).div_ceil(PAGE),
        verdict(queries <= (p.leads as u64).div_ceil(PAGE))
    );
    println!(
        "| wall time, pull + store (median) | {med:.3} s (runs: {}) | ≤ {target_secs:.2} s (tap {:.1} s for {TAP_RECORDS:.0}) | {} |",
        all.join(", "),
        TAP_SECS,
        verdict(med <= target_secs)
    );
    println!(
        "| records/s | {rate:.0} = {:.1}× tap's {tap_rate:.0} | ≥ {SPEEDUP}× | {} |",
        rate / tap_rate,
        verdict(rate >= SPEEDUP * tap_rate)
    );
    println!(
        "| wall time, read only (median, not stored) | {med_ro:.3} s = {:.0} records/s (runs: {}) | (information) | |",
        records as f64 / med_ro,
        all_ro.join(", ")
    );
}

fn print_backfill(b: &BackfillOutcome) {
    let n = b.leads as f64;
    let st = &b.stats;
    let w = &b.report.write;
    let pull: u64 = b.report.objects.iter().map(|o| o.pull.pages).sum();
    let records: u64 = b.report.objects.iter().map(|o| o.pull.records).sum();
    let write_calls = st.collection_calls + st.single_updates;
    let bulk_calls = st.api_calls.saturating_sub(pull + write_calls);
    let floor_calls = (b.leads as u64).div_ceil(PAGE) + (b.leads as u64).div_ceil(COLLECTION);
    let floor = floor_calls as f64 / n;
    let per = st.api_calls as f64 / n;
    let limit_errors = st.limit_exceeded_daily + st.limit_exceeded_concurrent;
    let path = match (w.bulk_jobs, w.collection_calls) {
        (0, _) => "sObject Collections",
        (_, 0) => "Bulk API 2.0",
        _ => "Bulk API 2.0 + Collections",
    };
    // The pull is sequential: every page waits the latency at least.
    let latency_floor = pull as f64 * b.latency_ms as f64 / 1000.0;
    println!();
    println!(
        "## Backfill: {} Leads, {} ms per call, limits on (daily {}, 25 long-running), enrichment {}",
        b.leads,
        b.latency_ms,
        arg("--daily-limit", 100_000),
        if b.enrich {
            "on (apollo, hunter, pdl simulators, limits off)"
        } else {
            "off (stored work emails written back)"
        }
    );
    println!();
    println!("| measure | enrichd | target | |");
    println!("|---|---|---|---|");
    println!(
        "| Leads read / enriched / written | {records} / {} / {} (failed {}) | {} | {} |",
        b.report.enriched,
        w.summary.records_written,
        w.summary.records_failed,
        b.leads,
        verdict(records == b.leads as u64 && w.summary.records_written == b.leads as u64)
    );
    println!(
        "| write path | {path}: {} Bulk jobs ({} records, {} Bulk calls by the client), {} Collections calls ({} records) | | |",
        w.bulk_jobs, w.records_via_bulk, w.bulk_calls, st.collection_calls, st.collection_records,
    );
    println!(
        "| API calls (simulator's count) | {} = {pull} query pages + {write_calls} Collections/PATCH + {bulk_calls} Bulk/other; {:?} | | |",
        st.api_calls, st.by_endpoint
    );
    println!(
        "| API calls per Lead | {per:.5} | ≤ {floor:.4} (floor 1/{PAGE} query + 1/{COLLECTION} write = {floor_calls} calls) | {} |",
        verdict(per <= floor + 1e-9)
    );
    if w.bulk_jobs > 0 {
        // A Bulk 2.0 job takes at least create, upload, close and one poll.
        let bulk_floor = (b.leads as u64).div_ceil(PAGE)
            + BULK_JOB_CALLS * (b.leads as u64).div_ceil(BULK_JOB_RECORDS as u64);
        println!(
            "| API calls, Bulk path | {} ({:.5} per Lead) | ≥ {bulk_floor} minimum: {} query pages + {BULK_JOB_CALLS} calls × {} jobs of ≤ {BULK_JOB_RECORDS} | {} |",
            st.api_calls,
            per,
            (b.leads as u64).div_ceil(PAGE),
            (b.leads as u64).div_ceil(BULK_JOB_RECORDS as u64),
            if st.api_calls <= bulk_floor {
                "at the minimum"
            } else {
                "above the minimum"
            }
        );
    }
    println!(
        "| wall time | {:.1} s = {:.0} Leads/s (setup before the pass {:.1} s) | sequential query pages × latency = {latency_floor:.1} s | |",
        b.secs,
        n / b.secs,
        b.setup_secs
    );
    println!(
        "| limit errors (403 REQUEST_LIMIT_EXCEEDED) | daily {}, concurrent {}; client saw {}; max long-running in flight {}; 401s {} | 0 | {} |",
        st.limit_exceeded_daily,
        st.limit_exceeded_concurrent,
        b.report.limit_exceeded,
        st.max_long_running_in_flight,
        st.unauthorized,
        verdict(limit_errors == 0 && b.report.limit_exceeded == 0)
    );
    println!(
        "| owners reassigned | {} (auto-assign headers {:?}) | 0 | {} |",
        st.owner_changes.len(),
        st.auto_assign_headers,
        verdict(st.owner_changes.is_empty())
    );
    if !b.report.failures.is_empty() {
        println!(
            "first failures: {:?}",
            &b.report.failures[..b.report.failures.len().min(5)]
        );
    }
}

fn main() {
    let bin = sim_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seed = arg("--seed", 42);
    let pull = (!flag("--skip-pull")).then(|| {
        rt.block_on(pull_only(
            &bin,
            arg("--pull-leads", 10_000) as usize,
            arg("--reps", 5).max(1) as usize,
            seed,
        ))
    });
    if let Some(p) = &pull {
        print_pull(p);
    }
    if !flag("--skip-backfill") {
        let b = rt.block_on(backfill(
            &bin,
            arg("--leads", 100_000) as usize,
            arg("--latency-ms", 75),
            !flag("--no-enrich"),
            seed,
        ));
        print_backfill(&b);
    }
    if !flag("--skip-daily") {
        let d = rt.block_on(daily_bound(
            &bin,
            arg("--daily-leads", 100_000) as usize,
            arg("--daily-allocation", 300),
            seed,
        ));
        print_daily(&d);
    }
}

//! Crash test (issue 5): `enrichd run` killed with SIGKILL at random
//! moments — start-up, backfill, enrichment, write-back, webhook handling —
//! and started again, many times over, on one SQLite file; then left to
//! finish. Afterwards, from the simulators' logs and the store:
//!
//! 1. every lead is enriched and written (HubSpot holds each stored value
//!    with its Source) or recorded with a reason (lead status), and every
//!    webhook event is done or ignored;
//! 2. no credit is charged twice: one ledger row per stored value and
//!    nothing else, budget counters equal to the ledger, every reservation
//!    settled (those left open by a kill once their TTL has passed);
//! 3. no provider is asked again for a value already stored: no request
//!    about a person for a channel arrives after that value's `found_at`;
//! 4. no HubSpot record holds a value without its Source;
//!
//! and no async provider job (FullEnrich) is left open: those a kill
//! interrupted are resumed by the next process, not submitted again.
//!
//! The kill moments come from a seeded splitmix64 (`ENRICHD_CRASH_SEED`
//! picks another sequence; `ENRICHD_CRASH_CYCLES` another count).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd::core::channel::Channel;
use enrichd::core::lead::{LeadId, WorkspaceId};
use enrichd::core::value::Verification;
use enrichd::store::{LeadState, Store, StoredLead};
use enrichd_sim::hubspot::{
    ContactView, HubSpotData, HubSpotLimits, HubSpotOptions, HubSpotSim, Subscription,
    start_hubspot,
};
use enrichd_sim::{Population, ProviderKind, SimChannel, SimOptions, SimServer};

use crate::support::FAST_LIMITS;

/// Contacts in HubSpot at the start.
const SEEDED: usize = 800;
/// People created in HubSpot during the test (webhook `contact.creation`).
const CREATED: usize = 200;
/// Of which created at once, halfway through the kills.
const WAVE: usize = 150;
/// Kill cycles (at least 20).
const CYCLES: usize = 22;
const SEED: u64 = 0x5eed_c4a5_u64;
const WEBHOOK_SECRET: &str = "crash-test-webhook-secret";

/// splitmix64: a small seeded generator (no crate for this).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (ms).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Simulators, config and store of the test.
struct World {
    pop: Arc<Population>,
    sims: BTreeMap<String, SimServer>,
    hs: HubSpotSim,
    config: PathBuf,
    log: PathBuf,
    secrets: BTreeMap<String, String>,
    store: Arc<dyn Store>,
    db: sqlx::SqlitePool,
    ws: WorkspaceId,
    /// HubSpot contact id → person index in the population.
    person_of: BTreeMap<String, usize>,
    /// People not in HubSpot yet.
    to_create: Vec<usize>,
    /// company domain → HubSpot company id.
    company_of: HashMap<String, String>,
    _dir: tempfile::TempDir,
}

async fn world(port: u16) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let pop = Arc::new(Population::generate(23, SEEDED + CREATED));
    let lat = |lo: u64, hi: u64| (Duration::from_millis(lo), Duration::from_millis(hi));
    let mut sims = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let mut providers = String::new();
    for (account, kind) in [
        ("apollo", ProviderKind::Apollo),
        ("fullenrich", ProviderKind::FullEnrich),
        ("hunter", ProviderKind::Hunter),
        ("prospeo", ProviderKind::Prospeo),
    ] {
        let (lo, hi) = lat(40, 120);
        // FullEnrich (async): results some time after the submission, by
        // callback (retried while the daemon is down) or by polling.
        let opts = SimOptions::defaults(kind)
            .unlimited()
            .with_latency(lo, hi)
            .with_processing_delay(Duration::from_millis(800))
            .with_callback_retry_interval(Duration::from_millis(400));
        let sim = enrichd_sim::start(kind, pop.clone(), opts)
            .await
            .expect("start simulator");
        let var = format!("KEY_{}", account.to_uppercase());
        secrets.insert(var.clone(), sim.api_key().to_string());
        providers.push_str(&format!(
            "[providers.{account}]\napi_key_env = \"{var}\"\nbase_url = \"{}\"\nconnector = \"{}\"\ntimeout_secs = 2\nmax_retries = 2\n{FAST_LIMITS}\n\n",
            sim.base_url(),
            kind.name()
        ));
        sims.insert(account.to_string(), sim);
    }

    // HubSpot holds the first SEEDED people; the others are created later.
    let base_ms = chrono::Utc::now().timestamp_millis() - 2 * 86_400_000;
    let mut data = HubSpotData::from_population(&pop, base_ms, 0.0);
    data.contacts.truncate(SEEDED);
    let subs = vec![
        Subscription::creation(),
        Subscription::property_change("jobtitle"),
        Subscription::property_change("enrichment_work_email"),
    ];
    let opts = HubSpotOptions::defaults()
        .with_limits(HubSpotLimits::unlimited())
        .with_latency(Duration::from_millis(8))
        .with_webhook_secret(Some(WEBHOOK_SECRET.into()))
        .with_webhooks(format!("http://127.0.0.1:{port}/webhooks/hubspot"), subs);
    let hs = start_hubspot(data, opts).await.expect("start HubSpot");
    secrets.insert(
        "HS_PRIVATE_APP_TOKEN".into(),
        hs.options().private_app_token.clone().expect("token"),
    );
    secrets.insert("HS_WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into());

    let mdir = dir.path().join("mappings");
    std::fs::create_dir_all(&mdir).expect("mappings dir");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/hubspot.toml"),
        mdir.join("hubspot.toml"),
    )
    .expect("mapping");
    let db_path = dir.path().join("enrichd.db");
    let store_url = format!("sqlite://{}", db_path.display());
    let toml = format!(
        r#"[storage]
url = "{store_url}"

[engine]
concurrency = 4
max_retry_wait_secs = 5
batch_window_ms = 100
async_timeout_secs = 20
poll_interval_secs = 1

[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
shutdown_grace_secs = 10

{providers}
[[workspaces]]
id = "t"
providers = ["apollo", "fullenrich", "hunter", "prospeo"]
budget = {{ credits = 1000000, period = "month" }}
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]

[workspaces.crm]
kind = "hubspot"
auth_url = "{hs}"
api_url = "{hs}"
private_app_token_env = "HS_PRIVATE_APP_TOKEN"
webhook_secret_env = "HS_WEBHOOK_SECRET"
portal_id = {portal}
timeout_secs = 5
max_retries = 3
sync_interval_secs = 2
limits = {{ ten_secondly = 1000000, search_per_second = 100000 }}
"#,
        hs = hs.base_url(),
        portal = hs.portal_id(),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &toml).expect("write config");
    // The config is valid as the daemon will read it.
    if let Err(e) = enrichd::config::Settings::from_str(&config, &toml, &secrets) {
        panic!("test config invalid:\n{e}\n---\n{toml}");
    }
    let store = enrichd::store::open(&store_url).await.expect("open store");
    store.migrate().await.expect("migrate");
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect(&store_url)
        .await
        .expect("open the database");

    let ids = hs.contact_ids();
    assert_eq!(ids.len(), SEEDED);
    let mut person_of = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let c = hs.contact(id).expect("contact");
        assert_eq!(c.get("lastname"), Some(pop.person(i).last_name.as_str()));
        person_of.insert(id.clone(), i);
    }
    let mut company_of = HashMap::new();
    for id in hs.company_ids() {
        if let Some(d) = hs
            .company(&id)
            .and_then(|c| c.properties.get("domain").cloned())
        {
            company_of.insert(d, id);
        }
    }
    World {
        pop,
        sims,
        hs,
        log: dir.path().join("run.log"),
        config,
        secrets,
        store,
        db,
        ws: WorkspaceId("t".into()),
        person_of,
        to_create: (SEEDED..SEEDED + CREATED).collect(),
        company_of,
        _dir: dir,
    }
}

impl World {
    fn spawn(&self, cycle: usize) -> Running {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let _ = writeln!(log, "----- start {cycle}");
        std::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
            .args(["--config", self.config.to_str().unwrap(), "run"])
            .envs(&self.secrets)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map(Running)
            .expect("start enrichd run")
    }

    /// Whether the last process started has finished a sync pass.
    fn passed_since_last_start(&self) -> bool {
        let all = std::fs::read_to_string(&self.log).unwrap_or_default();
        all.rsplit("----- start")
            .next()
            .is_some_and(|last| last.contains("sync pass done"))
    }

    /// The tail of the daemon's logs; the whole file is kept in the
    /// system's temporary directory for a failure's investigation.
    fn logs(&self) -> String {
        let all = std::fs::read_to_string(&self.log).unwrap_or_default();
        let kept = std::env::temp_dir().join(format!("enrichd-crash-{}.log", std::process::id()));
        let _ = std::fs::write(&kept, &all);
        eprintln!("the daemon's logs: {}", kept.display());
        // The tail is what explains a failure.
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// A webhook-worthy change in HubSpot: a new contact (someone not in
    /// HubSpot yet) or a human edit of an input property.
    fn change(&mut self, rng: &mut Rng) -> String {
        if self.to_create.len() > WAVE && rng.chance(0.6) {
            self.create()
        } else {
            let ids: Vec<&String> = self.person_of.keys().collect();
            let id = ids[(rng.next() % ids.len() as u64) as usize].clone();
            let title = format!("Edited title {}", rng.next() % 1000);
            self.hs.human_edit(&id, &[("jobtitle", &title)]);
            format!("edited {id}")
        }
    }

    /// Where the work stood (to see which phases the kills hit).
    async fn progress(&self) -> String {
        let values = self
            .scalar("SELECT COUNT(*) FROM channel_values WHERE workspace = 't'")
            .await;
        let written = self
            .scalar("SELECT COUNT(DISTINCT lead_id) FROM crm_written WHERE workspace = 't' AND field = 'enrichment_status'")
            .await;
        let events = self
            .scalar("SELECT COUNT(*) FROM crm_events WHERE workspace = 't' AND state = 'pending'")
            .await;
        let jobs = self
            .scalar("SELECT COUNT(*) FROM provider_jobs WHERE workspace = 't' AND state IN ('pending', 'received')")
            .await;
        let backfill = self
            .scalar("SELECT COALESCE(MAX(backfill_done), 0) FROM crm_sync WHERE workspace = 't'")
            .await;
        format!(
            "{values} values, {written} contacts written, {events} events pending, {jobs} async jobs open, backfill {}",
            if backfill == 1 { "done" } else { "not done" }
        )
    }

    /// Creates the next person in HubSpot (with their company).
    fn create(&mut self) -> String {
        let i = self.to_create.remove(0);
        let p = self.pop.person(i);
        let fields = p.crm_fields();
        let props: Vec<(&str, &str)> = ["firstname", "lastname", "company", "jobtitle", "country"]
            .iter()
            .filter_map(|k| fields.get(*k).and_then(|v| v.as_str()).map(|v| (*k, v)))
            .collect();
        let company = self.company_of.get(&p.domain).cloned();
        let id = self.hs.create_contact(&props, company.as_deref());
        self.person_of.insert(id.clone(), i);
        format!("created {id} (person {i})")
    }

    async fn scalar(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.db)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// What is still pending: empty once every lead is enriched and
    /// written or recorded with a reason, and every event is handled.
    async fn pending(&self) -> Vec<String> {
        let mut out = Vec::new();
        let events = self
            .scalar("SELECT COUNT(*) FROM crm_events WHERE workspace = 't' AND state = 'pending'")
            .await;
        if events > 0 {
            out.push(format!("{events} webhook events pending"));
        }
        let jobs = self
            .scalar(
                "SELECT COUNT(*) FROM provider_jobs WHERE workspace = 't' AND state IN ('pending', 'received')",
            )
            .await;
        if jobs > 0 {
            out.push(format!("{jobs} provider jobs pending"));
        }
        let ids: Vec<LeadId> = self.person_of.keys().map(|k| LeadId(k.clone())).collect();
        let stored = match self.store.load_leads(&self.ws, &ids).await {
            Ok(s) => s,
            Err(e) => return vec![format!("store: {e}")],
        };
        for id in &ids {
            let contact = self.hs.contact(id.as_str()).expect("contact");
            out.extend(unfinished(id, &contact, stored.get(id)));
        }
        out
    }
}

/// What keeps one lead from being finished: a stored value HubSpot does
/// not hold with its Source, no enrichment status in HubSpot, or no final
/// status with a reason in the store.
fn unfinished(id: &LeadId, contact: &ContactView, lead: Option<&StoredLead>) -> Vec<String> {
    let mut out = Vec::new();
    let value = lead.and_then(|l| {
        l.values
            .iter()
            .find(|v| v.channel == Channel::WorkEmail && v.verification != Verification::Invalid)
    });
    if let Some(v) = value {
        let written = contact.get("enrichment_work_email");
        let source = contact.get("enrichment_work_email_source");
        if written != Some(v.value.as_str()) || source != Some(v.source.as_str()) {
            out.push(format!(
                "lead {id}: stored {} from {}, HubSpot holds {written:?} from {source:?}",
                v.value, v.source
            ));
        }
    }
    match lead.and_then(|l| l.status.as_ref()) {
        Some(s)
            if matches!(
                s.state,
                LeadState::Done | LeadState::NoIdentity | LeadState::Failed | LeadState::Deferred
            ) && !s.reason.is_empty() => {}
        Some(s) => out.push(format!("lead {id}: {} ({})", s.state.as_str(), s.reason)),
        None => out.push(format!(
            "lead {id}: no status recorded (value: {:?})",
            value.map(|v| &v.value)
        )),
    }
    if contact.get("enrichment_status").is_none() {
        out.push(format!("lead {id}: no enrichment status in HubSpot"));
    }
    out
}

/// A started `enrichd run`; killed if the test fails while it runs.
struct Running(std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// SIGKILL, and reap.
fn kill9(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -KILL {pid}");
    let _ = child.wait();
}

/// SIGTERM; the exit status (None when it did not exit within `within`).
fn terminate(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_no_lead_charges_nothing_twice_and_asks_nobody_again() {
    let started = Instant::now();
    let port = free_port();
    let mut w = world(port).await;
    let seed = env_or("ENRICHD_CRASH_SEED", SEED);
    let cycles = env_or("ENRICHD_CRASH_CYCLES", CYCLES);
    let mut rng = Rng(seed);
    let mut journal = Vec::new();

    for cycle in 0..cycles {
        let mut child = w.spawn(cycle);
        let t0 = Instant::now();
        // Mostly mid-pass; one kill in five during start-up.
        let kill_at = if rng.chance(0.2) {
            rng.between(0, 400)
        } else {
            rng.between(400, 3500)
        };
        // Halfway: a wave of new contacts, their webhooks handled under kills.
        if cycle == cycles / 2 {
            let at = rng.between(0, kill_at.max(1));
            tokio::time::sleep_until((t0 + Duration::from_millis(at)).into()).await;
            for _ in 0..WAVE {
                w.create();
            }
            journal.push(format!("cycle {cycle}: at {at} ms {WAVE} contacts created"));
        }
        // Sometimes changes in HubSpot while it runs (their webhooks are
        // delivered during the run, or lost to the kill and retried).
        let n = rng.between(0, 4);
        let mut change_at: Vec<u64> = (0..n).map(|_| rng.between(0, kill_at.max(1))).collect();
        change_at.sort_unstable();
        for at in change_at {
            tokio::time::sleep_until((t0 + Duration::from_millis(at)).into()).await;
            let what = w.change(&mut rng);
            journal.push(format!("cycle {cycle}: at {at} ms {what}"));
        }
        tokio::time::sleep_until((t0 + Duration::from_millis(kill_at)).into()).await;
        if let Ok(Some(s)) = child.try_wait() {
            panic!("enrichd run exited by itself ({s}):\n{}", w.logs());
        }
        kill9(&mut child);
        journal.push(format!(
            "cycle {cycle}: SIGKILL at {kill_at} ms ({})",
            w.progress().await
        ));
        // Sometimes a change while nothing runs: its deliveries fail, and
        // the next sync pass has to find it.
        if rng.chance(0.3) {
            let what = w.change(&mut rng);
            journal.push(format!("cycle {cycle}: while down, {what}"));
        }
    }
    let kills = started.elapsed();

    // The last start: left to finish.
    // It is done when nothing is pending and it has made a whole sync pass.
    let last_start = chrono::Utc::now().timestamp_millis();
    let mut child = w.spawn(cycles);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut left = vec!["no sync pass yet".to_string()];
    while !left.is_empty() && Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("enrichd run exited by itself ({s}):\n{}", w.logs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        left = w.pending().await;
        if !w.passed_since_last_start() {
            left.push("no sync pass yet".into());
        }
    }
    let finish = started.elapsed() - kills;
    if !left.is_empty() {
        let _ = terminate(&mut child, Duration::from_secs(12));
        panic!(
            "not finished after the last start ({} problems):\n{}\n\njournal:\n{}\n\nlogs:\n{}",
            left.len(),
            left.iter().take(30).cloned().collect::<Vec<_>>().join("\n"),
            journal.join("\n"),
            w.logs()
        );
    }
    w.hs.flush_webhooks().await;
    let status = terminate(&mut child, Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: {status:?}\n{}",
        w.logs()
    );
    let problems = check_invariants(&w, last_start, chrono::Utc::now().timestamp_millis()).await;
    if std::env::var_os("ENRICHD_CRASH_JOURNAL").is_some() {
        eprintln!("{}", journal.join("\n"));
    }
    let logs = std::fs::read_to_string(&w.log).unwrap_or_default();
    eprintln!(
        "crash test: {} async jobs resumed after a kill",
        logs.matches("async job resumed and applied").count()
    );
    eprintln!(
        "crash test: {cycles} SIGKILLs in {kills:.1?}, finished in {finish:.1?}; {} contacts",
        w.person_of.len()
    );
    assert!(
        problems.is_empty(),
        "{} invariant violations:\n{}\n\njournal:\n{}\n\nlogs:\n{}",
        problems.len(),
        problems
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        journal.join("\n"),
        w.logs()
    );
}

/// Checks invariants 1-4 and returns every violation.
/// `last_start`: when the process that was stopped with SIGTERM started.
async fn check_invariants(w: &World, last_start: i64, now: i64) -> Vec<String> {
    let mut problems = Vec::new();
    let ids: Vec<LeadId> = w.person_of.keys().map(|k| LeadId(k.clone())).collect();
    let stored = w.store.load_leads(&w.ws, &ids).await.expect("load leads");

    // (1) and (4): every lead written with its Source, or recorded with a reason.
    let mut values: BTreeMap<LeadId, (String, String, i64)> = BTreeMap::new();
    for id in &ids {
        let c = w.hs.contact(id.as_str()).expect("contact");
        if c.get("enrichment_work_email").is_some()
            && c.get("enrichment_work_email_source").is_none()
        {
            problems.push(format!("lead {id}: a value in HubSpot without its Source"));
        }
        problems.extend(unfinished(id, &c, stored.get(id)));
        let v = stored
            .get(id)
            .and_then(|l| l.values.iter().find(|v| v.channel == Channel::WorkEmail));
        if let Some(v) = v {
            values.insert(
                id.clone(),
                (v.value.clone(), v.source.to_string(), v.found_at),
            );
        }
    }
    let open_jobs = w
        .scalar("SELECT COUNT(*) FROM provider_jobs WHERE workspace = 't' AND state IN ('pending', 'received')")
        .await;
    if open_jobs > 0 {
        problems.push(format!("{open_jobs} async provider jobs still open"));
    }
    let stuck = w
        .scalar("SELECT COUNT(*) FROM crm_events WHERE workspace = 't' AND state NOT IN ('done', 'ignored')")
        .await;
    if stuck > 0 {
        problems.push(format!("{stuck} webhook events neither done nor ignored"));
    }
    let failed_writes: Vec<(String, String)> = sqlx::query_as(
        "SELECT lead_id, reason FROM crm_writes WHERE workspace = 't' AND state <> 'done'",
    )
    .fetch_all(&w.db)
    .await
    .expect("crm_writes");
    for (lead, reason) in failed_writes {
        if reason.is_empty() {
            problems.push(format!("lead {lead}: a failed write without a reason"));
        }
    }

    // (2) One charge per stored value, nothing else, counters = ledger.
    let ledger = w.store.ledger(&w.ws).await.expect("ledger");
    let keys: BTreeSet<&str> = ledger.iter().map(|e| e.key.as_str()).collect();
    if keys.len() != ledger.len() {
        problems.push("duplicate ledger keys".into());
    }
    let mut charged: BTreeMap<LeadId, Vec<(String, i64)>> = BTreeMap::new();
    for e in &ledger {
        charged
            .entry(e.lead_id.clone())
            .or_default()
            .push((e.value.clone(), e.credits));
    }
    for (id, (value, _, _)) in &values {
        match charged.get(id).map(Vec::as_slice) {
            Some([(v, 1)]) if v == value => {}
            other => problems.push(format!("lead {id}: value {value}, charges {other:?}")),
        }
    }
    for id in charged.keys() {
        if !values.contains_key(id) {
            problems.push(format!("lead {id}: charged without a stored value"));
        }
    }
    let total: i64 = ledger.iter().map(|e| e.credits).sum();
    if total != values.len() as i64 {
        problems.push(format!(
            "{total} credits charged for {} values",
            values.len()
        ));
    }
    // A process stopped cleanly settled all its reservations; those a kill
    // left open lapse: a run after their TTL settles them.
    let (unsettled,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM reservations WHERE workspace = 't' AND state = 'open' AND created_at >= $1",
    )
    .bind(last_start)
    .fetch_one(&w.db)
    .await
    .expect("reservations");
    if unsettled > 0 {
        problems.push(format!(
            "{unsettled} reservations of the cleanly stopped process left open"
        ));
    }
    let open_before = w
        .scalar("SELECT COUNT(*) FROM reservations WHERE workspace = 't' AND state = 'open'")
        .await;
    let settled = w
        .store
        .settle_expired(&w.ws, now + 2 * 3_600_000)
        .await
        .expect("settle expired");
    assert_eq!(settled as i64, open_before);
    let (charged_total, reserved): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(charged), 0), COALESCE(SUM(reserved), 0) FROM budget_periods WHERE workspace = 't'",
    )
    .fetch_one(&w.db)
    .await
    .expect("budget");
    if charged_total != total {
        problems.push(format!(
            "budget counters charged {charged_total}, ledger {total}"
        ));
    }
    if reserved != 0 {
        problems.push(format!("{reserved} credits still reserved after settling"));
    }
    let bad_reservations = w
        .scalar("SELECT COUNT(*) FROM reservations WHERE workspace = 't' AND (state <> 'settled' OR remaining < 0)")
        .await;
    if bad_reservations > 0 {
        problems.push(format!("{bad_reservations} reservations not settled"));
    }
    eprintln!(
        "crash test: {} values, {total} credits, {open_before} reservations left open by kills",
        values.len()
    );

    // (3) Nobody asked again for a value already stored.
    let mut by_person: HashMap<usize, (&LeadId, i64)> = HashMap::new();
    for (id, (_, _, found_at)) in &values {
        by_person.insert(w.person_of[id.as_str()], (id, *found_at));
    }
    for (account, sim) in &w.sims {
        let stats = sim.stats();
        let mut late = 0;
        for call in &stats.log {
            if !call.channels.contains(&SimChannel::WorkEmail) {
                continue;
            }
            let at = sim.arrival_unix_ms(call);
            for p in &call.persons {
                if let Some((id, found_at)) = by_person.get(p)
                    && at > *found_at
                {
                    late += 1;
                    if late <= 10 {
                        problems.push(format!(
                            "{account} asked about lead {id} (person {p}) {} ms after its work email was stored",
                            at - found_at
                        ));
                    }
                }
            }
        }
        if late > 10 {
            problems.push(format!(
                "{account}: {late} requests after the value was stored"
            ));
        }
        // Not an invariant: a not-found whose attempt a kill lost is asked again.
        let mut asked: HashMap<usize, u32> = HashMap::new();
        for call in stats.log.iter().filter(|c| !c.channels.is_empty()) {
            for p in &call.persons {
                *asked.entry(*p).or_default() += 1;
            }
        }
        let again = asked.values().filter(|n| **n > 1).count();
        eprintln!(
            "crash test: {account}: {} requests, {} people, {again} asked more than once",
            stats.log.len(),
            asked.len()
        );
    }
    problems
}

// ---------------------------------------------------------------------------
// Focused regressions for what the crash test found. A "stop" here is a
// dropped future or a runtime shut down: what a kill leaves behind.

mod regressions {
    use std::sync::Arc;
    use std::time::Duration;

    use enrichd::clock::SystemClock;
    use enrichd::core::channel::Channel;
    use enrichd::core::value::{ChannelValue, Source, Verification};
    use enrichd::crm::hubspot::sync::SyncOptions;
    use enrichd::engine::{Engine, EngineOptions};
    use enrichd::store::{LeadState, WriteOp};
    use enrichd_sim::hubspot::{HubSpotLimits, HubSpotOptions};
    use enrichd_sim::{ProviderKind, ProviderProfile, SimChannel, SimOptions};

    use crate::support::{FAST_LIMITS, Harness, HarnessBuilder, HubSpotSpec, eventually};

    const WORK_EMAIL: &str = r#"
[[workspaces.audiences]]
name = "everyone"
channels = ["work_email"]"#;

    fn slow(kind: ProviderKind, ms: u64) -> SimOptions {
        let d = Duration::from_millis(ms);
        SimOptions::defaults(kind).unlimited().with_latency(d, d)
    }

    /// The sync pass saved its watermark (and `backfill_done`) as soon as
    /// its pull had handed the last page to the queue, while pages were
    /// still being enriched and written: a crash then lost them for good
    /// (the next pass only reads changes after the watermark).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_sync_pass_stopped_before_its_pages_are_written_reads_them_again() {
        let h = HarnessBuilder::new(200)
            .provider_with(
                "apollo",
                ProviderKind::Apollo,
                slow(ProviderKind::Apollo, 150),
                FAST_LIMITS,
            )
            .workspace(&format!("providers = [\"apollo\"]\n{WORK_EMAIL}"))
            .engine("concurrency = 2")
            .hubspot(HubSpotSpec {
                opts: HubSpotOptions::defaults().with_limits(HubSpotLimits::unlimited()),
                email_share: 0.0,
                crm_extra: String::new(),
                mapping: None,
            })
            .start()
            .await;
        h.connect_hubspot().await;
        let opts = SyncOptions {
            full: false,
            enrich: true,
            write: true,
        };
        let hub = h.hub();
        let cut =
            tokio::time::timeout(Duration::from_millis(1500), hub.sync(Some(&h.engine), opts))
                .await;
        assert!(cut.is_err(), "the pass finished before it could be stopped");
        // The pull had read every contact and handed it on...
        let ids = h.hs().contact_ids();
        let mut stored = 0;
        for id in &ids {
            let lead = enrichd::core::lead::LeadId(id.clone());
            if h.store
                .get_lead(&h.ws.id, &lead)
                .await
                .expect("lead")
                .is_some()
            {
                stored += 1;
            }
        }
        assert_eq!(stored, ids.len(), "the pull did not finish in time");
        // ...but the pass was not over: the watermark has not moved.
        let state = h
            .store
            .sync_state(&h.ws.id, "hubspot", "contacts")
            .await
            .expect("state");
        assert!(
            !state.backfill_done && state.watermark.is_none(),
            "the watermark moved before the pages were handled: {state:?}"
        );
        // The next pass (a new process) enriches and writes every contact.
        h.hub()
            .sync(Some(&h.second_engine()), opts)
            .await
            .expect("sync");
        for id in &ids {
            let c = h.hs().contact(id).expect("contact");
            assert!(
                c.get("enrichment_status").is_some(),
                "contact {id} never written"
            );
        }
    }

    /// The sync pass and a webhook event (or two passes) can hand one lead
    /// to two runs at once; both planned from the stored state before
    /// either stored its value, and the provider was asked twice.
    #[tokio::test(flavor = "multi_thread")]
    async fn one_lead_handed_to_two_runs_at_once_is_asked_for_once() {
        let h = HarnessBuilder::new(20)
            .provider_with(
                "apollo",
                ProviderKind::Apollo,
                slow(ProviderKind::Apollo, 200),
                FAST_LIMITS,
            )
            .workspace(&format!("providers = [\"apollo\"]\n{WORK_EMAIL}"))
            .start()
            .await;
        let i = (0..20)
            .find(|&i| h.usable_from("apollo", i, Channel::WorkEmail).is_some())
            .expect("someone Apollo knows");
        let (a, b) = tokio::join!(h.run(vec![h.lead(i)]), h.run(vec![h.lead(i)]));
        assert_eq!(h.sim("apollo").stats().calls_for(i), 1, "asked twice");
        assert_eq!(a.totals.credits_charged + b.totals.credits_charged, 1);
        assert_eq!(h.store.ledger(&h.ws.id).await.expect("ledger").len(), 1);
    }

    /// A run stopped after storing a lead's last value but before its
    /// status left the lead with no status; later runs found nothing to
    /// fill and never recorded one.
    #[tokio::test]
    async fn a_lead_whose_run_stopped_after_its_last_value_gets_its_final_status() {
        let h = HarnessBuilder::new(5)
            .fast_provider(
                "apollo",
                ProviderKind::Apollo,
                SimOptions::defaults(ProviderKind::Apollo),
            )
            .workspace(&format!("providers = [\"apollo\"]\n{WORK_EMAIL}"))
            .start()
            .await;
        let id = Harness::lead_id(0);
        let now = chrono::Utc::now().timestamp_millis();
        let value = ChannelValue {
            channel: Channel::WorkEmail,
            value: "ada@example.com".into(),
            source: Source::provider("apollo"),
            verification: Verification::Verified,
            found_at: now,
            verified_at: Some(now),
        };
        h.store
            .apply(
                &h.ws.id,
                &[WriteOp::Value {
                    lead_id: id.clone(),
                    value,
                    charge: None,
                }],
            )
            .await
            .expect("apply");
        let r = h.run(vec![h.lead(0)]).await;
        assert_eq!(h.total_requests(), 0, "nothing to ask");
        assert_eq!(r.leads[0].state, LeadState::Done);
        let stored = h
            .store
            .load_leads(&h.ws.id, std::slice::from_ref(&id))
            .await
            .expect("load");
        let status = stored[&id].status.clone().expect("a status is recorded");
        assert_eq!(status.state, LeadState::Done);
        assert_eq!(status.enrichment_status.as_deref(), Some("full"));
        assert!(!status.reason.is_empty());
    }

    /// Attempts were written with the lead's status at the end of its
    /// waterfall: a stop while a later provider answered lost what the
    /// earlier ones had answered, and they were asked again.
    #[tokio::test(flavor = "multi_thread")]
    async fn answers_of_earlier_providers_survive_a_stop_while_the_next_one_answers() {
        let h = HarnessBuilder::new(40)
            .fast_provider(
                "apollo",
                ProviderKind::Apollo,
                SimOptions::defaults(ProviderKind::Apollo),
            )
            .provider_with(
                "hunter",
                ProviderKind::Hunter,
                slow(ProviderKind::Hunter, 3000),
                FAST_LIMITS,
            )
            .workspace(&format!(
                "providers = [\"apollo\", \"hunter\"]\n{WORK_EMAIL}"
            ))
            .start()
            .await;
        let i = (0..40)
            .find(|&i| h.knows("apollo", i, Channel::WorkEmail).is_none())
            .expect("someone Apollo has no email for");
        let engine = h.engine.clone();
        let ws = h.ws.clone();
        let lead = h.lead(i);
        let run =
            tokio::spawn(async move { engine.enrich(&ws, vec![lead], Default::default()).await });
        assert!(
            eventually(Duration::from_secs(10), || h.sim("hunter").stats().requests
                >= 1)
            .await
        );
        run.abort();
        let _ = run.await;
        let attempts = h
            .store
            .attempts(&h.ws.id, &Harness::lead_id(i))
            .await
            .expect("attempts");
        assert!(
            attempts
                .iter()
                .any(|a| a.provider == "apollo" && a.outcome.is_definitive()),
            "Apollo's answer was lost: {attempts:?}"
        );
        h.run(vec![h.lead(i)]).await;
        assert_eq!(
            h.sim("apollo").stats().calls_for(i),
            1,
            "Apollo asked again"
        );
    }

    /// An async job open when the process stopped was never taken up: the
    /// next process submitted the lead again (paying twice) and the old
    /// job stayed open forever.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_async_job_left_open_by_a_stopped_process_is_resumed_not_submitted_again() {
        let fullenrich = SimOptions::defaults(ProviderKind::FullEnrich)
            .with_profile(ProviderProfile::perfect(&[SimChannel::WorkEmail]))
            .with_processing_delay(Duration::from_millis(600));
        let h = HarnessBuilder::new(10)
            .provider("fullenrich", ProviderKind::FullEnrich, fullenrich)
            .workspace(&format!(
                "providers = [\"fullenrich\"]\ncatch_all = \"accept\"\n{WORK_EMAIL}"
            ))
            .start()
            .await;
        const SUBMIT: &str = "POST /contact/enrich/bulk";

        // Process A: submits, records the job, and stops (its runtime and
        // every task of it gone) before the result comes.
        let (settings, ws, lead) = (h.settings.clone(), h.ws.clone(), h.lead(0));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let store = enrichd::store::open(&settings.storage_url)
                    .await
                    .expect("store");
                let engine = Arc::new(
                    Engine::new(
                        settings,
                        store.clone(),
                        Arc::new(SystemClock),
                        EngineOptions::default(),
                    )
                    .expect("engine"),
                );
                let e = engine.clone();
                let ws2 = ws.clone();
                tokio::spawn(async move { e.enrich(&ws2, vec![lead], Default::default()).await });
                for _ in 0..500 {
                    if !store.open_jobs(&ws.id).await.expect("jobs").is_empty() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("no job recorded");
            });
            rt.shutdown_background();
        })
        .join()
        .expect("process A");
        assert_eq!(h.store.open_jobs(&h.ws.id).await.expect("jobs").len(), 1);
        assert_eq!(h.sim("fullenrich").stats().count_endpoint(SUBMIT), 1);

        // Process B: takes the job up (polls it) instead of submitting again.
        let b = h.second_engine();
        b.enrich(&h.ws, vec![h.lead(0)], Default::default())
            .await
            .expect("run");
        assert!(h.store.open_jobs(&h.ws.id).await.expect("jobs").is_empty());
        let st = h.sim("fullenrich").stats();
        assert_eq!(st.count_endpoint(SUBMIT), 1, "submitted again");
        assert!(
            st.count_endpoint("GET /contact/enrich/bulk/{id}") >= 1,
            "not polled"
        );
        let values = h
            .store
            .values(&h.ws.id, &Harness::lead_id(0))
            .await
            .expect("values");
        assert_eq!(values.len(), 1, "{values:?}");
        assert_eq!(values[0].source.as_str(), "fullenrich");
        assert_eq!(h.store.ledger(&h.ws.id).await.expect("ledger").len(), 1);
        let id = Harness::lead_id(0);
        let stored = h
            .store
            .load_leads(&h.ws.id, std::slice::from_ref(&id))
            .await
            .expect("load");
        assert_eq!(
            stored[&id].status.as_ref().map(|s| s.state),
            Some(LeadState::Done)
        );
    }
}

//! The daemon's reaction times, `enrichd run`'s code in-process against the
//! simulators on loopback:
//!
//! 1. Webhook to CRM write for one lead: a contact created in the HubSpot
//!    simulator (which sends the signed v3 webhook) until enrichd's write
//!    reaches it (its status, with the work email and Source when found),
//!    with a synchronous provider answering in 300 ms.
//!    Target: p95 at most 1.5 s.
//! 2. Webhook acknowledgement latency at 200 deliveries per second (one
//!    event each, signed, recorded before the 200): p99. Target: at most
//!    50 ms.
//!
//! Run: `cargo bench --bench daemon [-- --writes 40 --acks 2000]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd::clock::SystemClock;
use enrichd::config::Settings;
use enrichd::config::crm::CrmSettings;
use enrichd::crm::hubspot::auth::{ConnectContext, connect};
use enrichd_sim::hubspot::{
    HubSpotData, HubSpotLimits, HubSpotOptions, Subscription, sign_v3, start_hubspot,
};
use enrichd_sim::{Population, ProviderKind, SimOptions};

const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(
        arg("--writes", 40) as usize,
        arg("--acks", 2_000) as usize,
    ));
}

async fn run(writes: usize, acks: usize) {
    let contacts = 200;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let population = Arc::new(Population::generate(5, contacts + writes));
    let apollo = enrichd_sim::start(
        ProviderKind::Apollo,
        population.clone(),
        SimOptions::defaults(ProviderKind::Apollo)
            .unlimited()
            .with_latency(Duration::from_millis(300), Duration::from_millis(300)),
    )
    .await
    .expect("apollo simulator");
    let hook = format!("http://127.0.0.1:{port}/webhooks/hubspot");
    // The first `contacts` people are in HubSpot; the rest are created one
    // by one below.
    let seeded = Arc::new(Population::generate(5, contacts));
    let base_ms = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let hs = start_hubspot(
        HubSpotData::from_population(&seeded, base_ms, 0.0),
        HubSpotOptions::defaults()
            .with_limits(HubSpotLimits::unlimited())
            .with_webhooks(hook.clone(), vec![Subscription::creation()]),
    )
    .await
    .expect("HubSpot simulator");

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
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
shutdown_grace_secs = 5
[security]
master_key_env = "KEY"
[providers.apollo]
api_key_env = "APOLLO"
base_url = "{apollo}"
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
sync_interval_secs = 3600
limits = {{ ten_secondly = 1000000, search_per_second = 100000 }}
"#,
        db = dir.path().join("bench.db").display(),
        apollo = apollo.base_url(),
        u = hs.base_url(),
    );
    let path = dir.path().join("config.toml");
    let secret = hs.options().client_secret.clone();
    let secrets: std::collections::BTreeMap<String, String> = [
        ("KEY", MASTER_KEY.to_string()),
        ("APOLLO", apollo.api_key().to_string()),
        ("HS_ID", hs.options().client_id.clone()),
        ("HS_SECRET", secret.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings = Arc::new(Settings::from_str(&path, &toml, &secrets).expect("config"));
    let ws = settings.workspace("bench").expect("ws").clone();
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

    let listener = enrichd::daemon::bind(&settings).await.expect("bind");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(enrichd::daemon::run(
        settings.clone(),
        store.clone(),
        Arc::new(SystemClock),
        listener,
        async move {
            let _ = stop_rx.await;
        },
    ));
    // The first pass: every seeded contact written back.
    let t = Instant::now();
    while hs.stats().records_updated < (contacts as u64) / 2
        && t.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "first sync pass: {contacts} contacts, {} written in {:.1} s",
        hs.stats().records_updated,
        t.elapsed().as_secs_f64()
    );

    // 1. Webhook → write, one lead at a time.
    let mut lat = Vec::new();
    let mut missed = 0;
    for i in contacts..contacts + writes {
        let p = population.person(i).crm_fields();
        let props: Vec<(&str, &str)> = ["firstname", "lastname", "company", "jobtitle", "country"]
            .iter()
            .filter_map(|k| p.get(*k).and_then(|v| v.as_str()).map(|v| (*k, v)))
            .collect();
        let t = Instant::now();
        let id = hs.create_contact(&props, None);
        hs.flush_webhooks().await;
        let mut done = false;
        while t.elapsed() < Duration::from_secs(10) {
            if hs
                .contact(&id)
                .is_some_and(|c| c.get("enrichment_status").is_some())
            {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if done {
            lat.push(t.elapsed());
        } else {
            missed += 1;
        }
    }
    lat.sort();
    println!(
        "webhook → CRM write ({} leads, provider 300 ms): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms, {} not written within 10 s · target p95 ≤ 1500 ms: {}",
        lat.len(),
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.95).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        missed,
        if pct(&lat, 0.95) <= Duration::from_millis(1500) && missed == 0 {
            "ok"
        } else {
            "MISSED"
        }
    );

    // 2. Acknowledgements at 200 deliveries per second.
    let http = reqwest::Client::new();
    let portal = hs.portal_id();
    let ids = hs.contact_ids();
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for n in 0..acks {
        let due = start + Duration::from_millis(5 * n as u64);
        tokio::time::sleep_until(due.into()).await;
        let body = serde_json::json!([{
            "eventId": 10_000_000 + n, "subscriptionId": 1, "portalId": portal, "appId": 1,
            "occurredAt": chrono::Utc::now().timestamp_millis(),
            "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
            "objectId": ids[n % ids.len()].parse::<u64>().unwrap_or(1),
            "propertyName": "jobtitle", "propertyValue": "Head of Sales", "changeSource": "CRM_UI"
        }])
        .to_string();
        let ts = chrono::Utc::now().timestamp_millis().to_string();
        let sig = sign_v3(&secret, "POST", &hook, body.as_bytes(), &ts);
        let req = http
            .post(&hook)
            .header("content-type", "application/json")
            .header("X-HubSpot-Signature-v3", sig)
            .header("X-HubSpot-Request-Timestamp", ts)
            .body(body);
        tasks.spawn(async move {
            let t = Instant::now();
            let ok = req.send().await.is_ok_and(|r| r.status().is_success());
            (t.elapsed(), ok)
        });
    }
    let mut acked = Vec::new();
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((d, true)) => acked.push(d),
            _ => failed += 1,
        }
    }
    let rate = acks as f64 / start.elapsed().as_secs_f64();
    acked.sort();
    println!(
        "webhook acknowledgements ({} at {rate:.0}/s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {failed} failed · target p99 ≤ 50 ms: {}",
        acked.len(),
        pct(&acked, 0.5).as_secs_f64() * 1e3,
        pct(&acked, 0.99).as_secs_f64() * 1e3,
        acked.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        if pct(&acked, 0.99) <= Duration::from_millis(50) && failed == 0 {
            "ok"
        } else {
            "MISSED"
        }
    );
    let _ = stop_tx.send(());
    let _ = daemon.await;
}

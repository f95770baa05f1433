//! `enrichd run`: the long-running service.
//!
//! One HTTP server (CRM webhooks, provider callbacks, health, readiness,
//! metrics) and, per workspace with a CRM, two loops over its connector:
//! a scheduled incremental sync, and the handling of recorded webhook
//! events, woken as soon as a delivery is recorded (polling as the
//! fallback). Everything they do is durable already: a webhook event is
//! stored before it is acknowledged and marked done only once handled; the
//! sync watermark moves only after a whole pass. So a stop at any moment
//! loses nothing — SIGTERM or SIGINT stops the server and the loops taking
//! new work, waits up to `server.shutdown_grace_secs` for what is in
//! flight, and what is cut off runs again on the next start.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::Settings;
use crate::config::crm::CrmSettings;
use crate::core::lead::WorkspaceId;
use crate::crm::hubspot::sync::{HubSpot, SyncOptions, webhook_state};
use crate::crm::salesforce::sync::SalesforceSync;
use crate::crm::{EventSink, SinkFuture, StoreSink};
use crate::engine::{Engine, EngineOptions};
use crate::store::Store;
use crate::store::crm::ConnectionState;

pub mod admin;
pub mod salesforce_filter;
pub mod worker;

/// How often recorded events are looked for when no delivery woke the loop
/// (events recorded by another process, or before a restart).
const EVENTS_POLL: Duration = Duration::from_secs(5);
/// A failed sync pass is retried after this long (at most the interval).
const RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "`enrichd run` needs server.listen in {file} (the address CRM webhooks and provider callbacks reach); add e.g. listen = \"127.0.0.1:8787\" under [server]"
    )]
    NoListen { file: String },
    #[error(
        "cannot listen on {addr} (server.listen): {message}; change server.listen or stop the other process"
    )]
    Bind { addr: String, message: String },
    #[error("{0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("HubSpot: {0}")]
    HubSpot(String),
    #[error("Salesforce: {0}")]
    Salesforce(String),
    #[error("the HTTP server stopped: {0}")]
    Server(String),
}

/// Records deliveries in the store, then wakes the workspace's event loop.
struct WakingSink {
    inner: StoreSink,
    wake: BTreeMap<WorkspaceId, Arc<Notify>>,
}

impl EventSink for WakingSink {
    fn record(&self, events: Vec<crate::crm::CrmEvent>) -> SinkFuture<'_> {
        Box::pin(async move {
            let workspaces: Vec<WorkspaceId> = events.iter().map(|e| e.workspace.clone()).collect();
            let r = self.inner.record(events).await?;
            if r.inserted > 0 {
                for ws in workspaces {
                    if let Some(n) = self.wake.get(&ws) {
                        n.notify_one();
                    }
                }
            }
            Ok(r)
        })
    }
}

/// What the health routes read.
struct Health {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
}

/// Binds `server.listen`.
pub async fn bind(settings: &Settings) -> Result<tokio::net::TcpListener, DaemonError> {
    let addr = settings.listen.ok_or_else(|| DaemonError::NoListen {
        file: settings.file.display().to_string(),
    })?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DaemonError::Bind {
            addr: addr.to_string(),
            message: e.to_string(),
        })
}

/// Runs until `shutdown` completes, then drains within the grace period.
pub async fn run(
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let local = listener
        .local_addr()
        .map_err(|e| DaemonError::Server(e.to_string()))?;
    let public = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let engine = Arc::new(Engine::new(
        settings.clone(),
        store.clone(),
        clock.clone(),
        EngineOptions {
            callback_base: Some(public.clone()),
            ..EngineOptions::default()
        },
    )?);

    // Per workspace with a CRM: its connector and what wakes its event loop.
    let mut hubs: Vec<(Arc<HubSpot>, Arc<Notify>)> = Vec::new();
    // Salesforce workspaces: what wakes their event loop when an Outbound
    // Message is recorded (the loop itself: see below).
    let mut sf_wakes: Vec<(WorkspaceId, Arc<Notify>)> = Vec::new();
    // Salesforce workspaces' connectors: one per workspace (one client, one
    // daily budget per org) for the loops, the admin API and the workers.
    let mut sfs: BTreeMap<WorkspaceId, Arc<SalesforceSync>> = BTreeMap::new();
    let mut connectors: Vec<(Arc<dyn Connector>, Arc<Notify>)> = Vec::new();
    for ws in &settings.workspaces {
        if matches!(ws.crm, Some(CrmSettings::Salesforce(_))) {
            let sf = SalesforceSync::open(&settings, ws, store.clone(), clock.clone())
                .map_err(|e| DaemonError::Salesforce(e.to_string()))?;
            if let Some(sf) = sf {
                let sf = Arc::new(sf);
                let wake = Arc::new(Notify::new());
                sf_wakes.push((ws.id.clone(), wake.clone()));
                sfs.insert(ws.id.clone(), sf.clone());
                connectors.push((sf, wake));
            }
        }
        if !matches!(ws.crm, Some(CrmSettings::HubSpot(_))) {
            continue;
        }
        let hub = HubSpot::open(&settings, ws, store.clone(), clock.clone())
            .map_err(|e| DaemonError::HubSpot(e.to_string()))?;
        if let Some(hub) = hub {
            hubs.push((Arc::new(hub), Arc::new(Notify::new())));
        }
    }
    let mut hooks = webhook_state(
        &settings,
        store.clone(),
        clock.clone(),
        format!("{public}{}", crate::crm::hubspot::webhook::PATH),
    )
    .await
    .map_err(|e| DaemonError::HubSpot(e.to_string()))?;
    // One sink for both CRMs' deliveries: recorded, then the workspace's
    // event loop is woken.
    let sink: Arc<dyn EventSink> = Arc::new(WakingSink {
        inner: StoreSink {
            store: store.clone(),
            clock: clock.clone(),
        },
        wake: hubs
            .iter()
            .map(|(h, n)| (h.ws.id.clone(), n.clone()))
            .chain(sf_wakes.iter().cloned())
            .collect(),
    });
    hooks.sink = sink.clone();
    // `POST /webhooks/salesforce/{token}`: the token picks the workspace.
    let outbound = crate::crm::salesforce::webhook::outbound_state(
        &settings,
        store.clone(),
        clock.clone(),
        sink,
    );
    if !outbound.routes.is_empty() {
        tracing::info!(
            endpoint = %format!("{public}{}/<outbound token>", crate::crm::salesforce::outbound::PATH),
            workspaces = outbound.routes.len(),
            "Salesforce Outbound Messages accepted"
        );
    }

    // The admin API enqueues jobs and wakes the workers that run them.
    let jobs_wake = Arc::new(Notify::new());
    let admin = Arc::new(admin::Admin {
        settings: settings.clone(),
        store: store.clone(),
        clock: clock.clone(),
        wake: jobs_wake.clone(),
        salesforce: sfs.clone(),
    });
    let workers = Arc::new(
        worker::Workers::new(
            settings.clone(),
            store.clone(),
            clock.clone(),
            engine.clone(),
            hubs.iter()
                .map(|(h, _)| (h.ws.id.clone(), h.clone()))
                .collect(),
            jobs_wake,
        )
        .with_salesforce(sfs),
    );

    let health = Arc::new(Health {
        settings: settings.clone(),
        store: store.clone(),
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
        .merge(crate::crm::hubspot::webhook::router(Arc::new(hooks)))
        .merge(crate::crm::salesforce::webhook::router(Arc::new(outbound)))
        .merge(crate::engine::callbacks::router(engine.clone()))
        .merge(admin::router(admin));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut work = JoinSet::new();
    connectors.extend(
        hubs.iter()
            .map(|(h, w)| (h.clone() as Arc<dyn Connector>, w.clone())),
    );
    for (crm, wake) in &connectors {
        work.spawn(sync_loop(
            crm.clone(),
            engine.clone(),
            clock.clone(),
            stop_rx.clone(),
        ));
        work.spawn(events_loop(
            crm.clone(),
            engine.clone(),
            clock.clone(),
            wake.clone(),
            stop_rx.clone(),
        ));
    }
    // Jobs in hand are finished or released before the grace period ends.
    work.spawn(workers.run(stop_rx.clone(), settings.shutdown_grace * 4 / 5));
    tracing::info!(listen = %local, workspaces = connectors.len(), "enrichd run started");

    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });
    shutdown.await;
    tracing::info!(
        grace_secs = settings.shutdown_grace.as_secs(),
        "stopping: no new work, draining"
    );
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while work.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "grace period over: in-flight work is stopped and resumes on the next start"
        );
        work.abort_all();
    }
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), server).await {
        return Err(DaemonError::Server(e.to_string()));
    }
    tracing::info!("enrichd run stopped");
    Ok(())
}

/// Waits `d`, or less when asked to stop; true when stopping.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// What the daemon's loops need from a CRM connector (`crm::hubspot`,
/// `crm::salesforce`): whether its connection can be used, a sync pass, and
/// the recorded change notifications handled.
trait Connector: Send + Sync + 'static {
    fn workspace(&self) -> &WorkspaceId;
    fn every(&self) -> Duration;
    fn usable(&self) -> BoxFuture<'_, bool>;
    /// One pass; on failure, the error and the time the CRM's limits allow
    /// the next try, when they say.
    fn pass<'a>(&'a self, engine: &'a Arc<Engine>) -> BoxFuture<'a, Result<Pass, Failed>>;
    fn events<'a>(&'a self, engine: &'a Arc<Engine>) -> BoxFuture<'a, Result<Pass, Failed>>;
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a pass or a round of events did, for the log.
#[derive(Default)]
struct Pass {
    pulled: u64,
    events: u64,
    ignored: u64,
    enriched: u64,
    written: u64,
    failed: u64,
}

struct Failed {
    error: String,
    /// The CRM's limits pause the connection until then (ms since the epoch).
    until: Option<i64>,
}

/// A daemon's pass: the changes, enriched and written back.
const PASS: SyncOptions = SyncOptions {
    full: false,
    enrich: true,
    write: true,
};

/// The state of a stored connection: usable, or why not (logged).
async fn connected(store: &dyn Store, ws: &WorkspaceId, crm: &str, stored_optional: bool) -> bool {
    match store.connection(ws, crm).await {
        Ok(Some(c)) if c.state == ConnectionState::Connected => true,
        Ok(Some(c)) => {
            tracing::warn!(workspace = %ws, crm, reason = %c.reason, "the connection needs `enrichd connect {crm}` again; not syncing");
            false
        }
        Ok(None) => stored_optional,
        Err(e) => {
            tracing::warn!(workspace = %ws, crm, error = %e, "cannot read the connection");
            false
        }
    }
}

impl Connector for HubSpot {
    fn workspace(&self) -> &WorkspaceId {
        &self.ws.id
    }
    fn every(&self) -> Duration {
        self.settings.sync_interval
    }
    fn usable(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            // A private-app token needs no stored connection.
            let private = matches!(
                self.settings.auth,
                crate::config::crm::HubSpotAuth::PrivateApp { .. }
            );
            connected(
                self.store.as_ref(),
                &self.ws.id,
                crate::crm::hubspot::auth::CRM,
                private,
            )
            .await
        })
    }
    fn pass<'a>(&'a self, engine: &'a Arc<Engine>) -> BoxFuture<'a, Result<Pass, Failed>> {
        Box::pin(async move {
            match self.sync(Some(engine), PASS).await {
                Ok(r) => Ok(Pass {
                    pulled: r.pull.contacts,
                    enriched: r.enriched,
                    written: r.write.records_written,
                    failed: r.write.records_failed,
                    ..Pass::default()
                }),
                Err(e) => Err(Failed {
                    error: e.to_string(),
                    until: None,
                }),
            }
        })
    }
    fn events<'a>(&'a self, engine: &'a Arc<Engine>) -> BoxFuture<'a, Result<Pass, Failed>> {
        Box::pin(async move {
            match self.process_events(Some(engine), PASS).await {
                Ok(r) => Ok(Pass {
                    events: r.events,
                    ignored: r.ignored,
                    enriched: r.enriched,
                    written: r.write.records_written,
                    ..Pass::default()
                }),
                Err(e) => Err(Failed {
                    error: e.to_string(),
                    until: None,
                }),
            }
        })
    }
}

impl Connector for SalesforceSync {
    fn workspace(&self) -> &WorkspaceId {
        &self.ws.id
    }
    fn every(&self) -> Duration {
        self.settings.sync_interval
    }
    fn usable(&self) -> BoxFuture<'_, bool> {
        Box::pin(connected(
            self.store.as_ref(),
            &self.ws.id,
            crate::crm::salesforce::CRM,
            false,
        ))
    }
    fn pass<'a>(&'a self, engine: &'a Arc<Engine>) -> BoxFuture<'a, Result<Pass, Failed>> {
        Box::pin(async move {
            match self.sync(Some(engine), PASS).await {
                Ok(r) => Ok(Pass {
                    pulled: r.objects.iter().map(|o| o.pull.leads).sum(),
                    enriched: r.enriched,
                    written: r.write.summary.records_written,
                    failed: r.write.summary.records_failed,
                    ..Pass::default()
                }),
                Err(e) => Err(Failed {
                    until: e.paused_until(),
                    error: e.to_string(),
                }),
            }
        })
    }
    fn events<'a>(&'a self, engine: &'a Arc<Engine>) -> BoxFuture<'a, Result<Pass, Failed>> {
        Box::pin(async move {
            match self.process_events(Some(engine), PASS).await {
                Ok(r) => Ok(Pass {
                    events: r.events,
                    ignored: r.ignored,
                    enriched: r.enriched,
                    written: r.write.summary.records_written,
                    failed: r.write.summary.records_failed,
                    ..Pass::default()
                }),
                Err(e) => Err(Failed {
                    until: e.paused_until(),
                    error: e.to_string(),
                }),
            }
        })
    }
}

/// How long to wait after a failure: until the CRM's pause ends when it
/// named one, else `RETRY_AFTER` (never longer than the interval).
fn after_failure(f: &Failed, every: Duration, now_ms: i64) -> Duration {
    match f.until {
        Some(until) => Duration::from_millis(u64::try_from(until - now_ms).unwrap_or(0))
            .max(Duration::from_secs(1)),
        None => RETRY_AFTER.min(every),
    }
}

/// A sync pass now, then one every `sync_interval`.
async fn sync_loop(
    crm: Arc<dyn Connector>,
    engine: Arc<Engine>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let every = crm.every();
    loop {
        let wait = if crm.usable().await {
            match crm.pass(&engine).await {
                Ok(p) => {
                    tracing::info!(
                        workspace = %crm.workspace(),
                        pulled = p.pulled,
                        enriched = p.enriched,
                        written = p.written,
                        failed = p.failed,
                        "sync pass done"
                    );
                    every
                }
                Err(f) => {
                    tracing::warn!(workspace = %crm.workspace(), error = %f.error, "sync pass stopped; it resumes from where the watermark is");
                    after_failure(&f, every, clock.now())
                }
            }
        } else {
            every
        };
        if pause(&mut stop, wait).await {
            return;
        }
    }
}

/// Handles recorded change notifications as soon as a delivery is recorded.
async fn events_loop(
    crm: Arc<dyn Connector>,
    engine: Arc<Engine>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let mut wait = EVENTS_POLL;
        if crm.usable().await {
            match crm.events(&engine).await {
                Ok(p) if p.events > 0 => tracing::info!(
                    workspace = %crm.workspace(),
                    events = p.events,
                    ignored = p.ignored,
                    enriched = p.enriched,
                    written = p.written,
                    "change notifications handled"
                ),
                Ok(_) => {}
                Err(f) => {
                    tracing::warn!(workspace = %crm.workspace(), error = %f.error, "handling change notifications failed; they stay pending");
                    if f.until.is_some() {
                        wait = after_failure(&f, EVENTS_POLL, clock.now());
                    }
                }
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// 200 when the database answers and every CRM connection is usable; 503
/// with what is wrong otherwise.
async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if let Err(e) = h.store.pending_migrations().await {
        problems.push(format!("database: {e}"));
    }
    for ws in &h.settings.workspaces {
        if let Some(CrmSettings::HubSpot(hs)) = &ws.crm {
            match h.store.connection(&ws.id, "hubspot").await {
                Ok(Some(c)) if c.state == ConnectionState::Connected => {}
                Ok(Some(c)) => problems.push(format!(
                    "workspace {}: HubSpot reconnect required ({}): run `enrichd connect hubspot`",
                    ws.id, c.reason
                )),
                Ok(None)
                    if matches!(hs.auth, crate::config::crm::HubSpotAuth::PrivateApp { .. }) => {}
                Ok(None) => problems.push(format!(
                    "workspace {}: HubSpot not connected: run `enrichd connect hubspot`",
                    ws.id
                )),
                Err(e) => problems.push(format!("workspace {}: {e}", ws.id)),
            }
        }
        if let Some(CrmSettings::Salesforce(_)) = &ws.crm {
            match h
                .store
                .connection(&ws.id, crate::crm::salesforce::CRM)
                .await
            {
                Ok(Some(c)) if c.state == ConnectionState::Connected => {}
                Ok(Some(c)) => problems.push(format!(
                    "workspace {}: Salesforce reconnect required ({}): run `enrichd connect salesforce`",
                    ws.id, c.reason
                )),
                Ok(None) => problems.push(format!(
                    "workspace {}: Salesforce not connected: run `enrichd connect salesforce`",
                    ws.id
                )),
                Err(e) => problems.push(format!("workspace {}: {e}", ws.id)),
            }
        }
    }
    let body = serde_json::json!({ "ready": problems.is_empty(), "problems": problems });
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// Prometheus text exposition.
async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    // The gauges are read from the store at scrape time: the job queue by
    // kind and state, and leads by enrichment status.
    let mut queue: Vec<(String, String, String, u64)> = Vec::new();
    let mut leads: Vec<(String, String, u64)> = Vec::new();
    for ws in &h.settings.workspaces {
        match h.store.job_counts(&ws.id).await {
            Ok(rows) => queue.extend(rows.into_iter().map(|(kind, state, n)| {
                (
                    ws.id.to_string(),
                    kind,
                    state.as_str().to_string(),
                    u64::try_from(n).unwrap_or(0),
                )
            })),
            Err(e) => tracing::warn!(workspace = %ws.id, error = %e, "metrics: cannot count jobs"),
        }
        match h.store.status_counts(&ws.id).await {
            Ok(rows) => leads.extend(
                rows.into_iter()
                    .map(|(s, n)| (ws.id.to_string(), s, u64::try_from(n).unwrap_or(0))),
            ),
            Err(e) => tracing::warn!(workspace = %ws.id, error = %e, "metrics: cannot count leads"),
        }
    }
    let m = crate::metrics::metrics();
    m.replace_queue_depth(queue);
    m.replace_leads(leads);
    (
        [("content-type", crate::metrics::CONTENT_TYPE)],
        crate::metrics::metrics().render(),
    )
}

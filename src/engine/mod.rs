//! The enrichment engine: the I/O edge around the pure core. It prepares
//! leads (audiences, present values, what is missing), selects what fits the
//! budget and reserves it, runs each lead's waterfall against the provider
//! clients, stores values with their charges through the group-commit
//! writer, and settles the reservation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::clock::Clock;
use crate::config::Settings;
use crate::providers::def::BuildError;
use crate::store::{Store, StoreError};

pub mod asyncjobs;
pub mod callbacks;
pub mod client;
pub mod leadlocks;
pub mod limits;
pub mod report;
pub(crate) mod run;
pub mod writer;

use asyncjobs::{AsyncDispatcher, AsyncSettings, CallbackHub};
use client::ProviderClient;
use writer::{WriteError, Writer};

pub use run::RunOptions;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not save results: {0}")]
    Write(#[from] WriteError),
    #[error(transparent)]
    Provider(#[from] BuildError),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// Engine-wide counters.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub callbacks_accepted: AtomicU64,
    pub callbacks_rejected: AtomicU64,
}

/// How the engine is wired.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Public base URL of the callback endpoint (`<base>/callbacks/...`);
    /// `None` = no callbacks, async results are polled.
    pub callback_base: Option<String>,
    /// Share of each documented rate limit used (margin for jitter).
    pub headroom: f64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            callback_base: None,
            headroom: 0.98,
        }
    }
}

pub struct Engine {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub clients: BTreeMap<String, Arc<ProviderClient>>,
    dispatchers: BTreeMap<String, AsyncDispatcher>,
    pub hub: Arc<CallbackHub>,
    pub writer: Writer,
    pub clock: Arc<dyn Clock>,
    pub stats: EngineStats,
    /// Leads being enriched in this process (one run per lead at a time).
    leads: Arc<leadlocks::LeadLocks>,
    /// Per workspace: the async jobs a stopped process left open were taken
    /// up (once per process, before the first run reads a lead).
    resumed: std::sync::Mutex<
        std::collections::HashMap<crate::core::lead::WorkspaceId, Arc<tokio::sync::OnceCell<()>>>,
    >,
}

impl Engine {
    /// Builds the provider clients for every configured account and starts
    /// the writer and async dispatchers (must run inside a tokio runtime).
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        opts: EngineOptions,
    ) -> Result<Engine, EngineError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("enrichd/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| EngineError::Http(e.to_string()))?;
        let writer = Writer::start(store.clone());
        let hub = Arc::new(CallbackHub::default());
        let async_settings = Arc::new(AsyncSettings {
            window: settings.engine.batch_window,
            timeout: settings.engine.async_timeout,
            poll_interval: settings.engine.poll_interval,
            callback_base: opts.callback_base.clone(),
        });
        let mut clients = BTreeMap::new();
        let mut dispatchers = BTreeMap::new();
        for (id, account) in &settings.accounts {
            let client = Arc::new(ProviderClient::new(
                account.clone(),
                http.clone(),
                opts.headroom,
                settings.engine.max_retry_wait,
            )?);
            if client.finder.as_ref().is_some_and(|f| f.is_async()) {
                dispatchers.insert(
                    id.clone(),
                    AsyncDispatcher::start(
                        client.clone(),
                        hub.clone(),
                        writer.clone(),
                        async_settings.clone(),
                        clock.clone(),
                    ),
                );
            }
            clients.insert(id.clone(), client);
        }
        Ok(Engine {
            settings,
            store,
            clients,
            dispatchers,
            hub,
            writer,
            clock,
            stats: EngineStats::default(),
            leads: Arc::default(),
            resumed: Default::default(),
        })
    }
}

/// 32 hex characters from the OS random source (callback tokens, run ids).
pub fn random_token() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to time and address entropy (tokens
        // are then only unique, not unguessable; logged loudly).
        tracing::error!("OS random source unavailable; callback tokens are weak");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t ^ (&b as *const _ as u128)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

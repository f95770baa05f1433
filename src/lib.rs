//! enrichd: fills the contact channels leads are missing through a waterfall
//! of enrichment providers, under rate limits and a credit budget, and keeps
//! every value with the provider that supplied it.
//!
//! Layout (see ARCHITECTURE.md for the invariants):
//! - [`core`]: pure domain logic (channels, leads, audiences, usability
//!   rules, waterfall planning, ledger arithmetic).
//! - [`providers`]: one module per provider; pure request builders and
//!   answer classifiers.
//! - [`store`]: durable state (SQLite default, PostgreSQL), all SQL.
//! - [`config`]: config.toml and connector files → validated settings.
//! - [`engine`]: runs waterfalls against providers (limits, retries,
//!   async jobs, callbacks, group commit of results).

pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod crm;
pub mod crypto;
pub mod daemon;
pub mod engine;
pub mod metrics;
pub mod preview;
pub mod providers;
pub mod secret;
pub mod store;
pub mod telemetry;

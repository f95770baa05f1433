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

pub mod core;
pub mod providers;
pub mod secret;
pub mod store;

//! CRM connectors: one module per CRM, same shape (auth, client with limits,
//! pull, schema, write-back, change notifications). What they share lives
//! here: the durable change-notification record and the sink it goes to.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::core::lead::{LeadId, WorkspaceId};
use crate::core::value::UnixMillis;

pub mod hubspot;
pub mod pkce;
pub mod salesforce;
pub mod schema;

/// What a sync pass does besides reading (every CRM connector).
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Read every record again (a backfill), not just the changes.
    pub full: bool,
    /// Enrich the pulled leads (needs an engine).
    pub enrich: bool,
    /// Write values back to the CRM.
    pub write: bool,
}

impl Default for SyncOptions {
    /// A daemon's pass: the changes, enriched and written back.
    fn default() -> Self {
        SyncOptions {
            full: false,
            enrich: true,
            write: true,
        }
    }
}

/// A CRM change notification (HubSpot webhook event, Salesforce Outbound
/// Message notification), recorded durably before it is acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmEvent {
    pub workspace: WorkspaceId,
    /// "hubspot" or "salesforce".
    pub crm: String,
    /// Unique per (workspace, crm): a redelivered event has the same key.
    pub dedupe_key: String,
    /// The record the event is about (contact id, Lead/Contact id).
    pub lead_id: LeadId,
    /// e.g. "contact.creation", "contact.propertyChange".
    pub kind: String,
    /// The property that changed (propertyChange only).
    pub property: Option<String>,
    /// Its new value (propertyChange only).
    pub value: Option<String>,
    pub occurred_at: UnixMillis,
    /// The event as received (one element of the delivered batch).
    pub payload: serde_json::Value,
}

/// What recording a delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// Events stored now.
    pub inserted: usize,
    /// Events already stored before (redeliveries), left as they were.
    pub duplicates: usize,
}

pub type SinkFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Recorded, crate::store::StoreError>> + Send + 'a>>;

/// Where verified change notifications go: the store in production. A
/// delivery is acknowledged only after `record` returned `Ok`.
pub trait EventSink: Send + Sync {
    fn record(&self, events: Vec<CrmEvent>) -> SinkFuture<'_>;
}

/// The production sink: notifications go to the store (deduplicated by key)
/// in one transaction before the delivery is acknowledged.
pub struct StoreSink {
    pub store: std::sync::Arc<dyn crate::store::Store>,
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl EventSink for StoreSink {
    fn record(&self, events: Vec<CrmEvent>) -> SinkFuture<'_> {
        Box::pin(async move {
            let now = self.clock.now();
            self.store.record_events(&events, now).await
        })
    }
}

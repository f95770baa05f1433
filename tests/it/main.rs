//! One integration-test binary: real HTTP on loopback against the
//! simulators, real SQLite and PostgreSQL.

mod admin;
mod admin_salesforce;
mod budget;
mod check;
mod config_errors;
mod crash;
mod daemon;
mod db;
mod demo;
mod demo_salesforce;
mod exactly_once;
mod failures;
mod fullenrich;
mod hubspot;
mod jobs;
mod leases;
mod metrics;
mod misc;
mod preview;
mod replicas;
mod salesforce;
mod salesforce_edges;
mod salesforce_outbound;
mod salesforce_sync;
mod status;
mod store;
mod support;
mod verify;
mod waterfall;

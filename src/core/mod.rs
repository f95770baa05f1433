//! The pure core: no I/O, no clock, no database. Everything here is a
//! function of its inputs, so it is unit-tested exhaustively and shared by the
//! enrichment engine, previews and (later) the learned provider order.

pub mod audience;
pub mod channel;
pub mod jobs;
pub mod lead;
pub mod lease;
pub mod ledger;
pub mod mapping;
pub mod outcome;
pub mod plan;
pub mod status;
pub mod usable;
pub mod value;

//! Appliers: turn change events into writes on the target, through a per-domain mapping, one
//! source transaction per target transaction, with the stream offset stored in the same commit.

pub mod batch;
pub mod conflicts;
pub mod mysql;
pub mod ownership;

//! cdc-sync: keeps the monolith's tables and the services' tables in step, both ways — MySQL 8 or
//! MariaDB binlog → Debezium-compatible change events → idempotent apply with the offset committed
//! alongside, loop prevention by marker rows, and a CLI to run and inspect streams. Modules read
//! one way: model ← config ← source, apply ← backfill, verify, check ← transport ← pipeline ←
//! control (a stream run or paused by its control row).

pub mod apply;
pub mod backfill;
pub mod check;
pub mod config;
pub mod control;
pub mod error;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod source;
pub mod transport;
pub mod verify;

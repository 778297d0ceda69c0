//! cdc-sync: keeps the monolith's tables and the services' tables in step, both ways — MariaDB
//! binlog → Debezium-compatible change events → idempotent apply with the offset committed
//! alongside, loop prevention with `skip_replication`, and a CLI to run and inspect streams.

pub mod apply;
pub mod backfill;
pub mod check;
pub mod config;
pub mod error;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod source;
pub mod transport;
pub mod verify;

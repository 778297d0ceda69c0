//! Test kit: starts real, private MariaDB servers (binlog on, row format) and a real
//! Kafka-compatible broker (`tansu`) on free loopback ports, for integration tests and the dev stack.
//! Every process is tied to its owner: it dies, and its files go, when the owner drops it or exits.

mod error;
mod mariadb;
mod process;
mod shared;
mod tansu;

pub use error::TestkitError;
pub use mariadb::{MariaDb, MariaDbOptions, TestDatabase};
pub use process::{free_port, ProcessGuard, TempDir};
pub use shared::{monolith_server, services_server, MONOLITH_SERVER_ID, SERVICES_SERVER_ID};
pub use tansu::Tansu;

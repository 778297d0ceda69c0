//! Test kit: starts real, private MariaDB servers (binlog on, row format) and a real
//! Kafka-compatible broker (`tansu`) on free loopback ports, for integration tests and the dev stack.
//! Every process is tied to its owner: it dies, and its files go, when the owner drops it or exits.

pub mod contract;
pub mod docker;
mod error;
mod http;
pub mod launchdarkly;
mod mariadb;
pub mod openapi;
pub mod payment_sim;
mod process;
pub mod prometheus;
mod shared;
pub mod smtp_sink;
mod tansu;

pub use error::TestkitError;
pub use http::http_get;
pub use mariadb::{MariaDb, MariaDbOptions, TestDatabase};
pub use process::{ProcessGuard, TempDir, assert_success, free_port, workspace_binary};
pub use shared::{MONOLITH_SERVER_ID, SERVICES_SERVER_ID, monolith_server, services_server};
pub use tansu::Tansu;

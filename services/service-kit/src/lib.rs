//! service-kit: the plumbing the monolith and the four services share, so that they answer alike —
//! the JSON error format, request extractors, token keys and JWKS, password hashes, migrations,
//! metrics, health and readiness endpoints, logging and graceful shutdown.

pub mod db;
pub mod error;
pub mod extract;
pub mod format;
pub mod http;
pub mod jwt;
pub mod migrate;
pub mod outbox;
pub mod password;
pub mod users;
pub mod validate;

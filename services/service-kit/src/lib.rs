//! service-kit: what the monolith and the four services share, so that they answer alike — the
//! JSON error format, extractors, the users and products contracts, token keys and JWKS, password
//! hashes, config, migrations, the outbox, metrics, health, logging and graceful shutdown.

pub mod catalog_search;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod escrow;
pub mod extract;
pub mod format;
pub mod http;
pub mod jwks;
pub mod jwt;
pub mod migrate;
pub mod money;
pub mod notifications;
pub mod orders;
pub mod outbox;
pub mod password;
pub mod products;
pub mod users;
pub mod validate;

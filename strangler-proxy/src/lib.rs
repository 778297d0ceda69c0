//! strangler-proxy: the Pingora data plane that sends each route to the monolith or its new
//! service by per-route flag (monolith, shadow, sticky canary, service), with fallback to the
//! monolith, circuit breakers, hot-reloaded routing and an admin API with Prometheus metrics.

pub mod admin;
pub mod breaker;
pub mod config;
pub mod control;
pub mod fleet;
pub mod header_edit;
pub mod hold;
pub mod jwks;
pub mod live;
pub mod metrics;
pub mod proxy;
pub mod release;
pub mod retired;
pub mod routing;
pub mod shadow;
pub mod trace;
pub mod upstream;
pub mod user_key;

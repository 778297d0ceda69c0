//! Upstream groups: several backends, round robin over the healthy ones, timeouts for Pingora's
//! peers (which pool and reuse connections), and active HTTP health checks.

mod group;
mod health;

pub use group::{Backend, UpstreamGroup};
pub use health::spawn_health_checks;

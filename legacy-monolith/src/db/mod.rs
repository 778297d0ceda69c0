//! Database access for the `shop` schema: the pool and error codes from service-kit, and the
//! monolith's migrations.

pub mod migrate;

pub use service_kit::db::*;

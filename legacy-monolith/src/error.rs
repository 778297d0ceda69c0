//! The monolith's error type and JSON error format: the shop-wide one from service-kit.

pub use service_kit::error::*;

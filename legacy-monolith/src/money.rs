//! Money as integer cents (service-kit's, shared by every side that prices things).

pub use service_kit::money::*;

//! Products and inventory: the shared products contract and handlers of service-kit, which
//! product-service serves too.

pub use service_kit::products::*;

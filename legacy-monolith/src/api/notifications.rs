//! Notifications: the shared read contract of service-kit, which notification-service serves too.

pub use service_kit::notifications::*;

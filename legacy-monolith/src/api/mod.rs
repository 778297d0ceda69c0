//! The public JSON API, one module per domain the services will take over: users, products
//! (with inventory), orders (with payments) and notifications.

pub mod extract {
    //! The shared request extractors (service-kit), under the monolith's old path.
    pub use service_kit::extract::*;
}
pub mod notifications;
pub mod orders;
pub mod products;
pub mod users;

pub use service_kit::format::{PageQuery, timestamp};

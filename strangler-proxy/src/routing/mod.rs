//! The routing table: routes matched by method, host and path (exact, `{param}` pattern or
//! prefix), each with its flag, its service and monolith groups and its circuit breaker. A new
//! table is built from config off the request path and installed with one pointer swap.

mod pattern;
mod table;

pub use pattern::PathMatch;
pub use table::{Route, RoutingTable};

//! Database access for the `shop` schema: the pool (generic plumbing from service-kit), the
//! monolith's migrations, its traced statements, and the server errors it treats specially.

pub mod migrate;
pub mod statement;
pub mod traced;

pub use service_kit::db::{ensure_database, pool_with_ids};
pub use traced::{Db, Traced};

/// The MariaDB/MySQL error number of a server error.
pub fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Deadlock (1213) or lock wait timeout (1205): the whole transaction may be run again.
pub fn is_retryable(e: &mysql_async::Error) -> bool {
    matches!(server_code(e), Some(1213 | 1205))
}

/// Duplicate key (1062).
pub fn is_duplicate(e: &mysql_async::Error) -> bool {
    server_code(e) == Some(1062)
}

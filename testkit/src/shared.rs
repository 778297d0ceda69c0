//! One monolith server and one services server per test process, started on first use and shared
//! by every test in it; each test takes its own database from them, so tests run in parallel.

use std::sync::OnceLock;

use crate::mariadb::{MariaDb, MariaDbOptions};

/// `server_id` of the monolith's database server.
pub const MONOLITH_SERVER_ID: u32 = 1;
/// `server_id` of the services' database server.
pub const SERVICES_SERVER_ID: u32 = 2;

static MONOLITH: OnceLock<MariaDb> = OnceLock::new();
static SERVICES: OnceLock<MariaDb> = OnceLock::new();

fn shared(cell: &'static OnceLock<MariaDb>, name: &str, server_id: u32) -> &'static MariaDb {
    cell.get_or_init(|| {
        MariaDb::start(MariaDbOptions::new(name, server_id))
            .unwrap_or_else(|e| panic!("starting the shared {name} MariaDB server: {e}"))
    })
}

/// The process-wide monolith database server (server_id 1). Panics with the reason if it cannot start.
pub fn monolith_server() -> &'static MariaDb {
    shared(&MONOLITH, "monolith", MONOLITH_SERVER_ID)
}

/// The process-wide services database server (server_id 2). Panics with the reason if it cannot start.
pub fn services_server() -> &'static MariaDb {
    shared(&SERVICES, "services", SERVICES_SERVER_ID)
}

//! The monolith's schema migrations, run at start by service-kit's migration runner.

pub use service_kit::migrate::*;

/// The monolith's migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "shop",
        sql: include_str!("../../migrations/0001_shop.sql"),
    },
    Migration {
        version: 2,
        name: "stock_escrow",
        sql: include_str!("../../migrations/0002_stock_escrow.sql"),
    },
    Migration {
        version: 3,
        name: "stock_escrow_tally",
        sql: include_str!("../../migrations/0003_stock_escrow_tally.sql"),
    },
    Migration {
        version: 4,
        name: "catalog_indexes",
        sql: include_str!("../../migrations/0004_catalog_indexes.sql"),
    },
];

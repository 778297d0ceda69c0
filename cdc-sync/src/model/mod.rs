//! The event model: Debezium's change-event envelope (both the bare and the `schema` + `payload`
//! JSON forms), the value encodings Debezium uses for each column type, table schemas, source
//! transactions with their offsets, and the table mappings between the two sides.

pub mod debezium;
pub mod mapping;
pub mod schema;
pub mod server;
pub mod transaction;
pub mod values;

//! The event model: Debezium's change-event envelope (both the bare and the `schema` + `payload`
//! JSON forms) and the value encodings Debezium uses for each MySQL/MariaDB column type.

pub mod debezium;
pub mod values;

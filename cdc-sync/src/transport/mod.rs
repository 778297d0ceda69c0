//! How events travel from the binlog reader to the applier: in process (`direct`) or through
//! Kafka topics in Debezium's format (`kafka`).

pub mod direct;
pub mod kafka;

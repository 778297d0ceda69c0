//! How events travel from the binlog reader to the applier: in process (`crate::pipeline`) or
//! through Kafka topics in Debezium's format.

pub mod kafka;

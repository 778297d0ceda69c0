//! Sources of change events: the binlog (row events decoded with the table's schema, grouped by
//! source transaction, with offsets as file:pos plus GTID), and where a stream starts reading.

pub mod binlog;
pub mod gtid;
pub mod position;
pub mod schema;

//! Sources of change events: the MariaDB binlog (row events decoded with the table's schema,
//! grouped by source transaction, with offsets as file:pos plus GTID).

pub mod binlog;

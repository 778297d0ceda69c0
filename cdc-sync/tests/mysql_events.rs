//! MySQL 8's binlog events, decoded by cdc-sync's reader without a MySQL server: a byte stream
//! made by MySQL's documented format (the GTID event by `mysql_common`'s own serializer; table map
//! with optional metadata, rows events v2, XID by hand), read back by `mysql_common`'s event
//! reader as the network stream would deliver it, then through the same decoder the stream uses.

use std::collections::HashSet;

use cdc_sync::model::schema::{Column, ColumnKind, TableSchema};
use cdc_sync::source::binlog::Decoder;
use cdc_sync::source::schema::SchemaCache;
use mysql_common::binlog::EventStreamReader;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::GtidEvent;
use mysql_common::proto::MySerialize;

const SERVER_ID: u32 = 8403;
const SID: [u8; 16] = [
    0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x63,
];

/// Events with their headers (19 bytes, no checksums), positions from 4 on.
struct Binlog {
    bytes: Vec<u8>,
    pos: u32,
}

impl Binlog {
    fn new() -> Self {
        Self {
            bytes: Vec::new(),
            pos: 4,
        }
    }

    fn event(&mut self, event_type: u8, body: &[u8]) -> u32 {
        let size = 19 + body.len() as u32;
        self.pos += size;
        self.bytes.extend(1_764_770_000u32.to_le_bytes());
        self.bytes.push(event_type);
        self.bytes.extend(SERVER_ID.to_le_bytes());
        self.bytes.extend(size.to_le_bytes());
        self.bytes.extend(self.pos.to_le_bytes());
        self.bytes.extend(0u16.to_le_bytes());
        self.bytes.extend(body);
        self.pos
    }
}

/// FORMAT_DESCRIPTION_EVENT of a MySQL 8.4 server, checksums off (header lengths: defaults).
fn format_description() -> Vec<u8> {
    let mut b = 4u16.to_le_bytes().to_vec();
    let mut version = b"8.4.3-fixture".to_vec();
    version.resize(50, 0);
    b.extend(version);
    b.extend(0u32.to_le_bytes());
    b.push(19);
    // checksum algorithm: off, then the (unused) checksum.
    b.push(0);
    b.extend([0; 4]);
    b
}

/// GTID_EVENT (33) as mysql_common serializes MySQL's format.
fn gtid(gno: u64) -> Vec<u8> {
    let mut b = Vec::new();
    GtidEvent::new(SID, gno)
        .with_last_committed(gno - 1)
        .with_sequence_number(gno)
        .serialize(&mut b);
    b
}

fn lenenc(n: u64) -> Vec<u8> {
    assert!(n < 251);
    vec![n as u8]
}

/// TABLE_MAP_EVENT (19) with binlog_row_metadata=FULL's optional metadata: signedness,
/// column names, simple primary key. Columns: id BIGINT, name VARCHAR(50) NULL, stock INT
/// UNSIGNED.
fn table_map(table_id: u64, db: &str, table: &str) -> Vec<u8> {
    let mut b = table_id.to_le_bytes()[..6].to_vec();
    b.extend(1u16.to_le_bytes());
    for name in [db, table] {
        b.push(name.len() as u8);
        b.extend(name.as_bytes());
        b.push(0);
    }
    b.extend(lenenc(3));
    // MYSQL_TYPE_LONGLONG, MYSQL_TYPE_VARCHAR, MYSQL_TYPE_LONG.
    b.extend([8, 15, 3]);
    // VARCHAR(50) in utf8mb4: at most 200 bytes.
    let meta = 200u16.to_le_bytes();
    b.extend(lenenc(meta.len() as u64));
    b.extend(meta);
    // Nullable: name.
    b.push(0b010);
    // SIGNEDNESS (1): one bit per numeric column, most significant first: id signed, stock not.
    b.extend([1, 1, 0b0100_0000]);
    // COLUMN_NAME (4).
    let mut names = Vec::new();
    for n in ["id", "name", "stock"] {
        names.extend(lenenc(n.len() as u64));
        names.extend(n.as_bytes());
    }
    b.push(4);
    b.extend(lenenc(names.len() as u64));
    b.extend(names);
    // SIMPLE_PRIMARY_KEY (8): column 0.
    b.extend([8, 1, 0]);
    b
}

/// A row image: null bitmap, then id, name, stock.
fn row(id: i64, name: Option<&str>, stock: u32) -> Vec<u8> {
    let mut b = vec![if name.is_none() { 0b010 } else { 0 }];
    b.extend(id.to_le_bytes());
    if let Some(n) = name {
        b.push(n.len() as u8);
        b.extend(n.as_bytes());
    }
    b.extend(stock.to_le_bytes());
    b
}

/// WRITE_ROWS_EVENT (30) or UPDATE_ROWS_EVENT (31), version 2.
fn rows_v2(table_id: u64, images: &[Vec<u8>], update: bool) -> Vec<u8> {
    let mut b = table_id.to_le_bytes()[..6].to_vec();
    // STMT_END_F.
    b.extend(1u16.to_le_bytes());
    // Extra data: its own length only.
    b.extend(2u16.to_le_bytes());
    b.extend(lenenc(3));
    b.push(0b111);
    if update {
        b.push(0b111);
    }
    for image in images {
        b.extend(image);
    }
    b
}

fn xid(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

fn users_schema() -> TableSchema {
    let col = |name: &str, kind: ColumnKind, nullable: bool| Column {
        name: name.into(),
        kind,
        nullable,
    };
    TableSchema {
        db: "shop".into(),
        table: "users".into(),
        columns: vec![
            col(
                "id",
                ColumnKind::Int {
                    unsigned: false,
                    bits: 64,
                },
                false,
            ),
            col("name", ColumnKind::Text, true),
            col(
                "stock",
                ColumnKind::Int {
                    unsigned: true,
                    bits: 32,
                },
                false,
            ),
        ],
        primary_key: vec![0],
    }
}

#[tokio::test]
async fn mysql_gtid_table_map_and_rows_v2_events_decode() {
    let mut log = Binlog::new();
    log.event(15, &format_description());
    // A transaction as MySQL 8 writes it: GTID, BEGIN (a query event), table map, rows, XID.
    log.event(33, &gtid(41));
    let begin = {
        // thread id, exec time, schema length, error code, status vars length, schema, query.
        let mut b = 7u32.to_le_bytes().to_vec();
        b.extend(0u32.to_le_bytes());
        b.push(4);
        b.extend(0u16.to_le_bytes());
        b.extend(0u16.to_le_bytes());
        b.extend(b"shop\0BEGIN");
        b
    };
    log.event(2, &begin);
    log.event(19, &table_map(108, "shop", "users"));
    log.event(
        30,
        &rows_v2(
            108,
            &[row(1, Some("ada"), u32::MAX), row(2, None, 0)],
            false,
        ),
    );
    log.event(
        31,
        &rows_v2(108, &[row(2, None, 0), row(2, Some("bob"), 5)], true),
    );
    let first_end = log.event(16, &xid(900));
    // cdc-sync's own transaction (its offset row first, then the rows it applied): skipped.
    log.event(33, &gtid(42));
    log.event(2, &begin);
    log.event(19, &table_map(109, "strangler_cdc", "cdc_offsets"));
    log.event(30, &rows_v2(109, &[row(9, Some("s2m"), 1)], false));
    log.event(19, &table_map(108, "shop", "users"));
    log.event(30, &rows_v2(108, &[row(3, Some("echo"), 1)], false));
    let second_end = log.event(16, &xid(901));

    let mut schemas = SchemaCache::new(mysql_async::Pool::new("mysql://nobody@127.0.0.1:9"));
    schemas.insert(users_schema());
    let mut decoder = Decoder::new(
        "m2s",
        HashSet::from(["shop.users".to_string()]),
        "binlog.000001",
        schemas,
    );
    let mut reader = EventStreamReader::new(BinlogVersion::Version4);
    let mut input = &log.bytes[..];
    let mut txns = Vec::new();
    while !input.is_empty() {
        let event = reader.read(&mut input).unwrap().unwrap();
        if let Some(t) = decoder
            .event(&event, |id| reader.get_tme(id))
            .await
            .unwrap()
        {
            txns.push(t);
        }
    }
    assert_eq!(txns.len(), 2, "{txns:#?}");
    let t = &txns[0];
    let gtid = "3e11fa47-71ca-11e1-9e33-c80aa9429563:41";
    assert_eq!(t.gtid.as_deref(), Some(gtid));
    assert_eq!(
        (t.end.file.as_str(), t.end.pos),
        ("binlog.000001", u64::from(first_end))
    );
    assert!(!t.marked);
    assert_eq!(t.events.len(), 3);
    let after = |i: usize| serde_json::Value::Object(t.events[i].envelope.after.clone().unwrap());
    assert_eq!(
        after(0),
        serde_json::json!({"id": 1, "name": "ada", "stock": 4_294_967_295u64})
    );
    assert_eq!(
        after(1),
        serde_json::json!({"id": 2, "name": null, "stock": 0})
    );
    assert_eq!(
        t.events[2].envelope.before.as_ref().unwrap()["name"],
        serde_json::Value::Null
    );
    assert_eq!(
        after(2),
        serde_json::json!({"id": 2, "name": "bob", "stock": 5})
    );
    let source = &t.events[0].envelope.source;
    assert_eq!(source.connector, "mysql");
    assert_eq!(source.server_id, u64::from(SERVER_ID));
    assert_eq!(source.gtid.as_deref(), Some(gtid));
    assert_eq!(t.events[0].envelope.transaction.as_ref().unwrap().id, gtid);
    // The marked transaction: nothing to apply, its rows counted as suppressed, the offset on.
    let m = &txns[1];
    assert!(m.marked && m.events.is_empty(), "{m:#?}");
    assert_eq!(m.suppressed, 1);
    assert_eq!(m.end.pos, u64::from(second_end));
    assert_eq!(
        m.gtid.as_deref(),
        Some("3e11fa47-71ca-11e1-9e33-c80aa9429563:42")
    );
}

//! The binlog reader: streams a MySQL or MariaDB binlog from an offset with `mysql_async`, takes
//! GTIDs of both (MySQL's event decoded by mysql_async, MariaDB's parsed by hand), decodes row
//! events with schemas from `information_schema` (reloaded on DDL; a column-count mismatch stops
//! the stream at that offset), skips transactions cdc-sync wrote itself (a marker-table row;
//! in `mariadb-native` mode also the `skip_replication` flag, 0x8000) and emits whole
//! transactions.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt as _;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Conn, Opts, Pool};
use serde_json::{Map, Value};

use crate::config::{ServerMode, StreamConfig};
use crate::error::CdcError;
use crate::model::debezium::{ChangeEvent, Envelope, Op, Snapshot, Source};
use crate::model::schema::TableSchema;
use crate::model::server::{Flavor, ServerInfo, is_marker};
use crate::model::transaction::{Offset, Transaction};
use crate::model::values::encode;
use crate::source::gtid::{MARIADB_GTID_EVENT, MariaGtid};
use crate::source::schema::SchemaCache;

/// Flag of events written with `SET SESSION skip_replication=1`.
pub const SKIP_REPLICATION_FLAG: u16 = 0x8000;

/// What to read.
#[derive(Debug, Clone)]
pub struct BinlogSource {
    /// Portable, or MariaDB's own features too.
    pub mode: ServerMode,
    pub url: String,
    /// Our replica `server_id`, distinct from every real server.
    pub reader_server_id: u32,
    /// Debezium's `source.name` (and topic prefix).
    pub name: String,
    /// `db.table` of every table to capture.
    pub tables: HashSet<String>,
}

struct Pending {
    gtid: Option<String>,
    marked: bool,
    /// Inside BEGIN … COMMIT: a DDL statement here does not end the transaction.
    begun: bool,
    events: Vec<ChangeEvent>,
    suppressed: u64,
}

impl BinlogSource {
    /// The reader of `config`'s stream (its tables; signals are added by the caller).
    pub fn for_stream(config: &StreamConfig) -> Self {
        Self {
            mode: config.mode,
            url: config.source_url.clone(),
            reader_server_id: config.reader_server_id,
            name: config.name.clone(),
            tables: config.tables.iter().map(|t| t.source.clone()).collect(),
        }
    }

    /// The server's family and version (`SELECT VERSION()`); `mariadb-native` mode refuses a
    /// MySQL server.
    pub async fn server(conn: &mut Conn, mode: ServerMode) -> Result<ServerInfo, CdcError> {
        let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
        let info = ServerInfo::parse(&version.unwrap_or_default()).map_err(CdcError::Config)?;
        if mode == ServerMode::MariadbNative && info.flavor != Flavor::MariaDb {
            return Err(CdcError::Config(format!(
                "mode = \"mariadb-native\" needs a MariaDB server; this one is {}",
                info.describe()
            )));
        }
        Ok(info)
    }

    /// The source's current binlog position (`SHOW BINARY LOG STATUS` on MySQL 8.2 and later,
    /// `SHOW MASTER STATUS` elsewhere), with the GTID set where the mode allows reading it.
    pub async fn current_position(pool: &Pool, mode: ServerMode) -> Result<Offset, CdcError> {
        let mut conn = pool.get_conn().await?;
        let server = Self::server(&mut conn, mode).await?;
        let row: Option<mysql_async::Row> = conn.query_first(server.binlog_status_sql()).await?;
        let mut row = row
            .ok_or_else(|| CdcError::Config("the source has no binlog (log_bin is off)".into()))?;
        let gtid: Option<String> = match (server.flavor, mode) {
            // Executed_Gtid_Set, the fifth column.
            (Flavor::MySql, _) => row.take_opt(4).and_then(Result::ok),
            (Flavor::MariaDb, ServerMode::MariadbNative) => {
                conn.query_first("SELECT @@gtid_binlog_pos").await?
            }
            (Flavor::MariaDb, ServerMode::Portable) => None,
        };
        Ok(Offset {
            file: row.take(0).expect("file"),
            pos: row.take(1).expect("position"),
            gtid: gtid.filter(|g| !g.is_empty()),
        })
    }

    /// Streams from `start`, sending each committed transaction to `out`, until the channel
    /// closes or an error stops the stream (the error says at which offset).
    pub async fn run(
        &self,
        start: Offset,
        out: tokio::sync::mpsc::Sender<Transaction>,
    ) -> Result<(), CdcError> {
        let opts =
            Opts::from_url(&self.url).map_err(|e| CdcError::Config(format!("source url: {e}")))?;
        let pool = Pool::new(opts.clone());
        let schemas = SchemaCache::new(pool.clone());
        let mut conn = Conn::new(opts).await?;
        let server = Self::server(&mut conn, self.mode).await?;
        // Debezium's connector names.
        let connector = match server.flavor {
            Flavor::MySql => "mysql",
            Flavor::MariaDb => "mariadb",
        };
        let native = self.mode == ServerMode::MariadbNative;
        if native {
            // MariaDB's GTID events instead of the BEGIN events it sends MySQL replicas.
            conn.query_drop("SET @mariadb_slave_capability=4").await?;
        }
        let request = BinlogStreamRequest::new(self.reader_server_id)
            .with_filename(start.file.as_bytes())
            .with_pos(start.pos);
        let mut stream = conn.get_binlog_stream(request).await?;
        let mut decoder = Decoder {
            name: self.name.clone(),
            tables: self.tables.clone(),
            native,
            connector,
            file: start.file.clone(),
            pending: None,
            schemas,
        };
        while let Some(event) = stream.next().await {
            let event = event?;
            if let Some(txn) = decoder.event(&event, |id| stream.get_tme(id)).await?
                && out.send(txn).await.is_err()
            {
                break;
            }
        }
        let _ = stream.close().await;
        pool.disconnect().await?;
        Ok(())
    }
}

/// Turns binlog events, in order, into whole source transactions: GTIDs of both flavours,
/// BEGIN/COMMIT/XID framing, DDL, row events decoded with the table's schema, cdc-sync's own
/// transactions marked. Fed by the stream, or by any `mysql_common` event reader (fixtures).
pub struct Decoder {
    /// Debezium's `source.name`.
    pub name: String,
    /// `db.table` of every table to capture.
    pub tables: HashSet<String>,
    /// Honour the `skip_replication` flag (`mariadb-native`).
    pub native: bool,
    /// Debezium's connector name: `mysql` or `mariadb`.
    pub connector: &'static str,
    /// The binlog file being read.
    pub file: String,
    pending: Option<Pending>,
    schemas: SchemaCache,
}

impl Decoder {
    /// A decoder reading `file` with schemas from `schemas`.
    pub fn new(name: &str, tables: HashSet<String>, file: &str, schemas: SchemaCache) -> Self {
        Self {
            name: name.to_string(),
            tables,
            native: false,
            connector: "mysql",
            file: file.to_string(),
            pending: None,
            schemas,
        }
    }

    /// Takes the next event; a transaction when it committed. `tme` finds the table map of a
    /// table id, as the reader that read the event tracked it.
    pub async fn event<'t>(
        &mut self,
        event: &Event,
        tme: impl Fn(u64) -> Option<&'t TableMapEvent<'static>>,
    ) -> Result<Option<Transaction>, CdcError> {
        let header = event.header();
        let next_pos = u64::from(header.log_pos());
        let pos = next_pos.saturating_sub(u64::from(header.event_size()));
        let marked = self.native && header.flags_raw() & SKIP_REPLICATION_FLAG != 0;
        let decode_err = |message: String| CdcError::Decode {
            file: self.file.clone(),
            pos,
            message,
        };
        if header.event_type_raw() == MARIADB_GTID_EVENT {
            let gtid = MariaGtid::parse(event.data())
                .ok_or_else(|| decode_err("truncated MariaDB GTID event".into()))?;
            self.pending = Some(Pending {
                gtid: Some(format!(
                    "{}-{}-{}",
                    gtid.domain_id,
                    header.server_id(),
                    gtid.seq_no
                )),
                marked,
                // A transaction's GTID event stands for its BEGIN.
                begun: !gtid.standalone(),
                events: Vec::new(),
                suppressed: 0,
            });
            return Ok(None);
        }
        let data = event.read_data().map_err(|e| decode_err(e.to_string()))?;
        let commit = match data {
            Some(EventData::RotateEvent(r)) => {
                let name = r.name().to_string();
                // The artificial rotate that opens a stream (log_pos 0) arrives before the
                // format description, so its name still carries the 4-byte checksum.
                self.file = if header.log_pos() != 0 {
                    name
                } else if !self.file.is_empty() && name.starts_with(self.file.as_str()) {
                    self.file.clone()
                } else {
                    name.get(..name.len().saturating_sub(4))
                        .unwrap_or(&name)
                        .to_string()
                };
                false
            }
            Some(EventData::GtidEvent(g)) => {
                // MySQL's GTID event (type 33): `uuid:gno`; BEGIN follows for DML.
                self.pending = Some(Pending {
                    gtid: Some(format!("{}:{}", uuid_text(&g.sid()), g.gno())),
                    marked,
                    begun: false,
                    events: Vec::new(),
                    suppressed: 0,
                });
                false
            }
            Some(EventData::QueryEvent(q)) => {
                let sql = q.query().trim().to_string();
                if sql.eq_ignore_ascii_case("BEGIN") {
                    let p = self.pending.get_or_insert_with(|| Pending {
                        gtid: None,
                        marked,
                        begun: true,
                        events: Vec::new(),
                        suppressed: 0,
                    });
                    p.begun = true;
                    false
                } else if sql.eq_ignore_ascii_case("COMMIT") {
                    true
                } else if sql.starts_with('#') {
                    // A comment only: MariaDB's stand-in for events a MySQL replica does not
                    // take (annotate rows, binlog checkpoints), sent in portable mode.
                    false
                } else {
                    // DDL: schemas of that database may have changed.
                    tracing::info!(db = %q.schema(), query = %sql, at = %format!("{}:{pos}", self.file), "DDL seen; schemas will be reloaded");
                    self.schemas.invalidate(&q.schema());
                    self.pending.as_ref().is_none_or(|p| !p.begun)
                }
            }
            Some(EventData::RowsEvent(rows)) => {
                let Some(p) = self.pending.as_mut() else {
                    return Err(decode_err("rows event outside a transaction".into()));
                };
                let table_map = tme(rows.table_id()).ok_or_else(|| {
                    decode_err(format!("no table map for table id {}", rows.table_id()))
                })?;
                let (db, table, ncols) = (
                    table_map.database_name().to_string(),
                    table_map.table_name().to_string(),
                    table_map.columns_count() as usize,
                );
                if is_marker(&table) {
                    // cdc-sync's own transaction: nothing in it is read back.
                    p.marked = true;
                    p.suppressed += p.events.len() as u64;
                    p.events.clear();
                    return Ok(None);
                }
                if !self.tables.contains(&format!("{db}.{table}")) {
                    return Ok(None);
                }
                if p.marked || marked {
                    p.suppressed += 1;
                    return Ok(None);
                }
                let mut schema = self.schemas.get(&db, &table).await?;
                if schema.columns.len() != ncols {
                    self.schemas.invalidate(&db);
                    schema = self.schemas.get(&db, &table).await?;
                    if schema.columns.len() != ncols {
                        return Err(CdcError::Schema {
                            table: format!("{db}.{table}"),
                            file: self.file.clone(),
                            pos,
                            message: format!(
                                "the binlog row has {ncols} columns, the table now has {}",
                                schema.columns.len()
                            ),
                        });
                    }
                }
                let op = match &rows {
                    RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                        Op::Create
                    }
                    RowsEventData::UpdateRowsEvent(_)
                    | RowsEventData::UpdateRowsEventV1(_)
                    | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
                    _ => Op::Delete,
                };
                for (row_no, row) in rows.rows(table_map).enumerate() {
                    let (before, after) = row.map_err(|e| decode_err(e.to_string()))?;
                    let to_map = |r: Option<mysql_async::binlog::row::BinlogRow>| -> Result<Option<Map<String, Value>>, CdcError> {
                        let Some(r) = r else { return Ok(None) };
                        let mut m = Map::new();
                        for (i, col) in schema.columns.iter().enumerate() {
                            let v = r.as_ref(i).ok_or_else(|| decode_err(format!("column {} missing from the row image (binlog_row_image must be FULL)", col.name)))?;
                            m.insert(col.name.clone(), encode(&col.kind, v).map_err(|e| decode_err(format!("{db}.{table}.{}: {e}", col.name)))?);
                        }
                        Ok(Some(m))
                    };
                    let source = Source {
                        version: env!("CARGO_PKG_VERSION").into(),
                        connector: self.connector.into(),
                        name: self.name.clone(),
                        ts_ms: i64::from(header.timestamp()) * 1000,
                        snapshot: Snapshot::Text("false".into()),
                        db: db.clone(),
                        sequence: None,
                        table: Some(table.clone()),
                        server_id: u64::from(header.server_id()),
                        gtid: p.gtid.clone(),
                        file: self.file.clone(),
                        pos,
                        row: row_no as u32,
                        thread: None,
                        query: None,
                    };
                    let (before, after) = (to_map(before)?, to_map(after)?);
                    push_change(&mut p.events, &schema, op, before, after, source);
                }
                false
            }
            Some(EventData::XidEvent(_)) => true,
            _ => false,
        };
        if commit {
            let mut p = self.pending.take();
            // Debezium's transaction metadata: order in the transaction and per table.
            if let Some(p) = p.as_mut() {
                let id = p
                    .gtid
                    .clone()
                    .unwrap_or_else(|| format!("{}:{next_pos}", self.file));
                let mut per_table: std::collections::HashMap<String, u64> = Default::default();
                for (i, ev) in p.events.iter_mut().enumerate() {
                    let n = per_table.entry(ev.schema.qualified()).or_default();
                    *n += 1;
                    ev.envelope.transaction = Some(crate::model::debezium::TransactionBlock {
                        id: id.clone(),
                        total_order: i as u64 + 1,
                        data_collection_order: *n,
                    });
                }
            }
            let txn = Transaction {
                end: Offset {
                    file: self.file.clone(),
                    pos: next_pos,
                    gtid: p.as_ref().and_then(|p| p.gtid.clone()),
                },
                gtid: p.as_ref().and_then(|p| p.gtid.clone()),
                ts_ms: i64::from(header.timestamp()) * 1000,
                suppressed: p.as_ref().map_or(0, |p| p.suppressed),
                marked: p.as_ref().is_some_and(|p| p.marked) || marked,
                events: p.map(|p| p.events).unwrap_or_default(),
            };
            return Ok(Some(txn));
        }
        Ok(None)
    }
}

/// Adds a change; an update that changes the primary key becomes a delete and a create, as
/// Debezium emits it.
fn push_change(
    events: &mut Vec<ChangeEvent>,
    schema: &Arc<TableSchema>,
    op: Op,
    before: Option<Map<String, Value>>,
    after: Option<Map<String, Value>>,
    source: Source,
) {
    let ts = chrono::Utc::now().timestamp_millis();
    let key_of = |m: &Option<Map<String, Value>>| {
        m.as_ref().map(|m| {
            schema
                .primary_key
                .iter()
                .map(|&i| m.get(&schema.columns[i].name).cloned())
                .collect::<Vec<_>>()
        })
    };
    let make = |op, before, after| ChangeEvent {
        schema: schema.clone(),
        envelope: Envelope {
            before,
            after,
            source: source.clone(),
            op,
            ts_ms: Some(ts),
            ts_us: None,
            transaction: None,
        },
    };
    if op == Op::Update && key_of(&before) != key_of(&after) {
        events.push(make(Op::Delete, before, None));
        events.push(make(Op::Create, None, after));
    } else {
        events.push(make(op, before, after));
    }
}

/// A MySQL server UUID in its usual text form.
fn uuid_text(sid: &[u8; 16]) -> String {
    let h: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

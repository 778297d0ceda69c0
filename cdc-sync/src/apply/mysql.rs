//! The MySQL/MariaDB applier: each source transaction becomes one target transaction of
//! idempotent statements (upsert of the full row image, delete by key) plus the stream's offset
//! row, committed together. The offset row comes first in each transaction and marks it as
//! cdc-sync's own (no stream reads it back); `mariadb-native` mode also sets `skip_replication`.
//! Every target column an event names must exist in the target table. With conflict detection on, each row is first compared
//! (under a row lock) with the event's `before` image: a row the target changed on its own since
//! is a conflict, resolved by the stream's owner (`source` applies, `target` keeps its row).

use std::collections::HashMap;

use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Pool, Value};

use super::conflicts::{Check, Conflict, key_forms, key_text, same_value};
use crate::config::{Owner, ServerMode, StreamConfig};
use crate::error::CdcError;
use crate::model::debezium::{ChangeEvent, Op};
use crate::model::mapping::{TableMapping, default_sql_value};
use crate::model::schema::ColumnKind;
use crate::model::server::quote_ident;
use crate::model::transaction::{Offset, Transaction};
use crate::model::values::decode;

/// A pool whose connections run in UTC and keep their session settings between uses.
pub fn utc_pool(url: &str) -> Result<Pool, CdcError> {
    let opts = Opts::from_url(url).map_err(|e| CdcError::Config(format!("{url}: {e}")))?;
    Ok(Pool::new(
        OptsBuilder::from_opts(opts)
            .init(vec!["SET time_zone = '+00:00'"])
            .pool_opts(mysql_async::PoolOpts::default().with_reset_connection(false)),
    ))
}

/// Applies transactions to the target.
#[derive(Clone)]
pub struct MysqlApplier {
    pool: Pool,
    stream: String,
    offsets_table: String,
    stats_table: String,
    /// `<offsets_db>.cdc_conflicts`: the dead letters of conflicts, both images each.
    conflicts_table: String,
    /// Per-user write ownership (a write canary's `[ownership]`).
    ownership: Option<std::sync::Arc<super::ownership::Ownership>>,
    mappings: HashMap<String, TableMapping>,
    conflicts: Option<Owner>,
    /// `mariadb-native` marks transactions with `skip_replication` too.
    mode: ServerMode,
    /// Columns of each target table, as the target has them: no other name reaches SQL.
    target_columns:
        std::sync::Arc<std::sync::Mutex<HashMap<String, std::collections::HashSet<String>>>>,
}

/// What one applied transaction did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Row statements executed.
    pub statements: usize,
    /// Conflicts seen (and resolved by the owner rule).
    pub conflicts: Vec<Conflict>,
    /// Rows compared with the target's row: by the applier, and by the server.
    pub checks: (usize, usize),
}

type Row = serde_json::Map<String, serde_json::Value>;

/// Upsert rows waiting to go out as one statement.
struct Upserts {
    head: String,
    tail: String,
    width: usize,
    rows: usize,
    params: Vec<Value>,
}

async fn flush(
    tx: &mut mysql_async::Transaction<'_>,
    pending: &mut Option<Upserts>,
    applied: &mut Applied,
) -> Result<(), CdcError> {
    if let Some(p) = pending.take() {
        let row = format!("({})", vec!["?"; p.width].join(", "));
        let sql = format!("{}{}{}", p.head, vec![row; p.rows].join(", "), p.tail);
        tx.exec_drop(sql, p.params).await?;
        applied.statements += p.rows;
    }
    Ok(())
}

/// Queues an upsert (consecutive upserts of one table with the same columns go out as one
/// multi-row statement; rows apply in order, so a key written twice ends as the later row) or
/// runs any other write.
async fn write(
    tx: &mut mysql_async::Transaction<'_>,
    pending: &mut Option<Upserts>,
    applied: &mut Applied,
    change: RowChange,
) -> Result<(), CdcError> {
    match (change.upsert, change.write) {
        (Some((head, tail)), Some((_, params))) => {
            if pending
                .as_ref()
                .is_some_and(|p| p.head != head || p.rows >= 500)
            {
                flush(tx, pending, applied).await?;
            }
            let p = pending.get_or_insert_with(|| Upserts {
                head,
                tail,
                width: params.len(),
                rows: 0,
                params: Vec::new(),
            });
            p.rows += 1;
            p.params.extend(params);
        }
        (_, Some((sql, params))) => {
            tx.exec_drop(sql, params).await?;
            applied.statements += 1;
        }
        (_, None) => {}
    }
    Ok(())
}

/// The counter increments of `change` alone, when it has any.
async fn apply_increments(
    tx: &mut mysql_async::Transaction<'_>,
    pending: &mut Option<Upserts>,
    applied: &mut Applied,
    change: &RowChange,
) -> Result<(), CdcError> {
    if let Some((sql, params)) = &change.increments {
        flush(tx, pending, applied).await?;
        tx.exec_drop(sql, params.clone()).await?;
        applied.statements += 1;
    }
    Ok(())
}

/// A row read from the target as a JSON object, column → value.
fn row_json(row: &mysql_async::Row) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (i, c) in row.columns_ref().iter().enumerate() {
        let v = row.as_ref(i).map_or(serde_json::Value::Null, value_json);
        out.insert(c.name_str().into_owned(), v);
    }
    serde_json::Value::Object(out)
}

/// A SQL value as JSON: numbers as numbers, everything else as its text.
fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NULL => serde_json::Value::Null,
        Value::Int(i) => (*i).into(),
        Value::UInt(u) => (*u).into(),
        Value::Float(f) => (*f).into(),
        Value::Double(d) => (*d).into(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned().into(),
        other => other.as_sql(true).trim_matches('\'').to_string().into(),
    }
}

/// `after − before` of a counter column, both integers (a NULL counts as 0); `None` for a value
/// that is not an integer.
fn counter_delta(before: &Value, after: &Value) -> Option<i64> {
    let int = |v: &Value| -> Option<i128> {
        match v {
            Value::NULL => Some(0),
            Value::Int(i) => Some(i128::from(*i)),
            Value::UInt(u) => Some(i128::from(*u)),
            Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            _ => None,
        }
    };
    i64::try_from(int(after)? - int(before)?).ok()
}

/// One row change as SQL: the write, and the check that tells a conflict.
struct RowChange {
    table: String,
    op: Op,
    write: Option<(String, Vec<Value>)>,
    /// For upserts: `INSERT INTO t (cols) VALUES ` and ` ON DUPLICATE KEY UPDATE …`, so that
    /// consecutive upserts of one table go out as one multi-row statement.
    upsert: Option<(String, String)>,
    /// `SELECT (row = before), (row = after) … FOR UPDATE`; no row: `None`.
    check: Option<Check>,
    /// The target key's values: tells two changes of one row apart from changes of two rows.
    key: Vec<Value>,
    /// For an update that moves counter columns: `UPDATE t SET c = c + ? … WHERE key`, the
    /// increments alone. Applied even when the rest of the row is already as the event leaves
    /// it, or kept as the target's after a conflict: a counter's delta is never lost.
    increments: Option<(String, Vec<Value>)>,
    /// The event's position among the batch's events (its images go to the conflict table).
    event: usize,
    /// `k1 = ? AND …` over the target key columns (the key values are `key`).
    key_cond: String,
}

impl RowChange {
    fn identity(&self) -> String {
        format!("{}|{:?}", self.table, self.key)
    }
}

/// At most this many row checks go out as one statement.
const CHECKS_PER_STATEMENT: usize = 200;
const PARAMS_PER_STATEMENT: usize = 30_000;

/// `(matches before, matches after)` of the target's row by position in a group; absent for a
/// missing row.
type Found = HashMap<usize, (Option<i64>, Option<i64>)>;

/// Locks and compares the target rows of `group` (distinct rows). The rows are read by key, one
/// statement per table, and compared in Rust; a row Rust cannot settle (not the same value as
/// either image, or not found by its key's exact value: collations and conversions are the
/// server's to judge) is compared by the server, all such rows in one statement.
async fn check_rows(
    tx: &mut mysql_async::Transaction<'_>,
    group: &[(RowChange, &Offset)],
    applied: &mut Applied,
) -> Result<Found, CdcError> {
    let checks: Vec<&Check> = group
        .iter()
        .map(|(c, _)| c.check.as_ref().expect("grouped changes have checks"))
        .collect();
    let mut found = Found::new();
    let mut unsettled = Vec::new();
    // Positions per table and column set: one read each.
    let mut reads: Vec<Vec<usize>> = Vec::new();
    for (n, c) in checks.iter().enumerate() {
        match reads.iter_mut().find(|r| {
            let o = checks[r[0]];
            o.target == c.target && o.key_cols == c.key_cols && o.cols == c.cols
        }) {
            Some(r) => r.push(n),
            None => reads.push(vec![n]),
        }
    }
    for positions in reads {
        let first = checks[positions[0]];
        let width = first.key_cols.len();
        let cond = if width == 1 {
            format!(
                "{} IN ({})",
                first.key_cols[0],
                vec!["?"; positions.len()].join(", ")
            )
        } else {
            let one = format!(
                "({})",
                first
                    .key_cols
                    .iter()
                    .map(|k| format!("{k} = ?"))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            );
            vec![one; positions.len()].join(" OR ")
        };
        let sql = format!(
            "SELECT {} FROM {} WHERE {cond} FOR UPDATE",
            first
                .key_cols
                .iter()
                .chain(&first.cols)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            first.target
        );
        let params: Vec<Value> = positions
            .iter()
            .flat_map(|&n| group[n].0.key.iter().cloned())
            .collect();
        let rows: Vec<mysql_async::Row> = tx.exec(sql, params).await?;
        let by_key: HashMap<String, usize> = positions
            .iter()
            .map(|&n| (key_text(&group[n].0.key), n))
            .collect();
        let mut settled = std::collections::HashSet::new();
        for row in rows {
            let values = row.unwrap();
            let (key, current) = values.split_at(width);
            let Some(&n) = key_forms(key).iter().find_map(|k| by_key.get(k)) else {
                continue;
            };
            let same = |image: &Option<Vec<Value>>| {
                image.as_ref().is_some_and(|v| {
                    v.len() == current.len() && v.iter().zip(current).all(|(a, b)| same_value(a, b))
                })
            };
            let c = checks[n];
            if same(&c.images[1]) {
                found.insert(n, (Some(i64::from(same(&c.images[0]))), Some(1)));
                settled.insert(n);
            } else if same(&c.images[0]) {
                // The after image may still equal the row by the server's rules; writing it
                // again is harmless, so that is left unasked.
                found.insert(n, (Some(1), Some(0)));
                settled.insert(n);
            }
        }
        unsettled.extend(positions.into_iter().filter(|n| !settled.contains(n)));
    }
    applied.checks.0 += group.len() - unsettled.len();
    applied.checks.1 += unsettled.len();
    if unsettled.is_empty() {
        return Ok(found);
    }
    let mut params = Vec::new();
    let branches: Vec<String> = unsettled
        .iter()
        .map(|&n| checks[n].server_branch(n, &group[n].0.key, &mut params))
        .collect();
    let rows: Vec<(i64, Option<i64>, Option<i64>)> =
        tx.exec(branches.join(" UNION ALL "), params).await?;
    found.extend(
        rows.into_iter()
            .map(|(n, before, after)| (n as usize, (before, after))),
    );
    Ok(found)
}

/// Inserts of rows the target does not have cannot conflict: a group of inserts into one table
/// first goes out as one plain multi-row `INSERT`. `false` when any row exists already (the
/// server rolls the statement back, whole); the group is then checked row by row.
async fn insert_new_rows(
    tx: &mut mysql_async::Transaction<'_>,
    group: &[(RowChange, &Offset)],
    applied: &mut Applied,
) -> Result<bool, CdcError> {
    let Some((Some((head, _)), Some((_, first)))) = group
        .first()
        .map(|(c, _)| (c.upsert.as_ref(), c.write.as_ref()))
    else {
        return Ok(false);
    };
    let width = first.len();
    let same = group.iter().all(|(c, _)| {
        c.op == Op::Create
            && c.upsert.as_ref().is_some_and(|(h, _)| h == head)
            && c.write.as_ref().is_some_and(|(_, p)| p.len() == width)
    });
    // A prepared statement takes at most 65,535 placeholders.
    if !same || group.len() * width > 65_535 {
        return Ok(false);
    }
    let row = format!("({})", vec!["?"; width].join(", "));
    let sql = format!("{head}{}", vec![row; group.len()].join(", "));
    let params: Vec<Value> = group
        .iter()
        .flat_map(|(c, _)| c.write.as_ref().map(|(_, p)| p.iter().cloned()))
        .flatten()
        .collect();
    match tx.exec_drop(sql, params).await {
        Ok(()) => {
            applied.statements += group.len();
            Ok(true)
        }
        // ER_DUP_ENTRY: the statement is undone, the transaction goes on.
        Err(mysql_async::Error::Server(e)) if e.code == 1062 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn quote(qualified: &str) -> String {
    crate::model::server::quote_qualified(qualified)
}

impl MysqlApplier {
    /// An applier for stream `stream` writing to `url`; offsets live in `offsets_db.cdc_offsets`.
    pub fn new(
        url: &str,
        stream: &str,
        offsets_db: &str,
        mappings: Vec<TableMapping>,
    ) -> Result<Self, CdcError> {
        Self::with_conflicts(url, stream, offsets_db, mappings, None)
    }

    /// The applier of `config`'s stream, on its target.
    pub fn for_stream(config: &StreamConfig) -> Result<Self, CdcError> {
        let mut a = Self::with_conflicts(
            &config.target_url,
            &config.name,
            &config.offsets_db,
            config.tables.clone(),
            config.detect_conflicts.then_some(config.owner),
        )?;
        a.mode = config.mode;
        if let Some(o) = &config.ownership {
            a.ownership = Some(std::sync::Arc::new(super::ownership::Ownership::new(
                o.clone(),
                &config.tables,
            )?));
        }
        Ok(a)
    }

    /// Like `new`, comparing each row with the event's `before` image first; `owner` says which
    /// side wins a conflict.
    pub fn with_conflicts(
        url: &str,
        stream: &str,
        offsets_db: &str,
        mappings: Vec<TableMapping>,
        owner: Option<Owner>,
    ) -> Result<Self, CdcError> {
        let opts = Opts::from_url(url).map_err(|e| CdcError::Config(format!("target url: {e}")))?;
        let opts = OptsBuilder::from_opts(opts);
        Ok(Self {
            pool: Pool::new(opts),
            stream: stream.to_string(),
            offsets_table: format!("{}.cdc_offsets", quote(offsets_db)),
            stats_table: format!("{}.cdc_table_stats", quote(offsets_db)),
            conflicts_table: format!("{}.cdc_conflicts", quote(offsets_db)),
            ownership: None,
            mappings: mappings
                .into_iter()
                .map(|m| (m.source.clone(), m))
                .collect(),
            conflicts: owner,
            mode: ServerMode::Portable,
            target_columns: Default::default(),
        })
    }

    /// Creates the offsets table (and its database) if missing; reads the ownership flag.
    pub async fn prepare(&self, offsets_db: &str) -> Result<(), CdcError> {
        if let Some(o) = &self.ownership {
            o.refresh().await?;
        }
        let mut conn = self.pool.get_conn().await?;
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            quote(offsets_db)
        ))
        .await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (
               stream VARCHAR(100) NOT NULL PRIMARY KEY,
               file VARCHAR(255) NOT NULL,
               pos BIGINT UNSIGNED NOT NULL,
               gtid VARCHAR(255) NULL,
               transactions BIGINT UNSIGNED NOT NULL DEFAULT 0,
               source_ts_ms BIGINT NOT NULL DEFAULT 0,
               updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3))",
            self.offsets_table
        ))
        .await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (
               stream VARCHAR(100) NOT NULL,
               source_table VARCHAR(200) NOT NULL,
               events BIGINT UNSIGNED NOT NULL DEFAULT 0,
               last_source_ts_ms BIGINT NOT NULL DEFAULT 0,
               updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
               PRIMARY KEY (stream, source_table))",
            self.stats_table
        ))
        .await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (
               id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
               stream VARCHAR(100) NOT NULL,
               target_table VARCHAR(200) NOT NULL,
               op VARCHAR(8) NOT NULL,
               row_key TEXT NOT NULL,
               source_before MEDIUMTEXT NULL,
               source_after MEDIUMTEXT NULL,
               target_row MEDIUMTEXT NULL,
               winner VARCHAR(8) NOT NULL,
               source_offset VARCHAR(300) NOT NULL,
               detected_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
               resolved_at DATETIME(3) NULL,
               resolved_by VARCHAR(128) NULL,
               resolution VARCHAR(1000) NULL,
               KEY open_by_table (stream, resolved_at, target_table))",
            self.conflicts_table
        ))
        .await?;
        Ok(())
    }

    /// The events (by position) whose rows belong to users the other side owns.
    async fn strays(
        &self,
        changes: &[(RowChange, &Offset)],
        events: &[&ChangeEvent],
    ) -> Result<std::collections::HashSet<usize>, CdcError> {
        let Some(o) = &self.ownership else {
            return Ok(Default::default());
        };
        let owned: Vec<(usize, &str, String)> = changes
            .iter()
            .filter_map(|(c, _)| {
                let ev = events[c.event];
                let m = self.mappings.get(&ev.schema.qualified())?;
                let column = m.owner_key.as_ref()?;
                let flag = o.flag_of(m)?;
                let image = ev.envelope.after.as_ref().or(ev.envelope.before.as_ref())?;
                Some((c.event, flag, super::ownership::user_key(image, column)?))
            })
            .collect();
        if owned.is_empty() {
            return Ok(Default::default());
        }
        if o.stale() {
            o.refresh().await?;
        }
        let find = || -> std::collections::HashSet<usize> {
            owned
                .iter()
                .filter(|(_, flag, user)| o.is_stray(flag, user))
                .map(|(n, _, _)| *n)
                .collect()
        };
        if find().is_empty() {
            return Ok(Default::default());
        }
        o.refresh().await?;
        Ok(find())
    }

    /// Writes a conflict to the dead-letter table, in the transaction that resolves it: both
    /// sides' images (the event's before and after, the target's row as it was), the key, who won.
    async fn record_conflict(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        change: &RowChange,
        ev: &ChangeEvent,
        at: &Offset,
        winner: Owner,
    ) -> Result<(), CdcError> {
        if change.key_cond.is_empty() {
            return Ok(());
        }
        let current: Option<mysql_async::Row> = tx
            .exec_first(
                format!(
                    "SELECT * FROM {} WHERE {}",
                    quote(&change.table),
                    change.key_cond
                ),
                change.key.clone(),
            )
            .await?;
        let target_row = current.map(|r| row_json(&r).to_string());
        let image = |m: &Option<serde_json::Map<String, serde_json::Value>>| {
            m.as_ref()
                .map(|m| serde_json::Value::Object(m.clone()).to_string())
        };
        let key: Vec<serde_json::Value> = change.key.iter().map(value_json).collect();
        let op = format!("{:?}", change.op).to_lowercase();
        tx.exec_drop(
            format!(
                "INSERT INTO {} (stream, target_table, op, row_key, source_before, source_after, \
                 target_row, winner, source_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self.conflicts_table
            ),
            (
                &self.stream,
                &change.table,
                op,
                serde_json::Value::Array(key).to_string(),
                image(&ev.envelope.before),
                image(&ev.envelope.after),
                target_row,
                match winner {
                    Owner::Source => "source",
                    Owner::Target => "target",
                },
                at.to_string(),
            ),
        )
        .await?;
        Ok(())
    }

    /// The offset stored by the last applied transaction.
    pub async fn stored_offset(&self) -> Result<Option<Offset>, CdcError> {
        let mut conn = self.pool.get_conn().await?;
        let row: Option<(String, u64, Option<String>)> = conn
            .exec_first(
                format!(
                    "SELECT file, pos, gtid FROM {} WHERE stream = ?",
                    self.offsets_table
                ),
                (&self.stream,),
            )
            .await?;
        Ok(row.map(|(file, pos, gtid)| Offset { file, pos, gtid }))
    }

    fn row_change(&self, ev: &ChangeEvent) -> Result<Option<RowChange>, CdcError> {
        let qualified = ev.schema.qualified();
        let Some(m) = self.mappings.get(&qualified) else {
            return Ok(None);
        };
        let malformed = |message: String| CdcError::Malformed {
            at: format!(
                "{}:{} row {}",
                ev.envelope.source.file, ev.envelope.source.pos, ev.envelope.source.row
            ),
            message,
        };
        let target = quote(&m.target);
        // Mapped (target column, SQL value) pairs of a row image.
        let mapped = |row: &Row, only_key: bool| -> Result<Vec<(String, Value, bool)>, CdcError> {
            let mut out = Vec::new();
            for (i, col) in ev.schema.columns.iter().enumerate() {
                let is_key = ev.schema.primary_key.contains(&i);
                if only_key && !is_key {
                    continue;
                }
                let Some(target_col) = m.target_column(&col.name) else {
                    if is_key {
                        return Err(malformed(format!(
                            "primary key column {} is dropped by the mapping",
                            col.name
                        )));
                    }
                    continue;
                };
                let mut v = match row.get(&col.name) {
                    Some(v) => v.clone(),
                    None if is_key => {
                        return Err(malformed(format!("key column {} missing", col.name)));
                    }
                    None => serde_json::Value::Null,
                };
                if let Some(t) = m.transform.get(&col.name) {
                    v = t.apply(v);
                }
                let value =
                    decode(&col.kind, &v).map_err(|e| malformed(format!("{}: {e}", col.name)))?;
                // Floats do not survive a text round trip exactly: never compared.
                let comparable = !matches!(col.kind, ColumnKind::Float | ColumnKind::Double);
                out.push((target_col.to_string(), value, comparable || is_key));
            }
            Ok(out)
        };
        let key_where = |row: &Row| -> Result<(String, Vec<Value>), CdcError> {
            let key = mapped(row, true)?;
            Ok((
                key.iter()
                    .map(|(c, _, _)| format!("{} = ?", quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(" AND "),
                key.into_iter().map(|(_, v, _)| v).collect(),
            ))
        };
        // The counters' target columns, and the columns never compared.
        let counters: std::collections::HashSet<String> = m
            .counters
            .iter()
            .filter_map(|c| m.target_column(c).map(str::to_string))
            .collect();
        let uncompared: std::collections::HashSet<String> = m
            .uncompared
            .iter()
            .filter_map(|c| m.target_column(c).map(str::to_string))
            .collect();
        // `only`: compare just these target columns (an update of a counter table compares the
        // columns it changes).
        let check = |before: Option<&Row>,
                     after: Option<&Row>,
                     key_row: &Row,
                     only: Option<&std::collections::HashSet<String>>|
         -> Result<Option<Check>, CdcError> {
            if self.conflicts.is_none() {
                return Ok(None);
            }
            let mut cols = Vec::new();
            let mut images = [None, None];
            for (image, slot) in [before, after].into_iter().zip(&mut images) {
                if let Some(row) = image {
                    // Both images map the same columns; floats are not compared.
                    let compared: Vec<_> = mapped(row, false)?
                        .into_iter()
                        .filter(|(name, _, c)| {
                            *c && !counters.contains(name)
                                && !uncompared.contains(name)
                                && only.is_none_or(|o| o.contains(name))
                        })
                        .collect();
                    cols = compared.iter().map(|(c, _, _)| quote_ident(c)).collect();
                    *slot = Some(compared.into_iter().map(|(_, v, _)| v).collect());
                }
            }
            if cols.is_empty() {
                // Nothing but counters to compare: every change applies as increments.
                return Ok(None);
            }
            Ok(Some(Check {
                target: target.clone(),
                key_cols: mapped(key_row, true)?
                    .into_iter()
                    .map(|(c, _, _)| quote_ident(&c))
                    .collect(),
                cols,
                images,
            }))
        };
        let env = &ev.envelope;
        let change = match env.op {
            Op::Create | Op::Read | Op::Update => {
                let row = env
                    .after
                    .as_ref()
                    .ok_or_else(|| malformed("no `after` image".into()))?;
                let mut cols = Vec::new();
                let mut params = Vec::new();
                for (c, v, _) in mapped(row, false)? {
                    cols.push(quote_ident(&c));
                    params.push(v);
                }
                for (name, value) in &m.defaults {
                    cols.push(quote_ident(name));
                    params.push(default_sql_value(value));
                }
                let before = if env.op == Op::Update {
                    env.before.as_ref()
                } else {
                    None
                };
                // An update of counter columns: their deltas, applied as increments.
                let deltas = match before {
                    Some(b) if !counters.is_empty() => {
                        let old: HashMap<String, Value> = mapped(b, false)?
                            .into_iter()
                            .map(|(c, v, _)| (c, v))
                            .collect();
                        let mut deltas = Vec::new();
                        for (c, v, _) in mapped(row, false)? {
                            if !counters.contains(&c) {
                                continue;
                            }
                            let was = old.get(&c).cloned().unwrap_or(Value::NULL);
                            let d = counter_delta(&was, &v).ok_or_else(|| {
                                malformed(format!(
                                    "counter column {c} holds {v:?} after {was:?}: counters are integers"
                                ))
                            })?;
                            deltas.push((quote_ident(&c), d));
                        }
                        deltas
                    }
                    _ => Vec::new(),
                };
                // An update of a table with counters writes only the columns it changes: both
                // sides write such rows at once, and a column this change leaves alone may hold
                // the other side's newer value.
                let changed: Option<std::collections::HashSet<String>> = match before {
                    Some(b) if !counters.is_empty() => {
                        let old: HashMap<String, Value> = mapped(b, false)?
                            .into_iter()
                            .map(|(c, v, _)| (c, v))
                            .collect();
                        Some(
                            mapped(row, false)?
                                .into_iter()
                                .filter(|(c, v, _)| old.get(c) != Some(v))
                                .map(|(c, _, _)| quote_ident(&c))
                                .collect(),
                        )
                    }
                    _ => None,
                };
                let mut updates: Vec<String> = cols
                    .iter()
                    .filter_map(|c| match deltas.iter().find(|(d, _)| d == c) {
                        Some(_) => Some(format!("{c} = COALESCE({c}, 0) + ?")),
                        None if changed.as_ref().is_none_or(|ch| ch.contains(c)) => {
                            Some(format!("{c} = VALUES({c})"))
                        }
                        None => None,
                    })
                    .collect();
                if updates.is_empty() {
                    // Nothing changed: a no-op update keeps the statement well formed.
                    updates.push(format!("{c} = {c}", c = cols[0]));
                }
                let unquoted: Option<std::collections::HashSet<String>> =
                    changed.as_ref().map(|ch| {
                        ch.iter()
                            .map(|c| c.trim_matches('`').replace("``", "`"))
                            .collect()
                    });
                let (cond, key) = key_where(row)?;
                let key_cond = cond.clone();
                let increments = deltas.iter().any(|(_, d)| *d != 0).then(|| {
                    let sets: Vec<String> = deltas
                        .iter()
                        .map(|(c, _)| format!("{c} = COALESCE({c}, 0) + ?"))
                        .collect();
                    let mut p: Vec<Value> = deltas.iter().map(|(_, d)| Value::Int(*d)).collect();
                    p.extend(key.iter().cloned());
                    (
                        format!("UPDATE {target} SET {} WHERE {cond}", sets.join(", ")),
                        p,
                    )
                });
                let mut write_params = params;
                // The ON DUPLICATE KEY part's increments follow the row's values, in column order.
                for c in &cols {
                    if let Some((_, d)) = deltas.iter().find(|(dc, _)| dc == c) {
                        write_params.push(Value::Int(*d));
                    }
                }
                RowChange {
                    table: m.target.clone(),
                    op: env.op,
                    // Rows with increments go one by one: each carries its own deltas.
                    upsert: deltas.is_empty().then(|| {
                        (
                            format!("INSERT INTO {target} ({}) VALUES ", cols.join(", ")),
                            format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", ")),
                        )
                    }),
                    write: Some((
                        format!(
                            "INSERT INTO {target} ({}) VALUES ({}) ON DUPLICATE KEY UPDATE {}",
                            cols.join(", "),
                            vec!["?"; cols.len()].join(", "),
                            updates.join(", ")
                        ),
                        write_params,
                    )),
                    check: check(before, Some(row), row, unquoted.as_ref())?,
                    key,
                    increments,
                    event: 0,
                    key_cond,
                }
            }
            Op::Delete => {
                let row = env
                    .before
                    .as_ref()
                    .ok_or_else(|| malformed("no `before` image".into()))?;
                let (cond, params) = key_where(row)?;
                let params_key = params.clone();
                let key_cond = cond.clone();
                RowChange {
                    table: m.target.clone(),
                    op: Op::Delete,
                    write: Some((format!("DELETE FROM {target} WHERE {cond}"), params)),
                    upsert: None,
                    check: check(Some(row), None, row, None)?,
                    key: params_key,
                    increments: None,
                    event: 0,
                    key_cond,
                }
            }
            Op::Truncate => RowChange {
                table: m.target.clone(),
                op: Op::Truncate,
                write: Some((format!("DELETE FROM {target}"), Vec::new())),
                upsert: None,
                check: None,
                key: Vec::new(),
                increments: None,
                event: 0,
                key_cond: String::new(),
            },
            Op::Message => return Ok(None),
        };
        Ok(Some(change))
    }

    /// Refuses a change naming a column its target table does not have (a schema rebuilt from a
    /// Kafka message can name anything): the stream stops at that event with the name. The
    /// target's columns are read once, and again when a name is missing (the table may have
    /// gained the column since).
    async fn check_columns(&self, txns: &[Transaction]) -> Result<(), CdcError> {
        // Events of one table share its schema: each schema is checked once a batch.
        let mut checked: Vec<usize> = Vec::new();
        for ev in txns.iter().flat_map(|t| &t.events) {
            let ptr = std::sync::Arc::as_ptr(&ev.schema) as usize;
            if checked.contains(&ptr) {
                continue;
            }
            checked.push(ptr);
            let Some(m) = self.mappings.get(&ev.schema.qualified()) else {
                continue;
            };
            let wanted: Vec<&str> = ev
                .schema
                .columns
                .iter()
                .filter_map(|c| m.target_column(&c.name))
                .chain(m.defaults.keys().map(String::as_str))
                .collect();
            let missing = |cols: &HashMap<String, std::collections::HashSet<String>>| {
                let known = cols.get(&m.target);
                wanted
                    .iter()
                    .find(|w| known.is_none_or(|k| !k.contains(&w.to_ascii_lowercase())))
                    .map(|w| w.to_string())
            };
            let first = missing(&self.target_columns.lock().expect("not poisoned"));
            let Some(_) = first else { continue };
            let (db, table) = m.target.split_once('.').unwrap_or(("", &m.target));
            let mut conn = self.pool.get_conn().await?;
            let names: Vec<String> = conn
                .exec(
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (db, table),
                )
                .await?;
            drop(conn);
            let mut cols = self.target_columns.lock().expect("not poisoned");
            cols.insert(
                m.target.clone(),
                names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
            );
            if let Some(name) = missing(&cols) {
                return Err(CdcError::Malformed {
                    at: format!(
                        "{}:{} row {}",
                        ev.envelope.source.file, ev.envelope.source.pos, ev.envelope.source.row
                    ),
                    message: format!(
                        "column {name:?} of {} is not a column of the target table {}",
                        ev.schema.qualified(),
                        m.target
                    ),
                });
            }
        }
        Ok(())
    }

    /// Applies one source transaction and records its end offset, atomically.
    pub async fn apply(&self, txn: &Transaction) -> Result<Applied, CdcError> {
        self.apply_batch(std::slice::from_ref(txn)).await
    }

    /// Applies consecutive source transactions as one target transaction (whole source
    /// transactions only, so boundaries hold) and records the last one's end offset.
    pub async fn apply_batch(&self, txns: &[Transaction]) -> Result<Applied, CdcError> {
        let Some(last) = txns.last() else {
            return Ok(Applied::default());
        };
        self.check_columns(txns).await?;
        let mut changes = Vec::new();
        let mut events: Vec<&ChangeEvent> = Vec::new();
        for txn in txns {
            for ev in &txn.events {
                if let Some(mut c) = self.row_change(ev)? {
                    c.event = events.len();
                    events.push(ev);
                    changes.push((c, &txn.end));
                }
            }
        }
        // Stray writes: rows of users the other side owns (a write canary). The flag is read again
        // before calling any change stray: it may have moved a user since it was last read.
        let strays = self.strays(&changes, &events).await?;
        let mut applied = Applied::default();
        let mut conn = self.pool.get_conn().await?;
        // Pooled connections are reset when returned, which clears session variables: set them
        // for every transaction.
        conn.query_drop(self.mode.writer_session_sql()).await?;
        let mut tx = conn.start_transaction(Default::default()).await?;
        // The offset row first: it marks the transaction as cdc-sync's own before any row a
        // reader of this server would otherwise decode.
        tx.exec_drop(
            format!(
                "INSERT INTO {} (stream, file, pos, gtid, transactions, source_ts_ms) VALUES (?, ?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE file = VALUES(file), pos = VALUES(pos), gtid = VALUES(gtid), \
                 transactions = transactions + VALUES(transactions), source_ts_ms = VALUES(source_ts_ms)",
                self.offsets_table
            ),
            (&self.stream, &last.end.file, last.end.pos, &last.end.gtid, txns.len() as u64, last.ts_ms),
        )
        .await?;
        // Stray writes are kept as conflicts (the owner's side wins) and not applied.
        let mut owned = Vec::with_capacity(changes.len());
        for (change, at) in changes {
            if !strays.contains(&change.event) {
                owned.push((change, at));
                continue;
            }
            tracing::warn!(stream = %self.stream, table = %change.table, op = ?change.op, at = %at, "stray write: the row's user is owned by the other side; kept as a conflict, not applied");
            applied.conflicts.push(Conflict {
                table: change.table.clone(),
                winner: Owner::Target,
            });
            self.record_conflict(&mut tx, &change, events[change.event], at, Owner::Target)
                .await?;
        }
        let changes = owned;
        // Consecutive upserts of one table with the same columns: one multi-row statement
        // (rows apply in order, so a key written twice ends as the later row).
        let mut pending: Option<Upserts> = None;
        let mut changes = changes.into_iter().peekable();
        while let Some(first) = changes.next() {
            if first.0.check.is_none() {
                if first.0.upsert.is_none() {
                    flush(&mut tx, &mut pending, &mut applied).await?;
                }
                write(&mut tx, &mut pending, &mut applied, first.0).await?;
                continue;
            }
            // Consecutive checked changes of distinct rows: checked in one statement. A row met
            // again ends the group, so its second check sees the first change's write.
            let mut seen = std::collections::HashSet::from([first.0.identity()]);
            let mut width = first.0.check.as_ref().map_or(0, Check::width);
            let mut group = vec![first];
            while let Some((next, _)) = changes.peek() {
                let Some(c) = &next.check else { break };
                if group.len() >= CHECKS_PER_STATEMENT
                    || width + c.width() > PARAMS_PER_STATEMENT
                    || seen.contains(&next.identity())
                {
                    break;
                }
                seen.insert(next.identity());
                width += c.width();
                group.push(changes.next().expect("peeked"));
            }
            // Earlier writes go out first: the checks must see them.
            flush(&mut tx, &mut pending, &mut applied).await?;
            if insert_new_rows(&mut tx, &group, &mut applied).await? {
                continue;
            }
            let found = check_rows(&mut tx, &group, &mut applied).await?;
            for (n, (change, at)) in group.into_iter().enumerate() {
                // (matches before, matches after) of the target's current row.
                let conflict = match (change.op, found.get(&n).copied()) {
                    (_, Some((_, Some(1)))) => {
                        // Already as the event leaves it (a replay, or both sides made the same
                        // change): nothing to do but the counters' increments.
                        apply_increments(&mut tx, &mut pending, &mut applied, &change).await?;
                        continue;
                    }
                    (Op::Delete, None) => continue,
                    // A snapshot row is the source's current row: never a conflict.
                    (Op::Create, None) | (Op::Read, _) => false,
                    (Op::Update, Some((Some(1), _))) | (Op::Delete, Some((Some(1), _))) => false,
                    // The target changed (or removed) the row on its own since.
                    _ => true,
                };
                if conflict {
                    let winner = self.conflicts.unwrap_or(Owner::Source);
                    tracing::warn!(stream = %self.stream, table = %change.table, op = ?change.op, at = %at, winner = ?winner, "conflict: the row changed on both sides");
                    applied.conflicts.push(Conflict {
                        table: change.table.clone(),
                        winner,
                    });
                    self.record_conflict(&mut tx, &change, events[change.event], at, winner)
                        .await?;
                    if winner == Owner::Target {
                        // The target's row stands; the counters still move by the source's delta.
                        apply_increments(&mut tx, &mut pending, &mut applied, &change).await?;
                        continue;
                    }
                }
                if change.upsert.is_none() {
                    flush(&mut tx, &mut pending, &mut applied).await?;
                }
                write(&mut tx, &mut pending, &mut applied, change).await?;
            }
        }
        flush(&mut tx, &mut pending, &mut applied).await?;
        // Per-table figures for `cdc-sync status`, in the same commit.
        let mut per_table: std::collections::BTreeMap<String, (u64, i64)> = Default::default();
        for txn in txns {
            for ev in &txn.events {
                let e = per_table.entry(ev.schema.qualified()).or_default();
                e.0 += 1;
                e.1 = e.1.max(txn.ts_ms);
            }
        }
        for (table, (events, ts)) in per_table {
            tx.exec_drop(
                format!(
                    "INSERT INTO {} (stream, source_table, events, last_source_ts_ms) VALUES (?, ?, ?, ?) \
                     ON DUPLICATE KEY UPDATE events = events + VALUES(events), \
                     last_source_ts_ms = GREATEST(last_source_ts_ms, VALUES(last_source_ts_ms))",
                    self.stats_table
                ),
                (&self.stream, table, events, ts),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(applied)
    }
}

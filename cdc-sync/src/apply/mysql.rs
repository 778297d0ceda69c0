//! The MySQL/MariaDB applier: each source transaction becomes one target transaction of
//! idempotent statements (upsert of the full row image, delete by key) plus the stream's offset
//! row, committed together. Its connections run with `skip_replication=1`, so the reverse stream
//! never re-emits what the applier wrote. With conflict detection on, each row is first compared
//! (under a row lock) with the event's `before` image: a row the target changed on its own since
//! is a conflict, resolved by the stream's owner (`source` applies, `target` keeps its row).

use std::collections::HashMap;

use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Pool, Value};

use super::mapping::{TableMapping, default_sql_value};
use crate::config::Owner;
use crate::error::CdcError;
use crate::model::debezium::{ChangeEvent, Op};
use crate::model::values::decode;
use crate::schema::ColumnKind;
use crate::source::binlog::{Offset, Transaction};

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
    mappings: HashMap<String, TableMapping>,
    conflicts: Option<Owner>,
}

/// A row changed on both sides in the same window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Target table.
    pub table: String,
    /// Which side's version stands.
    pub winner: Owner,
}

/// What one applied transaction did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Row statements executed.
    pub statements: usize,
    /// Conflicts seen (and resolved by the owner rule).
    pub conflicts: Vec<Conflict>,
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
}

/// The conflict check of one row change, as one branch of a `UNION ALL` of many.
struct Check {
    /// `(row = before), (row = after)` expressions.
    select: String,
    target: String,
    /// The key condition.
    cond: String,
    params: Vec<Value>,
}

impl RowChange {
    fn identity(&self) -> String {
        format!("{}|{:?}", self.table, self.key)
    }
}

/// At most this many row checks go out as one statement.
const CHECKS_PER_STATEMENT: usize = 200;
const PARAMS_PER_STATEMENT: usize = 30_000;

/// Locks and compares the target rows of `group` (distinct rows) in one statement; returns
/// `(matches before, matches after)` by position in the group, absent for a missing row.
async fn check_rows(
    tx: &mut mysql_async::Transaction<'_>,
    group: &[(RowChange, &Offset)],
) -> Result<HashMap<usize, (Option<i64>, Option<i64>)>, CdcError> {
    let mut branches = Vec::with_capacity(group.len());
    let mut params = Vec::new();
    for (n, (change, _)) in group.iter().enumerate() {
        let c = change.check.as_ref().expect("grouped changes have checks");
        branches.push(format!(
            "(SELECT {n}, {} FROM {} WHERE {} FOR UPDATE)",
            c.select, c.target, c.cond
        ));
        params.extend(c.params.iter().cloned());
    }
    let rows: Vec<(i64, Option<i64>, Option<i64>)> =
        tx.exec(branches.join(" UNION ALL "), params).await?;
    Ok(rows
        .into_iter()
        .map(|(n, before, after)| (n as usize, (before, after)))
        .collect())
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
    qualified
        .split('.')
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(".")
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
        // Every transaction we write runs with skip_replication=1 (set in `apply`), so no stream
        // picks it up again: loop prevention.
        let opts = OptsBuilder::from_opts(opts);
        Ok(Self {
            pool: Pool::new(opts),
            stream: stream.to_string(),
            offsets_table: format!("{}.cdc_offsets", quote(offsets_db)),
            stats_table: format!("{}.cdc_table_stats", quote(offsets_db)),
            mappings: mappings
                .into_iter()
                .map(|m| (m.source.clone(), m))
                .collect(),
            conflicts: owner,
        })
    }

    /// Creates the offsets table (and its database) if missing.
    pub async fn prepare(&self, offsets_db: &str) -> Result<(), CdcError> {
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
                    .map(|(c, _, _)| format!("`{c}` = ?"))
                    .collect::<Vec<_>>()
                    .join(" AND "),
                key.into_iter().map(|(_, v, _)| v).collect(),
            ))
        };
        let matches = |row: &Row| -> Result<(String, Vec<Value>), CdcError> {
            let cols = mapped(row, false)?;
            let cmp: Vec<_> = cols.into_iter().filter(|(_, _, c)| *c).collect();
            Ok((
                format!(
                    "({})",
                    cmp.iter()
                        .map(|(c, _, _)| format!("`{c}` <=> ?"))
                        .collect::<Vec<_>>()
                        .join(" AND ")
                ),
                cmp.into_iter().map(|(_, v, _)| v).collect(),
            ))
        };
        let check = |before: Option<&Row>,
                     after: Option<&Row>,
                     key_row: &Row|
         -> Result<Option<Check>, CdcError> {
            if self.conflicts.is_none() {
                return Ok(None);
            }
            let mut params = Vec::new();
            let mut select = Vec::new();
            for image in [before, after] {
                match image {
                    Some(row) => {
                        let (sql, p) = matches(row)?;
                        select.push(sql);
                        params.extend(p);
                    }
                    None => select.push("0".into()),
                }
            }
            let (cond, p) = key_where(key_row)?;
            params.extend(p);
            Ok(Some(Check {
                select: select.join(", "),
                target: target.clone(),
                cond,
                params,
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
                    cols.push(format!("`{c}`"));
                    params.push(v);
                }
                for (name, value) in &m.defaults {
                    cols.push(format!("`{name}`"));
                    params.push(default_sql_value(value));
                }
                let updates: Vec<String> =
                    cols.iter().map(|c| format!("{c} = VALUES({c})")).collect();
                let before = if env.op == Op::Update {
                    env.before.as_ref()
                } else {
                    None
                };
                RowChange {
                    table: m.target.clone(),
                    op: env.op,
                    upsert: Some((
                        format!("INSERT INTO {target} ({}) VALUES ", cols.join(", ")),
                        format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", ")),
                    )),
                    write: Some((
                        format!(
                            "INSERT INTO {target} ({}) VALUES ({}) ON DUPLICATE KEY UPDATE {}",
                            cols.join(", "),
                            vec!["?"; cols.len()].join(", "),
                            updates.join(", ")
                        ),
                        params,
                    )),
                    check: check(before, Some(row), row)?,
                    key: key_where(row)?.1,
                }
            }
            Op::Delete => {
                let row = env
                    .before
                    .as_ref()
                    .ok_or_else(|| malformed("no `before` image".into()))?;
                let (cond, params) = key_where(row)?;
                let params_key = params.clone();
                RowChange {
                    table: m.target.clone(),
                    op: Op::Delete,
                    write: Some((format!("DELETE FROM {target} WHERE {cond}"), params)),
                    upsert: None,
                    check: check(Some(row), None, row)?,
                    key: params_key,
                }
            }
            Op::Truncate => RowChange {
                table: m.target.clone(),
                op: Op::Truncate,
                write: Some((format!("DELETE FROM {target}"), Vec::new())),
                upsert: None,
                check: None,
                key: Vec::new(),
            },
            Op::Message => return Ok(None),
        };
        Ok(Some(change))
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
        let mut changes = Vec::new();
        for txn in txns {
            for ev in &txn.events {
                changes.extend(self.row_change(ev)?.map(|c| (c, &txn.end)));
            }
        }
        let mut applied = Applied::default();
        let mut conn = self.pool.get_conn().await?;
        // Pooled connections are reset when returned, which clears session variables: mark
        // every transaction explicitly.
        conn.query_drop("SET SESSION skip_replication = 1, time_zone = '+00:00'")
            .await?;
        let mut tx = conn.start_transaction(Default::default()).await?;
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
            let mut width = first.0.check.as_ref().map_or(0, |c| c.params.len());
            let mut group = vec![first];
            while let Some((next, _)) = changes.peek() {
                let Some(c) = &next.check else { break };
                if group.len() >= CHECKS_PER_STATEMENT
                    || width + c.params.len() > PARAMS_PER_STATEMENT
                    || seen.contains(&next.identity())
                {
                    break;
                }
                seen.insert(next.identity());
                width += c.params.len();
                group.push(changes.next().expect("peeked"));
            }
            // Earlier writes go out first: the checks must see them.
            flush(&mut tx, &mut pending, &mut applied).await?;
            if insert_new_rows(&mut tx, &group, &mut applied).await? {
                continue;
            }
            let found = check_rows(&mut tx, &group).await?;
            for (n, (change, at)) in group.into_iter().enumerate() {
                // (matches before, matches after) of the target's current row.
                let conflict = match (change.op, found.get(&n).copied()) {
                    (_, Some((_, Some(1)))) => {
                        // Already as the event leaves it (a replay, or both sides made the same
                        // change): nothing to do.
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
                    if winner == Owner::Target {
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

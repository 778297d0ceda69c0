//! The MySQL/MariaDB applier: each source transaction becomes one target transaction of
//! idempotent statements (upsert of the full row image, delete by key) plus the stream's offset
//! row, committed together. Its connections run with `skip_replication=1`, so the reverse stream
//! never re-emits what the applier wrote.

use std::collections::HashMap;

use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Pool, Value};

use super::mapping::{TableMapping, toml_to_json};
use crate::error::CdcError;
use crate::model::debezium::{ChangeEvent, Op};
use crate::model::values::decode;
use crate::source::binlog::{Offset, Transaction};

/// Applies transactions to the target.
#[derive(Clone)]
pub struct MysqlApplier {
    pool: Pool,
    stream: String,
    offsets_table: String,
    mappings: HashMap<String, TableMapping>,
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
        let opts = Opts::from_url(url).map_err(|e| CdcError::Config(format!("target url: {e}")))?;
        // Every transaction we write runs with skip_replication=1 (set in `apply`), so no stream
        // picks it up again: loop prevention.
        let opts = OptsBuilder::from_opts(opts);
        Ok(Self {
            pool: Pool::new(opts),
            stream: stream.to_string(),
            offsets_table: format!("{}.cdc_offsets", quote(offsets_db)),
            mappings: mappings
                .into_iter()
                .map(|m| (m.source.clone(), m))
                .collect(),
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

    fn statements(&self, ev: &ChangeEvent) -> Result<Vec<(String, Vec<Value>)>, CdcError> {
        let qualified = ev.schema.qualified();
        let Some(m) = self.mappings.get(&qualified) else {
            return Ok(Vec::new());
        };
        let malformed = |message: String| CdcError::Malformed {
            at: format!(
                "{}:{} row {}",
                ev.envelope.source.file, ev.envelope.source.pos, ev.envelope.source.row
            ),
            message,
        };
        let target = quote(&m.target);
        let mut out = Vec::new();
        let key_where = |row: &serde_json::Map<String, serde_json::Value>| -> Result<(String, Vec<Value>), CdcError> {
            let mut conds = Vec::new();
            let mut params = Vec::new();
            for &i in &ev.schema.primary_key {
                let col = &ev.schema.columns[i];
                let target_col = m
                    .target_column(&col.name)
                    .ok_or_else(|| malformed(format!("primary key column {} is dropped by the mapping", col.name)))?;
                let v = row.get(&col.name).ok_or_else(|| malformed(format!("key column {} missing", col.name)))?;
                conds.push(format!("`{target_col}` = ?"));
                params.push(decode(&col.kind, v).map_err(malformed)?);
            }
            Ok((conds.join(" AND "), params))
        };
        match ev.envelope.op {
            Op::Create | Op::Read | Op::Update => {
                let row = ev
                    .envelope
                    .after
                    .as_ref()
                    .ok_or_else(|| malformed("no `after` image".into()))?;
                let mut cols = Vec::new();
                let mut params = Vec::new();
                for col in &ev.schema.columns {
                    let Some(target_col) = m.target_column(&col.name) else {
                        continue;
                    };
                    let mut v = row
                        .get(&col.name)
                        .cloned()
                        .unwrap_or(serde_json::Value::Null);
                    if let Some(t) = m.transform.get(&col.name) {
                        v = t.apply(v);
                    }
                    cols.push(format!("`{target_col}`"));
                    params.push(
                        decode(&col.kind, &v)
                            .map_err(|e| malformed(format!("{}: {e}", col.name)))?,
                    );
                }
                for (name, value) in &m.defaults {
                    cols.push(format!("`{name}`"));
                    params.push(match toml_to_json(value) {
                        serde_json::Value::String(s) => Value::Bytes(s.into_bytes()),
                        serde_json::Value::Number(n) if n.is_i64() => {
                            Value::Int(n.as_i64().unwrap_or(0))
                        }
                        serde_json::Value::Number(n) => Value::Double(n.as_f64().unwrap_or(0.0)),
                        serde_json::Value::Bool(b) => Value::Int(i64::from(b)),
                        other => Value::Bytes(other.to_string().into_bytes()),
                    });
                }
                let updates: Vec<String> =
                    cols.iter().map(|c| format!("{c} = VALUES({c})")).collect();
                out.push((
                    format!(
                        "INSERT INTO {target} ({}) VALUES ({}) ON DUPLICATE KEY UPDATE {}",
                        cols.join(", "),
                        vec!["?"; cols.len()].join(", "),
                        updates.join(", ")
                    ),
                    params,
                ));
            }
            Op::Delete => {
                let row = ev
                    .envelope
                    .before
                    .as_ref()
                    .ok_or_else(|| malformed("no `before` image".into()))?;
                let (cond, params) = key_where(row)?;
                out.push((format!("DELETE FROM {target} WHERE {cond}"), params));
            }
            Op::Truncate => out.push((format!("DELETE FROM {target}"), Vec::new())),
            Op::Message => {}
        }
        Ok(out)
    }

    /// Applies one source transaction and records its end offset, atomically.
    pub async fn apply(&self, txn: &Transaction) -> Result<usize, CdcError> {
        let mut statements = Vec::new();
        for ev in &txn.events {
            statements.extend(self.statements(ev)?);
        }
        let mut conn = self.pool.get_conn().await?;
        // Pooled connections are reset when returned, which clears session variables: mark
        // every transaction explicitly.
        conn.query_drop("SET SESSION skip_replication = 1, time_zone = '+00:00'")
            .await?;
        let mut tx = conn.start_transaction(Default::default()).await?;
        for (sql, params) in &statements {
            tx.exec_drop(sql.as_str(), params.clone()).await?;
        }
        tx.exec_drop(
            format!(
                "INSERT INTO {} (stream, file, pos, gtid, transactions, source_ts_ms) VALUES (?, ?, ?, ?, 1, ?) \
                 ON DUPLICATE KEY UPDATE file = VALUES(file), pos = VALUES(pos), gtid = VALUES(gtid), \
                 transactions = transactions + 1, source_ts_ms = VALUES(source_ts_ms)",
                self.offsets_table
            ),
            (&self.stream, &txn.end.file, txn.end.pos, &txn.end.gtid, txn.ts_ms),
        )
        .await?;
        tx.commit().await?;
        Ok(statements.len())
    }
}

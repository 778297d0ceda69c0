//! `cdc-sync verify`: proves that a target table holds the source's rows, through the mapping.
//! Chunked checksums on both sides (pt-table-checksum style: CRC32 of each row, XORed and counted
//! per primary-key range), mismatched chunks narrowed down to rows, rows that differ re-checked
//! after a pause so changes still in flight are not reported (as Ghostferry's verifier does), and
//! `--repair` rewrites the target rows from the source.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Pool, Value};
use serde::Serialize;

use crate::apply::mysql::utc_pool as pool;
use crate::config::ServerMode;
use crate::error::CdcError;
use crate::model::mapping::{TableMapping, default_sql_value};
use crate::model::schema::TableSchema;
use crate::model::server::quote_ident;

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub chunk_size: u64,
    pub repair: bool,
    /// Re-checks of differing rows before they are reported.
    pub rechecks: u32,
    pub recheck_delay: Duration,
    /// The stream whose tables these are: a repair marks its writes in that stream's
    /// `offsets_db.cdc_repairs` (so no stream carries them back), and `mariadb-native` mode adds
    /// `skip_replication`.
    pub stream: String,
    pub offsets_db: String,
    pub mode: ServerMode,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            chunk_size: 10_000,
            repair: false,
            rechecks: 3,
            recheck_delay: Duration::from_millis(1000),
            stream: "verify".into(),
            offsets_db: "strangler_cdc".into(),
            mode: ServerMode::Portable,
        }
    }
}

/// What verify found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub source: String,
    pub target: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub chunks: u64,
    pub mismatched_chunks: u64,
    /// Primary keys (as SQL literals) in the source but not the target.
    pub missing: Vec<String>,
    /// In the target but not the source.
    pub extra: Vec<String>,
    /// In both, with different values.
    pub different: Vec<String>,
    /// Rows rewritten or deleted by `--repair`.
    pub repaired: u64,
    pub seconds: f64,
    /// Source rows checked per second.
    pub rows_per_second: f64,
}

impl VerifyReport {
    /// No differences left.
    pub fn clean(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

/// One side's view of the table: its name, key columns and the row expressions to hash.
struct Side {
    pool: Pool,
    table: String,
    keys: Vec<String>,
    /// SQL expressions, in the same order on both sides.
    exprs: Vec<String>,
}

fn quote_table(q: &str) -> String {
    crate::model::server::quote_qualified(q)
}

impl Side {
    fn key_list(&self) -> String {
        self.keys
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn row_hash(&self) -> String {
        let nulls: Vec<String> = self.exprs.iter().map(|e| format!("ISNULL({e})")).collect();
        format!(
            "CRC32(CONCAT_WS('#', {}, CONCAT({})))",
            self.exprs.join(", "),
            nulls.join(", ")
        )
    }

    /// `(k1, k2) > (?, ?) AND (k1, k2) <= (?, ?)` for a range with optional ends.
    fn range(&self, lo: Option<&[Value]>, hi: Option<&[Value]>) -> (String, Vec<Value>) {
        use crate::model::server::{KeyBound, key_bound_sql};
        let cols: Vec<String> = self.keys.iter().map(|k| quote_ident(k)).collect();
        let mut conds = Vec::new();
        let mut params = Vec::new();
        for (key, bound) in [(lo, KeyBound::After), (hi, KeyBound::AtMost)] {
            if let Some(key) = key {
                let (sql, parts) = key_bound_sql(&cols, bound);
                conds.push(format!("({sql})"));
                params.extend(parts.iter().map(|&i| key[i].clone()));
            }
        }
        if conds.is_empty() {
            conds.push("1".into());
        }
        (conds.join(" AND "), params)
    }

    async fn checksum(
        &self,
        conn: &mut Conn,
        lo: Option<&[Value]>,
        hi: Option<&[Value]>,
    ) -> Result<(u64, u64), CdcError> {
        let (cond, params) = self.range(lo, hi);
        let row: Option<(u64, u64)> = conn
            .exec_first(
                format!(
                    "SELECT COUNT(*), CAST(COALESCE(BIT_XOR({}), 0) AS UNSIGNED) FROM {} WHERE {cond}",
                    self.row_hash(),
                    self.table
                ),
                params,
            )
            .await?;
        Ok(row.unwrap_or((0, 0)))
    }

    /// Key literal → (key values, row hash) for the rows of a range, or of the given keys.
    async fn rows(
        &self,
        conn: &mut Conn,
        filter: (String, Vec<Value>),
    ) -> Result<BTreeMap<String, (Vec<Value>, u64)>, CdcError> {
        let rows: Vec<mysql_async::Row> = conn
            .exec(
                format!(
                    "SELECT {}, {} FROM {} WHERE {}",
                    self.key_list(),
                    self.row_hash(),
                    self.table,
                    filter.0
                ),
                filter.1,
            )
            .await?;
        let n = self.keys.len();
        Ok(rows
            .into_iter()
            .map(|r| {
                let values: Vec<Value> = r.clone().unwrap();
                let key = values[..n].to_vec();
                let hash = match &values[n] {
                    Value::Int(i) => *i as u64,
                    Value::UInt(u) => *u,
                    _ => 0,
                };
                (key_literal(&key), (key, hash))
            })
            .collect())
    }

    fn keys_filter(&self, keys: &[Vec<Value>]) -> (String, Vec<Value>) {
        let tuple = format!("({})", self.key_list());
        let marks = format!("({})", vec!["?"; self.keys.len()].join(", "));
        (
            format!("{tuple} IN ({})", vec![marks; keys.len()].join(", ")),
            keys.iter().flatten().cloned().collect(),
        )
    }
}

fn key_literal(key: &[Value]) -> String {
    let parts: Vec<String> = key.iter().map(|v| v.as_sql(false)).collect();
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", parts.join(", "))
    }
}

/// The source and target sides of a mapping.
async fn sides(
    source_url: &str,
    target_url: &str,
    m: &TableMapping,
) -> Result<(Side, Side, TableSchema), CdcError> {
    let src_pool = pool(source_url)?;
    let (db, table) = m.source.split_once('.').expect("validated db.table");
    let schema = crate::source::schema::load(&src_pool, db, table).await?;
    let (src_exprs, dst_exprs): (Vec<String>, Vec<String>) =
        m.sql_columns(&schema).into_iter().unzip();
    let src_keys: Vec<String> = schema
        .primary_key
        .iter()
        .map(|&i| schema.columns[i].name.clone())
        .collect();
    let mut dst_keys = Vec::new();
    for k in &src_keys {
        dst_keys.push(
            m.target_column(k)
                .ok_or_else(|| {
                    CdcError::Config(format!("primary key column {k} is dropped by the mapping"))
                })?
                .to_string(),
        );
    }
    Ok((
        Side {
            pool: src_pool,
            table: quote_table(&m.source),
            keys: src_keys,
            exprs: src_exprs,
        },
        Side {
            pool: pool(target_url)?,
            table: quote_table(&m.target),
            keys: dst_keys,
            exprs: dst_exprs,
        },
        schema,
    ))
}

/// Row-level differences of the given source and target rows.
fn diff(
    src: &BTreeMap<String, (Vec<Value>, u64)>,
    dst: &BTreeMap<String, (Vec<Value>, u64)>,
) -> Vec<(String, Vec<Value>, Kind)> {
    let mut out = Vec::new();
    for (k, (key, h)) in src {
        match dst.get(k) {
            None => out.push((k.clone(), key.clone(), Kind::Missing)),
            Some((_, h2)) if h2 != h => out.push((k.clone(), key.clone(), Kind::Different)),
            _ => {}
        }
    }
    for (k, (key, _)) in dst {
        if !src.contains_key(k) {
            out.push((k.clone(), key.clone(), Kind::Extra));
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Missing,
    Extra,
    Different,
}

/// Verifies (and with `repair`, repairs) one mapped table.
pub async fn verify(
    source_url: &str,
    target_url: &str,
    m: &TableMapping,
    opts: &VerifyOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<VerifyReport, CdcError> {
    let started = Instant::now();
    let (src, dst, _schema) = sides(source_url, target_url, m).await?;
    let mut sc = src.pool.get_conn().await?;
    let mut dc = dst.pool.get_conn().await?;
    let total: u64 = sc
        .query_first(format!("SELECT COUNT(*) FROM {}", src.table))
        .await?
        .unwrap_or(0);
    let mut report = VerifyReport {
        source: m.source.clone(),
        target: m.target.clone(),
        ..Default::default()
    };
    let mut suspects: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut lo: Option<Vec<Value>> = None;
    let mut done = false;
    let chunk = opts.chunk_size.max(1);
    while !done {
        let (cond, params) = src.range(lo.as_deref(), None);
        let hi: Option<mysql_async::Row> = sc
            .exec_first(
                format!(
                    "SELECT {} FROM {} WHERE {cond} ORDER BY {} LIMIT 1 OFFSET {}",
                    src.key_list(),
                    src.table,
                    src.key_list(),
                    chunk - 1
                ),
                params,
            )
            .await?;
        let hi: Option<Vec<Value>> = hi.map(|r| r.unwrap());
        done = hi.is_none();
        let (a, b) = (
            src.checksum(&mut sc, lo.as_deref(), hi.as_deref()).await?,
            dst.checksum(&mut dc, lo.as_deref(), hi.as_deref()).await?,
        );
        report.chunks += 1;
        report.source_rows += a.0;
        report.target_rows += b.0;
        if a != b {
            report.mismatched_chunks += 1;
            let s = src
                .rows(&mut sc, src.range(lo.as_deref(), hi.as_deref()))
                .await?;
            let d = dst
                .rows(&mut dc, dst.range(lo.as_deref(), hi.as_deref()))
                .await?;
            for (lit, key, _) in diff(&s, &d) {
                suspects.insert(lit, key);
            }
        }
        progress(report.source_rows, total);
        lo = hi;
    }
    // Rows that differ may be changes still on their way: look again before reporting.
    let mut found = Vec::new();
    for round in 0..=opts.rechecks {
        if suspects.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(opts.recheck_delay).await;
        }
        let keys: Vec<Vec<Value>> = suspects.values().cloned().collect();
        found.clear();
        for part in keys.chunks(500) {
            let s = src.rows(&mut sc, src.keys_filter(part)).await?;
            let d = dst.rows(&mut dc, dst.keys_filter(part)).await?;
            found.extend(diff(&s, &d));
        }
        suspects = found
            .iter()
            .map(|(l, k, _)| (l.clone(), k.clone()))
            .collect();
    }
    if opts.repair && !found.is_empty() {
        report.repaired = repair(&src, &dst, m, &mut sc, &mut dc, &found, opts).await?;
        // Check the repaired rows again.
        let keys: Vec<Vec<Value>> = found.iter().map(|(_, k, _)| k.clone()).collect();
        found.clear();
        for part in keys.chunks(500) {
            let s = src.rows(&mut sc, src.keys_filter(part)).await?;
            let d = dst.rows(&mut dc, dst.keys_filter(part)).await?;
            found.extend(diff(&s, &d));
        }
    }
    let mut seen = BTreeSet::new();
    for (lit, _, kind) in found {
        if !seen.insert(lit.clone()) {
            continue;
        }
        match kind {
            Kind::Missing => report.missing.push(lit),
            Kind::Extra => report.extra.push(lit),
            Kind::Different => report.different.push(lit),
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.rows_per_second = report.source_rows as f64 / report.seconds.max(1e-9);
    record(&mut dc, opts, &report).await?;
    drop((sc, dc));
    src.pool.disconnect().await?;
    dst.pool.disconnect().await?;
    Ok(report)
}

/// Every verify's result, kept in the target's `offsets_db` so that a migration gate can ask
/// whether the last one was clean, how old it is, and whether a backfill ran since.
async fn ensure_results_table(c: &mut Conn, offsets_db: &str) -> Result<(), CdcError> {
    let db = quote_ident(offsets_db);
    c.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .await?;
    c.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {db}.cdc_verify (
           id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
           stream VARCHAR(100) NOT NULL, source_table VARCHAR(200) NOT NULL,
           target_table VARCHAR(200) NOT NULL, clean TINYINT(1) NOT NULL,
           source_rows BIGINT UNSIGNED NOT NULL, target_rows BIGINT UNSIGNED NOT NULL,
           differences BIGINT UNSIGNED NOT NULL, repaired BIGINT UNSIGNED NOT NULL,
           seconds DOUBLE NOT NULL, finished_at DATETIME(3) NOT NULL,
           KEY idx_cdc_verify_table (stream, source_table, id))"
    ))
    .await?;
    Ok(())
}

async fn record(c: &mut Conn, opts: &VerifyOptions, r: &VerifyReport) -> Result<(), CdcError> {
    ensure_results_table(c, &opts.offsets_db).await?;
    let differences = (r.missing.len() + r.extra.len() + r.different.len()) as u64;
    c.exec_drop(
        format!(
            "INSERT INTO {}.cdc_verify (stream, source_table, target_table, clean, source_rows, \
             target_rows, differences, repaired, seconds, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(3))",
            quote_ident(&opts.offsets_db)
        ),
        (
            &opts.stream,
            &r.source,
            &r.target,
            r.clean(),
            r.source_rows,
            r.target_rows,
            differences,
            r.repaired,
            r.seconds,
        ),
    )
    .await?;
    Ok(())
}

/// The last recorded verify of one table of a stream, with what happened since.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyRecord {
    pub source: String,
    pub target: String,
    pub clean: bool,
    pub source_rows: u64,
    pub target_rows: u64,
    /// Rows missing, extra or different when it finished.
    pub differences: u64,
    /// UTC `YYYY-MM-DD HH:MM:SS.fff`.
    pub finished_at: String,
    pub age_seconds: f64,
    /// The status of the table's backfill when it last changed after this verify finished
    /// (`running`, `done`, …): the verify no longer vouches for the copy.
    pub backfill_since: Option<String>,
}

/// The last verify of `source_table` recorded for `stream` in `target_url`'s `offsets_db`, if any.
pub async fn last_result(
    target_url: &str,
    offsets_db: &str,
    stream: &str,
    source_table: &str,
) -> Result<Option<VerifyRecord>, CdcError> {
    let p = pool(target_url)?;
    let mut c = p.get_conn().await?;
    ensure_results_table(&mut c, offsets_db).await?;
    crate::backfill::progress::ensure_progress_table(&mut c, offsets_db).await?;
    let db = quote_ident(offsets_db);
    type Row = (
        String,
        String,
        bool,
        u64,
        u64,
        u64,
        String,
        f64,
        Option<String>,
    );
    let row: Option<Row> = c
        .exec_first(
            format!(
                "SELECT v.source_table, v.target_table, v.clean, v.source_rows, v.target_rows, \
                 v.differences, CAST(v.finished_at AS CHAR), \
                 TIMESTAMPDIFF(MICROSECOND, v.finished_at, UTC_TIMESTAMP(3)) / 1e6, \
                 (SELECT b.status FROM {db}.cdc_backfill b WHERE b.stream = v.stream \
                  AND b.source_table = v.source_table AND b.updated_at >= v.finished_at) \
                 FROM {db}.cdc_verify v WHERE v.stream = ? AND v.source_table = ? \
                 ORDER BY v.id DESC LIMIT 1"
            ),
            (stream, source_table),
        )
        .await?;
    drop(c);
    p.disconnect().await?;
    Ok(row.map(
        |(
            source,
            target,
            clean,
            source_rows,
            target_rows,
            differences,
            finished_at,
            age,
            since,
        )| {
            VerifyRecord {
                source,
                target,
                clean,
                source_rows,
                target_rows,
                differences,
                finished_at,
                age_seconds: age,
                backfill_since: since,
            }
        },
    ))
}

/// Rewrites differing and missing rows from the source and deletes extra ones, each target
/// transaction opened by a marker row (`cdc_repairs`) so no stream carries the repair back.
async fn repair(
    src: &Side,
    dst: &Side,
    m: &TableMapping,
    sc: &mut Conn,
    dc: &mut Conn,
    found: &[(String, Vec<Value>, Kind)],
    opts: &VerifyOptions,
) -> Result<u64, CdcError> {
    let copy: Vec<Vec<Value>> = found
        .iter()
        .filter(|(_, _, k)| *k != Kind::Extra)
        .map(|(_, key, _)| key.clone())
        .collect();
    let delete: Vec<Vec<Value>> = found
        .iter()
        .filter(|(_, _, k)| *k == Kind::Extra)
        .map(|(_, key, _)| key.clone())
        .collect();
    let mut cols: Vec<String> = dst.exprs.clone();
    let defaults: Vec<Value> = m.defaults.values().map(default_sql_value).collect();
    cols.extend(m.defaults.keys().map(|k| quote_ident(k)));
    let updates: Vec<String> = cols.iter().map(|c| format!("{c} = VALUES({c})")).collect();
    let native = opts.mode == ServerMode::MariadbNative;
    let repairs = format!("{}.cdc_repairs", quote_ident(&opts.offsets_db));
    dc.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        quote_ident(&opts.offsets_db)
    ))
    .await?;
    dc.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {repairs} (stream VARCHAR(100) NOT NULL, target_table VARCHAR(200) NOT NULL, \
         transactions BIGINT UNSIGNED NOT NULL DEFAULT 0, \
         updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3), \
         PRIMARY KEY (stream, target_table))"
    ))
    .await?;
    let mark = format!(
        "INSERT INTO {repairs} (stream, target_table, transactions) VALUES (?, ?, 1) \
         ON DUPLICATE KEY UPDATE transactions = transactions + 1"
    );
    if native {
        dc.query_drop("SET SESSION skip_replication = 1").await?;
    }
    let mut repaired = 0;
    for part in copy.chunks(500) {
        let (cond, params) = src.keys_filter(part);
        let rows: Vec<mysql_async::Row> = sc
            .exec(
                format!(
                    "SELECT {} FROM {} WHERE {cond}",
                    src.exprs.join(", "),
                    src.table
                ),
                params,
            )
            .await?;
        let mut tx = dc.start_transaction(Default::default()).await?;
        tx.exec_drop(&mark, (&opts.stream, &m.target)).await?;
        for r in rows {
            let mut values: Vec<Value> = r.unwrap();
            values.extend(defaults.iter().cloned());
            tx.exec_drop(
                format!(
                    "INSERT INTO {} ({}) VALUES ({}) ON DUPLICATE KEY UPDATE {}",
                    dst.table,
                    cols.join(", "),
                    vec!["?"; cols.len()].join(", "),
                    updates.join(", ")
                ),
                values,
            )
            .await?;
            repaired += 1;
        }
        tx.commit().await?;
    }
    for part in delete.chunks(500) {
        let (cond, params) = dst.keys_filter(part);
        let mut tx = dc.start_transaction(Default::default()).await?;
        tx.exec_drop(&mark, (&opts.stream, &m.target)).await?;
        tx.exec_drop(format!("DELETE FROM {} WHERE {cond}", dst.table), params)
            .await?;
        repaired += tx.affected_rows();
        tx.commit().await?;
    }
    if native {
        dc.query_drop("SET SESSION skip_replication = 0").await?;
    }
    Ok(repaired)
}

//! Chunk reading: the table split into key ranges, each read chunk by chunk between a low and a
//! high watermark written on the source, at an adaptive size and a throttled rate.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Pool, Value};

use super::keys::{key_literal, keys_to_json, quote};
use super::progress::{Range, set_status};
use super::signal::{Request, signal_table, unique};
use super::watermark::Chunk;
use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::model::schema::{ColumnKind, TableSchema};
use crate::model::server::quote_ident;
/// How a column is selected for a snapshot event: as the binlog would carry its value.
pub(super) fn snapshot_expr(c: &crate::model::schema::Column) -> String {
    match c.kind {
        ColumnKind::Timestamp { .. } => format!("UNIX_TIMESTAMP({})", quote_ident(&c.name)),
        ColumnKind::Set { .. } => format!("({} + 0)", quote_ident(&c.name)),
        _ => quote_ident(&c.name),
    }
}

/// Splits the table into `n` ranges of its first key column: evenly between MIN and MAX for an
/// integer column, else at the first key of every n-th part of the (estimated) row count.
pub async fn split_ranges(
    conn: &mut mysql_async::Conn,
    table: &str,
    schema: &TableSchema,
    n: u32,
    estimate: u64,
) -> Result<Vec<Range>, CdcError> {
    let whole = || {
        vec![Range {
            lo: None,
            hi: None,
            last: None,
            done: false,
        }]
    };
    let Some(&first) = schema.primary_key.first() else {
        return Ok(whole());
    };
    if n <= 1 {
        return Ok(whole());
    }
    let col = quote_ident(&schema.columns[first].name);
    let mut bounds: Vec<Value> = Vec::new();
    if matches!(schema.columns[first].kind, ColumnKind::Int { .. }) {
        let (lo, hi): (Option<i128>, Option<i128>) = conn
            .query_first(format!(
                "SELECT CAST(MIN({col}) AS CHAR), CAST(MAX({col}) AS CHAR) FROM {}",
                quote(table)
            ))
            .await?
            .map(|(a, b): (Option<String>, Option<String>)| {
                (
                    a.and_then(|s| s.parse().ok()),
                    b.and_then(|s| s.parse().ok()),
                )
            })
            .unwrap_or((None, None));
        if let (Some(lo), Some(hi)) = (lo, hi) {
            bounds = int_bounds(lo, hi, n);
        }
    } else {
        for i in 1..u64::from(n) {
            let at = estimate * i / u64::from(n);
            let b: Option<Value> = conn
                .query_first(format!(
                    "SELECT {col} FROM {} ORDER BY {col} LIMIT 1 OFFSET {at}",
                    quote(table)
                ))
                .await?;
            if let Some(b) = b {
                bounds.push(b);
            }
        }
    }
    Ok(ranges_between(bounds))
}

pub(super) struct ChunkReader {
    pub(super) config: StreamConfig,
    pub(super) source: Pool,
    pub(super) table: String,
    pub(super) select_cols: Vec<String>,
    pub(super) keys: Vec<String>,
    pub(super) first_key: String,
    pub(super) key_count: usize,
    pub(super) defaults: Vec<Value>,
    pub(super) req: Request,
    pub(super) range: usize,
    pub(super) lo: Option<Value>,
    pub(super) hi: Option<Value>,
    pub(super) from: Option<Vec<Value>>,
    /// Range readers running at once: they share the rows/s budget.
    pub(super) readers: u64,
    pub(super) paused: Arc<AtomicBool>,
    /// Set when one range reader failed: the others stop too.
    pub(super) halted: Arc<AtomicBool>,
    pub(super) metrics: Metrics,
    pub(super) out: tokio::sync::mpsc::Sender<Chunk>,
}

/// Reads one range's chunks between watermarks until it is done, paused or the stream stops.
pub(super) async fn run_chunks(r: ChunkReader) {
    let table = r.table.clone();
    let config = r.config.clone();
    let halted = r.halted.clone();
    if let Err(e) = chunks(r).await {
        halted.store(true, Ordering::SeqCst);
        tracing::error!(table = %table, error = %e, "backfill failed; resume with --resume");
        let _ = set_status(&config, &table, "failed", Some(&e.to_string()), None).await;
    }
}

pub(super) async fn chunks(mut r: ChunkReader) -> Result<(), CdcError> {
    let signal = quote(&signal_table(&r.config));
    let key_list = r.keys.join(", ");
    let mut size = r.req.chunk_size.clamp(1, 1_000_000);
    let adaptive_max = size.saturating_mul(8).min(1_000_000);
    let rate = match r.req.max_rows_per_sec {
        0 => 0,
        n => (n / r.readers.max(1)).max(1),
    };
    let started = Instant::now();
    let mut copied = 0u64;
    let mut conn = r.source.get_conn().await?;
    conn.query_drop("SET time_zone = '+00:00'").await?;
    loop {
        if r.halted.load(Ordering::SeqCst) {
            return Ok(());
        }
        if r.paused.load(Ordering::SeqCst) {
            tracing::info!(table = %r.table, range = r.range, "backfill range stopped: paused");
            return Ok(());
        }
        // Throttles: rows per second, and the stream's own lag.
        if rate > 0 {
            let due = Duration::from_secs_f64(copied as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        while r.req.max_lag_seconds > 0.0
            && r.metrics.lag_seconds.get() > r.req.max_lag_seconds
            && !r.paused.load(Ordering::SeqCst)
        {
            r.metrics
                .backfill_throttled
                .with_label_values(&[&r.table])
                .inc();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let id = unique();
        let (low, high) = (format!("backfill-low-{id}"), format!("backfill-high-{id}"));
        conn.exec_drop(
            format!("INSERT INTO {signal} (id, type) VALUES (?, 'backfill-low')"),
            (&low,),
        )
        .await?;
        let mut conds = Vec::new();
        let mut params = Vec::new();
        if let Some(k) = &r.from {
            let (sql, parts) =
                crate::model::server::key_bound_sql(&r.keys, crate::model::server::KeyBound::After);
            conds.push(sql);
            params.extend(parts.iter().map(|&i| k[i].clone()));
        }
        if let Some(lo) = &r.lo {
            conds.push(format!("{} >= ?", r.first_key));
            params.push(lo.clone());
        }
        if let Some(hi) = &r.hi {
            conds.push(format!("{} < ?", r.first_key));
            params.push(hi.clone());
        }
        let cond = if conds.is_empty() {
            "1".to_string()
        } else {
            conds.join(" AND ")
        };
        let t = Instant::now();
        let rows: Vec<mysql_async::Row> = conn
            .exec(
                format!(
                    "SELECT {key_list}, {} FROM {} WHERE {cond} ORDER BY {key_list} LIMIT {size}",
                    r.select_cols.join(", "),
                    quote(&r.table)
                ),
                params,
            )
            .await?;
        let took = t.elapsed();
        let n = rows.len() as u64;
        let done = n < size;
        let mut out = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows {
            let mut values: Vec<Value> = row.unwrap();
            let key: Vec<Value> = values.drain(..r.key_count).collect();
            values.extend(r.defaults.iter().cloned());
            out.push((key_literal(&key), values));
            last = Some(key);
        }
        let (ack, acked) = tokio::sync::oneshot::channel();
        let chunk = Chunk {
            high_id: high.clone(),
            range: r.range,
            rows: out,
            last_key: last.clone(),
            done,
            applied: ack,
        };
        if r.out.send(chunk).await.is_err() {
            return Ok(()); // the stream stopped; progress is in the target
        }
        conn.exec_drop(
            format!("INSERT INTO {signal} (id, type) VALUES (?, 'backfill-high')"),
            (&high,),
        )
        .await?;
        let again = match acked.await {
            Ok(Ok(())) => false,
            Ok(Err(e)) => {
                tracing::warn!(table = %r.table, range = r.range, reason = %e, "chunk not copied; reading it again");
                true
            }
            Err(_) => return Ok(()), // the stream stopped before applying it; resumes from the last chunk
        };
        // The watermark rows are only markers.
        conn.exec_drop(
            format!("DELETE FROM {signal} WHERE id IN (?, ?)"),
            (format!("backfill-low-{id}"), &high),
        )
        .await?;
        if again {
            continue;
        }
        copied += n;
        if done {
            return Ok(());
        }
        r.from = last;
        // Adaptive chunk size: aim at about half a second per chunk read.
        let secs = took.as_secs_f64().max(0.001);
        let ideal = (size as f64 * 0.5 / secs) as u64;
        size = ideal.clamp((size / 2).max(100), (size * 2).min(adaptive_max.max(100)));
    }
}

/// The `n - 1` inner bounds that split the integers `lo..=hi` into `n` even ranges (fewer when
/// the span is smaller than `n`).
pub fn int_bounds(lo: i128, hi: i128, n: u32) -> Vec<Value> {
    let span = hi - lo + 1;
    let mut bounds = Vec::new();
    for i in 1..i128::from(n) {
        let b = lo + span * i / i128::from(n);
        if b > lo && b <= hi {
            bounds.push(match i64::try_from(b) {
                Ok(v) => Value::Int(v),
                Err(_) => Value::UInt(b as u64),
            });
        }
    }
    bounds
}

/// Ranges `[..b1) [b1..b2) … [bn..)` from inner bounds in key order; repeated bounds (a key
/// spanning several parts of the row count) are merged.
pub fn ranges_between(mut bounds: Vec<Value>) -> Vec<Range> {
    let as_json = |v: &Value| keys_to_json(std::slice::from_ref(v));
    let mut seen = HashSet::new();
    bounds.retain(|b| seen.insert(key_literal(std::slice::from_ref(b))));
    let mut ranges = Vec::new();
    let mut lo: Option<serde_json::Value> = None;
    for b in &bounds {
        let hi = Some(as_json(b));
        ranges.push(Range {
            lo: lo.take(),
            hi: hi.clone(),
            last: None,
            done: false,
        });
        lo = hi;
    }
    ranges.push(Range {
        lo,
        hi: None,
        last: None,
        done: false,
    });
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_split_evenly_and_cover_everything() {
        assert_eq!(
            int_bounds(1, 100, 4),
            vec![Value::Int(26), Value::Int(51), Value::Int(76)]
        );
        // Fewer keys than parts: repeated bounds merge, so no empty ranges.
        assert_eq!(int_bounds(5, 6, 4), vec![Value::Int(6), Value::Int(6)]);
        assert_eq!(ranges_between(int_bounds(5, 6, 4)).len(), 2);
        assert!(int_bounds(7, 7, 8).is_empty());
        // Unsigned keys beyond i64.
        let top = i128::from(u64::MAX);
        assert_eq!(int_bounds(top - 1, top, 2), vec![Value::UInt(u64::MAX)]);
        let ranges = ranges_between(int_bounds(1, 100, 4));
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].lo, None);
        assert_eq!(ranges[0].hi, Some(serde_json::json!([26])));
        assert_eq!(ranges[1].lo, ranges[0].hi);
        assert_eq!(ranges[3].lo, Some(serde_json::json!([76])));
        assert_eq!(ranges[3].hi, None);
    }

    #[test]
    fn repeated_bounds_merge_and_no_bounds_is_one_range() {
        let text = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        let ranges = ranges_between(vec![text("b"), text("b"), text("d")]);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[1].lo, Some(serde_json::json!(["b"])));
        assert_eq!(ranges[1].hi, Some(serde_json::json!(["d"])));
        let whole = ranges_between(Vec::new());
        assert_eq!(whole.len(), 1);
        assert!(whole[0].lo.is_none() && whole[0].hi.is_none() && !whole[0].done);
    }
}

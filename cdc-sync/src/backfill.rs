//! Backfill while streaming, with the DBLog / Debezium incremental-snapshot watermark algorithm.
//! `cdc-sync backfill` writes a signal row on the source; the running stream sees it in the binlog
//! and copies the table in primary-key chunks: low watermark, chunk SELECT, high watermark. Rows
//! the binlog changed between the two watermarks are dropped from the chunk (the stream carries
//! their newer version), and the rest is written when the stream reaches the high watermark, so a
//! chunk copy never overwrites a newer change. Progress commits with each chunk in the target.
//! `--parallel P` splits the key range into P ranges read at once, each with its own windows. In
//! Kafka mode the chunk becomes snapshot events (`op: "r"`, `source.snapshot = "incremental"`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Pool, Value};
use serde::{Deserialize, Serialize};

use crate::apply::mapping::default_sql_value;
use crate::apply::mysql::utc_pool as pool;
use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::model::debezium::{ChangeEvent, Envelope, Op, Snapshot, Source};
use crate::model::values::{decode, encode};
use crate::schema::{ColumnKind, TableSchema};
use crate::source::binlog::Transaction;

/// Signal table on the source (in the stream's `offsets_db` database there).
pub fn signal_table(config: &StreamConfig) -> String {
    format!("{}.cdc_signal", config.offsets_db)
}

/// Backfill settings carried by the `backfill` signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Source `db.table`.
    pub table: String,
    pub chunk_size: u64,
    /// 0: unlimited.
    #[serde(default)]
    pub max_rows_per_sec: u64,
    /// Pause chunks while the stream lags more than this (seconds); 0: no limit.
    #[serde(default)]
    pub max_lag_seconds: f64,
    /// Continue after the last copied chunk instead of starting over.
    #[serde(default)]
    pub resume: bool,
    /// Key ranges copied at once.
    #[serde(default = "one")]
    pub parallel: u32,
}

fn one() -> u32 {
    1
}

/// One key range of a backfill and how far it got; keys as JSON arrays (`keys_to_json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// First key column `>=` this (none: from the start).
    pub lo: Option<serde_json::Value>,
    /// First key column `<` this (none: to the end).
    pub hi: Option<serde_json::Value>,
    /// Last key copied in this range.
    pub last: Option<serde_json::Value>,
    pub done: bool,
}

/// Progress of one table's backfill, as stored in the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub table: String,
    pub status: String,
    pub rows_copied: u64,
    pub rows_estimate: u64,
    pub chunks: u64,
    pub last_key: Option<String>,
    pub message: Option<String>,
    pub seconds: f64,
    /// Key ranges copied in parallel, and how far each got.
    pub ranges: Vec<Range>,
}

fn quote(q: &str) -> String {
    q.split('.')
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(".")
}

/// Creates the signal table on the source if missing.
pub async fn ensure_signal_table(config: &StreamConfig) -> Result<(), CdcError> {
    let p = pool(&config.source_url)?;
    let mut c = p.get_conn().await?;
    c.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS `{}`",
        config.offsets_db
    ))
    .await?;
    c.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (id VARCHAR(100) NOT NULL PRIMARY KEY, type VARCHAR(32) NOT NULL, \
         data TEXT NULL, created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))",
        quote(&signal_table(config))
    ))
    .await?;
    drop(c);
    p.disconnect().await?;
    Ok(())
}

/// Creates the progress table on the target if missing.
pub async fn ensure_progress_table(
    conn: &mut mysql_async::Conn,
    offsets_db: &str,
) -> Result<(), CdcError> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS `{offsets_db}`.cdc_backfill (
           stream VARCHAR(100) NOT NULL, source_table VARCHAR(200) NOT NULL,
           status VARCHAR(16) NOT NULL, request TEXT NOT NULL,
           last_key TEXT NULL, rows_copied BIGINT UNSIGNED NOT NULL DEFAULT 0,
           rows_estimate BIGINT UNSIGNED NOT NULL DEFAULT 0, chunks BIGINT UNSIGNED NOT NULL DEFAULT 0,
           message TEXT NULL,
           started_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
           updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
           PRIMARY KEY (stream, source_table))"
    ))
    .await?;
    conn.query_drop(format!(
        "ALTER TABLE `{offsets_db}`.cdc_backfill ADD COLUMN IF NOT EXISTS ranges TEXT NULL"
    ))
    .await?;
    Ok(())
}

/// Writes a signal row on the source.
pub async fn send_signal(
    config: &StreamConfig,
    kind: &str,
    data: &serde_json::Value,
) -> Result<String, CdcError> {
    ensure_signal_table(config).await?;
    let p = pool(&config.source_url)?;
    let id = format!("{kind}-{}", unique());
    // Several streams may read one source: each signal names its stream.
    let mut data = data.clone();
    if let Some(o) = data.as_object_mut() {
        o.insert("stream".into(), serde_json::json!(config.name));
    }
    let mut c = p.get_conn().await?;
    c.exec_drop(
        format!(
            "INSERT INTO {} (id, type, data) VALUES (?, ?, ?)",
            quote(&signal_table(config))
        ),
        (&id, kind, data.to_string()),
    )
    .await?;
    drop(c);
    p.disconnect().await?;
    Ok(id)
}

fn unique() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// status, rows copied, estimate, chunks, last key, message, seconds, ranges.
type ProgressRow = (
    String,
    u64,
    u64,
    u64,
    Option<String>,
    Option<String>,
    f64,
    Option<String>,
);

/// Every backfill of the stream, from the target.
pub async fn all_progress(config: &StreamConfig) -> Result<Vec<Progress>, CdcError> {
    let mut out = Vec::new();
    for t in &config.tables {
        if let Some(p) = progress(config, &t.source).await? {
            out.push(p);
        }
    }
    Ok(out)
}

/// Reads a table's backfill progress from the target.
pub async fn progress(config: &StreamConfig, table: &str) -> Result<Option<Progress>, CdcError> {
    let p = pool(&config.target_url)?;
    let mut c = p.get_conn().await?;
    ensure_progress_table(&mut c, &config.offsets_db).await.ok();
    let row: Option<ProgressRow> = c
        .exec_first(
            format!(
                "SELECT status, rows_copied, rows_estimate, chunks, last_key, message, \
                 TIMESTAMPDIFF(MICROSECOND, started_at, updated_at) / 1e6, ranges \
                 FROM `{}`.cdc_backfill WHERE stream = ? AND source_table = ?",
                config.offsets_db
            ),
            (&config.name, table),
        )
        .await?;
    drop(c);
    p.disconnect().await?;
    Ok(row.map(
        |(status, rows_copied, rows_estimate, chunks, last_key, message, seconds, ranges)| {
            Progress {
                table: table.to_string(),
                status,
                rows_copied,
                rows_estimate,
                chunks,
                last_key,
                message,
                seconds,
                ranges: ranges
                    .and_then(|r| serde_json::from_str(&r).ok())
                    .unwrap_or_default(),
            }
        },
    ))
}

/// One chunk read between watermarks, waiting for the stream to reach its high watermark.
pub struct Chunk {
    /// Its high watermark's signal id; the low one is the same with `low` for `high`.
    pub high_id: String,
    /// Index of its key range.
    pub range: usize,
    /// Key literal of each row, and the row's values: mapped target columns then defaults
    /// (direct mode), or every source column in snapshot form (Kafka mode).
    pub rows: Vec<(String, Vec<Value>)>,
    pub last_key: Option<Vec<Value>>,
    pub done: bool,
    pub applied: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// A running backfill, as the stream's apply loop sees it.
pub struct Active {
    table: String,
    chunks: tokio::sync::mpsc::Receiver<Chunk>,
    /// Chunks read, by high watermark id, waiting for the stream to reach it.
    pending: HashMap<String, Chunk>,
    /// Open windows: low watermark id → keys the binlog changed since.
    windows: HashMap<String, HashSet<String>>,
    paused: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ranges: Vec<Range>,
    /// Source schema (Kafka mode: snapshot events are built from it).
    schema: Arc<TableSchema>,
    upsert: String,
    width: usize,
    progress_sql: String,
}

impl Drop for Active {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the apply loop must do after a transaction.
pub enum Step {
    Nothing,
    /// Write this chunk now (after everything up to and including this transaction).
    Copy(Chunk, HashSet<String>),
}

/// Backfill state of a stream.
pub struct Backfills {
    config: StreamConfig,
    target: Pool,
    metrics: Metrics,
    signal: String,
    /// Kafka mode: chunks become snapshot events instead of target writes.
    emit: bool,
    active: Option<Active>,
}

impl Backfills {
    /// Direct mode: chunks are written to the target.
    pub fn new(config: &StreamConfig, metrics: Metrics) -> Result<Self, CdcError> {
        Ok(Self {
            target: pool(&config.target_url)?,
            signal: signal_table(config),
            config: config.clone(),
            metrics,
            emit: false,
            active: None,
        })
    }

    /// Kafka mode: chunks are published as snapshot events (`snapshot_events`, then `record`).
    pub fn emitting(config: &StreamConfig, metrics: Metrics) -> Result<Self, CdcError> {
        Ok(Self {
            emit: true,
            ..Self::new(config, metrics)?
        })
    }

    /// The signal table, to be read with the stream's tables.
    pub fn signal_table(&self) -> &str {
        &self.signal
    }

    /// Restarts a backfill that was running when the stream stopped.
    pub async fn resume_unfinished(&mut self) -> Result<(), CdcError> {
        let p = pool(&self.config.target_url)?;
        let mut c = p.get_conn().await?;
        ensure_progress_table(&mut c, &self.config.offsets_db).await?;
        let row: Option<String> = c
            .exec_first(
                format!(
                    "SELECT request FROM `{}`.cdc_backfill WHERE stream = ? AND status = 'running' LIMIT 1",
                    self.config.offsets_db
                ),
                (&self.config.name,),
            )
            .await?;
        drop(c);
        p.disconnect().await?;
        if let Some(text) = row {
            let mut req: Request = serde_json::from_str(&text)
                .map_err(|e| CdcError::Config(format!("stored backfill request: {e}")))?;
            req.resume = true;
            tracing::info!(table = %req.table, "resuming the backfill that was running");
            self.start(req).await?;
        }
        Ok(())
    }

    /// Looks at one transaction in stream order: signals, watermarks, keys changed in a window.
    pub async fn observe(&mut self, txn: &Transaction) -> Result<Step, CdcError> {
        let mut step = Step::Nothing;
        for ev in &txn.events {
            let table = ev.schema.qualified();
            if table == self.signal {
                let Some(row) = &ev.envelope.after else {
                    continue;
                };
                let id = row
                    .get("id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                let kind = row
                    .get("type")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                let data: serde_json::Value = row
                    .get("data")
                    .and_then(|v| v.as_str())
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(serde_json::Value::Null);
                let ours = data.get("stream").and_then(|v| v.as_str()) == Some(&self.config.name);
                match kind.as_str() {
                    "backfill" | "backfill-pause" if !ours => {}
                    "backfill" => match serde_json::from_value::<Request>(data) {
                        Ok(req) => self.start(req).await?,
                        Err(e) => {
                            tracing::error!(signal = %id, error = %e, "backfill signal ignored: bad request")
                        }
                    },
                    "backfill-pause" => {
                        if let Some(a) = &self.active {
                            tracing::info!(table = %a.table, "backfill paused on request");
                            a.paused.store(true, Ordering::SeqCst);
                            // Said here, once: range readers stop at their next chunk.
                            set_status(
                                &self.config,
                                &a.table,
                                "paused",
                                Some("paused on request"),
                                None,
                            )
                            .await?;
                        }
                    }
                    "backfill-low" => {
                        if let Some(a) = self.active.as_mut() {
                            a.windows.insert(id, HashSet::new());
                        }
                    }
                    "backfill-high" => {
                        let Some(a) = self.active.as_mut() else {
                            continue;
                        };
                        // A chunk is sent before its high watermark is written, so it is
                        // waiting in the channel now. Marks of an earlier run match nothing.
                        while let Ok(c) = a.chunks.try_recv() {
                            a.pending.insert(c.high_id.clone(), c);
                        }
                        let low = id.replacen("backfill-high-", "backfill-low-", 1);
                        let window = a.windows.remove(&low);
                        match (a.pending.remove(&id), window) {
                            (Some(chunk), Some(window)) => step = Step::Copy(chunk, window),
                            (Some(chunk), None) => {
                                // Its low watermark was never seen: the window is unknown, so
                                // copying could overwrite a newer row. The reader reads it again.
                                let _ = chunk.applied.send(Err(format!(
                                    "the low watermark {low} of a chunk was not seen in the binlog"
                                )));
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if let Some(a) = self.active.as_mut()
                && !a.windows.is_empty()
                && table == a.table
            {
                let mut keys = Vec::with_capacity(2);
                if let Some(row) = ev.envelope.after.as_ref() {
                    keys.push(key_of_event(&ev.schema, row));
                }
                if let Some(before) = &ev.envelope.before {
                    keys.push(key_of_event(&ev.schema, before));
                }
                for window in a.windows.values_mut() {
                    window.extend(keys.iter().cloned());
                }
            }
        }
        Ok(step)
    }

    /// Writes a chunk (minus the rows changed in its window) with its progress, in one target
    /// transaction marked `skip_replication`.
    pub async fn copy(&mut self, chunk: Chunk, window: HashSet<String>) -> Result<(), CdcError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let mut conn = self.target.get_conn().await?;
        conn.query_drop("SET SESSION skip_replication = 1, time_zone = '+00:00'")
            .await?;
        let mut tx = conn.start_transaction(Default::default()).await?;
        let mut written = 0u64;
        let keep: Vec<&Vec<Value>> = chunk
            .rows
            .iter()
            .filter(|(key, _)| !window.contains(key))
            .map(|(_, v)| v)
            .collect();
        let group = format!("({})", vec!["?"; a.width].join(", "));
        // At most 65,535 placeholders a statement.
        for part in keep.chunks((60_000 / a.width.max(1)).clamp(1, 1000)) {
            let sql = a
                .upsert
                .replace("{rows}", &vec![group.as_str(); part.len()].join(", "));
            let params: Vec<Value> = part.iter().flat_map(|v| v.iter().cloned()).collect();
            tx.exec_drop(sql, params).await?;
            written += part.len() as u64;
        }
        let (sql, params) = progress_update(a, &chunk, &self.config.name);
        tx.exec_drop(sql, params).await?;
        tx.commit().await?;
        self.finish(chunk, written);
        Ok(())
    }

    /// Kafka mode: the chunk's rows (minus those changed in its window) as snapshot events,
    /// placed in the stream at `at`, the transaction holding the chunk's high watermark.
    pub fn snapshot_events(
        &self,
        chunk: &Chunk,
        window: &HashSet<String>,
        at: &Transaction,
    ) -> Result<Vec<ChangeEvent>, CdcError> {
        let Some(a) = self.active.as_ref() else {
            return Ok(Vec::new());
        };
        let schema = &a.schema;
        let server_id = at.events.first().map_or(0, |e| e.envelope.source.server_id);
        let now = chrono::Utc::now().timestamp_millis();
        let mut out = Vec::new();
        for (i, (_, values)) in chunk
            .rows
            .iter()
            .filter(|(key, _)| !window.contains(key))
            .enumerate()
        {
            let mut after = serde_json::Map::new();
            for (col, v) in schema.columns.iter().zip(values) {
                let json = encode(
                    &col.kind,
                    &mysql_async::binlog::value::BinlogValue::Value(v.clone()),
                )
                .map_err(|e| {
                    CdcError::Config(format!("{}.{}: {e}", schema.qualified(), col.name))
                })?;
                after.insert(col.name.clone(), json);
            }
            out.push(ChangeEvent {
                schema: schema.clone(),
                envelope: Envelope {
                    before: None,
                    after: Some(after),
                    source: Source {
                        version: env!("CARGO_PKG_VERSION").into(),
                        connector: "mariadb".into(),
                        name: self.config.name.clone(),
                        ts_ms: at.ts_ms,
                        snapshot: Snapshot::Text("incremental".into()),
                        db: schema.db.clone(),
                        sequence: None,
                        table: Some(schema.table.clone()),
                        server_id,
                        gtid: at.gtid.clone(),
                        file: at.end.file.clone(),
                        pos: at.end.pos,
                        row: i as u32,
                        thread: None,
                        query: None,
                    },
                    op: Op::Read,
                    ts_ms: Some(now),
                    ts_us: None,
                    transaction: None,
                },
            });
        }
        Ok(out)
    }

    /// Kafka mode: records a chunk whose snapshot events Kafka acknowledged.
    pub async fn record(&mut self, chunk: Chunk, emitted: u64) -> Result<(), CdcError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let (sql, params) = progress_update(a, &chunk, &self.config.name);
        let mut conn = self.target.get_conn().await?;
        conn.exec_drop(sql, params).await?;
        drop(conn);
        self.finish(chunk, emitted);
        Ok(())
    }

    /// Metrics and the reader's acknowledgement of a written chunk; forgets a finished backfill.
    fn finish(&mut self, chunk: Chunk, written: u64) {
        let Some(a) = self.active.as_ref() else {
            return;
        };
        let table = a.table.clone();
        let all_done = a.ranges.iter().all(|r| r.done);
        self.metrics
            .backfill_rows
            .with_label_values(&[&table, "copied"])
            .inc_by(written);
        self.metrics
            .backfill_rows
            .with_label_values(&[&table, "skipped_newer"])
            .inc_by(chunk.rows.len() as u64 - written);
        self.metrics
            .backfill_chunks
            .with_label_values(&[&table])
            .inc();
        let _ = chunk.applied.send(Ok(()));
        if all_done {
            tracing::info!(table = %table, "backfill done");
            self.active = None;
        }
    }

    /// Starts (or resumes) a backfill; one table at a time per stream.
    async fn start(&mut self, req: Request) -> Result<(), CdcError> {
        // A paused backfill whose readers are still winding down (a throttle sleep, a chunk in
        // flight) is dropped, which stops them: its progress is in the target.
        if let Some(a) = &self.active
            && !a.paused.load(Ordering::SeqCst)
            && a.tasks.iter().any(|t| !t.is_finished())
        {
            tracing::warn!(running = %a.table, requested = %req.table, "a backfill is already running; request ignored");
            return Ok(());
        }
        self.active = None;
        let Some(mapping) = self
            .config
            .tables
            .iter()
            .find(|t| t.source == req.table)
            .cloned()
        else {
            tracing::error!(table = %req.table, "backfill of a table this stream does not map; ignored");
            return Ok(());
        };
        let source = pool(&self.config.source_url)?;
        let (db, table) = req.table.split_once('.').expect("validated");
        let schema = match crate::schema::load(&source, db, table).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.fail(&req, &e.to_string()).await?;
                return Ok(());
            }
        };
        // Target columns: mapped source columns, then defaults.
        let (exprs, mut cols): (Vec<String>, Vec<String>) =
            mapping.sql_columns(&schema).into_iter().unzip();
        let defaults: Vec<Value> = mapping.defaults.values().map(default_sql_value).collect();
        cols.extend(mapping.defaults.keys().map(|k| format!("`{k}`")));
        let updates: Vec<String> = cols.iter().map(|c| format!("{c} = VALUES({c})")).collect();
        // `{rows}` becomes one `(?, …)` group per row: chunks go out as multi-row statements.
        let upsert = format!(
            "INSERT INTO {} ({}) VALUES {{rows}} ON DUPLICATE KEY UPDATE {}",
            quote(&mapping.target),
            cols.join(", "),
            updates.join(", ")
        );
        let width = cols.len();
        // Kafka mode reads every source column as the binlog carries it.
        let (select_cols, defaults) = if self.emit {
            (
                schema.columns.iter().map(snapshot_expr).collect(),
                Vec::new(),
            )
        } else {
            (exprs, defaults)
        };
        let keys: Vec<String> = schema
            .primary_key
            .iter()
            .map(|&i| format!("`{}`", schema.columns[i].name))
            .collect();
        let target = pool(&self.config.target_url)?;
        let mut tc = target.get_conn().await?;
        ensure_progress_table(&mut tc, &self.config.offsets_db).await?;
        let stored: Option<(String, Option<String>, Option<String>)> = tc
            .exec_first(
                format!("SELECT status, last_key, ranges FROM `{}`.cdc_backfill WHERE stream = ? AND source_table = ?", self.config.offsets_db),
                (&self.config.name, &req.table),
            )
            .await?;
        let mut sc = source.get_conn().await?;
        // The optimizer's estimate: COUNT(*) of a 500 GB table would take minutes.
        let estimate: u64 = sc
            .exec_first(
                "SELECT COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db, table),
            )
            .await?
            .unwrap_or(0);
        let resumed: Option<Vec<Range>> = match (&stored, req.resume) {
            (Some((_, _, Some(r))), true) => Some(
                serde_json::from_str(r)
                    .map_err(|e| CdcError::Config(format!("stored backfill ranges {r:?}: {e}")))?,
            ),
            (Some((_, Some(k), None)), true) => Some(vec![Range {
                lo: None,
                hi: None,
                last: Some(
                    serde_json::from_str(k)
                        .map_err(|e| CdcError::Config(format!("stored backfill key {k:?}: {e}")))?,
                ),
                done: false,
            }]),
            _ => None,
        };
        let ranges = match &resumed {
            Some(r) => r.clone(),
            None => {
                split_ranges(
                    &mut sc,
                    &req.table,
                    &schema,
                    req.parallel.clamp(1, 64),
                    estimate,
                )
                .await?
            }
        };
        let request_text = serde_json::to_string(&req).expect("serializable");
        let ranges_text = serde_json::to_string(&ranges).expect("serializable");
        if resumed.is_none() || stored.is_none() {
            tc.exec_drop(
                format!(
                    "REPLACE INTO `{}`.cdc_backfill (stream, source_table, status, request, rows_estimate, ranges) VALUES (?, ?, 'running', ?, ?, ?)",
                    self.config.offsets_db
                ),
                (&self.config.name, &req.table, &request_text, estimate, &ranges_text),
            )
            .await?;
        } else {
            tc.exec_drop(
                format!(
                    "UPDATE `{}`.cdc_backfill SET status = 'running', request = ?, rows_estimate = ?, ranges = ?, message = NULL WHERE stream = ? AND source_table = ?",
                    self.config.offsets_db
                ),
                (&request_text, estimate, &ranges_text, &self.config.name, &req.table),
            )
            .await?;
        }
        drop((tc, sc));
        target.disconnect().await?;
        let open: Vec<usize> = (0..ranges.len()).filter(|&i| !ranges[i].done).collect();
        tracing::info!(table = %req.table, ranges = %ranges_text, estimate, "backfill starting");
        let (tx, rx) = tokio::sync::mpsc::channel(open.len().max(1));
        let paused = Arc::new(AtomicBool::new(false));
        let halted = Arc::new(AtomicBool::new(false));
        let first_key = keys.first().cloned().unwrap_or_default();
        let mut tasks = Vec::new();
        for &i in &open {
            let r = &ranges[i];
            let bound = |v: &Option<serde_json::Value>| -> Result<Option<Value>, CdcError> {
                Ok(match v {
                    Some(v) => json_to_keys(&v.to_string())?.into_iter().next(),
                    None => None,
                })
            };
            tasks.push(tokio::spawn(run_chunks(ChunkReader {
                config: self.config.clone(),
                source: source.clone(),
                table: req.table.clone(),
                select_cols: select_cols.clone(),
                keys: keys.clone(),
                first_key: first_key.clone(),
                key_count: schema.primary_key.len(),
                defaults: defaults.clone(),
                req: req.clone(),
                range: i,
                lo: bound(&r.lo)?,
                hi: bound(&r.hi)?,
                from: match &r.last {
                    Some(k) => Some(json_to_keys(&k.to_string())?),
                    None => None,
                },
                readers: open.len() as u64,
                paused: paused.clone(),
                halted: halted.clone(),
                metrics: self.metrics.clone(),
                out: tx.clone(),
            })));
        }
        self.active = Some(Active {
            table: req.table.clone(),
            chunks: rx,
            pending: HashMap::new(),
            windows: HashMap::new(),
            paused,
            tasks,
            ranges,
            schema,
            upsert,
            width,
            progress_sql: format!(
                "UPDATE `{}`.cdc_backfill SET last_key = COALESCE(?, last_key), ranges = ?, rows_copied = rows_copied + ?, \
                 chunks = chunks + 1, status = IF(? = 'done', 'done', IF(status IN ('paused', 'failed'), status, 'running')) \
                 WHERE stream = ? AND source_table = ?",
                self.config.offsets_db
            ),
        });
        Ok(())
    }

    async fn fail(&self, req: &Request, message: &str) -> Result<(), CdcError> {
        tracing::error!(table = %req.table, error = %message, "backfill refused");
        set_status(&self.config, &req.table, "failed", Some(message), Some(req)).await
    }

    /// Notices range readers that all ended (paused or failed) and forgets the backfill.
    pub fn reap(&mut self) {
        if self.active.as_ref().is_some_and(|a| {
            a.tasks.iter().all(|t| t.is_finished()) && a.pending.is_empty() && a.chunks.is_empty()
        }) {
            self.active = None;
        }
    }
}

/// Records a chunk in its range; the progress statement and its parameters. A chunk of another
/// range landing after a pause or a failure keeps that status.
fn progress_update(a: &mut Active, chunk: &Chunk, stream: &str) -> (String, Vec<Value>) {
    let last = chunk.last_key.as_ref().map(|k| keys_to_json(k));
    if let Some(r) = a.ranges.get_mut(chunk.range) {
        if last.is_some() {
            r.last = last.clone();
        }
        r.done |= chunk.done;
    }
    let status = if a.ranges.iter().all(|r| r.done) {
        "done"
    } else {
        "running"
    };
    (
        a.progress_sql.clone(),
        vec![
            last.map(|k| k.to_string()).into(),
            serde_json::to_string(&a.ranges)
                .expect("serializable")
                .into(),
            (chunk.rows.len() as u64).into(),
            status.into(),
            stream.into(),
            a.table.clone().into(),
        ],
    )
}

/// How a column is selected for a snapshot event: as the binlog would carry its value.
fn snapshot_expr(c: &crate::schema::Column) -> String {
    match c.kind {
        ColumnKind::Timestamp { .. } => format!("UNIX_TIMESTAMP(`{}`)", c.name),
        ColumnKind::Set { .. } => format!("(`{}` + 0)", c.name),
        _ => format!("`{}`", c.name),
    }
}

/// Splits the table into `n` ranges of its first key column: evenly between MIN and MAX for an
/// integer column, else at the first key of every n-th part of the (estimated) row count.
async fn split_ranges(
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
    let col = format!("`{}`", schema.columns[first].name);
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
            let span = hi - lo + 1;
            for i in 1..i128::from(n) {
                let b = lo + span * i / i128::from(n);
                if b > lo && b <= hi {
                    bounds.push(match i64::try_from(b) {
                        Ok(v) => Value::Int(v),
                        Err(_) => Value::UInt(b as u64),
                    });
                }
            }
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
    Ok(ranges)
}

async fn set_status(
    config: &StreamConfig,
    table: &str,
    status: &str,
    message: Option<&str>,
    req: Option<&Request>,
) -> Result<(), CdcError> {
    let p = pool(&config.target_url)?;
    let mut c = p.get_conn().await?;
    ensure_progress_table(&mut c, &config.offsets_db).await?;
    let request = req
        .map(|r| serde_json::to_string(r).expect("serializable"))
        .unwrap_or_else(|| "{}".into());
    c.exec_drop(
        format!(
            "INSERT INTO `{}`.cdc_backfill (stream, source_table, status, request, message) VALUES (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE status = VALUES(status), message = VALUES(message)",
            config.offsets_db
        ),
        (&config.name, table, status, request, message),
    )
    .await?;
    drop(c);
    p.disconnect().await?;
    Ok(())
}

/// The key literal of a binlog row, comparable with `key_literal` of a selected row.
fn key_of_event(
    schema: &crate::schema::TableSchema,
    row: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let values: Vec<Value> = schema
        .primary_key
        .iter()
        .map(|&i| {
            let c = &schema.columns[i];
            decode(
                &c.kind,
                row.get(&c.name).unwrap_or(&serde_json::Value::Null),
            )
            .unwrap_or(Value::NULL)
        })
        .collect();
    key_literal(&values)
}

/// Key values as one comparable text.
pub fn key_literal(key: &[Value]) -> String {
    key.iter()
        .map(|v| match v {
            Value::UInt(u) => u.to_string(),
            other => other.as_sql(false),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn keys_to_json(key: &[Value]) -> serde_json::Value {
    serde_json::Value::Array(
        key.iter()
            .map(|v| match v {
                Value::Int(i) => serde_json::json!(i),
                Value::UInt(u) => serde_json::json!(u),
                Value::Bytes(b) => serde_json::json!(String::from_utf8_lossy(b)),
                other => serde_json::json!(other.as_sql(false)),
            })
            .collect(),
    )
}

fn json_to_keys(text: &str) -> Result<Vec<Value>, CdcError> {
    let v: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| CdcError::Config(format!("stored backfill key {text:?}: {e}")))?;
    Ok(v.into_iter()
        .map(|v| match v {
            serde_json::Value::Number(n) if n.is_i64() => Value::Int(n.as_i64().unwrap_or(0)),
            serde_json::Value::Number(n) => Value::UInt(n.as_u64().unwrap_or(0)),
            serde_json::Value::String(s) => Value::Bytes(s.into_bytes()),
            other => Value::Bytes(other.to_string().into_bytes()),
        })
        .collect())
}

struct ChunkReader {
    config: StreamConfig,
    source: Pool,
    table: String,
    select_cols: Vec<String>,
    keys: Vec<String>,
    first_key: String,
    key_count: usize,
    defaults: Vec<Value>,
    req: Request,
    range: usize,
    lo: Option<Value>,
    hi: Option<Value>,
    from: Option<Vec<Value>>,
    /// Range readers running at once: they share the rows/s budget.
    readers: u64,
    paused: Arc<AtomicBool>,
    /// Set when one range reader failed: the others stop too.
    halted: Arc<AtomicBool>,
    metrics: Metrics,
    out: tokio::sync::mpsc::Sender<Chunk>,
}

/// Reads one range's chunks between watermarks until it is done, paused or the stream stops.
async fn run_chunks(r: ChunkReader) {
    let table = r.table.clone();
    let config = r.config.clone();
    let halted = r.halted.clone();
    if let Err(e) = chunks(r).await {
        halted.store(true, Ordering::SeqCst);
        tracing::error!(table = %table, error = %e, "backfill failed; resume with --resume");
        let _ = set_status(&config, &table, "failed", Some(&e.to_string()), None).await;
    }
}

async fn chunks(mut r: ChunkReader) -> Result<(), CdcError> {
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
            conds.push(format!(
                "({key_list}) > ({})",
                vec!["?"; k.len()].join(", ")
            ));
            params.extend(k.iter().cloned());
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

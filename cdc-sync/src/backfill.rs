//! Backfill while streaming, with the DBLog / Debezium incremental-snapshot watermark algorithm.
//! `cdc-sync backfill` writes a signal row on the source; the running stream sees it in the binlog
//! and copies the table in primary-key chunks: low watermark, chunk SELECT, high watermark. Rows
//! the binlog changed between the two watermarks are dropped from the chunk (the stream carries
//! their newer version), and the rest is written when the stream reaches the high watermark, so a
//! chunk copy never overwrites a newer change. Progress commits with each chunk in the target.

use std::collections::HashSet;
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
use crate::model::values::decode;
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

/// status, rows copied, estimate, chunks, last key, message, seconds.
type ProgressRow = (String, u64, u64, u64, Option<String>, Option<String>, f64);

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
                 TIMESTAMPDIFF(MICROSECOND, started_at, updated_at) / 1e6 \
                 FROM `{}`.cdc_backfill WHERE stream = ? AND source_table = ?",
                config.offsets_db
            ),
            (&config.name, table),
        )
        .await?;
    drop(c);
    p.disconnect().await?;
    Ok(row.map(
        |(status, rows_copied, rows_estimate, chunks, last_key, message, seconds)| Progress {
            table: table.to_string(),
            status,
            rows_copied,
            rows_estimate,
            chunks,
            last_key,
            message,
            seconds,
        },
    ))
}

/// One chunk read between watermarks, waiting for the stream to reach its high watermark.
pub struct Chunk {
    pub high_id: String,
    pub low_id: String,
    /// Key literal of each row, and the row's values (mapped target columns, then defaults).
    pub rows: Vec<(String, Vec<Value>)>,
    pub last_key: Option<Vec<Value>>,
    pub done: bool,
    pub applied: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// A running backfill, as the stream's apply loop sees it.
pub struct Active {
    table: String,
    chunks: tokio::sync::mpsc::Receiver<Chunk>,
    pending: Option<Chunk>,
    /// The open window: its low watermark and the keys the binlog changed inside it.
    window: Option<(String, HashSet<String>)>,
    paused: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    upsert: String,
    width: usize,
    progress_sql: String,
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
    active: Option<Active>,
}

impl Backfills {
    pub fn new(config: &StreamConfig, metrics: Metrics) -> Result<Self, CdcError> {
        Ok(Self {
            target: pool(&config.target_url)?,
            signal: signal_table(config),
            config: config.clone(),
            metrics,
            active: None,
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
                            tracing::info!(table = %a.table, "backfill pause requested");
                            a.paused.store(true, Ordering::SeqCst);
                        }
                    }
                    "backfill-low" => {
                        if let Some(a) = self.active.as_mut() {
                            a.window = Some((id, HashSet::new()));
                        }
                    }
                    "backfill-high" => {
                        let Some(a) = self.active.as_mut() else {
                            continue;
                        };
                        // The chunk was sent before its high watermark was written, so it is
                        // waiting in the channel now. Marks of an earlier run match nothing.
                        if a.pending.is_none() {
                            a.pending = a.chunks.try_recv().ok();
                        }
                        let matches = a.pending.as_ref().is_some_and(|c| c.high_id == id)
                            && a.window.as_ref().is_some_and(|(low, _)| {
                                a.pending.as_ref().is_some_and(|c| &c.low_id == low)
                            });
                        if matches {
                            let chunk = a.pending.take().expect("checked");
                            let (_, window) = a.window.take().expect("checked");
                            step = Step::Copy(chunk, window);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if let Some(a) = self.active.as_mut()
                && let Some((_, window)) = a.window.as_mut()
                && table == a.table
            {
                let row = ev.envelope.after.as_ref().or(ev.envelope.before.as_ref());
                if let Some(row) = row {
                    window.insert(key_of_event(&ev.schema, row));
                }
                if let Some(before) = &ev.envelope.before {
                    window.insert(key_of_event(&ev.schema, before));
                }
            }
        }
        Ok(step)
    }

    /// Writes a chunk (minus the rows changed in its window) with its progress, in one target
    /// transaction marked `skip_replication`.
    pub async fn copy(&mut self, chunk: Chunk, window: HashSet<String>) -> Result<(), CdcError> {
        let Some(a) = self.active.as_ref() else {
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
        let last = chunk.last_key.as_ref().map(|k| keys_to_json(k).to_string());
        tx.exec_drop(
            a.progress_sql.as_str(),
            (
                last,
                chunk.rows.len() as u64,
                if chunk.done { "done" } else { "running" },
                &self.config.name,
                &a.table,
            ),
        )
        .await?;
        tx.commit().await?;
        let table = a.table.clone();
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
        let done = chunk.done;
        let _ = chunk.applied.send(Ok(()));
        if done {
            tracing::info!(table = %table, "backfill done");
            self.active = None;
        }
        Ok(())
    }

    /// Starts (or resumes) a backfill task; one at a time per stream.
    async fn start(&mut self, req: Request) -> Result<(), CdcError> {
        if let Some(a) = &self.active
            && !a.task.is_finished()
        {
            tracing::warn!(running = %a.table, requested = %req.table, "a backfill is already running; request ignored");
            return Ok(());
        }
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
            Ok(s) => s,
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
        let keys: Vec<String> = schema
            .primary_key
            .iter()
            .map(|&i| format!("`{}`", schema.columns[i].name))
            .collect();
        let target = pool(&self.config.target_url)?;
        let mut tc = target.get_conn().await?;
        ensure_progress_table(&mut tc, &self.config.offsets_db).await?;
        let stored: Option<(String, Option<String>)> = tc
            .exec_first(
                format!("SELECT status, last_key FROM `{}`.cdc_backfill WHERE stream = ? AND source_table = ?", self.config.offsets_db),
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
        let from: Option<Vec<Value>> = match (&stored, req.resume) {
            (Some((_, Some(k))), true) => Some(json_to_keys(k)?),
            _ => None,
        };
        let request_text = serde_json::to_string(&req).expect("serializable");
        if from.is_none() || stored.is_none() {
            tc.exec_drop(
                format!(
                    "REPLACE INTO `{}`.cdc_backfill (stream, source_table, status, request, rows_estimate) VALUES (?, ?, 'running', ?, ?)",
                    self.config.offsets_db
                ),
                (&self.config.name, &req.table, &request_text, estimate),
            )
            .await?;
        } else {
            tc.exec_drop(
                format!(
                    "UPDATE `{}`.cdc_backfill SET status = 'running', request = ?, rows_estimate = ?, message = NULL WHERE stream = ? AND source_table = ?",
                    self.config.offsets_db
                ),
                (&request_text, estimate, &self.config.name, &req.table),
            )
            .await?;
        }
        drop((tc, sc));
        target.disconnect().await?;
        tracing::info!(table = %req.table, resume_after = ?from.as_ref().map(|k| keys_to_json(k).to_string()), estimate, "backfill starting");
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let paused = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run_chunks(ChunkReader {
            config: self.config.clone(),
            source,
            table: req.table.clone(),
            select_cols: exprs,
            keys,
            key_count: schema.primary_key.len(),
            defaults,
            req: req.clone(),
            from,
            paused: paused.clone(),
            metrics: self.metrics.clone(),
            out: tx,
        }));
        self.active = Some(Active {
            table: req.table.clone(),
            chunks: rx,
            pending: None,
            window: None,
            paused,
            task,
            upsert,
            width,
            progress_sql: format!(
                "UPDATE `{}`.cdc_backfill SET last_key = COALESCE(?, last_key), rows_copied = rows_copied + ?, \
                 chunks = chunks + 1, status = ? WHERE stream = ? AND source_table = ?",
                self.config.offsets_db
            ),
        });
        Ok(())
    }

    async fn fail(&self, req: &Request, message: &str) -> Result<(), CdcError> {
        tracing::error!(table = %req.table, error = %message, "backfill refused");
        set_status(&self.config, &req.table, "failed", Some(message), Some(req)).await
    }

    /// Notices a chunk task that ended (paused or failed) and forgets it.
    pub fn reap(&mut self) {
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.task.is_finished() && a.pending.is_none() && a.chunks.is_empty())
        {
            self.active = None;
        }
    }
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
    key_count: usize,
    defaults: Vec<Value>,
    req: Request,
    from: Option<Vec<Value>>,
    paused: Arc<AtomicBool>,
    metrics: Metrics,
    out: tokio::sync::mpsc::Sender<Chunk>,
}

/// Reads chunks between watermarks until the table is done, paused or the stream stops.
async fn run_chunks(r: ChunkReader) {
    let table = r.table.clone();
    let config = r.config.clone();
    if let Err(e) = chunks(r).await {
        tracing::error!(table = %table, error = %e, "backfill failed; resume with --resume");
        let _ = set_status(&config, &table, "failed", Some(&e.to_string()), None).await;
    }
}

async fn chunks(mut r: ChunkReader) -> Result<(), CdcError> {
    let signal = quote(&signal_table(&r.config));
    let key_list = r.keys.join(", ");
    let mut size = r.req.chunk_size.clamp(1, 1_000_000);
    let adaptive_max = size.saturating_mul(8).min(1_000_000);
    let started = Instant::now();
    let mut copied = 0u64;
    let mut conn = r.source.get_conn().await?;
    conn.query_drop("SET time_zone = '+00:00'").await?;
    loop {
        if r.paused.load(Ordering::SeqCst) {
            set_status(
                &r.config,
                &r.table,
                "paused",
                Some("paused on request"),
                None,
            )
            .await?;
            tracing::info!(table = %r.table, "backfill paused");
            return Ok(());
        }
        // Throttles: rows per second, and the stream's own lag.
        if r.req.max_rows_per_sec > 0 {
            let due = Duration::from_secs_f64(copied as f64 / r.req.max_rows_per_sec as f64);
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
        let (cond, params) = match &r.from {
            Some(k) => (
                format!("({key_list}) > ({})", vec!["?"; k.len()].join(", ")),
                k.clone(),
            ),
            None => ("1".to_string(), Vec::new()),
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
            low_id: low,
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
        match acked.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(CdcError::Config(e)),
            Err(_) => return Ok(()), // the stream stopped before applying it; resumes from the last chunk
        }
        // The watermark rows are only markers.
        conn.exec_drop(
            format!("DELETE FROM {signal} WHERE id IN (?, ?)"),
            (format!("backfill-low-{id}"), &high),
        )
        .await?;
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

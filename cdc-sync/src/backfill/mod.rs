//! Backfill while streaming, with the DBLog / Debezium incremental-snapshot watermark algorithm.
//! `cdc-sync backfill` writes a signal row on the source; the running stream sees it in the binlog
//! and copies the table in primary-key chunks: low watermark, chunk SELECT, high watermark. Rows
//! the binlog changed between the two watermarks are dropped from the chunk (the stream carries
//! their newer version), and the rest is written when the stream reaches the high watermark, so a
//! chunk copy never overwrites a newer change. Progress commits with each chunk in the target.
//! `--parallel P` splits the key range into P ranges read at once, each with its own windows. In
//! Kafka mode the chunk becomes snapshot events (`op: "r"`, `source.snapshot = "incremental"`).

pub mod chunks;
pub mod keys;
pub mod progress;
pub mod signal;
pub mod watermark;

pub use keys::key_literal;
pub use progress::{Progress, Range, all_progress, progress};
pub use signal::{Request, ensure_signal_table, send_signal, signal_table};
pub use watermark::{Chunk, Step};

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mysql_async::prelude::*;
use mysql_async::{Pool, Value};

use crate::apply::mysql::utc_pool as pool;
use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::model::debezium::{ChangeEvent, Envelope, Op, Snapshot, Source};
use crate::model::mapping::default_sql_value;
use crate::model::schema::TableSchema;
use crate::model::server::quote_ident;
use crate::model::transaction::Transaction;
use crate::model::values::encode;
use chunks::{ChunkReader, run_chunks, snapshot_expr, split_ranges};
use keys::{json_to_keys, key_of_event, quote};
use progress::{ensure_progress_table, progress_update, set_status};
use watermark::Watermarks;
/// A running backfill, as the stream's apply loop sees it.
pub struct Active {
    table: String,
    chunks: tokio::sync::mpsc::Receiver<Chunk>,
    marks: Watermarks,
    paused: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ranges: Vec<Range>,
    /// Source schema (Kafka mode: snapshot events are built from it).
    schema: Arc<TableSchema>,
    upsert: String,
    width: usize,
    progress_sql: String,
}

impl Active {
    /// Records `chunk` in its range: the progress statement and its parameters.
    fn progress(&mut self, chunk: &Chunk, stream: &str) -> (String, Vec<Value>) {
        progress_update(
            &mut self.ranges,
            &self.progress_sql,
            &self.table,
            chunk,
            stream,
        )
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
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
    /// Requests that came while another table was being copied, in order (`queued` in the
    /// progress table, so a restarted stream takes them up again).
    queued: std::collections::VecDeque<Request>,
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
            queued: std::collections::VecDeque::new(),
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

    /// Restarts a backfill that was running when the stream stopped, and queues again those
    /// that were waiting for it.
    pub async fn resume_unfinished(&mut self) -> Result<(), CdcError> {
        let p = pool(&self.config.target_url)?;
        let mut c = p.get_conn().await?;
        ensure_progress_table(&mut c, &self.config.offsets_db).await?;
        let rows: Vec<(String, String)> = c
            .exec(
                format!(
                    "SELECT status, request FROM `{}`.cdc_backfill WHERE stream = ? \
                     AND status IN ('running', 'queued') ORDER BY status = 'queued', updated_at",
                    self.config.offsets_db
                ),
                (&self.config.name,),
            )
            .await?;
        drop(c);
        p.disconnect().await?;
        for (status, text) in rows {
            let mut req: Request = serde_json::from_str(&text)
                .map_err(|e| CdcError::Config(format!("stored backfill request: {e}")))?;
            if status == "running" {
                req.resume = true;
                tracing::info!(table = %req.table, "resuming the backfill that was running");
            }
            self.start(req).await?;
        }
        Ok(())
    }

    /// Starts the next queued backfill once none runs.
    async fn start_queued(&mut self) -> Result<(), CdcError> {
        if self.active.is_none()
            && let Some(req) = self.queued.pop_front()
        {
            tracing::info!(table = %req.table, "starting the next queued backfill");
            self.start(req).await?;
        }
        Ok(())
    }

    /// Looks at one transaction in stream order: signals, watermarks, keys changed in a window.
    pub async fn observe(&mut self, txn: &Transaction) -> Result<Step, CdcError> {
        // A backfill that ended by a pause or a failure (`reap`) lets the next one go.
        self.start_queued().await?;
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
                            a.marks.open(id);
                        }
                    }
                    "backfill-high" => {
                        let Some(a) = self.active.as_mut() else {
                            continue;
                        };
                        // A chunk is sent before its high watermark is written, so it is
                        // waiting in the channel now.
                        while let Ok(c) = a.chunks.try_recv() {
                            a.marks.arrived(c);
                        }
                        step = a.marks.close(&id);
                    }
                    _ => {}
                }
                continue;
            }
            if let Some(a) = self.active.as_mut()
                && a.marks.any_open()
                && table == a.table
            {
                let mut keys = Vec::with_capacity(2);
                if let Some(row) = ev.envelope.after.as_ref() {
                    keys.push(key_of_event(&ev.schema, row));
                }
                if let Some(before) = &ev.envelope.before {
                    keys.push(key_of_event(&ev.schema, before));
                }
                a.marks.changed(&keys);
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
        conn.query_drop(self.config.mode.writer_session_sql())
            .await?;
        let mut tx = conn.start_transaction(Default::default()).await?;
        // The progress row first: it marks the transaction as cdc-sync's own (a marker table).
        let (sql, params) = a.progress(&chunk, &self.config.name);
        tx.exec_drop(sql, params).await?;
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
        tx.commit().await?;
        self.finish(chunk, written);
        self.start_queued().await
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
        let (sql, params) = a.progress(&chunk, &self.config.name);
        let mut conn = self.target.get_conn().await?;
        conn.exec_drop(sql, params).await?;
        drop(conn);
        self.finish(chunk, emitted);
        self.start_queued().await
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

    /// Starts (or resumes) a backfill; one table at a time per stream, the others queued.
    async fn start(&mut self, req: Request) -> Result<(), CdcError> {
        // A paused backfill whose readers are still winding down (a throttle sleep, a chunk in
        // flight) is dropped, which stops them: its progress is in the target.
        if let Some(a) = &self.active
            && !a.paused.load(Ordering::SeqCst)
            && a.tasks.iter().any(|t| !t.is_finished())
        {
            if a.table == req.table || self.queued.iter().any(|q| q.table == req.table) {
                tracing::warn!(table = %req.table, "this backfill is already running or queued; request ignored");
                return Ok(());
            }
            tracing::info!(running = %a.table, queued = %req.table, "a backfill is running; this one waits for it");
            set_status(&self.config, &req.table, "queued", None, Some(&req)).await?;
            self.queued.push_back(req);
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
        let schema = match crate::source::schema::load(&source, db, table).await {
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
        cols.extend(mapping.defaults.keys().map(|k| quote_ident(k)));
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
            .map(|&i| quote_ident(&schema.columns[i].name))
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
            marks: Watermarks::default(),
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
            a.tasks.iter().all(|t| t.is_finished()) && !a.marks.waiting() && a.chunks.is_empty()
        }) {
            self.active = None;
        }
    }
}

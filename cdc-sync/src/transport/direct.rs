//! The direct transport, in process: the binlog reader feeds whole transactions through a bounded
//! channel to the applier. The reader reconnects with backoff (server restarts); it resumes from
//! the last offset the applier committed, so a crash anywhere loses nothing and, since every
//! statement is idempotent and the offset commits with the rows, applies nothing twice in effect.

use std::time::Duration;

use crate::apply::batch::{BATCH_EVENTS, BATCH_TRANSACTIONS, apply_batch};
use crate::apply::mysql::MysqlApplier;
use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::model::transaction::{Offset, Transaction};
use crate::source::binlog::BinlogSource;
use crate::source::position::initial_offset;

/// Runs `config` in direct mode until `stop` fires or a non-retryable error stops it.
/// How often activity that changes no mapped row still moves the stored offset: the bound on
/// how long an ownership switch waits for a stream to pass its mark (4 offset writes a second at
/// most, only while the source is busy with other tables).
pub const IDLE_OFFSET_EVERY: Duration = Duration::from_millis(250);

pub async fn run(
    config: &StreamConfig,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CdcError> {
    let applier = MysqlApplier::for_stream(config)?;
    applier.prepare(&config.offsets_db).await?;
    let mut backfills = crate::backfill::Backfills::new(config, metrics.clone())?;
    backfills.resume_unfinished().await?;
    let mut source = BinlogSource::for_stream(config);
    source.tables.insert(backfills.signal_table().to_string());
    let mut start = match applier.stored_offset().await? {
        Some(o) => o,
        None => initial_offset(config).await?,
    };
    tracing::info!(stream = %config.name, from = %start, "stream starting");
    metrics.running.set(1);
    let mut backoff = Duration::from_millis(200);
    loop {
        let (tx, mut rx) = tokio::sync::mpsc::channel(BATCH_TRANSACTIONS * 2);
        let reader = {
            let source = source.clone();
            let from = start.clone();
            tokio::spawn(async move { source.run(from, tx).await })
        };
        let mut applied: Option<Offset> = None;
        let mut last_offset_write = std::time::Instant::now();
        let outcome: Result<(), CdcError> = loop {
            tokio::select! {
                _ = stop.changed() => break Ok(()),
                txn = rx.recv() => match txn {
                    Some(txn) => {
                        // Take what else is waiting, whole transactions, into one target commit.
                        let mut batch: Vec<Transaction> = Vec::new();
                        let mut events = 0;
                        let mut next = Some(txn);
                        while let Some(txn) = next.take() {
                            for ev in &txn.events {
                                metrics.events.with_label_values(&[&ev.schema.qualified(), "read"]).inc();
                            }
                            if txn.suppressed > 0 {
                                metrics.suppressed.inc_by(txn.suppressed);
                            }
                            // Nothing to apply: another stream's own writes are skipped outright
                            // (else two streams would bounce offset updates forever), and other
                            // activity only moves the stored offset every IDLE_OFFSET_EVERY (an
                            // ownership switch waits on it to pass its binlog mark).
                            let keep = !txn.events.is_empty()
                                || (!txn.marked
                                    && (!batch.is_empty()
                                        || last_offset_write.elapsed() >= IDLE_OFFSET_EVERY));
                            if keep {
                                events += txn.events.len();
                                batch.push(txn);
                            }
                            if batch.len() < BATCH_TRANSACTIONS && events < BATCH_EVENTS {
                                next = rx.try_recv().ok();
                            }
                        }
                        if batch.is_empty() {
                            continue;
                        }
                        last_offset_write = std::time::Instant::now();
                        // Backfill chunks are written where the stream passes their high
                        // watermark: after every change before it, before every change after it.
                        let mut from = 0;
                        let mut failed = None;
                        for i in 0..batch.len() {
                            let step = match backfills.observe(&batch[i]).await {
                                Ok(s) => s,
                                Err(e) => { failed = Some(e); break; }
                            };
                            if let crate::backfill::Step::Copy(chunk, window) = step {
                                if let Err(e) = apply_batch(&applier, &batch[from..=i], &metrics).await {
                                    failed = Some(e);
                                    break;
                                }
                                applied = Some(batch[i].end.clone());
                                from = i + 1;
                                if let Err(e) = backfills.copy(chunk, window).await {
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                        if let Some(e) = failed {
                            break Err(e);
                        }
                        backfills.reap();
                        if from < batch.len()
                            && let Err(e) = apply_batch(&applier, &batch[from..], &metrics).await
                        {
                            break Err(e);
                        }
                        applied = batch.last().map(|t| t.end.clone());
                        // Nothing more waiting: caught up with the source, so no lag (as
                        // MariaDB's Seconds_Behind_Master), not the age of the last change.
                        if rx.is_empty() {
                            metrics.lag_seconds.set(0.0);
                        }
                        backoff = Duration::from_millis(200);
                    }
                    None => break Ok(()),
                }
            }
        };
        reader.abort();
        let reader_result = reader.await;
        if let Some(a) = applied {
            start = a;
        }
        if *stop.borrow() {
            metrics.running.set(0);
            return Ok(());
        }
        let err = match (outcome, reader_result) {
            (Err(e), _) => e,
            (Ok(()), Ok(Err(e))) => e,
            (Ok(()), _) => CdcError::StreamEnded,
        };
        if !err.retryable() {
            metrics.running.set(0);
            metrics.errors.with_label_values(&["fatal"]).inc();
            tracing::error!(error = %err, at = %start, "stream stopped; nothing after the last applied offset was applied");
            return Err(err);
        }
        metrics.errors.with_label_values(&["reconnect"]).inc();
        tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, from = %start, "stream interrupted; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {},
            _ = stop.changed() => { metrics.running.set(0); return Ok(()); }
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

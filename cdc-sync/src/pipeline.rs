//! A running stream in direct mode: the binlog reader feeds whole transactions through a bounded
//! channel to the applier. The reader reconnects with backoff (server restarts); it resumes from
//! the last offset the applier committed, so a crash anywhere loses nothing and, since every
//! statement is idempotent and the offset commits with the rows, applies nothing twice in effect.

use std::collections::HashSet;
use std::time::Duration;

use crate::apply::mysql::MysqlApplier;
use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::source::binlog::{BinlogSource, Offset, Transaction};

/// Which half of a Kafka stream a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Binlog → Kafka.
    Publish,
    /// Kafka → target.
    Apply,
    /// Both, in one process.
    #[default]
    Both,
}

/// Runs the stream over its configured transport until `stop` fires or a fatal error.
pub async fn run_stream(
    config: &StreamConfig,
    role: Role,
    metrics: Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CdcError> {
    use crate::transport::kafka;
    match (config.transport, role) {
        (crate::config::Transport::Direct, _) => run(config, metrics, stop).await,
        (crate::config::Transport::Kafka, Role::Both) => kafka::run(config, metrics, stop).await,
        (crate::config::Transport::Kafka, Role::Publish) => {
            kafka::publish(config, metrics, stop).await
        }
        (crate::config::Transport::Kafka, Role::Apply) => kafka::apply(config, metrics, stop).await,
    }
}

/// Runs `config` in direct mode until `stop` fires or a non-retryable error stops it.
pub async fn run(
    config: &StreamConfig,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CdcError> {
    let applier = config.applier()?;
    applier.prepare(&config.offsets_db).await?;
    let mut backfills = crate::backfill::Backfills::new(config, metrics.clone())?;
    backfills.resume_unfinished().await?;
    let mut source = BinlogSource {
        url: config.source_url.clone(),
        reader_server_id: config.reader_server_id,
        name: config.name.clone(),
        tables: config
            .tables
            .iter()
            .map(|t| t.source.clone())
            .collect::<HashSet<_>>(),
    };
    source.tables.insert(backfills.signal_table().to_string());
    let mut start = match applier.stored_offset().await? {
        Some(o) => o,
        None => config.initial_offset().await?,
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
                            // activity only moves the stored offset about once a second.
                            let keep = !txn.events.is_empty()
                                || (!txn.marked
                                    && (!batch.is_empty()
                                        || last_offset_write.elapsed() >= Duration::from_secs(1)));
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
            (Ok(()), _) => CdcError::Config("the binlog stream ended".into()),
        };
        if !retryable(&err) {
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

/// Most source transactions / row events applied in one target transaction.
pub const BATCH_TRANSACTIONS: usize = 500;
pub const BATCH_EVENTS: usize = 5_000;

/// Applies consecutive transactions as one target transaction and records them in the metrics.
pub async fn apply_batch(
    applier: &MysqlApplier,
    txns: &[Transaction],
    metrics: &Metrics,
) -> Result<(), CdcError> {
    let Some(last) = txns.last() else {
        return Ok(());
    };
    let applied = match applier.apply_batch(txns).await {
        Ok(a) => a,
        Err(e) => {
            metrics.errors.with_label_values(&["apply"]).inc();
            return Err(e);
        }
    };
    for ev in txns.iter().flat_map(|t| &t.events) {
        metrics
            .events
            .with_label_values(&[&ev.schema.qualified(), "applied"])
            .inc();
    }
    for c in &applied.conflicts {
        let winner = match c.winner {
            crate::config::Owner::Source => "source",
            crate::config::Owner::Target => "target",
        };
        metrics
            .conflicts
            .with_label_values(&[&c.table, winner])
            .inc();
    }
    for (by, rows) in [("applier", applied.checks.0), ("server", applied.checks.1)] {
        if rows > 0 {
            metrics.checks.with_label_values(&[by]).inc_by(rows as u64);
        }
    }
    for txn in txns {
        let kind = if txn.events.is_empty() {
            "empty"
        } else {
            "data"
        };
        metrics.transactions.with_label_values(&[kind]).inc();
    }
    let lag = (chrono::Utc::now().timestamp_millis() - last.ts_ms).max(0) as f64 / 1000.0;
    metrics.lag_seconds.set(lag);
    Ok(())
}

/// Errors a reconnect can cure: lost connections, a restarting server, deadlocks.
pub fn retryable(e: &CdcError) -> bool {
    match e {
        CdcError::Db(mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)) => true,
        // Deadlock, lock wait, server shutdown, connection killed, lost connection.
        CdcError::Db(mysql_async::Error::Server(s)) => {
            matches!(s.code, 1213 | 1205 | 1053 | 1927 | 2013 | 2006)
        }
        CdcError::Config(m) => m.contains("stream ended"),
        _ => false,
    }
}

//! Batches of source transactions applied as one target transaction, recorded in the metrics
//! (events applied, conflicts by winner, rows checked, lag).

use crate::apply::mysql::MysqlApplier;
use crate::config::Owner;
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::model::transaction::Transaction;

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
            Owner::Source => "source",
            Owner::Target => "target",
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

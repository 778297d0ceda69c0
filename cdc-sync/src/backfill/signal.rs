//! Backfill signals: rows written to the signal table on the source (requests, pauses, low and
//! high watermarks), which the running stream meets in the binlog in commit order.

use std::sync::atomic::Ordering;

use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};

use super::keys::quote;
use crate::apply::mysql::utc_pool as pool;
use crate::config::StreamConfig;
use crate::error::CdcError;
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

pub(super) fn one() -> u32 {
    1
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

pub(super) fn unique() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

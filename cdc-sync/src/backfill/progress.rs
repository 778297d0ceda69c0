//! Backfill progress as stored in the target (`cdc_backfill`): status, rows copied, key ranges
//! and how far each got; committed with each chunk, read by `snapshot-status`.

use mysql_async::Value;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};

use super::keys::keys_to_json;
use super::signal::Request;
use super::watermark::Chunk;
use crate::apply::mysql::utc_pool as pool;
use crate::config::StreamConfig;
use crate::error::CdcError;
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
           message TEXT NULL, ranges TEXT NULL,
           started_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
           updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
           PRIMARY KEY (stream, source_table))"
    ))
    .await?;
    // Tables made before ranges existed gain the column (checked first: MySQL has no
    // `ADD COLUMN IF NOT EXISTS`). Two processes may check at once (a stream's publisher and
    // applier start together): the one that adds second finds it there, which is what it wanted.
    let has_ranges: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'cdc_backfill' AND COLUMN_NAME = 'ranges'",
            (offsets_db,),
        )
        .await?;
    if has_ranges == Some(0) {
        const DUPLICATE_COLUMN: u16 = 1060;
        match conn
            .query_drop(format!(
                "ALTER TABLE `{offsets_db}`.cdc_backfill ADD COLUMN ranges TEXT NULL"
            ))
            .await
        {
            Err(mysql_async::Error::Server(e)) if e.code == DUPLICATE_COLUMN => {}
            other => other?,
        }
    }
    Ok(())
}

/// status, rows copied, estimate, chunks, last key, message, seconds, ranges.
pub(super) type ProgressRow = (
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

/// Records a chunk in its range; the progress statement and its parameters. A chunk of another
/// range landing after a pause or a failure keeps that status.
pub(super) fn progress_update(
    ranges: &mut [Range],
    progress_sql: &str,
    table: &str,
    chunk: &Chunk,
    stream: &str,
) -> (String, Vec<Value>) {
    let last = chunk.last_key.as_ref().map(|k| keys_to_json(k));
    if let Some(r) = ranges.get_mut(chunk.range) {
        if last.is_some() {
            r.last = last.clone();
        }
        r.done |= chunk.done;
    }
    let status = if ranges.iter().all(|r| r.done) {
        "done"
    } else {
        "running"
    };
    (
        progress_sql.to_string(),
        vec![
            last.map(|k| k.to_string()).into(),
            serde_json::to_string(&ranges).expect("serializable").into(),
            (chunk.rows.len() as u64).into(),
            status.into(),
            stream.into(),
            table.into(),
        ],
    )
}

pub(super) async fn set_status(
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

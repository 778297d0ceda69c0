//! Streams under control: whether a stream should run or stay paused is a row of
//! `<offsets_db>.cdc_control` in its target database, set over the stream's HTTP API, by
//! `cdc-sync pause|resume`, or by any controller with SQL. The running stream watches the row:
//! pausing stops it at a committed offset, resuming starts it again from there, and a restart
//! keeps the state. A table can be retired from the stream for good (`<offsets_db>.cdc_retired`,
//! a decommissioned domain): the stream restarts at its committed offset without it.

use std::time::Duration;

use mysql_async::Pool;
use mysql_async::prelude::Queryable;
use serde::Serialize;

use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::model::server::quote_ident;
use crate::pipeline::{Role, run_stream};

/// How often the running stream reads its control row.
pub const POLL: Duration = Duration::from_millis(250);

/// What the stream's controller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    Running,
    Paused,
}

impl Desired {
    fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Paused => "paused",
        }
    }
}

/// The control row of one stream, as last set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlState {
    pub desired: Desired,
    /// Who set it, why, and when (UTC); empty when never set.
    pub changed_by: String,
    pub reason: String,
    pub changed_at: String,
    /// Source tables retired from the stream, sorted.
    pub retired: Vec<String>,
}

/// The control row of `stream` in `offsets_db` of the target at `pool`.
pub struct Control {
    pool: Pool,
    /// The quoted offsets database.
    db: String,
    table: String,
    retired: String,
    stream: String,
    /// The stream's source tables (a retirement names one of them).
    sources: Vec<String>,
    /// Whether the table is known to exist: DDL, even `IF NOT EXISTS`, goes to the binlog, so
    /// it is sent once, not on every poll.
    ready: std::sync::atomic::AtomicBool,
}

impl Control {
    /// The control of `config`'s stream; connects only when used.
    pub fn new(config: &StreamConfig) -> Result<Self, CdcError> {
        let opts =
            mysql_async::Opts::from_url(&config.target_url).map_err(mysql_async::Error::from)?;
        Ok(Self {
            pool: Pool::new(opts),
            db: quote_ident(&config.offsets_db),
            table: format!("{}.`cdc_control`", quote_ident(&config.offsets_db)),
            retired: format!("{}.`cdc_retired`", quote_ident(&config.offsets_db)),
            stream: config.name.clone(),
            sources: config.tables.iter().map(|t| t.source.clone()).collect(),
            ready: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Creates the control table when missing.
    async fn ensure_table(&self, conn: &mut mysql_async::Conn) -> Result<(), CdcError> {
        use std::sync::atomic::Ordering;
        if self.ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {}", self.db))
            .await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (
               stream VARCHAR(100) NOT NULL PRIMARY KEY,
               desired VARCHAR(16) NOT NULL,
               changed_by VARCHAR(128) NOT NULL,
               reason VARCHAR(500) NOT NULL,
               changed_at DATETIME(6) NOT NULL
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            self.table
        ))
        .await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (
               stream VARCHAR(100) NOT NULL,
               source_table VARCHAR(200) NOT NULL,
               retired_by VARCHAR(128) NOT NULL,
               reason VARCHAR(500) NOT NULL,
               retired_at DATETIME(6) NOT NULL,
               PRIMARY KEY (stream, source_table)
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            self.retired
        ))
        .await?;
        self.ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The current control state; `running` when never set.
    pub async fn state(&self) -> Result<ControlState, CdcError> {
        let mut conn = self.pool.get_conn().await?;
        self.ensure_table(&mut conn).await?;
        let row: Option<(String, String, String, String)> = conn
            .exec_first(
                format!(
                    "SELECT desired, changed_by, reason, CAST(changed_at AS CHAR) FROM {} \
                     WHERE stream = ?",
                    self.table
                ),
                (&self.stream,),
            )
            .await?;
        let retired: Vec<String> = conn
            .exec(
                format!(
                    "SELECT source_table FROM {} WHERE stream = ? ORDER BY source_table",
                    self.retired
                ),
                (&self.stream,),
            )
            .await?;
        Ok(match row {
            None => ControlState {
                desired: Desired::Running,
                changed_by: String::new(),
                reason: String::new(),
                changed_at: String::new(),
                retired,
            },
            Some((desired, changed_by, reason, changed_at)) => ControlState {
                desired: if desired == "paused" {
                    Desired::Paused
                } else {
                    Desired::Running
                },
                changed_by,
                reason,
                changed_at,
                retired,
            },
        })
    }

    /// Retires `source_table` from the stream for good: the running stream stops at a committed
    /// offset and starts again without it (its later changes are not applied). Retiring a
    /// retired table changes nothing.
    pub async fn retire(
        &self,
        source_table: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), CdcError> {
        if !self.sources.iter().any(|s| s == source_table) {
            return Err(CdcError::Config(format!(
                "{source_table} is not a source table of stream {} (its tables: {})",
                self.stream,
                self.sources.join(", ")
            )));
        }
        let mut conn = self.pool.get_conn().await?;
        self.ensure_table(&mut conn).await?;
        conn.exec_drop(
            format!(
                "INSERT IGNORE INTO {} (stream, source_table, retired_by, reason, retired_at) \
                 VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6))",
                self.retired
            ),
            (&self.stream, source_table, actor, reason),
        )
        .await?;
        Ok(())
    }

    /// Asks the stream to run or pause.
    pub async fn set(&self, desired: Desired, actor: &str, reason: &str) -> Result<(), CdcError> {
        let mut conn = self.pool.get_conn().await?;
        self.ensure_table(&mut conn).await?;
        conn.exec_drop(
            format!(
                "INSERT INTO {} (stream, desired, changed_by, reason, changed_at) \
                 VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE \
                 desired = ?, changed_by = ?, reason = ?, changed_at = UTC_TIMESTAMP(6)",
                self.table
            ),
            (
                &self.stream,
                desired.as_str(),
                actor,
                reason,
                desired.as_str(),
                actor,
                reason,
            ),
        )
        .await?;
        Ok(())
    }
}

/// Runs the stream while its control row says `running`, stops it at a committed offset when it
/// says `paused` and starts it again when it says `running` again, until `terminate` is set.
/// `metrics.paused` tells which it is. An error of the stream itself ends the run.
pub async fn run_controlled(
    config: &StreamConfig,
    role: Role,
    metrics: Metrics,
    mut terminate: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CdcError> {
    let control = Control::new(config)?;
    let mut retry = Duration::from_millis(200);
    loop {
        if *terminate.borrow() {
            return Ok(());
        }
        let (desired, retired) = match control.state().await {
            Ok(state) => {
                retry = Duration::from_millis(200);
                (state.desired, state.retired)
            }
            Err(e) => {
                // The target is where the stream writes too: until it answers, nothing can run.
                tracing::warn!(stream = %config.name, error = %e, "control row unreadable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = terminate.changed() => return Ok(()),
                }
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut active = config.clone();
        active.tables.retain(|t| !retired.contains(&t.source));
        if desired == Desired::Paused || active.tables.is_empty() {
            // Every table retired: nothing left to carry, the stream idles as if paused.
            metrics.paused.set(1);
            metrics.running.set(0);
            tokio::select! {
                _ = tokio::time::sleep(POLL) => continue,
                _ = terminate.changed() => return Ok(()),
            }
        }
        if !retired.is_empty() {
            tracing::info!(stream = %config.name, ?retired, "running without its retired tables");
        }
        metrics.paused.set(0);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let run = run_stream(&active, role, metrics.clone(), stop_rx);
        tokio::pin!(run);
        let mut stopping = false;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = terminate.changed(), if !stopping => {
                    stopping = true;
                    let _ = stop_tx.send(true);
                }
                _ = tokio::time::sleep(POLL), if !stopping => {
                    // A control row that cannot be read leaves the stream as it is.
                    match control.state().await {
                        Ok(s) if s.desired == Desired::Paused => {
                            tracing::info!(stream = %config.name, "paused by its control row; stopping at a committed offset");
                            stopping = true;
                            let _ = stop_tx.send(true);
                        }
                        Ok(s) if s.retired != retired => {
                            tracing::info!(stream = %config.name, retired = ?s.retired, "a table was retired; restarting at a committed offset without it");
                            stopping = true;
                            let _ = stop_tx.send(true);
                        }
                        _ => {}
                    }
                }
            }
        };
        outcome?;
    }
}

//! Flags in a MySQL table shared by every proxy replica: each replica polls a cheap change stamp
//! (row count + sum of versions) and reloads when it moves. Writes use optimistic concurrency on
//! the version, so two release managers cannot silently overwrite each other.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::Pool;
use mysql_async::prelude::*;

use crate::error::FlagError;
use crate::model::Flag;
use crate::store::{FlagSet, FlagStore};

/// The flag table.
#[derive(Clone)]
pub struct MysqlSource {
    pool: Pool,
    table: String,
}

impl MysqlSource {
    /// Flags in `table` (created if missing by [`MysqlSource::ensure_table`]).
    pub fn new(pool: Pool, table: &str) -> Self {
        assert!(
            table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "table names are identifiers"
        );
        Self {
            pool,
            table: table.to_string(),
        }
    }

    /// Creates the table when it does not exist.
    pub async fn ensure_table(&self) -> Result<(), FlagError> {
        let mut conn = self.pool.get_conn().await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (
               flag_key VARCHAR(200) NOT NULL PRIMARY KEY,
               definition JSON NOT NULL,
               version BIGINT UNSIGNED NOT NULL,
               updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                 ON UPDATE CURRENT_TIMESTAMP(3))",
            self.table
        ))
        .await?;
        Ok(())
    }

    async fn change_stamp(&self) -> Result<(u64, u64), FlagError> {
        let mut conn = self.pool.get_conn().await?;
        let stamp: Option<(u64, u64)> = conn
            .query_first(format!(
                "SELECT COUNT(*), CAST(COALESCE(SUM(version), 0) AS UNSIGNED) FROM {}",
                self.table
            ))
            .await?;
        Ok(stamp.unwrap_or((0, 0)))
    }

    /// Reads and validates every flag.
    pub async fn load(&self) -> Result<FlagSet, FlagError> {
        let mut conn = self.pool.get_conn().await?;
        let rows: Vec<(String, String, u64)> = conn
            .query(format!(
                "SELECT flag_key, definition, version FROM {} ORDER BY flag_key",
                self.table
            ))
            .await?;
        let mut flags = Vec::with_capacity(rows.len());
        for (key, definition, version) in rows {
            let mut flag = Flag::from_json(&format!("{}[{key}]", self.table), &definition)?;
            flag.version = version;
            flags.push(flag);
        }
        FlagSet::new(flags)
    }

    /// Reloads into `store` now.
    pub async fn reload(&self, store: &FlagStore) -> Result<(), FlagError> {
        match self.load().await {
            Ok(set) => {
                store.install(set);
                Ok(())
            }
            Err(e) => {
                store.refuse(&e);
                Err(e)
            }
        }
    }

    /// Polls every `interval` and reloads `store` when the table changed.
    pub fn watch(self, store: Arc<FlagStore>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last = None;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.change_stamp().await {
                    Ok(stamp) if Some(stamp) != last => {
                        if self.reload(&store).await.is_ok() {
                            last = Some(stamp);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "flag table unreachable; keeping the last flags")
                    }
                }
            }
        })
    }

    /// Stores `flag` if its stored version is still `expected_version` (0: must not exist yet);
    /// returns it with its new version.
    pub async fn put(&self, mut flag: Flag, expected_version: u64) -> Result<Flag, FlagError> {
        flag.validate()?;
        let mut tx = self.pool.start_transaction(Default::default()).await?;
        let found: Option<u64> = tx
            .exec_first(
                format!(
                    "SELECT version FROM {} WHERE flag_key = ? FOR UPDATE",
                    self.table
                ),
                (&flag.key,),
            )
            .await?;
        let found = found.unwrap_or(0);
        if found != expected_version {
            return Err(FlagError::VersionConflict {
                key: flag.key,
                expected: expected_version,
                found,
            });
        }
        flag.version = found + 1;
        let json = serde_json::to_string(&flag).expect("flag serializes");
        tx.exec_drop(
            format!(
                "INSERT INTO {} (flag_key, definition, version) VALUES (?, ?, ?)
                 ON DUPLICATE KEY UPDATE definition = VALUES(definition), version = VALUES(version)",
                self.table
            ),
            (&flag.key, &json, flag.version),
        )
        .await?;
        tx.commit().await?;
        Ok(flag)
    }

    /// The stored flag `key`.
    pub async fn get(&self, key: &str) -> Result<Flag, FlagError> {
        let set = self.load().await?;
        set.get(key)
            .map(|f| (**f).clone())
            .ok_or_else(|| FlagError::Unknown(key.to_string()))
    }
}

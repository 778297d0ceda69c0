//! Routes whose monolith side is retired (their domain is decommissioned): they go to their
//! service only, with no fallback, kill switch, auto-rollback or mode that would send users to
//! the monolith, whose tables are read-only by then. One row per flag in `<flag_table>_retired`
//! of the shared flag database, read by every replica each second.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mysql_async::prelude::*;

/// The flags whose monolith side is retired, as this replica knows them.
#[derive(Debug, Default)]
pub struct Retired {
    flags: ArcSwap<HashSet<String>>,
}

impl Retired {
    /// Whether `flag`'s routes have no monolith side (a lookup only when any is retired).
    pub fn contains(&self, flag: &str) -> bool {
        let flags = self.flags.load();
        !flags.is_empty() && flags.contains(flag)
    }

    /// Adds `flag` here at once (the other replicas read it within a second).
    pub fn insert_local(&self, flag: &str) {
        let mut next = (**self.flags.load()).clone();
        next.insert(flag.to_string());
        self.flags.store(Arc::new(next));
    }

    /// Stores `flag` as retired for every replica; retiring it again changes nothing.
    pub async fn store(
        pool: &mysql_async::Pool,
        flag_table: &str,
        flag: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), mysql_async::Error> {
        let mut conn = pool.get_conn().await?;
        ensure_table(&mut conn, flag_table).await?;
        conn.exec_drop(
            format!(
                "INSERT IGNORE INTO `{flag_table}_retired` (flag_key, retired_by, reason, retired_at) \
                 VALUES (?, ?, ?, UTC_TIMESTAMP(6))"
            ),
            (flag, actor, reason),
        )
        .await
    }

    /// Reads the retired flags every second, for as long as the process runs; an unreadable
    /// table keeps what is known (a retirement is never forgotten by a failed read).
    pub fn watch(self: &Arc<Self>, pool: mysql_async::Pool, flag_table: &str) {
        let retired = self.clone();
        let flag_table = flag_table.to_string();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ready = false;
            loop {
                tick.tick().await;
                let read = async {
                    let mut conn = pool.get_conn().await?;
                    if !ready {
                        ensure_table(&mut conn, &flag_table).await?;
                        ready = true;
                    }
                    conn.query::<String, _>(format!("SELECT flag_key FROM `{flag_table}_retired`"))
                        .await
                };
                match read.await {
                    Ok(keys) => {
                        let mut known = (**retired.flags.load()).clone();
                        let before = known.len();
                        known.extend(keys);
                        if known.len() != before {
                            tracing::info!(retired = ?known, "routes without a monolith side");
                            retired.flags.store(Arc::new(known));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retired routes unreadable; keeping the ones known")
                    }
                }
            }
        });
    }
}

async fn ensure_table(
    conn: &mut mysql_async::Conn,
    flag_table: &str,
) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS `{flag_table}_retired` (
           flag_key VARCHAR(190) NOT NULL PRIMARY KEY, retired_by VARCHAR(128) NOT NULL,
           reason VARCHAR(500) NOT NULL, retired_at DATETIME(6) NOT NULL)"
    ))
    .await
}

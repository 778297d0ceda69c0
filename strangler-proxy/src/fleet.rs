//! Fleet-wide live figures: each replica publishes its last minute per route to the shared flag
//! database every second and reads the other replicas'; the admin API, the control page and
//! auto-rollback judge on the sum. Without a shared store the fleet is this replica alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use mysql_async::prelude::*;

use crate::live::{SLOTS, SlotData, Summary, Window, now_sec, summarize};
use crate::routing::RoutingTable;

/// Which side of a route a window measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Monolith,
    Service,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Monolith => "monolith",
            Side::Service => "service",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "monolith" => Some(Side::Monolith),
            "service" => Some(Side::Service),
            _ => None,
        }
    }
}

/// A replica that published within this many seconds counts as running.
const ALIVE_SECS: u64 = 10;
/// Rows not updated for this long are deleted (replicas gone for good).
const FORGET_SECS: u64 = 3600;

/// What this replica knows of the others.
#[derive(Debug)]
pub struct Fleet {
    /// This replica's name in the shared table: host and process.
    pub replica: String,
    /// The other replicas' published seconds, per route and side.
    others: ArcSwap<HashMap<(String, Side), Vec<SlotData>>>,
    /// Replicas running, this one included (1 until the first exchange).
    replicas: AtomicUsize,
    /// Whether figures are exchanged at all (a shared flag database).
    shared: std::sync::atomic::AtomicBool,
}

impl Default for Fleet {
    fn default() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "proxy".into());
        Self {
            replica: format!("{host}/{}", std::process::id()),
            others: ArcSwap::default(),
            replicas: AtomicUsize::new(1),
            shared: Default::default(),
        }
    }
}

/// How far a figure reaches.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every replica that publishes to the shared store.
    Fleet,
    /// This replica only (no shared store).
    Replica,
}

impl Fleet {
    /// The figures of `route`'s `side` over `from..=to`: this replica's window plus the others'.
    pub fn summary(&self, route: &str, side: Side, own: &Window, from: u64, to: u64) -> Summary {
        let mut slots = own.slots(from, to);
        if let Some(theirs) = self.others.load().get(&(route.to_string(), side)) {
            slots.extend(theirs.iter().cloned());
        }
        summarize(from, to, &slots)
    }

    /// Replicas whose figures are in [`Fleet::summary`], this one included.
    pub fn replicas(&self) -> usize {
        self.replicas.load(Ordering::Relaxed)
    }

    pub fn scope(&self) -> Scope {
        if self.shared.load(Ordering::Relaxed) {
            Scope::Fleet
        } else {
            Scope::Replica
        }
    }

    /// Publishes and reads every second, for as long as the process runs.
    pub fn exchange_every_second(
        self: &Arc<Self>,
        pool: mysql_async::Pool,
        flag_table: &str,
        routes: impl Fn() -> Arc<RoutingTable> + Send + 'static,
    ) {
        let fleet = self.clone();
        let live = format!("{flag_table}_live");
        self.shared.store(true, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ready = false;
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                if !ready {
                    match ensure_table(&pool, &live).await {
                        Ok(()) => ready = true,
                        Err(e) => {
                            tracing::warn!(error = %e, "fleet figures: table not ready; this replica's own figures meanwhile");
                            continue;
                        }
                    }
                }
                if let Err(e) = fleet.exchange(&pool, &live, &routes(), n).await {
                    tracing::warn!(error = %e, "fleet figures: exchange failed; the last known figures of the other replicas stay");
                }
                n += 1;
            }
        });
    }

    /// One round: this replica's slots in, the others' out.
    async fn exchange(
        &self,
        pool: &mysql_async::Pool,
        live: &str,
        table: &RoutingTable,
        round: u64,
    ) -> Result<(), mysql_async::Error> {
        let now = now_sec();
        let from = now.saturating_sub(SLOTS as u64 - 1);
        let mut rows = Vec::new();
        for r in &table.routes {
            for (side, w) in [
                (Side::Monolith, &r.stats.monolith),
                (Side::Service, &r.stats.service),
            ] {
                let slots = w.slots(from, now);
                let json = serde_json::to_string(&slots).unwrap_or_else(|_| "[]".into());
                rows.push((r.name.clone(), side.as_str(), json));
            }
        }
        let mut conn = pool.get_conn().await?;
        if !rows.is_empty() {
            let values = vec!["(?, ?, ?, ?, ?)"; rows.len()].join(", ");
            let mut params: Vec<mysql_async::Value> = Vec::with_capacity(rows.len() * 5);
            for (route, side, json) in rows {
                params.push(self.replica.clone().into());
                params.push(route.into());
                params.push(side.into());
                params.push(now.into());
                params.push(json.into());
            }
            conn.exec_drop(
                format!(
                    "INSERT INTO `{live}` (replica, route, side, updated_at, slots) VALUES {values} \
                     ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at), slots = VALUES(slots)"
                ),
                params,
            )
            .await?;
        }
        let theirs: Vec<(String, String, String, u64, String)> = conn
            .exec(
                format!(
                    "SELECT replica, route, side, updated_at, slots FROM `{live}` \
                     WHERE updated_at >= ? AND replica <> ?"
                ),
                (from, &self.replica),
            )
            .await?;
        let mut others: HashMap<(String, Side), Vec<SlotData>> = HashMap::new();
        let mut alive = std::collections::HashSet::new();
        for (replica, route, side, updated_at, json) in theirs {
            if updated_at + ALIVE_SECS >= now {
                alive.insert(replica.clone());
            }
            let Some(side) = Side::parse(&side) else {
                continue;
            };
            match serde_json::from_str::<Vec<SlotData>>(&json) {
                Ok(slots) => others.entry((route, side)).or_default().extend(slots),
                Err(e) => {
                    tracing::warn!(%replica, %route, error = %e, "fleet figures: a replica's row is not slot data; skipped")
                }
            }
        }
        self.others.store(Arc::new(others));
        self.replicas.store(alive.len() + 1, Ordering::Relaxed);
        if round.is_multiple_of(60) {
            conn.exec_drop(
                format!("DELETE FROM `{live}` WHERE updated_at < ?"),
                (now.saturating_sub(FORGET_SECS),),
            )
            .await?;
        }
        Ok(())
    }
}

async fn ensure_table(pool: &mysql_async::Pool, live: &str) -> Result<(), mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS `{live}` (
           replica VARCHAR(190) NOT NULL, route VARCHAR(190) NOT NULL, side VARCHAR(8) NOT NULL,
           updated_at BIGINT UNSIGNED NOT NULL, slots MEDIUMTEXT NOT NULL,
           PRIMARY KEY (replica, route, side), KEY by_time (updated_at))"
    ))
    .await
}

//! The phase of every domain and its audit trail, in the `strangler` database next to the flags,
//! so every proxy replica and operator sees the same phase; and the lease that lets one
//! controller act at a time. Only statements MySQL 8 and MariaDB both take.

use mysql_async::prelude::Queryable;
use mysql_async::{Pool, TxOpts};
use serde::Serialize;

use crate::error::PhaseError;
use crate::phase::Phase;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS phases (
       domain VARCHAR(64) NOT NULL PRIMARY KEY,
       phase VARCHAR(32) NOT NULL,
       percent TINYINT UNSIGNED NULL,
       version BIGINT UNSIGNED NOT NULL,
       changed_at DATETIME(6) NOT NULL,
       changed_by VARCHAR(128) NOT NULL
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS phase_audit (
       id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
       domain VARCHAR(64) NOT NULL,
       from_phase VARCHAR(40) NOT NULL,
       to_phase VARCHAR(40) NOT NULL,
       actor VARCHAR(128) NOT NULL,
       reason VARCHAR(1000) NOT NULL,
       gates TEXT NOT NULL,
       forced TINYINT(1) NOT NULL DEFAULT 0,
       at DATETIME(6) NOT NULL,
       KEY idx_phase_audit_domain (domain, id)
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS phase_lease (
       name VARCHAR(64) NOT NULL PRIMARY KEY,
       holder VARCHAR(128) NOT NULL,
       expires_at DATETIME(6) NOT NULL
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

/// A domain's phase as stored; a domain never moved is `monolith` at version 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainState {
    pub domain: String,
    pub phase: Phase,
    /// Bumped by every move: a move made on a stale read is refused.
    pub version: u64,
    /// UTC, `YYYY-MM-DD HH:MM:SS.ffffff`; empty when never moved.
    pub changed_at: String,
    pub changed_by: String,
}

/// One audited move.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: u64,
    pub domain: String,
    pub from: String,
    pub to: String,
    pub actor: String,
    pub reason: String,
    /// The gates' figures when the move was made (JSON).
    pub gates: serde_json::Value,
    pub forced: bool,
    pub at: String,
}

/// A move to record.
#[derive(Debug, Clone)]
pub struct Move<'a> {
    pub domain: &'a str,
    /// The state the caller decided on; the move is refused if it is no longer current.
    pub from: &'a DomainState,
    pub to: Phase,
    pub actor: &'a str,
    pub reason: &'a str,
    pub gates: serde_json::Value,
    pub forced: bool,
}

/// The phase tables of one `strangler` database.
#[derive(Clone)]
pub struct PhaseStore {
    pool: Pool,
}

type StateRow = (String, Option<u32>, u64, String, String);

impl PhaseStore {
    /// Connects to the `strangler` database at `url` and creates the tables when missing.
    pub async fn open(url: &str) -> Result<Self, PhaseError> {
        let opts = mysql_async::Opts::from_url(url).map_err(mysql_async::Error::from)?;
        let opts = mysql_async::OptsBuilder::from_opts(opts)
            .init(vec!["SET time_zone = '+00:00'".to_string()]);
        let pool = Pool::new(opts);
        let mut conn = pool.get_conn().await?;
        for sql in SCHEMA {
            conn.query_drop(*sql).await?;
        }
        Ok(Self { pool })
    }

    /// The state of each of `domains`, in that order.
    pub async fn states(&self, domains: &[&str]) -> Result<Vec<DomainState>, PhaseError> {
        let mut conn = self.pool.get_conn().await?;
        let mut out = Vec::with_capacity(domains.len());
        for domain in domains {
            let row: Option<StateRow> = conn
                .exec_first(
                    "SELECT phase, percent, version, CAST(changed_at AS CHAR), changed_by \
                     FROM phases WHERE domain = ?",
                    (domain,),
                )
                .await?;
            out.push(Self::state(domain, row)?);
        }
        Ok(out)
    }

    fn state(domain: &str, row: Option<StateRow>) -> Result<DomainState, PhaseError> {
        Ok(match row {
            None => DomainState {
                domain: domain.into(),
                phase: Phase::Monolith,
                version: 0,
                changed_at: String::new(),
                changed_by: String::new(),
            },
            Some((phase, percent, version, changed_at, changed_by)) => DomainState {
                domain: domain.into(),
                phase: Phase::from_parts(&phase, percent)?,
                version,
                changed_at,
                changed_by,
            },
        })
    }

    /// Records a move and its audit row in one transaction, if the domain is still in the state
    /// the caller decided on and the move is allowed; the new state.
    pub async fn record(&self, m: Move<'_>) -> Result<DomainState, PhaseError> {
        let mut tx = self.pool.start_transaction(TxOpts::default()).await?;
        let row: Option<StateRow> = tx
            .exec_first(
                "SELECT phase, percent, version, CAST(changed_at AS CHAR), changed_by \
                 FROM phases WHERE domain = ? FOR UPDATE",
                (m.domain,),
            )
            .await?;
        let now = Self::state(m.domain, row)?;
        if now.version != m.from.version || now.phase != m.from.phase {
            return Err(PhaseError::Conflict {
                domain: m.domain.into(),
                now: now.phase,
            });
        }
        now.phase.check_move(m.domain, m.to)?;
        let version = now.version + 1;
        tx.exec_drop(
            "INSERT INTO phases (domain, phase, percent, version, changed_at, changed_by) \
             VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6), ?) \
             ON DUPLICATE KEY UPDATE phase = ?, percent = ?, version = ?, \
             changed_at = UTC_TIMESTAMP(6), changed_by = ?",
            (
                m.domain,
                m.to.name(),
                m.to.percent(),
                version,
                m.actor,
                m.to.name(),
                m.to.percent(),
                version,
                m.actor,
            ),
        )
        .await?;
        tx.exec_drop(
            "INSERT INTO phase_audit (domain, from_phase, to_phase, actor, reason, gates, forced, at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
            (
                m.domain,
                now.phase.to_string(),
                m.to.to_string(),
                m.actor,
                m.reason,
                m.gates.to_string(),
                m.forced,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(self
            .states(&[m.domain])
            .await?
            .pop()
            .expect("one domain asked"))
    }

    /// The last `limit` moves of `domain`, newest first.
    pub async fn history(&self, domain: &str, limit: u32) -> Result<Vec<AuditEntry>, PhaseError> {
        let mut conn = self.pool.get_conn().await?;
        let rows: Vec<mysql_async::Row> = conn
            .exec(
                "SELECT id, domain, from_phase, to_phase, actor, reason, gates, forced, \
                 CAST(at AS CHAR) FROM phase_audit WHERE domain = ? ORDER BY id DESC LIMIT ?",
                (domain, limit),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let gates: String = r.get(6).unwrap_or_default();
                AuditEntry {
                    id: r.get(0).unwrap_or_default(),
                    domain: r.get(1).unwrap_or_default(),
                    from: r.get(2).unwrap_or_default(),
                    to: r.get(3).unwrap_or_default(),
                    actor: r.get(4).unwrap_or_default(),
                    reason: r.get(5).unwrap_or_default(),
                    gates: serde_json::from_str(&gates).unwrap_or(serde_json::Value::Null),
                    forced: r.get::<bool, _>(7).unwrap_or_default(),
                    at: r.get(8).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Takes (or renews) the controller lease for `ttl_secs` unless another holder's lease is
    /// still running.
    pub async fn acquire_lease(&self, holder: &str, ttl_secs: u32) -> Result<(), PhaseError> {
        let mut tx = self.pool.start_transaction(TxOpts::default()).await?;
        tx.exec_drop(
            "INSERT IGNORE INTO phase_lease (name, holder, expires_at) \
             VALUES ('controller', '', '1970-01-01 00:00:01')",
            (),
        )
        .await?;
        let (current, until, expired): (String, String, bool) = tx
            .exec_first(
                "SELECT holder, CAST(expires_at AS CHAR), expires_at < UTC_TIMESTAMP(6) \
                 FROM phase_lease WHERE name = 'controller' FOR UPDATE",
                (),
            )
            .await?
            .expect("the row was just ensured");
        if current != holder && !expired {
            return Err(PhaseError::LeaseHeld {
                holder: current,
                until,
            });
        }
        tx.exec_drop(
            "UPDATE phase_lease SET holder = ?, \
             expires_at = UTC_TIMESTAMP(6) + INTERVAL ? SECOND WHERE name = 'controller'",
            (holder, ttl_secs),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The mode each of `flags` serves now, read from the proxy's flag table `table` in the same
    /// database (`None` for a flag that is not there, or that is no route mode). Empty when the
    /// proxy has not created its table yet.
    pub async fn route_modes(
        &self,
        table: &str,
        flags: &[&str],
    ) -> Result<Vec<Option<flags::RouteMode>>, PhaseError> {
        let mut conn = self.pool.get_conn().await?;
        let exists: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = ?",
                (table,),
            )
            .await?;
        if exists != Some(1) {
            return Ok(vec![None; flags.len()]);
        }
        let set = flags::source::mysql::MysqlSource::new(self.pool.clone(), table)
            .load()
            .await
            .map_err(|e| PhaseError::Flags(e.to_string()))?;
        Ok(flags
            .iter()
            .map(|f| set.get(f).and_then(|flag| flags::RouteMode::of(flag)))
            .collect())
    }

    /// Gives the lease up if `holder` has it.
    pub async fn release_lease(&self, holder: &str) -> Result<(), PhaseError> {
        let mut conn = self.pool.get_conn().await?;
        conn.exec_drop(
            "UPDATE phase_lease SET expires_at = '1970-01-01 00:00:01' \
             WHERE name = 'controller' AND holder = ?",
            (holder,),
        )
        .await?;
        Ok(())
    }
}

//! Flags in a MySQL table shared by every proxy replica: each replica polls a cheap change stamp
//! (row count + sum of versions) and reloads when it moves. Writes use optimistic concurrency on
//! the version, and [`MysqlSource::change`] stores the audit record in the same transaction.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::Pool;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};

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

    /// The connection pool to the flags' database (other shared state of the fleet lives there).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The flag table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The audit table: `<table>_audit`.
    pub fn audit_table(&self) -> String {
        format!("{}_audit", self.table)
    }

    /// Creates the flag and audit tables when they do not exist.
    pub async fn ensure_table(&self) -> Result<(), FlagError> {
        let mut conn = self.pool.get_conn().await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (
               id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
               at DATETIME(3) NOT NULL DEFAULT UTC_TIMESTAMP(3),
               actor VARCHAR(200) NOT NULL,
               source VARCHAR(20) NOT NULL,
               action VARCHAR(40) NOT NULL,
               subject VARCHAR(200) NOT NULL,
               flag_key VARCHAR(200) NOT NULL,
               before_flag JSON NULL,
               after_flag JSON NOT NULL,
               reason TEXT NOT NULL,
               KEY by_subject (subject, id))",
            self.audit_table()
        ))
        .await?;
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

    /// Changes flag `key` with `edit` (given the stored flag, if any) and records who, why and
    /// what in the audit table, both in one transaction: a change is never stored without its
    /// record. `expected_version` (0: must not exist yet) refuses a change made on stale data.
    pub async fn change(
        &self,
        key: &str,
        expected_version: Option<u64>,
        note: &ChangeNote,
        edit: impl FnOnce(Option<&Flag>) -> Result<Flag, FlagError>,
    ) -> Result<Change, FlagError> {
        let mut tx = self.pool.start_transaction(Default::default()).await?;
        let found: Option<(String, u64)> = tx
            .exec_first(
                format!(
                    "SELECT definition, version FROM {} WHERE flag_key = ? FOR UPDATE",
                    self.table
                ),
                (key,),
            )
            .await?;
        let before = match &found {
            Some((definition, version)) => {
                let mut f = Flag::from_json(&format!("{}[{key}]", self.table), definition)?;
                f.version = *version;
                Some(f)
            }
            None => None,
        };
        let stored_version = before.as_ref().map_or(0, |f| f.version);
        if let Some(expected) = expected_version
            && expected != stored_version
        {
            return Err(FlagError::VersionConflict {
                key: key.to_string(),
                expected,
                found: stored_version,
            });
        }
        let mut after = edit(before.as_ref())?;
        if after.key != key {
            return Err(FlagError::Invalid {
                key: key.to_string(),
                message: format!("an edit may not rename the flag to `{}`", after.key),
            });
        }
        after.validate()?;
        after.version = stored_version + 1;
        let json = serde_json::to_string(&after).expect("flag serializes");
        tx.exec_drop(
            format!(
                "INSERT INTO {} (flag_key, definition, version) VALUES (?, ?, ?)
                 ON DUPLICATE KEY UPDATE definition = VALUES(definition), version = VALUES(version)",
                self.table
            ),
            (key, &json, after.version),
        )
        .await?;
        let before_json = before
            .as_ref()
            .map(|f| serde_json::to_string(f).expect("flag serializes"));
        tx.exec_drop(
            format!(
                "INSERT INTO {} (actor, source, action, subject, flag_key, before_flag, after_flag, reason)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                self.audit_table()
            ),
            (
                &note.actor,
                &note.source,
                &note.action,
                &note.subject,
                key,
                before_json,
                &json,
                &note.reason,
            ),
        )
        .await?;
        let id = tx.last_insert_id().unwrap_or(0);
        tx.commit().await?;
        Ok(Change {
            audit_id: id,
            before,
            after,
        })
    }

    /// The newest audit records first, optionally only those about `subject`.
    pub async fn audit(
        &self,
        subject: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, FlagError> {
        let mut conn = self.pool.get_conn().await?;
        let rows: Vec<AuditRow> = conn
            .exec(
                format!(
                    "SELECT id, DATE_FORMAT(at, '%Y-%m-%dT%H:%i:%s.%fZ'), actor, source, action,
                            subject, flag_key, before_flag, after_flag, reason
                     FROM {} WHERE (? IS NULL OR subject = ?) ORDER BY id DESC LIMIT ?",
                    self.audit_table()
                ),
                (subject, subject, limit.clamp(1, 10_000)),
            )
            .await?;
        rows.into_iter()
            .map(
                |(id, at, actor, source, action, subject, flag_key, before, after, reason)| {
                    let parse = |text: &str| {
                        Flag::from_json(&format!("{}[{id}]", self.audit_table()), text)
                    };
                    Ok(AuditEntry {
                        id,
                        // DATE_FORMAT's %f has microseconds; keep milliseconds.
                        at: trim_micros(&at),
                        actor,
                        source,
                        action,
                        subject,
                        flag_key,
                        before: before.as_deref().map(parse).transpose()?,
                        after: parse(&after)?,
                        reason,
                    })
                },
            )
            .collect()
    }

    /// Stores every flag of `set` that is not stored yet (first start of a fleet), audited as
    /// `seed`; returns the keys it added.
    pub async fn seed(&self, set: &FlagSet, actor: &str) -> Result<Vec<String>, FlagError> {
        let mut keys: Vec<&String> = set.flags.keys().collect();
        keys.sort();
        let mut added = Vec::new();
        for key in keys {
            let flag = (*set.flags[key]).clone();
            let note = ChangeNote {
                actor: actor.to_string(),
                source: "seed".into(),
                action: "seed".into(),
                subject: key.clone(),
                reason: "initial flags".into(),
            };
            match self.change(key, Some(0), &note, |_| Ok(flag)).await {
                Ok(_) => added.push(key.clone()),
                Err(FlagError::VersionConflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(added)
    }

    /// The stored flag `key`.
    pub async fn get(&self, key: &str) -> Result<Flag, FlagError> {
        let set = self.load().await?;
        set.get(key)
            .map(|f| (**f).clone())
            .ok_or_else(|| FlagError::Unknown(key.to_string()))
    }
}

type AuditRow = (
    u64,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
);

fn trim_micros(at: &str) -> String {
    match at.strip_suffix('Z').and_then(|s| s.rsplit_once('.')) {
        Some((secs, frac)) if frac.len() > 3 => format!("{secs}.{}Z", &frac[..3]),
        _ => at.to_string(),
    }
}

/// Who changes a flag, from where, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangeNote {
    /// The person or component (`auto-rollback`) making the change.
    pub actor: String,
    /// `api`, `cli`, `page`, `auto` or `seed`.
    pub source: String,
    /// What was done, e.g. `set_mode` or `kill`.
    pub action: String,
    /// What the change is about (a route name).
    pub subject: String,
    pub reason: String,
}

/// A stored change.
#[derive(Debug, Clone)]
pub struct Change {
    pub audit_id: u64,
    pub before: Option<Flag>,
    pub after: Flag,
}

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub id: u64,
    /// UTC, RFC 3339 with milliseconds.
    pub at: String,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub subject: String,
    pub flag_key: String,
    pub before: Option<Flag>,
    pub after: Flag,
    pub reason: String,
}

//! Schema migrations, run at start: numbered SQL files compiled into the binary, applied once
//! each in order under a named lock, recorded in `schema_migrations` with a checksum so an edited
//! migration that already ran is refused instead of silently diverging.

use mysql_async::Pool;
use mysql_async::prelude::*;

/// A migration: version, name, SQL (several statements allowed).
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: u32,
        name: &'static str,
        #[source]
        source: mysql_async::Error,
    },
    #[error(
        "migration {version} was changed after it ran (checksum {found} in the database, {expected} in this binary)"
    )]
    Changed {
        version: u32,
        found: String,
        expected: String,
    },
    #[error("could not take the migration lock within 60s")]
    Locked,
    #[error(transparent)]
    Db(#[from] mysql_async::Error),
}

fn checksum(sql: &str) -> String {
    // FNV-1a 64: enough to notice an edit, no extra dependency.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Applies every migration not applied yet; returns how many ran.
pub async fn run(pool: &Pool, migrations: &[Migration]) -> Result<usize, MigrateError> {
    let mut conn = pool.get_conn().await?;
    let locked: Option<i64> = conn
        .query_first("SELECT GET_LOCK(CONCAT(DATABASE(), '.migrations'), 60)")
        .await?;
    if locked != Some(1) {
        return Err(MigrateError::Locked);
    }
    let result = async {
        conn.query_drop(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
               version INT UNSIGNED NOT NULL PRIMARY KEY,
               name VARCHAR(100) NOT NULL,
               checksum CHAR(16) NOT NULL,
               applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))",
        )
        .await?;
        let applied: Vec<(u32, String)> = conn
            .query("SELECT version, checksum FROM schema_migrations")
            .await?;
        let mut ran = 0;
        for m in migrations {
            let expected = checksum(m.sql);
            if let Some((_, found)) = applied.iter().find(|(v, _)| *v == m.version) {
                if *found != expected {
                    return Err(MigrateError::Changed {
                        version: m.version,
                        found: found.clone(),
                        expected,
                    });
                }
                continue;
            }
            conn.query_drop(m.sql)
                .await
                .map_err(|source| MigrateError::Failed {
                    version: m.version,
                    name: m.name,
                    source,
                })?;
            conn.exec_drop(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                (m.version, m.name, &expected),
            )
            .await?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            ran += 1;
        }
        Ok(ran)
    }
    .await;
    let _ = conn
        .query_drop("DO RELEASE_LOCK(CONCAT(DATABASE(), '.migrations'))")
        .await;
    result
}

/// Whether every migration has been applied (for `/readyz`).
pub async fn is_current(pool: &Pool, migrations: &[Migration]) -> Result<bool, mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    let max: Option<Option<u32>> = conn
        .query_first("SELECT MAX(version) FROM schema_migrations")
        .await?;
    let latest = migrations.iter().map(|m| m.version).max();
    Ok(max.flatten() >= latest)
}

//! A fresh database on the machine's PostgreSQL (127.0.0.1:5432, trust auth), for tests that need
//! durable broker storage: tansu keeps topics, records and group offsets there across restarts.

use std::process::Command;

use crate::TestkitError;

/// Creates a new, empty PostgreSQL database named after `prefix` and this process, and returns
/// its URL (`postgres://postgres@127.0.0.1:5432/NAME`).
pub fn postgres_database(prefix: &str) -> Result<String, TestkitError> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
        ])
        .arg(format!("CREATE DATABASE \"{name}\""))
        .output()
        .map_err(|e| TestkitError::io("running psql (apt install postgresql-client)", e))?;
    if !out.status.success() {
        return Err(TestkitError::CommandFailed {
            what: format!("psql CREATE DATABASE {name}"),
            tail: String::from_utf8_lossy(&out.stderr).into_owned(),
            log: std::path::PathBuf::from("(psql stderr)"),
        });
    }
    Ok(format!("postgres://postgres@127.0.0.1:5432/{name}"))
}

//! Errors of the test kit: each says what failed and, for missing tools, how to install them.

use std::path::PathBuf;

/// Everything that can go wrong while starting or using a test server.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A required program is not installed.
    #[error("`{binary}` was not found on PATH; install it with: {install}")]
    BinaryMissing {
        binary: &'static str,
        install: &'static str,
    },
    /// A command or file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A program ran but reported failure.
    #[error("{what} failed; last lines of {log}:\n{tail}")]
    CommandFailed {
        what: String,
        log: PathBuf,
        tail: String,
    },
    /// A server did not accept connections in time, or died while starting.
    #[error("{what} did not become ready within {secs}s; last lines of {log}:\n{tail}")]
    NotReady {
        what: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    /// The server answering on a port is not the one just started (another took the port).
    #[error("the MariaDB server on port {port} is not ours: its datadir is {found}, ours {ours}")]
    ForeignServer {
        port: u16,
        found: String,
        ours: String,
    },
    /// An SQL statement against a test server failed.
    #[error("SQL `{sql}` failed: {source}")]
    Sql {
        sql: String,
        #[source]
        source: mysql_async::Error,
    },
}

impl TestkitError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Last `n` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

//! Errors of the flags crate: an invalid definition names the flag, the field and what is wrong.

/// Why flags could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// A definition that does not parse: where (path in the document, line, column) and why.
    #[error("{source_name}: {path}: {message}")]
    Parse {
        source_name: String,
        path: String,
        message: String,
    },
    /// A definition that parses but cannot be evaluated.
    #[error("flag `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// Reading or writing the flag file failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The MySQL flag table failed.
    #[error("flag table: {0}")]
    Db(#[from] mysql_async::Error),
    /// A write lost a race with another writer.
    #[error("flag `{key}` changed meanwhile (expected version {expected}, found {found})")]
    VersionConflict {
        key: String,
        expected: u64,
        found: u64,
    },
    /// No such flag.
    #[error("no flag `{0}`")]
    Unknown(String),
}

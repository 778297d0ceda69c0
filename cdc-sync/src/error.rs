//! Errors of cdc-sync: each names the stream position (binlog file:pos) or the table involved, so
//! an operator knows exactly where a stream stopped and why.

/// Everything that stops a stream or an apply.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error("database: {0}")]
    Db(#[from] mysql_async::Error),
    #[error("binlog event at {file}:{pos} could not be decoded: {message}")]
    Decode {
        file: String,
        pos: u64,
        message: String,
    },
    #[error(
        "schema of `{table}` changed incompatibly at {file}:{pos}: {message}; the stream stopped here"
    )]
    Schema {
        table: String,
        file: String,
        pos: u64,
        message: String,
    },
    #[error("malformed event {at}: {message}")]
    Malformed { at: String, message: String },
    #[error("table `{0}` has no primary key; cdc-sync needs one to apply changes idempotently")]
    NoPrimaryKey(String),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("config: {0}")]
    Config(String),
    /// The source closed the binlog stream (a server restart, say): reconnecting resumes it.
    #[error("the binlog stream ended")]
    StreamEnded,
}

impl CdcError {
    /// Whether a reconnect can cure it: lost connections, a restarting server, deadlocks, an
    /// ended binlog stream. Anything else stops the stream where it is.
    pub fn retryable(&self) -> bool {
        match self {
            CdcError::Db(mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)) => true,
            // Deadlock, lock wait, server shutdown, connection killed, lost connection.
            CdcError::Db(mysql_async::Error::Server(s)) => {
                matches!(s.code, 1213 | 1205 | 1053 | 1927 | 2013 | 2006)
            }
            CdcError::StreamEnded => true,
            _ => false,
        }
    }
}

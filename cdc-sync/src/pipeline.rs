//! A running stream: the configured transport (direct, or Kafka's publish and apply halves) run
//! until a stop signal or a fatal error.

use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::metrics::Metrics;

/// Which half of a Kafka stream a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Binlog → Kafka.
    Publish,
    /// Kafka → target.
    Apply,
    /// Both, in one process.
    #[default]
    Both,
}

/// Runs the stream over its configured transport until `stop` fires or a fatal error.
pub async fn run_stream(
    config: &StreamConfig,
    role: Role,
    metrics: Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CdcError> {
    use crate::transport::kafka;
    match (config.transport, role) {
        (crate::config::Transport::Direct, _) => {
            crate::transport::direct::run(config, metrics, stop).await
        }
        (crate::config::Transport::Kafka, Role::Both) => kafka::run(config, metrics, stop).await,
        (crate::config::Transport::Kafka, Role::Publish) => {
            kafka::publish(config, metrics, stop).await
        }
        (crate::config::Transport::Kafka, Role::Apply) => kafka::apply(config, metrics, stop).await,
    }
}

//! The stream's Kafka topics (`<prefix>.transaction`, `<prefix>.<db>.<table>`), their creation,
//! and the client settings every producer, consumer and admin client starts from.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{KafkaConfig, StreamConfig};
use crate::error::CdcError;

/// Topic names of a stream.
#[derive(Debug, Clone)]
pub struct Topics {
    pub transaction: String,
    /// Source `db.table` → topic.
    pub tables: BTreeMap<String, String>,
}

impl Topics {
    /// `<prefix>.transaction` and `<prefix>.<db>.<table>` for every source table.
    pub fn of(config: &StreamConfig) -> Self {
        let prefix = config.topic_prefix();
        Self {
            transaction: format!("{prefix}.transaction"),
            tables: config
                .tables
                .iter()
                .map(|t| (t.source.clone(), format!("{prefix}.{}", t.source)))
                .collect(),
        }
    }

    pub(super) fn all(&self) -> Vec<&str> {
        std::iter::once(self.transaction.as_str())
            .chain(self.tables.values().map(String::as_str))
            .collect()
    }
}

pub(super) fn kafka_of(config: &StreamConfig) -> Result<&KafkaConfig, CdcError> {
    config
        .kafka
        .as_ref()
        .ok_or_else(|| CdcError::Config("the kafka transport needs a [kafka] section".into()))
}

pub(super) fn client(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers)
        .set("log_level", "4")
        .set("reconnect.backoff.max.ms", "2000");
    c
}

pub(super) fn kafka_err(what: &str, e: KafkaError) -> CdcError {
    CdcError::Kafka(format!("{what}: {e}"))
}

/// Creates the stream's topics where missing (transaction topic: one partition, so BEGIN/END
/// keep source order).
pub async fn ensure_topics(config: &StreamConfig) -> Result<(), CdcError> {
    let k = kafka_of(config)?;
    let topics = Topics::of(config);
    let admin: AdminClient<DefaultClientContext> = client(k)
        .create()
        .map_err(|e| kafka_err("admin client", e))?;
    let mut new = vec![NewTopic::new(
        &topics.transaction,
        1,
        TopicReplication::Fixed(1),
    )];
    for t in topics.tables.values() {
        new.push(NewTopic::new(t, k.partitions, TopicReplication::Fixed(1)));
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| kafka_err("creating topics", e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(CdcError::Kafka(format!("creating topic {topic}: {code}")));
            }
        }
    }
    Ok(())
}

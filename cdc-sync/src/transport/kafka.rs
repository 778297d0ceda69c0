//! The Kafka transport. The publisher turns binlog transactions into Debezium events (JSON with
//! schemas, key = primary key) on `<prefix>.<db>.<table>`, framed by BEGIN/END records on
//! `<prefix>.transaction`, and resumes from the last END in Kafka. The applier consumes in a
//! group, rebuilds each source transaction in END order, applies it with its source offset (so a
//! redelivered transaction is skipped) and commits Kafka offsets only behind what it applied.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset as KOffset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{KafkaConfig, StreamConfig};
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::model::debezium::{ChangeEvent, Envelope};
use crate::schema::TableSchema;
use crate::source::binlog::{BinlogSource, Offset, Transaction};

/// A record of the transaction topic, as Debezium writes it, plus the source offset right after
/// the transaction (`source_offset`, ours) so the publisher and applier know where it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub status: TxnStatus,
    pub id: String,
    #[serde(default)]
    pub ts_ms: i64,
    #[serde(default)]
    pub event_count: Option<u64>,
    #[serde(default)]
    pub data_collections: Option<Vec<DataCollection>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_offset: Option<Offset>,
    /// The source offset of the transaction published before this one (ours): the applier
    /// sees a gap, records lost by the broker, instead of skipping past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_offset: Option<Offset>,
}

/// BEGIN or END.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStatus {
    #[serde(rename = "BEGIN")]
    Begin,
    #[serde(rename = "END")]
    End,
}

/// Events of one table in a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataCollection {
    pub data_collection: String,
    pub event_count: u64,
}

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

    fn all(&self) -> Vec<&str> {
        std::iter::once(self.transaction.as_str())
            .chain(self.tables.values().map(String::as_str))
            .collect()
    }
}

fn kafka_of(config: &StreamConfig) -> Result<&KafkaConfig, CdcError> {
    config
        .kafka
        .as_ref()
        .ok_or_else(|| CdcError::Config("the kafka transport needs a [kafka] section".into()))
}

fn client(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers)
        .set("log_level", "4")
        .set("reconnect.backoff.max.ms", "2000");
    c
}

fn kafka_err(what: &str, e: KafkaError) -> CdcError {
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

/// Orders binlog positions: by file sequence number, then position.
pub fn position_key(file: &str, pos: u64) -> (u64, String, u64) {
    let seq = file
        .rsplit_once('.')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .unwrap_or(0);
    (seq, file.to_string(), pos)
}

fn before_or_at(a: &Offset, b: &Offset) -> bool {
    position_key(&a.file, a.pos) <= position_key(&b.file, b.pos)
}

/// The source offset of the last END record on the transaction topic: where publishing resumes.
pub async fn last_published(config: &StreamConfig) -> Result<Option<Offset>, CdcError> {
    let k = kafka_of(config)?.clone();
    let topic = Topics::of(config).transaction;
    let group = format!("cdc-sync.{}.probe", config.name);
    tokio::task::spawn_blocking(move || -> Result<Option<Offset>, CdcError> {
        let consumer: BaseConsumer = client(&k)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .map_err(|e| kafka_err("consumer", e))?;
        let (low, high) = consumer
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .map_err(|e| kafka_err(&format!("watermarks of {topic}"), e))?;
        let mut back = 64i64;
        loop {
            if high <= low {
                return Ok(None);
            }
            let from = (high - back).max(low);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, KOffset::Offset(from))
                .map_err(|e| kafka_err("assign", e))?;
            consumer.assign(&tpl).map_err(|e| kafka_err("assign", e))?;
            let mut last_end = None;
            let mut read_to = from - 1;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if Instant::now() > deadline {
                    return Err(CdcError::Kafka(format!(
                        "reading {topic} up to offset {high} timed out"
                    )));
                }
                match consumer.poll(Duration::from_millis(500)) {
                    None => continue,
                    // The end as the broker saw it when fetching; only trust it once the
                    // records up to the high watermark taken above have been read.
                    Some(Err(KafkaError::PartitionEOF(_))) if read_to + 1 >= high => break,
                    Some(Err(KafkaError::PartitionEOF(_))) => continue,
                    Some(Err(e)) => return Err(kafka_err(&format!("reading {topic}"), e)),
                    Some(Ok(m)) => {
                        let at = m.offset();
                        read_to = at;
                        let rec: TxnRecord = serde_json::from_slice(
                            m.payload().unwrap_or_default(),
                        )
                        .map_err(|e| CdcError::Malformed {
                            at: format!("{topic}[0]@{at}"),
                            message: format!("not a transaction record: {e}"),
                        })?;
                        if rec.status == TxnStatus::End {
                            last_end =
                                Some(rec.source_offset.ok_or_else(|| CdcError::Malformed {
                                    at: format!("{topic}[0]@{at}"),
                                    message: "END record without source_offset".into(),
                                })?);
                        }
                        if at + 1 >= high {
                            break;
                        }
                    }
                }
            }
            if last_end.is_some() || from == low {
                return Ok(last_end);
            }
            back *= 4;
        }
    })
    .await
    .map_err(|e| CdcError::Kafka(format!("probe task: {e}")))?
}

/// The offset the applier stored in the target, if any.
async fn applied_offset(config: &StreamConfig) -> Result<Option<Offset>, CdcError> {
    let applier = config.applier()?;
    applier.prepare(&config.offsets_db).await?;
    applier.stored_offset().await
}

/// Reads the binlog and publishes every transaction until `stop` fires or a fatal error.
pub async fn publish(
    config: &StreamConfig,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CdcError> {
    ensure_topics(config).await?;
    let k = kafka_of(config)?;
    let topics = Topics::of(config);
    let signal = crate::backfill::signal_table(config);
    let mut source = BinlogSource {
        url: config.source_url.clone(),
        reader_server_id: config.reader_server_id,
        name: config.name.clone(),
        tables: config.tables.iter().map(|t| t.source.clone()).collect(),
    };
    // Backfill signals and watermarks are read with the tables, never published.
    source.tables.insert(signal.clone());
    let prefix = config.topic_prefix().to_string();
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            ensure_topics(config).await?;
            // Kafka's last END; if Kafka has none (a new stream, or a broker that lost its data),
            // what the target applied last; else the configured or current position.
            let start = match last_published(config).await? {
                Some(o) => o,
                None => match applied_offset(config).await? {
                    Some(o) => o,
                    None => config.initial_offset().await?,
                },
            };
            tracing::info!(stream = %config.name, from = %start, "publishing to Kafka");
            // Backfill chunks become snapshot events at their high watermark's place.
            let mut backfills = crate::backfill::Backfills::emitting(config, metrics.clone())?;
            backfills.resume_unfinished().await?;
            let producer: FutureProducer = client(k)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set("partitioner", "murmur2_random")
                .set("message.timeout.ms", "30000")
                .create()
                .map_err(|e| kafka_err("producer", e))?;
            // Room for whole batches: ENDs wait for one acknowledgement round per batch.
            let (tx, mut rx) = tokio::sync::mpsc::channel(crate::pipeline::BATCH_TRANSACTIONS * 2);
            let reader = {
                let source = source.clone();
                let from = start.clone();
                tokio::spawn(async move { source.run(from, tx).await })
            };
            let mut inflight: VecDeque<DeliveryFuture> = VecDeque::new();
            let mut previous = start.clone();
            let mut last_heartbeat = Instant::now();
            let result: Result<(), CdcError> = async {
                loop {
                    let first = tokio::select! {
                        _ = stop.changed() => break,
                        t = rx.recv() => t,
                    };
                    let Some(first) = first else { break };
                    // A batch of whole transactions: BEGIN and events first; their END records
                    // only once every event is acknowledged. The publisher resumes after the
                    // last END in Kafka, so an END must never be there before its events.
                    let mut batch = vec![first];
                    while batch.len() < crate::pipeline::BATCH_TRANSACTIONS {
                        match rx.try_recv() {
                            Ok(t) => batch.push(t),
                            Err(_) => break,
                        }
                    }
                    let mut ends = Vec::new();
                    let mut chunks = Vec::new();
                    for mut txn in batch {
                        let step = backfills.observe(&txn).await?;
                        txn.events.retain(|ev| ev.schema.qualified() != signal);
                        if let crate::backfill::Step::Copy(chunk, window) = step {
                            let events = backfills.snapshot_events(&chunk, &window, &txn)?;
                            chunks.push((chunk, events.len() as u64));
                            txn.events.extend(events);
                        }
                        if txn.suppressed > 0 {
                            metrics
                                .suppressed
                                .with_label_values(&[&config.name])
                                .inc_by(txn.suppressed);
                        }
                        for ev in &txn.events {
                            metrics
                                .events
                                .with_label_values(&[&ev.schema.qualified(), "read"])
                                .inc();
                        }
                        if txn.events.is_empty()
                            && (txn.marked || last_heartbeat.elapsed() < Duration::from_secs(1))
                        {
                            continue;
                        }
                        last_heartbeat = Instant::now();
                        let mut recs = records(&txn, Some(&previous), &topics, &prefix)?;
                        previous = txn.end.clone();
                        ends.push(recs.pop().expect("an END record"));
                        for rec in recs {
                            produce(&producer, &mut inflight, rec).await?;
                        }
                        for ev in &txn.events {
                            metrics
                                .events
                                .with_label_values(&[&ev.schema.qualified(), "published"])
                                .inc();
                        }
                    }
                    settle(&mut inflight, usize::MAX).await?;
                    for end in ends {
                        produce(&producer, &mut inflight, end).await?;
                    }
                    if chunks.is_empty() {
                        settle_ready(&mut inflight)?;
                    } else {
                        // A chunk counts as copied once its events and END are in Kafka.
                        settle(&mut inflight, usize::MAX).await?;
                        for (chunk, n) in chunks {
                            backfills.record(chunk, n).await?;
                        }
                    }
                    backfills.reap();
                }
                // Everything produced must be acknowledged before we say we stopped cleanly.
                settle(&mut inflight, usize::MAX).await
            }
            .await;
            reader.abort();
            let read = reader.await;
            result?;
            match read {
                Ok(Err(e)) => Err(e),
                _ => Ok(()),
            }
        };
        let err = match attempt.await {
            Ok(()) if *stop.borrow() => return Ok(()),
            Ok(()) => CdcError::Config("the binlog stream ended".into()),
            Err(e) => e,
        };
        if !crate::pipeline::retryable(&err) && !matches!(err, CdcError::Kafka(_)) {
            metrics.errors.with_label_values(&["fatal"]).inc();
            tracing::error!(error = %err, "publisher stopped");
            return Err(err);
        }
        metrics.errors.with_label_values(&["reconnect"]).inc();
        tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "publisher interrupted; resuming from the last END in Kafka");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {},
            _ = stop.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Queues one record, waiting for room when the producer's queue is full.
async fn produce(
    producer: &FutureProducer,
    inflight: &mut VecDeque<DeliveryFuture>,
    (topic, key, payload): Record,
) -> Result<(), CdcError> {
    let mut record = FutureRecord::to(&topic).payload(&payload);
    if let Some(key) = &key {
        record = record.key(key);
    }
    loop {
        match producer.send_result(record) {
            Ok(f) => {
                inflight.push_back(f);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                settle(inflight, 1).await?;
                if inflight.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Err((e, _)) => return Err(kafka_err(&format!("producing to {topic}"), e)),
        }
    }
}

async fn settle(inflight: &mut VecDeque<DeliveryFuture>, n: usize) -> Result<(), CdcError> {
    for _ in 0..n {
        let Some(f) = inflight.pop_front() else { break };
        delivered(f.await)?;
    }
    Ok(())
}

fn settle_ready(inflight: &mut VecDeque<DeliveryFuture>) -> Result<(), CdcError> {
    use futures_util::FutureExt as _;
    while let Some(f) = inflight.front_mut() {
        match f.now_or_never() {
            Some(r) => {
                inflight.pop_front();
                delivered(r)?;
            }
            None => break,
        }
    }
    Ok(())
}

fn delivered<E>(
    r: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, E>,
) -> Result<(), CdcError> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, m))) => Err(kafka_err(&format!("delivery to {}", m.topic()), e)),
        Err(_) => Err(CdcError::Kafka("the producer went away".into())),
    }
}

/// A record to produce: topic, key, value.
pub type Record = (String, Option<Vec<u8>>, Vec<u8>);

/// The Kafka records of one transaction: BEGIN, each event (key, value with schemas), END.
pub fn records(
    txn: &Transaction,
    previous: Option<&Offset>,
    topics: &Topics,
    prefix: &str,
) -> Result<Vec<Record>, CdcError> {
    let id = txn.gtid.clone().unwrap_or_else(|| txn.end.to_string());
    let mut out = Vec::with_capacity(txn.events.len() + 2);
    let begin = TxnRecord {
        status: TxnStatus::Begin,
        id: id.clone(),
        ts_ms: txn.ts_ms,
        event_count: None,
        data_collections: None,
        source_offset: None,
        previous_offset: None,
    };
    out.push((
        topics.transaction.clone(),
        None,
        serde_json::to_vec(&begin).expect("serializable"),
    ));
    let mut per_table: BTreeMap<String, u64> = BTreeMap::new();
    for (i, ev) in txn.events.iter().enumerate() {
        let table = ev.schema.qualified();
        let topic = topics
            .tables
            .get(&table)
            .ok_or_else(|| CdcError::Config(format!("no topic for table {table}")))?;
        let mut ev = ev.clone();
        // Debezium's transaction block, with our transaction id (the END record's).
        let n = per_table.entry(table.clone()).or_default();
        *n += 1;
        ev.envelope.transaction = Some(crate::model::debezium::TransactionBlock {
            id: id.clone(),
            total_order: i as u64 + 1,
            data_collection_order: *n,
        });
        out.push((
            topic.clone(),
            Some(serde_json::to_vec(&ev.key_with_schema(prefix)).expect("serializable")),
            serde_json::to_vec(&ev.value_with_schema(prefix)).expect("serializable"),
        ));
    }
    let end = TxnRecord {
        status: TxnStatus::End,
        id,
        ts_ms: txn.ts_ms,
        event_count: Some(txn.events.len() as u64),
        data_collections: Some(
            per_table
                .into_iter()
                .map(|(t, n)| DataCollection {
                    data_collection: t,
                    event_count: n,
                })
                .collect(),
        ),
        source_offset: Some(txn.end.clone()),
        previous_offset: previous.cloned(),
    };
    out.push((
        topics.transaction.clone(),
        None,
        serde_json::to_vec(&end).expect("serializable"),
    ));
    Ok(out)
}

/// Reads a change event from a Kafka record in the JSON-with-schemas form: the table schema is
/// rebuilt from the key and value schemas, so events written by Debezium itself are read too.
/// `Ok(None)` is a tombstone.
pub fn decode_record(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    cache: &mut HashMap<String, (Value, Arc<TableSchema>)>,
) -> Result<Option<ChangeEvent>, String> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let Some(envelope) = Envelope::from_json(value).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let table = envelope
        .source
        .table
        .clone()
        .ok_or("the event's source block names no table")?;
    let qualified = format!("{}.{table}", envelope.source.db);
    let value_json: Value = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    let value_schema = value_json
        .get("schema")
        .ok_or("the value has no `schema` (produce JSON with schemas enabled)")?;
    let key_json: Value = match key {
        Some(k) => serde_json::from_slice(k).map_err(|e| format!("key is not JSON: {e}"))?,
        None => return Err("the record has no key".into()),
    };
    let key_schema = key_json.get("schema").ok_or("the key has no `schema`")?;
    let schema = match cache.get(&qualified) {
        Some((s, schema))
            if s == value_schema && schema.primary_key.len() == key_fields(key_schema)?.len() =>
        {
            schema.clone()
        }
        _ => {
            let schema = Arc::new(crate::model::debezium::schema_from_connect(
                &envelope.source.db,
                &table,
                key_schema,
                value_schema,
            )?);
            cache.insert(qualified, (value_schema.clone(), schema.clone()));
            schema
        }
    };
    if envelope.transaction.is_none() {
        return Err("the event has no `transaction` block (enable transaction metadata)".into());
    }
    Ok(Some(ChangeEvent { schema, envelope }))
}

fn key_fields(key_schema: &Value) -> Result<Vec<&str>, String> {
    key_schema
        .get("fields")
        .and_then(Value::as_array)
        .ok_or("the key schema has no fields")?
        .iter()
        .map(|f| {
            f.get("field")
                .and_then(Value::as_str)
                .ok_or("a key field has no name".to_string())
        })
        .collect()
}

/// Where a record sits: topic, partition, offset.
type At = (String, i32, i64);

fn at_text(at: &At) -> String {
    format!("{}[{}]@{}", at.0, at.1, at.2)
}

/// Consumes the stream's topics and applies each source transaction, in order, exactly once in
/// effect. Stops with an error naming the record at a malformed record; nothing after it applies.
pub async fn apply(
    config: &StreamConfig,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CdcError> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match apply_session(config, metrics.clone(), stop.clone()).await {
            Err(CdcError::Kafka(e)) => {
                metrics.errors.with_label_values(&["reconnect"]).inc();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "applier interrupted; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// One consumer session: ends on stop, a fatal error, or a Kafka error that needs a new
/// consumer (topics gone after a broker lost its data).
async fn apply_session(
    config: &StreamConfig,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CdcError> {
    ensure_topics(config).await?;
    let k = kafka_of(config)?;
    let topics = Topics::of(config);
    let applier = config.applier()?;
    applier.prepare(&config.offsets_db).await?;
    let mut applied = applier.stored_offset().await?;
    let group = k
        .group_id
        .clone()
        .unwrap_or_else(|| format!("cdc-sync.{}", config.name));
    let consumer: StreamConsumer = client(k)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .create()
        .map_err(|e| kafka_err("consumer", e))?;
    // Every partition assigned to this one applier (no group rebalances: a restarted applier
    // takes over at once); positions come from the group's committed offsets.
    let mut tpl = TopicPartitionList::new();
    for topic in topics.all() {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| kafka_err(&format!("metadata of {topic}"), e))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let from = match k.resume_from {
                    crate::config::ResumeFrom::Committed => KOffset::Stored,
                    crate::config::ResumeFrom::Earliest => KOffset::Beginning,
                };
                tpl.add_partition_offset(topic, p.id(), from)
                    .map_err(|e| kafka_err("assign", e))?;
            }
        }
    }
    consumer.assign(&tpl).map_err(|e| kafka_err("assign", e))?;
    tracing::info!(stream = %config.name, group = %group, applied = ?applied, "applying from Kafka");
    metrics.running.set(1);

    let mut ends: VecDeque<(TxnRecord, At)> = VecDeque::new();
    // Transaction id → total_order → (event, where).
    let mut buffers: HashMap<String, BTreeMap<u64, (ChangeEvent, At)>> = HashMap::new();
    // Offsets read but not yet applied, and the last offset read, per partition.
    let mut held: HashMap<(String, i32), BTreeSet<i64>> = HashMap::new();
    let mut seen: HashMap<(String, i32), i64> = HashMap::new();
    let mut schemas = HashMap::new();
    let mut last_commit = Instant::now();
    let result: Result<(), CdcError> = loop {
        let msg = tokio::select! {
            _ = stop.changed() => break Ok(()),
            m = consumer.recv() => m,
        };
        let m = match msg {
            Ok(m) => m,
            Err(e) => {
                metrics.errors.with_label_values(&["kafka"]).inc();
                let gone = matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition
                            | RDKafkaErrorCode::UnknownPartition
                    )
                );
                if gone {
                    break Err(kafka_err("a topic disappeared", e));
                }
                tracing::warn!(error = %e, "kafka consumer error; librdkafka retries");
                continue;
            }
        };
        let at: At = (m.topic().to_string(), m.partition(), m.offset());
        seen.insert((at.0.clone(), at.1), at.2);
        // Held until handled: a record that fails to parse stays held, so the committed offset
        // never passes it and a restart stops at it again.
        held.entry((at.0.clone(), at.1)).or_default().insert(at.2);
        let mut keep = false;
        let malformed = |message: String| CdcError::Malformed {
            at: at_text(&at),
            message,
        };
        if at.0 == topics.transaction {
            let rec: TxnRecord = match serde_json::from_slice(m.payload().unwrap_or_default()) {
                Ok(r) => r,
                Err(e) => break Err(malformed(format!("not a transaction record: {e}"))),
            };
            if rec.status == TxnStatus::End {
                if rec.source_offset.is_none() || rec.event_count.is_none() {
                    break Err(malformed(
                        "END record without source_offset or event_count".into(),
                    ));
                }
                keep = true;
                ends.push_back((rec, at.clone()));
            }
        } else {
            let ev = match decode_record(m.key(), m.payload(), &mut schemas) {
                Ok(ev) => ev,
                Err(e) => break Err(malformed(e)),
            };
            if let Some(ev) = ev {
                let pos = Offset {
                    file: ev.envelope.source.file.clone(),
                    pos: ev.envelope.source.pos,
                    gtid: None,
                };
                // Part of a transaction applied already (a redelivery): nothing to hold.
                let done = applied.as_ref().is_some_and(|a| {
                    position_key(&pos.file, pos.pos) < position_key(&a.file, a.pos)
                });
                if !done {
                    let block = ev.envelope.transaction.clone().expect("checked in decode");
                    keep = true;
                    buffers
                        .entry(block.id)
                        .or_default()
                        .insert(block.total_order, (ev, at.clone()));
                }
            }
        }
        drop(m);
        if !keep && let Some(h) = held.get_mut(&(at.0.clone(), at.1)) {
            h.remove(&at.2);
        }
        // Apply every transaction that is complete, in END order, as one target commit.
        let mut failed = None;
        let mut batch: Vec<Transaction> = Vec::new();
        let mut release: Vec<At> = Vec::new();
        while let Some((rec, _)) = ends.front() {
            if batch.len() >= crate::pipeline::BATCH_TRANSACTIONS {
                break;
            }
            let end = rec.source_offset.clone().expect("checked");
            let count = rec.event_count.expect("checked");
            let mut skip = applied.as_ref().is_some_and(|a| before_or_at(&end, a));
            // A transaction whose predecessor is not what was applied last follows a gap (the
            // broker lost records); the publisher sends the missing ones again, so this one is
            // passed over now and applied when it comes again in order.
            if !skip
                && let (Some(a), Some(prev)) = (applied.as_ref(), rec.previous_offset.as_ref())
                && position_key(&prev.file, prev.pos) != position_key(&a.file, a.pos)
            {
                metrics.errors.with_label_values(&["gap"]).inc();
                tracing::warn!(transaction = %rec.id, follows = %prev, applied = %a, "gap before this transaction; waiting for the publisher to send what is missing");
                skip = true;
            }
            let have = buffers.get(&rec.id).map_or(0, |b| b.len() as u64);
            if !skip && have < count {
                break;
            }
            let (rec, end_at) = ends.pop_front().expect("front exists");
            if !skip && have > count {
                failed = Some(CdcError::Malformed {
                    at: at_text(&end_at),
                    message: format!(
                        "transaction {} has {have} events, its END says {count}",
                        rec.id
                    ),
                });
                break;
            }
            let events = buffers.remove(&rec.id).unwrap_or_default();
            release.push(end_at);
            let mut txn_events = Vec::with_capacity(events.len());
            for (_, (ev, at)) in events {
                release.push(at);
                txn_events.push(ev);
            }
            if !skip {
                batch.push(Transaction {
                    gtid: end.gtid.clone(),
                    end: end.clone(),
                    events: txn_events,
                    ts_ms: rec.ts_ms,
                    suppressed: 0,
                    marked: false,
                });
                applied = Some(end);
            }
        }
        if failed.is_none()
            && !batch.is_empty()
            && let Err(e) = crate::pipeline::apply_batch(&applier, &batch, &metrics).await
        {
            failed = Some(e);
        }
        if failed.is_none() {
            for (topic, partition, offset) in release {
                if let Some(h) = held.get_mut(&(topic, partition)) {
                    h.remove(&offset);
                }
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if last_commit.elapsed() > Duration::from_millis(200) {
            commit(&consumer, &held, &seen, CommitMode::Async);
            last_commit = Instant::now();
        }
    };
    // Commit what is applied; a malformed record stays uncommitted, so a restart stops there again.
    commit(&consumer, &held, &seen, CommitMode::Sync);
    metrics.running.set(0);
    if let Err(e) = &result {
        metrics.errors.with_label_values(&["fatal"]).inc();
        tracing::error!(error = %e, applied = ?applied, "applier stopped; nothing after the last applied transaction was applied");
    }
    result
}

/// Commits, per partition, the first offset not yet applied.
fn commit(
    consumer: &StreamConsumer,
    held: &HashMap<(String, i32), BTreeSet<i64>>,
    seen: &HashMap<(String, i32), i64>,
    mode: CommitMode,
) {
    let mut tpl = TopicPartitionList::new();
    let partitions: HashSet<&(String, i32)> = seen.keys().collect();
    for tp in partitions {
        let next = match held.get(tp).and_then(|h| h.first()) {
            Some(&first) => first,
            None => seen[tp] + 1,
        };
        let _ = tpl.add_partition_offset(&tp.0, tp.1, KOffset::Offset(next));
    }
    if tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, mode)
    {
        tracing::warn!(error = %e, "committing Kafka offsets failed; they will be committed later");
    }
}

/// Runs publisher and applier together until `stop` or a fatal error in either.
pub async fn run(
    config: &StreamConfig,
    metrics: Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CdcError> {
    // Either half failing stops the other.
    let (halt_tx, halt_rx) = tokio::sync::watch::channel(false);
    let mut outer = stop.clone();
    let forward = {
        let halt_tx = halt_tx.clone();
        tokio::spawn(async move {
            let _ = outer.wait_for(|s| *s).await;
            let _ = halt_tx.send(true);
        })
    };
    let stopper = |r: Result<(), CdcError>| {
        if r.is_err() {
            let _ = halt_tx.send(true);
        }
        r
    };
    let (a, b) = tokio::join!(
        async { stopper(publish(config, metrics.clone(), halt_rx.clone()).await) },
        async { stopper(apply(config, metrics.clone(), halt_rx.clone()).await) }
    );
    forward.abort();
    a.and(b)
}

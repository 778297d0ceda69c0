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
                .set("compression.type", k.compression.name())
                .set("partitioner", "murmur2_random")
                .set("message.timeout.ms", "30000")
                .create()
                .map_err(|e| kafka_err("producer", e))?;
            let (tx, mut rx) = tokio::sync::mpsc::channel(crate::pipeline::BATCH_TRANSACTIONS * 2);
            let reader = {
                let source = source.clone();
                let from = start.clone();
                tokio::spawn(async move { source.run(from, tx).await })
            };
            // Acknowledgements are awaited off this loop, in order; each END is produced by the
            // settler once every record before it is acknowledged, while later transactions
            // are already on their way.
            let (pending, pending_rx) = tokio::sync::mpsc::channel(PENDING_RECORDS);
            let settler = tokio::spawn(settle_in_order(producer.clone(), pending_rx));
            let mut previous = start.clone();
            let mut encoded = EncodedSchemas::default();
            let mut last_heartbeat = Instant::now();
            let result: Result<(), CdcError> = async {
                loop {
                    let first = tokio::select! {
                        _ = stop.changed() => break,
                        t = rx.recv() => t,
                    };
                    let Some(first) = first else { break };
                    let mut batch = vec![first];
                    while batch.len() < crate::pipeline::BATCH_TRANSACTIONS {
                        match rx.try_recv() {
                            Ok(t) => batch.push(t),
                            Err(_) => break,
                        }
                    }
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
                            metrics.suppressed.inc_by(txn.suppressed);
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
                        let mut recs =
                            records(&mut txn, Some(&previous), &topics, &prefix, &mut encoded)?;
                        previous = txn.end.clone();
                        // The publisher resumes after the last END in Kafka, so an END must
                        // never be there before its events: the settler sends it after them.
                        let end = recs.pop().expect("an END record");
                        for rec in recs {
                            let f = produce(&producer, rec).await?;
                            queue(&pending, Pending::Delivery(f)).await?;
                        }
                        queue(&pending, Pending::End(end)).await?;
                        for ev in &txn.events {
                            metrics
                                .events
                                .with_label_values(&[&ev.schema.qualified(), "published"])
                                .inc();
                        }
                    }
                    if !chunks.is_empty() {
                        // A chunk counts as copied once its events and END are in Kafka.
                        flush(&pending).await?;
                        for (chunk, n) in chunks {
                            backfills.record(chunk, n).await?;
                        }
                    }
                    backfills.reap();
                }
                // Everything produced must be acknowledged before we say we stopped cleanly.
                flush(&pending).await
            }
            .await;
            drop(pending);
            // The settler's own error (a failed delivery) explains a closed queue best.
            let settled = settler
                .await
                .unwrap_or_else(|e| Err(CdcError::Kafka(format!("settler task: {e}"))));
            reader.abort();
            let read = reader.await;
            settled?;
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

/// Records produced but not yet known to be acknowledged, at most, before the publisher waits.
const PENDING_RECORDS: usize = 50_000;

/// What the settler works through, in order.
enum Pending {
    /// A record on its way: wait for its acknowledgement.
    Delivery(DeliveryFuture),
    /// An END record: everything before it is acknowledged, produce it now.
    End(Record),
    /// Report once everything before is acknowledged.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Awaits acknowledgements in the order records were produced and sends each END behind its
/// transaction's events; ends at the first failed delivery.
async fn settle_in_order(
    producer: FutureProducer,
    mut pending: tokio::sync::mpsc::Receiver<Pending>,
) -> Result<(), CdcError> {
    let mut ends: VecDeque<DeliveryFuture> = VecDeque::new();
    while let Some(item) = pending.recv().await {
        match item {
            Pending::Delivery(f) => delivered(f.await)?,
            Pending::End(rec) => {
                ends.push_back(produce(&producer, rec).await?);
                settle_ready(&mut ends)?;
            }
            Pending::Flush(done) => {
                settle(&mut ends, usize::MAX).await?;
                let _ = done.send(());
            }
        }
    }
    settle(&mut ends, usize::MAX).await
}

async fn queue(
    pending: &tokio::sync::mpsc::Sender<Pending>,
    item: Pending,
) -> Result<(), CdcError> {
    pending
        .send(item)
        .await
        .map_err(|_| CdcError::Kafka("the delivery settler stopped".into()))
}

/// Waits until everything queued so far is acknowledged.
async fn flush(pending: &tokio::sync::mpsc::Sender<Pending>) -> Result<(), CdcError> {
    let (done, acked) = tokio::sync::oneshot::channel();
    queue(pending, Pending::Flush(done)).await?;
    acked
        .await
        .map_err(|_| CdcError::Kafka("the delivery settler stopped".into()))
}

/// Queues one record, waiting while the producer's queue is full (librdkafka drains it on
/// its own thread).
async fn produce(
    producer: &FutureProducer,
    (topic, key, payload): Record,
) -> Result<DeliveryFuture, CdcError> {
    let mut record = FutureRecord::to(&topic).payload(&payload);
    if let Some(key) = &key {
        record = record.key(key);
    }
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(5)).await;
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
    txn: &mut Transaction,
    previous: Option<&Offset>,
    topics: &Topics,
    prefix: &str,
    schemas: &mut EncodedSchemas,
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
    for (i, ev) in txn.events.iter_mut().enumerate() {
        let table = ev.schema.qualified();
        let topic = topics
            .tables
            .get(&table)
            .ok_or_else(|| CdcError::Config(format!("no topic for table {table}")))?;
        // Debezium's transaction block, with our transaction id (the END record's).
        let n = per_table.entry(table).or_default();
        *n += 1;
        ev.envelope.transaction = Some(crate::model::debezium::TransactionBlock {
            id: id.clone(),
            total_order: i as u64 + 1,
            data_collection_order: *n,
        });
        let (key_schema, value_schema) = schemas.of(&ev.schema, prefix);
        out.push((
            topic.clone(),
            Some(with_schema(key_schema, &ev.key())),
            with_schema(value_schema, &ev.envelope),
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

/// `{"schema": …, "payload": …}` with the schema's JSON text made earlier.
fn with_schema(schema: &str, payload: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(schema.len() + 256);
    out.extend_from_slice(b"{\"schema\":");
    out.extend_from_slice(schema.as_bytes());
    out.extend_from_slice(b",\"payload\":");
    serde_json::to_writer(&mut out, payload).expect("serializable");
    out.push(b'}');
    out
}

/// The JSON text of each table's key and value schemas, made once per table schema (a schema
/// change brings a new `TableSchema`, so a new entry).
#[derive(Default)]
pub struct EncodedSchemas {
    by_table: HashMap<usize, (Arc<TableSchema>, String, String)>,
}

impl EncodedSchemas {
    fn of(&mut self, table: &Arc<TableSchema>, prefix: &str) -> (&str, &str) {
        let id = Arc::as_ptr(table) as usize;
        if self.by_table.len() > 1_000 {
            self.by_table.clear();
        }
        let (_, key, value) = self.by_table.entry(id).or_insert_with(|| {
            (
                table.clone(),
                crate::model::debezium::key_schema(table, prefix).to_string(),
                crate::model::debezium::value_schema(table, prefix).to_string(),
            )
        });
        (key, value)
    }
}

/// Schemas of the tables met on the topics, by `db.table`: the key and value schema texts
/// they were built from, so records with the same schemas skip rebuilding them.
pub type DecodedSchemas = HashMap<String, (String, String, Arc<TableSchema>)>;

/// A record in the JSON-with-schemas form, its parts left unparsed.
#[derive(Deserialize)]
struct Framed<'a> {
    #[serde(borrow)]
    schema: &'a serde_json::value::RawValue,
    /// `null` in a tombstone.
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

fn framed<'a>(text: &'a [u8], what: &str) -> Result<Framed<'a>, String> {
    let framed: Framed<'a> = serde_json::from_slice(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data if e.to_string().starts_with("missing field") => format!(
            "the {what} has no `schema` and `payload` (produce JSON with schemas enabled): {e}"
        ),
        serde_json::error::Category::Data => {
            format!("the {what} is not a JSON object with `schema` and `payload`: {e}")
        }
        _ => format!("the {what} is not JSON: {e}"),
    })?;
    Ok(framed)
}

/// Reads a change event from a Kafka record in the JSON-with-schemas form: the table schema is
/// rebuilt from the key and value schemas, so events written by Debezium itself are read too.
/// `Ok(None)` is a tombstone.
pub fn decode_record(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    cache: &mut DecodedSchemas,
) -> Result<Option<ChangeEvent>, String> {
    let Some(value) = value.filter(|v| !v.is_empty() && v.trim_ascii() != b"null") else {
        return Ok(None);
    };
    let value = framed(value, "value")?;
    let (value_schema, payload) = (value.schema, value.payload);
    if payload.get() == "null" {
        return Ok(None);
    }
    let envelope = Envelope::from_payload(payload.get())
        .map_err(|e| e.to_string())?
        .ok_or("the value's payload is null")?;
    let table = envelope
        .source
        .table
        .clone()
        .ok_or("the event's source block names no table")?;
    let qualified = format!("{}.{table}", envelope.source.db);
    let key = framed(key.ok_or("the record has no key")?, "key")?;
    let key_schema = key.schema;
    let schema = match cache.get(&qualified) {
        Some((k, v, schema)) if k == key_schema.get() && v == value_schema.get() => schema.clone(),
        _ => {
            let parse = |raw: &serde_json::value::RawValue| -> Result<Value, String> {
                serde_json::from_str(raw.get()).map_err(|e| e.to_string())
            };
            let (key_json, value_json) = (parse(key_schema)?, parse(value_schema)?);
            let schema = Arc::new(crate::model::debezium::schema_from_connect(
                &envelope.source.db,
                &table,
                &key_json,
                &value_json,
            )?);
            if schema.primary_key.len() != key_fields(&key_json)?.len() {
                return Err("the key schema's fields are not the table's key".into());
            }
            cache.insert(
                qualified,
                (
                    key_schema.get().to_string(),
                    value_schema.get().to_string(),
                    schema.clone(),
                ),
            );
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
    let applied = applier.stored_offset().await?;
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

    let mut asm = Assembly {
        transaction_topic: topics.transaction.clone(),
        applied,
        ..Assembly::default()
    };
    let mut last_commit = Instant::now();
    let result: Result<(), CdcError> = loop {
        let msg = tokio::select! {
            _ = stop.changed() => break Ok(()),
            m = consumer.recv() => m,
        };
        // Everything the consumer already holds joins this round, so one target commit covers
        // as many source transactions as are complete (one commit per END would be slow).
        let mut taken = 0usize;
        let mut next = Some(msg);
        let mut failed = None;
        while let Some(msg) = next.take() {
            match msg {
                Ok(m) => {
                    taken += 1;
                    if let Err(e) = asm.take(&m) {
                        failed = Some(e);
                        break;
                    }
                }
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
                        failed = Some(kafka_err("a topic disappeared", e));
                        break;
                    }
                    tracing::warn!(error = %e, "kafka consumer error; librdkafka retries");
                }
            }
            if taken < DRAIN_RECORDS {
                use futures_util::FutureExt as _;
                next = consumer.recv().now_or_never();
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        // Apply every transaction that is complete, in END order, batch by batch.
        let mut failed = None;
        loop {
            let (batch, release) = match asm.complete(&metrics) {
                Ok(b) => b,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            if release.is_empty() {
                break;
            }
            if !batch.is_empty()
                && let Err(e) = crate::pipeline::apply_batch(&applier, &batch, &metrics).await
            {
                failed = Some(e);
                break;
            }
            asm.release(release);
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if last_commit.elapsed() > Duration::from_millis(200) {
            commit(&consumer, &asm.held, &asm.seen, CommitMode::Async);
            last_commit = Instant::now();
        }
    };
    // Commit what is applied; a malformed record stays uncommitted, so a restart stops there again.
    commit(&consumer, &asm.held, &asm.seen, CommitMode::Sync);
    metrics.running.set(0);
    if let Err(e) = &result {
        metrics.errors.with_label_values(&["fatal"]).inc();
        tracing::error!(error = %e, applied = ?asm.applied, "applier stopped; nothing after the last applied transaction was applied");
    }
    result
}

/// Records taken from the consumer in one round at most, before applying what is complete.
const DRAIN_RECORDS: usize = 20_000;

/// Source transactions being rebuilt from the records read so far, and which Kafka offsets
/// are still held (read, not yet applied) so commits never pass an unapplied record.
#[derive(Default)]
struct Assembly {
    transaction_topic: String,
    /// The last source offset applied to the target.
    applied: Option<Offset>,
    ends: VecDeque<(TxnRecord, At)>,
    /// Transaction id → total_order → (event, where).
    buffers: HashMap<String, BTreeMap<u64, (ChangeEvent, At)>>,
    /// Offsets read but not yet applied, and the last offset read, per partition.
    held: HashMap<(String, i32), BTreeSet<i64>>,
    seen: HashMap<(String, i32), i64>,
    schemas: DecodedSchemas,
}

impl Assembly {
    /// Files one record: an END, an event of a transaction not applied yet, or nothing to keep.
    fn take(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) -> Result<(), CdcError> {
        let at: At = (m.topic().to_string(), m.partition(), m.offset());
        self.seen.insert((at.0.clone(), at.1), at.2);
        // Held until handled: a record that fails to parse stays held, so the committed offset
        // never passes it and a restart stops at it again.
        self.held
            .entry((at.0.clone(), at.1))
            .or_default()
            .insert(at.2);
        let malformed = |message: String| CdcError::Malformed {
            at: at_text(&at),
            message,
        };
        let mut keep = false;
        if at.0 == self.transaction_topic {
            let rec: TxnRecord = serde_json::from_slice(m.payload().unwrap_or_default())
                .map_err(|e| malformed(format!("not a transaction record: {e}")))?;
            if rec.status == TxnStatus::End {
                if rec.source_offset.is_none() || rec.event_count.is_none() {
                    return Err(malformed(
                        "END record without source_offset or event_count".into(),
                    ));
                }
                keep = true;
                self.ends.push_back((rec, at.clone()));
            }
        } else if let Some(ev) =
            decode_record(m.key(), m.payload(), &mut self.schemas).map_err(malformed)?
        {
            let pos = Offset {
                file: ev.envelope.source.file.clone(),
                pos: ev.envelope.source.pos,
                gtid: None,
            };
            // Part of a transaction applied already (a redelivery): nothing to hold.
            let done = self
                .applied
                .as_ref()
                .is_some_and(|a| position_key(&pos.file, pos.pos) < position_key(&a.file, a.pos));
            if !done {
                let block = ev.envelope.transaction.clone().expect("checked in decode");
                keep = true;
                self.buffers
                    .entry(block.id)
                    .or_default()
                    .insert(block.total_order, (ev, at.clone()));
            }
        }
        if !keep && let Some(h) = self.held.get_mut(&(at.0.clone(), at.1)) {
            h.remove(&at.2);
        }
        Ok(())
    }

    /// The next complete transactions in END order (at most one batch), and every record they
    /// account for, skipped ones included. Empty when the next END still misses events.
    fn complete(&mut self, metrics: &Metrics) -> Result<(Vec<Transaction>, Vec<At>), CdcError> {
        let mut batch: Vec<Transaction> = Vec::new();
        let mut events_in_batch = 0usize;
        let mut release: Vec<At> = Vec::new();
        while let Some((rec, _)) = self.ends.front() {
            if batch.len() >= crate::pipeline::BATCH_TRANSACTIONS
                || events_in_batch >= crate::pipeline::BATCH_EVENTS
            {
                break;
            }
            let end = rec.source_offset.clone().expect("checked");
            let count = rec.event_count.expect("checked");
            let mut skip = self.applied.as_ref().is_some_and(|a| before_or_at(&end, a));
            // A transaction whose predecessor is not what was applied last follows a gap (the
            // broker lost records); the publisher sends the missing ones again, so this one is
            // passed over now and applied when it comes again in order.
            if !skip
                && let (Some(a), Some(prev)) = (self.applied.as_ref(), rec.previous_offset.as_ref())
                && position_key(&prev.file, prev.pos) != position_key(&a.file, a.pos)
            {
                metrics.errors.with_label_values(&["gap"]).inc();
                tracing::warn!(transaction = %rec.id, follows = %prev, applied = %a, "gap before this transaction; waiting for the publisher to send what is missing");
                skip = true;
            }
            let have = self.buffers.get(&rec.id).map_or(0, |b| b.len() as u64);
            if !skip && have < count {
                break;
            }
            let (rec, end_at) = self.ends.pop_front().expect("front exists");
            if !skip && have > count {
                return Err(CdcError::Malformed {
                    at: at_text(&end_at),
                    message: format!(
                        "transaction {} has {have} events, its END says {count}",
                        rec.id
                    ),
                });
            }
            let events = self.buffers.remove(&rec.id).unwrap_or_default();
            release.push(end_at);
            let mut txn_events = Vec::with_capacity(events.len());
            for (_, (ev, at)) in events {
                release.push(at);
                txn_events.push(ev);
            }
            if !skip {
                events_in_batch += txn_events.len();
                batch.push(Transaction {
                    gtid: end.gtid.clone(),
                    end: end.clone(),
                    events: txn_events,
                    ts_ms: rec.ts_ms,
                    suppressed: 0,
                    marked: false,
                });
                self.applied = Some(end);
            }
        }
        Ok((batch, release))
    }

    /// Stops holding records whose transactions are applied (or were skipped).
    fn release(&mut self, release: Vec<At>) {
        for (topic, partition, offset) in release {
            if let Some(h) = self.held.get_mut(&(topic, partition)) {
                h.remove(&offset);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::debezium::{Op, Snapshot, Source};
    use crate::schema::{Column, ColumnKind};

    fn table() -> Arc<TableSchema> {
        let col = |name: &str, kind| Column {
            name: name.into(),
            kind,
            nullable: false,
        };
        Arc::new(TableSchema {
            db: "shop".into(),
            table: "orders".into(),
            columns: vec![
                col(
                    "id",
                    ColumnKind::Int {
                        unsigned: false,
                        bits: 64,
                    },
                ),
                col("total", ColumnKind::Decimal { scale: 2 }),
                col("note", ColumnKind::Text),
            ],
            primary_key: vec![0],
        })
    }

    fn txn(ids: &[i64]) -> Transaction {
        let schema = table();
        let events = ids
            .iter()
            .map(|&id| ChangeEvent {
                schema: schema.clone(),
                envelope: Envelope {
                    before: None,
                    after: Some(
                        serde_json::json!({"id": id, "total": "9.50", "note": "n"})
                            .as_object()
                            .unwrap()
                            .clone(),
                    ),
                    source: Source {
                        version: "2.7.0.Final".into(),
                        connector: "mysql".into(),
                        name: "s".into(),
                        ts_ms: 1,
                        snapshot: Snapshot::default(),
                        db: "shop".into(),
                        sequence: None,
                        table: Some("orders".into()),
                        server_id: 1,
                        gtid: None,
                        file: "binlog.000001".into(),
                        pos: 100,
                        row: 0,
                        thread: None,
                        query: None,
                    },
                    op: Op::Create,
                    ts_ms: Some(2),
                    ts_us: None,
                    transaction: None,
                },
            })
            .collect();
        Transaction {
            end: Offset {
                file: "binlog.000001".into(),
                pos: 200,
                gtid: Some("0-1-5".into()),
            },
            gtid: Some("0-1-5".into()),
            events,
            ts_ms: 1,
            suppressed: 0,
            marked: false,
        }
    }

    fn topics() -> Topics {
        Topics {
            transaction: "p.transaction".into(),
            tables: [("shop.orders".to_string(), "p.shop.orders".to_string())].into(),
        }
    }

    #[test]
    fn records_decode_back_to_the_same_events() {
        let mut t = txn(&[1, 2]);
        let mut encoded = EncodedSchemas::default();
        let recs = records(&mut t, None, &topics(), "p", &mut encoded).unwrap();
        assert_eq!(recs.len(), 4, "BEGIN, two events, END");
        let mut cache = DecodedSchemas::default();
        for (n, (topic, key, value)) in recs[1..3].iter().enumerate() {
            assert_eq!(topic, "p.shop.orders");
            // Both parts are the JSON converter's form, as Kafka Connect tools read it.
            let v: Value = serde_json::from_slice(value).unwrap();
            assert_eq!(v["schema"]["name"], "p.shop.orders.Envelope");
            let k: Value = serde_json::from_slice(key.as_ref().unwrap()).unwrap();
            assert_eq!(k["payload"], serde_json::json!({"id": n as i64 + 1}));
            let ev = decode_record(key.as_deref(), Some(value), &mut cache)
                .unwrap()
                .unwrap();
            assert_eq!(ev.envelope, t.events[n].envelope);
            // DECIMAL travels as a string (Debezium's `string` handling mode): names and key
            // are what must come back.
            let names =
                |t: &TableSchema| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
            assert_eq!(names(&ev.schema), names(&table()));
            assert_eq!(ev.schema.primary_key, vec![0]);
            assert_eq!(
                ev.envelope.transaction.as_ref().unwrap().total_order,
                n as u64 + 1
            );
        }
        // The second event reused the schema the first one built.
        assert_eq!(cache.len(), 1);
        // The same schema text is made once per table schema.
        let mut again = txn(&[3]);
        again.events[0].schema = t.events[0].schema.clone();
        records(&mut again, None, &topics(), "p", &mut encoded).unwrap();
        assert_eq!(encoded.by_table.len(), 1);
    }

    #[test]
    fn malformed_records_are_refused_with_the_reason() {
        let mut t = txn(&[1]);
        let recs = records(&mut t, None, &topics(), "p", &mut EncodedSchemas::default()).unwrap();
        let (_, key, value) = &recs[1];
        let key = key.as_deref();
        let value_json: Value = serde_json::from_slice(value).unwrap();
        let mut cache = DecodedSchemas::default();
        let mut refuse = |key: Option<&[u8]>, value: &[u8], needle: &str| {
            let err = decode_record(key, Some(value), &mut cache).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        refuse(key, b"{not json", "not JSON");
        refuse(key, b"\"text\"", "not a JSON object");
        refuse(key, b"[1, 2]", "not a Debezium change event");
        refuse(
            key,
            value_json["payload"].to_string().as_bytes(),
            "no `schema`",
        );
        let mut no_op = value_json.clone();
        no_op["payload"]["op"] = serde_json::json!("x");
        refuse(
            key,
            no_op.to_string().as_bytes(),
            "not a Debezium change event",
        );
        let mut no_after = value_json.clone();
        no_after["payload"]["after"] = Value::Null;
        refuse(key, no_after.to_string().as_bytes(), "no `after`");
        let mut no_txn = value_json.clone();
        no_txn["payload"]["transaction"] = Value::Null;
        refuse(key, no_txn.to_string().as_bytes(), "no `transaction` block");
        refuse(None, value, "no key");
        refuse(
            Some(b"{\"payload\": {\"id\": 1}}"),
            value,
            "key has no `schema`",
        );
        // Tombstones, in both forms.
        assert!(decode_record(key, None, &mut cache).unwrap().is_none());
        assert!(
            decode_record(key, Some(b"null"), &mut cache)
                .unwrap()
                .is_none()
        );
        let null_payload = serde_json::json!({"schema": value_json["schema"], "payload": null});
        assert!(
            decode_record(key, Some(null_payload.to_string().as_bytes()), &mut cache)
                .unwrap()
                .is_none()
        );
    }
}

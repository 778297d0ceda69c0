//! The publisher: binlog transactions become records, produced in order, each END sent only
//! after its transaction's events are acknowledged; publishing resumes from the last END.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset as KOffset, TopicPartitionList};

use super::codec::{EncodedSchemas, Record, TxnRecord, TxnStatus, records};
use super::topics::{Topics, client, ensure_topics, kafka_err, kafka_of};
use crate::apply::mysql::MysqlApplier;
use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::model::transaction::Offset;
use crate::source::binlog::BinlogSource;
use crate::source::position::initial_offset;

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
    let applier = MysqlApplier::for_stream(config)?;
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
    let mut source = BinlogSource::for_stream(config);
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
                    None => initial_offset(config).await?,
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
            let (tx, mut rx) =
                tokio::sync::mpsc::channel(crate::apply::batch::BATCH_TRANSACTIONS * 2);
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
                    while batch.len() < crate::apply::batch::BATCH_TRANSACTIONS {
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
        if !err.retryable() && !matches!(err, CdcError::Kafka(_)) {
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

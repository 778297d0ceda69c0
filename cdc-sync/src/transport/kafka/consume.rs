//! The applier's side: consumes in a group, rebuilds each source transaction in END order,
//! applies it with its source offset (a redelivered one is skipped) and commits Kafka offsets
//! only behind what it applied.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset as KOffset, TopicPartitionList};

use super::codec::{DecodedSchemas, TxnRecord, TxnStatus, decode_record};
use super::topics::{Topics, client, ensure_topics, kafka_err, kafka_of};
use crate::apply::mysql::MysqlApplier;
use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::model::debezium::ChangeEvent;
use crate::model::transaction::{Offset, Transaction};
use crate::model::transaction::{before_or_at, position_key};

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
    let applier = MysqlApplier::for_stream(config)?;
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
                && let Err(e) = crate::apply::batch::apply_batch(&applier, &batch, &metrics).await
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
            if batch.len() >= crate::apply::batch::BATCH_TRANSACTIONS
                || events_in_batch >= crate::apply::batch::BATCH_EVENTS
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

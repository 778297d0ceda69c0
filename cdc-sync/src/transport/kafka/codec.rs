//! The records on the topics: Debezium change events in the JSON converter's `schema` +
//! `payload` form keyed by primary key, and BEGIN/END records on the transaction topic.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::topics::Topics;
use crate::error::CdcError;
use crate::model::debezium::{ChangeEvent, Envelope};
use crate::model::schema::TableSchema;
use crate::model::transaction::{Offset, Transaction};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::debezium::{Op, Snapshot, Source};
    use crate::model::schema::{Column, ColumnKind};

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

//! Debezium's change-event envelope for the MySQL/MariaDB connector, with serde for the bare form
//! and the JSON-converter form with schemas (`{"schema": …, "payload": …}`), keys, tombstones and
//! transaction metadata, so existing Kafka tooling reads what cdc-sync produces.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::schema::{ColumnKind, TableSchema};

/// Operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "c")]
    Create,
    #[serde(rename = "u")]
    Update,
    #[serde(rename = "d")]
    Delete,
    #[serde(rename = "r")]
    Read,
    #[serde(rename = "t")]
    Truncate,
    #[serde(rename = "m")]
    Message,
}

/// `source.snapshot`: a string in current Debezium, a boolean in older versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Snapshot {
    Text(String),
    Flag(bool),
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::Text("false".into())
    }
}

/// The `source` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub version: String,
    pub connector: String,
    pub name: String,
    pub ts_ms: i64,
    #[serde(default)]
    pub snapshot: Snapshot,
    pub db: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    #[serde(default)]
    pub table: Option<String>,
    pub server_id: u64,
    #[serde(default)]
    pub gtid: Option<String>,
    pub file: String,
    pub pos: u64,
    #[serde(default)]
    pub row: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// Transaction metadata of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionBlock {
    pub id: String,
    pub total_order: u64,
    pub data_collection_order: u64,
}

/// The event value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub before: Option<Map<String, Value>>,
    pub after: Option<Map<String, Value>>,
    pub source: Source,
    pub op: Op,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionBlock>,
}

/// A change with the schema of its table.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub schema: Arc<TableSchema>,
    pub envelope: Envelope,
}

/// Why event JSON could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl Envelope {
    /// Reads an event value in either the bare or the `schema` + `payload` form; `Ok(None)` is a
    /// tombstone (`null`).
    pub fn from_json(text: &[u8]) -> Result<Option<Self>, ParseError> {
        let v: Value =
            serde_json::from_slice(text).map_err(|e| ParseError(format!("not JSON: {e}")))?;
        let payload = match v {
            Value::Null => return Ok(None),
            Value::Object(mut o) if o.contains_key("payload") && o.contains_key("schema") => {
                o.remove("payload").unwrap_or(Value::Null)
            }
            other => other,
        };
        if payload.is_null() {
            return Ok(None);
        }
        let env: Envelope = serde_json::from_value(payload)
            .map_err(|e| ParseError(format!("not a Debezium change event: {e}")))?;
        env.checked().map(Some)
    }

    /// Reads the bare form (a `payload` on its own, parsed in one pass); `Ok(None)` is `null`.
    pub fn from_payload(text: &str) -> Result<Option<Self>, ParseError> {
        let env: Option<Envelope> = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                ParseError(format!("not a Debezium change event: {e}"))
            }
            _ => ParseError(format!("not JSON: {e}")),
        })?;
        env.map(Envelope::checked).transpose()
    }

    /// Refuses an event without the row images its op needs.
    fn checked(self) -> Result<Self, ParseError> {
        let env = self;
        match env.op {
            Op::Create | Op::Read if env.after.is_none() => {
                Err(ParseError("a create/read event has no `after`".into()))
            }
            Op::Delete if env.before.is_none() => {
                Err(ParseError("a delete event has no `before`".into()))
            }
            Op::Update if env.after.is_none() || env.before.is_none() => Err(ParseError(
                "an update event needs `before` and `after`".into(),
            )),
            _ => Ok(env),
        }
    }
}

fn field_type(kind: &ColumnKind) -> (&'static str, Option<&'static str>) {
    match kind {
        ColumnKind::Int {
            bits: 8,
            unsigned: false,
        } => ("int8", None),
        ColumnKind::Int { bits: 8, .. }
        | ColumnKind::Int {
            bits: 16,
            unsigned: false,
        } => ("int16", None),
        ColumnKind::Int { bits: 16 | 24, .. }
        | ColumnKind::Int {
            bits: 32,
            unsigned: false,
        } => ("int32", None),
        ColumnKind::Int { .. } => ("int64", None),
        ColumnKind::Year => ("int32", Some("io.debezium.time.Year")),
        ColumnKind::Float => ("float", None),
        ColumnKind::Double => ("double", None),
        ColumnKind::Decimal { .. } | ColumnKind::Text => ("string", None),
        ColumnKind::Json => ("string", Some("io.debezium.data.Json")),
        ColumnKind::Enum { .. } => ("string", Some("io.debezium.data.Enum")),
        ColumnKind::Set { .. } => ("string", Some("io.debezium.data.EnumSet")),
        ColumnKind::Bytes => ("bytes", None),
        ColumnKind::Date => ("int32", Some("io.debezium.time.Date")),
        ColumnKind::DateTime { precision } if *precision <= 3 => {
            ("int64", Some("io.debezium.time.Timestamp"))
        }
        ColumnKind::DateTime { .. } => ("int64", Some("io.debezium.time.MicroTimestamp")),
        ColumnKind::Timestamp { .. } => ("string", Some("io.debezium.time.ZonedTimestamp")),
        ColumnKind::Time => ("int64", Some("io.debezium.time.MicroTime")),
    }
}

fn row_schema(schema: &TableSchema, prefix: &str, columns: &[usize], name: &str) -> Value {
    let fields: Vec<Value> = columns
        .iter()
        .map(|&i| {
            let c = &schema.columns[i];
            let (t, logical) = field_type(&c.kind);
            let mut f = json!({"type": t, "optional": c.nullable, "field": c.name});
            if let Some(l) = logical {
                f["name"] = json!(l);
            }
            f
        })
        .collect();
    json!({"type": "struct", "fields": fields, "optional": true,
           "name": format!("{prefix}.{}.{}.{name}", schema.db, schema.table)})
}

/// The column kind of a Kafka Connect field schema (`type` + logical `name`), as Debezium's
/// MySQL connector writes it (decimals in `string` mode, times in `adaptive_time_microseconds`).
fn kind_from_connect(field: &Value) -> Result<ColumnKind, String> {
    let t = field.get("type").and_then(Value::as_str).unwrap_or("");
    let name = field.get("name").and_then(Value::as_str);
    let int = |bits| ColumnKind::Int {
        unsigned: false,
        bits,
    };
    Ok(match (t, name) {
        ("int8", None) => int(8),
        ("int16", None) => int(16),
        ("int32", None) => int(32),
        ("int64", None) => int(64),
        ("int32", Some("io.debezium.time.Year")) => ColumnKind::Year,
        ("int32", Some("io.debezium.time.Date")) => ColumnKind::Date,
        ("int64", Some("io.debezium.time.Timestamp")) => ColumnKind::DateTime { precision: 3 },
        ("int64", Some("io.debezium.time.MicroTimestamp")) => ColumnKind::DateTime { precision: 6 },
        ("int64", Some("io.debezium.time.MicroTime")) => ColumnKind::Time,
        ("string", Some("io.debezium.time.ZonedTimestamp")) => {
            ColumnKind::Timestamp { precision: 6 }
        }
        ("string", Some("io.debezium.data.Json")) => ColumnKind::Json,
        ("string", Some("io.debezium.data.Enum")) => ColumnKind::Enum { values: Vec::new() },
        ("string", Some("io.debezium.data.EnumSet")) => ColumnKind::Set { values: Vec::new() },
        ("string", None) => ColumnKind::Text,
        ("float", None) => ColumnKind::Float,
        ("double", None) => ColumnKind::Double,
        ("bytes", None) => ColumnKind::Bytes,
        (t, name) => {
            return Err(format!(
                "field {}: type {t:?}{} is not supported (use decimal.handling.mode=string and \
                 time.precision.mode=adaptive_time_microseconds)",
                field.get("field").and_then(Value::as_str).unwrap_or("?"),
                name.map(|n| format!(" ({n})")).unwrap_or_default()
            ));
        }
    })
}

/// Rebuilds a table schema from the key and value schemas of the JSON converter's
/// `schema` + `payload` form.
pub fn schema_from_connect(
    db: &str,
    table: &str,
    key_schema: &Value,
    value_schema: &Value,
) -> Result<TableSchema, String> {
    let fields = |s: &Value| -> Result<Vec<Value>, String> {
        s.get("fields")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| "a schema without fields".to_string())
    };
    let row = fields(value_schema)?
        .into_iter()
        .find(|f| f.get("field").and_then(Value::as_str) == Some("after"))
        .ok_or("the value schema has no `after` field")?;
    let mut columns = Vec::new();
    for f in fields(&row)? {
        let name = f
            .get("field")
            .and_then(Value::as_str)
            .ok_or("a column without a name")?;
        columns.push(crate::model::schema::Column {
            name: name.to_string(),
            kind: kind_from_connect(&f)?,
            nullable: f.get("optional").and_then(Value::as_bool).unwrap_or(true),
        });
    }
    let mut primary_key = Vec::new();
    for f in fields(key_schema)? {
        let name = f.get("field").and_then(Value::as_str).unwrap_or("");
        primary_key.push(
            columns
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| format!("key field {name:?} is not a column of the value"))?,
        );
    }
    if primary_key.is_empty() {
        return Err("the key schema has no fields".into());
    }
    Ok(TableSchema {
        db: db.to_string(),
        table: table.to_string(),
        columns,
        primary_key,
    })
}

impl ChangeEvent {
    /// The Kafka key: the primary-key columns of the row (from `after`, or `before` for deletes).
    pub fn key(&self) -> Map<String, Value> {
        let row = self
            .envelope
            .after
            .as_ref()
            .or(self.envelope.before.as_ref());
        self.schema
            .primary_key
            .iter()
            .map(|&i| {
                let name = &self.schema.columns[i].name;
                let value = row.and_then(|r| r.get(name)).cloned();
                (name.clone(), value.unwrap_or(Value::Null))
            })
            .collect()
    }

    /// The key in the `schema` + `payload` form.
    pub fn key_with_schema(&self, prefix: &str) -> Value {
        json!({"schema": key_schema(&self.schema, prefix), "payload": self.key()})
    }

    /// The value in the `schema` + `payload` form.
    pub fn value_with_schema(&self, prefix: &str) -> Value {
        json!({"schema": value_schema(&self.schema, prefix), "payload": self.envelope})
    }
}

/// The Kafka Connect schema of a table's keys.
pub fn key_schema(table: &TableSchema, prefix: &str) -> Value {
    let mut schema = row_schema(table, prefix, &table.primary_key, "Key");
    schema["optional"] = json!(false);
    schema
}

/// The Kafka Connect schema of a table's change events (the envelope).
pub fn value_schema(table: &TableSchema, prefix: &str) -> Value {
    {
        let all: Vec<usize> = (0..table.columns.len()).collect();
        let row = row_schema(table, prefix, &all, "Value");
        let mut before = row.clone();
        before["field"] = json!("before");
        let mut after = row;
        after["field"] = json!("after");
        let schema = json!({
            "type": "struct",
            "name": format!("{prefix}.{}.{}.Envelope", table.db, table.table),
            "optional": false,
            "fields": [
                before,
                after,
                {"type": "struct", "field": "source", "optional": false, "name": "io.debezium.connector.mysql.Source", "fields": [
                    {"type": "string", "field": "version", "optional": false},
                    {"type": "string", "field": "connector", "optional": false},
                    {"type": "string", "field": "name", "optional": false},
                    {"type": "int64", "field": "ts_ms", "optional": false},
                    {"type": "string", "field": "snapshot", "optional": true, "name": "io.debezium.data.Enum"},
                    {"type": "string", "field": "db", "optional": false},
                    {"type": "string", "field": "table", "optional": true},
                    {"type": "int64", "field": "server_id", "optional": false},
                    {"type": "string", "field": "gtid", "optional": true},
                    {"type": "string", "field": "file", "optional": false},
                    {"type": "int64", "field": "pos", "optional": false},
                    {"type": "int32", "field": "row", "optional": false}
                ]},
                {"type": "string", "field": "op", "optional": false},
                {"type": "int64", "field": "ts_ms", "optional": true},
                {"type": "struct", "field": "transaction", "optional": true, "fields": [
                    {"type": "string", "field": "id", "optional": false},
                    {"type": "int64", "field": "total_order", "optional": false},
                    {"type": "int64", "field": "data_collection_order", "optional": false}
                ]}
            ]
        });
        schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An update event as the Debezium MySQL connector documents it (bare form).
    const DOCUMENTED: &str = r#"{
      "before": {"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"},
      "after": {"id": 1004, "first_name": "Anne Marie", "last_name": "Kretchmar", "email": "annek@noanswer.org"},
      "source": {"version": "2.7.0.Final", "name": "mysql-server-1", "connector": "mysql", "ts_ms": 1465581029100,
                 "snapshot": false, "db": "inventory", "table": "customers", "server_id": 223344,
                 "gtid": null, "file": "mysql-bin.000003", "pos": 484, "row": 0, "thread": 7,
                 "query": "UPDATE customers SET first_name='Anne Marie' WHERE id=1004"},
      "op": "u", "ts_ms": 1465581029523}"#;

    #[test]
    fn reads_documented_events_in_both_forms() {
        let env = Envelope::from_json(DOCUMENTED.as_bytes()).unwrap().unwrap();
        assert_eq!(env.op, Op::Update);
        assert_eq!(env.source.snapshot, Snapshot::Flag(false));
        assert_eq!(env.after.as_ref().unwrap()["first_name"], "Anne Marie");
        let wrapped = format!(r#"{{"schema": {{"type": "struct"}}, "payload": {DOCUMENTED}}}"#);
        assert_eq!(
            Envelope::from_json(wrapped.as_bytes()).unwrap().unwrap(),
            env
        );
        // Round trip through our own serialization.
        let again = serde_json::to_vec(&env).unwrap();
        assert_eq!(Envelope::from_json(&again).unwrap().unwrap(), env);
        // Tombstones.
        assert!(Envelope::from_json(b"null").unwrap().is_none());
    }

    #[test]
    fn malformed_events_are_refused_with_the_reason() {
        for (text, needle) in [
            ("{", "not JSON"),
            (r#"{"op": "x"}"#, "not a Debezium change event"),
            (
                &DOCUMENTED.replace(r#""after": {"id""#, r#""aftr": {"id""#),
                "update event needs",
            ),
        ] {
            let err = Envelope::from_json(text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}

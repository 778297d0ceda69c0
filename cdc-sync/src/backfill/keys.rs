//! Primary-key codecs of a backfill: key literals comparable between binlog rows and selected
//! rows, and the JSON form ranges and resume points are stored in.

use mysql_async::Value;

use crate::error::CdcError;
use crate::model::values::decode;
pub(super) fn quote(q: &str) -> String {
    crate::model::server::quote_qualified(q)
}

/// The key literal of a binlog row, comparable with `key_literal` of a selected row.
pub(super) fn key_of_event(
    schema: &crate::model::schema::TableSchema,
    row: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let values: Vec<Value> = schema
        .primary_key
        .iter()
        .map(|&i| {
            let c = &schema.columns[i];
            decode(
                &c.kind,
                row.get(&c.name).unwrap_or(&serde_json::Value::Null),
            )
            .unwrap_or(Value::NULL)
        })
        .collect();
    key_literal(&values)
}

/// Key values as one comparable text.
pub fn key_literal(key: &[Value]) -> String {
    key.iter()
        .map(|v| match v {
            Value::UInt(u) => u.to_string(),
            other => other.as_sql(false),
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn keys_to_json(key: &[Value]) -> serde_json::Value {
    serde_json::Value::Array(
        key.iter()
            .map(|v| match v {
                Value::Int(i) => serde_json::json!(i),
                Value::UInt(u) => serde_json::json!(u),
                Value::Bytes(b) => serde_json::json!(String::from_utf8_lossy(b)),
                other => serde_json::json!(other.as_sql(false)),
            })
            .collect(),
    )
}

pub(super) fn json_to_keys(text: &str) -> Result<Vec<Value>, CdcError> {
    let v: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| CdcError::Config(format!("stored backfill key {text:?}: {e}")))?;
    Ok(v.into_iter()
        .map(|v| match v {
            serde_json::Value::Number(n) if n.is_i64() => Value::Int(n.as_i64().unwrap_or(0)),
            serde_json::Value::Number(n) => Value::UInt(n.as_u64().unwrap_or(0)),
            serde_json::Value::String(s) => Value::Bytes(s.into_bytes()),
            other => Value::Bytes(other.to_string().into_bytes()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_the_stored_json_form() {
        let key = vec![
            Value::Int(-5),
            Value::UInt(u64::MAX),
            Value::Bytes(b"o'neil".to_vec()),
        ];
        let json = keys_to_json(&key);
        assert_eq!(json, serde_json::json!([-5, u64::MAX, "o'neil"]));
        assert_eq!(json_to_keys(&json.to_string()).unwrap(), key);
        let err = json_to_keys("{not json").unwrap_err().to_string();
        assert!(err.contains("stored backfill key"), "{err}");
    }

    #[test]
    fn binlog_rows_and_selected_rows_give_the_same_literal() {
        use crate::model::schema::{Column, ColumnKind, TableSchema};
        let schema = TableSchema {
            db: "shop".into(),
            table: "t".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    kind: ColumnKind::Int {
                        unsigned: true,
                        bits: 64,
                    },
                    nullable: false,
                },
                Column {
                    name: "code".into(),
                    kind: ColumnKind::Text,
                    nullable: false,
                },
            ],
            primary_key: vec![0, 1],
        };
        let row = serde_json::json!({"id": 7, "code": "a'b"});
        let from_binlog = key_of_event(&schema, row.as_object().unwrap());
        let selected = key_literal(&[Value::UInt(7), Value::Bytes(b"a'b".to_vec())]);
        assert_eq!(from_binlog, selected);
        assert_ne!(
            selected,
            key_literal(&[Value::UInt(7), Value::Bytes(b"a'c".to_vec())])
        );
        assert_eq!(quote("shop.order items"), "`shop`.`order items`");
    }
}

//! Table schemas: column names, the kind of each column's values and the primary key, which
//! binlog rows events do not carry; the source reads them from `information_schema`.

use serde::{Deserialize, Serialize};

/// How a column's values are encoded in Debezium events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    Int {
        unsigned: bool,
        bits: u8,
    },
    Float,
    Double,
    /// DECIMAL, in Debezium's `string` handling mode.
    Decimal {
        scale: u32,
    },
    Text,
    Json,
    Enum {
        values: Vec<String>,
    },
    Set {
        values: Vec<String>,
    },
    Bytes,
    /// DATE: days since the epoch.
    Date,
    /// DATETIME: epoch milliseconds (precision ≤ 3) or microseconds.
    DateTime {
        precision: u32,
    },
    /// TIMESTAMP: ISO-8601 UTC string.
    Timestamp {
        precision: u32,
    },
    /// TIME: microseconds.
    Time,
    Year,
}

/// One column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
    pub nullable: bool,
}

/// A table's columns in ordinal order and its primary key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    pub db: String,
    pub table: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns`.
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    /// `db.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.db, self.table)
    }

    /// Index of column `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

fn values_of(column_type: &str) -> Vec<String> {
    // enum('a','b''c') → ["a", "b'c"]
    let inner = column_type
        .find('(')
        .and_then(|i| column_type.rfind(')').map(|j| &column_type[i + 1..j]))
        .unwrap_or("");
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('\'', false) => quoted = true,
            ('\'', true) if chars.peek() == Some(&'\'') => {
                chars.next();
                cur.push('\'');
            }
            ('\'', true) => {
                quoted = false;
                out.push(std::mem::take(&mut cur));
            }
            (c, true) => cur.push(c),
            _ => {}
        }
    }
    out
}

/// The kind of a column from its `information_schema.COLUMNS` row.
pub fn kind_of(
    data_type: &str,
    column_type: &str,
    scale: Option<u64>,
    dt_precision: Option<u64>,
) -> ColumnKind {
    let unsigned = column_type.contains("unsigned");
    match data_type {
        "tinyint" => ColumnKind::Int { unsigned, bits: 8 },
        "smallint" => ColumnKind::Int { unsigned, bits: 16 },
        "mediumint" => ColumnKind::Int { unsigned, bits: 24 },
        "int" | "integer" => ColumnKind::Int { unsigned, bits: 32 },
        "bigint" => ColumnKind::Int { unsigned, bits: 64 },
        "float" => ColumnKind::Float,
        "double" | "real" => ColumnKind::Double,
        "decimal" | "numeric" => ColumnKind::Decimal {
            scale: scale.unwrap_or(0) as u32,
        },
        "date" => ColumnKind::Date,
        "datetime" => ColumnKind::DateTime {
            precision: dt_precision.unwrap_or(0) as u32,
        },
        "timestamp" => ColumnKind::Timestamp {
            precision: dt_precision.unwrap_or(0) as u32,
        },
        "time" => ColumnKind::Time,
        "year" => ColumnKind::Year,
        "enum" => ColumnKind::Enum {
            values: values_of(column_type),
        },
        "set" => ColumnKind::Set {
            values: values_of(column_type),
        },
        "json" => ColumnKind::Json,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
            // MariaDB's JSON is LONGTEXT with a JSON_VALID check; the check shows in column_type
            // only through information_schema.CHECK_CONSTRAINTS, so it stays text.
            ColumnKind::Text
        }
        _ => ColumnKind::Bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_and_set_values_are_parsed_with_quotes() {
        assert_eq!(values_of("enum('a','b''c','d,e')"), ["a", "b'c", "d,e"]);
        assert_eq!(values_of("set('x')"), ["x"]);
    }

    #[test]
    fn kinds() {
        assert_eq!(
            kind_of("bigint", "bigint(20) unsigned", None, None),
            ColumnKind::Int {
                unsigned: true,
                bits: 64
            }
        );
        assert_eq!(
            kind_of("decimal", "decimal(12,2)", Some(2), None),
            ColumnKind::Decimal { scale: 2 }
        );
        assert_eq!(
            kind_of("datetime", "datetime(3)", None, Some(3)),
            ColumnKind::DateTime { precision: 3 }
        );
        assert_eq!(kind_of("blob", "blob", None, None), ColumnKind::Bytes);
    }
}

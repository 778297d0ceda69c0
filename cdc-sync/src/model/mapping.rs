//! The mapping from source tables to target tables: renamed columns, dropped columns, added
//! columns with defaults, and simple value transforms (lower/upper-case, trim).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One table's mapping.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    /// `db.table` on the source.
    pub source: String,
    /// `db.table` on the target.
    pub target: String,
    /// Source column → target column.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Source columns not written to the target.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Target columns the source lacks, with the value to write (JSON literal).
    #[serde(default)]
    pub defaults: BTreeMap<String, toml::Value>,
    /// Source column → transform (`lower`, `upper`, `trim`).
    #[serde(default)]
    pub transform: BTreeMap<String, Transform>,
    /// Integer source columns replicated as deltas: an update applies `after − before` as an
    /// increment (`SET stock = stock + ?`), so that both sides decrementing one row concurrently
    /// lose nothing. Never compared for conflicts; inserts and snapshots write the value.
    #[serde(default)]
    pub counters: Vec<String>,
    /// Source columns never compared for conflicts (timestamps each side sets on its own, such
    /// as `updated_at … ON UPDATE`): their after-image is written, a difference is no conflict.
    #[serde(default)]
    pub uncompared: Vec<String>,
    /// The column holding the user a row belongs to (`user_id`), when writes are owned per user
    /// during a write canary (the stream's `[ownership]`): a change written on the side that
    /// does not own the user is a stray write, kept as a conflict and not applied.
    #[serde(default)]
    pub owner_key: Option<String>,
    /// The proxy flag that splits this table's users between the sides (the domain's flag,
    /// `route.orders`); `[ownership].flag` when unset.
    #[serde(default)]
    pub owner_flag: Option<String>,
}

/// A value transform.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    Lower,
    Upper,
    Trim,
}

impl Transform {
    /// Applies to strings; other values pass unchanged.
    pub fn apply(self, v: Value) -> Value {
        match (self, v) {
            (Transform::Lower, Value::String(s)) => Value::String(s.to_lowercase()),
            (Transform::Upper, Value::String(s)) => Value::String(s.to_uppercase()),
            (Transform::Trim, Value::String(s)) => Value::String(s.trim().to_string()),
            (_, v) => v,
        }
    }
}

impl TableMapping {
    /// The target column of source column `name`, or `None` when dropped.
    pub fn target_column<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if self.drop.iter().any(|d| d == name) {
            return None;
        }
        Some(self.rename.get(name).map_or(name, String::as_str))
    }

    /// For copying and comparing in SQL: `(source expression, target column)`, both quoted, of
    /// every mapped column of `schema` in column order, transforms applied on the source side.
    pub fn sql_columns(&self, schema: &crate::model::schema::TableSchema) -> Vec<(String, String)> {
        schema
            .columns
            .iter()
            .filter_map(|c| {
                let target = self.target_column(&c.name)?;
                let e = crate::model::server::quote_ident(&c.name);
                let source = match self.transform.get(&c.name) {
                    Some(Transform::Lower) => format!("LOWER({e})"),
                    Some(Transform::Upper) => format!("UPPER({e})"),
                    Some(Transform::Trim) => format!("TRIM({e})"),
                    None => e,
                };
                Some((source, crate::model::server::quote_ident(target)))
            })
            .collect()
    }

    /// Checks the names.
    pub fn validate(&self) -> Result<(), String> {
        for (field, v) in [("source", &self.source), ("target", &self.target)] {
            let ok = v.split_once('.').is_some_and(|(d, t)| {
                !d.is_empty()
                    && !t.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            });
            if !ok {
                return Err(format!(
                    "tables.{field} {v:?} must be db.table (letters, digits, _)"
                ));
            }
        }
        for (field, v) in [("source", &self.source), ("target", &self.target)] {
            if let Some((_, table)) = v.split_once('.')
                && crate::model::server::is_marker(table)
            {
                return Err(format!(
                    "tables.{field} {v:?}: {table} is a name cdc-sync keeps for its own tables"
                ));
            }
        }
        for name in self
            .rename
            .values()
            .chain(self.defaults.keys())
            .chain(self.rename.keys())
            .chain(self.drop.iter())
            .chain(self.transform.keys())
            .chain(self.counters.iter())
            .chain(self.uncompared.iter())
            .chain(self.owner_key.iter())
        {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "{}: column name {name:?} is not an identifier",
                    self.source
                ));
            }
        }
        if let Some(c) = self.counters.iter().find(|c| self.drop.contains(c)) {
            return Err(format!(
                "{}: counter {c:?} is also dropped by the mapping",
                self.source
            ));
        }
        Ok(())
    }
}

/// A TOML default as an SQL parameter.
pub fn default_sql_value(v: &toml::Value) -> mysql_async::Value {
    use mysql_async::Value as V;
    match toml_to_json(v) {
        Value::String(s) => V::Bytes(s.into_bytes()),
        Value::Number(n) if n.is_i64() => V::Int(n.as_i64().unwrap_or(0)),
        Value::Number(n) => V::Double(n.as_f64().unwrap_or(0.0)),
        Value::Bool(b) => V::Int(i64::from(b)),
        other => V::Bytes(other.to_string().into_bytes()),
    }
}

/// A TOML default as JSON.
pub fn toml_to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_drops_and_transforms() {
        let m: TableMapping = toml::from_str(
            "source = \"shop.users\"\ntarget = \"user_svc.accounts\"\nrename = { name = \"display_name\" }\ndrop = [\"address\"]\ntransform = { email = \"lower\" }\ndefaults = { origin = \"monolith\" }\n",
        )
        .unwrap();
        m.validate().unwrap();
        assert_eq!(m.target_column("name"), Some("display_name"));
        assert_eq!(m.target_column("address"), None);
        assert_eq!(m.target_column("email"), Some("email"));
        assert_eq!(
            m.transform["email"].apply(Value::from("A@B.CO")),
            Value::from("a@b.co")
        );
        assert_eq!(toml_to_json(&m.defaults["origin"]), Value::from("monolith"));
        let bad: TableMapping = toml::from_str("source = \"users\"\ntarget = \"x.y\"\n").unwrap();
        assert!(bad.validate().unwrap_err().contains("db.table"));
    }
}

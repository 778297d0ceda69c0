//! Table schemas read from `information_schema` and cached per table; reloaded when a DDL
//! statement touches a database.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::Pool;
use mysql_async::prelude::*;

use crate::error::CdcError;
use crate::model::schema::{Column, TableSchema, kind_of};

/// Loads and caches table schemas.
#[derive(Clone)]
pub struct SchemaCache {
    pool: Pool,
    tables: HashMap<(String, String), Arc<TableSchema>>,
}

impl SchemaCache {
    /// A cache reading from `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            tables: HashMap::new(),
        }
    }

    /// The schema of `db.table`, loaded on first use.
    pub async fn get(&mut self, db: &str, table: &str) -> Result<Arc<TableSchema>, CdcError> {
        let key = (db.to_string(), table.to_string());
        if let Some(s) = self.tables.get(&key) {
            return Ok(s.clone());
        }
        let s = Arc::new(load(&self.pool, db, table).await?);
        self.tables.insert(key, s.clone());
        Ok(s)
    }

    /// Puts a schema known from elsewhere (a test's fixture) in the cache.
    pub fn insert(&mut self, schema: TableSchema) {
        self.tables
            .insert((schema.db.clone(), schema.table.clone()), Arc::new(schema));
    }

    /// Forgets every table of `db` (after DDL), or all when `db` is empty.
    pub fn invalidate(&mut self, db: &str) {
        self.tables.retain(|(d, _), _| !db.is_empty() && d != db);
    }
}

/// name, data type, column type, scale, datetime precision, key, nullable.
type InfoColumn = (
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    String,
    String,
);

/// Reads one table's schema.
pub async fn load(pool: &Pool, db: &str, table: &str) -> Result<TableSchema, CdcError> {
    let mut conn = pool.get_conn().await?;
    let rows: Vec<InfoColumn> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_SCALE, DATETIME_PRECISION, COLUMN_KEY, IS_NULLABLE \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await?;
    let pk_order: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await?;
    let columns: Vec<Column> = rows
        .into_iter()
        .map(
            |(name, data_type, column_type, scale, dtp, _key, nullable)| Column {
                kind: kind_of(&data_type, &column_type, scale, dtp),
                name,
                nullable: nullable == "YES",
            },
        )
        .collect();
    let primary_key: Vec<usize> = pk_order
        .iter()
        .filter_map(|n| columns.iter().position(|c| &c.name == n))
        .collect();
    if columns.is_empty() {
        return Err(CdcError::Config(format!(
            "table `{db}.{table}` does not exist"
        )));
    }
    if primary_key.is_empty() {
        return Err(CdcError::NoPrimaryKey(format!("{db}.{table}")));
    }
    Ok(TableSchema {
        db: db.to_string(),
        table: table.to_string(),
        columns,
        primary_key,
    })
}

//! Per-user write ownership during a write canary: the proxy sends each user's writes to one side
//! by the domain flag's sticky bucket of the user id; the stream reads the same flag and tells an
//! owned change (written on the user's side) from a stray one (written on the other side): a
//! conflict, kept in the dead-letter table and not applied.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mysql_async::prelude::Queryable;

use crate::error::CdcError;
use crate::model::mapping::TableMapping;

pub use crate::config::{OwnershipConfig, Side};

/// The flags as last read, and the decisions made from them.
pub struct Ownership {
    config: OwnershipConfig,
    pool: mysql_async::Pool,
    /// Every flag a table's owners follow (its `owner_flag`, else `[ownership].flag`).
    flags: Vec<String>,
    read: ArcSwap<HashMap<String, Arc<flags::Flag>>>,
    /// When the flags were last read.
    read_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The flags are read again before judging changes when older than this: a change of the split
/// is seen within it even when no write looks stray.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

impl Ownership {
    pub fn new(config: OwnershipConfig, tables: &[TableMapping]) -> Result<Self, CdcError> {
        let opts = mysql_async::Opts::from_url(&config.flags_url)
            .map_err(|e| CdcError::Config(format!("ownership.flags_url: {e}")))?;
        let mut flags: Vec<String> = tables
            .iter()
            .filter(|t| t.owner_key.is_some())
            .filter_map(|t| t.owner_flag.clone().or_else(|| config.flag.clone()))
            .collect();
        flags.sort();
        flags.dedup();
        Ok(Self {
            config,
            pool: mysql_async::Pool::new(opts),
            flags,
            read: ArcSwap::from_pointee(HashMap::new()),
            read_at: std::sync::Mutex::new(None),
        })
    }

    /// The flag that splits `table`'s users.
    pub fn flag_of<'a>(&'a self, table: &'a TableMapping) -> Option<&'a str> {
        table.owner_flag.as_deref().or(self.config.flag.as_deref())
    }

    /// Reads the flags again (a missing flag, table or database: everyone on the monolith,
    /// as the proxy routes an unknown flag).
    pub async fn refresh(&self) -> Result<(), CdcError> {
        let missing = |e: &mysql_async::Error| matches!(e, mysql_async::Error::Server(s) if s.code == 1146 || s.code == 1049);
        let mut c = match self.pool.get_conn().await {
            Ok(c) => c,
            Err(e) if missing(&e) => {
                self.read.store(Arc::new(HashMap::new()));
                *self.read_at.lock().expect("ownership lock") = Some(std::time::Instant::now());
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let mut read = HashMap::new();
        for key in &self.flags {
            let row: Option<(String, u64)> = match c
                .exec_first(
                    format!(
                        "SELECT definition, version FROM `{}` WHERE flag_key = ?",
                        self.config.flag_table
                    ),
                    (key,),
                )
                .await
            {
                Err(e) if missing(&e) => None,
                other => other?,
            };
            if let Some((definition, version)) = row {
                let mut f = flags::Flag::from_json(key, &definition)
                    .map_err(|e| CdcError::Config(format!("flag {key}: {e}")))?;
                f.version = version;
                read.insert(key.clone(), Arc::new(f));
            }
        }
        self.read.store(Arc::new(read));
        *self.read_at.lock().expect("ownership lock") = Some(std::time::Instant::now());
        Ok(())
    }

    /// Whether the flags were read longer than [`REFRESH_EVERY`] ago.
    pub fn stale(&self) -> bool {
        self.read_at
            .lock()
            .expect("ownership lock")
            .is_none_or(|at| at.elapsed() > REFRESH_EVERY)
    }

    /// Which side owns `user`'s writes by `flag` as last read, while a write canary splits
    /// them: the service when the user's bucket says `service-writes`, else the monolith. Outside
    /// a write canary one side owns every write and `None` is answered: each change is applied
    /// under the stream's usual conflict rule.
    pub fn owner_of(&self, flag: &str, user: &str) -> Option<Side> {
        let read = self.read.load();
        let flag = read.get(flag)?;
        // A switched-off flag reads as `monolith`.
        if !matches!(
            flags::RouteMode::of(flag),
            Some(flags::RouteMode::WriteCanary { .. })
        ) {
            return None;
        }
        let e = flags::evaluate(flag, &flags::Context::new(user));
        Some(match e.value.and_then(|v| v.as_str()) {
            Some("service-writes") => Side::Service,
            _ => Side::Monolith,
        })
    }

    /// Whether a change of `user`'s row, split by `flag`, read from this stream's source is a
    /// stray write (a write canary gives the user to the other side).
    pub fn is_stray(&self, flag: &str, user: &str) -> bool {
        self.owner_of(flag, user)
            .is_some_and(|owner| owner != self.config.source_side)
    }
}

/// The user key of a row image's owner column, as the proxy buckets it (a number in decimal).
pub fn user_key(row: &serde_json::Map<String, serde_json::Value>, column: &str) -> Option<String> {
    match row.get(column)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

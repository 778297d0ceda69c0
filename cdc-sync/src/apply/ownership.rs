//! Per-user write ownership during a write canary: the proxy sends each user's writes to one side
//! by the domain flag's sticky bucket of the user id; the stream reads the same flag and tells an
//! owned change (written on the user's side) from a stray one (written on the other side): a
//! conflict, kept in the dead-letter table and not applied.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use mysql_async::prelude::Queryable;

use crate::error::CdcError;

pub use crate::config::{OwnershipConfig, Side};

/// The flag as last read, and the decisions made from it.
pub struct Ownership {
    config: OwnershipConfig,
    pool: mysql_async::Pool,
    flag: ArcSwapOption<flags::Flag>,
}

impl Ownership {
    pub fn new(config: OwnershipConfig) -> Result<Self, CdcError> {
        let opts = mysql_async::Opts::from_url(&config.flags_url)
            .map_err(|e| CdcError::Config(format!("ownership.flags_url: {e}")))?;
        Ok(Self {
            config,
            pool: mysql_async::Pool::new(opts),
            flag: ArcSwapOption::empty(),
        })
    }

    /// Reads the flag again (a missing flag: everyone on the monolith).
    pub async fn refresh(&self) -> Result<(), CdcError> {
        let mut c = self.pool.get_conn().await?;
        let row: Option<(String, u64)> = c
            .exec_first(
                format!(
                    "SELECT definition, version FROM `{}` WHERE flag_key = ?",
                    self.config.flag_table
                ),
                (&self.config.flag,),
            )
            .await?;
        let flag = match row {
            None => None,
            Some((definition, version)) => {
                let mut f = flags::Flag::from_json(&self.config.flag, &definition)
                    .map_err(|e| CdcError::Config(format!("flag {}: {e}", self.config.flag)))?;
                f.version = version;
                Some(Arc::new(f))
            }
        };
        self.flag.store(flag);
        Ok(())
    }

    /// Where `user`'s writes go, by the flag as last read.
    pub fn owner_of(&self, user: &str) -> Side {
        let flag = self.flag.load();
        let Some(flag) = flag.as_ref() else {
            return Side::Monolith;
        };
        let e = flags::evaluate(flag, &flags::Context::new(user));
        match e.value.and_then(|v| v.as_str()) {
            Some("service") => Side::Service,
            _ => Side::Monolith,
        }
    }

    /// Whether a change of `user`'s row read from this stream's source is a stray write.
    pub fn is_stray(&self, user: &str) -> bool {
        self.owner_of(user) != self.config.source_side
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

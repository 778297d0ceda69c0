//! Formats of the public API that every side must print the same: timestamps (RFC 3339, UTC,
//! milliseconds) and `?page=&per_page=` pagination.

use chrono::{NaiveDateTime, SecondsFormat};
use serde::Deserialize;

use crate::error::{ApiError, Validator};

/// A DATETIME (stored in UTC) as RFC 3339 with milliseconds: `2026-11-25T15:44:22.123Z`.
pub fn timestamp(dt: NaiveDateTime) -> String {
    dt.and_utc().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `?page=&per_page=` with defaults 1 and 20, per_page at most 100.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

impl PageQuery {
    /// Validated (page, per_page, offset).
    pub fn resolve(&self) -> Result<(u32, u32, u64), ApiError> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(20);
        Validator::default()
            .check(
                (1..=1_000_000).contains(&page),
                "page",
                "must be between 1 and 1000000",
            )
            .check(
                (1..=100).contains(&per_page),
                "per_page",
                "must be between 1 and 100",
            )
            .finish()?;
        Ok((page, per_page, u64::from(page - 1) * u64::from(per_page)))
    }
}

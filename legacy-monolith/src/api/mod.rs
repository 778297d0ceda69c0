//! The public JSON API, one module per domain the services will take over: users, products
//! (with inventory), orders (with payments) and notifications. The handlers, SQL, field rules and
//! JSON shaping, extractors and error body are the monolith's own.

pub mod extract;
pub mod notifications;
pub mod orders;
pub mod products;
pub mod users;

/// `column` as RFC 3339 text with milliseconds, UTC (columns hold UTC), formatted by the
/// database the way the shop's API has always shown times; NULL stays NULL.
pub fn iso_time_sql(column: &str) -> String {
    format!(
        "CONCAT(DATE_FORMAT({column}, '%Y-%m-%dT%H:%i:%s.'), LPAD(MICROSECOND({column}) DIV 1000, 3, '0'), 'Z')"
    )
}

/// `?page=&per_page=` of the shop's list endpoints: page 1 and 20 a page unless asked,
/// at most 100 a page.
#[derive(Debug, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

impl Paging {
    /// (page, per_page, rows to skip), or 422 naming the bad parameter.
    pub fn window(&self) -> Result<(u32, u32, u64), crate::error::ApiError> {
        let (page, per_page) = (self.page.unwrap_or(1), self.per_page.unwrap_or(20));
        crate::error::Validator::default()
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
        Ok((page, per_page, (u64::from(page) - 1) * u64::from(per_page)))
    }
}

//! Database access of a service: the connection pool (UTC sessions), creating its database, and
//! the MariaDB error codes the API turns into client errors or retries.

use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

/// A pool of at most `max` connections to `url`.
pub fn pool(url: &str, max: usize) -> Result<Pool, mysql_async::Error> {
    pool_with_ids(url, max, 1, 1)
}

/// A pool whose sessions number new AUTO_INCREMENT rows `offset`, `offset + step`, …: two
/// sides that both insert while cdc-sync mirrors them never pick the same id.
pub fn pool_with_ids(
    url: &str,
    max: usize,
    step: u16,
    offset: u16,
) -> Result<Pool, mysql_async::Error> {
    let opts = Opts::from_url(url)?;
    let constraints = PoolConstraints::new(0, max.max(1)).expect("0 <= max");
    // With a lower bound of 0, mysql_async keeps an idle connection only when it has an inactive
    // TTL: without one, every connection handed back is closed, and every query pays a new
    // connection, its init statements and its prepares (measured: ~1,200 connections/s at
    // 300 req/s). Idle connections now stay up to `max` and close after a minute unused. A
    // reused connection is not reset: a reset would drop the session settings made by `init`
    // (UTC time zone, id step and offset).
    let pool_opts = PoolOpts::default()
        .with_constraints(constraints)
        .with_reset_connection(false)
        .with_inactive_connection_ttl(std::time::Duration::from_secs(60))
        .with_ttl_check_interval(std::time::Duration::from_secs(30));
    let opts = OptsBuilder::from_opts(opts)
        .pool_opts(pool_opts)
        .stmt_cache_size(256)
        // DATETIME columns hold UTC; the API prints them with a `Z`.
        .init(vec![format!(
            "SET time_zone = '+00:00', auto_increment_increment = {step}, auto_increment_offset = {offset}"
        )]);
    Ok(Pool::new(opts))
}

/// MariaDB error code of a server error.
pub fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Deadlock (1213) or lock wait timeout (1205): the transaction can be run again.
pub fn is_retryable(e: &mysql_async::Error) -> bool {
    matches!(server_code(e), Some(1213 | 1205))
}

/// Duplicate key (1062).
pub fn is_duplicate(e: &mysql_async::Error) -> bool {
    server_code(e) == Some(1062)
}

/// Creates the database named in `url` when it does not exist yet.
pub async fn ensure_database(url: &str) -> Result<(), mysql_async::Error> {
    use mysql_async::prelude::Queryable as _;
    let opts = Opts::from_url(url)?;
    let Some(name) = opts.db_name().map(str::to_string) else {
        return Ok(());
    };
    let mut conn =
        mysql_async::Conn::new(OptsBuilder::from_opts(opts).db_name(None::<String>)).await?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        name.replace('`', "``")
    ))
    .await?;
    conn.disconnect().await
}

//! legacy-monolith: a faithful stand-in for the shop's EC2 monolith — one MariaDB schema `shop`
//! for every domain and the public JSON API that the extracted services must keep unchanged.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod money;
pub mod payment;
pub mod seed;
pub mod trace;

pub use app::{AppState, app};
pub use config::Config;

/// Connects, creates the database if needed, runs migrations and returns the application state.
pub async fn prepare(config: Config) -> anyhow::Result<AppState> {
    use anyhow::Context as _;
    db::ensure_database(&config.database_url)
        .await
        .with_context(|| format!("creating the database of {}", config.database_url))?;
    let pool = db::pool_with_ids(
        &config.database_url,
        config.db_pool_max,
        config.id_step,
        config.id_offset,
    )?;
    let ran = db::migrate::run(&pool, db::migrate::MIGRATIONS)
        .await
        .context("running migrations")?;
    tracing::info!(ran, "schema is current");
    Ok(AppState::new(config, pool))
}

//! user-service: the users domain taken out of the monolith — register, login, profiles and
//! tokens — on its own schema, answering the monolith's `/api/users/*` contract unchanged.

pub mod app;
pub mod config;
pub mod keys;

pub use app::{AppState, app};
pub use config::Config;

/// Connects, creates the database if needed, runs migrations, loads the keys and keeps them
/// reloaded; the app state.
pub async fn prepare(config: Config) -> anyhow::Result<AppState> {
    use anyhow::Context as _;
    service_kit::db::ensure_database(&config.database_url)
        .await
        .with_context(|| format!("creating the database of {}", config.database_url))?;
    let pool = service_kit::db::pool_with_ids(
        &config.database_url,
        config.db_pool_max,
        config.id_step,
        config.id_offset,
    )?;
    let ran = service_kit::migrate::run(&pool, app::MIGRATIONS)
        .await
        .context("running migrations")?;
    tracing::info!(ran, "schema is current");
    let keys = keys::KeyStore::open(pool.clone(), config.jwt.clone())
        .await
        .context("loading token keys")?;
    // Every replica follows rotations made by the others.
    keys.spawn_reload();
    Ok(AppState {
        pool,
        keys,
        metrics: service_kit::http::HttpMetrics::new("user_service"),
        config: std::sync::Arc::new(config),
    })
}

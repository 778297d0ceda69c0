//! user-service: the users domain taken out of the monolith — register, login, profiles and
//! tokens — on its own schema, answering the monolith's `/api/users/*` contract unchanged.

pub mod app;
pub mod config;
pub mod keys;

pub use app::{AppState, app};
pub use config::Config;

/// Opens the database (created and migrated if needed), loads the keys and keeps them reloaded
/// (every replica follows rotations made by the others); the app state.
pub async fn prepare(config: Config) -> anyhow::Result<AppState> {
    use anyhow::Context as _;
    if config.jwt.legacy_secret == config::DEV_LEGACY_SECRET {
        tracing::warn!(
            "jwt.legacy_secret is the development default; set USER_SVC_JWT_LEGACY_SECRET in production"
        );
    }
    let pool = config
        .server
        .open_database(app::MIGRATIONS)
        .await
        .with_context(|| format!("opening {}", config.server.database_url))?;
    let keys = keys::KeyStore::open(pool.clone(), config.jwt.clone())
        .await
        .context("loading token keys")?;
    keys.spawn_reload();
    Ok(AppState {
        pool,
        keys,
        metrics: service_kit::http::HttpMetrics::new("user_service"),
        config: std::sync::Arc::new(config),
    })
}

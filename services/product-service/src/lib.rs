//! product-service: the catalog, search and inventory taken out of the monolith, answering its
//! `/api/products/*` contract unchanged, plus the stock reservations the order saga calls.

pub mod app;
pub mod config;
pub mod reservations;

pub use app::{AppState, app};
pub use config::Config;

/// Opens the database (created and migrated if needed) and starts following the JWKS; the app
/// state.
pub async fn prepare(config: Config) -> anyhow::Result<AppState> {
    use anyhow::Context as _;
    let pool = config
        .server
        .open_database(app::MIGRATIONS)
        .await
        .with_context(|| format!("opening {}", config.server.database_url))?;
    let auth = &config.auth;
    let tokens = service_kit::jwks::JwksVerifier::new(
        service_kit::jwt::Audience {
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            ttl_secs: 0,
        },
        &auth.legacy_secret,
        (!auth.jwks_url.is_empty()).then(|| auth.jwks_url.clone()),
    );
    tokens.spawn_refresh(std::time::Duration::from_secs(auth.jwks_refresh_secs));
    Ok(AppState {
        pool,
        tokens,
        metrics: service_kit::http::HttpMetrics::new("product_service"),
        config: std::sync::Arc::new(config),
    })
}

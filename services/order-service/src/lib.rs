//! order-service: placing, reading and cancelling orders, taken out of the monolith — the same
//! `/api/orders*` contract, with placement as a persisted saga across product-service and the
//! payment gateway, and domain events in an outbox.

pub mod app;
pub mod config;
pub mod peers;
pub mod saga;

pub use app::{AppState, app};
pub use config::Config;

/// Opens the database (created and migrated if needed), follows the JWKS and starts the saga
/// recovery loop; the app state.
pub async fn prepare(config: Config) -> anyhow::Result<AppState> {
    use anyhow::Context as _;
    let pool = config
        .server
        .open_database(app::MIGRATIONS)
        .await
        .with_context(|| format!("opening {}", config.server.database_url))?;
    let tokens = config.auth.verifier();
    let state = AppState {
        pool,
        tokens,
        peers: peers::Clients::new(config.peers.clone()),
        metrics: app::Metrics::new(),
        config: std::sync::Arc::new(config),
    };
    saga::spawn_recovery(state.clone(), std::time::Duration::from_secs(2));
    Ok(state)
}

//! notification-service: the messages the monolith queued, taken out of it — domain events from
//! the services' outboxes (carried into `inbox` by cdc-sync) become e-mail over SMTP, SMS and
//! push, once per event and channel, with retries, a dead-letter table and per-user preferences.

pub mod app;
pub mod channels;
pub mod config;
pub mod worker;

pub use app::{AppState, app};
pub use config::Config;

/// Opens the database (created and migrated if needed), follows the JWKS and starts the delivery
/// loop; the app state.
pub async fn prepare(config: Config) -> anyhow::Result<AppState> {
    use anyhow::Context as _;
    let pool = config
        .server
        .open_database(app::MIGRATIONS)
        .await
        .with_context(|| format!("opening {}", config.server.database_url))?;
    let tokens = config.auth.verifier();
    let metrics = service_kit::http::HttpMetrics::new("notification_service");
    let messages = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "notification_service_messages_total",
            "Messages by channel and outcome (sent, retry, dead)",
        ),
        &["channel", "outcome"],
    )
    .expect("valid metric");
    metrics.register(&messages);
    worker::Worker {
        pool: pool.clone(),
        channels: channels::Channels::new(&config).map_err(anyhow::Error::msg)?,
        delivery: config.delivery.clone(),
        messages,
    }
    .spawn();
    Ok(AppState {
        pool,
        tokens,
        metrics,
        config: std::sync::Arc::new(config),
    })
}

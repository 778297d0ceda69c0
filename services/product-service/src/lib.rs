//! product-service: the catalog, search and inventory taken out of the monolith, answering its
//! `/api/products/*` contract unchanged, plus the stock reservations the order saga calls.

pub mod app;
pub mod config;
pub mod prices;
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
    if config.internal.token == config::DEV_INTERNAL_TOKEN {
        tracing::warn!(
            "internal.token is the development default; set PRODUCT_SVC_INTERNAL_TOKEN in production"
        );
    }
    let tokens = config.auth.verifier();
    let metrics = service_kit::http::HttpMetrics::new("product_service");
    let escrow_refusals = prometheus::IntCounter::new(
        "product_service_stock_escrow_refusals_total",
        "Reservations refused because this side's escrow share of a product ran out",
    )
    .context("metric")?;
    metrics.register(&escrow_refusals);
    let counts = std::sync::Arc::new(service_kit::products::CountCache::new(
        std::time::Duration::from_millis(config.catalog.count_cache_ms),
    ));
    let search = config.search.enabled.then(|| {
        let index = service_kit::catalog_search::CatalogSearch::new("product_service");
        index.register(&metrics);
        let upkeep = service_kit::catalog_search::Upkeep {
            poll: std::time::Duration::from_millis(config.search.poll_ms),
            lookback: std::time::Duration::from_millis(config.search.lookback_ms),
            reconcile: std::time::Duration::from_secs(config.search.reconcile_secs),
        };
        tokio::spawn(index.clone().maintain(pool.clone(), upkeep));
        index
    });
    Ok(AppState {
        search,
        counts,
        pool,
        tokens,
        metrics,
        config: std::sync::Arc::new(config),
        escrow_refusals,
    })
}

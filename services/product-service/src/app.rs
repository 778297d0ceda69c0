//! product-service's HTTP application: the monolith's `/api/products/*` routes (the shared
//! handlers of service-kit, over this service's schema), the internal reservations API of the
//! order saga, and the health, readiness and metrics endpoints.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use mysql_async::Pool;
use service_kit::extract::VerifyToken;
use service_kit::http::HttpMetrics;
use service_kit::jwks::JwksVerifier;
use service_kit::jwt::Claims;
use service_kit::migrate::Migration;

use crate::config::Config;
use crate::{prices, reservations};

/// product-service's migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "products",
        sql: include_str!("../migrations/0001_products.sql"),
    },
    Migration {
        version: 2,
        name: "reservations",
        sql: include_str!("../migrations/0002_reservations.sql"),
    },
    Migration {
        version: 3,
        name: "stock_escrow",
        sql: include_str!("../migrations/0003_stock_escrow.sql"),
    },
    Migration {
        version: 4,
        name: "stock_escrow_tally",
        sql: include_str!("../migrations/0004_stock_escrow_tally.sql"),
    },
    Migration {
        version: 5,
        name: "catalog_indexes",
        sql: include_str!("../migrations/0005_catalog_indexes.sql"),
    },
    Migration {
        version: 6,
        name: "products_updated_at",
        sql: include_str!("../migrations/0006_products_updated_at.sql"),
    },
];

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub tokens: Arc<JwksVerifier>,
    pub metrics: HttpMetrics,
    pub config: Arc<Config>,
    /// `product_service_stock_escrow_refusals_total`: reservations refused because this side's
    /// escrow share of a product ran out while the other side holds the rest.
    pub escrow_refusals: prometheus::IntCounter,
    /// The catalog listings' totals, reused for `catalog.count_cache_ms`.
    pub counts: Arc<service_kit::products::CountCache>,
    /// The in-memory index answering searches, when `search.enabled`.
    pub search: Option<service_kit::catalog_search::CatalogSearch>,
}

impl VerifyToken for AppState {
    fn verify_token(&self, token: &str) -> Option<Claims> {
        self.tokens.verify(token)
    }
}

impl service_kit::products::ProductsState for AppState {
    fn pool(&self) -> &Pool {
        &self.pool
    }

    fn counts(&self) -> &service_kit::products::CountCache {
        &self.counts
    }

    fn search_index(&self) -> Option<&service_kit::catalog_search::CatalogSearch> {
        self.search.as_ref()
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(service_kit::products::routes())
        .route("/internal/prices", post(prices::prices))
        .route("/internal/reservations", post(reservations::reserve))
        .route("/internal/reservations/{id}", get(reservations::get_one))
        .route(
            "/internal/reservations/{id}/release",
            post(reservations::release),
        )
        .route(
            "/internal/reservations/{id}/commit",
            post(reservations::commit),
        )
        .route(
            "/internal/reservations/{id}/return",
            post(reservations::give_back),
        );
    service_kit::http::finish(
        routes,
        state.clone(),
        state.metrics.clone(),
        state.pool.clone(),
        MIGRATIONS,
        state.config.server.max_body_bytes,
    )
}

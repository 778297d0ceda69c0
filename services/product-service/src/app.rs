//! product-service's HTTP application: the monolith's `/api/products/*` routes (the shared
//! handlers of service-kit, over this service's schema), the internal reservations API of the
//! order saga, and the health, readiness and metrics endpoints.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::{get, post};
use mysql_async::Pool;
use service_kit::extract::VerifyToken;
use service_kit::http::{HttpMetrics, healthz, method_not_allowed, not_found, observe};
use service_kit::jwks::JwksVerifier;
use service_kit::jwt::Claims;
use service_kit::migrate::Migration;

use crate::config::Config;
use crate::reservations;

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
];

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub tokens: Arc<JwksVerifier>,
    pub metrics: HttpMetrics,
    pub config: Arc<Config>,
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
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(service_kit::products::routes())
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
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            observe,
        ))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    service_kit::http::readiness(&state.pool, MIGRATIONS).await
}

async fn metrics(State(state): State<AppState>) -> Response {
    service_kit::http::metrics_response(&state.metrics)
}

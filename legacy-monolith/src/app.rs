//! The monolith's HTTP application: shared state, the router of every public route, health,
//! readiness and metrics endpoints, and the middleware that counts and times each request.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use mysql_async::Pool;

use crate::api;
use crate::auth::Tokens;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::payment::PaymentGateway;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub tokens: Arc<Tokens>,
    pub payments: PaymentGateway,
    pub metrics: Metrics,
    pub config: Arc<Config>,
}

impl AppState {
    /// State for `config` over `pool`.
    pub fn new(config: Config, pool: Pool) -> Self {
        Self {
            pool,
            tokens: Arc::new(Tokens::new(&config.jwt)),
            payments: PaymentGateway::new(config.payment.provider),
            metrics: Metrics::new(),
            config: Arc::new(config),
        }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let routes = Router::new()
        .route("/api/users/register", post(api::users::register))
        .route("/api/users/login", post(api::users::login))
        .route(
            "/api/users/me",
            get(api::users::get_me).put(api::users::update_me),
        )
        .route("/api/users/{id}", get(api::users::get_by_id))
        .route(
            "/api/products",
            get(api::products::list).post(api::products::create),
        )
        .route(
            "/api/products/{id}",
            get(api::products::get_one).put(api::products::update),
        )
        .route(
            "/api/products/{id}/inventory",
            get(api::products::inventory),
        )
        .route(
            "/api/products/{id}/inventory/adjust",
            post(api::products::adjust_inventory),
        )
        .route(
            "/api/orders",
            get(api::orders::list_own).post(api::orders::place),
        )
        .route("/api/orders/{id}", get(api::orders::get_one))
        .route("/api/orders/{id}/cancel", post(api::orders::cancel))
        .route("/api/notifications", get(api::notifications::list_own));
    service_kit::http::finish(
        routes,
        state.clone(),
        state.metrics.http.clone(),
        state.pool.clone(),
        crate::db::migrate::MIGRATIONS,
        body_limit,
    )
}

impl service_kit::extract::VerifyToken for AppState {
    fn verify_token(&self, token: &str) -> Option<service_kit::jwt::Claims> {
        self.tokens.verify(token)
    }
}

//! The monolith's HTTP application: shared state, the router of every public route, health,
//! readiness and metrics endpoints, its own answers to unknown routes and methods, and the
//! middleware (generic plumbing from service-kit) that counts and times each request.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use mysql_async::Pool;

use crate::api;
use crate::auth::Tokens;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::payment::PaymentGateway;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    /// Slots for API requests served at once (`max_in_flight`).
    pub slots: Arc<tokio::sync::Semaphore>,
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
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
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
        .route("/api/notifications", get(api::notifications::list_own))
        .layer(axum::middleware::from_fn_with_state(state.clone(), admit));
    let metrics = state.metrics.http.clone();
    let exposed = metrics.clone();
    let pool = state.pool.clone();
    routes
        .route("/healthz", get(service_kit::http::healthz))
        .route(
            "/readyz",
            get(move || {
                let pool = pool.clone();
                async move {
                    service_kit::http::readiness(&pool, crate::db::migrate::MIGRATIONS).await
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = exposed.clone();
                async move { service_kit::http::metrics_response(&metrics) }
            }),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            service_kit::http::observe,
        ))
        .with_state(state)
}

/// Lets an API request in once a slot is free; one that waited `queue_ms` gets 503 `overloaded`
/// (health, readiness and metrics are not held back).
async fn admit(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let wait = std::time::Duration::from_millis(state.config.queue_ms);
    match tokio::time::timeout(wait, state.slots.clone().acquire_owned()).await {
        Ok(Ok(slot)) => {
            let response = next.run(request).await;
            drop(slot);
            response
        }
        _ => {
            state.metrics.shed.inc();
            let mut response = ApiError::Overloaded.into_response();
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            response
        }
    }
}

/// Any path the monolith does not serve: 404 in its error body.
async fn unknown_route() -> ApiError {
    ApiError::NotFound("route")
}

/// A served path asked with another method: 405 in its error body.
async fn wrong_method() -> Response {
    let mut response =
        ApiError::BadRequest("method not allowed on this route".into()).into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

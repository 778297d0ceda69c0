//! The monolith's HTTP application: shared state, the router of every public route, health,
//! readiness and metrics endpoints, and the middleware that counts and times each request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
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
    Router::new()
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
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match crate::db::migrate::is_current(&state.pool, crate::db::migrate::MIGRATIONS).await {
        Ok(true) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "migrations pending"})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "database unreachable", "error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

async fn method_not_allowed() -> Response {
    let mut r = ApiError::BadRequest("method not allowed on this route".into()).into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// Counts and times every request by its route template (never by raw path: bounded labels).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    let status = response.status();
    let elapsed = started.elapsed();
    state
        .metrics
        .requests
        .with_label_values(&[method.as_str(), &route, status.as_str()])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[method.as_str(), &route])
        .observe(elapsed.as_secs_f64());
    if status.is_server_error() {
        tracing::warn!(%method, %route, status = status.as_u16(), ms = elapsed.as_millis() as u64, "request failed");
    } else {
        tracing::debug!(%method, %route, status = status.as_u16(), ms = elapsed.as_millis() as u64, "request");
    }
    response
}

//! HTTP plumbing every shop server shares: request metrics by route template, `/healthz`,
//! `/readyz` (database reachable, migrations done), `/metrics`, JSON 404/405 answers, JSON logs and
//! a graceful shutdown on SIGTERM or Ctrl-C.

use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mysql_async::Pool;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use serde::Deserialize;

use crate::error::ApiError;
use crate::migrate::Migration;

/// A server's metrics registry with the HTTP request counters and latency histograms.
#[derive(Clone)]
pub struct HttpMetrics {
    pub registry: Registry,
    /// `<prefix>_http_requests_total{method,route,status}`.
    pub requests: IntCounterVec,
    /// `<prefix>_http_request_duration_seconds{method,route}`.
    pub latency: HistogramVec,
}

impl HttpMetrics {
    /// Registers the HTTP metrics under `prefix` (`shop`, `user_service`, …).
    pub fn new(prefix: &str) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_http_requests_total"),
                "HTTP requests served",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                format!("{prefix}_http_request_duration_seconds"),
                "HTTP request latency",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5,
            ]),
            &["method", "route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        Self {
            registry,
            requests,
            latency,
        }
    }

    /// Registers another collector (business counters) in the same registry.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: &C) {
        self.registry
            .register(Box::new(c.clone()))
            .expect("registered once");
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// Middleware: counts and times every request by its route template (bounded labels).
pub async fn observe(State(metrics): State<HttpMetrics>, req: Request, next: Next) -> Response {
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
    metrics
        .requests
        .with_label_values(&[method.as_str(), &route, status.as_str()])
        .inc();
    metrics
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

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `/readyz` body: 200 when the database answers and every migration ran, else 503.
pub async fn readiness(pool: &Pool, migrations: &[Migration]) -> Response {
    match crate::migrate::is_current(pool, migrations).await {
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

/// `/metrics` body.
pub fn metrics_response(metrics: &HttpMetrics) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// Fallback: an unknown route, in the shop's error format.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

/// A known route with another method.
pub async fn method_not_allowed() -> Response {
    let mut r = ApiError::BadRequest("method not allowed on this route".into()).into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON unless stderr is a terminal.
    #[default]
    Auto,
    Json,
    Pretty,
}

/// Logs to stderr, JSON lines by default; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Serves `app` on `listen` until SIGTERM or Ctrl-C, finishing in-flight requests.
pub async fn serve(
    listen: std::net::SocketAddr,
    name: &str,
    app: axum::Router,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "{name} listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes a server's router with what every shop server has: `/healthz`, `/readyz` (database
/// reachable, `migrations` applied), `/metrics`, JSON 404/405 answers, the body limit and the
/// request metrics.
pub fn finish<S: Clone + Send + Sync + 'static>(
    routes: axum::Router<S>,
    state: S,
    metrics: HttpMetrics,
    pool: Pool,
    migrations: &'static [Migration],
    max_body_bytes: usize,
) -> axum::Router {
    let exposed = metrics.clone();
    routes
        .route("/healthz", axum::routing::get(healthz))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let pool = pool.clone();
                async move { readiness(&pool, migrations).await }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = exposed.clone();
                async move { metrics_response(&m) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(metrics, observe))
        .with_state(state)
}

//! The admin API on its own port: `/healthz`, `/readyz`, `/metrics`, and `/admin/…` to list
//! routes and reload config and flags. Changes need `Authorization: Bearer <admin_token>` when a
//! token is configured (compared in constant time).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::control::Control;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(control: &Control, headers: &HeaderMap) -> bool {
    let Some(token) = control.boot.admin_token.as_deref() else {
        return true;
    };
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The admin router.
pub fn app(control: Arc<Control>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/routes", get(routes))
        .route("/admin/status", get(status))
        .route("/admin/reload", post(reload))
        .with_state(control)
}

async fn readyz(State(control): State<Arc<Control>>) -> Response {
    let table = control.table.load();
    if table.monolith.any_healthy() {
        Json(json!({"status": "ready", "config_version": table.version})).into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no monolith backend is healthy",
        )
    }
}

async fn metrics(State(control): State<Arc<Control>>) -> impl IntoResponse {
    control.refresh_gauges();
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        control.metrics.render(),
    )
}

async fn routes(State(control): State<Arc<Control>>) -> Json<serde_json::Value> {
    let table = control.table.load();
    let flags = control.flags.snapshot();
    let routes: Vec<_> = table
        .routes
        .iter()
        .map(|r| {
            let flag = flags.get(&r.flag);
            json!({
                "name": r.name,
                "flag": r.flag,
                "mode": flag.and_then(|f| flags::RouteMode::of(f)).unwrap_or(flags::RouteMode::Monolith),
                "flag_defined": flag.is_some(),
                "service": r.service.name,
                "service_healthy": r.service.any_healthy(),
                "monolith_healthy": r.monolith.any_healthy(),
                "circuit": format!("{:?}", r.breaker.state()).to_lowercase(),
                "shadow_noise": r.noise.snapshot(),
            })
        })
        .collect();
    Json(json!({"config_version": table.version, "routes": routes}))
}

async fn status(State(control): State<Arc<Control>>) -> Json<serde_json::Value> {
    let flags = control.flags.status();
    Json(json!({
        "config_version": control.table.load().version,
        "config_error": control.last_error(),
        "flags_generation": flags.generation,
        "flags_error": flags.last_error,
    }))
}

async fn reload(State(control): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if !authorized(&control, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required",
        );
    }
    let config = control.reload_config();
    let flags = control.reload_flags().await;
    match (config, flags) {
        (Ok(version), Ok(())) => {
            Json(json!({"config_version": version, "flags": "reloaded"})).into_response()
        }
        (Err(e), _) => error(
            StatusCode::BAD_REQUEST,
            "invalid_config",
            &format!("{e}; the previous config keeps serving"),
        ),
        (_, Err(e)) => error(
            StatusCode::BAD_REQUEST,
            "invalid_flags",
            &format!("{e}; the previous flags keep serving"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}

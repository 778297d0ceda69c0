//! The admin API on its own port: `/healthz`, `/readyz`, `/metrics`, the control page at `/ui`,
//! and `/admin/…` for release managers — routes with live figures, mode changes, the kill switch,
//! the audit log, reloads. Bearer tokens carry a role (viewer, operator), compared in constant time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use flags::RouteMode;
use flags::source::mysql::ChangeNote;
use serde::Deserialize;
use serde_json::json;

use crate::config::Role;
use crate::control::Control;
use crate::release::ReleaseError;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is calling, from their token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The caller behind `headers`: `Ok(None)` without a token, `Err` for a token nobody holds.
/// Without configured tokens (loopback only) everyone is the operator `local`.
fn caller(control: &Control, headers: &HeaderMap) -> Result<Option<Caller>, ()> {
    let boot = &control.boot;
    if boot.control.tokens.is_empty() && boot.admin_token.is_none() {
        return Ok(Some(Caller {
            name: "local".into(),
            role: Role::Operator,
        }));
    }
    let Some(given) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return Ok(None);
    };
    // Every token is compared, so timing tells nothing about which one came close.
    let mut found = None;
    for t in &boot.control.tokens {
        if constant_time_eq(given.as_bytes(), t.token.as_bytes()) {
            found = Some(Caller {
                name: t.name.clone(),
                role: t.role,
            });
        }
    }
    if let Some(t) = &boot.admin_token
        && constant_time_eq(given.as_bytes(), t.as_bytes())
    {
        found = Some(Caller {
            name: "admin".into(),
            role: Role::Operator,
        });
    }
    found.map(Some).ok_or(())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// A refused admin request: status, machine-readable code, message.
struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1, &self.2)
    }
}

impl From<ReleaseError> for Refusal {
    fn from(e: ReleaseError) -> Self {
        let (status, code) = match &e {
            ReleaseError::UnknownRoute(_) => (StatusCode::NOT_FOUND, "unknown_route"),
            ReleaseError::UnknownService(_) => (StatusCode::NOT_FOUND, "unknown_service"),
            ReleaseError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            ReleaseError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ReleaseError::ReadOnly => (StatusCode::CONFLICT, "read_only_flags"),
            ReleaseError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "flag_store_unavailable"),
        };
        Refusal(status, code, e.to_string())
    }
}

impl IntoResponse for ReleaseError {
    fn into_response(self) -> Response {
        Refusal::from(self).into_response()
    }
}

/// The admin router.
pub fn app(control: Arc<Control>) -> Router {
    let api = Router::new()
        .route("/admin/whoami", get(whoami))
        .route("/admin/routes", get(routes))
        .route("/admin/routes/{name}", get(route))
        .route("/admin/routes/{name}/mode", put(set_mode))
        .route(
            "/admin/routes/{name}/retire-monolith",
            post(retire_monolith),
        )
        .route("/admin/services/{service}/kill", post(kill))
        .route("/admin/audit", get(audit))
        .route("/admin/status", get(status))
        .route("/admin/reload", post(reload))
        .route(
            "/admin/holds/{flag}",
            get(hold_status).post(hold).delete(release_hold),
        )
        .route("/admin/phases", get(phases))
        .route("/admin/phases/{*rest}", get(phases).post(phases))
        .layer(axum::middleware::from_fn_with_state(
            control.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui",
            get(|| async { Html(include_str!("control_page.html")) }),
        )
        .merge(api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such admin path") })
        .with_state(control)
}

/// Resolves the caller, refuses unknown tokens and writes by viewers, and logs every request.
async fn authenticate(
    State(control): State<Arc<Control>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let who = caller(&control, req.headers());
    let (name, role, response) = match who {
        Ok(Some(c)) => {
            let write = method != axum::http::Method::GET && method != axum::http::Method::HEAD;
            if write && c.role < Role::Operator {
                let r = error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!("{} is a viewer: changes need an operator token", c.name),
                );
                (c.name, "viewer", r)
            } else {
                let (name, role) = (
                    c.name.clone(),
                    if c.role == Role::Operator {
                        "operator"
                    } else {
                        "viewer"
                    },
                );
                req.extensions_mut().insert(c);
                (name, role, next.run(req).await)
            }
        }
        Ok(None) => (
            "-".into(),
            "none",
            error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <token>",
            ),
        ),
        Err(()) => (
            "-".into(),
            "none",
            error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token is not valid",
            ),
        ),
    };
    let status = response.status().as_u16();
    control
        .metrics
        .admin_requests
        .with_label_values(&[role, &format!("{}xx", status / 100)])
        .inc();
    tracing::info!(
        %method,
        path,
        actor = %name,
        role,
        status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "admin request"
    );
    response
}

/// Where the request came from, for the audit log: `api` unless the client says `cli` or `page`.
fn request_source(headers: &HeaderMap) -> Result<String, Refusal> {
    match headers
        .get("x-strangler-source")
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None => Ok("api".into()),
        Some(s @ ("api" | "cli" | "page")) => Ok(s.into()),
        Some(other) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "invalid_source",
            format!("x-strangler-source must be api, cli or page, not {other:?}"),
        )),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let message = if at == "." {
            e.inner().to_string()
        } else {
            format!("{at}: {}", e.inner())
        };
        Refusal(StatusCode::BAD_REQUEST, "invalid_body", message)
    })
}

fn required_reason(reason: &str) -> Result<String, Refusal> {
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > 1000 {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "reason_required",
            "every change needs a reason (1 to 1000 characters)".into(),
        ));
    }
    Ok(reason.to_string())
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

async fn whoami(Extension(caller): Extension<Caller>) -> Json<serde_json::Value> {
    Json(json!({"name": caller.name, "role": caller.role}))
}

async fn routes(State(control): State<Arc<Control>>) -> Json<serde_json::Value> {
    Json(json!({
        "config_version": control.table.load().version,
        "flags_generation": control.flags.status().generation,
        "writable": control.writer.get().is_some(),
        "routes": control.route_views(),
    }))
}

async fn route(
    State(control): State<Arc<Control>>,
    Path(name): Path<String>,
) -> Result<Json<crate::release::RouteView>, ReleaseError> {
    control.route_view(&name).map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMode {
    mode: String,
    #[serde(default)]
    percent: Option<f64>,
    reason: String,
    /// The flag version the caller saw; the change is refused if it moved.
    #[serde(default)]
    expected_version: Option<u64>,
}

async fn set_mode(
    State(control): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        let source = request_source(&headers)?;
        let body: SetMode = parse_json(&body)?;
        let reason = required_reason(&body.reason)?;
        let mode = RouteMode::parse(&body.mode, body.percent)
            .map_err(|e| Refusal(StatusCode::BAD_REQUEST, "invalid_mode", e))?;
        let note = ChangeNote {
            actor: caller.name.clone(),
            source,
            action: "set_mode".into(),
            subject: name.clone(),
            reason,
        };
        let change = control
            .set_mode(&name, mode, body.expected_version, note)
            .await?;
        Ok::<_, Refusal>(Json(change))
    }
    .await;
    result.into_response()
}

/// `POST /admin/routes/{name}/retire-monolith`: the route's domain is decommissioned.
async fn retire_monolith(
    State(control): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        let source = request_source(&headers)?;
        let body: Kill = parse_json(&body)?;
        let reason = required_reason(&body.reason)?;
        let note = ChangeNote {
            actor: caller.name.clone(),
            source,
            action: "retire_monolith".into(),
            subject: name.clone(),
            reason,
        };
        let change = control.retire_monolith(&name, note).await?;
        Ok::<_, Refusal>(Json(change))
    }
    .await;
    result.into_response()
}

/// A body that only says why (kill switch, monolith retirement).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Kill {
    reason: String,
}

async fn kill(
    State(control): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        let source = request_source(&headers)?;
        let body: Kill = parse_json(&body)?;
        let reason = required_reason(&body.reason)?;
        let changes = control
            .kill(&service, &caller.name, &source, &reason)
            .await?;
        Ok::<_, Refusal>(Json(json!({"service": service, "changes": changes})))
    }
    .await;
    result.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldRequest {
    /// The hold ends by itself after this many milliseconds (1 to 30000).
    max_ms: u64,
    reason: String,
}

/// The flag must route something on this replica: a typo must not look like a hold.
fn known_flag(control: &Control, flag: &str) -> Result<(), Refusal> {
    if control.table.load().routes.iter().any(|r| r.flag == flag) {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route uses the flag {flag:?}"),
        ))
    }
}

/// `GET /admin/holds/{flag}`: held or not, writes in flight and waiting.
async fn hold_status(State(control): State<Arc<Control>>, Path(flag): Path<String>) -> Response {
    match known_flag(&control, &flag) {
        Ok(()) => Json(json!({"flag": flag, "hold": control.holds.status(&flag)})).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `POST /admin/holds/{flag}`: new writes of the flag's routes wait on this replica until the
/// hold is released or `max_ms` passes (operators).
async fn hold(
    State(control): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(flag): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let result = (|| {
        known_flag(&control, &flag)?;
        let body: HoldRequest = parse_json(&body)?;
        let reason = required_reason(&body.reason)?;
        if !(1..=30_000).contains(&body.max_ms) {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "max_ms must be 1 to 30000".into(),
            ));
        }
        let status = control
            .holds
            .hold(&flag, std::time::Duration::from_millis(body.max_ms));
        tracing::warn!(%flag, actor = %caller.name, %reason, max_ms = body.max_ms, "writes held");
        Ok(Json(json!({"flag": flag, "hold": status})))
    })();
    result.into_response()
}

/// `DELETE /admin/holds/{flag}`: the held writes go on to wherever the flag now routes them.
async fn release_hold(
    State(control): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    Path(flag): Path<String>,
) -> Response {
    match known_flag(&control, &flag) {
        Ok(()) => {
            let status = control.holds.release(&flag);
            tracing::warn!(%flag, actor = %caller.name, "writes released");
            Json(json!({"flag": flag, "hold": status})).into_response()
        }
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    route: Option<String>,
    limit: Option<u32>,
}

async fn audit(
    State(control): State<Arc<Control>>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_query", &e.body_text()),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "limit must be 1 to 10000",
        );
    }
    match control.audit(q.route.as_deref(), limit).await {
        Ok(entries) => Json(json!({"entries": entries})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn status(State(control): State<Arc<Control>>) -> Json<serde_json::Value> {
    let flags = control.flags.status();
    Json(json!({
        "config_version": control.table.load().version,
        "config_error": control.last_error(),
        "flags_generation": flags.generation,
        "flags_error": flags.last_error,
        "flags_writable": control.writer.get().is_some(),
        "launchdarkly": control.launchdarkly.get().map(|ld| json!({
            "initialized": ld.initialized(),
            "stream": ld.stream_status(),
        })),
    }))
}

/// `/admin/phases…`: forwarded to the phase controller with who the caller is (the role was
/// checked here: viewers read, operators move). Its answer comes back as it is.
async fn phases(
    State(control): State<Arc<Control>>,
    Extension(caller): Extension<Caller>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    let Some(base) = control.boot.phases.controller.as_deref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_controller",
            "this proxy has no [phases] controller configured",
        );
    };
    let path = uri.path().strip_prefix("/admin").unwrap_or(uri.path());
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    // A move may verify whole tables first.
    let timeout = if method == axum::http::Method::GET {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(1800)
    };
    let mut req = control
        .http
        .request(
            method,
            format!("{}{path}{query}", base.trim_end_matches('/')),
        )
        .timeout(timeout)
        .header("x-strangler-actor", caller.name.as_str())
        .header(
            "x-strangler-role",
            if caller.role == Role::Operator {
                "operator"
            } else {
                "viewer"
            },
        )
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = &control.boot.phases.token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(b) => (status, [("content-type", "application/json")], b).into_response(),
                Err(e) => error(
                    StatusCode::BAD_GATEWAY,
                    "controller_unavailable",
                    &e.to_string(),
                ),
            }
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            "controller_unavailable",
            &format!("the phase controller at {base} did not answer: {e}"),
        ),
    }
}

async fn reload(State(control): State<Arc<Control>>) -> Response {
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

//! The controller's HTTP API (`strangler serve`), to which the proxies' admin API forwards
//! `/admin/phases…` with the caller it authenticated: every domain's phase, next move, that
//! move's gates measured live and the last moves; one gated move per POST. It also keeps write
//! canaries' stock escrow rebalanced.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::controller::{Caller, Controller, Request, Way};
use crate::error::PhaseError;
use crate::phase::Phase;

/// The API's state: the controller, the token the proxies present, counters.
pub struct Api {
    pub controller: Controller,
    /// Bearer token the proxies present (required unless the API listens on loopback).
    pub token: Option<String>,
    pub canary_steps: Vec<u8>,
    metrics: Metrics,
}

struct Metrics {
    registry: prometheus::Registry,
    moves: prometheus::IntCounterVec,
    rebalanced: prometheus::IntCounterVec,
    upkeep_errors: prometheus::IntCounter,
}

impl Api {
    pub fn new(controller: Controller, token: Option<String>, canary_steps: Vec<u8>) -> Self {
        let registry = prometheus::Registry::new();
        let moves = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "strangler_phase_moves_total",
                "Moves asked of the controller by domain and outcome (moved, refused, failed)",
            ),
            &["domain", "outcome"],
        )
        .expect("metric");
        registry.register(Box::new(moves.clone())).expect("once");
        let rebalanced = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "strangler_escrow_rebalanced_units_total",
                "Stock units a write canary's escrow upkeep moved, by domain and receiving side",
            ),
            &["domain", "to"],
        )
        .expect("metric");
        registry
            .register(Box::new(rebalanced.clone()))
            .expect("once");
        let upkeep_errors = prometheus::IntCounter::new(
            "strangler_escrow_upkeep_errors_total",
            "Escrow upkeep rounds that failed (a database unreachable, …)",
        )
        .expect("metric");
        registry
            .register(Box::new(upkeep_errors.clone()))
            .expect("once");
        Self {
            controller,
            token,
            canary_steps,
            metrics: Metrics {
                registry,
                moves,
                rebalanced,
                upkeep_errors,
            },
        }
    }

    /// Rebalances write canaries' escrow every `rebalance_every_ms` (when it is not 0).
    async fn keep_escrows(self: Arc<Self>) {
        let every = self.controller.config.escrow.rebalance_every_ms;
        if every == 0 {
            return;
        }
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(every)).await;
            match self.controller.rebalance_escrows().await {
                Ok(rounds) => {
                    for (domain, moved) in rounds {
                        let m = &self.metrics.rebalanced;
                        m.with_label_values(&[&domain, "service"])
                            .inc_by(moved.to_service.max(0) as u64);
                        m.with_label_values(&[&domain, "monolith"])
                            .inc_by(moved.to_monolith.max(0) as u64);
                    }
                }
                Err(e) => {
                    self.metrics.upkeep_errors.inc();
                    eprintln!("strangler serve: escrow upkeep: {e}");
                }
            }
        }
    }
}

/// The router.
pub fn app(api: Arc<Api>) -> Router {
    Router::new()
        .route("/phases", get(all))
        .route("/phases/{domain}", get(one))
        .route("/phases/{domain}/plan", get(plan))
        .route("/phases/{domain}/advance", post(advance))
        .route("/phases/{domain}/rollback", post(rollback))
        .route("/flags/{flag}/rollback", post(rollback_flag))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(api)
}

/// Serves the API on `listen` until the process ends.
pub async fn serve(api: Api, listen: SocketAddr) -> std::io::Result<()> {
    if api.token.is_none() && !listen.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "listen {listen} is not loopback: set api_token in the controller config"
        )));
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let api = Arc::new(api);
    tokio::spawn(api.clone().keep_escrows());
    axum::serve(listener, app(api)).await
}

fn failure(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

impl IntoResponse for PhaseError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            PhaseError::Gates { .. } => (StatusCode::CONFLICT, "gates_refused"),
            PhaseError::LeaseHeld { .. } => (StatusCode::CONFLICT, "lease_held"),
            PhaseError::Conflict { .. } | PhaseError::NoChange { .. } => {
                (StatusCode::CONFLICT, "conflict")
            }
            PhaseError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            PhaseError::UnknownDomain { .. } => (StatusCode::NOT_FOUND, "unknown_domain"),
            PhaseError::Action { .. } => (StatusCode::BAD_GATEWAY, "move_failed"),
            PhaseError::Store(_) | PhaseError::Flags(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            _ => (StatusCode::BAD_REQUEST, "invalid"),
        };
        failure(status, code, &self.to_string())
    }
}

/// A request without the proxies' token.
struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        failure(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the controller API takes requests from the proxies' admin API only",
        )
    }
}

/// The caller the proxy vouches for, once its token is checked.
fn caller(api: &Api, headers: &HeaderMap) -> Result<Caller, Unauthorized> {
    if let Some(token) = &api.token {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return Err(Unauthorized);
        }
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Ok(Caller {
        name: header("x-strangler-actor").unwrap_or_else(|| "local".into()),
        role: header("x-strangler-role").unwrap_or_else(|| "operator".into()),
    })
}

async fn view(api: &Api, domain: &str) -> Result<serde_json::Value, PhaseError> {
    let p = api.controller.preview(domain, &api.canary_steps).await?;
    let e = p.state.phase.effect();
    let history = api.controller.store().history(domain, 5).await?;
    let back: Vec<String> = [
        Phase::Monolith,
        Phase::Backfilling,
        Phase::Verified,
        Phase::Shadow,
    ]
    .into_iter()
    .filter(|to| {
        p.state.phase != Phase::Decommissioned
            && !p.state.phase.is_advance(*to)
            && *to != p.state.phase
    })
    .map(|to| to.to_string())
    .collect();
    Ok(json!({
        "domain": domain,
        "phase": p.state.phase,
        "version": p.state.version,
        "changed_at": p.state.changed_at,
        "changed_by": p.state.changed_by,
        "owner": e.owner,
        "replication": e.replication,
        "route_mode": e.route_mode,
        "reads_only": e.reads_only,
        "next": p.next,
        "back": back,
        "gates": p.gates,
        "history": history,
    }))
}

async fn all(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if let Err(r) = caller(&api, &headers) {
        return r.into_response();
    }
    let mut domains = Vec::new();
    for d in &api.controller.decl.domains {
        match view(&api, &d.name).await {
            Ok(v) => domains.push(v),
            Err(e) => return e.into_response(),
        }
    }
    axum::Json(json!({"domains": domains})).into_response()
}

async fn one(
    State(api): State<Arc<Api>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&api, &headers) {
        return r.into_response();
    }
    match view(&api, &domain).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct PlanQuery {
    to: Option<String>,
}

async fn plan(
    State(api): State<Arc<Api>>,
    Path(domain): Path<String>,
    Query(q): Query<PlanQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&api, &headers) {
        return r.into_response();
    }
    let result = async {
        api.controller.decl.domain(&domain)?;
        let to: Phase = q.to.as_deref().unwrap_or("service-primary").parse()?;
        let state = api
            .controller
            .store()
            .states(&[domain.as_str()])
            .await?
            .remove(0);
        let steps = crate::plan::plan(&domain, state.phase, to, &api.canary_steps)?;
        Ok::<_, PhaseError>(
            json!({"domain": domain, "from": state.phase, "to": to, "steps": steps}),
        )
    }
    .await;
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    #[serde(default)]
    to: Option<String>,
    reason: String,
    #[serde(default)]
    force: bool,
}

async fn advance(
    State(api): State<Arc<Api>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    act(&api, &domain, Way::Advance, &headers, &body).await
}

async fn rollback(
    State(api): State<Arc<Api>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    act(&api, &domain, Way::Rollback, &headers, &body).await
}

/// `POST /flags/{flag}/rollback`: the domain moved by `flag` back to the monolith (a proxy's
/// auto-rollback while the service owns writes: the hold-drain-switch instead of a bare flip).
async fn rollback_flag(
    State(api): State<Arc<Api>>,
    Path(flag): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(domain) = api
        .controller
        .decl
        .domains
        .iter()
        .find(|d| d.flag == flag)
        .map(|d| d.name.clone())
    else {
        return failure(
            StatusCode::NOT_FOUND,
            "unknown_flag",
            &format!("no domain is moved by flag {flag}"),
        );
    };
    act(&api, &domain, Way::Rollback, &headers, &body).await
}

async fn act(api: &Api, domain: &str, way: Way, headers: &HeaderMap, body: &[u8]) -> Response {
    let who = match caller(api, headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let body: MoveBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return failure(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!(
                    "body: {e}; expected {{\"reason\": \"…\", \"to\"?: \"phase\", \"force\"?: false}}"
                ),
            );
        }
    };
    let to = match body.to.as_deref().map(str::parse::<Phase>).transpose() {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let canary_steps = if way == Way::Advance {
        api.canary_steps.as_slice()
    } else {
        &[]
    };
    let request = Request {
        domain,
        way,
        to,
        canary_steps,
        reason: &body.reason,
        force: body.force,
        caller: Some(who),
    };
    let result = api.controller.run(&request).await;
    let outcome = match &result {
        Ok(_) => "moved",
        Err(PhaseError::Gates { .. }) => "refused",
        Err(_) => "failed",
    };
    api.metrics
        .moves
        .with_label_values(&[domain, outcome])
        .inc();
    match result {
        Ok(t) => axum::Json(t).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn readyz(State(api): State<Arc<Api>>) -> Response {
    let names: Vec<&str> = api
        .controller
        .decl
        .domains
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    match api.controller.store().states(&names).await {
        Ok(_) => axum::Json(json!({"status": "ready"})).into_response(),
        Err(e) => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let mut out = String::new();
    let encoder = prometheus::TextEncoder::new();
    let _ = encoder.encode_utf8(&api.metrics.registry.gather(), &mut out);
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

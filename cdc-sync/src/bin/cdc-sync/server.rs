//! `cdc-sync stream`: runs the stream with its `/metrics`, `/healthz` and `/readyz` listener and
//! its control API (`GET /status`, `POST /pause`, `POST /resume`) until Ctrl-C or SIGTERM.

use cdc_sync::config::StreamConfig;
use cdc_sync::metrics::Metrics;

pub(crate) async fn stream(
    config: StreamConfig,
    role: cdc_sync::pipeline::Role,
) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .json()
        .with_writer(std::io::stderr)
        .init();
    let metrics = Metrics::new(&config.name);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let control = std::sync::Arc::new(cdc_sync::control::Control::new(&config)?);
    let app = {
        let m = metrics.clone();
        let r = metrics.clone();
        let s = metrics.clone();
        let (c1, c2, c3, c4) = (
            control.clone(),
            control.clone(),
            control.clone(),
            control.clone(),
        );
        let name = config.name.clone();
        // What the stream carries, for a controller checking a write canary's set-up.
        let carries = std::sync::Arc::new(serde_json::json!({
            "ownership": config.ownership.as_ref().map(|o| serde_json::json!({
                "flag": o.flag, "flag_table": o.flag_table, "source_side": o.source_side,
            })),
            "tables": config.tables.iter().map(|t| serde_json::json!({
                "source": t.source, "target": t.target, "owner_key": t.owner_key,
                "owner_flag": t.owner_flag.as_ref().or(config.ownership.as_ref().and_then(|o| o.flag.as_ref())),
                "counters": t.counters,
            })).collect::<Vec<_>>(),
        }));
        axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            // Ready once both databases answered and the stream runs; not while it connects,
            // and not after it stopped.
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let running = r.running.get() == 1 || r.paused.get() == 1;
                    async move {
                        if running {
                            (axum::http::StatusCode::OK, "ready")
                        } else {
                            (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "stream not running",
                            )
                        }
                    }
                }),
            )
            .route(
                "/status",
                axum::routing::get(move || {
                    let (s, c, name, carries) =
                        (s.clone(), c1.clone(), name.clone(), carries.clone());
                    async move { status(&name, &s, &c, &carries).await }
                }),
            )
            .route(
                "/pause",
                axum::routing::post(move |body: axum::Json<ControlRequest>| {
                    let c = c2.clone();
                    async move { set(&c, cdc_sync::control::Desired::Paused, body.0).await }
                }),
            )
            .route(
                "/resume",
                axum::routing::post(move |body: axum::Json<ControlRequest>| {
                    let c = c3.clone();
                    async move { set(&c, cdc_sync::control::Desired::Running, body.0).await }
                }),
            )
            .route(
                "/retire",
                axum::routing::post(move |body: axum::Json<RetireRequest>| {
                    let c = c4.clone();
                    async move { retire(&c, body.0).await }
                }),
            )
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let m = m.clone();
                    async move { m.render() }
                }),
            )
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        let _ = stop_tx.send(true);
    });
    cdc_sync::control::run_controlled(&config, role, metrics, stop_rx).await?;
    Ok(())
}

/// Body of `POST /pause` and `POST /resume`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlRequest {
    actor: String,
    reason: String,
}

/// Body of `POST /retire`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RetireRequest {
    table: String,
    actor: String,
    reason: String,
}

type Answer = (axum::http::StatusCode, axum::Json<serde_json::Value>);

fn failure(status: axum::http::StatusCode, message: String) -> Answer {
    (status, axum::Json(serde_json::json!({"error": message})))
}

/// `GET /status`: what the control row asks, what the stream does, and its lag.
async fn status(
    name: &str,
    metrics: &Metrics,
    control: &cdc_sync::control::Control,
    carries: &serde_json::Value,
) -> Answer {
    match control.state().await {
        Ok(state) => (
            axum::http::StatusCode::OK,
            axum::Json(serde_json::json!({
                "stream": name,
                "desired": state.desired,
                "running": metrics.running.get() == 1,
                "paused": metrics.paused.get() == 1,
                "lag_seconds": metrics.lag_seconds.get(),
                "changed_by": state.changed_by,
                "reason": state.reason,
                "changed_at": state.changed_at,
                "retired": state.retired,
                "ownership": carries["ownership"],
                "tables": carries["tables"],
            })),
        ),
        Err(e) => failure(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `POST /pause` and `/resume`: sets the control row; the stream follows within a poll.
async fn set(
    control: &cdc_sync::control::Control,
    desired: cdc_sync::control::Desired,
    request: ControlRequest,
) -> Answer {
    if request.actor.trim().is_empty() || request.reason.trim().is_empty() {
        return failure(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "`actor` and `reason` must say who and why".into(),
        );
    }
    match control.set(desired, &request.actor, &request.reason).await {
        Ok(()) => (
            axum::http::StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"desired": desired})),
        ),
        Err(e) => failure(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `POST /retire`: retires a source table from the stream for good; the stream restarts at its
/// committed offset without it within a poll.
async fn retire(control: &cdc_sync::control::Control, request: RetireRequest) -> Answer {
    if request.actor.trim().is_empty() || request.reason.trim().is_empty() {
        return failure(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "`actor` and `reason` must say who and why".into(),
        );
    }
    match control
        .retire(&request.table, &request.actor, &request.reason)
        .await
    {
        Ok(()) => match control.state().await {
            Ok(state) => (
                axum::http::StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({"retired": state.retired})),
            ),
            Err(e) => failure(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        Err(cdc_sync::error::CdcError::Config(m)) => {
            failure(axum::http::StatusCode::UNPROCESSABLE_ENTITY, m)
        }
        Err(e) => failure(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

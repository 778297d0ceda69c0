//! `cdc-sync stream`: runs the stream with its `/metrics`, `/healthz` and `/readyz` listener
//! until Ctrl-C or SIGTERM.

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
    let app = {
        let m = metrics.clone();
        let r = metrics.clone();
        axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            // Ready once both databases answered and the stream runs; not while it connects,
            // and not after it stopped.
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let running = r.running.get() == 1;
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
    cdc_sync::pipeline::run_stream(&config, role, metrics, stop_rx).await?;
    Ok(())
}

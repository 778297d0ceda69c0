//! The `strangler-proxy` binary: loads and checks the config, then runs the Pingora proxy with a
//! background service for the admin API, config and flag watchers, health checks and shadowing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use clap::Parser;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use strangler_proxy::config::ProxyConfig;
use strangler_proxy::control::Control;
use strangler_proxy::metrics::Metrics;
use strangler_proxy::proxy::StranglerProxy;
use strangler_proxy::shadow::{ShadowJob, ShadowWorker};

/// mimalloc: bare Pingora needs ~92k instructions per request with glibc malloc and ~80k with
/// mimalloc (`bench/proxy-instructions.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "strangler-proxy",
    version,
    about = "Routes each request to the monolith or its new service by flag"
)]
struct Cli {
    /// The proxy's TOML config file.
    #[arg(long, short = 'c', env = "STRANGLER_PROXY_CONFIG")]
    config: PathBuf,
    /// Validate the config (and the flags it names) and exit.
    #[arg(long)]
    check_config: bool,
    /// Take over the listening sockets of a running proxy (zero-downtime upgrade; then send
    /// SIGQUIT to the old process).
    #[arg(long, short = 'u')]
    upgrade: bool,
    /// Run in the background.
    #[arg(long, short = 'd')]
    daemon: bool,
}

/// The admin API, watchers, health checks and shadow worker, inside Pingora's lifecycle.
struct SideTasks {
    control: Arc<Control>,
    shadow_rx: Mutex<Option<tokio::sync::mpsc::Receiver<ShadowJob>>>,
}

#[async_trait]
impl BackgroundService for SideTasks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let control = self.control.clone();
        let groups: Vec<_> = control.table.load().groups.values().cloned().collect();
        strangler_proxy::upstream::spawn_health_checks(&groups, &control.metrics);
        control.watch_config();
        if let Err(e) = control.watch_flags().await {
            tracing::error!(error = %e, "flag watcher did not start");
        }
        control.watch_slos(std::time::Duration::from_millis(500));
        strangler_proxy::jwks::JwksKeys::refresh_forever(control.clone());
        if let Some(rx) = self.shadow_rx.lock().expect("shadow rx").take() {
            let shadow = &control.table.load().config.shadow;
            let worker = ShadowWorker::new(
                control.metrics.clone(),
                std::time::Duration::from_millis(shadow.timeout_ms),
                shadow.compare_headers.clone(),
                shadow.log_samples_per_minute,
            );
            tokio::spawn(worker.run(rx, shadow.max_in_flight));
        }
        let admin_listen = control.boot.admin_listen;
        let app = strangler_proxy::admin::app(control.clone());
        tokio::spawn(async move {
            // During an upgrade the old process still holds the admin port for a moment.
            let listener = loop {
                match tokio::net::TcpListener::bind(admin_listen).await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!(%admin_listen, error = %e, "admin port busy, retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            };
            tracing::info!(%admin_listen, "admin API listening");
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
        let _ = shutdown.changed().await;
    }
}

fn main() {
    let cli = Cli::parse();
    let config = match ProxyConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let metrics = Metrics::new();
    let control = match Control::new(cli.config.clone(), config.clone(), metrics) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("error: {}: {e}", cli.config.display());
            std::process::exit(2);
        }
    };
    if cli.check_config {
        let table = control.table.load();
        println!(
            "config OK: {} routes, {} upstreams, {} flags; listen {} admin {}",
            table.routes.len(),
            table.groups.len(),
            control.flags.snapshot().flags.len(),
            config.listen,
            config.admin_listen
        );
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .json()
        .with_writer(std::io::stderr)
        .init();

    let conf = ServerConf {
        threads: config.threads,
        upgrade_sock: config.upgrade_sock.display().to_string(),
        pid_file: format!("{}.pid", config.upgrade_sock.display()),
        max_retries: 3,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let (shadow_tx, shadow_rx) = tokio::sync::mpsc::channel(1024);
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        StranglerProxy {
            control: control.clone(),
            shadow_tx,
        },
    );
    proxy.add_tcp(&config.listen.to_string());
    server.add_service(proxy);
    server.add_service(background_service(
        "strangler side tasks",
        SideTasks {
            control,
            shadow_rx: Mutex::new(Some(shadow_rx)),
        },
    ));
    tracing::info!(listen = %config.listen, "strangler-proxy starting");
    server.run_forever();
}

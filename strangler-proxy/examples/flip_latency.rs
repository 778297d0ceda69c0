//! Flip-to-effect benchmark: three proxy replicas (the release binary) under load, a route
//! flipped between the monolith and its service again and again; for each flip, the time from
//! the change being accepted to every replica routing the new way, and every failed request.
//! Run twice side by side: the embedded MySQL flag store (change via one replica's admin API) and
//! LaunchDarkly's streaming protocol (change pushed by a local LaunchDarkly stand-in).
//! `cargo run --release --example flip_latency -- [FLIPS] [POLL_MS]`; bench/flip.sh runs it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use flags::RouteMode;
use serde_json::json;
use testkit::launchdarkly::LdServer;
use testkit::{ProcessGuard, TempDir, free_port};

struct Replica {
    port: u16,
    admin: u16,
    _process: ProcessGuard,
}

async fn upstream(name: &'static str) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(move || async move { axum::Json(json!({ "served_by": name })) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn proxy_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/examples/flip_latency -> target/<profile>/strangler-proxy
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("strangler-proxy")
}

async fn start_replica(dir: &Path, i: usize, flags: &str, routes: &str) -> Replica {
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         upgrade_sock = \"{}\"\ndebug_header = true\n{flags}\n{routes}\n[user_key]\nheader = \"x-user-id\"\n",
        dir.join(format!("up{i}.sock")).display()
    );
    let path = dir.join(format!("proxy{i}.toml"));
    std::fs::write(&path, config).unwrap();
    let process = ProcessGuard::spawn_with_env(
        &proxy_binary(),
        &["--config".into(), path.display().to_string()],
        &[("RUST_LOG", "warn".into())],
        &dir.join(format!("proxy{i}.pid")),
        &dir.join(format!("proxy{i}.log")),
    )
    .unwrap();
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            return Replica {
                port,
                admin,
                _process: process,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replica {i} not ready; see {}", dir.display());
}

async fn served_by(client: &reqwest::Client, port: u16) -> Option<String> {
    let r = client
        .get(format!("http://127.0.0.1:{port}/api/orders/1"))
        .header("x-user-id", "probe")
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    v["served_by"].as_str().map(str::to_string)
}

/// Steady load on every replica; returns (stop, ok, failed).
fn load(
    replicas: &[Replica],
    per_replica: usize,
) -> (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    for r in replicas {
        for u in 0..per_replica {
            let (stop, ok, failed, port) = (stop.clone(), ok.clone(), failed.clone(), r.port);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let res = client
                        .get(format!("http://127.0.0.1:{port}/api/orders/1"))
                        .header("x-user-id", format!("load-{u}"))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    }
    (stop, ok, failed)
}

/// Waits until every replica serves `want`; the time since `accepted`.
async fn effect(replicas: &[Replica], want: &str, accepted: Instant) -> Duration {
    let mut tasks = Vec::new();
    for r in replicas {
        let (port, want) = (r.port, want.to_string());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                if served_by(&client, port).await.as_deref() == Some(want.as_str()) {
                    return accepted.elapsed();
                }
                assert!(
                    accepted.elapsed() < Duration::from_secs(10),
                    "replica on {port} never flipped"
                );
            }
        }));
    }
    let mut worst = Duration::ZERO;
    for t in tasks {
        worst = worst.max(t.await.unwrap());
    }
    worst
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(name: &str, mut samples: Vec<Duration>, ok: u64, failed: u64) {
    samples.sort();
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {ok} | {failed} |",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        percentile(&samples, 0.99),
        samples.last().unwrap().as_secs_f64() * 1000.0,
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flips: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let poll_ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let dir = TempDir::new("flip-bench").unwrap();
    let monolith = upstream("monolith").await;
    let service = upstream("order").await;
    let routes = format!(
        "[upstreams.monolith]\nbackends = [\"{monolith}\"]\n[upstreams.order]\nbackends = [\"{service}\"]\n\
         [[routes]]\nname = \"orders\"\nprefix = \"/api/orders\"\nflag = \"route.orders\"\nservice = \"order\"\n"
    );
    println!(
        "| flag source | flips | p50 ms | p95 ms | p99 ms | max ms | requests ok | requests failed |"
    );
    println!("|---|---|---|---|---|---|---|---|");

    // 1. The embedded store: MySQL table, change through one replica's admin API.
    let db = testkit::monolith_server()
        .create_database("flipbench")
        .await
        .unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        json!({"flags": {"route.orders": RouteMode::Monolith.to_flag("route.orders", 1, "o")}})
            .to_string(),
    )
    .unwrap();
    let flags = format!(
        "[flags]\nsource = \"mysql\"\nurl = \"{}\"\npoll_ms = {poll_ms}\nseed = \"{}\"\n",
        db.url,
        seed.display()
    );
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(start_replica(dir.path(), i, &flags, &routes).await);
    }
    let (stop, ok, failed) = load(&replicas, 4);
    let client = reqwest::Client::new();
    let mut samples = Vec::new();
    for n in 0..flips {
        let (mode, want) = if n % 2 == 0 {
            ("service", "order")
        } else {
            ("monolith", "monolith")
        };
        let r = client
            .put(format!(
                "http://127.0.0.1:{}/admin/routes/orders/mode",
                replicas[n % 3].admin
            ))
            .json(&json!({"mode": mode, "reason": "flip benchmark"}))
            .send()
            .await
            .unwrap();
        let accepted = Instant::now();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        samples.push(effect(&replicas, want, accepted).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    report(
        &format!("embedded (MySQL, poll {poll_ms} ms)"),
        samples,
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
    );
    drop(replicas);

    // 2. LaunchDarkly's streaming protocol: the change is pushed to every replica.
    let ld = LdServer::start(
        "127.0.0.1:0".parse().unwrap(),
        "sdk-bench",
        vec![serde_json::to_value(RouteMode::Monolith.to_flag("route.orders", 1, "o")).unwrap()],
        Duration::from_secs(1),
    )
    .await;
    let flags = format!(
        "[flags]\nsource = \"launchdarkly\"\nsdk_key = \"sdk-bench\"\nbase_url = \"{}\"\n",
        ld.url()
    );
    let mut replicas = Vec::new();
    for i in 3..6 {
        replicas.push(start_replica(dir.path(), i, &flags, &routes).await);
    }
    let (stop, ok, failed) = load(&replicas, 4);
    let mut samples = Vec::new();
    for n in 0..flips {
        let (mode, want) = if n % 2 == 0 {
            (RouteMode::Service, "order")
        } else {
            (RouteMode::Monolith, "monolith")
        };
        ld.patch(serde_json::to_value(mode.to_flag("route.orders", n as u64 + 2, "o")).unwrap());
        let accepted = Instant::now();
        samples.push(effect(&replicas, want, accepted).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    report(
        "LaunchDarkly protocol (local stream)",
        samples,
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
    );
}

//! The proxy's process lifecycle: SIGTERM finishes in-flight requests before exiting, and a
//! zero-downtime upgrade (`--upgrade` + SIGQUIT to the old process) hands the listening socket to
//! the new process without a failed request.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Proxy, Switchboard, Upstream, upstreams};

const ECHO: &str =
    "[[routes]]\nname = \"echo\"\nprefix = \"/echo\"\nflag = \"route.echo\"\nservice = \"svc\"\n";

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

async fn wait_exit(p: &testkit::ProcessGuard, within: Duration) {
    let start = std::time::Instant::now();
    while p.is_alive() {
        assert!(
            start.elapsed() < within,
            "process {} still running",
            p.pid()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_requests() {
    let m = Switchboard::default();
    m.slow_ms.store(800, Ordering::SeqCst);
    let monolith = Upstream::start(m.app("monolith")).await;
    let service = Upstream::start(Switchboard::default().app("service")).await;
    let proxy = Proxy::start(
        &upstreams(monolith.addr, service.addr, ECHO),
        &["route.echo"],
    )
    .await;
    let client = proxy.client.clone();
    let url = proxy.url("/echo/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(proxy.pid(), "TERM");
    let status = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completed");
    assert_eq!(status, 200);
    wait_exit(proxy.process(), Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_hands_over_the_socket_without_failed_requests() {
    let monolith = Upstream::start(Switchboard::default().app("monolith")).await;
    let service = Upstream::start(Switchboard::default().app("service")).await;
    let old = Proxy::start(
        &upstreams(monolith.addr, service.addr, ECHO),
        &["route.echo"],
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    // A new connection per request: what is under test is the hand-over of the listening socket
    // (no connection refused). An idle keep-alive connection the old process closes while a
    // client is reusing it is the usual keep-alive race of any graceful shutdown (runbook).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let load = {
        let (client, url, stop) = (fresh, old.url("/echo/u"), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new process waits on the upgrade socket for the old one's listeners.
    let new = testkit::ProcessGuard::spawn(
        Path::new(env!("CARGO_BIN_EXE_strangler-proxy")),
        &[
            "--config".into(),
            old.config_path.display().to_string(),
            "--upgrade".into(),
        ],
        &old.dir.path().join("new.pid"),
        &old.dir.path().join("new.log"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        new.is_alive(),
        "{}",
        std::fs::read_to_string(old.dir.path().join("new.log")).unwrap_or_default()
    );
    signal(old.pid(), "QUIT");
    wait_exit(old.process(), Duration::from_secs(20)).await;
    // Requests keep flowing through the new process alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    assert!(failed.is_empty(), "{} ok, failed: {failed:?}", ok);
    assert!(ok > 100, "{ok}");
    let r = old.client.get(old.url("/echo/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The new process also took over the admin port once the old one let go.
    for _ in 0..100 {
        if old
            .client
            .get(old.admin_url("/healthz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        old.client
            .get(old.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(new.is_alive());
}

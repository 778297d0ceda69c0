//! Faults through the real proxy binary: a killed or hanging service (idempotent requests fall
//! back to the monolith, writes are never replayed), the circuit breaker opening and closing,
//! config reloads under load with zero failed requests, and bad config refused while the old
//! config keeps serving.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Proxy, Switchboard, Upstream, upstreams};
use flags::RouteMode;

const ECHO: &str =
    "[[routes]]\nname = \"echo\"\nprefix = \"/echo\"\nflag = \"route.echo\"\nservice = \"svc\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_or_hanging_service_falls_back_for_reads_only() {
    let m = Switchboard::default();
    let s = Switchboard::default();
    let monolith = Upstream::start(m.app("monolith")).await;
    let service = Upstream::start(s.app("service")).await;
    let proxy = Proxy::start(
        &upstreams(monolith.addr, service.addr, ECHO),
        &["route.echo"],
    )
    .await;
    proxy.set_mode("route.echo", RouteMode::Service).await;
    assert_eq!(proxy.get_as("/echo/a", "u").await.1, "service");

    // Hanging service (longer than its 500 ms read timeout): a GET is answered by the monolith.
    s.slow_ms.store(2000, Ordering::SeqCst);
    let (status, backend, body) = proxy.get_as("/echo/slow", "u").await;
    assert_eq!(status, 200);
    assert_eq!(backend, "monolith; fallback=service_error");
    assert_eq!(body["served_by"], "monolith");
    // The retry on the monolith carries the ids the first attempt had: the request id made by
    // the proxy and the trace it names.
    let tp = body["headers"]["traceparent"].as_str().unwrap_or_default();
    assert_eq!(tp.len(), 55, "{body}");
    assert_eq!(body["headers"]["x-request-id"], &tp[3..35], "{body}");
    // A POST that may have reached the service is never replayed on the monolith.
    let monolith_hits = m.hits.load(Ordering::SeqCst);
    let r = proxy
        .client
        .post(proxy.url("/echo/write"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    assert_eq!(
        m.hits.load(Ordering::SeqCst),
        monolith_hits,
        "the write was not replayed"
    );
    s.slow_ms.store(0, Ordering::SeqCst);

    // Killed service: connections are refused; reads fall back to the monolith, but a write
    // the service owns (the route serves `service`) never goes to the monolith, which does not
    // own it: the client hears that the service is unreachable.
    service.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, backend, _) = proxy.get_as("/echo/b", "u").await;
    assert_eq!(status, 200);
    assert!(backend.starts_with("monolith"), "{backend}");
    let monolith_hits = m.hits.load(Ordering::SeqCst);
    let r = proxy
        .client
        .post(proxy.url("/echo/write2"))
        .body("{}")
        .send()
        .await
        .unwrap();
    // 502 when the connection was refused, 503 once the health checker has noticed.
    assert!(
        [502, 503].contains(&r.status().as_u16()),
        "an owned write was answered {}",
        r.status()
    );
    assert_eq!(m.hits.load(Ordering::SeqCst), monolith_hits);
    // The health checker notices and routes straight to the monolith.
    for _ in 0..100 {
        if proxy.get_as("/echo/c", "u").await.1 == "monolith; fallback=unhealthy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        proxy.get_as("/echo/c", "u").await.1,
        "monolith; fallback=unhealthy"
    );
    // Known down: an owned write is refused at once, still not sent to the monolith.
    let monolith_hits = m.hits.load(Ordering::SeqCst);
    let r = proxy
        .client
        .post(proxy.url("/echo/write3"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(m.hits.load(Ordering::SeqCst), monolith_hits);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"strangler_rejected_total{reason="owned_write_unavailable"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"strangler_fallbacks_total{reason="service_error",route="echo"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"strangler_backend_up{backend=""#));

    // The service comes back on the same port: traffic returns to it.
    let _revived = Upstream::start_on(s.app("service"), service.addr).await;
    let mut in_a_row = 0;
    for _ in 0..200 {
        if proxy.get_as("/echo/d", "u").await.1 == "service" {
            in_a_row += 1;
            if in_a_row == 5 {
                break;
            }
        } else {
            in_a_row = 0;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(in_a_row, 5, "traffic went back to the revived service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn circuit_opens_on_failures_and_closes_after_a_good_trial() {
    let m = Switchboard::default();
    let s = Switchboard::default();
    let monolith = Upstream::start(m.app("monolith")).await;
    let service = Upstream::start(s.app("service")).await;
    let body = format!(
        "{}\n[breaker]\nfailures = 3\nopen_ms = 500\n",
        upstreams(monolith.addr, service.addr, ECHO)
    );
    let proxy = Proxy::start(&body, &["route.echo"]).await;
    proxy.set_mode("route.echo", RouteMode::Service).await;
    s.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let (status, backend, _) = proxy.get_as("/echo/x", "u").await;
        assert_eq!((status, backend.as_str()), (500, "service"));
    }
    let (status, backend, _) = proxy.get_as("/echo/x", "u").await;
    assert_eq!(
        (status, backend.as_str()),
        (200, "monolith; fallback=circuit_open")
    );
    assert_eq!(
        proxy
            .metric(r#"strangler_circuit_state{route="echo"}"#)
            .await,
        1.0
    );
    // After the pause one trial goes to the service; it fails, the circuit opens again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(proxy.get_as("/echo/x", "u").await.1, "service");
    assert_eq!(
        proxy.get_as("/echo/x", "u").await.1,
        "monolith; fallback=circuit_open"
    );
    // The service recovers: the next trial closes the circuit.
    s.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..3 {
        let (status, backend, _) = proxy.get_as("/echo/x", "u").await;
        assert_eq!((status, backend.as_str()), (200, "service"));
    }
    assert_eq!(
        proxy
            .metric(r#"strangler_circuit_state{route="echo"}"#)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_fail_no_request_and_bad_config_keeps_the_old() {
    let m = Switchboard::default();
    let s = Switchboard::default();
    let monolith = Upstream::start(m.app("monolith")).await;
    let service = Upstream::start(s.app("service")).await;
    let proxy = Proxy::start(
        &upstreams(monolith.addr, service.addr, ECHO),
        &["route.echo"],
    )
    .await;
    proxy
        .set_mode("route.echo", RouteMode::Canary { percent: 50.0 })
        .await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for w in 0..4 {
        let client = proxy.client.clone();
        let url = proxy.url("/echo/load");
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 20_000 {
                i += 1;
                match client
                    .get(&url)
                    .header("x-user-id", format!("w{w}-{i}"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    // 30 reloads alternating two valid configs (one adds a second route), via file and admin call.
    let alt = format!(
        "{ECHO}\n[[routes]]\nname = \"extra\"\npath = \"/extra/{{id}}\"\nflag = \"route.echo\"\nservice = \"svc\"\n"
    );
    for i in 0..30 {
        let routes = if i % 2 == 0 { alt.as_str() } else { ECHO };
        std::fs::write(
            &proxy.config_path,
            common::config_text(
                proxy.port,
                proxy.admin,
                &proxy.flags_path,
                &upstreams(monolith.addr, service.addr, routes),
            ),
        )
        .unwrap();
        if i % 3 == 0 {
            let r = proxy
                .client
                .post(proxy.admin_url("/admin/reload"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut total_ok = 0;
    for t in load {
        let (ok, failed) = t.await.unwrap();
        assert_eq!(failed, 0, "requests failed during reloads");
        total_ok += ok;
    }
    assert!(total_ok > 100, "load ran: {total_ok}");
    let version = proxy.metric("strangler_config_version").await;
    assert!(version >= 10.0, "reloads applied: {version}");

    // A config with a typo is refused with line and field; the old one keeps serving.
    let bad = common::config_text(
        proxy.port,
        proxy.admin,
        &proxy.flags_path,
        &upstreams(
            monolith.addr,
            service.addr,
            &ECHO.replace("service = ", "servce = "),
        ),
    );
    std::fs::write(&proxy.config_path, &bad).unwrap();
    let r = proxy
        .client
        .post(proxy.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("servce") && msg.contains("line"), "{msg}");
    // A config that parses but names a missing upstream is refused too.
    let missing = common::config_text(
        proxy.port,
        proxy.admin,
        &proxy.flags_path,
        &upstreams(
            monolith.addr,
            service.addr,
            &ECHO.replace("service = \"svc\"", "service = \"nope\""),
        ),
    );
    std::fs::write(&proxy.config_path, &missing).unwrap();
    let r = proxy
        .client
        .post(proxy.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("routes[0] (echo).service"),
        "{err}"
    );
    assert_eq!(proxy.metric("strangler_config_version").await, version);
    assert_eq!(proxy.get_as("/echo/after", "u").await.0, 200);
    let status: serde_json::Value = proxy.admin_json("/admin/status").await;
    assert!(
        status["config_error"].as_str().unwrap().contains("nope"),
        "{status}"
    );

    // A broken flag file is refused too: the canary keeps its users.
    std::fs::write(
        &proxy.flags_path,
        "{\"flags\": {\"route.echo\": {\"key\": 1}}}",
    )
    .unwrap();
    for _ in 0..100 {
        let s: serde_json::Value = proxy.admin_json("/admin/status").await;
        if s["flags_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let routes: serde_json::Value = proxy.admin_json("/admin/routes").await;
    assert_eq!(routes["routes"][0]["mode"], "canary", "{routes}");
}

#[test]
fn check_config_names_the_line_and_field() {
    let dir = testkit::TempDir::new("proxy-check").unwrap();
    let flags = dir.path().join("flags.json");
    std::fs::write(&flags, "{\"flags\":{}}").unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        common::config_text(
            18000,
            18001,
            &flags,
            &upstreams(
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
                ECHO,
            ),
        ),
    )
    .unwrap();
    let run = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strangler-proxy"))
            .arg("--config")
            .arg(path)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let out = run(&good);
    let out = testkit::assert_success(&out, "strangler-proxy --check-config");
    assert!(out.contains("1 routes, 2 upstreams"), "{out}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("prefix = ", "prefx = "),
    )
    .unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line") && err.contains("prefx"),
        "{err}"
    );
    let no_route_match = dir.path().join("nomatch.toml");
    std::fs::write(
        &no_route_match,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("prefix = \"/echo\"", "prefix = \"echo\""),
    )
    .unwrap();
    let out = run(&no_route_match);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with /"));
    // Secrets come from the environment (as Kubernetes hands them over): an unset one is named.
    let from_env = dir.path().join("env.toml");
    std::fs::write(
        &from_env,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("prefix = \"/echo\"", "prefix = \"${ECHO_PREFIX}\""),
    )
    .unwrap();
    let out = run(&from_env);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("env.toml") && err.contains("ECHO_PREFIX is not set"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler-proxy"))
        .arg("--config")
        .arg(&from_env)
        .arg("--check-config")
        .env("ECHO_PREFIX", "/echo")
        .output()
        .unwrap();
    testkit::assert_success(&out, "--check-config with ${ECHO_PREFIX} set");
}

//! Release control against real proxies and a real MariaDB flag table: token roles, mode changes
//! and their audit records, the kill switch, bad requests, auto-rollback of a failing service,
//! and one change reaching every replica.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Proxy;
use common::release::*;
use serde_json::{Value, json};

#[tokio::test]
async fn roles_mode_changes_audit_and_kill_switch() {
    let s = stack("release_roles", "").await;
    let p = &s.proxy;
    use reqwest::Method;
    let change = json!({"mode": "canary", "percent": 50, "reason": "first users"});

    // Nobody without a valid token; viewers read but never change.
    let (status, body) = call(p, Method::GET, "/admin/routes", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = call(
        p,
        Method::GET,
        "/admin/routes",
        Some("wrong-token-0123456789"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, who) = call(p, Method::GET, "/admin/whoami", Some(VIEWER), None).await;
    assert_eq!(
        (status, who),
        (200, json!({"name": "victor", "role": "viewer"}))
    );
    let (status, body) = put_mode(p, VIEWER, "orders", change.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("viewer"),
        "{body}"
    );
    let (status, _) = call(p, Method::POST, "/admin/reload", Some(VIEWER), None).await;
    assert_eq!(status, 403);
    // Health, readiness, metrics and the page need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/ui"] {
        let r = p.client.get(p.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    // An operator moves orders to a 50% canary: sticky per user, about half of them.
    let (status, body) = put_mode(p, OPERATOR, "orders", change).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["before"]["mode"], "monolith");
    assert_eq!(
        body["after"],
        json!({"mode": "canary", "percent": 50.0, "on": true, "version": 2})
    );
    assert_eq!(body["routes"], json!(["orders"]));
    // A canary says that it routes reads only.
    assert!(
        body["note"]
            .as_str()
            .is_some_and(|n| n.contains("reads only") && n.contains("orders")),
        "{body}"
    );
    let mut on_service = 0;
    for i in 0..200 {
        let user = format!("user-{i}");
        let first = served_by(p, "/api/orders/1", &user).await;
        assert_eq!(first, served_by(p, "/api/orders/1", &user).await, "sticky");
        on_service += usize::from(first == "order");
    }
    assert!(
        (70..=130).contains(&on_service),
        "{on_service} of 200 on the service"
    );

    // Bad requests are refused with what was wrong, and change nothing.
    let bad = [
        (
            json!({"mode": "canary", "percent": 150, "reason": "x"}),
            400,
            "canary percent must be 0 to 100",
        ),
        (json!({"mode": "blue", "reason": "x"}), 400, "unknown mode"),
        (json!({"mode": "service"}), 400, "reason"),
        (json!({"mode": "service", "reason": "  "}), 400, "reason"),
        (
            json!({"mode": "service", "reason": "x", "percent": "ten"}),
            400,
            "percent",
        ),
        (
            json!({"mode": "service", "reason": "x", "expected_version": 1}),
            409,
            "expected version 1, found 2",
        ),
    ];
    for (body, want, says) in bad {
        let (status, answer) = put_mode(p, OPERATOR, "orders", body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{body} -> {answer}"
        );
    }
    let (status, answer) = put_mode(
        p,
        OPERATOR,
        "nope",
        json!({"mode": "service", "reason": "x"}),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("unknown_route"))
    );
    let r = p
        .client
        .put(p.admin_url("/admin/routes/orders/mode"))
        .bearer_auth(OPERATOR)
        .header("x-strangler-source", "carrier-pigeon")
        .json(&json!({"mode": "service", "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = p
        .client
        .put(p.admin_url("/admin/routes/orders/mode"))
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body("{\"mode\": \"service\",")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let routes = wait_for(p, "orders still a canary", |r| {
        route(r, "orders")["mode"] == "canary"
    })
    .await;
    assert_eq!(route(&routes, "orders")["flag_version"], 2);

    // Both user routes to the service, then the kill switch sends all of them back at once.
    for name in ["users", "users.login"] {
        let (status, body) = put_mode(
            p,
            OPERATOR,
            name,
            json!({"mode": "service", "reason": "user-service ready"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(served_by(p, "/api/users/7", "u1").await, "user");
    assert_eq!(served_by(p, "/api/users/login", "u1").await, "user");
    let (status, body) = call(
        p,
        Method::POST,
        "/admin/services/user/kill",
        Some(OPERATOR),
        Some(json!({"reason": "errors on login"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(served_by(p, "/api/users/7", "u1").await, "monolith");
    assert_eq!(served_by(p, "/api/users/login", "u1").await, "monolith");
    let routes = wait_for(p, "users off", |r| route(r, "users")["on"] == false).await;
    assert_eq!(route(&routes, "users")["mode"], "monolith");
    // The canary of another service is untouched; killing again changes nothing.
    assert_eq!(route(&routes, "orders")["mode"], "canary");
    let (status, body) = call(
        p,
        Method::POST,
        "/admin/services/user/kill",
        Some(OPERATOR),
        Some(json!({"reason": "again"})),
    )
    .await;
    assert_eq!(
        (status, body["changes"].as_array().unwrap().len()),
        (200, 0)
    );
    let (status, _) = call(
        p,
        Method::POST,
        "/admin/services/billing/kill",
        Some(OPERATOR),
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!(status, 404);

    // The audit trail: who, when, before, after, reason, source, newest first.
    let (status, audit) = call(p, Method::GET, "/admin/audit?limit=10", Some(VIEWER), None).await;
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let changes: Vec<(&str, &str, &str, &str)> = entries
        .iter()
        .filter(|e| e["source"] != "seed")
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["route"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("alice", "kill", "users", "errors on login"),
            ("alice", "kill", "users.login", "errors on login"),
            ("alice", "set_mode", "users.login", "user-service ready"),
            ("alice", "set_mode", "users", "user-service ready"),
            ("alice", "set_mode", "orders", "first users"),
        ],
        "{audit}"
    );
    let first = entries
        .iter()
        .find(|e| e["reason"] == "first users")
        .unwrap();
    assert_eq!(first["source"], "api");
    assert_eq!(first["before"]["mode"], "monolith");
    assert_eq!(first["after"]["percent"], 50.0);
    assert!(first["at"].as_str().unwrap().ends_with('Z'));
    let (_, only) = call(
        p,
        Method::GET,
        "/admin/audit?route=orders",
        Some(VIEWER),
        None,
    )
    .await;
    assert!(
        only["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["route"] == "orders"),
        "{only}"
    );
    let (status, _) = call(p, Method::GET, "/admin/audit?limit=0", Some(VIEWER), None).await;
    assert_eq!(status, 400);
    // Changes are counted per source.
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("strangler_route_changes_total{route=\"users\",source=\"api\"} 2"),
        "{metrics}"
    );
    // Every admin request was logged with who made it.
    assert!(p.log().contains("\"actor\":\"victor\""), "{}", p.log());
}

/// Runs stranglerctl with `args`; returns (success, stdout, stderr).
fn ctl(url: &str, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stranglerctl"));
    cmd.args(args)
        .env("STRANGLER_ADMIN_URL", url)
        .env_remove("STRANGLER_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("STRANGLER_ADMIN_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_for_release_managers() {
    let s = stack("release_cli", "").await;
    let p = &s.proxy;
    let url = p.admin_url("");
    let run = |token: Option<&'static str>, args: &[&str]| {
        let (url, args): (String, Vec<String>) =
            (url.clone(), args.iter().map(|a| a.to_string()).collect());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctl(&url, token, &args)
        })
    };
    let (ok, out, err) = run(Some(VIEWER), &["routes"]).await.unwrap();
    assert!(ok, "{err}");
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("ROUTE") && header.contains("SVC P99"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("orders") && l.contains("monolith")),
        "{out}"
    );

    let (ok, out, err) = run(
        Some(OPERATOR),
        &[
            "flag",
            "set",
            "orders",
            "--mode",
            "canary",
            "--percent",
            "10",
            "--reason",
            "first 10%",
        ],
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("orders: monolith -> canary 10%"), "{out}");
    assert!(out.contains("note: a canary routes reads only"), "{out}");
    let (ok, out, _) = run(Some(VIEWER), &["routes", "--json"]).await.unwrap();
    assert!(ok);
    let routes: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(route(&routes, "orders")["percent"], 10.0);

    // Errors: each says what is wrong, and exits non-zero.
    let cases: [(Option<&'static str>, &[&str], &str); 6] = [
        (
            Some(OPERATOR),
            &[
                "flag",
                "set",
                "orders",
                "--mode",
                "canary",
                "--percent",
                "120",
                "--reason",
                "x",
            ],
            "canary percent must be 0 to 100",
        ),
        (
            Some(OPERATOR),
            &["flag", "set", "nope", "--mode", "service", "--reason", "x"],
            "unknown route \"nope\"",
        ),
        (
            Some(VIEWER),
            &[
                "flag", "set", "orders", "--mode", "service", "--reason", "x",
            ],
            "no permission",
        ),
        (None, &["routes"], "not signed in"),
        (
            Some(OPERATOR),
            &[
                "flag",
                "set",
                "orders",
                "--mode",
                "service",
                "--reason",
                "x",
                "--expect-version",
                "1",
            ],
            "changed meanwhile",
        ),
        (
            Some(OPERATOR),
            &["kill", "billing", "--reason", "x"],
            "no route sends traffic to a service named \"billing\"",
        ),
    ];
    for (token, args, says) in cases {
        let (ok, _, err) = run(token, args).await.unwrap();
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stranglerctl"))
        .args(["--url", "http://127.0.0.1:1", "routes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API"));
    // A missing reason is a usage error from the parser itself.
    let (ok, _, err) = run(Some(OPERATOR), &["kill", "order"]).await.unwrap();
    assert!(!ok && err.contains("--reason"), "{err}");

    let (ok, out, err) = run(Some(OPERATOR), &["kill", "order", "--reason", "latency"])
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("orders: canary 10% -> monolith (switched off"),
        "{out}"
    );
    let (ok, out, _) = run(Some(VIEWER), &["audit", "--route", "orders"])
        .await
        .unwrap();
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("REASON"),
        "{out}"
    );
    assert!(
        lines[1].contains("alice") && lines[1].contains("cli") && lines[1].contains("latency"),
        "{out}"
    );
    assert!(
        lines[2].contains("canary 10%") && lines[2].contains("first 10%"),
        "{out}"
    );
    let (ok, out, _) = run(Some(VIEWER), &["status"]).await.unwrap();
    assert!(ok);
    assert!(
        out.contains("signed in as victor (viewer)") && out.contains("3 monolith"),
        "{out}"
    );
}

#[tokio::test]
async fn a_failing_canary_rolls_itself_back() {
    let s = stack(
        "release_auto",
        "\n[auto_rollback]\nwindow_secs = 10\nmin_requests = 10\nmax_error_rate = 0.2\n",
    )
    .await;
    let p = &s.proxy;
    let (status, body) = put_mode(
        p,
        OPERATOR,
        "orders",
        json!({"mode": "service", "reason": "go"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by(p, "/api/orders/1", "u1").await, "order");
    // Healthy traffic keeps the route where it is.
    for i in 0..30 {
        served_by(p, "/api/orders/1", &format!("u{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let routes = wait_for(p, "orders figures", |r| {
        route(r, "orders")["live"]["service"]["requests"].as_u64() >= Some(30)
    })
    .await;
    assert_eq!(route(&routes, "orders")["mode"], "service");

    // The service starts failing: within seconds everyone is back on the monolith.
    s.order.failing.store(true, Ordering::SeqCst);
    let started = Instant::now();
    // Users keep coming; the breaker soon sends them to the monolith (counted against the
    // service), and the SLO check switches the route off.
    let mut failures = 0;
    for i in 0.. {
        let (status, _, _) = p.get_as("/api/orders/1", "u1").await;
        failures += usize::from(status == 500);
        if i % 10 == 9 {
            let (_, r) = call(
                p,
                reqwest::Method::GET,
                "/admin/routes/orders",
                Some(VIEWER),
                None,
            )
            .await;
            if r["on"] == false {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never rolled back:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "rolled back after {:?}, {failures} users saw a 500",
        started.elapsed()
    );
    assert!(failures >= 1, "{failures}");
    let routes = wait_for(p, "orders off", |r| route(r, "orders")["on"] == false).await;
    assert_eq!(route(&routes, "orders")["mode"], "monolith");
    let (_, audit) = call(
        p,
        reqwest::Method::GET,
        "/admin/audit?route=orders&limit=1",
        Some(VIEWER),
        None,
    )
    .await;
    let last = &audit["entries"][0];
    assert_eq!(
        (
            last["actor"].as_str(),
            last["source"].as_str(),
            last["action"].as_str()
        ),
        (Some("auto-rollback"), Some("auto"), Some("auto_rollback")),
        "{audit}"
    );
    assert!(
        last["reason"].as_str().unwrap().contains("error rate"),
        "{audit}"
    );
    assert_eq!(last["before"]["mode"], "service");
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("strangler_auto_rollbacks_total{route=\"orders\"} 1"),
        "{metrics}"
    );
    assert!(p.log().contains("auto-rollback: route burned its SLO"));
    // The monolith took the traffic; the failing service is no longer asked.
    let hits = s.order.hits.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(served_by(p, "/api/orders/1", "u1").await, "monolith");
    }
    assert_eq!(s.order.hits.load(Ordering::SeqCst) - hits, 0);
    assert!(s.monolith.hits.load(Ordering::SeqCst) >= 10);
}

#[tokio::test]
async fn a_change_reaches_every_replica_without_failed_requests() {
    let s = stack("release_replicas", "").await;
    // Two more replicas on the same flag table.
    let replicas = [replica(&s, 1).await, replica(&s, 2).await];
    let all: Vec<&Proxy> = std::iter::once(&s.proxy).chain(replicas.iter()).collect();
    assert!(s.db_url.contains("release_replicas"));

    // Load on every replica while the route flips back and forth.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = vec![];
    for p in &all {
        let (client, url, stop) = (p.client.clone(), p.url("/api/orders/1"), stop.clone());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).header("x-user-id", "u1").send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let mut worst = Duration::ZERO;
    for (i, mode) in [
        "service", "monolith", "service", "monolith", "service", "monolith",
    ]
    .iter()
    .enumerate()
    {
        let (status, body) = put_mode(
            all[i % 3],
            OPERATOR,
            "orders",
            json!({"mode": mode, "reason": "flip"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let accepted = Instant::now();
        let want = if *mode == "service" {
            "order"
        } else {
            "monolith"
        };
        for p in &all {
            while served_by(p, "/api/orders/1", "u1").await != want {
                assert!(
                    accepted.elapsed() < Duration::from_secs(5),
                    "replica {} never flipped:\n{}",
                    p.port,
                    p.log()
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        worst = worst.max(accepted.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for l in load {
        let (ok, failed) = l.await.unwrap();
        assert_eq!(failed, 0, "requests failed during flips");
        total += ok;
    }
    assert!(total > 0);
    eprintln!("slowest flip-to-effect over 3 replicas: {worst:?} ({total} requests, none failed)");
}

#[tokio::test]
async fn figures_and_auto_rollback_are_the_fleets() {
    // Two replicas on one flag database: each publishes its minute, each shows the sum, and a
    // canary that fails on one replica too rarely for it alone to judge is rolled back on the
    // fleet's figures.
    let s = stack(
        "release_fleet",
        "\n[auto_rollback]\nwindow_secs = 20\nmin_requests = 20\nmax_error_rate = 0.2\n",
    )
    .await;
    let (a, b) = (&s.proxy, &replica(&s, 1).await);
    let (status, body) = put_mode(
        a,
        OPERATOR,
        "orders",
        json!({"mode": "service", "reason": "go"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for p in [a, b] {
        let started = Instant::now();
        while served_by(p, "/api/orders/1", "u1").await != "order" {
            assert!(started.elapsed() < Duration::from_secs(5), "{}", p.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Auto-rollback counts whole seconds after the second each replica saw the change in.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Healthy traffic through A only; B shows it.
    for i in 0..12 {
        served_by(a, "/api/orders/1", &format!("u{i}")).await;
    }
    let seen = wait_up_to(
        b,
        "A's requests in B's figures",
        Duration::from_secs(20),
        |r| route(r, "orders")["live"]["service"]["requests"].as_u64() >= Some(13),
    )
    .await;
    let live = &route(&seen, "orders")["live"];
    assert_eq!(live["scope"], "fleet", "{live}");
    assert_eq!(live["replicas"], 2, "{live}");
    assert_eq!(route(&seen, "orders")["on"], true);

    // The service fails, seen through B only: 12 requests, fewer than one replica judges on.
    s.order.failing.store(true, Ordering::SeqCst);
    for i in 0..12 {
        b.get_as("/api/orders/1", &format!("u{i}")).await;
    }
    let off = wait_up_to(a, "the fleet's rollback", Duration::from_secs(20), |r| {
        route(r, "orders")["on"] == false
    })
    .await;
    assert_eq!(route(&off, "orders")["mode"], "monolith");
    let (_, audit) = call(
        a,
        reqwest::Method::GET,
        "/admin/audit?route=orders&limit=1",
        Some(VIEWER),
        None,
    )
    .await;
    let last = &audit["entries"][0];
    assert_eq!(last["actor"], "auto-rollback", "{audit}");
    assert!(
        last["reason"].as_str().unwrap().contains("error rate"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_decommissioned_route_has_no_monolith_side() {
    let s = stack(
        "release_retired",
        "\n[auto_rollback]\nwindow_secs = 10\nmin_requests = 10\nmax_error_rate = 0.2\n",
    )
    .await;
    let p = &s.proxy;
    let retire = |token: &'static str, reason: &'static str| {
        call(
            p,
            reqwest::Method::POST,
            "/admin/routes/orders/retire-monolith",
            Some(token),
            Some(json!({"reason": reason})),
        )
    };
    // Not while users still reach the monolith; not by a viewer; not without a reason.
    let (status, body) = retire(OPERATOR, "too early").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.to_string()
            .contains("must send everyone to the service"),
        "{body}"
    );
    let (status, _) = put_mode(
        p,
        OPERATOR,
        "orders",
        json!({"mode": "service", "reason": "go"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = retire(VIEWER, "viewer").await;
    assert_eq!(status, 403);
    let (status, body) = retire(OPERATOR, " ").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = retire(OPERATOR, "orders decommissioned").await;
    assert_eq!(status, 200, "{body}");
    let routes = wait_for(p, "retired", |r| {
        route(r, "orders")["monolith_retired"] == true
    })
    .await;
    assert_eq!(route(&routes, "users")["monolith_retired"], false);
    let (_, audit) = call(
        p,
        reqwest::Method::GET,
        "/admin/audit?route=orders&limit=1",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(audit["entries"][0]["action"], "retire_monolith", "{audit}");

    // No mode but service, and the kill switch leaves it on its service.
    let (status, body) = put_mode(
        p,
        OPERATOR,
        "orders",
        json!({"mode": "monolith", "reason": "back"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("decommissioned"), "{body}");
    let (status, body) = call(
        p,
        reqwest::Method::POST,
        "/admin/services/order/kill",
        Some(OPERATOR),
        Some(json!({"reason": "panic"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by(p, "/api/orders/1", "u1").await, "order");

    // A failing service is the answer: no fallback, no breaker detour, no auto-rollback.
    s.order.failing.store(true, Ordering::SeqCst);
    let monolith_hits = s.monolith.hits.load(Ordering::SeqCst);
    let mut failed = 0;
    for i in 0..40 {
        let (status, _, _) = p.get_as("/api/orders/1", &format!("u{i}")).await;
        failed += usize::from(status >= 500);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(failed, 40, "every request answered by the failing service");
    assert_eq!(
        s.monolith.hits.load(Ordering::SeqCst),
        monolith_hits,
        "the monolith was asked"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, r) = call(
        p,
        reqwest::Method::GET,
        "/admin/routes/orders",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(
        (r["on"].as_bool(), r["mode"].as_str()),
        (Some(true), Some("service")),
        "{r}"
    );
    s.order.failing.store(false, Ordering::SeqCst);
    assert_eq!(served_by(p, "/api/orders/1", "u1").await, "order");
}

//! Write holds through the real proxy binary, as an ownership switch uses them: a held flag's
//! writes wait (reads pass), writes in flight are counted, a flag flipped during the hold sends
//! the released writes to the new owner, a hold ends by itself at its bound, and bad hold
//! requests are refused.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Proxy, Switchboard, Upstream, upstreams};
use flags::RouteMode;

const USERS: &str = "[[routes]]\nname = \"users\"\nprefix = \"/api/users\"\nmethods = [\"GET\", \"POST\"]\nflag = \"route.users\"\nservice = \"svc\"\n";

async fn hold_status(proxy: &Proxy) -> serde_json::Value {
    proxy.admin_json("/admin/holds/route.users").await["hold"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_writes_wait_and_go_to_the_new_owner_on_release() {
    let (monolith, service) = (Switchboard::default(), Switchboard::default());
    let m = Upstream::start(monolith.app("monolith")).await;
    let s = Upstream::start(service.app("service")).await;
    let proxy = Proxy::start(&upstreams(m.addr, s.addr, USERS), &["route.users"]).await;

    // A slow write is in flight: the hold's status counts it.
    monolith.slow_ms.store(800, Ordering::SeqCst);
    let client = proxy.client.clone();
    let url = proxy.url("/api/users/register");
    let slow = tokio::spawn(async move { client.post(url).body("{}").send().await.unwrap() });
    let mut seen = 0;
    for _ in 0..100 {
        seen = hold_status(&proxy).await["inflight"].as_i64().unwrap();
        if seen == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 1, "the slow write is not counted in flight");
    let held = proxy
        .client
        .post(proxy.admin_url("/admin/holds/route.users"))
        .json(&serde_json::json!({"max_ms": 20000, "reason": "switching users to the service"}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    assert_eq!(
        slow.await.unwrap().headers()["x-strangler-backend"],
        "monolith"
    );
    // The client may have its answer a moment before the proxy has finished the request.
    let mut inflight = serde_json::Value::Null;
    for _ in 0..100 {
        inflight = hold_status(&proxy).await["inflight"].clone();
        if inflight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(inflight, 0, "the finished write is still counted in flight");
    monolith.slow_ms.store(0, Ordering::SeqCst);

    // New writes wait; reads pass.
    let client = proxy.client.clone();
    let url = proxy.url("/api/users/login");
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        let r = client.post(url).body("{}").send().await.unwrap();
        (
            r.headers()["x-strangler-backend"]
                .to_str()
                .unwrap()
                .to_string(),
            started.elapsed(),
        )
    });
    for _ in 0..100 {
        if hold_status(&proxy).await["waiting"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = hold_status(&proxy).await;
    assert_eq!(
        (status["held"].as_bool(), status["waiting"].as_i64()),
        (Some(true), Some(1))
    );
    let read = proxy
        .client
        .get(proxy.url("/api/users/7"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert!(!waiting.is_finished());

    // The switch: the owner changes while the write waits; released, it goes to the service.
    proxy.set_mode("route.users", RouteMode::Service).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let released = proxy
        .client
        .delete(proxy.admin_url("/admin/holds/route.users"))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 200);
    let (backend, waited) = waiting.await.unwrap();
    assert_eq!(backend, "service");
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(
        proxy
            .metric("strangler_writes_held_total{flag=\"route.users\"}")
            .await
            >= 1.0
    );
    assert_eq!(hold_status(&proxy).await["held"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_ends_at_its_bound_and_bad_requests_are_refused() {
    let (monolith, service) = (Switchboard::default(), Switchboard::default());
    let m = Upstream::start(monolith.app("monolith")).await;
    let s = Upstream::start(service.app("service")).await;
    let proxy = Proxy::start(&upstreams(m.addr, s.addr, USERS), &["route.users"]).await;
    let post = |path: &str, body: serde_json::Value| {
        proxy.client.post(proxy.admin_url(path)).json(&body).send()
    };
    // A controller that dies holding writes holds them no longer than its bound.
    let r = post(
        "/admin/holds/route.users",
        serde_json::json!({"max_ms": 400, "reason": "drill"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let started = Instant::now();
    let w = proxy
        .client
        .post(proxy.url("/api/users/register"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(w.headers()["x-strangler-backend"], "monolith");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(hold_status(&proxy).await["held"], false);

    for (path, body, status) in [
        (
            "/admin/holds/route.nope",
            serde_json::json!({"max_ms": 100, "reason": "x"}),
            404,
        ),
        (
            "/admin/holds/route.users",
            serde_json::json!({"max_ms": 0, "reason": "x"}),
            400,
        ),
        (
            "/admin/holds/route.users",
            serde_json::json!({"max_ms": 100, "reason": " "}),
            400,
        ),
        (
            "/admin/holds/route.users",
            serde_json::json!({"max_ms": 100}),
            400,
        ),
    ] {
        let r = post(path, body.clone()).await.unwrap();
        assert_eq!(r.status(), status, "{path} {body}");
    }
    assert_eq!(hold_status(&proxy).await["held"], false);
}

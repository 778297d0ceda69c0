//! Real HTTP through the real proxy binary to the real monolith and a second real upstream: every
//! mode, stickiness across a rollout increase, shadow mismatch detection and noise learning,
//! request ids, limits and metrics.

mod common;

use std::collections::HashSet;

use common::{Proxy, Switchboard, Upstream, upstreams};
use flags::RouteMode;
use mysql_async::prelude::Queryable;

const PRODUCTS: &str = "[[routes]]\nname = \"products\"\nprefix = \"/api/products\"\nmethods = [\"GET\"]\nflag = \"route.products\"\nservice = \"svc\"\n";

async fn product(state: &legacy_monolith::AppState, price: &str) {
    let mut c = state.pool.get_conn().await.unwrap();
    c.exec_drop(
        "INSERT INTO products (id, sku, name, description, category, price) VALUES (1, 'P-1', 'Kettle', 'Steel kettle', 'kitchen', ?)",
        (price,),
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO inventory (product_id, available) VALUES (1, 5)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mode_and_sticky_canary() {
    let (monolith, mstate) = common::monolith_on(testkit::monolith_server(), "shop").await;
    let (service, sstate) = common::monolith_on(testkit::services_server(), "product_svc").await;
    product(&mstate, "10.00").await;
    product(&sstate, "10.00").await;
    let proxy = Proxy::start(
        &upstreams(monolith.addr, service.addr, PRODUCTS),
        &["route.products"],
    )
    .await;

    let (s, backend, body) = proxy.get_as("/api/products/1", "u1").await;
    assert_eq!((s, backend.as_str()), (200, "monolith"));
    assert_eq!(body["price"], "10.00");

    proxy.set_mode("route.products", RouteMode::Service).await;
    let (s, backend, _) = proxy.get_as("/api/products/1", "u1").await;
    assert_eq!((s, backend.as_str()), (200, "service"));
    // Routes the flag does not cover still reach the monolith.
    let r = proxy
        .client
        .get(proxy.url("/api/users/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-strangler-backend"], "monolith");

    // Canary: each user stays on one side; raising the percentage never moves a user back.
    proxy
        .set_mode("route.products", RouteMode::Canary { percent: 20.0 })
        .await;
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let mut on_service = HashSet::new();
    for u in &users {
        let (_, first, _) = proxy.get_as("/api/products/1", u).await;
        let (_, again, _) = proxy.get_as("/api/products/1", u).await;
        assert_eq!(first, again, "{u} switched sides");
        if first == "service" {
            on_service.insert(u.clone());
        }
    }
    assert!(
        (20..=60).contains(&on_service.len()),
        "20% of 200 gave {}",
        on_service.len()
    );
    proxy
        .set_mode("route.products", RouteMode::Canary { percent: 50.0 })
        .await;
    let mut now_service = 0;
    for u in &users {
        let (_, backend, _) = proxy.get_as("/api/products/1", u).await;
        if backend == "service" {
            now_service += 1;
        } else {
            assert!(!on_service.contains(u), "{u} moved back to the monolith");
        }
    }
    assert!(
        now_service > on_service.len() && (70..=130).contains(&now_service),
        "{now_service}"
    );

    // Back to the monolith in one flip.
    proxy.set_mode("route.products", RouteMode::Monolith).await;
    for u in users.iter().take(20) {
        assert_eq!(proxy.get_as("/api/products/1", u).await.1, "monolith");
    }
    let m = proxy.metrics().await;
    assert!(m.contains(r#"strangler_requests_total{backend="service",class="2xx",mode="canary",route="products"}"#), "{m}");
    assert!(m.contains("strangler_request_duration_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_routes_reads_only_and_a_write_canary_writes_too() {
    let (monolith, mstate) = common::monolith_on(testkit::monolith_server(), "shop").await;
    let (service, sstate) = common::monolith_on(testkit::services_server(), "product_svc").await;
    product(&mstate, "10.00").await;
    product(&sstate, "10.00").await;
    let routes = "[[routes]]\nname = \"products\"\nprefix = \"/api/products\"\nflag = \"route.products\"\nservice = \"svc\"\n\n\
                  [[routes]]\nname = \"inventory\"\nprefix = \"/api/inventory\"\nflag = \"route.inventory\"\nservice = \"svc\"\n";
    let proxy = Proxy::start(
        &upstreams(monolith.addr, service.addr, routes),
        &["route.products", "route.inventory"],
    )
    .await;
    proxy
        .set_mode("route.products", RouteMode::Canary { percent: 99.0 })
        .await;
    proxy
        .set_mode("route.inventory", RouteMode::WriteCanary { percent: 99.0 })
        .await;
    let mut checked = 0;
    for i in 0..20 {
        let user = format!("user-{i}");
        let (_, read, _) = proxy.get_as("/api/products/1", &user).await;
        if read != "service" {
            continue;
        }
        checked += 1;
        let write = |path: &'static str| {
            proxy
                .client
                .post(proxy.url(path))
                .header("x-user-id", user.as_str())
                .json(&serde_json::json!({"delta": 1}))
                .send()
        };
        // The same user's write goes to the monolith, which owns the domain's rows...
        let r = write("/api/products/1/inventory/adjust").await.unwrap();
        assert_eq!(r.headers()["x-strangler-backend"], "monolith", "{user}");
        // ...unless the canary is a write canary.
        let r = write("/api/inventory/1").await.unwrap();
        assert_eq!(r.headers()["x-strangler-backend"], "service", "{user}");
    }
    assert!(
        checked >= 15,
        "only {checked} of 20 users on the 99% canary"
    );
    // A write canary splits writes by a key that stays the user's for life: an anonymous
    // visitor's writes (a cookie that changes at login) stay on the monolith.
    let mut anonymous_on_service = 0;
    for _ in 0..20 {
        let r = proxy
            .client
            .post(proxy.url("/api/inventory/1"))
            .json(&serde_json::json!({"delta": 1}))
            .send()
            .await
            .unwrap();
        anonymous_on_service += usize::from(r.headers()["x-strangler-backend"] == "service");
    }
    assert_eq!(
        anonymous_on_service, 0,
        "anonymous writes reached the service"
    );
    // Fully on the service, writes follow.
    proxy.set_mode("route.products", RouteMode::Service).await;
    let r = proxy
        .client
        .post(proxy.url("/api/products/1/inventory/adjust"))
        .header("x-user-id", "user-0")
        .json(&serde_json::json!({"delta": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-strangler-backend"], "service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_serves_the_monolith_and_counts_mismatches() {
    let (monolith, mstate) = common::monolith_on(testkit::monolith_server(), "shop").await;
    let (service, sstate) = common::monolith_on(testkit::services_server(), "product_svc").await;
    product(&mstate, "10.00").await;
    product(&sstate, "12.00").await; // the service disagrees on the price
    let routes = format!(
        "{PRODUCTS}\n[[routes]]\nname = \"inventory\"\npath = \"/api/inventory/{{id}}\"\nflag = \"route.products\"\nservice = \"svc\"\n"
    );
    let proxy = Proxy::start(
        &upstreams(monolith.addr, service.addr, &routes),
        &["route.products"],
    )
    .await;
    proxy.set_mode("route.products", RouteMode::Shadow).await;
    for _ in 0..5 {
        let (s, backend, body) = proxy.get_as("/api/products/1", "u1").await;
        assert_eq!((s, backend.as_str()), (200, "monolith"));
        assert_eq!(
            body["price"], "10.00",
            "the user always gets the monolith's answer"
        );
    }
    let mismatch = r#"strangler_shadow_comparisons_total{result="mismatch",route="products"}"#;
    for _ in 0..100 {
        if proxy.metric(mismatch).await >= 5.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        proxy.metric(mismatch).await,
        5.0,
        "{}",
        proxy.metrics().await
    );
    assert!(
        proxy.log().contains("shadow mismatch"),
        "a sample is logged"
    );
    assert!(proxy.log().contains("body.price"));

    // Once the data agree, so do the answers (the timestamps differ but are ignored by rule).
    let mut c = sstate.pool.get_conn().await.unwrap();
    c.query_drop("UPDATE products SET price = '10.00'")
        .await
        .unwrap();
    let body = common::config_text(
        proxy.port,
        proxy.admin,
        &proxy.flags_path,
        &upstreams(
            monolith.addr,
            service.addr,
            &PRODUCTS.replace(
                "service = \"svc\"\n",
                "service = \"svc\"\nshadow_ignore = [\"created_at\", \"updated_at\"]\n",
            ),
        ),
    );
    std::fs::write(&proxy.config_path, body).unwrap();
    let r: serde_json::Value = proxy
        .client
        .post(proxy.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["config_version"].as_u64().unwrap() >= 2, "{r}");
    proxy.get_as("/api/products/1", "u1").await;
    let matched = r#"strangler_shadow_comparisons_total{result="match",route="products"}"#;
    for _ in 0..100 {
        if proxy.metric(matched).await >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.metric(matched).await, 1.0, "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_learns_noise_from_the_monolith_itself() {
    // Both sides answer with a field that changes on every call ("nanos"): Diffy-style noise.
    let m = Switchboard::default();
    let s = Switchboard::default();
    let monolith = Upstream::start(m.app("same")).await;
    let service = Upstream::start(s.app("same")).await;
    let routes = "[[routes]]\nname = \"echo\"\nprefix = \"/echo\"\nflag = \"route.echo\"\nservice = \"svc\"\nshadow_ignore = [\"headers\"]\n";
    let proxy = Proxy::start(
        &upstreams(monolith.addr, service.addr, routes),
        &["route.echo"],
    )
    .await;
    proxy.set_mode("route.echo", RouteMode::Shadow).await;
    for _ in 0..10 {
        proxy.get_as("/echo/x", "u").await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let matched = r#"strangler_shadow_comparisons_total{result="match",route="echo"}"#;
    for _ in 0..100 {
        if proxy.metric(matched).await >= 8.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let routes: serde_json::Value = proxy.admin_json("/admin/routes").await;
    assert!(
        routes["routes"][0]["shadow_noise"]
            .as_array()
            .unwrap()
            .contains(&"body.nanos".into()),
        "{routes}"
    );
    assert!(
        proxy.metric(matched).await >= 8.0,
        "{}",
        proxy.metrics().await
    );
    // Writes are not mirrored unless the route allows it.
    let before = s.hits.load(std::sync::atomic::Ordering::SeqCst);
    let r = proxy
        .client
        .post(proxy.url("/echo/x"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(s.hits.load(std::sync::atomic::Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_limits_and_anonymous_users() {
    let m = Switchboard::default();
    let monolith = Upstream::start(m.app("monolith")).await;
    let service = Upstream::start(Switchboard::default().app("service")).await;
    let body = format!(
        "{}\n[limits]\nmax_header_bytes = 2048\nmax_body_bytes = 1000\n\n[user_key]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\nheader = \"x-user-id\"\n",
        upstreams(
            monolith.addr,
            service.addr,
            "[[routes]]\nname = \"echo\"\nprefix = \"/echo\"\nflag = \"route.echo\"\nservice = \"svc\"\n"
        )
    );
    let proxy = Proxy::start(&body, &["route.echo"]).await;

    let r = proxy
        .client
        .get(proxy.url("/echo/1"))
        .header("x-request-id", "req-123")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-request-id"], "req-123");
    assert_eq!(
        echoed["headers"]["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    // The client's address is added to X-Forwarded-For, after any addresses already there.
    assert_eq!(echoed["headers"]["x-forwarded-for"], "127.0.0.1");
    let r = proxy
        .client
        .get(proxy.url("/echo/1"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        echoed["headers"]["x-forwarded-for"],
        "203.0.113.9, 127.0.0.1"
    );
    // Two ids, or a broken trace context: replaced, never passed on as they came.
    let r = proxy
        .client
        .get(proxy.url("/echo/1"))
        .header("x-request-id", "first")
        .header("x-request-id", "second")
        .header("traceparent", "00-not-a-trace-01")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-request-id"], id.as_str());
    let tp = echoed["headers"]["traceparent"].as_str().unwrap();
    assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");
    // A request id made by the proxy is the new trace's id.
    assert_eq!(&tp[3..35], id, "{tp}");
    let r = proxy.client.get(proxy.url("/echo/2")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    // An anonymous user gets an id cookie; an invalid JWT is no identity either.
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("strangler_uid=anon-"), "{cookie}");
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert!(
        echoed["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-")
    );
    let r = proxy
        .client
        .get(proxy.url("/echo/3"))
        .header("authorization", "Bearer forged.token.here")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("set-cookie").is_some());
    // A user with the cookie keeps it.
    let r = proxy
        .client
        .get(proxy.url("/echo/4"))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("set-cookie").is_none());

    let r = proxy
        .client
        .get(proxy.url("/echo/big"))
        .header("x-big", "a".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "request_header_fields_too_large");
    let r = proxy
        .client
        .post(proxy.url("/echo/body"))
        .body("x".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Chunked bodies without a length are cut off at the limit as well.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    let chunk = "x".repeat(800);
    raw.write_all(
        format!(
            "POST /echo/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 64];
    let n = raw.read(&mut answer).await.unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // Malformed HTTP gets a 400 and the proxy keeps serving.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    raw.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = raw.read(&mut answer).await.unwrap_or(0);
    assert!(n == 0 || String::from_utf8_lossy(&answer[..n]).contains("400"));
    assert_eq!(proxy.get_as("/echo/ok", "u").await.0, 200);
    let m = proxy.metrics().await;
    assert!(
        m.contains(r#"strangler_rejected_total{reason="headers_too_large"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_routes_go_to_the_monolith_or_404_as_configured() {
    let monolith = Upstream::start(Switchboard::default().app("monolith")).await;
    let service = Upstream::start(Switchboard::default().app("service")).await;
    let routes = "[[routes]]\nname = \"echo\"\nprefix = \"/echo\"\nflag = \"route.echo\"\nservice = \"svc\"\n";
    let proxy = Proxy::start(
        &upstreams(monolith.addr, service.addr, routes),
        &["route.echo"],
    )
    .await;
    let (status, backend, body) = proxy.get_as("/somewhere/else", "u").await;
    assert_eq!((status, backend.as_str()), (200, "monolith"));
    assert_eq!(body["served_by"], "monolith");

    let strict = format!(
        "unknown_routes = \"not_found\"\n{}",
        upstreams(monolith.addr, service.addr, routes)
    );
    let proxy = Proxy::start(&strict, &["route.echo"]).await;
    let (status, _, body) = proxy.get_as("/somewhere/else", "u").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    // A route whose flag is missing is the safe default: the monolith.
    let no_flag = Proxy::start(&upstreams(monolith.addr, service.addr, routes), &[]).await;
    assert_eq!(no_flag.get_as("/echo/1", "u").await.1, "monolith");
}

//! The monolith as a running service: health, readiness, metrics, unknown routes, one session
//! over real HTTP on a bound port, the deterministic seeder, and the CLI's config checks.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Shop, assert_error};
use mysql_async::prelude::*;
use serde_json::json;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let shop = Shop::new().await;
    let (s, v) = shop.call("GET", "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = shop.call("GET", "/readyz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));
    shop.call("GET", "/api/products/77", None, None).await;
    let (s, text) = shop.call("GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(
        text.contains(
            r#"shop_http_requests_total{method="GET",route="/api/products/{id}",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("shop_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn readiness_fails_when_migrations_are_missing() {
    let shop = Shop::new().await;
    shop.sql("DELETE FROM schema_migrations").await;
    let (s, v) = shop.call("GET", "/readyz", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let shop = Shop::new().await;
    assert_error(
        shop.call("GET", "/api/nope", None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (s, v) = shop.call("DELETE", "/api/products", None, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["error"]["message"].is_string());
    let req = Request::get("/api/products?per_page=-1")
        .body(Body::empty())
        .unwrap();
    assert_error(shop.raw(req).await, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn a_session_over_real_http() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    shop.product(&admin, "HTTP-1", "12.00", 3).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = shop.app.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/api/users/register"))
        .json(&json!({"email": "web@example.com", "password": "password123", "name": "Web"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let login: serde_json::Value = client
        .post(format!("{base}/api/users/login"))
        .json(&json!({"email": "web@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let products: serde_json::Value = client
        .get(format!("{base}/api/products"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = products["items"][0]["id"].as_u64().unwrap();
    let r = client
        .post(format!("{base}/api/orders"))
        .bearer_auth(token)
        .json(&json!({"items": [{"product_id": id, "quantity": 3}], "payment_token": "tok_visa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{base}/api/orders"))
        .bearer_auth(token)
        .json(&json!({"items": [{"product_id": id, "quantity": 1}], "payment_token": "tok_visa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = client
        .get(format!("{base}/api/users/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    server.abort();
}

async fn fingerprint(url: &str) -> Vec<(String, String)> {
    let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
    let mut out = Vec::new();
    for table in [
        "users",
        "products",
        "inventory",
        "orders",
        "order_items",
        "payments",
        "notifications",
    ] {
        let sum: Option<(String, String)> = conn
            .query_first(format!("CHECKSUM TABLE {table}"))
            .await
            .unwrap();
        let (_, sum) = sum.unwrap();
        out.push((table.to_string(), sum));
    }
    out
}

#[tokio::test]
async fn seeding_is_deterministic_and_refuses_a_full_schema() {
    use legacy_monolith::seed::{SeedError, SeedOptions, run};
    let opts = SeedOptions {
        users: 250,
        products: 40,
        orders: 300,
        batch: 64,
        connections: 3,
        ..SeedOptions::default()
    };
    let a = Shop::new().await;
    let report = run(&a.state.pool, &opts).await.unwrap();
    assert_eq!(a.scalar("SELECT COUNT(*) FROM users").await, 251);
    assert_eq!(a.scalar("SELECT COUNT(*) FROM products").await, 40);
    assert_eq!(a.scalar("SELECT COUNT(*) FROM orders").await, 300);
    assert_eq!(
        report.rows() as i64,
        a.scalar(
            "SELECT (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM products) * 2 + \
             (SELECT COUNT(*) FROM orders) * 3 + (SELECT COUNT(*) FROM order_items)"
        )
        .await
    );
    // Another run with another connection count gives the same rows.
    let b = Shop::new().await;
    run(
        &b.state.pool,
        &SeedOptions {
            connections: 1,
            ..opts.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(fingerprint(&a.db_url).await, fingerprint(&b.db_url).await);
    let c = Shop::new().await;
    run(
        &c.state.pool,
        &SeedOptions {
            seed: 7,
            ..opts.clone()
        },
    )
    .await
    .unwrap();
    assert_ne!(fingerprint(&a.db_url).await, fingerprint(&c.db_url).await);

    assert!(matches!(
        run(&a.state.pool, &opts).await,
        Err(SeedError::NotEmpty("users"))
    ));
    // Seeded accounts log in with the documented password, through the API.
    let admin = a.login("admin@example.com").await;
    let (s, me) = a.call("GET", "/api/users/me", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["role"], "admin");
    let (s, _) = a.call("GET", "/api/orders/1", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    // Seeded stock never starts negative and every order has lines.
    assert!(a.scalar("SELECT MIN(available) FROM inventory").await >= 0);
    assert_eq!(
        a.scalar("SELECT COUNT(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id)")
            .await,
        0
    );
}

fn monolith_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_legacy-monolith"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SHOP_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_good_files_and_names_the_bad_line() {
    let dir = std::env::temp_dir().join(format!("shop-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:9999\"\n[jwt]\nttl_secs = 60\n").unwrap();
    let out = monolith_cli(&["--config", good.to_str().unwrap(), "--check-config"], &[]);
    let out = testkit::assert_success(&out, "legacy-monolith --check-config");
    assert!(out.contains("127.0.0.1:9999"), "{out}");

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:9999\"\n[jwt]\nttl_secs = \"soon\"\n",
    )
    .unwrap();
    let out = monolith_cli(&["--config", bad.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 3") && err.contains("ttl_secs"),
        "{err}"
    );

    let out = monolith_cli(&["--check-config"], &[("SHOP_JWT_SECRET", "too-short")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("jwt.secret"));

    let out = monolith_cli(
        &["--config", "/nonexistent/shop.toml", "--check-config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/shop.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

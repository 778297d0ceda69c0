//! Shared helpers for the monolith's integration tests: a fresh `shop` database on the shared
//! private MariaDB server per test, the real application router, and JSON request helpers.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use legacy_monolith::{AppState, Config};
use mysql_async::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt as _;

pub struct Shop {
    pub app: Router,
    pub state: AppState,
    pub db_url: String,
}

impl Shop {
    pub async fn new() -> Self {
        let db = testkit::monolith_server()
            .create_database("shop")
            .await
            .expect("fresh database");
        let config = Config {
            database_url: db.url.clone(),
            max_body_bytes: 64 * 1024,
            ..Config::default()
        };
        let state = legacy_monolith::prepare(config).await.expect("prepare");
        Self {
            app: legacy_monolith::app(state.clone()),
            state,
            db_url: db.url,
        }
    }

    /// Sends a request; `body` is JSON when given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_traced(method, path, token, body, None).await
    }

    /// [`Shop::call`] with a W3C `traceparent` header when given.
    pub async fn call_traced(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        traceparent: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.raw(req).await
    }

    pub async fn raw(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    pub async fn register(&self, email: &str) -> Value {
        let (s, v) = self
            .call(
                "POST",
                "/api/users/register",
                None,
                Some(json!({"email": email, "password": "password123", "name": "Test User"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    pub async fn login(&self, email: &str) -> String {
        let (s, v) = self
            .call(
                "POST",
                "/api/users/login",
                None,
                Some(json!({"email": email, "password": "password123"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// A registered customer's token.
    pub async fn customer(&self, email: &str) -> String {
        self.register(email).await;
        self.login(email).await
    }

    /// A registered administrator's token.
    pub async fn admin(&self) -> String {
        self.register("admin@shop.test").await;
        self.sql("UPDATE users SET role = 'admin' WHERE email = 'admin@shop.test'")
            .await;
        self.login("admin@shop.test").await
    }

    pub async fn sql(&self, sql: &str) {
        let mut c = self.state.pool.get_conn().await.unwrap();
        c.query_drop(sql).await.unwrap();
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        let mut c = self.state.pool.get_conn().await.unwrap();
        c.query_first::<i64, _>(sql).await.unwrap().unwrap_or(0)
    }

    /// Creates a product (as `admin`) with `stock` and returns its id.
    pub async fn product(&self, admin: &str, sku: &str, price: &str, stock: i64) -> u64 {
        let (s, v) = self
            .call(
                "POST",
                "/api/products",
                Some(admin),
                Some(json!({
                    "sku": sku, "name": format!("Product {sku}"), "description": "A product",
                    "category": "misc", "price": price, "initial_stock": stock
                })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_u64().unwrap()
    }
}

/// Asserts an error response: status and `error.code`.
#[track_caller]
pub fn assert_error(actual: (StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(actual.0, status, "{}", actual.1);
    assert_eq!(actual.1["error"]["code"], code, "{}", actual.1);
    assert!(actual.1["error"]["message"].is_string(), "{}", actual.1);
}

//! notification-service against a real MariaDB server, a real SMTP server (testkit's sink) and
//! local SMS and push endpoints: events in the inbox become e-mail, SMS and push once each, a
//! replayed event sends nothing more, a failing provider is retried then dead-lettered, and
//! `/api/notifications` shows what went out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use mysql_async::prelude::*;
use serde_json::{Value, json};
use service_kit::jwt::{Audience, Keyring, LEGACY_KID};
use testkit::contract::{Body, Side};

type Calls = Arc<Mutex<Vec<Value>>>;

/// An HTTP provider that records each call and answers `status`.
async fn provider(status: u16) -> (Side, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/send",
        post(move |axum::Json(v): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(v);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    (Side::serve(app).await, calls)
}

/// The monolith's kind of token for user `id` (the legacy HS256 secret).
fn token(id: u64) -> String {
    Keyring::new(Audience {
        issuer: "shop-monolith".into(),
        audience: "shop".into(),
        ttl_secs: 600,
    })
    .with_legacy_secret("strangler-dev-secret-change-me-0123456789")
    .signing_with(LEGACY_KID)
    .unwrap()
    .issue(id, "x@shop.test", "customer")
    .unwrap()
}

async fn eventually<F: Fn() -> bool>(what: &str, check: F) {
    for _ in 0..150 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_messages_once_with_retries_and_dead_letters() {
    let smtp = testkit::smtp_sink::SmtpSink::start().await.unwrap();
    let (sms, sms_calls) = provider(200).await;
    let (push, push_calls) = provider(500).await;
    let db = testkit::services_server()
        .create_database("notification_svc")
        .await
        .unwrap();
    let mut config = notification_service::Config::default();
    config.server.database_url = db.url.clone();
    config.smtp.port = smtp.port;
    config.sms.url = format!("{}/send", sms.base);
    config.push.url = format!("{}/send", push.base);
    config.delivery.max_attempts = 3;
    config.delivery.backoff_ms = 50;
    config.delivery.max_backoff_ms = 200;
    config.delivery.poll_ms = 100;
    let svc = Side::serve(notification_service::app(
        notification_service::prepare(config).await.unwrap(),
    ))
    .await;
    let mut c = mysql_async::Conn::from_url(db.url.as_str()).await.unwrap();
    let insert = "INSERT IGNORE INTO inbox (id, aggregatetype, aggregateid, type, payload) VALUES (?, ?, ?, ?, ?)";

    // A registration (as cdc-sync writes it from user-service's outbox): a welcome e-mail.
    let welcome = "11111111-1111-4111-8111-111111111111";
    c.exec_drop(
        insert,
        (
            welcome,
            "user",
            "5",
            "user.registered",
            json!({"user_id": 5, "name": "Eve", "email": "eve@shop.test"}).to_string(),
        ),
    )
    .await
    .unwrap();
    eventually("the welcome e-mail", || smtp.messages().len() == 1).await;
    let mail = &smtp.messages()[0];
    assert_eq!(mail.to, vec!["eve@shop.test".to_string()]);
    assert!(
        mail.data.contains("Subject: Welcome to the shop"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains(welcome),
        "Message-ID carries the event id: {}",
        mail.data
    );
    assert!(mail.data.contains("Hello Eve"), "{}", mail.data);

    // The same event again (a replay after a crash upstream): nothing more is sent.
    c.exec_drop(
        insert,
        (
            welcome,
            "user",
            "5",
            "user.registered",
            json!({"user_id": 5, "name": "Eve", "email": "eve@shop.test"}).to_string(),
        ),
    )
    .await
    .unwrap();
    c.exec_drop("REPLACE INTO inbox (id, aggregatetype, aggregateid, type, payload) VALUES (?, 'user', '5', 'user.registered', '{\"user_id\":5}')", (welcome,)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        smtp.messages().len(),
        1,
        "a replayed event sent a second e-mail"
    );

    // Eve turns SMS and push on; bad preferences are refused.
    let t = token(5);
    let (st, v) = svc
        .call(
            "PUT",
            "/api/notifications/preferences",
            Some(&t),
            Body::Json(json!({"sms": true})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["fields"][0]["field"].as_str()),
        (422, Some("sms")),
        "{v}"
    );
    let (st, v) = svc.call("PUT", "/api/notifications/preferences", Some(&t),
        Body::Json(json!({"sms": true, "phone": "+44 20 7946 0958", "push": true, "push_token": "device-1"}))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"email": true, "sms": true, "push": true, "phone": "+44 20 7946 0958", "push_token": "device-1"})
    );

    // An order: e-mail and SMS go out; the push provider fails every time → dead letter.
    let placed = "22222222-2222-4222-8222-222222222222";
    c.exec_drop(
        insert,
        (
            placed,
            "order",
            "9",
            "order.placed",
            json!({"order_id": 9, "user_id": 5, "total": "25.00"}).to_string(),
        ),
    )
    .await
    .unwrap();
    eventually("the confirmation e-mail and SMS", || {
        smtp.messages().len() == 2 && sms_calls.lock().unwrap().len() == 1
    })
    .await;
    assert!(
        smtp.messages()[1]
            .data
            .contains("Subject: Your order 9 is confirmed")
    );
    assert_eq!(sms_calls.lock().unwrap()[0]["to"], "+44 20 7946 0958");
    let mut dead: Option<(String, u32)> = None;
    for _ in 0..100 {
        dead = c
            .query_first("SELECT channel, attempts FROM dead_letters")
            .await
            .unwrap();
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead, Some(("push".to_string(), 3)));
    assert_eq!(
        push_calls.lock().unwrap().len(),
        3,
        "tried max_attempts times"
    );

    // An event nobody has a template for is remembered and left alone.
    c.exec_drop(
        insert,
        (
            "33333333-3333-4333-8333-333333333333",
            "user",
            "5",
            "user.renamed",
            "{\"user_id\":5}",
        ),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let none: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM deliveries WHERE channel = 'none'")
        .await
        .unwrap();
    assert_eq!(none, Some(1));
    c.disconnect().await.unwrap();

    // What went out, as the monolith's /api/notifications shows it (newest first).
    let (st, v) = svc
        .call("GET", "/api/notifications", Some(&t), Body::None)
        .await;
    assert_eq!(st, 200, "{v}");
    let items: Vec<(String, String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["channel"].as_str().unwrap().into(),
                n["template"].as_str().unwrap().into(),
                n["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        items,
        vec![
            s("push", "order_confirmation", "failed"),
            s("sms", "order_confirmation", "sent"),
            s("email", "order_confirmation", "sent"),
            s("email", "welcome", "sent"),
        ]
    );
    assert_eq!(
        v["items"][3]["payload"],
        json!({"name": "Eve", "email": "eve@shop.test"})
    );
    let (st, _) = svc
        .call("GET", "/api/notifications", None, Body::None)
        .await;
    assert_eq!(st, 401);
    let (_, metrics) = svc.call("GET", "/metrics", None, Body::None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("notification_service_messages_total{channel=\"push\",outcome=\"dead\"} 1")
    );
}

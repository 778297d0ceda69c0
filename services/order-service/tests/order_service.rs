//! order-service over real HTTP, real MariaDB servers, a real product-service and the payment
//! gateway simulator, beside the real monolith: the same order requests get equivalent answers;
//! a gateway that times out or fails after charging charges once; an unreachable gateway leaves
//! no stock held; sagas interrupted mid-way are finished or undone by the recovery loop.

use std::time::Duration;

use mysql_async::prelude::*;
use serde_json::{Value, json};
use testkit::contract::{Body, Side, differences};

struct Shop {
    monolith: Side,
    monolith_db: String,
    products: Side,
    orders: Side,
    orders_db: String,
    gateway: Side,
    admin: String,
}

async fn token(side: &Side, db: &str, email: &str, admin: bool) -> String {
    let (s, v) = side
        .call(
            "POST",
            "/api/users/register",
            None,
            Body::Json(json!({"email": email, "password": "password123", "name": "T"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    if admin {
        let mut c = mysql_async::Conn::from_url(db).await.unwrap();
        c.exec_drop("UPDATE users SET role = 'admin' WHERE email = ?", (email,))
            .await
            .unwrap();
        c.disconnect().await.unwrap();
    }
    let (_, v) = side
        .call(
            "POST",
            "/api/users/login",
            None,
            Body::Json(json!({"email": email, "password": "password123"})),
        )
        .await;
    v["token"].as_str().unwrap().to_string()
}

/// The monolith, product-service, the gateway simulator and order-service wired together;
/// `payment_url` overrides the gateway's address.
async fn shop(payment_url: Option<String>) -> Shop {
    let mdb = testkit::monolith_server()
        .create_database("shop")
        .await
        .unwrap();
    let monolith = Side::serve(legacy_monolith::app(
        legacy_monolith::prepare(legacy_monolith::Config {
            database_url: mdb.url.clone(),
            ..legacy_monolith::Config::default()
        })
        .await
        .unwrap(),
    ))
    .await
    .conforming_to(testkit::openapi::Spec::named("legacy-monolith").unwrap());
    let pdb = testkit::services_server()
        .create_database("product_svc")
        .await
        .unwrap();
    let mut pc = product_service::Config::default();
    pc.server.database_url = pdb.url.clone();
    let products = Side::serve(product_service::app(
        product_service::prepare(pc).await.unwrap(),
    ))
    .await
    .conforming_to(testkit::openapi::Spec::named("product-service").unwrap());
    let gateway = Side::serve(testkit::payment_sim::router()).await;
    let odb = testkit::services_server()
        .create_database("order_svc")
        .await
        .unwrap();
    let mut oc = order_service::Config::default();
    oc.server.database_url = odb.url.clone();
    oc.peers.product_url = products.base.clone();
    oc.peers.payment_url = payment_url.unwrap_or_else(|| gateway.base.clone());
    oc.peers.timeout_ms = 1_000;
    oc.peers.lease_secs = 10;
    let orders = Side::serve(order_service::app(
        order_service::prepare(oc).await.unwrap(),
    ))
    .await
    .conforming_to(testkit::openapi::Spec::named("order-service").unwrap());
    let admin = token(&monolith, &mdb.url, "admin@shop.test", true).await;
    // The same catalog on both sides.
    for (sku, stock, active) in [("P-1", 10, true), ("P-2", 3, true), ("P-3", 5, false)] {
        let body = Body::Json(
            json!({"sku": sku, "name": sku, "category": "x", "price": "12.50",
                                     "initial_stock": stock, "active": active}),
        );
        for side in [&monolith, &products] {
            let (s, v) = side
                .call("POST", "/api/products", Some(&admin), body.clone())
                .await;
            assert_eq!(s, 201, "{v}");
        }
    }
    Shop {
        monolith,
        monolith_db: mdb.url,
        products,
        orders,
        orders_db: odb.url,
        gateway,
        admin,
    }
}

fn order(items: Value, token: &str) -> Body {
    Body::Json(json!({"items": items, "payment_token": token, "shipping_address": " 1 Main St "}))
}

const VOLATILE: &[&str] = &["created_at", "updated_at", "reference"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_order_requests_get_equivalent_answers_from_the_monolith_and_the_service() {
    let s = shop(None).await;
    let ann = token(&s.monolith, &s.monolith_db, "ann@shop.test", false).await;
    let bob = token(&s.monolith, &s.monolith_db, "bob@shop.test", false).await;
    let (a, b) = (Some(ann.as_str()), Some(bob.as_str()));
    let script: Vec<(&str, &str, &str, Option<&str>, Body)> = vec![
        (
            "place",
            "POST",
            "/api/orders",
            a,
            order(
                json!([{"product_id": 2, "quantity": 2}, {"product_id": 1, "quantity": 1}]),
                "tok_visa",
            ),
        ),
        (
            "place again",
            "POST",
            "/api/orders",
            a,
            order(json!([{"product_id": 1, "quantity": 3}]), "tok_visa"),
        ),
        ("get own", "GET", "/api/orders/1", a, Body::None),
        ("get someone else's", "GET", "/api/orders/1", b, Body::None),
        ("list own", "GET", "/api/orders?per_page=10", a, Body::None),
        ("list other", "GET", "/api/orders", b, Body::None),
        ("cancel", "POST", "/api/orders/1/cancel", a, Body::None),
        (
            "cancel again",
            "POST",
            "/api/orders/1/cancel",
            a,
            Body::None,
        ),
        (
            "cancel someone else's",
            "POST",
            "/api/orders/2/cancel",
            b,
            Body::None,
        ),
        (
            "insufficient stock",
            "POST",
            "/api/orders",
            a,
            order(json!([{"product_id": 2, "quantity": 50}]), "tok_visa"),
        ),
        (
            "declined",
            "POST",
            "/api/orders",
            a,
            order(json!([{"product_id": 1, "quantity": 1}]), "tok_decline"),
        ),
        (
            "unrecognised token",
            "POST",
            "/api/orders",
            a,
            order(json!([{"product_id": 1, "quantity": 1}]), "visa"),
        ),
        (
            "gateway unavailable",
            "POST",
            "/api/orders",
            a,
            order(json!([{"product_id": 1, "quantity": 1}]), "tok_unavailable"),
        ),
        (
            "unknown and inactive products",
            "POST",
            "/api/orders",
            a,
            order(
                json!([{"product_id": 999, "quantity": 1}, {"product_id": 3, "quantity": 1}]),
                "tok_visa",
            ),
        ),
        (
            "invalid",
            "POST",
            "/api/orders",
            a,
            Body::Json(
                json!({"items": [{"product_id": 1, "quantity": 0}, {"product_id": 1, "quantity": 1}], "payment_token": ""}),
            ),
        ),
        (
            "empty",
            "POST",
            "/api/orders",
            a,
            Body::Json(json!({"items": [], "payment_token": "tok_visa"})),
        ),
        (
            "no token",
            "POST",
            "/api/orders",
            None,
            order(json!([{"product_id": 1, "quantity": 1}]), "tok_visa"),
        ),
        ("bad page", "GET", "/api/orders?page=0", a, Body::None),
        ("list after all that", "GET", "/api/orders", a, Body::None),
    ];
    let mut diffs = Vec::new();
    for (name, method, path, token, body) in &script {
        let m = s.monolith.call(method, path, *token, body.clone()).await;
        let o = s.orders.call(method, path, *token, body.clone()).await;
        diffs.extend(differences(name, &m, &o, VOLATILE));
    }
    // Stock ends the same on both sides: taken by the paid order, back from the cancelled one,
    // untouched by every failure.
    for id in [1, 2, 3] {
        let path = format!("/api/products/{id}/inventory");
        let m = s.monolith.call("GET", &path, None, Body::None).await;
        let p = s.products.call("GET", &path, None, Body::None).await;
        diffs.extend(differences(&format!("stock of {id}"), &m, &p, VOLATILE));
    }
    assert!(diffs.is_empty(), "answers differ:\n{}", diffs.join("\n"));
    // Every answer of both sides, happy and error paths, is what their OpenAPI files say.
    s.monolith.assert_conformance(20);
    s.orders.assert_conformance(10);
    s.products.assert_conformance(3);
    // The placed orders and the cancellation are in the outbox.
    let mut c = mysql_async::Conn::from_url(s.orders_db.as_str())
        .await
        .unwrap();
    let events: Vec<String> = c
        .query("SELECT type FROM outbox ORDER BY created_at, type")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    assert_eq!(
        events.iter().filter(|e| *e == "order.placed").count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "order.cancelled").count(),
        1,
        "{events:?}"
    );
    // One charge per paid order, one refund for the cancellation.
    let (_, stats) = s.gateway.call("GET", "/stats", None, Body::None).await;
    assert_eq!(stats, json!({"charged": 2, "refunded": 1}));
    let _ = &s.admin;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_failing_gateway_charges_once_and_an_unreachable_one_holds_no_stock() {
    let s = shop(None).await;
    let ann = token(&s.monolith, &s.monolith_db, "ann@shop.test", false).await;
    // Times out on the first try (1 s client timeout, answer after 10 s): asked again with the
    // same idempotency key, it answers the charge it already made.
    let (st, v) = s
        .orders
        .call(
            "POST",
            "/api/orders",
            Some(&ann),
            order(json!([{"product_id": 1, "quantity": 1}]), "tok_timeout"),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (201, Some("paid")), "{v}");
    // Charges, then answers 500: the retry finds the charge.
    let (st, v) = s
        .orders
        .call(
            "POST",
            "/api/orders",
            Some(&ann),
            order(
                json!([{"product_id": 1, "quantity": 1}]),
                "tok_fail_after_charge",
            ),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (201, Some("paid")), "{v}");
    let (_, stats) = s.gateway.call("GET", "/stats", None, Body::None).await;
    assert_eq!(
        stats,
        json!({"charged": 2, "refunded": 0}),
        "never charged twice"
    );
    let stock = |side: Side| async move {
        side.call("GET", "/api/products/1/inventory", None, Body::None)
            .await
            .1["available"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(stock(s.products.clone()).await, 8);

    // A gateway nobody answers at: 502, the reservation released, nothing held.
    let closed = format!("http://127.0.0.1:{}", testkit::free_port());
    let t = shop(Some(closed)).await;
    let bob = token(&t.monolith, &t.monolith_db, "bob@shop.test", false).await;
    let (st, v) = t
        .orders
        .call(
            "POST",
            "/api/orders",
            Some(&bob),
            order(json!([{"product_id": 1, "quantity": 4}]), "tok_visa"),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (502, Some("payment_unavailable")),
        "{v}"
    );
    assert_eq!(stock(t.products.clone()).await, 10);
    let mut c = mysql_async::Conn::from_url(t.orders_db.as_str())
        .await
        .unwrap();
    let orders: Option<i64> = c.query_first("SELECT COUNT(*) FROM orders").await.unwrap();
    // The refund of a charge that may have happened waits for the gateway: the saga stays open
    // for the recovery loop.
    let open: Option<String> = c.query_first("SELECT state FROM sagas").await.unwrap();
    c.disconnect().await.unwrap();
    assert_eq!((orders, open.as_deref()), (Some(0), Some("compensating")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_sagas_are_finished_or_undone_by_the_recovery_loop() {
    let s = shop(None).await;
    let internal = Some(product_service::config::DEV_INTERNAL_TOKEN);
    let request = json!({"items": [[1, 2, 1250]], "shipping_address": null, "payment_token": "tok_visa", "total_cents": 2500});
    // What three drivers left behind when they died, with their leases run out:
    // 101 reserved stock and died; 102 reserved and was charged; 103 reserved, died mid-charge.
    for id in [101, 102, 103] {
        let (st, v) = s.products.call("POST", "/internal/reservations", internal,
            Body::Json(json!({"id": format!("saga-{id}"), "items": [{"product_id": 1, "quantity": 2}]}))).await;
        assert_eq!(st, 201, "{v}");
    }
    let gw = reqwest::Client::new();
    let r = gw
        .post(format!("{}/v1/charges", s.gateway.base))
        .header("Idempotency-Key", "saga-102")
        .json(&json!({"amount_cents": 2500, "currency": "USD", "token": "tok_visa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let mut c = mysql_async::Conn::from_url(s.orders_db.as_str())
        .await
        .unwrap();
    for (id, step) in [(101, "reserving"), (102, "charging"), (103, "charging")] {
        c.exec_drop(
            "INSERT INTO sagas (id, user_id, request, state, lease_until) VALUES (?, 7, ?, ?, NOW(3) - INTERVAL 1 SECOND)",
            (id, request.to_string(), step),
        )
        .await
        .unwrap();
    }
    // The recovery loop runs every 2 s.
    let mut states: Vec<(u64, String)> = Vec::new();
    for _ in 0..100 {
        states = c
            .query("SELECT id, state FROM sagas ORDER BY id")
            .await
            .unwrap();
        if states.iter().all(|(_, st)| st == "done" || st == "failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        states,
        vec![
            (101, "failed".to_string()),
            (102, "done".to_string()),
            (103, "failed".to_string())
        ]
    );
    let orders: Vec<(u64, String)> = c.query("SELECT user_id, status FROM orders").await.unwrap();
    c.disconnect().await.unwrap();
    assert_eq!(
        orders,
        vec![(7, "paid".to_string())],
        "the charged saga became an order"
    );
    for (id, want) in [(101, "released"), (102, "committed"), (103, "released")] {
        let (_, v) = s
            .products
            .call(
                "GET",
                &format!("/internal/reservations/saga-{id}"),
                internal,
                Body::None,
            )
            .await;
        assert_eq!(v["status"], want, "saga-{id}: {v}");
    }
    let (_, inv) = s
        .products
        .call("GET", "/api/products/1/inventory", None, Body::None)
        .await;
    assert_eq!(
        inv["available"], 8,
        "only the completed order keeps its stock"
    );
    let _ = &s.admin;
}

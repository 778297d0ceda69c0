//! Orders and notifications against a real MariaDB: placing (stock, payment, notification in one
//! transaction), failures that write nothing, ownership, cancel with refund, and concurrent orders
//! that never drive stock below zero.

mod common;

use axum::http::StatusCode;
use common::{Shop, assert_error};
use serde_json::json;

async fn counts(shop: &Shop) -> (i64, i64, i64) {
    (
        shop.scalar("SELECT COUNT(*) FROM orders").await,
        shop.scalar("SELECT COUNT(*) FROM payments").await,
        shop.scalar("SELECT COUNT(*) FROM notifications WHERE template <> 'welcome'")
            .await,
    )
}

async fn stock(shop: &Shop, id: u64) -> i64 {
    shop.scalar(&format!(
        "SELECT available FROM inventory WHERE product_id = {id}"
    ))
    .await
}

#[tokio::test]
async fn placing_an_order_takes_stock_charges_and_notifies() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    let token = shop.customer("gina@example.com").await;
    let a = shop.product(&admin, "A", "10.50", 5).await;
    let b = shop.product(&admin, "B", "2.25", 5).await;
    let (s, order) = shop
        .call(
            "POST",
            "/api/orders",
            Some(&token),
            Some(json!({
                "items": [{"product_id": b, "quantity": 2}, {"product_id": a, "quantity": 1}],
                "payment_token": "tok_visa",
                "shipping_address": "1 Main St"
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "paid");
    assert_eq!(order["total"], "15.00");
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(order["payment"]["status"], "captured");
    assert_eq!(order["payment"]["amount"], "15.00");
    assert_eq!(stock(&shop, a).await, 4);
    assert_eq!(stock(&shop, b).await, 3);
    assert_eq!(counts(&shop).await, (1, 1, 1));

    let id = order["id"].as_u64().unwrap();
    let (s, got) = shop
        .call("GET", &format!("/api/orders/{id}"), Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, order);

    let (s, notes) = shop
        .call("GET", "/api/notifications", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let templates: Vec<&str> = notes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["template"].as_str().unwrap())
        .collect();
    assert_eq!(templates, ["order_confirmation", "welcome"]);
    assert_eq!(notes["items"][0]["payload"]["order_id"], id);
}

#[tokio::test]
async fn failed_orders_write_nothing() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    let token = shop.customer("hank@example.com").await;
    let a = shop.product(&admin, "A", "5.00", 2).await;
    let b = shop.product(&admin, "B", "5.00", 10).await;
    let order =
        |items: serde_json::Value, card: &str| json!({"items": items, "payment_token": card});

    // Not enough of A: B's stock must not move either.
    assert_error(
        shop.call(
            "POST",
            "/api/orders",
            Some(&token),
            Some(order(
                json!([{"product_id": b, "quantity": 1}, {"product_id": a, "quantity": 3}]),
                "tok_visa",
            )),
        )
        .await,
        StatusCode::CONFLICT,
        "insufficient_stock",
    );
    assert_error(
        shop.call(
            "POST",
            "/api/orders",
            Some(&token),
            Some(order(
                json!([{"product_id": a, "quantity": 1}]),
                "tok_declined",
            )),
        )
        .await,
        StatusCode::PAYMENT_REQUIRED,
        "payment_declined",
    );
    assert_error(
        shop.call(
            "POST",
            "/api/orders",
            Some(&token),
            Some(order(
                json!([{"product_id": a, "quantity": 1}]),
                "tok_unavailable",
            )),
        )
        .await,
        StatusCode::BAD_GATEWAY,
        "payment_unavailable",
    );
    assert_eq!(stock(&shop, a).await, 2);
    assert_eq!(stock(&shop, b).await, 10);
    assert_eq!(counts(&shop).await, (0, 0, 0));
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM order_items").await, 0);
}

#[tokio::test]
async fn order_input_is_validated() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    let token = shop.customer("ivy@example.com").await;
    let a = shop.product(&admin, "A", "5.00", 2).await;
    shop.sql("UPDATE products SET active = 0 WHERE sku = 'A'")
        .await;
    let b = shop.product(&admin, "B", "5.00", 2).await;
    for (body, field) in [
        (json!({"items": [], "payment_token": "tok_visa"}), "items"),
        (
            json!({"items": [{"product_id": b, "quantity": 0}], "payment_token": "tok_visa"}),
            "items[0].quantity",
        ),
        (
            json!({"items": [{"product_id": b, "quantity": 101}], "payment_token": "tok_visa"}),
            "items[0].quantity",
        ),
        (
            json!({"items": [{"product_id": b, "quantity": 1}, {"product_id": b, "quantity": 1}],
                   "payment_token": "tok_visa"}),
            "items[1].product_id",
        ),
        (
            json!({"items": [{"product_id": b, "quantity": 1}], "payment_token": ""}),
            "payment_token",
        ),
        (
            json!({"items": [{"product_id": 424242, "quantity": 1}], "payment_token": "tok_visa"}),
            "items[0].product_id",
        ),
        (
            json!({"items": [{"product_id": a, "quantity": 1}], "payment_token": "tok_visa"}),
            "items[0].product_id",
        ),
    ] {
        let (s, v) = shop
            .call("POST", "/api/orders", Some(&token), Some(body))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["fields"][0]["field"], field, "{v}");
    }
    assert_error(
        shop.call(
            "POST",
            "/api/orders",
            None,
            Some(json!({"items": [{"product_id": b, "quantity": 1}], "payment_token": "tok_visa"})),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        shop.call(
            "POST",
            "/api/orders",
            Some(&token),
            Some(
                json!({"items": [{"product_id": -1, "quantity": 1}], "payment_token": "tok_visa"}),
            ),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(counts(&shop).await.0, 0);
}

#[tokio::test]
async fn orders_are_private_listed_newest_first_and_cancellable_once() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    let jo = shop.customer("jo@example.com").await;
    let kim = shop.customer("kim@example.com").await;
    let p = shop.product(&admin, "P", "4.00", 10).await;
    let mut ids = Vec::new();
    for q in [1, 2] {
        let (s, o) = shop
            .call(
                "POST",
                "/api/orders",
                Some(&jo),
                Some(json!({"items": [{"product_id": p, "quantity": q}], "payment_token": "tok_visa"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{o}");
        ids.push(o["id"].as_u64().unwrap());
    }
    let (_, list) = shop.call("GET", "/api/orders", Some(&jo), None).await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"][0]["id"], ids[1]);
    assert_eq!(list["items"][1]["id"], ids[0]);
    let (_, empty) = shop.call("GET", "/api/orders", Some(&kim), None).await;
    assert_eq!(empty["total"], 0);
    assert_error(
        shop.call("GET", "/api/orders?per_page=0", Some(&jo), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    let first = format!("/api/orders/{}", ids[0]);
    assert_error(
        shop.call("GET", &first, Some(&kim), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (s, _) = shop.call("GET", &first, Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_error(
        shop.call("GET", "/api/orders/987654", Some(&jo), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Someone else cannot cancel it; the owner can, once.
    let cancel = format!("{first}/cancel");
    assert_error(
        shop.call("POST", &cancel, Some(&kim), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(stock(&shop, p).await, 7);
    let (s, c) = shop.call("POST", &cancel, Some(&jo), None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["payment"]["status"], "refunded");
    assert_eq!(stock(&shop, p).await, 8);
    assert_error(
        shop.call("POST", &cancel, Some(&jo), None).await,
        StatusCode::CONFLICT,
        "order_not_cancellable",
    );
    assert_eq!(stock(&shop, p).await, 8);
    let cancelled_notes = shop
        .scalar("SELECT COUNT(*) FROM notifications WHERE template = 'order_cancelled'")
        .await;
    assert_eq!(cancelled_notes, 1);
    // Notifications are private too.
    let (_, kim_notes) = shop
        .call("GET", "/api/notifications", Some(&kim), None)
        .await;
    assert_eq!(kim_notes["total"], 1, "only kim's welcome: {kim_notes}");
    assert_error(
        shop.call("GET", "/api/notifications", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_never_oversell() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    let hot = shop.product(&admin, "HOT", "1.00", 10).await;
    let cold = shop.product(&admin, "COLD", "1.00", 1000).await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(shop.customer(&format!("buyer{i}@example.com")).await);
    }
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = shop.app.clone();
        let token = tokens[i % tokens.len()].clone();
        // Half the orders also take the other product, in the other order, to provoke deadlocks.
        let items = if i % 2 == 0 {
            json!([{"product_id": hot, "quantity": 1}])
        } else {
            json!([{"product_id": cold, "quantity": 2}, {"product_id": hot, "quantity": 1}])
        };
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt as _;
            let req = axum::http::Request::post("/api/orders")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    json!({"items": items, "payment_token": "tok_visa"}).to_string(),
                ))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, 10, "exactly the stock was sold");
    assert_eq!(refused, 30);
    assert_eq!(stock(&shop, hot).await, 0);
    let sold: i64 = shop
        .scalar(&format!(
            "SELECT COALESCE(SUM(quantity), 0) FROM order_items WHERE product_id = {hot}"
        ))
        .await;
    assert_eq!(sold, 10);
    let cold_sold: i64 = shop
        .scalar(&format!(
            "SELECT COALESCE(SUM(quantity), 0) FROM order_items WHERE product_id = {cold}"
        ))
        .await;
    assert_eq!(stock(&shop, cold).await, 1000 - cold_sold);
    assert_eq!(counts(&shop).await, (10, 10, 10));
    assert_eq!(shop.scalar("SELECT MIN(available) FROM inventory").await, 0);
}

//! Products and inventory endpoints against a real MariaDB: catalogue administration, full-text
//! search with relevance order, filters, pagination, stock adjustments and bad input.

mod common;

use axum::http::StatusCode;
use common::{Shop, assert_error};
use serde_json::json;

#[tokio::test]
async fn administrators_create_and_update_products() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    let customer = shop.customer("eve@example.com").await;
    let body = json!({
        "sku": "BAG-001", "name": "Canvas Backpack", "description": "Roomy",
        "category": "bags", "price": "49.90", "attributes": {"color": "sand"}, "initial_stock": 5
    });
    assert_error(
        shop.call("POST", "/api/products", Some(&customer), Some(body.clone()))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        shop.call("POST", "/api/products", None, Some(body.clone()))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let (s, p) = shop
        .call("POST", "/api/products", Some(&admin), Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["price"], "49.90");
    assert_eq!(p["attributes"]["color"], "sand");
    assert_eq!(p["active"], true);
    assert_error(
        shop.call("POST", "/api/products", Some(&admin), Some(body))
            .await,
        StatusCode::CONFLICT,
        "sku_taken",
    );
    let id = p["id"].as_u64().unwrap();
    let (s, inv) = shop
        .call("GET", &format!("/api/products/{id}/inventory"), None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(inv["available"], 5);

    let (s, got) = shop
        .call("GET", &format!("/api/products/{id}"), None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, p);

    let (s, up) = shop
        .call(
            "PUT",
            &format!("/api/products/{id}"),
            Some(&admin),
            Some(json!({"price": "39.5", "name": "Canvas Backpack II"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{up}");
    assert_eq!(up["price"], "39.50");
    assert_eq!(up["name"], "Canvas Backpack II");
    assert_eq!(up["category"], "bags");
    assert_error(
        shop.call(
            "PUT",
            "/api/products/424242",
            Some(&admin),
            Some(json!({"name": "x"})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        shop.call(
            "PUT",
            &format!("/api/products/{id}"),
            Some(&customer),
            Some(json!({"name": "x"})),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        shop.call("GET", "/api/products/424242", None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        shop.call("GET", "/api/products/0", None, None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
}

#[tokio::test]
async fn product_input_is_validated() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    let base = json!({"sku": "S-1", "name": "N", "category": "c", "price": "1.00"});
    for (patch, field) in [
        (json!({"price": "abc"}), "price"),
        (json!({"price": "1.999"}), "price"),
        (json!({"price": "-1"}), "price"),
        (json!({"sku": "has space"}), "sku"),
        (json!({"name": ""}), "name"),
        (json!({"initial_stock": -1}), "initial_stock"),
        (json!({"attributes": [1, 2]}), "attributes"),
    ] {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = shop
            .call("POST", "/api/products", Some(&admin), Some(body))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["fields"][0]["field"], field, "{v}");
    }
    // A number where a decimal string is expected is a shape error.
    let mut body = base.clone();
    body["price"] = json!(1.5);
    assert_error(
        shop.call("POST", "/api/products", Some(&admin), Some(body))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let id = shop.product(&admin, "S-2", "2.00", 0).await;
    assert_error(
        shop.call(
            "PUT",
            &format!("/api/products/{id}"),
            Some(&admin),
            Some(json!({})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM products").await, 1);
}

#[tokio::test]
async fn listing_searches_filters_and_pages() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    let items = [
        ("K-1", "Steel Kettle", "Boils water fast", "kitchen"),
        ("K-2", "Ceramic Mug", "Holds tea", "kitchen"),
        (
            "B-1",
            "Leather Backpack",
            "A backpack for travel, a backpack for life",
            "bags",
        ),
        (
            "B-2",
            "Cotton Tote",
            "Carries a small backpack inside",
            "bags",
        ),
        ("L-1", "Desk Lamp", "Bright light", "lighting"),
    ];
    for (sku, name, description, category) in items {
        let (s, v) = shop
            .call(
                "POST",
                "/api/products",
                Some(&admin),
                Some(json!({"sku": sku, "name": name, "description": description,
                            "category": category, "price": "10.00"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    // An inactive product is not listed.
    shop.sql("UPDATE products SET active = 0 WHERE sku = 'L-1'")
        .await;

    let (s, all) = shop.call("GET", "/api/products", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(all["total"], 4);
    assert_eq!(all["page"], 1);
    assert_eq!(all["per_page"], 20);

    let (_, page2) = shop
        .call("GET", "/api/products?per_page=3&page=2", None, None)
        .await;
    assert_eq!(page2["total"], 4);
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2["items"][0]["sku"], "B-2");

    let (_, bags) = shop
        .call("GET", "/api/products?category=bags", None, None)
        .await;
    let skus: Vec<&str> = bags["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["B-1", "B-2"]);

    // Relevance first: the product that says "backpack" three times beats the one that says it once.
    let (_, found) = shop
        .call("GET", "/api/products?q=backpack", None, None)
        .await;
    let skus: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["B-1", "B-2"], "{found}");
    assert_eq!(found["total"], 2);
    let (_, none) = shop
        .call("GET", "/api/products?q=submarine", None, None)
        .await;
    assert_eq!(none["total"], 0);

    assert_error(
        shop.call("GET", "/api/products?per_page=1000", None, None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        shop.call("GET", "/api/products?page=0", None, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        shop.call("GET", "/api/products?page=abc", None, None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        shop.call("GET", "/api/products?sort=price", None, None)
            .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
}

#[tokio::test]
async fn inventory_adjustments_never_go_negative() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    let customer = shop.customer("frank@example.com").await;
    let id = shop.product(&admin, "INV-1", "3.00", 10).await;
    let path = format!("/api/products/{id}/inventory/adjust");

    let (s, v) = shop
        .call(
            "POST",
            &path,
            Some(&admin),
            Some(json!({"delta": 5, "reason": "restock"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["available"], 15);
    let (_, v) = shop
        .call(
            "POST",
            &path,
            Some(&admin),
            Some(json!({"delta": -15, "reason": "write-off"})),
        )
        .await;
    assert_eq!(v["available"], 0);
    assert_error(
        shop.call(
            "POST",
            &path,
            Some(&admin),
            Some(json!({"delta": -1, "reason": "oops"})),
        )
        .await,
        StatusCode::CONFLICT,
        "insufficient_stock",
    );
    assert_error(
        shop.call(
            "POST",
            &path,
            Some(&admin),
            Some(json!({"delta": 0, "reason": "noop"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        shop.call(
            "POST",
            &path,
            Some(&admin),
            Some(json!({"delta": 1, "reason": ""})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        shop.call(
            "POST",
            &path,
            Some(&customer),
            Some(json!({"delta": 1, "reason": "me"})),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        shop.call(
            "POST",
            "/api/products/999999/inventory/adjust",
            Some(&admin),
            Some(json!({"delta": 1, "reason": "x"})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        shop.call("GET", "/api/products/999999/inventory", None, None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(
        shop.scalar(&format!(
            "SELECT available FROM inventory WHERE product_id = {id}"
        ))
        .await,
        0
    );
}

#[tokio::test]
async fn a_busy_shop_refuses_after_a_bounded_wait_instead_of_queueing_forever() {
    let shop = Shop::new().await;
    // Every slot taken, as by `max_in_flight` slow requests.
    let slots = shop.state.config.max_in_flight as u32;
    let held = shop
        .state
        .slots
        .clone()
        .acquire_many_owned(slots)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_error(
        shop.call("GET", "/api/products", None, None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
    );
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(shop.state.config.queue_ms)
            && waited < std::time::Duration::from_secs(5),
        "{waited:?}"
    );
    // Health and metrics are not held back.
    assert_eq!(
        shop.call("GET", "/healthz", None, None).await.0,
        StatusCode::OK
    );
    let (_, metrics) = shop.call("GET", "/metrics", None, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("shop_requests_shed_total 1"),
        "{metrics}"
    );
    // A slot freed: served again.
    drop(held);
    assert_eq!(
        shop.call("GET", "/api/products", None, None).await.0,
        StatusCode::OK
    );
}

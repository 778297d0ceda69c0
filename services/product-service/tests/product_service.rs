//! product-service over real HTTP and real MariaDB servers, beside the real monolith: the same
//! catalog, search, inventory and error answers for the same data; reservations that never
//! oversell under concurrency and are idempotent; tokens checked through user-service's JWKS.

use serde_json::{Value, json};
use testkit::contract::{Body, Side, differences};

struct Running {
    side: Side,
    db_url: String,
}

async fn monolith() -> Running {
    let db = testkit::monolith_server()
        .create_database("shop")
        .await
        .unwrap();
    let config = legacy_monolith::Config {
        database_url: db.url.clone(),
        ..legacy_monolith::Config::default()
    };
    let state = legacy_monolith::prepare(config).await.unwrap();
    Running {
        side: Side::serve(legacy_monolith::app(state))
            .await
            .conforming_to(testkit::openapi::Spec::named("legacy-monolith").unwrap()),
        db_url: db.url,
    }
}

async fn service_with(tweak: impl FnOnce(&mut product_service::Config)) -> Running {
    let db = testkit::services_server()
        .create_database("product_svc")
        .await
        .unwrap();
    let mut config = product_service::Config::default();
    config.server.database_url = db.url.clone();
    tweak(&mut config);
    let state = product_service::prepare(config).await.unwrap();
    Running {
        side: Side::serve(product_service::app(state))
            .await
            .conforming_to(testkit::openapi::Spec::named("product-service").unwrap()),
        db_url: db.url,
    }
}

/// Runs statements on a database behind the servers' backs (as replication or an operator would).
async fn execute(db_url: &str, sql: &str) {
    let mut c = mysql_async::Conn::from_url(db_url).await.unwrap();
    mysql_async::prelude::Queryable::query_drop(&mut c, sql)
        .await
        .unwrap();
    c.disconnect().await.unwrap();
}

/// An administrator's token from the monolith (HS256, the shared secret: both sides take it).
async fn admin_token(m: &Running) -> String {
    let (s, v) = m
        .side
        .call(
            "POST",
            "/api/users/register",
            None,
            Body::Json(
                json!({"email": "admin@shop.test", "password": "password123", "name": "Admin"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    execute(
        &m.db_url,
        "UPDATE users SET role = 'admin' WHERE email = 'admin@shop.test'",
    )
    .await;
    let (s, v) = m
        .side
        .call(
            "POST",
            "/api/users/login",
            None,
            Body::Json(json!({"email": "admin@shop.test", "password": "password123"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["token"].as_str().unwrap().to_string()
}

const VOLATILE: &[&str] = &["created_at", "updated_at", "token"];

const CATALOG: &[(&str, &str, &str, &str, &str)] = &[
    (
        "BAG-1",
        "Hiking backpack",
        "A light backpack for long hikes",
        "bags",
        "49.90",
    ),
    (
        "BAG-2",
        "City backpack",
        "A backpack with a laptop sleeve",
        "bags",
        "39.00",
    ),
    (
        "TNT-1",
        "Two-person tent",
        "A tent for hikes in the rain",
        "camping",
        "129.99",
    ),
    (
        "STV-1",
        "Camping stove",
        "A small gas stove",
        "camping",
        "25.50",
    ),
    (
        "MUG-1",
        "Enamel mug",
        "A mug for the camping stove",
        "kitchen",
        "7.00",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_requests_get_equivalent_answers_from_the_monolith_and_the_service() {
    let (m, s) = tokio::join!(monolith(), service_with(|_| {}));
    let admin = admin_token(&m).await;
    // A customer token from the monolith, for the 403 paths.
    m.side
        .call(
            "POST",
            "/api/users/register",
            None,
            Body::Json(json!({"email": "c@shop.test", "password": "password123", "name": "C"})),
        )
        .await;
    let (_, login) = m
        .side
        .call(
            "POST",
            "/api/users/login",
            None,
            Body::Json(json!({"email": "c@shop.test", "password": "password123"})),
        )
        .await;
    let customer = login["token"].as_str().unwrap().to_string();
    let mut diffs = Vec::new();
    // The same catalog created through the API on both sides.
    for (i, (sku, name, description, category, price)) in CATALOG.iter().enumerate() {
        let body = Body::Json(json!({
            "sku": sku, "name": name, "description": description, "category": category,
            "price": price, "initial_stock": 10 * (i + 1), "attributes": {"color": "green"}
        }));
        let a = m
            .side
            .call("POST", "/api/products", Some(&admin), body.clone())
            .await;
        let b = s
            .side
            .call("POST", "/api/products", Some(&admin), body)
            .await;
        assert_eq!(a.0, 201, "{}", a.1);
        diffs.extend(differences(&format!("create {sku}"), &a, &b, VOLATILE));
    }
    let t = Some(admin.as_str());
    let c = Some(customer.as_str());
    let script: Vec<(&str, &str, &str, Option<&str>, Body)> = vec![
        ("list", "GET", "/api/products", None, Body::None),
        (
            "page 2",
            "GET",
            "/api/products?per_page=2&page=2",
            None,
            Body::None,
        ),
        (
            "search relevance",
            "GET",
            "/api/products?q=backpack%20hikes",
            None,
            Body::None,
        ),
        (
            "search and category",
            "GET",
            "/api/products?q=stove&category=camping",
            None,
            Body::None,
        ),
        (
            "search nothing",
            "GET",
            "/api/products?q=zeppelin",
            None,
            Body::None,
        ),
        (
            "bad per_page",
            "GET",
            "/api/products?per_page=1000",
            None,
            Body::None,
        ),
        (
            "unknown query parameter",
            "GET",
            "/api/products?sort=price",
            None,
            Body::None,
        ),
        ("get", "GET", "/api/products/3", None, Body::None),
        ("get absent", "GET", "/api/products/999", None, Body::None),
        ("get bad id", "GET", "/api/products/-1", None, Body::None),
        (
            "create duplicate sku",
            "POST",
            "/api/products",
            t,
            Body::Json(json!({"sku": "BAG-1", "name": "X", "category": "bags", "price": "1.00"})),
        ),
        (
            "create invalid",
            "POST",
            "/api/products",
            t,
            Body::Json(
                json!({"sku": "bad sku!", "name": "", "category": "", "price": "1.999", "initial_stock": -1, "attributes": [1]}),
            ),
        ),
        (
            "create as customer",
            "POST",
            "/api/products",
            c,
            Body::Json(json!({"sku": "X-1", "name": "X", "category": "x", "price": "1.00"})),
        ),
        (
            "create without token",
            "POST",
            "/api/products",
            None,
            Body::Json(json!({"sku": "X-1", "name": "X", "category": "x", "price": "1.00"})),
        ),
        (
            "update",
            "PUT",
            "/api/products/2",
            t,
            Body::Json(json!({"price": "35.00", "active": false})),
        ),
        (
            "list after deactivation",
            "GET",
            "/api/products?category=bags",
            None,
            Body::None,
        ),
        (
            "update empty",
            "PUT",
            "/api/products/2",
            t,
            Body::Json(json!({})),
        ),
        (
            "update absent",
            "PUT",
            "/api/products/999",
            t,
            Body::Json(json!({"name": "Y"})),
        ),
        (
            "inventory",
            "GET",
            "/api/products/4/inventory",
            None,
            Body::None,
        ),
        (
            "adjust",
            "POST",
            "/api/products/4/inventory/adjust",
            t,
            Body::Json(json!({"delta": -15, "reason": "damaged"})),
        ),
        (
            "adjust below zero",
            "POST",
            "/api/products/4/inventory/adjust",
            t,
            Body::Json(json!({"delta": -1000, "reason": "lost"})),
        ),
        (
            "adjust invalid",
            "POST",
            "/api/products/4/inventory/adjust",
            t,
            Body::Json(json!({"delta": 0, "reason": ""})),
        ),
        (
            "adjust absent",
            "POST",
            "/api/products/999/inventory/adjust",
            t,
            Body::Json(json!({"delta": 1, "reason": "found"})),
        ),
        (
            "malformed body",
            "POST",
            "/api/products",
            t,
            Body::Raw("application/json", b"{".to_vec()),
        ),
    ];
    for (name, method, path, token, body) in &script {
        let a = m.side.call(method, path, *token, body.clone()).await;
        let b = s.side.call(method, path, *token, body.clone()).await;
        diffs.extend(differences(name, &a, &b, VOLATILE));
    }
    assert!(diffs.is_empty(), "answers differ:\n{}", diffs.join("\n"));
    // Both sides' answers, happy and error paths, are what their OpenAPI files say.
    m.side.assert_conformance(20);
    s.side.assert_conformance(20);
    // The relevance order is the monolith's, and it is a real ranking.
    let (_, found) = s
        .side
        .call("GET", "/api/products?q=backpack%20hikes", None, Body::None)
        .await;
    let skus: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus.first(), Some(&"BAG-1"), "{found}");
}

async fn reserve(s: &Side, id: &str, items: Value) -> (u16, Value) {
    s.call(
        "POST",
        "/internal/reservations",
        Some(product_service::config::DEV_INTERNAL_TOKEN),
        Body::Json(json!({"id": id, "items": items})),
    )
    .await
}

async fn available(s: &Side, product: u64) -> i64 {
    let (st, v) = s
        .call(
            "GET",
            &format!("/api/products/{product}/inventory"),
            None,
            Body::None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v["available"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_never_oversell_and_are_idempotent() {
    let m = monolith().await;
    let admin = admin_token(&m).await;
    let s = service_with(|_| {}).await;
    for (sku, stock) in [("A-1", 10), ("B-1", 5)] {
        let (st, v) = s
            .side
            .call(
                "POST",
                "/api/products",
                Some(&admin),
                Body::Json(json!({"sku": sku, "name": sku, "category": "x", "price": "1.00", "initial_stock": stock})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    // 30 sagas at once want one unit of product 1 (stock 10) and one of product 2 (stock 5).
    let mut tasks = Vec::new();
    for i in 0..30 {
        let side = s.side.clone();
        tasks.push(tokio::spawn(async move {
            reserve(
                &side,
                &format!("saga-{i}"),
                json!([{"product_id": 2, "quantity": 1}, {"product_id": 1, "quantity": 1}]),
            )
            .await
        }));
    }
    let mut won = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (st, v) = t.await.unwrap();
        match st {
            201 => won.push(format!("saga-{i}")),
            409 => assert_eq!(v["error"]["code"], "insufficient_stock", "{v}"),
            other => panic!("saga-{i}: {other} {v}"),
        }
    }
    assert_eq!(won.len(), 5, "product 2 has 5 units: {won:?}");
    assert_eq!(
        (available(&s.side, 1).await, available(&s.side, 2).await),
        (5, 0)
    );
    // The same request again: the same reservation, nothing taken twice.
    let (st, v) = reserve(
        &s.side,
        &won[0],
        json!([{"product_id": 1, "quantity": 1}, {"product_id": 2, "quantity": 1}]),
    )
    .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("reserved")), "{v}");
    assert_eq!(available(&s.side, 1).await, 5);
    // The same id with other items is refused.
    let (st, v) = reserve(&s.side, &won[0], json!([{"product_id": 1, "quantity": 2}])).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("reservation_mismatch")),
        "{v}"
    );
    // Release (compensation) gives the stock back once, however often it is asked.
    let tok = Some(product_service::config::DEV_INTERNAL_TOKEN);
    for _ in 0..2 {
        let (st, v) = s
            .side
            .call(
                "POST",
                &format!("/internal/reservations/{}/release", won[0]),
                tok,
                Body::None,
            )
            .await;
        assert_eq!((st, v["status"].as_str()), (200, Some("released")), "{v}");
    }
    assert_eq!(
        (available(&s.side, 1).await, available(&s.side, 2).await),
        (6, 1)
    );
    // Commit keeps the stock taken; a released reservation cannot be committed, nor the reverse.
    let (st, _) = s
        .side
        .call(
            "POST",
            &format!("/internal/reservations/{}/commit", won[1]),
            tok,
            Body::None,
        )
        .await;
    assert_eq!(st, 200);
    let (st, v) = s
        .side
        .call(
            "POST",
            &format!("/internal/reservations/{}/commit", won[0]),
            tok,
            Body::None,
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("reservation_released")),
        "{v}"
    );
    let (st, v) = s
        .side
        .call(
            "POST",
            &format!("/internal/reservations/{}/release", won[1]),
            tok,
            Body::None,
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("reservation_committed")),
        "{v}"
    );
    assert_eq!(available(&s.side, 2).await, 1);
    // Bad input and bad callers.
    let (st, v) = reserve(
        &s.side,
        "saga-x",
        json!([{"product_id": 1, "quantity": 0}, {"product_id": 1, "quantity": 1}]),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("validation_failed")),
        "{v}"
    );
    let (st, v) = reserve(
        &s.side,
        "saga-y",
        json!([{"product_id": 999, "quantity": 1}]),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (st, _) = s
        .side
        .call(
            "POST",
            "/internal/reservations",
            Some(&admin),
            Body::Json(json!({"id": "z", "items": [{"product_id": 1, "quantity": 1}]})),
        )
        .await;
    assert_eq!(st, 401, "a user token is not the internal token");
    let (st, _) = s
        .side
        .call("GET", "/internal/reservations/saga-0", None, Body::None)
        .await;
    assert_eq!(st, 401);
    let (st, _) = s
        .side
        .call("GET", "/internal/reservations/nope", tok, Body::None)
        .await;
    assert_eq!(st, 404);
    // Stock on both products adds up: what is available plus what is held or committed.
    let mut c = mysql_async::Conn::from_url(s.db_url.as_str())
        .await
        .unwrap();
    let held: Option<i64> = mysql_async::prelude::Queryable::query_first(
        &mut c,
        "SELECT COUNT(*) FROM reservations WHERE status IN ('reserved', 'committed')",
    )
    .await
    .unwrap();
    c.disconnect().await.unwrap();
    assert_eq!(held, Some(4));
    assert_eq!(available(&s.side, 2).await + held.unwrap(), 5);
}

/// The same generated catalog, row for row, on a database: 600 products whose names and
/// descriptions repeat words a varying number of times.
async fn insert_catalog(db_url: &str) {
    const ADJ: &[&str] = &["Classic", "Compact", "Rugged", "Smart", "Vintage", "Travel"];
    const MATERIAL: &[&str] = &["Steel", "Oak", "Leather", "Bamboo", "Wool"];
    const NOUN: &[&str] = &[
        "Backpack", "Tent", "Lamp", "Mug", "Notebook", "Chair", "Stove",
    ];
    const WORDS: &[&str] = &[
        "durable",
        "waterproof",
        "travel",
        "leather-bound",
        "quiet",
        "backpack",
        "the",
        "steel",
    ];
    const CATEGORIES: &[&str] = &["bags", "camping", "home", "kitchen"];
    let mut rows = Vec::new();
    let mut params: Vec<mysql_async::Value> = Vec::new();
    let mut r: u64 = 7;
    for id in 1..=600u64 {
        let mut pick = |n: usize| {
            r = r
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (r >> 33) as usize % n
        };
        let noun = NOUN[pick(NOUN.len())];
        let name = format!(
            "{} {} {noun}",
            ADJ[pick(ADJ.len())],
            MATERIAL[pick(MATERIAL.len())]
        );
        let words: Vec<&str> = (0..pick(6) + 2).map(|_| WORDS[pick(WORDS.len())]).collect();
        let description = format!(
            "A {} {}. {}",
            words.join(" "),
            noun.to_lowercase(),
            words[0]
        );
        let category = CATEGORIES[pick(CATEGORIES.len())];
        let active = pick(10) != 0;
        rows.push("(?, ?, ?, ?, ?, 9.99, ?)");
        params.extend([
            id.into(),
            format!("GEN-{id}").into(),
            name.into(),
            description.into(),
            category.into(),
            active.into(),
        ]);
    }
    let mut c = mysql_async::Conn::from_url(db_url).await.unwrap();
    mysql_async::prelude::Queryable::exec_drop(
        &mut c,
        format!(
            "INSERT INTO products (id, sku, name, description, category, price, active) VALUES {}",
            rows.join(", ")
        ),
        params,
    )
    .await
    .unwrap();
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_from_the_index_ranks_as_the_monolith_on_fixed_queries() {
    let (m, s) = tokio::join!(
        monolith(),
        service_with(|c| {
            c.search.poll_ms = 100;
            c.search.reconcile_secs = 2;
        })
    );
    // The catalog arrives behind the service's back, as replication writes it.
    insert_catalog(&m.db_url).await;
    insert_catalog(&s.db_url).await;
    let probe = "/api/products?q=backpack&per_page=1";
    let (_, want) = m.side.call("GET", probe, None, Body::None).await;
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = s.side.call("GET", probe, None, Body::None).await.1;
        if seen["total"] == want["total"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen["total"], want["total"], "the index never caught up");
    let queries = [
        "backpack",
        "Tent",
        "steel lamp",
        "waterproof travel backpack",
        "leather-bound notebook",
        "CLASSIC oak chair",
        "durable, quiet!",
        "the",
        "a mug",
        "of it",
        "zeppelin",
        "stove steel steel",
    ];
    let mut diffs = Vec::new();
    for q in queries {
        let q = q
            .replace(' ', "%20")
            .replace(',', "%2C")
            .replace('!', "%21");
        for extra in [
            "",
            "&per_page=7&page=2",
            "&category=camping",
            "&category=BAGS&per_page=5",
        ] {
            let path = format!("/api/products?q={q}{extra}");
            let a = m.side.call("GET", &path, None, Body::None).await;
            let b = s.side.call("GET", &path, None, Body::None).await;
            assert_eq!(a.0, 200, "{path}: {}", a.1);
            diffs.extend(differences(&path, &a, &b, VOLATILE));
        }
    }
    assert!(diffs.is_empty(), "answers differ:\n{}", diffs.join("\n"));
    // A real ranking: the rarer words and the repeated ones come first.
    let (_, found) = s
        .side
        .call(
            "GET",
            "/api/products?q=waterproof%20travel%20backpack",
            None,
            Body::None,
        )
        .await;
    assert!(found["total"].as_u64().unwrap() > 20, "{found}");

    // A product deactivated and one renamed behind the service's back leave and join the
    // results within the poll, as on the monolith.
    for url in [&m.db_url, &s.db_url] {
        execute(
            url,
            "UPDATE products SET active = 0 WHERE id = 2; \
             UPDATE products SET name = 'Zeppelin zeppelin', active = 1 WHERE id = 3",
        )
        .await;
    }
    let path = "/api/products?q=zeppelin";
    let (_, want) = m.side.call("GET", path, None, Body::None).await;
    assert_eq!(want["total"], 1, "{want}");
    let mut got = Value::Null;
    for _ in 0..100 {
        got = s.side.call("GET", path, None, Body::None).await.1;
        if got["total"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(got["items"][0]["id"], 3, "{got}");
    // The index answered (SQL full-text search is only its stand-in until it has loaded).
    let (_, metrics) = s.side.call("GET", "/metrics", None, Body::None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    let answered = testkit::prometheus::sum(&metrics, "product_service_search_index_answers_total");
    assert!(answered >= 48.0, "{metrics}");
    assert!(
        metrics.contains("product_service_search_index_products 600"),
        "{metrics}"
    );
    s.side.assert_conformance(5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_come_in_one_call_and_listing_totals_are_reused_until_a_write() {
    let m = monolith().await;
    let admin = admin_token(&m).await;
    let s = service_with(|c| c.catalog.count_cache_ms = 600_000).await;
    for (sku, price, active) in [("A-1", "1.50", true), ("B-1", "20.00", false)] {
        let (st, v) = s
            .side
            .call(
                "POST",
                "/api/products",
                Some(&admin),
                Body::Json(json!({"sku": sku, "name": sku, "category": "x", "price": price, "active": active})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    // Prices of several products at once: unknown ids are left out, repeats answered once.
    let tok = Some(product_service::config::DEV_INTERNAL_TOKEN);
    let prices = |ids: Value, token: Option<&'static str>| {
        let side = s.side.clone();
        async move {
            side.call(
                "POST",
                "/internal/prices",
                token,
                Body::Json(json!({ "product_ids": ids })),
            )
            .await
        }
    };
    let (st, v) = prices(json!([2, 999, 1, 2]), tok).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"prices": [
            {"product_id": 1, "price": "1.50", "active": true},
            {"product_id": 2, "price": "20.00", "active": false}
        ]})
    );
    for bad in [json!([]), json!([0]), json!((1..=51).collect::<Vec<u64>>())] {
        let (st, v) = prices(bad, tok).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (422, Some("validation_failed")),
            "{v}"
        );
    }
    let (st, _) = prices(json!([1]), None).await;
    assert_eq!(st, 401);

    // A listing's total is counted once and reused: a row that arrives behind the service's
    // back (as replication writes it) shows in the items at once, in the total after a write
    // through the service (or the cache's time to live).
    let total = |path: &'static str| {
        let side = s.side.clone();
        async move {
            let (st, v) = side.call("GET", path, None, Body::None).await;
            assert_eq!(st, 200, "{v}");
            (
                v["total"].as_u64().unwrap(),
                v["items"].as_array().unwrap().len(),
            )
        }
    };
    assert_eq!(total("/api/products").await, (1, 1));
    execute(
        &s.db_url,
        "INSERT INTO products (sku, name, description, category, price) VALUES ('C-1', 'C', '', 'x', 3)",
    )
    .await;
    assert_eq!(total("/api/products").await, (1, 2));
    let (st, v) = s
        .side
        .call(
            "PUT",
            "/api/products/2",
            Some(&admin),
            Body::Json(json!({"active": true})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(total("/api/products").await, (3, 3));
    s.side.assert_conformance(5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_user_service_are_checked_through_its_jwks() {
    // user-service signing with Ed25519 keys; product-service knows only its JWKS URL.
    let db = testkit::services_server()
        .create_database("user_svc")
        .await
        .unwrap();
    let mut uc = user_service::Config::default();
    uc.server.database_url = db.url.clone();
    uc.jwt.sign_with = user_service::config::SignWith::Ed25519;
    uc.jwt.legacy_secret = String::new();
    let users = Side::serve(user_service::app(user_service::prepare(uc).await.unwrap())).await;
    let p = service_with(|c| {
        c.auth.jwks_url = format!("{}/.well-known/jwks.json", users.base);
        c.auth.legacy_secret = String::new();
    })
    .await;
    let (st, _) = users
        .call(
            "POST",
            "/api/users/register",
            None,
            Body::Json(json!({"email": "ops@shop.test", "password": "password123", "name": "Ops"})),
        )
        .await;
    assert_eq!(st, 201);
    let mut c = mysql_async::Conn::from_url(db.url.as_str()).await.unwrap();
    mysql_async::prelude::Queryable::query_drop(&mut c, "UPDATE users SET role = 'admin'")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    let (_, login) = users
        .call(
            "POST",
            "/api/users/login",
            None,
            Body::Json(json!({"email": "ops@shop.test", "password": "password123"})),
        )
        .await;
    let token = login["token"].as_str().unwrap().to_string();
    let create = Body::Json(json!({"sku": "J-1", "name": "J", "category": "x", "price": "2.00"}));
    // The JWKS is fetched at start (and again on an unknown kid): the EdDSA token works.
    let mut status = 0;
    for _ in 0..50 {
        status = p
            .side
            .call("POST", "/api/products", Some(&token), create.clone())
            .await
            .0;
        if status == 201 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 201);
    // A monolith HS256 token is refused: this product-service has no legacy secret.
    let m = monolith().await;
    let legacy = admin_token(&m).await;
    let (st, v) = p
        .side
        .call("POST", "/api/products", Some(&legacy), create)
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "{v}"
    );
    // Health, readiness, metrics.
    assert_eq!(p.side.call("GET", "/readyz", None, Body::None).await.0, 200);
    let (_, metrics) = p.side.call("GET", "/metrics", None, Body::None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("product_service_http_requests_total")
    );
}

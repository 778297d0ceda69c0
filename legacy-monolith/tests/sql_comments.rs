//! Every statement a request sends carries its trace context as a sqlcommenter comment: checked
//! in the server's general log request by request (the caller's trace id, or a new one when the
//! caller sent none or a broken one), and in the binlog's annotate events of the rows written.

mod common;

use axum::http::StatusCode;
use common::Shop;
use mysql_async::prelude::*;
use serde_json::{Value, json};

/// Driver-issued statements that carry no request context: connection set-up and transaction
/// control (mysql_async sends those itself).
fn driver_statement(sql: &str) -> bool {
    sql.starts_with("SET time_zone = '+00:00'")
        || sql.starts_with("START TRANSACTION")
        || sql == "COMMIT"
        || sql == "ROLLBACK"
        || sql.starts_with("SELECT @@")
}

struct Log {
    conn: mysql_async::Conn,
    me: u64,
}

impl Log {
    async fn new(url: &str) -> Self {
        let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
        conn.query_drop("SET GLOBAL log_output = 'TABLE'")
            .await
            .unwrap();
        conn.query_drop("SET GLOBAL general_log = 1").await.unwrap();
        let me: u64 = conn
            .query_first("SELECT CONNECTION_ID()")
            .await
            .unwrap()
            .unwrap();
        Self { conn, me }
    }

    async fn clear(&mut self) {
        self.conn
            .query_drop("TRUNCATE TABLE mysql.general_log")
            .await
            .unwrap();
    }

    /// (command, statement) of everything but this connection since the last clear.
    async fn statements(&mut self) -> Vec<(String, String)> {
        self.conn
            .exec(
                "SELECT command_type, CONVERT(argument USING utf8mb4) FROM mysql.general_log \
                 WHERE thread_id <> ? AND command_type IN ('Query', 'Prepare', 'Execute') \
                 ORDER BY event_time",
                (self.me,),
            )
            .await
            .unwrap()
    }
}

/// The trace id in a statement's sqlcommenter comment, if it ends with one.
fn comment_trace_id(sql: &str) -> Option<&str> {
    let at = sql.rfind("traceparent='00-")?;
    let rest = &sql[at + "traceparent='00-".len()..];
    sql.ends_with("'*/").then(|| &rest[..32])
}

/// One scripted request: method, path, bearer token, JSON body, expected status.
struct Step<'a>(
    &'static str,
    String,
    Option<&'a str>,
    Option<Value>,
    StatusCode,
);

/// Whether `sql` is an INSERT into or UPDATE of `table`.
fn writes_table(sql: &str, table: &str) -> bool {
    ["INSERT INTO ", "UPDATE "].iter().any(|verb| {
        sql.strip_prefix(verb).is_some_and(|rest| {
            rest.strip_prefix(table)
                .is_some_and(|after| after.starts_with([' ', '(']))
        })
    })
}

#[tokio::test]
async fn every_statement_of_a_request_carries_its_trace_context() {
    let shop = Shop::new().await;
    let mut log = Log::new(&shop.db_url).await;
    let admin = shop.admin().await;
    let customer = shop.customer("carol@example.com").await;
    let product = shop.product(&admin, "TRACE-1", "12.50", 10).await;

    let trace = |n: u32| {
        format!(
            "00-{:032x}-00f067aa0ba902b7-01",
            0xabc0_0000u64 + u64::from(n)
        )
    };
    // (method, path, token, body, expected status): every domain, reads and writes, errors too.
    let order_body =
        json!({"items": [{"product_id": product, "quantity": 2}], "payment_token": "tok_visa"});
    let steps: Vec<Step> = vec![
        Step(
            "POST",
            "/api/users/register".into(),
            None,
            Some(json!({"email": "dan@example.com", "password": "password123", "name": "Dan"})),
            StatusCode::CREATED,
        ),
        Step(
            "POST",
            "/api/users/login".into(),
            None,
            Some(json!({"email": "carol@example.com", "password": "password123"})),
            StatusCode::OK,
        ),
        Step(
            "GET",
            "/api/users/me".into(),
            Some(&customer),
            None,
            StatusCode::OK,
        ),
        Step(
            "PUT",
            "/api/users/me".into(),
            Some(&customer),
            Some(json!({"name": "Carol O'Neil"})),
            StatusCode::OK,
        ),
        Step(
            "GET",
            "/api/products?q=Product".into(),
            None,
            None,
            StatusCode::OK,
        ),
        Step(
            "PUT",
            format!("/api/products/{product}"),
            Some(&admin),
            Some(json!({"price": "13.00"})),
            StatusCode::OK,
        ),
        Step(
            "POST",
            format!("/api/products/{product}/inventory/adjust"),
            Some(&admin),
            Some(json!({"delta": 5, "reason": "restock"})),
            StatusCode::OK,
        ),
        Step(
            "POST",
            "/api/orders".into(),
            Some(&customer),
            Some(order_body.clone()),
            StatusCode::CREATED,
        ),
        Step(
            "POST",
            "/api/orders".into(),
            Some(&customer),
            Some(
                json!({"items": [{"product_id": product, "quantity": 50}], "payment_token": "tok_visa"}),
            ),
            StatusCode::CONFLICT,
        ),
        Step(
            "GET",
            "/api/orders".into(),
            Some(&customer),
            None,
            StatusCode::OK,
        ),
        Step(
            "GET",
            "/api/notifications".into(),
            Some(&customer),
            None,
            StatusCode::OK,
        ),
        Step(
            "GET",
            "/api/products/999999".into(),
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (n, Step(method, path, token, body, status)) in steps.into_iter().enumerate() {
        let tp = trace(n as u32);
        let trace_id = &tp[3..35];
        log.clear().await;
        let (got, value) = shop
            .call_traced(method, &path, token, body, Some(&tp))
            .await;
        assert_eq!(got, status, "{method} {path}: {value}");
        let statements = log.statements().await;
        let traced: Vec<&String> = statements
            .iter()
            .map(|(_, sql)| sql)
            .filter(|sql| !driver_statement(sql))
            .collect();
        assert!(!traced.is_empty(), "{method} {path} sent no statement");
        for (command, sql) in &statements {
            assert_eq!(
                command, "Query",
                "{method} {path} prepared a statement: {sql}"
            );
        }
        for sql in traced {
            assert_eq!(
                comment_trace_id(sql),
                Some(trace_id),
                "{method} {path}: a statement without the request's trace: {sql}"
            );
            assert!(sql.contains("/*route='%2Fapi%2F"), "{sql}");
        }
    }

    // The order just placed: its cancellation, with no trace header and with a broken one; the
    // monolith starts a trace of its own, one per request.
    let (_, orders) = shop
        .call_traced("GET", "/api/orders", Some(&customer), None, None)
        .await;
    let order_id = orders["items"][0]["id"].as_u64().unwrap();
    let mut seen = Vec::new();
    for header in [None, Some("00-zzzz-broken-01")] {
        log.clear().await;
        let (s, v) = shop
            .call_traced(
                "GET",
                &format!("/api/orders/{order_id}"),
                Some(&customer),
                None,
                header,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let ids: Vec<String> = log
            .statements()
            .await
            .into_iter()
            .filter(|(_, sql)| !driver_statement(sql))
            .map(|(_, sql)| comment_trace_id(&sql).expect("a comment").to_string())
            .collect();
        assert!(!ids.is_empty());
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
        seen.push(ids[0].clone());
    }
    assert_ne!(seen[0], seen[1]);

    // The binlog keeps the commented statement behind each row event: placing the order (stock,
    // order, lines, payment, notification: one transaction across domains) is found by trace id.
    let mut root = mysql_async::Conn::from_url(&shop.db_url).await.unwrap();
    let annotate_on: u8 = root
        .query_first("SELECT @@binlog_annotate_row_events")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(annotate_on, 1);
    let logs: Vec<(String, u64)> = root
        .query_map("SHOW BINARY LOGS", |(name, size): (String, u64)| {
            (name, size)
        })
        .await
        .unwrap();
    let mut annotations = Vec::new();
    for (file, _) in &logs {
        let events: Vec<mysql_async::Row> = root
            .query(format!("SHOW BINLOG EVENTS IN '{file}'"))
            .await
            .unwrap();
        for row in events {
            let kind: String = row.get("Event_type").unwrap();
            let info: String = row.get("Info").unwrap();
            if kind == "Annotate_rows" {
                annotations.push(info);
            }
        }
    }
    let placing = &trace(7)[3..35];
    let order_writes: Vec<&String> = annotations
        .iter()
        .filter(|sql| comment_trace_id(sql) == Some(placing))
        .collect();
    for table in [
        "inventory",
        "orders",
        "order_items",
        "payments",
        "notifications",
    ] {
        assert!(
            order_writes.iter().any(|sql| writes_table(sql, table)),
            "no annotated {table} write of the order's trace in {order_writes:#?}"
        );
    }
    // The declined order (trace 8) wrote nothing: its rollback left no rows in the binlog.
    assert!(
        !annotations
            .iter()
            .any(|sql| comment_trace_id(sql) == Some(&trace(8)[3..35])),
        "the refused order reached the binlog"
    );
}

//! A proxy on a MySQL flag table with two services, three routes and two tokens, and helpers to
//! call its admin API: shared by the release-control and control-page tests.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

use super::{Proxy, Switchboard, Upstream};

pub const OPERATOR: &str = "operator-token-0123456789";
pub const VIEWER: &str = "viewer-token-0123456789ab";

/// Two services (user, order) and a monolith, three routes, tokens for alice and victor.
pub fn body(monolith: &Upstream, user: &Upstream, order: &Upstream, extra: &str) -> String {
    format!(
        r#"
[control]
tokens = [
  {{ name = "alice", token = "{OPERATOR}", role = "operator" }},
  {{ name = "victor", token = "{VIEWER}", role = "viewer" }},
]

[upstreams.monolith]
backends = ["{}"]
health_interval_ms = 100
[upstreams.user]
backends = ["{}"]
health_interval_ms = 100
[upstreams.order]
backends = ["{}"]
health_interval_ms = 100

[[routes]]
name = "users.login"
path = "/api/users/login"
flag = "route.users.login"
service = "user"

[[routes]]
name = "users"
prefix = "/api/users"
flag = "route.users"
service = "user"

[[routes]]
name = "orders"
prefix = "/api/orders"
flag = "route.orders"
service = "order"
{extra}
"#,
        monolith.addr, user.addr, order.addr
    )
}

pub struct Stack {
    pub proxy: Proxy,
    pub monolith: Switchboard,
    pub order: Switchboard,
    pub upstreams: Vec<Upstream>,
    pub db_url: String,
}

/// Another replica of the stack's proxy on the same flag table (replica `n` from 1).
pub async fn replica(s: &Stack, n: usize) -> Proxy {
    let body = std::fs::read_to_string(&s.proxy.config_path).unwrap();
    let dir = testkit::TempDir::new("proxy-replica").unwrap();
    let (port, admin) = (testkit::free_port(), testkit::free_port());
    let text = body
        .replace(
            &format!("127.0.0.1:{}\"", s.proxy.port),
            &format!("127.0.0.1:{port}\""),
        )
        .replace(
            &format!("127.0.0.1:{}\"", s.proxy.admin),
            &format!("127.0.0.1:{admin}\""),
        )
        .replace("up.sock", &format!("up{}.sock", n + 1));
    Proxy::launch(dir, port, admin, &text).await
}

pub async fn stack(name: &str, extra: &str) -> Stack {
    let db = testkit::monolith_server()
        .create_database(name)
        .await
        .unwrap();
    let (monolith, user, order) = (
        Switchboard::default(),
        Switchboard::default(),
        Switchboard::default(),
    );
    let m = Upstream::start(monolith.app("monolith")).await;
    let u = Upstream::start(user.app("user")).await;
    let o = Upstream::start(order.app("order")).await;
    let proxy = Proxy::start_mysql(
        &db.url,
        &body(&m, &u, &o, extra),
        &["route.users.login", "route.users", "route.orders"],
    )
    .await;
    // The seed reached the table and the proxy serves it.
    wait_for(&proxy, "seeded flags", |routes| {
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["flag_defined"] == true)
    })
    .await;
    Stack {
        proxy,
        monolith,
        order,
        upstreams: vec![m, u, o],
        db_url: db.url,
    }
}

pub async fn call(
    proxy: &Proxy,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = proxy.client.request(method, proxy.admin_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn wait_for(proxy: &Proxy, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_up_to(proxy, what, Duration::from_secs(5), check).await
}

/// [`wait_for`] with its own bound (figures that travel between replicas take seconds).
pub async fn wait_up_to(
    proxy: &Proxy,
    what: &str,
    bound: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    while started.elapsed() < bound {
        let (status, routes) = call(
            proxy,
            reqwest::Method::GET,
            "/admin/routes",
            Some(VIEWER),
            None,
        )
        .await;
        if status == 200 && check(&routes) {
            return routes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}:\n{}", proxy.log());
}

pub fn route<'a>(routes: &'a Value, name: &str) -> &'a Value {
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {routes}"))
}

/// Which side served `path` for `user`.
pub async fn served_by(proxy: &Proxy, path: &str, user: &str) -> String {
    let (status, _, body) = proxy.get_as(path, user).await;
    assert_eq!(status, 200, "{body}");
    body["served_by"].as_str().unwrap().to_string()
}

/// `PUT /admin/routes/{route}/mode` with `body` as `token`.
pub async fn put_mode(proxy: &Proxy, token: &str, route: &str, body: Value) -> (u16, Value) {
    call(
        proxy,
        reqwest::Method::PUT,
        &format!("/admin/routes/{route}/mode"),
        Some(token),
        Some(body),
    )
    .await
}

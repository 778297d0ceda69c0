//! The proxy with LaunchDarkly as its flag source (the real SDK against a local server speaking
//! the streaming protocol): routing follows LaunchDarkly's changes, the admin API shows them and
//! refuses changes made here, and a lost or absent LaunchDarkly leaves routing safe.

mod common;

use std::time::{Duration, Instant};

use common::release::{route, served_by};
use common::{Proxy, Switchboard, Upstream, config_text_with};
use flags::RouteMode;
use testkit::launchdarkly::LdServer;

fn flag(mode: RouteMode, version: u64) -> serde_json::Value {
    serde_json::to_value(mode.to_flag("route.orders", version, "orders")).unwrap()
}

async fn proxy_on(
    ld_url: &str,
    monolith: &Upstream,
    order: &Upstream,
    start_wait_ms: u64,
) -> Proxy {
    let dir = testkit::TempDir::new("proxy-ld").unwrap();
    let (port, admin) = (testkit::free_port(), testkit::free_port());
    let section = format!(
        "[flags]\nsource = \"launchdarkly\"\nsdk_key = \"sdk-proxy-key\"\nbase_url = \"{ld_url}\"\n\
         read_timeout_ms = 1000\nreconnect_ms = 100\nstart_wait_ms = {start_wait_ms}\n"
    );
    let body = format!(
        "[upstreams.monolith]\nbackends = [\"{}\"]\nhealth_interval_ms = 100\n\
         [upstreams.order]\nbackends = [\"{}\"]\nhealth_interval_ms = 100\n\n\
         [[routes]]\nname = \"orders\"\nprefix = \"/api/orders\"\nflag = \"route.orders\"\nservice = \"order\"\n",
        monolith.addr, order.addr
    );
    let text = config_text_with(port, admin, &dir.path().join("up.sock"), &section, &body);
    Proxy::launch(dir, port, admin, &text).await
}

async fn wait_served(p: &Proxy, want: &str) {
    let started = Instant::now();
    while served_by(p, "/api/orders/1", "u1").await != want {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never served by {want}:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn routing_follows_launchdarkly_and_survives_losing_it() {
    let (m, o) = (Switchboard::default(), Switchboard::default());
    let monolith = Upstream::start(m.app("monolith")).await;
    let order = Upstream::start(o.app("order")).await;
    let ld = LdServer::start(
        "127.0.0.1:0".parse().unwrap(),
        "sdk-proxy-key",
        vec![flag(RouteMode::Monolith, 1)],
        Duration::from_millis(200),
    )
    .await;
    let p = proxy_on(&ld.url(), &monolith, &order, 5000).await;
    assert_eq!(served_by(&p, "/api/orders/1", "u1").await, "monolith");

    // A change in LaunchDarkly moves the traffic, and the admin API shows the new mode.
    ld.patch(flag(RouteMode::Canary { percent: 100.0 }, 2));
    wait_served(&p, "order").await;
    let routes = p.admin_json("/admin/routes").await;
    assert_eq!(route(&routes, "orders")["mode"], "canary", "{routes}");
    assert_eq!(route(&routes, "orders")["percent"], 100.0);
    assert_eq!(routes["writable"], false);
    let status = p.admin_json("/admin/status").await;
    assert_eq!(status["launchdarkly"]["initialized"], true, "{status}");
    assert_eq!(
        status["launchdarkly"]["stream"]["connected"], true,
        "{status}"
    );
    // Changes belong in LaunchDarkly: refused here with the reason.
    let r = p
        .client
        .put(p.admin_url("/admin/routes/orders/mode"))
        .json(&serde_json::json!({"mode": "monolith", "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("LaunchDarkly"));

    // LaunchDarkly goes away: the last known flags keep routing, and the metrics say so.
    ld.stop();
    let started = Instant::now();
    loop {
        let metrics = p.metrics().await;
        if metrics.contains("strangler_flag_source_connected 0") {
            assert!(
                metrics.contains("strangler_flag_source_initialized 1"),
                "{metrics}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        assert_eq!(served_by(&p, "/api/orders/1", "u1").await, "order");
    }
    assert!(p.log().contains("LaunchDarkly stream lost"), "{}", p.log());
}

#[tokio::test]
async fn without_launchdarkly_at_start_every_route_serves_the_monolith() {
    let (m, o) = (Switchboard::default(), Switchboard::default());
    let monolith = Upstream::start(m.app("monolith")).await;
    let order = Upstream::start(o.app("order")).await;
    let port = testkit::free_port();
    let p = proxy_on(&format!("http://127.0.0.1:{port}"), &monolith, &order, 300).await;
    for _ in 0..5 {
        assert_eq!(served_by(&p, "/api/orders/1", "u1").await, "monolith");
    }
    let status = p.admin_json("/admin/status").await;
    assert_eq!(status["launchdarkly"]["initialized"], false, "{status}");
    assert!(
        p.log().contains("no flags from LaunchDarkly yet"),
        "{}",
        p.log()
    );
    // LaunchDarkly comes up with the route on the service: the proxy follows.
    let _ld = LdServer::start(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "sdk-proxy-key",
        vec![flag(RouteMode::Service, 4)],
        Duration::from_millis(200),
    )
    .await;
    wait_served(&p, "order").await;
}

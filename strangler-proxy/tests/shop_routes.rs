//! The shipped route file covers every endpoint of the monolith's public API (the OpenAPI
//! contract) with the flag of its domain, and nothing else.

use strangler_proxy::config::ProxyConfig;
use strangler_proxy::routing::RoutingTable;

fn table() -> RoutingTable {
    let mut text = String::from(
        "[flags]\nsource = \"file\"\npath = \"config/flags.json\"\n\n[upstreams.monolith]\nbackends = [\"127.0.0.1:1\"]\n",
    );
    for s in [
        "user-service",
        "product-service",
        "order-service",
        "notification-service",
    ] {
        text.push_str(&format!("[upstreams.{s}]\nbackends = [\"127.0.0.1:2\"]\n"));
    }
    text.push_str(&std::fs::read_to_string("config/shop-routes.toml").unwrap());
    let config = ProxyConfig::parse(&text).unwrap();
    RoutingTable::build(&config.routing(), 1).unwrap()
}

#[test]
fn every_monolith_endpoint_has_a_route_with_its_domain_flag() {
    let table = table();
    let openapi = std::fs::read_to_string("../architecture/legacy-monolith.openapi.yaml").unwrap();
    let cases = [
        ("POST", "/api/users/register", "route.users"),
        ("POST", "/api/users/login", "route.users"),
        ("GET", "/api/users/me", "route.users"),
        ("PUT", "/api/users/me", "route.users"),
        ("GET", "/api/users/1", "route.users"),
        ("GET", "/api/products", "route.products"),
        ("POST", "/api/products", "route.products"),
        ("GET", "/api/products/1", "route.products"),
        ("PUT", "/api/products/1", "route.products"),
        ("GET", "/api/products/1/inventory", "route.products"),
        ("POST", "/api/products/1/inventory/adjust", "route.products"),
        ("GET", "/api/orders", "route.orders"),
        ("POST", "/api/orders", "route.orders"),
        ("GET", "/api/orders/1", "route.orders"),
        ("POST", "/api/orders/1/cancel", "route.orders"),
        ("GET", "/api/notifications", "route.notifications"),
    ];
    for (method, path, flag) in cases {
        let (_, route) = table
            .find(method, None, path)
            .unwrap_or_else(|| panic!("no route for {method} {path}"));
        assert_eq!(route.flag, flag, "{method} {path}");
    }
    // Every API path of the contract is among the cases above.
    let documented: Vec<&str> = openapi
        .lines()
        .filter_map(|l| l.strip_prefix("  /api/"))
        .map(|l| l.trim_end_matches(':'))
        .collect();
    assert_eq!(documented.len(), 12, "{documented:?}");
    for d in documented {
        let concrete = format!("/api/{d}").replace("{id}", "1");
        assert!(
            cases
                .iter()
                .any(|(_, p, _)| p.replace(|c: char| c.is_ascii_digit(), "1") == concrete),
            "{concrete} is documented but not covered"
        );
    }
    // Health and metrics stay with the monolith itself (no route).
    assert!(table.find("GET", None, "/healthz").is_none());
    assert!(table.find("DELETE", None, "/api/orders/1").is_none());
}

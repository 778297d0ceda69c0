//! Prometheus metrics of the monolith: HTTP requests by route template, method and status, latency
//! histograms (service-kit's, prefix `shop`), and business counters (orders by outcome).

use prometheus::{IntCounterVec, Opts};
use service_kit::http::HttpMetrics;

/// The monolith's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    /// `shop_http_requests_total`, `shop_http_request_duration_seconds`.
    pub http: HttpMetrics,
    /// `shop_orders_total{outcome}`: placed, declined, insufficient_stock, cancelled, …
    pub orders: IntCounterVec,
    /// `shop_stock_escrow_refusals_total`: orders refused because this side's escrow share of a
    /// product ran out while the other side still holds some (a write canary).
    pub escrow_refusals: prometheus::IntCounter,
    /// `shop_requests_shed_total`: API requests refused with 503 after waiting `queue_ms`.
    pub shed: prometheus::IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let http = HttpMetrics::new("shop");
        let orders = IntCounterVec::new(
            Opts::new("shop_orders_total", "Order attempts by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        http.register(&orders);
        let escrow_refusals = prometheus::IntCounter::new(
            "shop_stock_escrow_refusals_total",
            "Orders refused because this side's escrow share of a product ran out",
        )
        .expect("valid metric");
        http.register(&escrow_refusals);
        let shed = prometheus::IntCounter::new(
            "shop_requests_shed_total",
            "API requests refused with 503 overloaded after waiting queue_ms for a slot",
        )
        .expect("valid metric");
        http.register(&shed);
        Self {
            http,
            orders,
            escrow_refusals,
            shed,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.http.render()
    }
}

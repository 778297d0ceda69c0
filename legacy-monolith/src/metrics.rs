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
        Self { http, orders }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.http.render()
    }
}

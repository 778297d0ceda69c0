//! Prometheus metrics of the monolith: HTTP requests by route template, method and status, latency
//! histograms, and business counters (orders placed or refused, by reason).

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The monolith's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `shop_http_requests_total{method,route,status}`.
    pub requests: IntCounterVec,
    /// `shop_http_request_duration_seconds{method,route}`.
    pub latency: HistogramVec,
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
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("shop_http_requests_total", "HTTP requests served"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("shop_http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5,
                ]),
            &["method", "route"],
        )
        .expect("valid metric");
        let orders = IntCounterVec::new(
            Opts::new("shop_orders_total", "Order attempts by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(orders.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        Self {
            registry,
            requests,
            latency,
            orders,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

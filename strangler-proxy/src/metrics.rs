//! The proxy's Prometheus metrics: requests, status classes and latency per route × backend ×
//! mode, shadow comparisons, fallbacks, circuit state, config and flag versions, backend health.

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric of the proxy, cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub shadow: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub circuit: IntGaugeVec,
    pub rejected: IntCounterVec,
    /// Write requests that waited for a hold (ownership switch), by flag.
    pub writes_held: IntCounterVec,
    pub config_version: IntGauge,
    pub config_reloads: IntCounterVec,
    pub flags_generation: IntGauge,
    pub flag_reload_failures: IntGauge,
    pub backend_up: IntGaugeVec,
    pub route_changes: IntCounterVec,
    pub jwks_fetches: IntCounterVec,
    pub flag_source_connected: IntGauge,
    pub flag_source_connects: IntGauge,
    pub flag_source_failures: IntGauge,
    pub flag_source_initialized: IntGauge,
    pub auto_rollbacks: IntCounterVec,
    pub admin_requests: IntCounterVec,
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
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "strangler_request_duration_seconds",
                "Request latency through the proxy",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route", "backend", "mode"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        Self {
            requests: counter(
                "strangler_requests_total",
                "Requests by route, backend that answered, route mode and status class",
                &["route", "backend", "mode", "class"],
            ),
            latency,
            shadow: counter(
                "strangler_shadow_comparisons_total",
                "Shadow comparisons by route and result (match, mismatch, error, dropped)",
                &["route", "result"],
            ),
            fallbacks: counter(
                "strangler_fallbacks_total",
                "Requests meant for a service that the monolith served, by reason",
                &["route", "reason"],
            ),
            circuit: gauge_vec(
                "strangler_circuit_state",
                "Circuit breaker per route: 0 closed, 1 open, 2 half-open",
                &["route"],
            ),
            rejected: counter(
                "strangler_rejected_total",
                "Requests refused by the proxy itself, by reason",
                &["reason"],
            ),
            writes_held: counter(
                "strangler_writes_held_total",
                "Write requests that waited for a hold of their flag (ownership switch)",
                &["flag"],
            ),
            config_version: gauge(
                "strangler_config_version",
                "Version of the routing config in use",
            ),
            config_reloads: counter(
                "strangler_config_reloads_total",
                "Config reloads by result (applied, refused)",
                &["result"],
            ),
            flags_generation: gauge("strangler_flags_generation", "Flag snapshots installed"),
            flag_reload_failures: gauge(
                "strangler_flag_reload_failures",
                "Flag reloads refused since start",
            ),
            backend_up: gauge_vec(
                "strangler_backend_up",
                "Active health check result per backend (1 up, 0 down)",
                &["group", "backend"],
            ),
            route_changes: counter(
                "strangler_route_changes_total",
                "Route mode changes made through this replica, by route and source (api, cli, page, auto)",
                &["route", "source"],
            ),
            flag_source_connected: gauge(
                "strangler_flag_source_connected",
                "LaunchDarkly source: 1 while its stream is open",
            ),
            flag_source_connects: gauge(
                "strangler_flag_source_connects",
                "LaunchDarkly source: streams opened since start",
            ),
            flag_source_failures: gauge(
                "strangler_flag_source_failures",
                "LaunchDarkly source: streams that failed to open or broke off",
            ),
            flag_source_initialized: gauge(
                "strangler_flag_source_initialized",
                "LaunchDarkly source: 1 once flags have been received",
            ),
            jwks_fetches: counter(
                "strangler_jwks_fetches_total",
                "JWKS fetches by result (ok, failed)",
                &["result"],
            ),
            auto_rollbacks: counter(
                "strangler_auto_rollbacks_total",
                "Routes sent back to the monolith because they burned their SLO",
                &["route"],
            ),
            admin_requests: counter(
                "strangler_admin_requests_total",
                "Admin API requests by role and status class",
                &["role", "class"],
            ),
            registry,
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

/// Backends, modes and status classes as label values, by index.
pub const BACKENDS: [&str; 2] = ["monolith", "service"];
pub const MODES: [&str; 4] = ["monolith", "shadow", "canary", "service"];
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// One route's request series, each resolved on first use: a label lookup costs a hash and a
/// lock on every request, a resolved series one atomic add.
pub struct RouteSeries {
    requests: Vec<std::sync::OnceLock<prometheus::IntCounter>>,
    latency: Vec<std::sync::OnceLock<prometheus::Histogram>>,
    circuit: std::sync::OnceLock<IntGauge>,
}

impl Default for RouteSeries {
    fn default() -> Self {
        Self {
            requests: (0..BACKENDS.len() * MODES.len() * CLASSES.len())
                .map(|_| Default::default())
                .collect(),
            latency: (0..BACKENDS.len() * MODES.len())
                .map(|_| Default::default())
                .collect(),
            circuit: Default::default(),
        }
    }
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteSeries")
    }
}

impl RouteSeries {
    /// `strangler_requests_total{route, backend, mode, class}`.
    pub fn requests(
        &self,
        m: &Metrics,
        route: &str,
        backend: usize,
        mode: usize,
        class: usize,
    ) -> &prometheus::IntCounter {
        self.requests[(backend * MODES.len() + mode) * CLASSES.len() + class].get_or_init(|| {
            m.requests
                .with_label_values(&[route, BACKENDS[backend], MODES[mode], CLASSES[class]])
        })
    }

    /// `strangler_request_duration_seconds{route, backend, mode}`.
    pub fn latency(
        &self,
        m: &Metrics,
        route: &str,
        backend: usize,
        mode: usize,
    ) -> &prometheus::Histogram {
        self.latency[backend * MODES.len() + mode].get_or_init(|| {
            m.latency
                .with_label_values(&[route, BACKENDS[backend], MODES[mode]])
        })
    }

    /// `strangler_circuit_state{route}`.
    pub fn circuit(&self, m: &Metrics, route: &str) -> &IntGauge {
        self.circuit
            .get_or_init(|| m.circuit.with_label_values(&[route]))
    }
}

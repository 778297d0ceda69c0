//! Metrics of a stream: events read, published and applied per table, transactions, conflicts,
//! loop-suppressed events, errors, and replication lag in seconds.

use prometheus::{Encoder as _, Gauge, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric of one stream.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub events: IntCounterVec,
    pub transactions: IntCounterVec,
    pub suppressed: IntCounterVec,
    pub conflicts: IntCounterVec,
    pub checks: IntCounterVec,
    pub backfill_rows: IntCounterVec,
    pub backfill_chunks: IntCounterVec,
    pub backfill_throttled: IntCounterVec,
    pub errors: IntCounterVec,
    pub lag_seconds: Gauge,
    pub running: IntGauge,
}

impl Metrics {
    /// Metrics labelled with the stream name.
    pub fn new(stream: &str) -> Self {
        let registry = Registry::new_custom(
            None,
            Some([("stream".to_string(), stream.to_string())].into()),
        )
        .expect("registry");
        let counter = |n: &str, h: &str, l: &[&str]| {
            let c = IntCounterVec::new(Opts::new(n, h), l).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let lag_seconds =
            Gauge::new("cdc_lag_seconds", "Age of the last applied source commit").expect("metric");
        registry
            .register(Box::new(lag_seconds.clone()))
            .expect("register");
        let running = IntGauge::new("cdc_running", "1 while the stream runs").expect("metric");
        registry
            .register(Box::new(running.clone()))
            .expect("register");
        Self {
            events: counter(
                "cdc_events_total",
                "Change events by table and stage (read, published, applied)",
                &["table", "stage"],
            ),
            transactions: counter(
                "cdc_transactions_total",
                "Source transactions applied",
                &["kind"],
            ),
            suppressed: counter(
                "cdc_loop_suppressed_total",
                "Row events skipped because cdc-sync wrote them",
                &["stream"],
            ),
            conflicts: counter(
                "cdc_conflicts_total",
                "Rows changed on both sides in the same window, by target table and winning side",
                &["table", "winner"],
            ),
            checks: counter(
                "cdc_conflict_checks_total",
                "Rows compared with their target row before a write, by who compared them (applier; server: values only the server can compare, e.g. by collation)",
                &["by"],
            ),
            backfill_rows: counter(
                "cdc_backfill_rows_total",
                "Backfill rows by table and outcome (copied, skipped_newer: changed during the chunk's window)",
                &["table", "outcome"],
            ),
            backfill_chunks: counter(
                "cdc_backfill_chunks_total",
                "Backfill chunks written",
                &["table"],
            ),
            backfill_throttled: counter(
                "cdc_backfill_lag_waits_total",
                "Times a backfill chunk waited for the stream's lag to fall",
                &["table"],
            ),
            errors: counter("cdc_errors_total", "Errors by kind", &["kind"]),
            lag_seconds,
            running,
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode");
        String::from_utf8(buf).expect("utf-8")
    }
}

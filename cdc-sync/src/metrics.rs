//! Metrics of a stream: events read, published and applied per table, transactions, conflicts,
//! loop-suppressed events, errors, and replication lag in seconds.

use prometheus::{
    Encoder as _, Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric of one stream.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub events: IntCounterVec,
    pub transactions: IntCounterVec,
    pub suppressed: IntCounter,
    pub conflicts: IntCounterVec,
    pub checks: IntCounterVec,
    pub backfill_rows: IntCounterVec,
    pub backfill_chunks: IntCounterVec,
    pub backfill_throttled: IntCounterVec,
    pub errors: IntCounterVec,
    pub lag_seconds: Gauge,
    pub running: IntGauge,
    /// 1 while the stream's control row holds it paused.
    pub paused: IntGauge,
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
        let paused = IntGauge::new(
            "cdc_paused",
            "1 while the stream is paused by its control row (cdc_control)",
        )
        .expect("metric");
        registry
            .register(Box::new(paused.clone()))
            .expect("register");
        Self {
            paused,
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
            // No label of its own: the registry labels every series with the stream already
            // (a second `stream` label made the whole scrape invalid).
            suppressed: {
                let c = IntCounter::new(
                    "cdc_loop_suppressed_total",
                    "Row events skipped because cdc-sync wrote them",
                )
                .expect("metric");
                registry.register(Box::new(c.clone())).expect("register");
                c
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series, once each metric has one, parses as Prometheus would: a label name at most
    /// once per series, and every series carries the stream.
    #[test]
    fn every_series_has_unique_labels_and_the_stream() {
        let m = Metrics::new("s1");
        m.events.with_label_values(&["shop.users", "read"]).inc();
        m.transactions.with_label_values(&["data"]).inc();
        m.suppressed.inc_by(2);
        m.conflicts
            .with_label_values(&["shop.users", "source"])
            .inc();
        m.checks.with_label_values(&["pk"]).inc();
        m.backfill_rows
            .with_label_values(&["shop.users", "copied"])
            .inc();
        m.backfill_chunks.with_label_values(&["shop.users"]).inc();
        m.backfill_throttled
            .with_label_values(&["shop.users"])
            .inc();
        m.errors.with_label_values(&["apply"]).inc();
        let text = m.render();
        let mut series = 0;
        for (name, labels) in testkit::prometheus::series(&text) {
            let unique: std::collections::BTreeSet<&String> = labels.iter().collect();
            assert_eq!(
                unique.len(),
                labels.len(),
                "{name}: a label twice in {labels:?}"
            );
            assert!(unique.contains(&"stream".to_string()), "{name}");
            series += 1;
        }
        assert_eq!(series, 12, "{text}");
    }
}

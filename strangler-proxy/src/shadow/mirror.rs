//! The shadow worker: takes finished requests from a bounded queue (full queue = dropped and
//! counted, never a slower user request), replays them against the service and, for reads, the
//! monolith again, and records match or mismatch with a rate-limited sample of both bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::NoiseModel;
use super::compare::{diff_json, path_matches};
use crate::metrics::Metrics;

/// A request the user got the monolith's answer to, to be compared with the service's.
#[derive(Debug)]
pub struct ShadowJob {
    pub route: String,
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub service: SocketAddr,
    /// Set for reads: where to send the second monolith request.
    pub monolith: Option<SocketAddr>,
    pub primary_status: u16,
    pub primary_headers: Vec<(String, String)>,
    pub primary_body: Bytes,
    pub ignore: Vec<String>,
    pub noise: Arc<NoiseModel>,
}

/// Answers to compare.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// Sends shadow requests and compares.
#[derive(Clone)]
pub struct ShadowWorker {
    client: reqwest::Client,
    metrics: Metrics,
    compare_headers: Vec<String>,
    samples: Arc<Mutex<HashMap<String, (Instant, u32)>>>,
    samples_per_minute: u32,
}

const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

impl ShadowWorker {
    /// A worker with the given limits.
    pub fn new(
        metrics: Metrics,
        timeout: Duration,
        compare_headers: Vec<String>,
        samples_per_minute: u32,
    ) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(16)
                .build()
                .expect("HTTP client"),
            metrics,
            compare_headers: compare_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            samples: Arc::default(),
            samples_per_minute,
        }
    }

    /// Runs jobs from `rx`, at most `in_flight` at a time.
    pub async fn run(self, mut rx: tokio::sync::mpsc::Receiver<ShadowJob>, in_flight: usize) {
        let permits = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
        while let Some(job) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let worker = self.clone();
            tokio::spawn(async move {
                worker.handle(job).await;
                drop(permit);
            });
        }
    }

    async fn send(&self, addr: SocketAddr, job: &ShadowJob) -> Result<Answer, reqwest::Error> {
        let method =
            reqwest::Method::from_bytes(job.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self
            .client
            .request(method, format!("http://{addr}{}", job.path_and_query))
            .header("x-strangler-shadow", "1");
        for (k, v) in &job.headers {
            if !HOP_BY_HOP.contains(&k.as_str()) {
                req = req.header(k.as_str(), v.as_slice());
            }
        }
        let resp = req.body(job.body.clone()).send().await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = resp.bytes().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Differences between two answers, as paths; `status` and `header.<name>` included.
    fn differences(&self, a: &Answer, b: &Answer) -> Vec<String> {
        let mut out = Vec::new();
        if a.status != b.status {
            out.push("status".to_string());
        }
        for h in &self.compare_headers {
            let get = |x: &Answer| {
                x.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(h))
                    .map(|(_, v)| v.clone())
            };
            if get(a) != get(b) {
                out.push(format!("header.{h}"));
            }
        }
        match (
            serde_json::from_slice::<Value>(&a.body),
            serde_json::from_slice::<Value>(&b.body),
        ) {
            (Ok(x), Ok(y)) => out.extend(
                diff_json(&x, &y)
                    .into_iter()
                    .map(|d| format!("body.{}", d.path)),
            ),
            _ if a.body == b.body => {}
            _ => out.push("body".into()),
        }
        out
    }

    async fn handle(&self, job: ShadowJob) {
        let primary = Answer {
            status: job.primary_status,
            headers: job.primary_headers.clone(),
            body: job.primary_body.clone(),
        };
        // Noise first: what differs between two monolith answers is not the service's fault.
        if let Some(monolith) = job.monolith
            && let Ok(second) = self.send(monolith, &job).await
        {
            job.noise.learn(self.differences(&primary, &second));
        }
        let candidate = match self.send(job.service, &job).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(route = %job.route, error = %e, "shadow request to the service failed");
                self.metrics
                    .shadow
                    .with_label_values(&[&job.route, "error"])
                    .inc();
                return;
            }
        };
        let real: Vec<String> = self
            .differences(&primary, &candidate)
            .into_iter()
            .filter(|p| !job.noise.is_noise(p))
            .filter(|p| {
                !job.ignore
                    .iter()
                    .any(|rule| path_matches(rule, p.strip_prefix("body.").unwrap_or(p)))
            })
            .collect();
        if real.is_empty() {
            self.metrics
                .shadow
                .with_label_values(&[&job.route, "match"])
                .inc();
            return;
        }
        self.metrics
            .shadow
            .with_label_values(&[&job.route, "mismatch"])
            .inc();
        if self.take_sample(&job.route) {
            tracing::warn!(
                route = %job.route,
                method = %job.method,
                path = %job.path_and_query,
                differences = ?real,
                monolith_status = primary.status,
                service_status = candidate.status,
                monolith_body = %String::from_utf8_lossy(&primary.body),
                service_body = %String::from_utf8_lossy(&candidate.body),
                "shadow mismatch"
            );
        }
    }

    fn take_sample(&self, route: &str) -> bool {
        let mut s = self.samples.lock().expect("samples lock");
        let now = Instant::now();
        let entry = s.entry(route.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) > Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.samples_per_minute
    }
}

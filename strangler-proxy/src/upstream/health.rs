//! Active health checks: every interval, an HTTP GET of the group's health path on each backend;
//! 2xx within the connect timeout is healthy. A checker stops when its group is dropped by a reload.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::UpstreamGroup;
use crate::metrics::Metrics;

async fn probe(addr: std::net::SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        let line = std::str::from_utf8(&buf[..n]).ok()?;
        Some(line.starts_with("HTTP/1.1 2") || line.starts_with("HTTP/1.0 2"))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

async fn run(group: Weak<UpstreamGroup>, metrics: Metrics) {
    loop {
        let Some(g) = group.upgrade() else {
            return;
        };
        let timeout = Duration::from_millis(g.config.connect_timeout_ms.max(200));
        for b in &g.backends {
            let ok = probe(b.addr, &g.config.health_path, timeout).await;
            let was = b.healthy.swap(ok, Ordering::Relaxed);
            if was != ok {
                if ok {
                    tracing::info!(group = %g.name, backend = %b.addr, "backend healthy again");
                } else {
                    tracing::warn!(group = %g.name, backend = %b.addr, "backend failed its health check");
                }
            }
            metrics
                .backend_up
                .with_label_values(&[&g.name, &b.addr.to_string()])
                .set(i64::from(ok));
        }
        let interval = Duration::from_millis(g.config.health_interval_ms);
        drop(g);
        tokio::time::sleep(interval).await;
    }
}

/// Starts a checker for every group that has none yet.
pub fn spawn_health_checks<'a>(
    groups: impl IntoIterator<Item = &'a Arc<UpstreamGroup>>,
    metrics: &Metrics,
) {
    for g in groups {
        if !g.checking.swap(true, Ordering::Relaxed) {
            tokio::spawn(run(Arc::downgrade(g), metrics.clone()));
        }
    }
}

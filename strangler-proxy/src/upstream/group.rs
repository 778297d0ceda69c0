//! An upstream group and its backends; selection is lock-free (an atomic round-robin counter and
//! one health flag per backend).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pingora::protocols::TcpKeepalive;
use pingora::upstreams::peer::HttpPeer;

use crate::config::UpstreamConfig;

/// One backend.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    pub healthy: AtomicBool,
}

/// A named group of backends.
#[derive(Debug)]
pub struct UpstreamGroup {
    pub name: String,
    pub config: UpstreamConfig,
    pub backends: Vec<Backend>,
    next: AtomicUsize,
    /// Set once a health checker runs for this group.
    pub checking: AtomicBool,
    /// Keep-alive probes for new connections (`None`: off).
    tcp_keepalive: Option<TcpKeepalive>,
}

impl UpstreamGroup {
    /// Resolves the backends; errors name the backend.
    pub fn new(name: &str, config: &UpstreamConfig) -> Result<Self, String> {
        if config.backends.is_empty() {
            return Err(format!("upstreams.{name}.backends is empty"));
        }
        let mut backends = Vec::new();
        for b in &config.backends {
            let addr = b
                .to_socket_addrs()
                .map_err(|e| format!("upstreams.{name}.backends: {b:?} is not host:port ({e})"))?
                .next()
                .ok_or_else(|| format!("upstreams.{name}.backends: {b:?} resolves to nothing"))?;
            backends.push(Backend {
                addr,
                // Healthy until a check says otherwise: a fresh proxy serves at once.
                healthy: AtomicBool::new(true),
            });
        }
        if config.connect_timeout_ms == 0
            || config.read_timeout_ms == 0
            || config.idle_timeout_ms == Some(0)
        {
            return Err(format!(
                "upstreams.{name}: timeouts must be > 0 (leave idle_timeout_ms out for none)"
            ));
        }
        if !config.health_path.starts_with('/') {
            return Err(format!("upstreams.{name}.health_path must start with /"));
        }
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            backends,
            next: AtomicUsize::new(0),
            checking: AtomicBool::new(false),
            tcp_keepalive: (config.tcp_keepalive_ms > 0).then(|| TcpKeepalive {
                idle: Duration::from_millis(config.tcp_keepalive_ms),
                interval: Duration::from_secs(10),
                count: 3,
                // The system's default for unacknowledged data: a request in flight is bounded
                // by the read timeout.
                user_timeout: Duration::ZERO,
            }),
        })
    }

    /// Whether any backend is healthy.
    pub fn any_healthy(&self) -> bool {
        self.backends
            .iter()
            .any(|b| b.healthy.load(Ordering::Relaxed))
    }

    /// The next healthy backend in round-robin order (any backend if none is healthy).
    pub fn select(&self) -> &Backend {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.backends[(start + i) % n])
            .find(|b| b.healthy.load(Ordering::Relaxed))
            .unwrap_or(&self.backends[start % n])
    }

    /// A Pingora peer for `backend` with this group's timeouts.
    pub fn peer(&self, backend: &Backend) -> Box<HttpPeer> {
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout =
            Some(Duration::from_millis(self.config.connect_timeout_ms));
        peer.options.read_timeout = Some(Duration::from_millis(self.config.read_timeout_ms));
        peer.options.write_timeout = Some(Duration::from_millis(self.config.read_timeout_ms));
        peer.options.idle_timeout = self.config.idle_timeout_ms.map(Duration::from_millis);
        peer.options.tcp_keepalive = self.tcp_keepalive.clone();
        Box::new(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(backends: &[&str]) -> UpstreamConfig {
        UpstreamConfig {
            backends: backends.iter().map(|s| s.to_string()).collect(),
            connect_timeout_ms: 100,
            read_timeout_ms: 100,
            idle_timeout_ms: None,
            tcp_keepalive_ms: 60_000,
            health_path: "/healthz".into(),
            health_interval_ms: 100,
        }
    }

    #[test]
    fn round_robin_skips_unhealthy_backends() {
        let g =
            UpstreamGroup::new("g", &cfg(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])).unwrap();
        let picks: Vec<u16> = (0..6).map(|_| g.select().addr.port()).collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3]);
        g.backends[1].healthy.store(false, Ordering::Relaxed);
        let picks: Vec<u16> = (0..4).map(|_| g.select().addr.port()).collect();
        assert!(!picks.contains(&2), "{picks:?}");
        for b in &g.backends {
            b.healthy.store(false, Ordering::Relaxed);
        }
        assert!(!g.any_healthy());
        let _ = g.select(); // still answers something
    }

    #[test]
    fn peers_carry_the_groups_pool_options() {
        let g = UpstreamGroup::new("g", &cfg(&["127.0.0.1:1"])).unwrap();
        let peer = g.peer(g.select());
        assert_eq!(peer.options.idle_timeout, None);
        assert_eq!(peer.options.read_timeout, Some(Duration::from_millis(100)));
        let ka = peer
            .options
            .tcp_keepalive
            .as_ref()
            .expect("probes by default");
        assert_eq!(
            (ka.idle, ka.interval, ka.count),
            (Duration::from_secs(60), Duration::from_secs(10), 3)
        );

        let mut c = cfg(&["127.0.0.1:1"]);
        c.idle_timeout_ms = Some(5_000);
        c.tcp_keepalive_ms = 0;
        let g = UpstreamGroup::new("g", &c).unwrap();
        let peer = g.peer(g.select());
        assert_eq!(peer.options.idle_timeout, Some(Duration::from_secs(5)));
        assert!(peer.options.tcp_keepalive.is_none());

        c.idle_timeout_ms = Some(0);
        let e = UpstreamGroup::new("g", &c).unwrap_err();
        assert!(e.contains("leave idle_timeout_ms out"), "{e}");
    }

    #[test]
    fn bad_backends_are_named() {
        assert!(
            UpstreamGroup::new("svc", &cfg(&["nonsense"]))
                .unwrap_err()
                .contains("svc")
        );
        assert!(
            UpstreamGroup::new("svc", &cfg(&[]))
                .unwrap_err()
                .contains("empty")
        );
    }
}

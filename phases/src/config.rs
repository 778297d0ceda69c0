//! The controller's config (`strangler --config strangler.toml`): the proxy replicas it drives,
//! the two servers, the streams that drain each side (names, admin APIs, the monolith → services
//! stream's config for backfills and verifies), the switch's bounds and the gates' bounds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::PhaseError;

/// Everything `strangler switch` needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// Every proxy replica's admin API, `http://host:port`.
    pub proxies: Vec<String>,
    /// An operator token of the admin API (none on a loopback dev stack).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// The token the proxies present to `strangler serve` (their `[phases] token`); required
    /// when it listens beyond loopback.
    #[serde(default)]
    pub api_token: Option<String>,
    /// The monolith's server and the services' server (`mysql://user:pass@host:port`).
    pub monolith_url: String,
    pub services_url: String,
    /// The stream monolith → services (it drains the monolith's writes) and its reverse.
    pub to_services_stream: String,
    pub to_monolith_stream: String,
    /// Each stream's admin API (`cdc-sync --listen`), `http://host:port`: its state and lag.
    #[serde(default)]
    pub to_services_admin: Option<String>,
    #[serde(default)]
    pub to_monolith_admin: Option<String>,
    /// The monolith → services stream's cdc-sync config: the controller starts backfills and
    /// runs verifies through its table mappings.
    #[serde(default)]
    pub to_services_config: Option<PathBuf>,
    /// The streams' `offsets_db`.
    #[serde(default = "default_offsets_db")]
    pub offsets_db: String,
    #[serde(default)]
    pub bounds: Bounds,
    #[serde(default)]
    pub gates: GateBounds,
    #[serde(default)]
    pub escrow: EscrowUpkeep,
}

/// How `strangler serve` keeps a write canary's stock escrow where sales need it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EscrowUpkeep {
    /// How often every domain in a write canary has its escrow rebalanced; 0: never (operators
    /// run `strangler escrow rebalance` themselves).
    pub rebalance_every_ms: u64,
    /// A product is rebalanced toward the canary's share once either side holds fewer units.
    pub low_units: i64,
}

impl Default for EscrowUpkeep {
    fn default() -> Self {
        Self {
            rebalance_every_ms: 1_000,
            low_units: 3,
        }
    }
}

/// What each gate accepts.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GateBounds {
    /// Longest the owner's stream may take to apply everything written before the check.
    pub max_lag_ms: u64,
    /// Oldest a clean verify may be to vouch for a copy.
    pub max_verify_age_secs: u64,
    /// Fewest shadow comparisons, fleet-wide, to judge a mismatch rate on.
    pub shadow_min_compared: u64,
    pub shadow_max_mismatch_rate: f64,
    /// Fewest canary requests, fleet-wide over the proxies' last minute, to judge on.
    pub canary_min_requests: u64,
    pub canary_max_error_rate: f64,
    pub canary_max_p99_ms: f64,
    /// Most open conflicts on a write canary's tables (both streams) to move on.
    pub max_open_conflicts: u64,
    /// Highest share of order lines a write canary's stock escrow may refuse to move on.
    pub escrow_max_refusal_rate: f64,
    /// How long a controller's lease lasts without renewal.
    pub lease_secs: u32,
}

impl Default for GateBounds {
    fn default() -> Self {
        Self {
            max_lag_ms: 5_000,
            max_verify_age_secs: 24 * 3600,
            shadow_min_compared: 100,
            shadow_max_mismatch_rate: 0.01,
            canary_min_requests: 50,
            canary_max_error_rate: 0.01,
            canary_max_p99_ms: 500.0,
            max_open_conflicts: 0,
            escrow_max_refusal_rate: 0.05,
            lease_secs: 300,
        }
    }
}

/// How long each step of a switch may take, in milliseconds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Bounds {
    pub hold_ms: u64,
    pub drain_ms: u64,
    pub catch_up_ms: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            hold_ms: 10_000,
            drain_ms: 3_000,
            catch_up_ms: 5_000,
        }
    }
}

impl Bounds {
    pub fn hold(&self) -> Duration {
        Duration::from_millis(self.hold_ms)
    }
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
    pub fn catch_up(&self) -> Duration {
        Duration::from_millis(self.catch_up_ms)
    }
}

fn default_offsets_db() -> String {
    "strangler_cdc".into()
}

impl ControllerConfig {
    /// Reads and checks `path`: at least one proxy; the hold longer than drain and catch-up
    /// together (else the proxies would let writes go before the flip).
    pub fn load(path: &Path) -> Result<Self, PhaseError> {
        let bad = |reason: String| PhaseError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let c: Self = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if c.proxies.is_empty() {
            return Err(bad("`proxies` names no proxy replica".into()));
        }
        for p in &c.proxies {
            let url = p.strip_prefix("dns+").unwrap_or(p);
            let port = url
                .rsplit_once(':')
                .and_then(|(_, p)| p.trim_end_matches('/').parse::<u16>().ok());
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || (p.starts_with("dns+") && port.is_none())
            {
                return Err(bad(format!(
                    "proxies: {p:?} is neither http(s)://host:port nor dns+http(s)://name:port"
                )));
            }
        }
        let b = c.bounds;
        if b.hold_ms == 0 || b.hold_ms > 30_000 || b.hold_ms <= b.drain_ms + b.catch_up_ms {
            return Err(bad(format!(
                "bounds: hold_ms ({}) must be at most 30000 and longer than drain_ms + catch_up_ms ({})",
                b.hold_ms,
                b.drain_ms + b.catch_up_ms
            )));
        }
        let g = c.gates;
        let rate = |r: f64| (0.0..=1.0).contains(&r);
        if !rate(g.shadow_max_mismatch_rate) || !rate(g.canary_max_error_rate) {
            return Err(bad(
                "gates: shadow_max_mismatch_rate and canary_max_error_rate are 0 to 1".into(),
            ));
        }
        if c.api_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(bad("api_token must be at least 16 characters".into()));
        }
        if g.lease_secs < 10 {
            return Err(bad("gates: lease_secs must be at least 10".into()));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_must_leave_the_hold_longest() {
        let dir = std::env::temp_dir().join(format!("strangler-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.toml");
        let base = "proxies = [\"http://127.0.0.1:8001\"]\nmonolith_url = \"mysql://root@127.0.0.1:13306\"\nservices_url = \"mysql://root@127.0.0.1:13307\"\nto_services_stream = \"m2s\"\nto_monolith_stream = \"s2m\"\n";
        std::fs::write(&path, base).unwrap();
        let c = ControllerConfig::load(&path).unwrap();
        assert_eq!(c.offsets_db, "strangler_cdc");
        assert_eq!(c.bounds, Bounds::default());
        std::fs::write(&path, format!("{base}[bounds]\nhold_ms = 2000\n")).unwrap();
        let err = ControllerConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("longer than drain_ms + catch_up_ms"), "{err}");
        assert_eq!(c.gates, GateBounds::default());
        std::fs::write(
            &path,
            format!("{base}[gates]\nshadow_max_mismatch_rate = 5.0\n"),
        )
        .unwrap();
        let err = ControllerConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("0 to 1"), "{err}");
        std::fs::write(
            &path,
            base.replace("http://127.0.0.1:8001", "127.0.0.1:8001"),
        )
        .unwrap();
        let e = ControllerConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("neither http(s)://host:port"), "{e}");
        std::fs::write(
            &path,
            base.replace("http://127.0.0.1:8001", "dns+http://proxy-pods"),
        )
        .unwrap();
        let e = ControllerConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("dns+http(s)://name:port"), "{e}");
        std::fs::write(&path, base.replace("proxies", "proxys")).unwrap();
        assert!(ControllerConfig::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

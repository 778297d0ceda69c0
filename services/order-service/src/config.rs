//! order-service's one config struct: defaults that run on one machine, then an optional TOML
//! file (`[server]`, `[auth]`, `[peers]`), then `ORDER_SVC_*` environment overrides.

use serde::Deserialize;
pub use service_kit::cli::ServiceConfig;
pub use service_kit::config::{AuthSettings, ConfigError, ServerSettings};

/// order-service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address (8083), database (`order_svc`), pool, id numbering, limits, logs.
    pub server: ServerSettings,
    /// User tokens: the monolith's secret and/or user-service's JWKS.
    pub auth: AuthSettings,
    pub peers: Peers,
}

/// The services the saga calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Peers {
    /// product-service base URL (env `ORDER_SVC_PRODUCT_URL`).
    pub product_url: String,
    /// Its internal token (env `ORDER_SVC_PRODUCT_TOKEN`).
    pub product_token: String,
    /// Payment gateway base URL (env `ORDER_SVC_PAYMENT_URL`).
    pub payment_url: String,
    /// Per call to a peer; a charge that times out is asked again with the same idempotency key.
    pub timeout_ms: u64,
    /// Tries per call before the saga gives up and compensates.
    pub attempts: u32,
    /// A saga whose driver went silent this long is taken over by the recovery loop.
    pub lease_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::new(8083, "order_svc"),
            auth: AuthSettings::default(),
            peers: Peers::default(),
        }
    }
}

impl Default for Peers {
    fn default() -> Self {
        Self {
            product_url: "http://127.0.0.1:8082".into(),
            product_token: "strangler-dev-internal-token-0123456789".into(),
            payment_url: "http://127.0.0.1:8090".into(),
            timeout_ms: 2_000,
            attempts: 3,
            lease_secs: 30,
        }
    }
}

impl ServiceConfig for Config {
    fn server(&self) -> &ServerSettings {
        &self.server
    }

    /// Applies the `[server]` variables and `ORDER_SVC_JWT_LEGACY_SECRET`, `_JWKS_URL`,
    /// `_PRODUCT_URL`, `_PRODUCT_TOKEN`, `_PAYMENT_URL`.
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.server.apply_env("ORDER_SVC", &get)?;
        self.auth.apply_env("ORDER_SVC", &get);
        for (name, field) in [
            ("ORDER_SVC_PRODUCT_URL", &mut self.peers.product_url),
            ("ORDER_SVC_PRODUCT_TOKEN", &mut self.peers.product_token),
            ("ORDER_SVC_PAYMENT_URL", &mut self.peers.payment_url),
        ] {
            if let Some(v) = get(name) {
                *field = v;
            }
        }
        Ok(())
    }

    /// Checks values that parse but cannot work.
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.auth.validate()?;
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        for (name, url) in [
            ("peers.product_url", &self.peers.product_url),
            ("peers.payment_url", &self.peers.payment_url),
        ] {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be an http(s) URL, got {url:?}"
                )));
            }
        }
        if self.peers.timeout_ms == 0 || self.peers.attempts == 0 || self.peers.lease_secs == 0 {
            return bad("peers.timeout_ms, peers.attempts and peers.lease_secs must be > 0");
        }
        if self.peers.lease_secs * 1000
            <= self.peers.timeout_ms * u64::from(self.peers.attempts) * 3
        {
            return bad("peers.lease_secs must outlast three calls' worth of timeouts and retries");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let err =
            service_kit::config::from_toml::<Config>("[peers]\npayment = \"x\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("payment"), "{err}");
        let mut c = Config::default();
        c.apply_env(|n| (n == "ORDER_SVC_PAYMENT_URL").then(|| "ftp://x".to_string()))
            .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("peers.payment_url")
        );
        let mut c = Config::default();
        c.peers.lease_secs = 1;
        assert!(c.validate().unwrap_err().to_string().contains("lease_secs"));
    }
}

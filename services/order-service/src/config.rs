//! order-service's one config struct: defaults that run on one machine, then an optional TOML
//! file (`[server]`, `[auth]`, `[peers]`), then `ORDER_SVC_*` environment overrides.

use std::path::Path;

use serde::Deserialize;
pub use service_kit::config::{ConfigError, ServerSettings};

/// order-service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address (8083), database (`order_svc`), pool, id numbering, limits, logs.
    pub server: ServerSettings,
    pub auth: AuthConfig,
    pub peers: Peers,
}

/// How user tokens are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The monolith's HS256 secret (env `ORDER_SVC_JWT_LEGACY_SECRET`); empty: refused.
    pub legacy_secret: String,
    /// user-service's JWKS (env `ORDER_SVC_JWKS_URL`); empty: EdDSA tokens refused.
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    pub jwks_refresh_secs: u64,
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
            auth: AuthConfig::default(),
            peers: Peers::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            legacy_secret: "strangler-dev-secret-change-me-0123456789".into(),
            jwks_url: String::new(),
            issuer: "shop-monolith".into(),
            audience: "shop".into(),
            jwks_refresh_secs: 60,
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

impl Config {
    /// Defaults, then the file (if given), then environment overrides; validated.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config: Self = service_kit::config::read(path)?;
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Applies the `[server]` variables and `ORDER_SVC_JWT_LEGACY_SECRET`, `_JWKS_URL`,
    /// `_PRODUCT_URL`, `_PRODUCT_TOKEN`, `_PAYMENT_URL`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.server.apply_env("ORDER_SVC", &get)?;
        for (name, field) in [
            ("ORDER_SVC_JWT_LEGACY_SECRET", &mut self.auth.legacy_secret),
            ("ORDER_SVC_JWKS_URL", &mut self.auth.jwks_url),
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
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if !self.auth.legacy_secret.is_empty() && self.auth.legacy_secret.len() < 32 {
            return bad("auth.legacy_secret must be empty or at least 32 bytes");
        }
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

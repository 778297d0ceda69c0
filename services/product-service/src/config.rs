//! product-service's one config struct: defaults that run on one machine, then an optional TOML
//! file (`[server]`, `[auth]`), then `PRODUCT_SVC_*` environment overrides.

use std::path::Path;

use serde::Deserialize;
pub use service_kit::config::{ConfigError, ServerSettings};

/// product-service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address (8082), database (`product_svc`), pool, id numbering, limits, logs.
    pub server: ServerSettings,
    pub auth: AuthConfig,
}

/// How callers are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The monolith's HS256 secret (env `PRODUCT_SVC_JWT_LEGACY_SECRET`); empty: refused.
    pub legacy_secret: String,
    /// user-service's JWKS (env `PRODUCT_SVC_JWKS_URL`); empty: EdDSA tokens refused.
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// How often the JWKS is fetched again (also at once on an unknown `kid`).
    pub jwks_refresh_secs: u64,
    /// Bearer token of the services that call `/internal/*` (env `PRODUCT_SVC_INTERNAL_TOKEN`).
    pub internal_token: String,
}

/// The development internal token; warned about at start.
pub const DEV_INTERNAL_TOKEN: &str = "strangler-dev-internal-token-0123456789";

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::new(8082, "product_svc"),
            auth: AuthConfig::default(),
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
            internal_token: DEV_INTERNAL_TOKEN.into(),
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

    /// Applies the `[server]` variables and `PRODUCT_SVC_JWT_LEGACY_SECRET`, `_JWKS_URL`,
    /// `_INTERNAL_TOKEN`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.server.apply_env("PRODUCT_SVC", &get)?;
        for (name, field) in [
            (
                "PRODUCT_SVC_JWT_LEGACY_SECRET",
                &mut self.auth.legacy_secret,
            ),
            ("PRODUCT_SVC_JWKS_URL", &mut self.auth.jwks_url),
            ("PRODUCT_SVC_INTERNAL_TOKEN", &mut self.auth.internal_token),
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
        if self.auth.internal_token.len() < 16 {
            return bad("auth.internal_token must be at least 16 bytes");
        }
        if !self.auth.jwks_url.is_empty() && !self.auth.jwks_url.starts_with("http") {
            return bad("auth.jwks_url must be an http(s) URL");
        }
        if self.auth.jwks_refresh_secs == 0 {
            return bad("auth.jwks_refresh_secs must be > 0");
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
            service_kit::config::from_toml::<Config>("[auth]\ninternal = \"x\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("internal"), "{err}");
        let mut c = Config::default();
        c.apply_env(|n| (n == "PRODUCT_SVC_INTERNAL_TOKEN").then(|| "short".to_string()))
            .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("internal_token")
        );
    }
}

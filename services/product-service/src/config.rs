//! product-service's one config struct: defaults that run on one machine, then an optional TOML
//! file (`[server]`, `[auth]`, `[internal]`), then `PRODUCT_SVC_*` environment overrides.

use serde::Deserialize;
pub use service_kit::cli::ServiceConfig;
pub use service_kit::config::{AuthSettings, ConfigError, ServerSettings};

/// product-service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address (8082), database (`product_svc`), pool, id numbering, limits, logs.
    pub server: ServerSettings,
    /// User tokens: the monolith's secret and/or user-service's JWKS.
    pub auth: AuthSettings,
    pub internal: InternalConfig,
    pub catalog: CatalogConfig,
    pub search: SearchConfig,
}

/// The in-memory search index that answers `GET /api/products?q=`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Off: searches run as SQL full-text queries, as in the monolith.
    pub enabled: bool,
    /// How often rows changed within `lookback_ms` are read again (changes that did not come
    /// through this service: replication).
    pub poll_ms: u64,
    pub lookback_ms: u64,
    /// How often every row is compared with the index (rows replicated with an older
    /// `updated_at`, deletions): the longest a replicated change can be missing from searches.
    pub reconcile_secs: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_ms: 1_000,
            lookback_ms: 60_000,
            reconcile_secs: 300,
        }
    }
}

/// How the catalog listing is served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// How long a listing's `total` is reused before the catalog is counted again (0: count
    /// every page). Writes through this service forget the totals at once.
    pub count_cache_ms: u64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            count_cache_ms: 2_000,
        }
    }
}

/// The services that call `/internal/*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InternalConfig {
    /// Their bearer token (env `PRODUCT_SVC_INTERNAL_TOKEN`).
    pub token: String,
}

/// The development internal token; warned about at start.
pub const DEV_INTERNAL_TOKEN: &str = "strangler-dev-internal-token-0123456789";

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::new(8082, "product_svc"),
            auth: AuthSettings::default(),
            internal: InternalConfig::default(),
            catalog: CatalogConfig::default(),
            search: SearchConfig::default(),
        }
    }
}

impl Default for InternalConfig {
    fn default() -> Self {
        Self {
            token: DEV_INTERNAL_TOKEN.into(),
        }
    }
}

impl ServiceConfig for Config {
    fn server(&self) -> &ServerSettings {
        &self.server
    }

    /// Applies the `[server]` variables and `PRODUCT_SVC_JWT_LEGACY_SECRET`, `_JWKS_URL`,
    /// `_INTERNAL_TOKEN`.
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.server.apply_env("PRODUCT_SVC", &get)?;
        for (name, field) in [
            (
                "PRODUCT_SVC_JWT_LEGACY_SECRET",
                &mut self.auth.legacy_secret,
            ),
            ("PRODUCT_SVC_JWKS_URL", &mut self.auth.jwks_url),
            ("PRODUCT_SVC_INTERNAL_TOKEN", &mut self.internal.token),
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
        if self.search.poll_ms == 0 || self.search.reconcile_secs == 0 {
            return Err(ConfigError::Invalid(
                "search.poll_ms and search.reconcile_secs must be above 0".into(),
            ));
        }
        if self.search.lookback_ms < 2 * self.search.poll_ms {
            return Err(ConfigError::Invalid(
                "search.lookback_ms must be at least twice search.poll_ms".into(),
            ));
        }
        if self.internal.token.len() < 16 {
            return Err(ConfigError::Invalid(
                "internal.token must be at least 16 bytes".into(),
            ));
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
            service_kit::config::from_toml::<Config>("[internal]\nkey = \"x\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("key"), "{err}");
        let mut c = Config::default();
        c.apply_env(|n| (n == "PRODUCT_SVC_INTERNAL_TOKEN").then(|| "short".to_string()))
            .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("internal.token")
        );
    }
}

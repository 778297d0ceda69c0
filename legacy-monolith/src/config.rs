//! The monolith's one config struct: defaults that run on one machine, then an optional TOML file,
//! then `SHOP_*` environment overrides; `--check-config` validates it and exits.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// The monolith's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the public HTTP API and of `/metrics`, `/healthz`, `/readyz` (env `SHOP_LISTEN`).
    pub listen: SocketAddr,
    /// MariaDB URL of the `shop` schema (env `SHOP_DATABASE_URL`).
    pub database_url: String,
    /// Largest number of pooled database connections.
    pub db_pool_max: usize,
    /// New rows get ids `id_offset`, `id_offset + id_step`, … (env `SHOP_ID_STEP`,
    /// `SHOP_ID_OFFSET`): with a service on another offset, both sides insert without colliding.
    pub id_step: u16,
    pub id_offset: u16,
    /// Largest request body in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// API requests served at once; more wait for a slot.
    pub max_in_flight: usize,
    /// Longest wait for a slot: past it the request is refused with 503 `overloaded` (as a
    /// PHP-FPM pool behind nginx refuses), so that what the shop can serve stays fast instead of
    /// every request queueing into the clients' timeouts.
    pub queue_ms: u64,
    /// Token signing.
    pub jwt: JwtConfig,
    /// Payment gateway.
    pub payment: PaymentConfig,
    /// Log format: `json`, `pretty`, or `auto` (pretty on a terminal, JSON otherwise).
    pub log_format: LogFormat,
}

/// JWT settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256 secret, at least 32 bytes (env `SHOP_JWT_SECRET`).
    pub secret: String,
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
    /// Token lifetime in seconds.
    pub ttl_secs: u64,
}

/// Payment gateway settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentConfig {
    /// `simulated`: the in-process gateway of the legacy system (tokens starting `tok_decline`
    /// are declined, `tok_unavailable` fail as an outage, any other `tok_…` is charged).
    pub provider: PaymentProvider,
}

/// Which gateway charges orders.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PaymentProvider {
    #[default]
    Simulated,
}

pub use service_kit::http::LogFormat;

/// The development secret used when none is configured; refused nowhere, warned about at start.
pub const DEV_JWT_SECRET: &str = "strangler-dev-secret-change-me-0123456789";

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            database_url: "mysql://root@127.0.0.1:3306/shop".into(),
            db_pool_max: 32,
            id_step: 1,
            id_offset: 1,
            max_body_bytes: 1024 * 1024,
            max_in_flight: 64,
            queue_ms: 1_000,
            jwt: JwtConfig::default(),
            payment: PaymentConfig::default(),
            log_format: LogFormat::Auto,
        }
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: DEV_JWT_SECRET.into(),
            issuer: "shop-monolith".into(),
            audience: "shop".into(),
            ttl_secs: 3600,
        }
    }
}

impl Default for PaymentConfig {
    fn default() -> Self {
        Self {
            provider: PaymentProvider::Simulated,
        }
    }
}

/// A config that could not be loaded, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the file (if given), then environment overrides; validated.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: path.display().to_string(),
                    message,
                })?
            }
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; the error names line, column and field.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Applies `SHOP_LISTEN`, `SHOP_DATABASE_URL`, `SHOP_JWT_SECRET`, `SHOP_ID_STEP`, `SHOP_ID_OFFSET`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("SHOP_LISTEN") {
            self.listen = v.parse().map_err(|e| ConfigError::Env {
                name: "SHOP_LISTEN",
                message: format!("{v:?} is not an address like 127.0.0.1:8080 ({e})"),
            })?;
        }
        if let Some(v) = get("SHOP_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("SHOP_JWT_SECRET") {
            self.jwt.secret = v;
        }
        for (name, field) in [
            ("SHOP_ID_STEP", &mut self.id_step),
            ("SHOP_ID_OFFSET", &mut self.id_offset),
        ] {
            if let Some(v) = get(name) {
                *field = v.parse().map_err(|e| ConfigError::Env {
                    name,
                    message: format!("{v:?} is not a number from 1 to 65535 ({e})"),
                })?;
            }
        }
        Ok(())
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt.secret.len() < 32 {
            return Err(ConfigError::Invalid(format!(
                "jwt.secret must be at least 32 bytes, got {}",
                self.jwt.secret.len()
            )));
        }
        if self.jwt.ttl_secs == 0 {
            return Err(ConfigError::Invalid("jwt.ttl_secs must be > 0".into()));
        }
        if self.db_pool_max == 0 {
            return Err(ConfigError::Invalid("db_pool_max must be > 0".into()));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::Invalid("max_in_flight must be > 0".into()));
        }
        if self.id_step == 0 || self.id_offset == 0 || self.id_offset > self.id_step {
            return Err(ConfigError::Invalid(format!(
                "id_offset must be 1 to id_step (got offset {} step {})",
                self.id_offset, self.id_step
            )));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid("max_body_bytes must be ≥ 1024".into()));
        }
        mysql_async::Opts::from_url(&self.database_url).map_err(|e| {
            ConfigError::Invalid(format!(
                "database_url {:?} is not a MariaDB URL: {e}",
                self.database_url
            ))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let mut c = Config::from_toml(
            "listen = \"127.0.0.1:9000\"\n[jwt]\nttl_secs = 60\n[payment]\nprovider = \"simulated\"\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.jwt.ttl_secs, 60);
        c.apply_env(|n| (n == "SHOP_LISTEN").then(|| "127.0.0.1:9001".to_string()))
            .unwrap();
        assert_eq!(c.listen.port(), 9001);
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let err =
            Config::from_toml("listen = \"127.0.0.1:9000\"\n\nlisten_port = 3\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let err = Config::from_toml("[payment]\nprovider = \"stripe\"\n").unwrap_err();
        assert!(err.contains("stripe"), "{err}");
        let mut c = Config::default();
        c.jwt.secret = "short".into();
        assert!(c.validate().unwrap_err().to_string().contains("32 bytes"));
        let err = c
            .apply_env(|n| (n == "SHOP_LISTEN").then(|| "nope".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("SHOP_LISTEN"));
    }
}

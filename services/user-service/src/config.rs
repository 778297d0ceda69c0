//! user-service's one config struct: defaults that run on one machine, then an optional TOML file,
//! then `USER_SVC_*` environment overrides; `--check-config` validates it and exits.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
pub use service_kit::http::LogFormat;

/// The development secret the monolith uses too (its `DEV_JWT_SECRET`).
pub const DEV_LEGACY_SECRET: &str = "strangler-dev-secret-change-me-0123456789";

/// user-service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the API and of `/metrics`, `/healthz`, `/readyz` (env `USER_SVC_LISTEN`).
    pub listen: SocketAddr,
    /// MariaDB URL of the service's own schema (env `USER_SVC_DATABASE_URL`).
    pub database_url: String,
    /// Largest number of pooled database connections.
    pub db_pool_max: usize,
    /// New user ids are `id_offset`, `id_offset + id_step`, …: with the monolith on another
    /// offset, both sides create users during a canary without colliding ids.
    pub id_step: u16,
    pub id_offset: u16,
    /// Largest request body in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    pub jwt: JwtConfig,
    pub log_format: LogFormat,
}

/// Which key signs new tokens.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SignWith {
    /// The monolith's HS256 secret: tokens both sides accept (while routes can roll back).
    #[default]
    Legacy,
    /// The newest active Ed25519 key (published in the JWKS).
    Ed25519,
}

/// Token settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// The monolith's HS256 secret (env `USER_SVC_JWT_LEGACY_SECRET`); empty: legacy tokens are
    /// neither accepted nor issued.
    pub legacy_secret: String,
    /// `iss` and `aud`: the monolith's, so that tokens work on both sides.
    pub issuer: String,
    pub audience: String,
    pub ttl_secs: u64,
    pub sign_with: SignWith,
    /// A new Ed25519 key is made when the newest is this old.
    pub rotate_after_secs: u64,
    /// A new key is published in the JWKS this long before it signs, so every verifier has it.
    pub prepublish_secs: u64,
    /// How often each replica re-reads the keys.
    pub reload_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".parse().expect("valid address"),
            database_url: "mysql://root@127.0.0.1:3306/user_svc".into(),
            db_pool_max: 20,
            id_step: 1,
            id_offset: 1,
            max_body_bytes: 64 * 1024,
            jwt: JwtConfig::default(),
            log_format: LogFormat::Auto,
        }
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            legacy_secret: DEV_LEGACY_SECRET.into(),
            issuer: "shop-monolith".into(),
            audience: "shop".into(),
            ttl_secs: 3600,
            sign_with: SignWith::Legacy,
            rotate_after_secs: 30 * 86_400,
            prepublish_secs: 120,
            reload_secs: 10,
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

    /// Applies `USER_SVC_LISTEN`, `USER_SVC_DATABASE_URL`, `USER_SVC_JWT_LEGACY_SECRET`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("USER_SVC_LISTEN") {
            self.listen = v.parse().map_err(|e| ConfigError::Env {
                name: "USER_SVC_LISTEN",
                message: format!("{v:?} is not an address like 127.0.0.1:8081 ({e})"),
            })?;
        }
        if let Some(v) = get("USER_SVC_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("USER_SVC_JWT_LEGACY_SECRET") {
            self.jwt.legacy_secret = v;
        }
        Ok(())
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !self.jwt.legacy_secret.is_empty() && self.jwt.legacy_secret.len() < 32 {
            return bad(format!(
                "jwt.legacy_secret must be empty or at least 32 bytes, got {}",
                self.jwt.legacy_secret.len()
            ));
        }
        if self.jwt.sign_with == SignWith::Legacy && self.jwt.legacy_secret.is_empty() {
            return bad("jwt.sign_with = \"legacy\" needs jwt.legacy_secret".into());
        }
        if self.jwt.ttl_secs == 0 || self.jwt.reload_secs == 0 || self.jwt.rotate_after_secs == 0 {
            return bad(
                "jwt.ttl_secs, jwt.reload_secs and jwt.rotate_after_secs must be > 0".into(),
            );
        }
        if self.db_pool_max == 0 {
            return bad("db_pool_max must be > 0".into());
        }
        if self.id_step == 0 || self.id_offset == 0 || self.id_offset > self.id_step {
            return bad(format!(
                "id_offset must be 1 to id_step (got offset {} step {})",
                self.id_offset, self.id_step
            ));
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes must be ≥ 1024".into());
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
    fn defaults_are_valid_and_match_the_monolith() {
        let c = Config::default();
        c.validate().unwrap();
        let m = legacy_monolith::config::JwtConfig::default();
        assert_eq!(
            (
                c.jwt.issuer.as_str(),
                c.jwt.audience.as_str(),
                c.jwt.legacy_secret.as_str()
            ),
            (m.issuer.as_str(), m.audience.as_str(), m.secret.as_str())
        );
    }

    #[test]
    fn bad_files_name_the_line_and_bad_values_are_refused() {
        let err = Config::from_toml("listen = \"127.0.0.1:9000\"\n\n[jwt]\nsign_with = \"rsa\"\n")
            .unwrap_err();
        assert!(err.contains("line 4") && err.contains("rsa"), "{err}");
        let mut c =
            Config::from_toml("[jwt]\nlegacy_secret = \"\"\nsign_with = \"ed25519\"\n").unwrap();
        c.validate().unwrap();
        c.jwt.sign_with = SignWith::Legacy;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("legacy_secret")
        );
        let c = Config {
            id_offset: 3,
            id_step: 2,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("id_offset"));
        let err = Config::default()
            .apply_env(|n| (n == "USER_SVC_LISTEN").then(|| "nope".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("USER_SVC_LISTEN"));
    }
}

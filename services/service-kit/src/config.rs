//! Configuration pieces every service has: the `[server]` table (listen address, database,
//! pool, id numbering, body limit, log format) with `<PREFIX>_*` environment overrides, and TOML
//! loading whose errors name the file, line and field.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::http::LogFormat;

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
    Env { name: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Parses TOML text; the error names line, column and field.
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
}

/// The file's settings over the defaults (the defaults alone without a file).
pub fn read<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    from_toml(&text).map_err(|message| ConfigError::Parse {
        path: path.display().to_string(),
        message,
    })
}

/// The `[server]` table of a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address of the API and of `/metrics`, `/healthz`, `/readyz` (env `<PREFIX>_LISTEN`).
    pub listen: SocketAddr,
    /// MariaDB URL of the service's own schema (env `<PREFIX>_DATABASE_URL`).
    pub database_url: String,
    /// Largest number of pooled database connections.
    pub db_pool_max: usize,
    /// New rows get ids `id_offset`, `id_offset + id_step`, … (env `<PREFIX>_ID_STEP`,
    /// `<PREFIX>_ID_OFFSET`): with the monolith on another offset, both sides insert while
    /// cdc-sync mirrors them, without colliding ids.
    pub id_step: u16,
    pub id_offset: u16,
    /// Largest request body in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// `json`, `pretty`, or `auto` (pretty on a terminal).
    pub log_format: LogFormat,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self::new(8080, "shop")
    }
}

impl ServerSettings {
    /// Defaults for a service on `port` with its schema `database` on the local server.
    pub fn new(port: u16, database: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            database_url: format!("mysql://root@127.0.0.1:3306/{database}"),
            db_pool_max: 20,
            id_step: 1,
            id_offset: 1,
            max_body_bytes: 64 * 1024,
            log_format: LogFormat::Auto,
        }
    }

    /// Applies `<prefix>_LISTEN`, `_DATABASE_URL`, `_ID_STEP`, `_ID_OFFSET`.
    pub fn apply_env(
        &mut self,
        prefix: &str,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let name = |s: &str| format!("{prefix}_{s}");
        if let Some(v) = get(&name("LISTEN")) {
            self.listen = v.parse().map_err(|e| ConfigError::Env {
                name: name("LISTEN"),
                message: format!("{v:?} is not an address like 127.0.0.1:8081 ({e})"),
            })?;
        }
        if let Some(v) = get(&name("DATABASE_URL")) {
            self.database_url = v;
        }
        for (var, field) in [
            (name("ID_STEP"), &mut self.id_step),
            (name("ID_OFFSET"), &mut self.id_offset),
        ] {
            if let Some(v) = get(&var) {
                *field = v.parse().map_err(|e| ConfigError::Env {
                    name: var.clone(),
                    message: format!("{v:?} is not a number from 1 to 65535 ({e})"),
                })?;
            }
        }
        Ok(())
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.db_pool_max == 0 {
            return bad("server.db_pool_max must be > 0".into());
        }
        if self.id_step == 0 || self.id_offset == 0 || self.id_offset > self.id_step {
            return bad(format!(
                "server.id_offset must be 1 to server.id_step (got offset {} step {})",
                self.id_offset, self.id_step
            ));
        }
        if self.max_body_bytes < 1024 {
            return bad("server.max_body_bytes must be ≥ 1024".into());
        }
        mysql_async::Opts::from_url(&self.database_url).map_err(|e| {
            ConfigError::Invalid(format!(
                "server.database_url {:?} is not a MariaDB URL: {e}",
                self.database_url
            ))
        })?;
        Ok(())
    }

    /// Creates the database if needed, connects (with the id numbering) and runs `migrations`.
    pub async fn open_database(
        &self,
        migrations: &[crate::migrate::Migration],
    ) -> Result<mysql_async::Pool, OpenError> {
        crate::db::ensure_database(&self.database_url)
            .await
            .map_err(OpenError::Create)?;
        let pool = crate::db::pool_with_ids(
            &self.database_url,
            self.db_pool_max,
            self.id_step,
            self.id_offset,
        )
        .map_err(OpenError::Create)?;
        let ran = crate::migrate::run(&pool, migrations).await?;
        tracing::info!(ran, "schema is current");
        Ok(pool)
    }
}

/// Why a service's database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("creating or connecting to the database: {0}")]
    Create(mysql_async::Error),
    #[error(transparent)]
    Migrate(#[from] crate::migrate::MigrateError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_validation_name_the_field() {
        let mut s = ServerSettings::new(8082, "product_svc");
        assert!(s.database_url.ends_with("/product_svc"));
        s.apply_env("PRODUCT_SVC", &|n| {
            (n == "PRODUCT_SVC_ID_STEP").then(|| "2".to_string())
        })
        .unwrap();
        assert_eq!(s.id_step, 2);
        s.validate().unwrap();
        let err = s
            .apply_env("PRODUCT_SVC", &|n| {
                (n == "PRODUCT_SVC_LISTEN").then(|| "nope".to_string())
            })
            .unwrap_err();
        assert!(err.to_string().contains("PRODUCT_SVC_LISTEN"), "{err}");
        s.id_offset = 3;
        assert!(s.validate().unwrap_err().to_string().contains("id_offset"));
        let err =
            from_toml::<ServerSettings>("listen = \"127.0.0.1:1\"\n\nport = 3\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("port"), "{err}");
    }
}

/// The `[auth]` table of a service that checks user tokens but does not issue them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The monolith's HS256 secret (env `<PREFIX>_JWT_LEGACY_SECRET`); empty: HS256 refused.
    pub legacy_secret: String,
    /// user-service's JWKS (env `<PREFIX>_JWKS_URL`); empty: EdDSA tokens refused.
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// How often the JWKS is fetched again (also at once on an unknown `kid`).
    pub jwks_refresh_secs: u64,
}

impl Default for AuthSettings {
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

impl AuthSettings {
    /// Applies `<prefix>_JWT_LEGACY_SECRET` and `<prefix>_JWKS_URL`.
    pub fn apply_env(&mut self, prefix: &str, get: &impl Fn(&str) -> Option<String>) {
        if let Some(v) = get(&format!("{prefix}_JWT_LEGACY_SECRET")) {
            self.legacy_secret = v;
        }
        if let Some(v) = get(&format!("{prefix}_JWKS_URL")) {
            self.jwks_url = v;
        }
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if !self.legacy_secret.is_empty() && self.legacy_secret.len() < 32 {
            return bad("auth.legacy_secret must be empty or at least 32 bytes");
        }
        if !self.jwks_url.is_empty() && !self.jwks_url.starts_with("http") {
            return bad("auth.jwks_url must be an http(s) URL");
        }
        if self.jwks_refresh_secs == 0 {
            return bad("auth.jwks_refresh_secs must be > 0");
        }
        Ok(())
    }

    /// The token checker these settings describe, its JWKS followed in the background.
    pub fn verifier(&self) -> std::sync::Arc<crate::jwks::JwksVerifier> {
        let v = crate::jwks::JwksVerifier::new(
            crate::jwt::Audience {
                issuer: self.issuer.clone(),
                audience: self.audience.clone(),
                ttl_secs: 0,
            },
            &self.legacy_secret,
            (!self.jwks_url.is_empty()).then(|| self.jwks_url.clone()),
        );
        v.spawn_refresh(std::time::Duration::from_secs(self.jwks_refresh_secs));
        v
    }
}

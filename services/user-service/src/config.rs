//! user-service's one config struct: defaults that run on one machine, then an optional TOML file
//! (`[server]`, `[jwt]`), then `USER_SVC_*` environment overrides; `--check-config` validates it.

use serde::Deserialize;
pub use service_kit::cli::ServiceConfig;
pub use service_kit::config::{ConfigError, ServerSettings};

/// The development secret the monolith uses too (its `DEV_JWT_SECRET`).
pub const DEV_LEGACY_SECRET: &str = "strangler-dev-secret-change-me-0123456789";

/// user-service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address (8081), database (`user_svc`), pool, id numbering, limits, logs.
    pub server: ServerSettings,
    pub jwt: JwtConfig,
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
            server: ServerSettings::new(8081, "user_svc"),
            jwt: JwtConfig::default(),
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

impl ServiceConfig for Config {
    fn server(&self) -> &ServerSettings {
        &self.server
    }

    /// Applies `USER_SVC_LISTEN`, `_DATABASE_URL`, `_ID_STEP`, `_ID_OFFSET`, `_JWT_LEGACY_SECRET`.
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.server.apply_env("USER_SVC", &get)?;
        if let Some(v) = get("USER_SVC_JWT_LEGACY_SECRET") {
            self.jwt.legacy_secret = v;
        }
        Ok(())
    }

    /// Checks values that parse but cannot work.
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
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
        let err = service_kit::config::from_toml::<Config>(
            "[server]\nlisten = \"127.0.0.1:9000\"\n\n[jwt]\nsign_with = \"rsa\"\n",
        )
        .unwrap_err();
        assert!(err.contains("line 5") && err.contains("rsa"), "{err}");
        let mut c: Config = service_kit::config::from_toml(
            "[jwt]\nlegacy_secret = \"\"\nsign_with = \"ed25519\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        c.jwt.sign_with = SignWith::Legacy;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("legacy_secret")
        );
        let err = Config::default()
            .apply_env(|n| (n == "USER_SVC_LISTEN").then(|| "nope".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("USER_SVC_LISTEN"));
    }
}

//! notification-service's one config struct: defaults that run on one machine, then an optional
//! TOML file (`[server]`, `[auth]`, `[smtp]`, `[sms]`, `[push]`, `[delivery]`), then
//! `NOTIFICATION_SVC_*` environment overrides.

use serde::Deserialize;
pub use service_kit::cli::ServiceConfig;
pub use service_kit::config::{AuthSettings, ConfigError, ServerSettings};

/// notification-service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address (8084), database (`notification_svc`), pool, id numbering, limits, logs.
    pub server: ServerSettings,
    /// User tokens: the monolith's secret and/or user-service's JWKS.
    pub auth: AuthSettings,
    pub smtp: SmtpConfig,
    pub sms: HttpChannel,
    pub push: HttpChannel,
    pub delivery: Delivery,
}

/// The SMTP relay e-mail goes through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// env `NOTIFICATION_SVC_SMTP_HOST`, `NOTIFICATION_SVC_SMTP_PORT`.
    pub host: String,
    pub port: u16,
    pub from: String,
}

/// An HTTP provider (SMS or push): JSON POSTs to `url`; empty: the channel is off.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HttpChannel {
    pub url: String,
    pub api_key: String,
}

/// Retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Tries per message before it goes to `dead_letters`.
    pub max_attempts: u32,
    /// Wait before the second try; doubled each time, at most `max_backoff_ms`.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// How often the inbox and due deliveries are looked at.
    pub poll_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSettings::new(8084, "notification_svc"),
            auth: AuthSettings::default(),
            smtp: SmtpConfig::default(),
            sms: HttpChannel::default(),
            push: HttpChannel::default(),
            delivery: Delivery::default(),
        }
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 2525,
            from: "Shop <no-reply@shop.example>".into(),
        }
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            backoff_ms: 1_000,
            max_backoff_ms: 60_000,
            poll_ms: 500,
        }
    }
}

impl ServiceConfig for Config {
    fn server(&self) -> &ServerSettings {
        &self.server
    }

    /// Applies the `[server]` variables and `NOTIFICATION_SVC_JWKS_URL`, `_SMTP_HOST`,
    /// `_SMTP_PORT`, `_SMS_URL`, `_PUSH_URL`.
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.server.apply_env("NOTIFICATION_SVC", &get)?;
        self.auth.apply_env("NOTIFICATION_SVC", &get);
        for (name, field) in [
            ("NOTIFICATION_SVC_SMTP_HOST", &mut self.smtp.host),
            ("NOTIFICATION_SVC_SMS_URL", &mut self.sms.url),
            ("NOTIFICATION_SVC_PUSH_URL", &mut self.push.url),
        ] {
            if let Some(v) = get(name) {
                *field = v;
            }
        }
        if let Some(v) = get("NOTIFICATION_SVC_SMTP_PORT") {
            self.smtp.port = v.parse().map_err(|e| ConfigError::Env {
                name: "NOTIFICATION_SVC_SMTP_PORT".into(),
                message: format!("{v:?} is not a port ({e})"),
            })?;
        }
        Ok(())
    }

    /// Checks values that parse but cannot work.
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.auth.validate()?;
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.smtp.host.is_empty() || self.smtp.port == 0 {
            return bad("smtp.host and smtp.port are required");
        }
        if self.smtp.from.parse::<lettre::message::Mailbox>().is_err() {
            return bad("smtp.from must be an address like \"Shop <no-reply@shop.example>\"");
        }
        for (name, c) in [("sms.url", &self.sms), ("push.url", &self.push)] {
            if !c.url.is_empty() && !c.url.starts_with("http") {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be an http(s) URL"
                )));
            }
        }
        let d = &self.delivery;
        if d.max_attempts == 0
            || d.backoff_ms == 0
            || d.poll_ms == 0
            || d.max_backoff_ms < d.backoff_ms
        {
            return bad(
                "delivery: max_attempts, backoff_ms, poll_ms > 0 and max_backoff_ms ≥ backoff_ms",
            );
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
        let err = service_kit::config::from_toml::<Config>("[smtp]\nhost = \"x\"\nuser = \"y\"\n")
            .unwrap_err();
        assert!(err.contains("line 3") && err.contains("user"), "{err}");
        let mut c = Config::default();
        c.smtp.from = "not an address".into();
        assert!(c.validate().unwrap_err().to_string().contains("smtp.from"));
        let err = Config::default()
            .apply_env(|n| (n == "NOTIFICATION_SVC_SMTP_PORT").then(|| "x".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("SMTP_PORT"));
    }
}

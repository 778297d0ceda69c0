//! Token checking for services that do not issue tokens: the monolith's HS256 secret plus the
//! Ed25519 keys of user-service's JWKS, fetched at start, every `refresh` interval, and at once
//! when a token names a `kid` not seen yet (a rotation). A failed fetch keeps the last keys.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::jwt::{Audience, Claims, JwtError, Keyring};

/// Checks tokens against the legacy secret and a JWKS URL.
pub struct JwksVerifier {
    base: Keyring,
    url: Option<String>,
    ring: ArcSwap<Keyring>,
    wake: tokio::sync::Notify,
    client: reqwest::Client,
}

impl JwksVerifier {
    /// A verifier for `audience`; `legacy_secret` empty: HS256 tokens are refused; `jwks_url`
    /// none: EdDSA tokens are refused.
    pub fn new(audience: Audience, legacy_secret: &str, jwks_url: Option<String>) -> Arc<Self> {
        let mut base = Keyring::new(audience);
        if !legacy_secret.is_empty() {
            base = base.with_legacy_secret(legacy_secret);
        }
        Arc::new(Self {
            ring: ArcSwap::from_pointee(base.clone()),
            base,
            url: jwks_url,
            wake: tokio::sync::Notify::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
        })
    }

    /// The claims of a valid token; an unknown `kid` also asks for a JWKS fetch.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let ring = self.ring.load();
        let claims = ring.verify(token);
        // Only a refused token can be one signed with a key not fetched yet.
        if claims.is_none() && self.url.is_some() && ring.unknown_kid(token) {
            self.wake.notify_one();
        }
        claims
    }

    /// Fetches the JWKS now.
    pub async fn refresh(&self) -> Result<(), JwtError> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let jwks: serde_json::Value = self
            .client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| JwtError::Jwks(format!("fetching {url}: {e}")))?
            .json()
            .await
            .map_err(|e| JwtError::Jwks(format!("reading {url}: {e}")))?;
        self.ring
            .store(Arc::new(self.base.clone().with_jwks(&jwks)?));
        Ok(())
    }

    /// Keeps the keys fresh: every `every`, and (at most once a second) on an unknown `kid`.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) {
        if self.url.is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.refresh().await {
                    tracing::warn!(error = %e, "JWKS not refreshed; keeping the last keys");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = me.wake.notified() => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
        });
    }
}

//! The public keys of user-service's JWKS (Ed25519, by `kid`), fetched in the background and
//! kept across config reloads, so EdDSA tokens give a verified `sub` for sticky rollouts. A token
//! with an unknown `kid` asks for an early refresh (at most one a second); until then it counts
//! as anonymous. A failed fetch keeps the keys already known.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use jsonwebtoken::DecodingKey;

use crate::control::Control;

/// Keys by `kid`.
#[derive(Default)]
pub struct JwksKeys {
    keys: ArcSwap<HashMap<String, DecodingKey>>,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for JwksKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksKeys")
            .field("kids", &self.keys.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl JwksKeys {
    /// The key `kid`, or `None` (and an early refresh is requested).
    pub fn get(&self, kid: &str) -> Option<DecodingKey> {
        let found = self.keys.load().get(kid).cloned();
        if found.is_none() {
            self.wake.notify_one();
        }
        found
    }

    /// Replaces the keys with those of a JWKS document; returns how many were usable.
    pub fn install(&self, jwks: &serde_json::Value) -> Result<usize, String> {
        let list = jwks["keys"]
            .as_array()
            .ok_or("the JWKS has no \"keys\" array")?;
        let mut keys = HashMap::new();
        for k in list {
            if k["kty"] != "OKP" || k["crv"] != "Ed25519" {
                continue;
            }
            let (Some(kid), Some(x)) = (k["kid"].as_str(), k["x"].as_str()) else {
                continue;
            };
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x)
                .map_err(|e| format!("key {kid}: {e}"))?;
            if bytes.len() != 32 {
                return Err(format!("key {kid}: an Ed25519 public key is 32 bytes"));
            }
            keys.insert(kid.to_string(), DecodingKey::from_ed_der(&bytes));
        }
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(n)
    }

    /// Fetches the JWKS of the current config every `refresh` (or early when an unknown `kid`
    /// shows up), for as long as the process runs. Reads the URL anew each time, so a config
    /// reload that changes it is followed.
    pub fn refresh_forever(control: Arc<Control>) {
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client");
            let mut last_fetch: Option<Instant> = None;
            loop {
                let user_key = control.table.load().config.user_key.clone();
                let keys = &control.jwks;
                if let Some(url) = &user_key.jwks_url
                    && last_fetch.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    last_fetch = Some(Instant::now());
                    let fetched = async {
                        let r = client.get(url).send().await.map_err(|e| e.to_string())?;
                        if !r.status().is_success() {
                            return Err(format!("answered {}", r.status()));
                        }
                        let jwks: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
                        keys.install(&jwks)
                    }
                    .await;
                    match fetched {
                        Ok(n) => {
                            control
                                .metrics
                                .jwks_fetches
                                .with_label_values(&["ok"])
                                .inc();
                            tracing::debug!(%url, keys = n, "JWKS refreshed");
                        }
                        Err(e) => {
                            control
                                .metrics
                                .jwks_fetches
                                .with_label_values(&["failed"])
                                .inc();
                            tracing::warn!(%url, error = %e, "JWKS fetch failed; keeping the keys already known");
                        }
                    }
                }
                let every = Duration::from_millis(user_key.jwks_refresh_ms.max(1000));
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = keys.wake.notified() => {
                        // Unknown kid: refresh now, but not more than once a second.
                        if let Some(t) = last_fetch {
                            tokio::time::sleep(Duration::from_secs(1).saturating_sub(t.elapsed())).await;
                        }
                    }
                }
            }
        });
    }
}

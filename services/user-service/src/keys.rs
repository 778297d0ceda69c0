//! Token keys shared by every replica through the `jwt_keys` table: Ed25519 keys with a `kid`,
//! published in the JWKS `prepublish_secs` before they sign, retired (still published until their
//! tokens expire) when a newer key takes over; plus the monolith's HS256 secret.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mysql_async::Pool;
use mysql_async::prelude::*;
use service_kit::jwt::{Audience, EdKey, JwtError, Keyring, LEGACY_KID};

use crate::config::{JwtConfig, SignWith};

/// Why the keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("database: {0}")]
    Db(#[from] mysql_async::Error),
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

/// The keyring every request uses, reloaded from the database.
pub struct KeyStore {
    pool: Pool,
    config: JwtConfig,
    ring: ArcSwap<Keyring>,
}

/// kid, seed, active now, age of the key in seconds.
type KeyRow = (String, Vec<u8>, bool, i64);

impl KeyStore {
    /// Loads the keys (making the first one when signing with Ed25519 and there is none).
    pub async fn open(pool: Pool, config: JwtConfig) -> Result<Arc<Self>, KeyError> {
        let store = Arc::new(Self {
            ring: ArcSwap::from_pointee(Keyring::new(audience(&config))),
            pool,
            config,
        });
        store.reload().await?;
        Ok(store)
    }

    /// The current keyring.
    pub fn ring(&self) -> Arc<Keyring> {
        self.ring.load_full()
    }

    /// Re-reads the keys; rotates first when the newest key is older than `rotate_after_secs`.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let mut rows = self.rows().await?;
        let newest_age = rows.last().map(|r| r.3);
        let wants_keys = self.config.sign_with == SignWith::Ed25519;
        if wants_keys && newest_age.is_none_or(|age| age >= self.config.rotate_after_secs as i64) {
            let kid = self.rotate().await?;
            tracing::info!(%kid, "made a new token key");
            rows = self.rows().await?;
        }
        let mut ring = Keyring::new(audience(&self.config));
        if !self.config.legacy_secret.is_empty() {
            ring = ring.with_legacy_secret(&self.config.legacy_secret);
        }
        let mut signer = None;
        for (kid, seed, active, _) in &rows {
            ring = ring.with_key(EdKey::from_seed(kid, seed)?);
            if *active {
                signer = Some(kid.clone());
            }
        }
        ring = match (self.config.sign_with, signer) {
            (SignWith::Legacy, _) => ring.signing_with(LEGACY_KID)?,
            (SignWith::Ed25519, Some(kid)) => ring.signing_with(&kid)?,
            (SignWith::Ed25519, None) => return Err(JwtError::NoSigningKey.into()),
        };
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// Keys still published (not retired longer than a token lives), oldest first.
    async fn rows(&self) -> Result<Vec<KeyRow>, KeyError> {
        let mut c = self.pool.get_conn().await?;
        Ok(c.exec(
            "SELECT kid, seed, activates_at <= NOW(3), TIMESTAMPDIFF(SECOND, created_at, NOW(3)) FROM jwt_keys \
             WHERE retires_at IS NULL OR retires_at > NOW(3) - INTERVAL ? SECOND ORDER BY activates_at, kid",
            (self.config.ttl_secs,),
        )
        .await?)
    }

    /// Adds a new key: published now, signing after `prepublish_secs` (at once when no key signs
    /// yet); the keys before it retire when it starts signing. Returns its kid.
    pub async fn rotate(&self) -> Result<String, KeyError> {
        let mut tx = self.pool.start_transaction(Default::default()).await?;
        let signing: Option<i64> = tx
            .query_first("SELECT COUNT(*) FROM jwt_keys WHERE activates_at <= NOW(3) AND retires_at IS NULL FOR UPDATE")
            .await?;
        let delay = if signing.unwrap_or(0) > 0 {
            self.config.prepublish_secs
        } else {
            0
        };
        let kid = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            &service_kit::outbox::new_event_id()[..8]
        );
        tx.exec_drop(
            "INSERT INTO jwt_keys (kid, seed, activates_at) VALUES (?, ?, NOW(3) + INTERVAL ? SECOND)",
            (&kid, EdKey::new_seed().to_vec(), delay),
        )
        .await?;
        tx.exec_drop(
            "UPDATE jwt_keys SET retires_at = NOW(3) + INTERVAL ? SECOND WHERE retires_at IS NULL AND kid <> ?",
            (delay, &kid),
        )
        .await?;
        tx.commit().await?;
        Ok(kid)
    }

    /// Reloads every `reload_secs` until the process ends; a failed reload keeps the last keys.
    pub fn spawn_reload(self: &Arc<Self>) {
        let store = self.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs(store.config.reload_secs);
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = store.reload().await {
                    tracing::warn!(error = %e, "token keys not reloaded; keeping the last ones");
                }
            }
        });
    }
}

fn audience(config: &JwtConfig) -> Audience {
    Audience {
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
        ttl_secs: config.ttl_secs,
    }
}

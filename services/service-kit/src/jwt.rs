//! Tokens: the monolith's claims, HS256 with its shared secret (`kid` "legacy") and Ed25519
//! (EdDSA) keys with their own `kid`, published as a JWKS. A `Keyring` signs and checks; a keyring
//! built from a JWKS only checks, which is what the proxy and the other services use.

use std::collections::HashMap;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// `kid` of tokens signed with the monolith's shared HS256 secret.
pub const LEGACY_KID: &str = "legacy";

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The claims the monolith puts in its tokens (and the services keep).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id, as a string.
    pub sub: String,
    pub email: String,
    pub role: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// Why a key or a JWKS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("invalid key {kid}: {reason}")]
    Key { kid: String, reason: String },
    #[error("invalid JWKS: {0}")]
    Jwks(String),
    #[error("no signing key: configure a legacy secret or an Ed25519 key")]
    NoSigningKey,
}

/// One Ed25519 key: private (signing) or public only (checking).
#[derive(Clone)]
pub struct EdKey {
    pub kid: String,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// Public key, base64url (the JWK `x`).
    pub x: String,
}

impl EdKey {
    /// A signing key from its 32-byte seed.
    pub fn from_seed(kid: &str, seed: &[u8]) -> Result<Self, JwtError> {
        let seed: [u8; 32] = seed.try_into().map_err(|_| JwtError::Key {
            kid: kid.into(),
            reason: format!("an Ed25519 seed is 32 bytes, not {}", seed.len()),
        })?;
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        // PKCS#8 v1 of an Ed25519 private key: a fixed prefix, then the seed (RFC 8410).
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        Ok(Self {
            kid: kid.into(),
            encoding: Some(EncodingKey::from_ed_der(&der)),
            decoding: DecodingKey::from_ed_der(&public),
            x: B64URL.encode(public),
        })
    }

    /// A fresh random seed.
    pub fn new_seed() -> [u8; 32] {
        rand::random()
    }

    /// A checking-only key from a JWK's `x`.
    pub fn public(kid: &str, x: &str) -> Result<Self, JwtError> {
        let bytes = B64URL.decode(x).map_err(|e| JwtError::Key {
            kid: kid.into(),
            reason: e.to_string(),
        })?;
        if bytes.len() != 32 {
            return Err(JwtError::Key {
                kid: kid.into(),
                reason: "an Ed25519 public key is 32 bytes".into(),
            });
        }
        Ok(Self {
            kid: kid.into(),
            encoding: None,
            decoding: DecodingKey::from_ed_der(&bytes),
            x: x.into(),
        })
    }

    /// The key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": self.x,
        })
    }
}

/// Issuer, audience and lifetime of tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Audience {
    pub issuer: String,
    pub audience: String,
    pub ttl_secs: u64,
}

/// Keys that check tokens and, when they hold a private key, sign them.
#[derive(Clone)]
pub struct Keyring {
    audience: Audience,
    legacy: Option<(EncodingKey, DecodingKey)>,
    keys: HashMap<String, EdKey>,
    /// Signs new tokens: an Ed25519 `kid`, or `LEGACY_KID`.
    signer: Option<String>,
}

impl Keyring {
    /// An empty keyring for `audience`.
    pub fn new(audience: Audience) -> Self {
        Self {
            audience,
            legacy: None,
            keys: HashMap::new(),
            signer: None,
        }
    }

    /// Adds the monolith's shared HS256 secret.
    pub fn with_legacy_secret(mut self, secret: &str) -> Self {
        self.legacy = Some((
            EncodingKey::from_secret(secret.as_bytes()),
            DecodingKey::from_secret(secret.as_bytes()),
        ));
        self
    }

    /// Adds an Ed25519 key.
    pub fn with_key(mut self, key: EdKey) -> Self {
        self.keys.insert(key.kid.clone(), key);
        self
    }

    /// Signs new tokens with `kid` (an Ed25519 key of the ring, or `LEGACY_KID`).
    pub fn signing_with(mut self, kid: &str) -> Result<Self, JwtError> {
        let ok = if kid == LEGACY_KID {
            self.legacy.is_some()
        } else {
            self.keys.get(kid).is_some_and(|k| k.encoding.is_some())
        };
        if !ok {
            return Err(JwtError::NoSigningKey);
        }
        self.signer = Some(kid.into());
        Ok(self)
    }

    /// Checking keys from a JWKS document (`{"keys": [...]}`), Ed25519 ones only.
    pub fn with_jwks(mut self, jwks: &serde_json::Value) -> Result<Self, JwtError> {
        let keys = jwks
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| JwtError::Jwks("no `keys` array".into()))?;
        for k in keys {
            if k.get("kty").and_then(|v| v.as_str()) != Some("OKP")
                || k.get("crv").and_then(|v| v.as_str()) != Some("Ed25519")
            {
                continue;
            }
            let kid = k
                .get("kid")
                .and_then(|v| v.as_str())
                .ok_or_else(|| JwtError::Jwks("a key without `kid`".into()))?;
            let x = k
                .get("x")
                .and_then(|v| v.as_str())
                .ok_or_else(|| JwtError::Jwks(format!("key {kid} without `x`")))?;
            self = self.with_key(EdKey::public(kid, x)?);
        }
        Ok(self)
    }

    /// The `kid` new tokens are signed with.
    pub fn signer(&self) -> Option<&str> {
        self.signer.as_deref()
    }

    /// Token lifetime in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.audience.ttl_secs as i64
    }

    /// A signed token for the user.
    pub fn issue(&self, user_id: u64, email: &str, role: &str) -> Result<String, JwtError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            email: email.to_string(),
            role: role.to_string(),
            iss: self.audience.issuer.clone(),
            aud: self.audience.audience.clone(),
            iat: now,
            exp: now + self.ttl_secs(),
        };
        let signer = self.signer.as_deref().ok_or(JwtError::NoSigningKey)?;
        let (mut header, key) = if signer == LEGACY_KID {
            let (enc, _) = self.legacy.as_ref().ok_or(JwtError::NoSigningKey)?;
            (Header::new(Algorithm::HS256), enc)
        } else {
            let key = self
                .keys
                .get(signer)
                .and_then(|k| k.encoding.as_ref())
                .ok_or(JwtError::NoSigningKey)?;
            (Header::new(Algorithm::EdDSA), key)
        };
        header.kid = Some(signer.to_string());
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| JwtError::Key {
            kid: signer.into(),
            reason: e.to_string(),
        })
    }

    /// The claims of a valid token: HS256 with the legacy secret (with or without `kid`, as the
    /// monolith signs them), or EdDSA with a known `kid`; expiry, issuer and audience checked.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = match header.alg {
            Algorithm::HS256 => &self.legacy.as_ref()?.1,
            Algorithm::EdDSA => &self.keys.get(header.kid.as_deref()?)?.decoding,
            _ => return None,
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.audience.issuer]);
        validation.set_audience(&[&self.audience.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .ok()
            .map(|d| d.claims)
    }

    /// Whether a token names a `kid` this ring does not know (time to fetch the JWKS again).
    pub fn unknown_kid(&self, token: &str) -> bool {
        jsonwebtoken::decode_header(token).is_ok_and(|h| {
            h.alg == Algorithm::EdDSA && h.kid.is_some_and(|k| !self.keys.contains_key(&k))
        })
    }

    /// The public keys as a JWKS document (never the legacy secret).
    pub fn jwks(&self) -> serde_json::Value {
        let mut keys: Vec<&EdKey> = self.keys.values().collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audience() -> Audience {
        Audience {
            issuer: "shop".into(),
            audience: "shop-api".into(),
            ttl_secs: 3600,
        }
    }

    #[test]
    fn ed25519_tokens_verify_by_kid_and_through_the_jwks() {
        let key = EdKey::from_seed("k1", &[7u8; 32]).unwrap();
        let ring = Keyring::new(audience())
            .with_key(key)
            .signing_with("k1")
            .unwrap();
        let token = ring.issue(42, "a@b.co", "customer").unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k1"));
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(ring.verify(&token).unwrap().sub, "42");
        // A checker that only has the JWKS accepts it.
        let checker = Keyring::new(audience()).with_jwks(&ring.jwks()).unwrap();
        assert_eq!(checker.verify(&token).unwrap().email, "a@b.co");
        assert!(checker.issue(1, "x@y.co", "customer").is_err());
        // A checker with another key under the same kid does not.
        let other = Keyring::new(audience()).with_key(EdKey::from_seed("k1", &[8u8; 32]).unwrap());
        assert!(other.verify(&token).is_none());
        // Nor one that has never heard of the kid.
        let empty = Keyring::new(audience());
        assert!(empty.unknown_kid(&token));
        assert!(empty.verify(&token).is_none());
    }

    #[test]
    fn legacy_tokens_match_the_monolith_and_never_reach_the_jwks() {
        let secret = "0123456789abcdef0123456789abcdef";
        let ring = Keyring::new(audience())
            .with_legacy_secret(secret)
            .signing_with(LEGACY_KID)
            .unwrap();
        let token = ring.issue(7, "a@b.co", "admin").unwrap();
        // The monolith checks with plain HS256 and the same secret.
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["shop-api"]);
        let c = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(c.role, "admin");
        assert_eq!(ring.jwks(), serde_json::json!({"keys": []}));
        let wrong = Keyring::new(audience()).with_legacy_secret("another-secret-another-secret-xx");
        assert!(wrong.verify(&token).is_none());
    }

    #[test]
    fn wrong_audience_expired_and_alg_none_are_refused() {
        let ring = Keyring::new(audience())
            .with_key(EdKey::from_seed("k1", &[1u8; 32]).unwrap())
            .signing_with("k1")
            .unwrap();
        let elsewhere = Keyring::new(Audience {
            audience: "admin-api".into(),
            ..audience()
        })
        .with_key(EdKey::from_seed("k1", &[1u8; 32]).unwrap())
        .signing_with("k1")
        .unwrap();
        let token = elsewhere.issue(1, "a@b.co", "customer").unwrap();
        assert!(ring.verify(&token).is_none(), "wrong audience");
        let expired = Keyring::new(Audience {
            ttl_secs: 0,
            ..audience()
        });
        let expired = expired
            .with_key(EdKey::from_seed("k1", &[1u8; 32]).unwrap())
            .signing_with("k1")
            .unwrap();
        let mut claims: Claims = serde_json::from_value(serde_json::json!({
            "sub": "1", "email": "a@b.co", "role": "customer", "iss": "shop", "aud": "shop-api",
            "iat": 0, "exp": 10
        }))
        .unwrap();
        let old = jsonwebtoken::encode(
            &Header {
                kid: Some("k1".into()),
                ..Header::new(Algorithm::EdDSA)
            },
            &claims,
            expired.keys["k1"].encoding.as_ref().unwrap(),
        )
        .unwrap();
        assert!(ring.verify(&old).is_none(), "expired");
        // alg "none": header and payload without a signature.
        claims.exp = chrono::Utc::now().timestamp() + 600;
        let none = format!(
            "{}.{}.",
            B64URL.encode(br#"{"alg":"none","typ":"JWT"}"#),
            B64URL.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert!(ring.verify(&none).is_none(), "alg none");
    }
}

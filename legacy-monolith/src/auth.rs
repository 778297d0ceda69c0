//! Passwords (argon2id, PHC strings) and JWTs (HS256 with issuer and audience): the monolith's
//! login contract, which user-service must keep so a user from either side logs in on the other.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString, rand_core::OsRng};
use argon2::{Argon2, PasswordVerifier as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;

/// Hashes a password with argon2id (default parameters: 19 MiB, 2 passes), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Hashes with a given salt (B64, no padding); used by the seeder to stay deterministic.
pub fn hash_password_with_salt(
    password: &str,
    salt_b64: &str,
) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::from_b64(salt_b64)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks a password against a PHC string; false on mismatch or a malformed hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The claims the monolith puts in its tokens.
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

/// Signs and checks tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

impl Tokens {
    /// Keys and rules from the config.
    pub fn new(config: &JwtConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(config.secret.as_bytes()),
            decoding: DecodingKey::from_secret(config.secret.as_bytes()),
            validation,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl_secs: config.ttl_secs as i64,
        }
    }

    /// Token lifetime in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// A signed token for the user.
    pub fn issue(&self, user_id: u64, email: &str, role: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            email: email.to_string(),
            role: role.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// The claims of a valid token (signature, expiry, issuer and audience checked).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secret: &str) -> JwtConfig {
        JwtConfig {
            secret: secret.to_string(),
            ..JwtConfig::default()
        }
    }

    #[test]
    fn password_round_trip() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("correct horse", "not-a-hash"));
    }

    #[test]
    fn tokens_verify_and_reject_forgeries() {
        let tokens = Tokens::new(&config("0123456789abcdef0123456789abcdef"));
        let token = tokens.issue(7, "a@b.co", "customer");
        let claims = tokens.verify(&token).unwrap();
        assert_eq!(claims.sub, "7");
        assert_eq!(claims.role, "customer");
        let other = Tokens::new(&config("another-secret-another-secret-xx"));
        assert!(other.verify(&token).is_none(), "signed with another key");
        let mut tampered = token.clone();
        tampered.pop();
        assert!(tokens.verify(&tampered).is_none());
        let wrong_aud = Tokens::new(&JwtConfig {
            audience: "other".into(),
            ..config("0123456789abcdef0123456789abcdef")
        });
        assert!(wrong_aud.verify(&token).is_none());
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let cfg = config("0123456789abcdef0123456789abcdef");
        let tokens = Tokens::new(&cfg);
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: "1".into(),
            email: "a@b.co".into(),
            role: "customer".into(),
            iss: cfg.issuer.clone(),
            aud: cfg.audience.clone(),
            iat: now - 7200,
            exp: now - 3600,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(cfg.secret.as_bytes()),
        )
        .unwrap();
        assert!(tokens.verify(&token).is_none());
    }
}

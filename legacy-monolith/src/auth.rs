//! The monolith's login contract, its own code: passwords stored as argon2id PHC strings and
//! HS256 tokens signed with the shop's shared secret (`kid` "legacy"), with issuer, audience and
//! expiry. user-service reads the same formats with its own code, so logins cross over.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString, rand_core::OsRng};
use argon2::{Argon2, PasswordVerifier as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;

/// `kid` the monolith has always put in its token headers.
const KID: &str = "legacy";

/// What a monolith token says.
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

/// Signs and checks the monolith's tokens.
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
            ttl_secs: i64::try_from(config.ttl_secs).unwrap_or(i64::MAX / 2),
        }
    }

    /// Token lifetime in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// A signed token for the user, valid from now for the configured lifetime.
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
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(KID.to_string());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("HS256 signing cannot fail")
    }

    /// The claims of a valid token: HS256 with the shared secret, not expired, right issuer and
    /// audience. Any other algorithm is refused (the monolith knows no other key).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// An argon2id PHC string of `password` with a fresh salt (default cost: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    hash_password_with_salt_string(password, &SaltString::generate(&mut OsRng))
}

/// The same with a given salt (B64, no padding): the seeder's hashes stay the same run to run.
pub fn hash_password_with_salt(
    password: &str,
    salt_b64: &str,
) -> Result<String, argon2::password_hash::Error> {
    hash_password_with_salt_string(password, &SaltString::from_b64(salt_b64)?)
}

fn hash_password_with_salt_string(
    password: &str,
    salt: &SaltString,
) -> Result<String, argon2::password_hash::Error> {
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), salt)?
        .to_string())
}

/// Whether `password` matches the stored PHC string; false for a malformed one too.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(secret: &str) -> Tokens {
        Tokens::new(&JwtConfig {
            secret: secret.into(),
            issuer: "shop".into(),
            audience: "shop-api".into(),
            ttl_secs: 3600,
        })
    }

    #[test]
    fn tokens_round_trip_and_other_secrets_fail() {
        let ours = tokens("s3cret-s3cret-s3cret");
        let token = ours.issue(42, "a@b.co", "customer");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            (header.alg, header.kid.as_deref()),
            (Algorithm::HS256, Some("legacy"))
        );
        let claims = ours.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.exp - claims.iat), ("42", 3600));
        assert!(tokens("another-secret-entirely").verify(&token).is_none());
        assert!(ours.verify("not.a.token").is_none());
    }

    #[test]
    fn passwords_round_trip() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("correct horse", "not-a-hash"));
        let salted = hash_password_with_salt("pw-12345678", "c2FsdHNhbHRzYWx0").unwrap();
        assert_eq!(
            salted,
            hash_password_with_salt("pw-12345678", "c2FsdHNhbHRzYWx0").unwrap()
        );
    }
}

//! Passwords (argon2id, PHC strings) and JWTs (HS256 with the shared secret, issuer and audience):
//! the monolith's login contract, from service-kit, which user-service keeps too.

pub use service_kit::jwt::Claims;
use service_kit::jwt::{Audience, Keyring, LEGACY_KID};
pub use service_kit::password::{hash_password, hash_password_with_salt, verify_password};

use crate::config::JwtConfig;

/// Signs and checks the monolith's tokens.
#[derive(Clone)]
pub struct Tokens(Keyring);

impl Tokens {
    /// Keys and rules from the config.
    pub fn new(config: &JwtConfig) -> Self {
        let ring = Keyring::new(Audience {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl_secs: config.ttl_secs,
        })
        .with_legacy_secret(&config.secret)
        .signing_with(LEGACY_KID)
        .expect("the legacy secret is set");
        Self(ring)
    }

    /// Token lifetime in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.0.ttl_secs()
    }

    /// A signed token for the user.
    pub fn issue(&self, user_id: u64, email: &str, role: &str) -> String {
        self.0
            .issue(user_id, email, role)
            .expect("HS256 signing cannot fail")
    }

    /// The claims of a valid token (signature, expiry, issuer and audience checked).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        self.0.verify(token)
    }
}

//! Passwords as argon2id PHC strings (default parameters): the monolith's format, kept by
//! user-service so that a user created on either side logs in on the other.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString, rand_core::OsRng};
use argon2::{Argon2, PasswordVerifier as _};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("correct horse", "not-a-hash"));
    }

    #[test]
    fn a_given_salt_gives_the_same_hash() {
        let a = hash_password_with_salt("pw-12345678", "c2FsdHNhbHRzYWx0").unwrap();
        assert_eq!(
            a,
            hash_password_with_salt("pw-12345678", "c2FsdHNhbHRzYWx0").unwrap()
        );
        assert!(verify_password("pw-12345678", &a));
    }
}

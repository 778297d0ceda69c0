//! The key a user is bucketed by, in order: the JWT `sub` (verified when a secret or a JWKS is
//! configured: HS256 with the secret, EdDSA with the JWKS key named by `kid`; a token that does
//! not verify counts as anonymous), a session cookie, a configured header, and last the
//! anonymous-id cookie the proxy sets itself.

use std::borrow::Cow;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pingora::http::RequestHeader;
use rand::Rng as _;

use crate::config::UserKeyConfig;
use crate::jwks::JwksKeys;

/// Where the key came from. Keys read from the request borrow it (no copy on the request path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserKey<'a> {
    Jwt(Cow<'a, str>),
    Session(Cow<'a, str>),
    Header(Cow<'a, str>),
    /// `fresh` when the proxy just made it up and must set the cookie.
    Anonymous {
        id: Cow<'a, str>,
        fresh: bool,
    },
}

impl UserKey<'_> {
    /// The key itself.
    pub fn key(&self) -> &str {
        match self {
            UserKey::Jwt(k) | UserKey::Session(k) | UserKey::Header(k) => k,
            UserKey::Anonymous { id, .. } => id,
        }
    }
}

/// The configured extraction rules.
#[derive(Clone)]
pub struct UserKeys {
    config: UserKeyConfig,
    /// `config.header`, parsed once.
    header: Option<http::HeaderName>,
    /// HS256 with the shared secret.
    verify: Option<(DecodingKey, Validation)>,
    /// EdDSA with the JWKS keys (`Some` when a JWKS URL is configured).
    eddsa: Option<Validation>,
}

impl std::fmt::Debug for UserKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserKeys").field("config", &"…").finish()
    }
}

#[derive(serde::Deserialize)]
struct Sub {
    sub: serde_json::Value,
}

/// Value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Checks for `alg` tokens: `exp` and `sub` required, issuer and audience when configured.
fn validation(alg: Algorithm, config: &UserKeyConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.set_required_spec_claims(&["exp", "sub"]);
    match &config.jwt_issuer {
        Some(iss) => v.set_issuer(&[iss]),
        None => v.iss = None,
    }
    match &config.jwt_audience {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    v
}

fn plausible(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic())
}

impl UserKeys {
    /// Rules from config; an empty secret is refused.
    pub fn new(config: &UserKeyConfig) -> Result<Self, String> {
        let verify = match &config.jwt_secret {
            Some(secret) if secret.len() < 16 => {
                return Err("user_key.jwt_secret must be at least 16 bytes".into());
            }
            Some(secret) => Some((
                DecodingKey::from_secret(secret.as_bytes()),
                validation(Algorithm::HS256, config),
            )),
            None => None,
        };
        let eddsa = match &config.jwks_url {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(format!(
                    "user_key.jwks_url must be an http(s) URL, got {url:?}"
                ));
            }
            Some(_) => Some(validation(Algorithm::EdDSA, config)),
            None => None,
        };
        if !plausible(&config.anonymous_cookie) || config.anonymous_cookie.contains('=') {
            return Err("user_key.anonymous_cookie must be a cookie name".into());
        }
        let header = config
            .header
            .as_deref()
            .map(|h| {
                http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("user_key.header {h:?} is not a header name"))
            })
            .transpose()?;
        Ok(Self {
            config: config.clone(),
            header,
            verify,
            eddsa,
        })
    }

    fn jwt_sub(&self, req: &RequestHeader, jwks: &JwksKeys) -> Option<String> {
        let token = req
            .headers
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim();
        let data = match (&self.verify, &self.eddsa) {
            (None, None) => jsonwebtoken::dangerous::insecure_decode::<Sub>(token).ok()?,
            (hs256, eddsa) => {
                let header = jsonwebtoken::decode_header(token).ok()?;
                match (header.alg, hs256, eddsa) {
                    (Algorithm::HS256, Some((key, validation)), _) => {
                        jsonwebtoken::decode::<Sub>(token, key, validation).ok()?
                    }
                    (Algorithm::EdDSA, _, Some(validation)) => {
                        let key = jwks.get(header.kid.as_deref()?)?;
                        jsonwebtoken::decode::<Sub>(token, &key, validation).ok()?
                    }
                    _ => return None,
                }
            }
        };
        match data.claims.sub {
            serde_json::Value::String(s) if plausible(&s) => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The user's key for this request.
    pub fn extract<'a>(&self, req: &'a RequestHeader, jwks: &JwksKeys) -> UserKey<'a> {
        if let Some(sub) = self.jwt_sub(req, jwks) {
            return UserKey::Jwt(sub.into());
        }
        if let Some(v) = self
            .config
            .session_cookie
            .as_deref()
            .and_then(|name| cookie(req, name))
            .filter(|v| plausible(v))
        {
            return UserKey::Session(v.into());
        }
        if let Some(v) = self
            .header
            .as_ref()
            .and_then(|h| req.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .filter(|v| plausible(v))
        {
            return UserKey::Header(v.into());
        }
        if let Some(v) = cookie(req, &self.config.anonymous_cookie).filter(|v| plausible(v)) {
            return UserKey::Anonymous {
                id: v.into(),
                fresh: false,
            };
        }
        let id: u128 = rand::rng().random();
        UserKey::Anonymous {
            id: format!("anon-{id:032x}").into(),
            fresh: true,
        }
    }

    /// The anonymous cookie's name.
    pub fn anonymous_cookie(&self) -> &str {
        &self.config.anonymous_cookie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn token(secret: &str, sub: &str, exp_offset: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": sub, "exp": now + exp_offset}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn keys(secret: Option<&str>) -> UserKeys {
        UserKeys::new(&UserKeyConfig {
            jwt_secret: secret.map(str::to_string),
            session_cookie: Some("sid".into()),
            header: Some("x-user-id".into()),
            ..UserKeyConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_header_that_is_no_header_name_is_refused() {
        let err = UserKeys::new(&UserKeyConfig {
            header: Some("x user".into()),
            ..UserKeyConfig::default()
        })
        .unwrap_err();
        assert!(err.contains("user_key.header"), "{err}");
    }

    #[test]
    fn order_is_jwt_session_header_anonymous() {
        let k = keys(Some("0123456789abcdef0123"));
        let good = format!("Bearer {}", token("0123456789abcdef0123", "42", 600));
        let all = req(&[
            ("authorization", &good),
            ("cookie", "a=b; sid=s-1; strangler_uid=anon-x"),
            ("x-user-id", "h-1"),
        ]);
        assert_eq!(
            k.extract(&all, &JwksKeys::default()),
            UserKey::Jwt("42".into())
        );
        let no_jwt = req(&[("cookie", "sid=s-1"), ("x-user-id", "h-1")]);
        assert_eq!(
            k.extract(&no_jwt, &JwksKeys::default()),
            UserKey::Session("s-1".into())
        );
        assert_eq!(
            k.extract(&req(&[("x-user-id", "h-1")]), &JwksKeys::default()),
            UserKey::Header("h-1".into())
        );
        assert_eq!(
            k.extract(
                &req(&[("cookie", "strangler_uid=anon-x")]),
                &JwksKeys::default()
            ),
            UserKey::Anonymous {
                id: "anon-x".into(),
                fresh: false
            }
        );
        let empty = req(&[]);
        let UserKey::Anonymous { fresh: true, id } = k.extract(&empty, &JwksKeys::default()) else {
            panic!("expected a fresh anonymous id");
        };
        assert!(id.starts_with("anon-"));
    }

    #[test]
    fn invalid_tokens_are_never_trusted() {
        let k = keys(Some("0123456789abcdef0123"));
        for bad in [
            format!("Bearer {}", token("another-secret-entirely", "42", 600)),
            format!("Bearer {}", token("0123456789abcdef0123", "42", -600)),
            "Bearer not-a-token".to_string(),
        ] {
            let r = req(&[("authorization", bad.as_str()), ("x-user-id", "h-1")]);
            assert_eq!(
                k.extract(&r, &JwksKeys::default()),
                UserKey::Header("h-1".into()),
                "{bad}"
            );
        }
        // Without a secret the sub is read for stickiness only.
        let open = keys(None);
        let r = req(&[(
            "authorization",
            &format!("Bearer {}", token("whatever-secret-x", "7", 600)),
        )]);
        assert_eq!(
            open.extract(&r, &JwksKeys::default()),
            UserKey::Jwt("7".into())
        );
    }

    #[test]
    fn eddsa_tokens_verify_with_the_jwks_key_of_their_kid() {
        use service_kit::jwt::{Audience, EdKey, Keyring};
        let audience = Audience {
            issuer: "shop-monolith".into(),
            audience: "shop".into(),
            ttl_secs: 600,
        };
        let signer = |kid: &str, seed: u8| {
            Keyring::new(audience.clone())
                .with_key(EdKey::from_seed(kid, &[seed; 32]).unwrap())
                .signing_with(kid)
                .unwrap()
        };
        let (k1, k2) = (signer("k1", 1), signer("k2", 2));
        let k = UserKeys::new(&UserKeyConfig {
            jwt_secret: Some("0123456789abcdef0123".into()),
            jwt_issuer: Some("shop-monolith".into()),
            jwt_audience: Some("shop".into()),
            jwks_url: Some("http://127.0.0.1:1/.well-known/jwks.json".into()),
            ..UserKeyConfig::default()
        })
        .unwrap();
        let jwks = JwksKeys::default();
        assert_eq!(jwks.install(&k1.jwks()).unwrap(), 1);
        let with = |token: String| req(&[("authorization", &format!("Bearer {token}"))]);
        let t1 = k1.issue(42, "a@example.com", "customer").unwrap();
        assert_eq!(
            k.extract(&with(t1.clone()), &jwks),
            UserKey::Jwt("42".into())
        );
        // A kid the JWKS does not (yet) list: anonymous.
        let t2 = k2.issue(43, "b@example.com", "customer").unwrap();
        assert!(matches!(
            k.extract(&with(t2.clone()), &jwks),
            UserKey::Anonymous { .. }
        ));
        // A token claiming k1 but signed by k2's key: anonymous.
        let forged = {
            let mut parts: Vec<String> = t2.split('.').map(str::to_string).collect();
            parts[0] = t1.split('.').next().unwrap().to_string();
            parts.join(".")
        };
        assert!(matches!(
            k.extract(&with(forged), &jwks),
            UserKey::Anonymous { .. }
        ));
        // The shared HS256 secret still works next to the JWKS.
        let legacy = Keyring::new(audience.clone())
            .with_legacy_secret("0123456789abcdef0123")
            .signing_with("legacy")
            .unwrap()
            .issue(7, "c@example.com", "customer")
            .unwrap();
        assert_eq!(k.extract(&with(legacy), &jwks), UserKey::Jwt("7".into()));
        // A JWKS that lists k2 too.
        let both = serde_json::json!({"keys": [k1.jwks()["keys"][0], k2.jwks()["keys"][0]]});
        assert_eq!(jwks.install(&both).unwrap(), 2);
        assert_eq!(k.extract(&with(t2), &jwks), UserKey::Jwt("43".into()));
        assert!(jwks.install(&serde_json::json!({"nope": 1})).is_err());
    }
}

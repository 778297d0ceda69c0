//! user-service over real HTTP and real MariaDB servers, beside the real monolith: the same
//! scripted requests give equivalent answers on both; users and tokens work across the two sides;
//! Ed25519 keys rotate through the JWKS; the outbox gets its event; bad tokens are refused.

use std::time::Duration;

use mysql_async::prelude::*;
use serde_json::{Value, json};
use service_kit::jwt::{Audience, Keyring};
use testkit::contract::{Body, Side, differences};
use user_service::config::SignWith;

/// A running server: where it answers, and its database.
struct Running {
    side: Side,
    db_url: String,
}

async fn monolith() -> Running {
    let db = testkit::monolith_server()
        .create_database("shop")
        .await
        .unwrap();
    let config = legacy_monolith::Config {
        database_url: db.url.clone(),
        ..legacy_monolith::Config::default()
    };
    let state = legacy_monolith::prepare(config).await.unwrap();
    Running {
        side: Side::serve(legacy_monolith::app(state))
            .await
            .conforming_to(testkit::openapi::Spec::named("legacy-monolith").unwrap()),
        db_url: db.url,
    }
}

async fn service_with(tweak: impl FnOnce(&mut user_service::Config)) -> Running {
    let db = testkit::services_server()
        .create_database("user_svc")
        .await
        .unwrap();
    let mut config = user_service::Config::default();
    config.server.database_url = db.url.clone();
    tweak(&mut config);
    let state = user_service::prepare(config).await.unwrap();
    Running {
        side: Side::serve(user_service::app(state))
            .await
            .conforming_to(testkit::openapi::Spec::named("user-service").unwrap()),
        db_url: db.url,
    }
}

async fn sql(url: &str, sql: &str) {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    c.query_drop(sql).await.unwrap();
    c.disconnect().await.unwrap();
}

async fn register(side: &Side, email: &str) -> Value {
    let (s, v) = side
        .call(
            "POST",
            "/api/users/register",
            None,
            Body::Json(json!({"email": email, "password": "password123", "name": "Test User"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v
}

const VOLATILE: &[&str] = &["id", "created_at", "updated_at", "token"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_requests_get_equivalent_answers_from_the_monolith_and_the_service() {
    let (m, s) = tokio::join!(monolith(), service_with(|_| {}));
    let mut diffs = Vec::new();
    // Scripted requests, happy and error paths, each sent to both sides in turn.
    let script: Vec<(&str, &str, &str, Option<&str>, Body)> = vec![
        (
            "register",
            "POST",
            "/api/users/register",
            None,
            Body::Json(
                json!({"email": "Ann@Example.com", "password": "password123", "name": " Ann "}),
            ),
        ),
        (
            "register duplicate",
            "POST",
            "/api/users/register",
            None,
            Body::Json(
                json!({"email": "ann@example.com", "password": "password123", "name": "Ann"}),
            ),
        ),
        (
            "register invalid",
            "POST",
            "/api/users/register",
            None,
            Body::Json(json!({"email": "not-an-email", "password": "short", "name": ""})),
        ),
        (
            "register unknown field",
            "POST",
            "/api/users/register",
            None,
            Body::Json(
                json!({"email": "b@example.com", "password": "password123", "name": "B", "role": "admin"}),
            ),
        ),
        (
            "register malformed",
            "POST",
            "/api/users/register",
            None,
            Body::Raw("application/json", b"{\"email\": ".to_vec()),
        ),
        (
            "register wrong media type",
            "POST",
            "/api/users/register",
            None,
            Body::Raw("text/plain", b"hello".to_vec()),
        ),
        (
            "login wrong password",
            "POST",
            "/api/users/login",
            None,
            Body::Json(json!({"email": "ann@example.com", "password": "password124"})),
        ),
        (
            "login unknown",
            "POST",
            "/api/users/login",
            None,
            Body::Json(json!({"email": "nobody@example.com", "password": "password123"})),
        ),
        (
            "login empty",
            "POST",
            "/api/users/login",
            None,
            Body::Json(json!({"email": "", "password": ""})),
        ),
        ("me without token", "GET", "/api/users/me", None, Body::None),
        (
            "me forged token",
            "GET",
            "/api/users/me",
            Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
            Body::None,
        ),
        (
            "bad path id",
            "GET",
            "/api/users/abc",
            Some("x"),
            Body::None,
        ),
        (
            "unknown route",
            "GET",
            "/api/users/1/friends",
            None,
            Body::None,
        ),
        (
            "method not allowed",
            "DELETE",
            "/api/users/me",
            None,
            Body::None,
        ),
    ];
    for (name, method, path, token, body) in &script {
        let a = m.side.call(method, path, *token, body.clone()).await;
        let b = s.side.call(method, path, *token, body.clone()).await;
        diffs.extend(differences(name, &a, &b, VOLATILE));
    }
    // Signed-in paths: each side's own token.
    let (tm, ts) = (
        m.side.login("ann@example.com").await,
        s.side.login("ann@example.com").await,
    );
    let signed: Vec<(&str, &str, &str, Body)> = vec![
        ("me", "GET", "/api/users/me", Body::None),
        (
            "update",
            "PUT",
            "/api/users/me",
            Body::Json(
                json!({"name": "Ann L.", "phone": "+44 20 7946 0958", "address": "1 Main St"}),
            ),
        ),
        (
            "update clears phone",
            "PUT",
            "/api/users/me",
            Body::Json(json!({"phone": null})),
        ),
        (
            "update invalid",
            "PUT",
            "/api/users/me",
            Body::Json(json!({"phone": "call me", "name": ""})),
        ),
        (
            "update empty",
            "PUT",
            "/api/users/me",
            Body::Json(json!({})),
        ),
        ("lookup as customer", "GET", "/api/users/1", Body::None),
    ];
    for (name, method, path, body) in &signed {
        let a = m.side.call(method, path, Some(&tm), body.clone()).await;
        let b = s.side.call(method, path, Some(&ts), body.clone()).await;
        diffs.extend(differences(name, &a, &b, VOLATILE));
    }
    // Administrators look users up.
    for r in [&m, &s] {
        register(&r.side, "boss@example.com").await;
        sql(
            &r.db_url,
            "UPDATE users SET role = 'admin' WHERE email = 'boss@example.com'",
        )
        .await;
    }
    let (am, as_) = (
        m.side.login("boss@example.com").await,
        s.side.login("boss@example.com").await,
    );
    let ann_m = m
        .side
        .call("GET", "/api/users/me", Some(&tm), Body::None)
        .await
        .1["id"]
        .clone();
    let ann_s = s
        .side
        .call("GET", "/api/users/me", Some(&ts), Body::None)
        .await
        .1["id"]
        .clone();
    let a = m
        .side
        .call("GET", &format!("/api/users/{ann_m}"), Some(&am), Body::None)
        .await;
    let b = s
        .side
        .call(
            "GET",
            &format!("/api/users/{ann_s}"),
            Some(&as_),
            Body::None,
        )
        .await;
    assert_eq!(a.0, 200, "{}", a.1);
    diffs.extend(differences("lookup as admin", &a, &b, VOLATILE));
    let a = m
        .side
        .call("GET", "/api/users/999999", Some(&am), Body::None)
        .await;
    let b = s
        .side
        .call("GET", "/api/users/999999", Some(&as_), Body::None)
        .await;
    diffs.extend(differences("lookup unknown", &a, &b, VOLATILE));
    assert!(diffs.is_empty(), "answers differ:\n{}", diffs.join("\n"));
    // Both sides' answers, happy and error paths, are what their OpenAPI files say.
    m.side.assert_conformance(20);
    s.side.assert_conformance(20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_tokens_work_on_both_sides() {
    let (m, s) = tokio::join!(monolith(), service_with(|_| {}));
    // A user registered on the monolith, copied as cdc-sync copies it (every column).
    register(&m.side, "carol@example.com").await;
    let mut c = mysql_async::Conn::from_url(m.db_url.as_str())
        .await
        .unwrap();
    let row: (u64, String, String, String) = c
        .query_first(
            "SELECT id, email, password_hash, name FROM users WHERE email = 'carol@example.com'",
        )
        .await
        .unwrap()
        .unwrap();
    c.disconnect().await.unwrap();
    let mut c = mysql_async::Conn::from_url(s.db_url.as_str())
        .await
        .unwrap();
    c.exec_drop(
        "INSERT INTO users (id, email, password_hash, name) VALUES (?, ?, ?, ?)",
        row.clone(),
    )
    .await
    .unwrap();
    c.disconnect().await.unwrap();
    // …logs in on the service with the password set on the monolith…
    let token = s.side.login("carol@example.com").await;
    // …and the service's token (legacy signing: HS256, kid "legacy") opens the monolith.
    let (st, me) = m
        .side
        .call("GET", "/api/users/me", Some(&token), Body::None)
        .await;
    assert_eq!(
        (st, me["email"].as_str()),
        (200, Some("carol@example.com")),
        "{me}"
    );
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("legacy"));
    // A monolith token opens the service.
    let mtoken = m.side.login("carol@example.com").await;
    let (st, _) = s
        .side
        .call("GET", "/api/users/me", Some(&mtoken), Body::None)
        .await;
    assert_eq!(st, 200);
    // The registration left a user.registered event in the outbox, in the same transaction.
    let dave = register(&s.side, "dave@example.com").await;
    let mut c = mysql_async::Conn::from_url(s.db_url.as_str())
        .await
        .unwrap();
    let ev: Option<(String, String, String)> = c
        .query_first("SELECT aggregateid, type, payload FROM outbox")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    let (agg, kind, payload) = ev.expect("an outbox row");
    assert_eq!(
        (agg, kind.as_str()),
        (dave["id"].to_string(), "user.registered")
    );
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["email"], "dave@example.com");
    // Health, readiness, metrics.
    assert_eq!(
        s.side.call("GET", "/healthz", None, Body::None).await.0,
        200
    );
    let (st, ready) = s.side.call("GET", "/readyz", None, Body::None).await;
    assert_eq!((st, ready["status"].as_str()), (200, Some("ready")));
    let (st, metrics) = s.side.call("GET", "/metrics", None, Body::None).await;
    assert_eq!(st, 200);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("user_service_http_requests_total{method=\"POST\",route=\"/api/users/login\",status=\"200\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_keys_rotate_through_the_jwks_and_bad_tokens_are_refused() {
    let s = service_with(|c| {
        c.jwt.sign_with = SignWith::Ed25519;
        c.jwt.prepublish_secs = 1;
        c.jwt.reload_secs = 1;
        // Even ids: the monolith keeps the odd ones.
        c.server.id_step = 2;
        c.server.id_offset = 2;
    })
    .await;
    let user = register(&s.side, "erin@example.com").await;
    assert_eq!(user["id"].as_u64().unwrap() % 2, 0, "{user}");
    let token = s.side.login("erin@example.com").await;
    let first = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(first.alg, jsonwebtoken::Algorithm::EdDSA);
    let kid1 = first.kid.clone().unwrap();
    // What another service does: check the token with nothing but the JWKS.
    let (st, jwks) = s
        .side
        .call("GET", "/.well-known/jwks.json", None, Body::None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(jwks["keys"][0]["kid"], kid1.as_str());
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    let audience = Audience {
        issuer: "shop-monolith".into(),
        audience: "shop".into(),
        ttl_secs: 3600,
    };
    let checker = Keyring::new(audience.clone()).with_jwks(&jwks).unwrap();
    assert_eq!(checker.verify(&token).unwrap().email, "erin@example.com");
    // The monolith's HS256 secret never appears in the JWKS.
    assert!(!jwks.to_string().contains("strangler-dev-secret"));

    // Rotation: the new key is published first, signs a second later; the old one keeps working.
    let mut c = mysql_async::Conn::from_url(s.db_url.as_str())
        .await
        .unwrap();
    let store = user_service::keys::KeyStore::open(
        mysql_async::Pool::new(s.db_url.as_str()),
        user_service::config::JwtConfig {
            sign_with: SignWith::Ed25519,
            prepublish_secs: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let kid2 = store.rotate().await.unwrap();
    let published: Vec<String> = c
        .query("SELECT kid FROM jwt_keys ORDER BY activates_at")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    assert_eq!(published, vec![kid1.clone(), kid2.clone()]);
    let mut refreshed = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (st, v) = s
            .side
            .call("POST", "/api/users/token/refresh", Some(&token), Body::None)
            .await;
        assert_eq!(st, 200, "{v}");
        refreshed = v["token"].as_str().unwrap().to_string();
        if jsonwebtoken::decode_header(&refreshed)
            .unwrap()
            .kid
            .as_deref()
            == Some(kid2.as_str())
        {
            break;
        }
    }
    assert_eq!(
        jsonwebtoken::decode_header(&refreshed)
            .unwrap()
            .kid
            .as_deref(),
        Some(kid2.as_str()),
        "the new key never started signing"
    );
    let (_, jwks) = s
        .side
        .call("GET", "/.well-known/jwks.json", None, Body::None)
        .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&kid1.as_str()) && kids.contains(&kid2.as_str()),
        "{jwks}"
    );
    // Tokens of the retired key still open the service until they expire.
    assert_eq!(
        s.side
            .call("GET", "/api/users/me", Some(&token), Body::None)
            .await
            .0,
        200
    );
    assert_eq!(
        s.side
            .call("GET", "/api/users/me", Some(&refreshed), Body::None)
            .await
            .0,
        200
    );

    // Refused: another audience, expired, forged signature, alg none, a deleted user's refresh.
    let seed = [9u8; 32];
    let foreign = Keyring::new(Audience {
        audience: "admin".into(),
        ..audience.clone()
    })
    .with_key(service_kit::jwt::EdKey::from_seed(&kid2, &seed).unwrap())
    .signing_with(&kid2)
    .unwrap();
    let forged = foreign
        .issue(user["id"].as_u64().unwrap(), "erin@example.com", "admin")
        .unwrap();
    let (st, v) = s
        .side
        .call("GET", "/api/users/me", Some(&forged), Body::None)
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "{v}"
    );
    let mut parts: Vec<String> = refreshed.split('.').map(str::to_string).collect();
    parts[2] = parts[2].chars().rev().collect();
    let (st, _) = s
        .side
        .call("GET", "/api/users/me", Some(&parts.join(".")), Body::None)
        .await;
    assert_eq!(st, 401);
    let none = format!("eyJhbGciOiJub25lIn0.{}.", parts[1]);
    assert_eq!(
        s.side
            .call("GET", "/api/users/me", Some(&none), Body::None)
            .await
            .0,
        401
    );
    sql(
        &s.db_url,
        "DELETE FROM users WHERE email = 'erin@example.com'",
    )
    .await;
    let (st, v) = s
        .side
        .call(
            "POST",
            "/api/users/token/refresh",
            Some(&refreshed),
            Body::None,
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "{v}"
    );
}

//! Users endpoints against a real MariaDB: register, login, profile, admin lookup, bad input.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Shop, assert_error};
use serde_json::json;

#[tokio::test]
async fn register_login_and_profile() {
    let shop = Shop::new().await;
    let user = shop.register("Alice@Example.com").await;
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["role"], "customer");
    assert!(user.get("password_hash").is_none());
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));

    // The same address in another case is the same account.
    let dup = shop
        .call(
            "POST",
            "/api/users/register",
            None,
            Some(json!({"email": "ALICE@example.com", "password": "password123", "name": "A"})),
        )
        .await;
    assert_error(dup, StatusCode::CONFLICT, "email_taken");

    let (s, login) = shop
        .call(
            "POST",
            "/api/users/login",
            None,
            Some(json!({"email": "alice@example.com", "password": "password123"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 3600);
    assert_eq!(login["user"]["id"], user["id"]);
    let token = login["token"].as_str().unwrap();

    let (s, me) = shop.call("GET", "/api/users/me", Some(token), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me, user);

    let (s, updated) = shop
        .call(
            "PUT",
            "/api/users/me",
            Some(token),
            Some(json!({"name": "Alice L.", "phone": "+44 20 7946 0958", "address": "1 Main St"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Alice L.");
    assert_eq!(updated["phone"], "+44 20 7946 0958");
    // null clears a field; absent leaves it.
    let (_, cleared) = shop
        .call(
            "PUT",
            "/api/users/me",
            Some(token),
            Some(json!({"phone": null})),
        )
        .await;
    assert_eq!(cleared["phone"], serde_json::Value::Null);
    assert_eq!(cleared["address"], "1 Main St");

    // The welcome notification was written with the account.
    let welcome = shop
        .scalar("SELECT COUNT(*) FROM notifications WHERE template = 'welcome'")
        .await;
    assert_eq!(welcome, 1);
}

#[tokio::test]
async fn wrong_credentials_and_tokens_are_refused() {
    let shop = Shop::new().await;
    shop.register("bob@example.com").await;
    let wrong = shop
        .call(
            "POST",
            "/api/users/login",
            None,
            Some(json!({"email": "bob@example.com", "password": "not-his-password"})),
        )
        .await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "unauthorized");
    let unknown = shop
        .call(
            "POST",
            "/api/users/login",
            None,
            Some(json!({"email": "nobody@example.com", "password": "password123"})),
        )
        .await;
    assert_error(unknown, StatusCode::UNAUTHORIZED, "unauthorized");

    assert_error(
        shop.call("GET", "/api/users/me", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        shop.call("GET", "/api/users/me", Some("not.a.jwt"), None)
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    // A token signed with another secret.
    let other = legacy_monolith::auth::Tokens::new(&legacy_monolith::config::JwtConfig {
        secret: "some-other-secret-some-other-secret".into(),
        ..Default::default()
    });
    let forged = other.issue(1, "bob@example.com", "admin");
    assert_error(
        shop.call("GET", "/api/users/me", Some(&forged), None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    let req = Request::get("/api/users/me")
        .header("authorization", "Basic Ym9iOnB3")
        .body(Body::empty())
        .unwrap();
    let resp = shop.raw(req).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn register_rejects_bad_input_without_writing() {
    let shop = Shop::new().await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "password123", "name": "X"}),
            "email",
        ),
        (
            json!({"email": "a@b.co", "password": "short", "name": "X"}),
            "password",
        ),
        (
            json!({"email": "a@b.co", "password": "password123", "name": "  "}),
            "name",
        ),
        (
            json!({"email": "a@b.co", "password": "password123", "name": "x".repeat(101)}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = shop
            .call("POST", "/api/users/register", None, Some(body))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["code"], "validation_failed");
        assert_eq!(v["error"]["fields"][0]["field"], field, "{v}");
    }
    // Missing field, wrong type, unknown field: the body's shape is wrong.
    for body in [
        json!({"email": "a@b.co", "password": "password123"}),
        json!({"email": 5, "password": "password123", "name": "X"}),
        json!({"email": "a@b.co", "password": "password123", "name": "X", "role": "admin"}),
    ] {
        assert_error(
            shop.call("POST", "/api/users/register", None, Some(body))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    let malformed = Request::post("/api/users/register")
        .header("content-type", "application/json")
        .body(Body::from("{\"email\": "))
        .unwrap();
    assert_error(
        shop.raw(malformed).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    let no_type = Request::post("/api/users/register")
        .body(Body::from("{}"))
        .unwrap();
    assert_error(
        shop.raw(no_type).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let huge = Request::post("/api/users/register")
        .header("content-type", "application/json")
        .body(Body::from(format!(
            "{{\"email\":\"a@b.co\",\"password\":\"password123\",\"name\":\"{}\"}}",
            "x".repeat(100_000)
        )))
        .unwrap();
    assert_error(
        shop.raw(huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM users").await, 0);
}

#[tokio::test]
async fn profile_update_validates() {
    let shop = Shop::new().await;
    let token = shop.customer("carol@example.com").await;
    for (body, field) in [
        (json!({}), "body"),
        (json!({"phone": "call me"}), "phone"),
        (json!({"name": ""}), "name"),
        (json!({"address": "a".repeat(501)}), "address"),
    ] {
        let (s, v) = shop
            .call("PUT", "/api/users/me", Some(&token), Some(body))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["fields"][0]["field"], field);
    }
}

#[tokio::test]
async fn user_lookup_is_for_administrators() {
    let shop = Shop::new().await;
    let admin = shop.admin().await;
    let dave = shop.register("dave@example.com").await;
    let dave_token = shop.login("dave@example.com").await;
    let path = format!("/api/users/{}", dave["id"]);

    let (s, v) = shop.call("GET", &path, Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["email"], "dave@example.com");
    assert_error(
        shop.call("GET", &path, Some(&dave_token), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        shop.call("GET", &path, None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        shop.call("GET", "/api/users/999999", Some(&admin), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        shop.call("GET", "/api/users/abc", Some(&admin), None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
}

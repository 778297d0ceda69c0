//! Users, the monolith's own way: register (with the welcome notification in the same
//! transaction), log in (argon2id + JWT), read and update one's own profile, and look a user up
//! by id (administrators only). Its own SQL over `shop.users`, its own field rules and JSON
//! shaping (timestamps formatted by the database), sharing no domain code with user-service.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mysql_async::prelude::Queryable;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiId, ApiJson, AuthUser};
use super::iso_time_sql;
use crate::app::AppState;
use crate::auth::{hash_password, verify_password};
use crate::db::{Db, Traced};
use crate::error::{ApiError, Validator};

/// A user as the API shows it: never the password hash; times formatted by the database.
fn user_select() -> String {
    format!(
        "SELECT id, email, name, phone, address, role, {}, {} FROM users",
        iso_time_sql("created_at"),
        iso_time_sql("updated_at")
    )
}

type UserRow = (
    u64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
);

fn user_json(row: UserRow) -> Value {
    let (id, email, name, phone, address, role, created_at, updated_at) = row;
    json!({
        "id": id,
        "email": email,
        "name": name,
        "phone": phone,
        "address": address,
        "role": role,
        "created_at": created_at,
        "updated_at": updated_at,
    })
}

async fn load_user(conn: &mut Traced<impl Queryable>, id: u64) -> Result<Option<Value>, ApiError> {
    let row: Option<UserRow> = conn
        .first(format!("{} WHERE id = ?", user_select()), (id,))
        .await?;
    Ok(row.map(user_json))
}

/// An e-mail address the shop accepts: `local@domain.tld`, printable ASCII, no spaces.
fn email_ok(email: &str) -> bool {
    if email.len() > 254 || !email.chars().all(|c| c.is_ascii_graphic()) {
        return false;
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    !local.is_empty()
        && local.len() <= 64
        && labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
}

/// A phone number: 6 to 15 digits in at most 20 characters, `+` only in front, and spaces,
/// dashes or parentheses between.
fn phone_ok(phone: &str) -> bool {
    let body = phone.strip_prefix('+').unwrap_or(phone);
    let mut digits = 0;
    for c in body.chars() {
        match c {
            '0'..='9' => digits += 1,
            ' ' | '(' | ')' | '-' => {}
            _ => return false,
        }
    }
    (6..=20).contains(&phone.len()) && (6..=15).contains(&digits)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterForm {
    email: String,
    password: String,
    name: String,
}

async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `POST /api/users/register`: 201 with the new user; 409 when the e-mail is taken. The user and
/// the welcome notification are written in one transaction.
pub async fn register(
    db: Db,
    ApiJson(form): ApiJson<RegisterForm>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let email = form.email.trim().to_lowercase();
    let name = form.name.trim().to_string();
    let password_len = form.password.chars().count();
    let name_len = name.chars().count();
    Validator::default()
        .check(email_ok(&email), "email", "must be a valid e-mail address")
        .check(
            (8..=128).contains(&password_len),
            "password",
            "must be 8 to 128 characters",
        )
        .check(
            (1..=100).contains(&name_len),
            "name",
            "must be 1 to 100 characters",
        )
        .finish()?;
    let password_hash = hash(form.password).await?;
    let mut tx = db.begin().await?;
    let inserted = tx
        .run(
            "INSERT INTO users (email, password_hash, name) VALUES (?, ?, ?)",
            (&email, &password_hash, &name),
        )
        .await;
    if let Err(mysql_async::Error::Server(e)) = &inserted
        && e.code == 1062
    {
        return Err(ApiError::Conflict {
            code: "email_taken",
            message: "an account with this e-mail already exists".into(),
        });
    }
    inserted?;
    let id = tx
        .last_insert_id()
        .ok_or_else(|| ApiError::Internal("no insert id".into()))?;
    tx.run(
        "INSERT INTO notifications (user_id, channel, template, payload) VALUES (?, 'email', 'welcome', ?)",
        (id, json!({"name": &name, "email": &email}).to_string()),
    )
    .await?;
    let user = load_user(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::Internal("the new user is gone".into()))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginForm {
    email: String,
    password: String,
}

/// Checked against when the e-mail is unknown, so that both failures cost the same.
static NOBODY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("no such user here").expect("argon2 hash"));

/// `POST /api/users/login`: 200 with a bearer token; 401 for an unknown e-mail or a wrong
/// password alike.
pub async fn login(
    State(state): State<AppState>,
    db: Db,
    ApiJson(form): ApiJson<LoginForm>,
) -> Result<Json<Value>, ApiError> {
    let email = form.email.trim().to_lowercase();
    Validator::default()
        .check(
            !email.is_empty() && email.len() <= 254,
            "email",
            "is required",
        )
        .check(
            !form.password.is_empty() && form.password.len() <= 512,
            "password",
            "is required",
        )
        .finish()?;
    let mut conn = db.conn().await?;
    let found: Option<(u64, String, String)> = conn
        .first(
            "SELECT id, password_hash, role FROM users WHERE email = ?",
            (&email,),
        )
        .await?;
    let stored = found
        .as_ref()
        .map_or_else(|| NOBODY_HASH.clone(), |(_, h, _)| h.clone());
    let password = form.password;
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &stored))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let denied = ApiError::Unauthorized("invalid e-mail or password");
    let Some((id, _, role)) = found.filter(|_| matches) else {
        return Err(denied);
    };
    let user = load_user(&mut conn, id).await?.ok_or(denied)?;
    Ok(Json(json!({
        "token": state.tokens.issue(id, &email, &role),
        "token_type": "Bearer",
        "expires_in": state.tokens.ttl_secs(),
        "user": user,
    })))
}

/// `GET /api/users/me`.
pub async fn get_me(db: Db, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let mut conn = db.conn().await?;
    load_user(&mut conn, user.id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("user"))
}

/// `PUT /api/users/me` form: any of the fields; `null` clears phone or address.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileForm {
    name: Option<String>,
    #[serde(default, deserialize_with = "given")]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    address: Option<Option<String>>,
}

/// A field that was sent, even as `null`, is `Some`.
fn given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PUT /api/users/me`: 200 with the updated profile, written in one statement.
pub async fn update_me(
    db: Db,
    user: AuthUser,
    ApiJson(form): ApiJson<ProfileForm>,
) -> Result<Json<Value>, ApiError> {
    let name = form.name.as_deref().map(str::trim);
    let phone = form.phone.as_ref().map(|p| p.as_deref().map(str::trim));
    let address = form.address.as_ref().map(|a| a.as_deref().map(str::trim));
    Validator::default()
        .check(
            name.is_some() || phone.is_some() || address.is_some(),
            "body",
            "give at least one of name, phone, address",
        )
        .check(
            name.is_none_or(|n| (1..=100).contains(&n.chars().count())),
            "name",
            "must be 1 to 100 characters",
        )
        .check(
            phone.flatten().is_none_or(phone_ok),
            "phone",
            "must be 6 to 15 digits, optionally with +, spaces, dashes or parentheses",
        )
        .check(
            address
                .flatten()
                .is_none_or(|a| (1..=500).contains(&a.chars().count())),
            "address",
            "must be 1 to 500 characters",
        )
        .finish()?;
    let mut sets = Vec::new();
    let mut params: Vec<mysql_async::Value> = Vec::new();
    if let Some(n) = name {
        sets.push("name = ?");
        params.push(n.into());
    }
    if let Some(p) = phone {
        sets.push("phone = ?");
        params.push(p.into());
    }
    if let Some(a) = address {
        sets.push("address = ?");
        params.push(a.into());
    }
    params.push(user.id.into());
    let mut conn = db.conn().await?;
    conn.run(
        format!("UPDATE users SET {} WHERE id = ?", sets.join(", ")),
        params,
    )
    .await?;
    load_user(&mut conn, user.id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("user"))
}

/// `GET /api/users/{id}`: administrators only (403 otherwise), 404 when absent.
pub async fn get_by_id(db: Db, user: AuthUser, ApiId(id): ApiId) -> Result<Json<Value>, ApiError> {
    user.require_admin()?;
    let mut conn = db.conn().await?;
    load_user(&mut conn, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("user"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shops_field_rules() {
        for ok in ["a@b.co", "first.last+tag@shop.example.com"] {
            assert!(email_ok(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a@@b.co", "a b@c.co", "a@.co", "a@b..co", "a@b.co.",
        ] {
            assert!(!email_ok(bad), "{bad}");
        }
        assert!(phone_ok("+44 20 7946 0958"));
        assert!(phone_ok("(555) 123-4567"));
        for bad in [
            "12345",
            "call me maybe",
            "12+345678",
            "+1 (555) 123-4567 ext 12",
        ] {
            assert!(!phone_ok(bad), "{bad}");
        }
    }
}

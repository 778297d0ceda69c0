//! Users: register, log in (argon2id + JWT), read and update one's own profile, and look a user
//! up by id (administrators only). A welcome notification is written with each registration.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mysql_async::Row;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};

use super::extract::{ApiId, ApiJson, AuthUser};
use super::timestamp;
use crate::app::AppState;
use crate::auth;
use crate::db;
use crate::error::{ApiError, Validator};

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct UserView {
    pub id: u64,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub role: String,
    pub created_at: String,
    pub updated_at: String,
}

const COLUMNS: &str = "id, email, name, phone, address, role, created_at, updated_at";

impl UserView {
    fn from_row(mut row: Row) -> Self {
        Self {
            id: row.take("id").expect("id"),
            email: row.take("email").expect("email"),
            name: row.take("name").expect("name"),
            phone: row.take("phone").expect("phone"),
            address: row.take("address").expect("address"),
            role: row.take("role").expect("role"),
            created_at: timestamp(row.take("created_at").expect("created_at")),
            updated_at: timestamp(row.take("updated_at").expect("updated_at")),
        }
    }
}

async fn find(conn: &mut impl Queryable, id: u64) -> Result<Option<UserView>, ApiError> {
    let row: Option<Row> = conn
        .exec_first(format!("SELECT {COLUMNS} FROM users WHERE id = ?"), (id,))
        .await?;
    Ok(row.map(UserView::from_row))
}

/// A plausible e-mail address: one `@`, a dotted domain, no spaces, at most 254 bytes.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && email.chars().all(|c| c.is_ascii_graphic())
}

fn valid_phone(phone: &str) -> bool {
    let digits = phone.chars().filter(|c| c.is_ascii_digit()).count();
    (6..=20).contains(&phone.len())
        && (6..=15).contains(&digits)
        && phone
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || " ()-".contains(c) || (i == 0 && c == '+'))
}

/// `POST /api/users/register` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub email: String,
    pub password: String,
    pub name: String,
}

/// `POST /api/users/register`: 201 with the new user; 409 when the e-mail is taken.
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let email = body.email.trim().to_lowercase();
    let name = body.name.trim().to_string();
    Validator::default()
        .check(
            valid_email(&email),
            "email",
            "must be a valid e-mail address",
        )
        .check(
            (8..=128).contains(&body.password.chars().count()),
            "password",
            "must be 8 to 128 characters",
        )
        .check(
            (1..=100).contains(&name.chars().count()),
            "name",
            "must be 1 to 100 characters",
        )
        .finish()?;
    let password = body.password;
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut tx = state.pool.start_transaction(Default::default()).await?;
    let inserted = tx
        .exec_drop(
            "INSERT INTO users (email, password_hash, name) VALUES (?, ?, ?)",
            (&email, &hash, &name),
        )
        .await;
    match inserted {
        Err(e) if db::is_duplicate(&e) => {
            return Err(ApiError::Conflict {
                code: "email_taken",
                message: "an account with this e-mail already exists".into(),
            });
        }
        other => other?,
    }
    let id = tx.last_insert_id().expect("auto increment id");
    tx.exec_drop(
        "INSERT INTO notifications (user_id, channel, template, payload) VALUES (?, 'email', 'welcome', ?)",
        (id, serde_json::json!({"name": name, "email": email}).to_string()),
    )
    .await?;
    let user = find(&mut tx, id).await?.expect("just inserted");
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `POST /api/users/login` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

/// `POST /api/users/login` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginView {
    pub token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub user: UserView,
}

/// A hash to verify against when the e-mail is unknown, so both cases take the same time.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| auth::hash_password("timing-equaliser").expect("argon2 hash"));

/// `POST /api/users/login`: 200 with a bearer token; 401 for an unknown e-mail or wrong password.
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<LoginView>, ApiError> {
    let email = body.email.trim().to_lowercase();
    Validator::default()
        .check(
            !email.is_empty() && email.len() <= 254,
            "email",
            "is required",
        )
        .check(
            !body.password.is_empty() && body.password.len() <= 512,
            "password",
            "is required",
        )
        .finish()?;
    let mut conn = state.pool.get_conn().await?;
    let found: Option<(u64, String)> = conn
        .exec_first(
            "SELECT id, password_hash FROM users WHERE email = ?",
            (&email,),
        )
        .await?;
    let (id, hash) = match &found {
        Some((id, hash)) => (Some(*id), hash.clone()),
        None => (None, DUMMY_HASH.clone()),
    };
    let password = body.password;
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (Some(id), true) = (id, ok) else {
        return Err(ApiError::Unauthorized("invalid e-mail or password"));
    };
    let user = find(&mut conn, id)
        .await?
        .ok_or(ApiError::Unauthorized("invalid e-mail or password"))?;
    let token = state.tokens.issue(user.id, &user.email, &user.role);
    Ok(Json(LoginView {
        token,
        token_type: "Bearer".into(),
        expires_in: state.tokens.ttl_secs(),
        user,
    }))
}

/// `GET /api/users/me`.
pub async fn get_me(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<UserView>, ApiError> {
    let mut conn = state.pool.get_conn().await?;
    find(&mut conn, user.id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("user"))
}

/// `PUT /api/users/me` body: any of the fields; `null` clears phone or address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeBody {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub address: Option<Option<String>>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PUT /api/users/me`: 200 with the updated profile.
pub async fn update_me(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<UpdateMeBody>,
) -> Result<Json<UserView>, ApiError> {
    let name = body.name.as_deref().map(str::trim);
    let phone = body.phone.as_ref().map(|p| p.as_deref().map(str::trim));
    let address = body.address.as_ref().map(|a| a.as_deref().map(str::trim));
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
            phone.flatten().is_none_or(valid_phone),
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
    let mut tx = state.pool.start_transaction(Default::default()).await?;
    if let Some(name) = name {
        tx.exec_drop("UPDATE users SET name = ? WHERE id = ?", (name, user.id))
            .await?;
    }
    if let Some(phone) = phone {
        tx.exec_drop("UPDATE users SET phone = ? WHERE id = ?", (phone, user.id))
            .await?;
    }
    if let Some(address) = address {
        tx.exec_drop(
            "UPDATE users SET address = ? WHERE id = ?",
            (address, user.id),
        )
        .await?;
    }
    let updated = find(&mut tx, user.id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    tx.commit().await?;
    Ok(Json(updated))
}

/// `GET /api/users/{id}`: administrators only (403 otherwise), 404 when absent.
pub async fn get_by_id(
    State(state): State<AppState>,
    user: AuthUser,
    ApiId(id): ApiId,
) -> Result<Json<UserView>, ApiError> {
    user.require_admin()?;
    let mut conn = state.pool.get_conn().await?;
    find(&mut conn, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("user"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_rules() {
        for ok in ["a@b.co", "first.last+tag@shop.example.com"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a@@b.co", "a b@c.co", "a@.co", "a@b..co",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn phone_rules() {
        assert!(valid_phone("+44 20 7946 0958"));
        assert!(valid_phone("(555) 123-4567"));
        assert!(!valid_phone("12345"));
        assert!(!valid_phone("call me maybe"));
        assert!(!valid_phone("12+345678"));
    }
}

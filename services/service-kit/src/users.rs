//! The users contract the monolith and user-service both serve: request and response shapes,
//! their validation, and the `users` table work (argon2id hashes, profile updates, login checks).
//! Each side wraps these in its own handlers and adds its own side effects.

use std::sync::LazyLock;

use mysql_async::Row;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Validator};
use crate::format::timestamp;
use crate::password;
use crate::validate::{valid_email, valid_phone};

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

/// The user with this id, if any.
pub async fn find(conn: &mut impl Queryable, id: u64) -> Result<Option<UserView>, ApiError> {
    let row: Option<Row> = conn
        .exec_first(format!("SELECT {COLUMNS} FROM users WHERE id = ?"), (id,))
        .await?;
    Ok(row.map(UserView::from_row))
}

/// `POST /api/users/register` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub email: String,
    pub password: String,
    pub name: String,
}

/// A validated registration with its password hash, ready to insert.
pub struct NewUser {
    pub email: String,
    pub name: String,
    hash: String,
}

impl NewUser {
    /// Validates the body (422 naming each bad field) and hashes the password.
    pub async fn from_body(body: RegisterBody) -> Result<Self, ApiError> {
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
        let hash = tokio::task::spawn_blocking(move || password::hash_password(&password))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Self { email, name, hash })
    }

    /// Inserts the user in `tx` (409 `email_taken` when the e-mail exists).
    pub async fn insert(&self, tx: &mut impl Queryable) -> Result<UserView, ApiError> {
        let inserted = tx
            .exec_drop(
                "INSERT INTO users (email, password_hash, name) VALUES (?, ?, ?)",
                (&self.email, &self.hash, &self.name),
            )
            .await;
        match inserted {
            Err(e) if crate::db::is_duplicate(&e) => {
                return Err(ApiError::Conflict {
                    code: "email_taken",
                    message: "an account with this e-mail already exists".into(),
                });
            }
            other => other?,
        }
        let id: u64 = tx
            .query_first("SELECT LAST_INSERT_ID()")
            .await?
            .ok_or_else(|| ApiError::Internal("no insert id".into()))?;
        find(tx, id)
            .await?
            .ok_or_else(|| ApiError::Internal("inserted user not found".into()))
    }
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
    LazyLock::new(|| password::hash_password("timing-equaliser").expect("argon2 hash"));

/// The user whose e-mail and password these are; 401 for an unknown e-mail or a wrong password
/// (the same answer, after the same work).
pub async fn check_login(conn: &mut impl Queryable, body: LoginBody) -> Result<UserView, ApiError> {
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
    let ok = tokio::task::spawn_blocking(move || password::verify_password(&password, &hash))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (Some(id), true) = (id, ok) else {
        return Err(ApiError::Unauthorized("invalid e-mail or password"));
    };
    find(conn, id)
        .await?
        .ok_or(ApiError::Unauthorized("invalid e-mail or password"))
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
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl UpdateMeBody {
    /// Validates the update (422 naming each bad field) and writes it to user `id` in `tx`;
    /// returns the updated user.
    pub async fn apply(self, tx: &mut impl Queryable, id: u64) -> Result<UserView, ApiError> {
        let name = self.name.as_deref().map(str::trim);
        let phone = self.phone.as_ref().map(|p| p.as_deref().map(str::trim));
        let address = self.address.as_ref().map(|a| a.as_deref().map(str::trim));
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
        if let Some(name) = name {
            tx.exec_drop("UPDATE users SET name = ? WHERE id = ?", (name, id))
                .await?;
        }
        if let Some(phone) = phone {
            tx.exec_drop("UPDATE users SET phone = ? WHERE id = ?", (phone, id))
                .await?;
        }
        if let Some(address) = address {
            tx.exec_drop("UPDATE users SET address = ? WHERE id = ?", (address, id))
                .await?;
        }
        find(tx, id).await?.ok_or(ApiError::NotFound("user"))
    }
}

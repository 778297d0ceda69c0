//! Users: register, log in (argon2id + JWT), read and update one's own profile, and look a user
//! up by id (administrators only). A welcome notification is written with each registration.
//! Shapes, validation and the `users` table work are the shared contract in service-kit.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mysql_async::prelude::*;
pub use service_kit::users::{LoginBody, LoginView, RegisterBody, UpdateMeBody, UserView};
use service_kit::users::{NewUser, check_login, find};

use super::extract::{ApiId, ApiJson, AuthUser};
use crate::app::AppState;
use crate::error::ApiError;

/// `POST /api/users/register`: 201 with the new user; 409 when the e-mail is taken.
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let new = NewUser::from_body(body).await?;
    let mut tx = state.pool.start_transaction(Default::default()).await?;
    let user = new.insert(&mut tx).await?;
    tx.exec_drop(
        "INSERT INTO notifications (user_id, channel, template, payload) VALUES (?, 'email', 'welcome', ?)",
        (user.id, serde_json::json!({"name": user.name, "email": user.email}).to_string()),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `POST /api/users/login`: 200 with a bearer token; 401 for an unknown e-mail or wrong password.
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<LoginView>, ApiError> {
    let mut conn = state.pool.get_conn().await?;
    let user = check_login(&mut conn, body).await?;
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

/// `PUT /api/users/me`: 200 with the updated profile.
pub async fn update_me(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<UpdateMeBody>,
) -> Result<Json<UserView>, ApiError> {
    let mut tx = state.pool.start_transaction(Default::default()).await?;
    let updated = body.apply(&mut tx, user.id).await?;
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

//! user-service's HTTP application: the monolith's `/api/users/*` routes (same requests, same
//! answers), token refresh, the JWKS, and the health, readiness and metrics endpoints.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use mysql_async::Pool;
use service_kit::error::ApiError;
use service_kit::extract::{ApiId, ApiJson, AuthUser, VerifyToken};
use service_kit::http::HttpMetrics;
use service_kit::jwt::Claims;
use service_kit::migrate::Migration;
use service_kit::users::{
    LoginBody, LoginView, NewUser, RegisterBody, UpdateMeBody, UserView, check_login, find,
};

use crate::config::Config;
use crate::keys::KeyStore;

/// user-service's migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "users",
        sql: include_str!("../migrations/0001_users.sql"),
    },
    Migration {
        version: 2,
        name: "outbox",
        sql: include_str!("../migrations/0002_outbox.sql"),
    },
];

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub keys: Arc<KeyStore>,
    pub metrics: HttpMetrics,
    pub config: Arc<Config>,
}

impl VerifyToken for AppState {
    fn verify_token(&self, token: &str) -> Option<Claims> {
        self.keys.ring().verify(token)
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/api/users/register", post(register))
        .route("/api/users/login", post(login))
        .route("/api/users/token/refresh", post(refresh))
        .route("/api/users/me", get(get_me).put(update_me))
        .route("/api/users/{id}", get(get_by_id))
        .route("/.well-known/jwks.json", get(jwks));
    service_kit::http::finish(
        routes,
        state.clone(),
        state.metrics.clone(),
        state.pool.clone(),
        MIGRATIONS,
        state.config.server.max_body_bytes,
    )
}

/// `POST /api/users/register`: 201 with the new user, a `user.registered` event in the outbox;
/// 409 when the e-mail is taken.
async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let new = NewUser::from_body(body).await?;
    let mut tx = state.pool.start_transaction(Default::default()).await?;
    let user = new.insert(&mut tx).await?;
    service_kit::outbox::write(
        &mut tx,
        "user",
        &user.id.to_string(),
        "user.registered",
        &serde_json::json!({"user_id": user.id, "name": user.name, "email": user.email}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

fn token_for(state: &AppState, user: UserView) -> Result<Json<LoginView>, ApiError> {
    let ring = state.keys.ring();
    let token = ring
        .issue(user.id, &user.email, &user.role)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(LoginView {
        token,
        token_type: "Bearer".into(),
        expires_in: ring.ttl_secs(),
        user,
    }))
}

/// `POST /api/users/login`: 200 with a bearer token; 401 for an unknown e-mail or wrong password.
async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<LoginView>, ApiError> {
    let mut conn = state.pool.get_conn().await?;
    let user = check_login(&mut conn, body).await?;
    token_for(&state, user)
}

/// `POST /api/users/token/refresh`: a still-valid token buys a new one, signed with the current
/// key and carrying the user's current role; 401 once the user is gone.
async fn refresh(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<LoginView>, ApiError> {
    let mut conn = state.pool.get_conn().await?;
    let current = find(&mut conn, user.id)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    token_for(&state, current)
}

/// `GET /api/users/me`.
async fn get_me(State(state): State<AppState>, user: AuthUser) -> Result<Json<UserView>, ApiError> {
    let mut conn = state.pool.get_conn().await?;
    find(&mut conn, user.id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("user"))
}

/// `PUT /api/users/me`: 200 with the updated profile.
async fn update_me(
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
async fn get_by_id(
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

/// `GET /.well-known/jwks.json`: the public keys that check this service's tokens.
async fn jwks(State(state): State<AppState>) -> Response {
    use axum::response::IntoResponse as _;
    (
        [(axum::http::header::CACHE_CONTROL, "max-age=60")],
        Json(state.keys.ring().jwks()),
    )
        .into_response()
}

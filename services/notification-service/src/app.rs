//! notification-service's HTTP application: the monolith's `GET /api/notifications` (the shared
//! handler), each user's channel preferences, and the health, readiness and metrics endpoints.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use mysql_async::Pool;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use service_kit::error::{ApiError, Validator};
use service_kit::extract::{ApiJson, AuthUser, VerifyToken};
use service_kit::http::HttpMetrics;
use service_kit::jwks::JwksVerifier;
use service_kit::jwt::Claims;
use service_kit::migrate::Migration;
use service_kit::notifications::{NotificationsState, list_own};

use crate::config::Config;

/// notification-service's migrations, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "notifications",
    sql: include_str!("../migrations/0001_notifications.sql"),
}];

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub tokens: Arc<JwksVerifier>,
    pub metrics: HttpMetrics,
    pub config: Arc<Config>,
}

impl VerifyToken for AppState {
    fn verify_token(&self, token: &str) -> Option<Claims> {
        self.tokens.verify(token)
    }
}

impl NotificationsState for AppState {
    fn notifications_pool(&self) -> &Pool {
        &self.pool
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/api/notifications", get(list_own::<AppState>))
        .route(
            "/api/notifications/preferences",
            get(get_preferences).put(put_preferences),
        );
    service_kit::http::finish(
        routes,
        state.clone(),
        state.metrics.clone(),
        state.pool.clone(),
        MIGRATIONS,
        state.config.server.max_body_bytes,
    )
}

/// A user's channels.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Preferences {
    pub email: bool,
    pub sms: bool,
    pub push: bool,
    pub phone: Option<String>,
    pub push_token: Option<String>,
}

async fn read(conn: &mut impl Queryable, user: u64) -> Result<Preferences, ApiError> {
    let row: Option<crate::worker::Preferences> = conn
        .exec_first(
            "SELECT email_enabled, sms_enabled, push_enabled, phone, push_token FROM contacts WHERE user_id = ?",
            (user,),
        )
        .await?;
    let (email, sms, push, phone, push_token) = row.unwrap_or((1, 0, 0, None, None));
    Ok(Preferences {
        email: email != 0,
        sms: sms != 0,
        push: push != 0,
        phone,
        push_token,
    })
}

/// `GET /api/notifications/preferences`: e-mail on, SMS and push off until chosen.
async fn get_preferences(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Preferences>, ApiError> {
    let mut conn = state.pool.get_conn().await?;
    Ok(Json(read(&mut conn, user.id).await?))
}

/// `PUT /api/notifications/preferences` body: any of the fields; `null` clears phone or token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesBody {
    pub email: Option<bool>,
    pub sms: Option<bool>,
    pub push: Option<bool>,
    #[serde(default, deserialize_with = "service_kit::users::present")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "service_kit::users::present")]
    pub push_token: Option<Option<String>>,
}

/// `PUT /api/notifications/preferences`: 200 with the preferences; SMS needs a phone and push a
/// token (422 otherwise).
async fn put_preferences(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<PreferencesBody>,
) -> Result<Json<Preferences>, ApiError> {
    let mut tx = state.pool.start_transaction(Default::default()).await?;
    let mut p = read(&mut tx, user.id).await?;
    if let Some(v) = body.email {
        p.email = v;
    }
    if let Some(v) = body.sms {
        p.sms = v;
    }
    if let Some(v) = body.push {
        p.push = v;
    }
    if let Some(v) = body.phone {
        p.phone = v.map(|s| s.trim().to_string());
    }
    if let Some(v) = body.push_token {
        p.push_token = v.map(|s| s.trim().to_string());
    }
    Validator::default()
        .check(
            p.phone
                .as_deref()
                .is_none_or(service_kit::validate::valid_phone),
            "phone",
            "must be 6 to 15 digits, optionally with +, spaces, dashes or parentheses",
        )
        .check(
            p.push_token
                .as_deref()
                .is_none_or(|t| (1..=255).contains(&t.len())),
            "push_token",
            "must be 1 to 255 characters",
        )
        .check(!p.sms || p.phone.is_some(), "sms", "needs a phone number")
        .check(
            !p.push || p.push_token.is_some(),
            "push",
            "needs a push token",
        )
        .finish()?;
    tx.exec_drop(
        "INSERT INTO contacts (user_id, phone, push_token, email_enabled, sms_enabled, push_enabled) \
         VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE phone = VALUES(phone), push_token = VALUES(push_token), \
         email_enabled = VALUES(email_enabled), sms_enabled = VALUES(sms_enabled), push_enabled = VALUES(push_enabled)",
        (user.id, &p.phone, &p.push_token, p.email, p.sms, p.push),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(p))
}

//! The monolith's request readers: JSON bodies, query strings, numeric path ids and the signed-in
//! user from `Authorization: Bearer`, each answering bad input with the monolith's error body.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::{ApiError, FieldError};

/// A JSON body; malformed JSON is 400, a wrong shape 422, a wrong content type 415, too big 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let rejection = match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => return Ok(Self(value)),
            Err(rejection) => rejection,
        };
        Err(match rejection {
            JsonRejection::JsonDataError(e) => ApiError::Validation(vec![FieldError {
                field: "body".into(),
                message: e.body_text(),
            }]),
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::BadRequest(format!("malformed JSON body: {}", e.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            other => ApiError::BadRequest(other.body_text()),
        })
    }
}

/// A query string; anything that does not parse is 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::BadRequest(format!(
                "invalid query string: {}",
                e.body_text()
            ))),
        }
    }
}

/// A positive numeric id in the path; anything else is 400.
pub struct ApiId(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for ApiId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        raw.parse::<u64>()
            .ok()
            .filter(|id| *id > 0)
            .map(Self)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("path id {raw:?} is not a positive integer"))
            })
    }
}

/// The signed-in user, from a valid monolith token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: u64,
    pub email: String,
    pub role: String,
}

impl AuthUser {
    /// Whether the user is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }

    /// 403 unless the user is an administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("administrator role required"))
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "missing Authorization: Bearer token",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        let claims = state.tokens.verify(token).ok_or(ApiError::InvalidToken)?;
        let id = claims.sub.parse().map_err(|_| ApiError::InvalidToken)?;
        Ok(Self {
            id,
            email: claims.email,
            role: claims.role,
        })
    }
}

//! The monolith's error handling, its own: every failure a handler can return, the HTTP status
//! and stable code each maps to, and the `{"error":{"code","message","fields"?}}` body clients
//! have always parsed (the services promise the same body; this code is not shared with them).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A field that failed the monolith's input rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Everything a request to the monolith can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request validation failed")]
    Validation(Vec<FieldError>),
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than allowed")]
    PayloadTooLarge,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("invalid or expired token")]
    InvalidToken,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("payment declined: {0}")]
    PaymentDeclined(String),
    #[error("payment provider unavailable: {0}")]
    PaymentUnavailable(String),
    #[error("database unavailable")]
    Database(#[from] mysql_async::Error),
    #[error("the shop is busy; try again in a moment")]
    Overloaded,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The status and the code clients branch on.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Conflict { code, .. } => (StatusCode::CONFLICT, code),
            PaymentDeclined(_) => (StatusCode::PAYMENT_REQUIRED, "payment_declined"),
            PaymentUnavailable(_) => (StatusCode::BAD_GATEWAY, "payment_unavailable"),
            Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The error object of the body, built by hand as the monolith always has.
    fn body(&self, code: &str) -> Value {
        let message = match self {
            // Driver details stay in the log.
            ApiError::Database(_) => "the database is unavailable, try again".to_string(),
            other => other.to_string(),
        };
        let mut error = Map::new();
        error.insert("code".into(), code.into());
        error.insert("message".into(), message.into());
        if let ApiError::Validation(fields) = self {
            let fields = fields
                .iter()
                .map(|f| json!({"field": f.field, "message": f.message}))
                .collect();
            error.insert("fields".into(), Value::Array(fields));
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Database(e) => tracing::error!(error = %e, "database error"),
            ApiError::Internal(e) => tracing::error!(error = %e, "internal error"),
            _ => {}
        }
        let mut response = (status, axum::Json(self.body(code))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The monolith's form checker: collects every failed rule, then fails once with all of them.
#[derive(Default, Debug)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// Records `message` for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.errors.push(FieldError {
                field: field.to_string(),
                message: message.to_string(),
            });
        }
        self
    }

    /// `Ok(())` when every rule held.
    pub fn finish(&mut self) -> Result<(), ApiError> {
        match std::mem::take(&mut self.errors) {
            errors if errors.is_empty() => Ok(()),
            errors => Err(ApiError::Validation(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_body_lists_every_field_in_order() {
        let err = Validator::default()
            .check(false, "email", "must be a valid e-mail address")
            .check(true, "name", "never shown")
            .check(false, "password", "must be 8 to 128 characters")
            .finish()
            .unwrap_err();
        let (status, code) = err.status_and_code();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.body(code),
            json!({"error": {"code": "validation_failed", "message": "request validation failed",
                "fields": [{"field": "email", "message": "must be a valid e-mail address"},
                           {"field": "password", "message": "must be 8 to 128 characters"}]}})
        );
    }

    #[test]
    fn database_errors_hide_the_driver_text() {
        let err = ApiError::Database(mysql_async::Error::Other("secret host".into()));
        let body = err.body("database_unavailable");
        assert_eq!(
            body["error"]["message"],
            "the database is unavailable, try again"
        );
        assert!(body["error"].get("fields").is_none());
    }
}

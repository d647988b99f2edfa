//! The one place domain errors become HTTP replies, in the caller's dialect:
//! OpenAI's error shape on OpenAI routes, `{"error":{"code","message"}}` on `/api/`.

use crate::auth::AuthError;
use crate::dispatch::DispatchError;
use crate::providers::RegistryError;
use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Admin,
}

/// An error reply: status, a stable machine code, and a message safe to show.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, retry_after: Option<String>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "invalid_request", message)
    }

    pub fn into_response(mut self, dialect: Dialect) -> Response {
        bound_message(&mut self.message);
        if self.status == 500 {
            tracing::error!(status = self.status, code = self.code, message = %self.message, "request failed");
        } else if self.status > 500 {
            tracing::warn!(status = self.status, code = self.code, message = %self.message, "request failed upstream");
        } else {
            tracing::debug!(status = self.status, code = self.code, message = %self.message, "request refused");
        }
        let body = match dialect {
            Dialect::OpenAi => json!({"error": {
                "message": self.message,
                "type": crate::translate::anthropic::openai_error_type(self.status),
                "param": null,
                "code": self.code,
            }}),
            Dialect::Anthropic => crate::translate::anthropic::error_body_anthropic(self.status, &self.message),
            Dialect::Admin => json!({"error": {"code": self.code, "message": self.message}}),
        };
        let mut response = json_response(self.status, &body);
        if let Some(value) = self.retry_after.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// Error messages may quote what the client sent (a model name, a field value): only a
/// bounded prefix of it ever goes back, however large the input.
pub const MAX_ERROR_MESSAGE: usize = 2048;

fn bound_message(message: &mut String) {
    if message.len() > MAX_ERROR_MESSAGE {
        let mut cut = MAX_ERROR_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("… (truncated)");
    }
}

pub fn json_response(status: u16, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes_response(status, "application/json", bytes.into())
}

pub fn bytes_response(status: u16, content_type: &'static str, body: bytes::Bytes) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let retry_after = match &e {
            AuthError::TooManyAttempts { retry_after_secs } => Some(retry_after_secs.to_string()),
            AuthError::Busy => Some("1".to_string()),
            _ => None,
        };
        ApiError::new(e.status(), e.code(), e.to_string()).with_retry_after(retry_after)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::new(e.status(), e.code(), e.to_string())
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            // The target's own answer: its status, its message, its Retry-After.
            DispatchError::Upstream { route, failure, .. } => ApiError::new(
                failure.status,
                "upstream_error",
                format!("'{route}' answered {}: {}", failure.status, failure.message()),
            )
            .with_retry_after(failure.retry_after.clone()),
            other => {
                let retry_after = other.retry_after();
                ApiError::new(other.status(), other.code(), other.to_string()).with_retry_after(retry_after)
            }
        }
    }
}

/// Errors for rejections (no route, wrong method): the path is unknown here, so the body
/// carries the fields of every dialect at once.
pub fn rejection_response(status: u16, code: &'static str, message: &str) -> Response {
    json_response(
        status,
        &json!({"type": "error", "error": {
            "type": crate::translate::anthropic::openai_error_type(status),
            "code": code,
            "message": message,
            "param": null,
        }}),
    )
}

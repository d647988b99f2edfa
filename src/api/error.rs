//! The one place domain errors become HTTP replies, in the caller's dialect:
//! OpenAI's error shape on OpenAI routes, `{"error":{"code","message"}}` on `/api/`.
//!
//! What the client reads is kept apart from what the log gets: an internal failure (a
//! storage error, a bug) answers 500 with a fixed message naming the request id, and its
//! cause goes to the log only, once, with that id.

use super::filters::current_request_id;
use crate::agents::admin::AgentError;
use crate::auth::AuthError;
use crate::dispatch::rules::RulesError;
use crate::dispatch::DispatchError;
use crate::exchange::ExchangeError;
use crate::providers::RegistryError;
use crate::usage::UsageError;
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
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// An internal failure's cause: for the log, never for the client.
    detail: Option<String>,
    pub retry_after: Option<String>,
}

/// The upstream's own error, passed on with its status (a 500 included) and its text.
const UPSTREAM_ERROR: &str = "upstream_error";

impl ApiError {
    /// A 500 that is not an upstream's own answer is an internal failure: `message` becomes
    /// the log's detail and the client gets a fixed text instead.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        if status == 500 && code != UPSTREAM_ERROR {
            return ApiError {
                status,
                code,
                message: String::new(),
                detail: Some(message),
                retry_after: None,
            };
        }
        ApiError {
            status,
            code,
            message,
            detail: None,
            retry_after: None,
        }
    }

    /// An internal failure: `detail` goes to the log only.
    pub fn internal(code: &'static str, detail: impl std::fmt::Display) -> Self {
        ApiError::new(500, code, detail.to_string())
    }

    /// A domain error: its status and code as its module says, its text as the message.
    fn domain(status: u16, code: &'static str, error: &dyn std::fmt::Display) -> Self {
        ApiError::new(status, code, error.to_string())
    }

    pub fn with_retry_after(mut self, retry_after: Option<String>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "invalid_request", message)
    }

    /// The reply, and the one log line of the failure (with the request id).
    pub fn into_response(mut self, dialect: Dialect) -> Response {
        let request_id = current_request_id();
        let id = request_id.as_deref().unwrap_or("-");
        if let Some(detail) = &self.detail {
            tracing::error!(request_id = id, status = self.status, code = self.code, error = %detail, "request failed");
            self.message = format!("internal error (request id {id}); the server log has the details");
        } else if self.status >= 500 {
            tracing::warn!(request_id = id, status = self.status, code = self.code, message = %self.message, "request failed upstream");
        } else {
            tracing::debug!(request_id = id, status = self.status, code = self.code, message = %self.message, "request refused");
        }
        bound_message(&mut self.message);
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
        ApiError::domain(e.status(), e.code(), &e).with_retry_after(retry_after)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::domain(e.status(), e.code(), &e)
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        ApiError::domain(e.status(), e.code(), &e)
    }
}

impl From<UsageError> for ApiError {
    fn from(e: UsageError) -> Self {
        ApiError::domain(e.status(), e.code(), &e)
    }
}

impl From<RulesError> for ApiError {
    fn from(e: RulesError) -> Self {
        ApiError::domain(e.status(), e.code(), &e)
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            // The target's own answer: its status, its message, its Retry-After.
            DispatchError::Upstream { route, failure, .. } => ApiError::new(
                failure.status,
                UPSTREAM_ERROR,
                format!("'{route}' answered {}: {}", failure.status, failure.message()),
            )
            .with_retry_after(failure.retry_after.clone()),
            other => {
                let retry_after = other.retry_after();
                ApiError::domain(other.status(), other.code(), &other).with_retry_after(retry_after)
            }
        }
    }
}

impl From<ExchangeError> for ApiError {
    fn from(e: ExchangeError) -> Self {
        ApiError::domain(e.status(), e.code(), &e)
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn an_internal_failure_shows_the_request_id_not_its_cause() {
        let store_failure = crate::store::StoreError::Task("disk I/O error at page 7".into());
        let error = ApiError::from(RulesError::Store(store_failure));
        let response =
            super::super::filters::with_request_id("req-42", async move { error.into_response(Dialect::Admin) }).await;
        assert_eq!(response.status(), 500);
        let body = body_of(response).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("req-42"), "{message}");
        assert!(!message.contains("disk") && !message.contains("database"), "{message}");
        assert_eq!(body["error"]["code"], "internal_error");
    }

    #[tokio::test]
    async fn an_upstream_500_keeps_its_own_message() {
        let error = ApiError::new(500, UPSTREAM_ERROR, "'main' answered 500: The server had an error");
        let body = body_of(error.into_response(Dialect::OpenAi)).await;
        assert_eq!(body["error"]["message"], "'main' answered 500: The server had an error");
    }

    #[tokio::test]
    async fn client_errors_keep_their_message() {
        let body = body_of(ApiError::bad_request("model must not be empty").into_response(Dialect::Anthropic)).await;
        assert_eq!(body["error"]["message"], "model must not be empty");
    }
}

//! What cannot be translated, and error bodies in either dialect so an upstream's failure
//! reaches a client in the shape its SDK parses.

use serde_json::{json, Value};

/// A request or response that has no faithful counterpart in the other dialect. `field`
/// is the JSON path of the culprit (`messages[2].content[0].type`) so the client can fix
/// exactly that.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TranslateError {
    pub field: String,
    pub message: String,
}

pub(super) fn err(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError {
        field: field.into(),
        message: message.into(),
    }
}

/// Anthropic's `error.type` for an HTTP status; SDKs pick their exception class from it.
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// OpenAI's `error.type` for an HTTP status.
pub fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// `{"type":"error","error":{"type","message"}}`, the body Anthropic SDKs expect.
pub fn error_body_anthropic(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})
}

/// `{"error":{"message","type","param","code"}}`, the body OpenAI SDKs expect.
pub fn error_body_openai(status: u16, message: &str) -> Value {
    json!({"error": {"message": message, "type": openai_error_type(status), "param": null, "code": null}})
}

/// The human message inside an upstream's error body of either dialect (or a bare
/// `{"error":"text"}` as some OpenAI-compatible servers send), so it can be re-wrapped.
pub fn upstream_error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    match value.get("error")? {
        Value::String(message) => Some(message.clone()),
        error => error.get("message")?.as_str().map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_error_types_follow_the_status() {
        let table = [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (409, "invalid_request_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (529, "overloaded_error"),
        ];
        for (status, kind) in table {
            let body = error_body_anthropic(status, "boom");
            assert_eq!(body["type"], "error", "status {status}");
            assert_eq!(body["error"]["type"], kind, "status {status}");
            assert_eq!(body["error"]["message"], "boom", "status {status}");
        }
    }

    #[test]
    fn openai_error_bodies_have_the_sdk_shape() {
        let body = error_body_openai(429, "slow down");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["message"], "slow down");
        assert_eq!(error_body_openai(503, "x")["error"]["type"], "server_error");
    }

    #[test]
    fn upstream_messages_are_found_in_either_dialect() {
        let anthropic = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let openai = br#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#;
        assert_eq!(upstream_error_message(anthropic).as_deref(), Some("Overloaded"));
        assert_eq!(upstream_error_message(openai).as_deref(), Some("bad key"));
        assert_eq!(
            upstream_error_message(br#"{"error":"plain"}"#).as_deref(),
            Some("plain")
        );
        assert_eq!(upstream_error_message(b"not json"), None);
    }

    #[test]
    fn the_display_names_the_field() {
        assert_eq!(
            err("messages[2].content[0].type", "nope").to_string(),
            "messages[2].content[0].type: nope"
        );
    }
}

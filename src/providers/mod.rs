//! Cloud providers: the upstream HTTP calls (`openai.rs`, `anthropic.rs`) over one shared,
//! pooled client, and the registry that manages them (`registry.rs`).
//!
//! Providers are an enum, not a trait object: there are few kinds, each call is a `match`,
//! and async functions stay plain.

pub mod anthropic;
pub mod client;
pub mod connect;
pub mod openai;
pub mod registry;
pub mod routing;

pub use crate::store::{CachedModel, ProviderKind};
pub use client::HttpClient;
pub use registry::{ModelView, NewProvider, ProviderPatch, ProviderRegistry, ProviderView, RegistryError};
pub use routing::{LiveProvider, RoutingTable};

use crate::bounded::ReadError;
use crate::crypto::Secret;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use std::time::Duration;

/// Error bodies from upstreams are read into memory up to this size (success bodies stream).
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the key (401/403).
    #[error("the provider rejected the API key: {message}")]
    KeyRejected { status: u16, message: String },
    #[error("cannot reach the provider: {0}")]
    Unreachable(String),
    /// The router is out of a resource of its own (file descriptors, memory, local ports)
    /// and could not open the connection: no fault of the provider's.
    #[error("auxot is out of system resources (open files, memory or local ports) and cannot open a connection: {0}")]
    Exhausted(String),
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the provider answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the provider sent a response auxot cannot read: {0}")]
    BadResponse(String),
    #[error("the upstream stream broke: {0}")]
    Stream(String),
}

/// A non-2xx answer, read whole (bounded) with the provider key scrubbed out.
#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// The upstream's `Retry-After`, passed on so SDKs back off as the provider asked.
    pub retry_after: Option<String>,
}

impl UpstreamFailure {
    /// The human message inside an OpenAI or Anthropic error body, else the body's start.
    pub fn message(&self) -> String {
        error_message(&self.body)
    }
}

/// A 2xx answer whose body is forwarded as it arrives.
pub struct UpstreamReply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, ProviderError>>,
}

/// What a chat call came back with before any byte of the body was read.
pub enum ChatOutcome {
    Reply(UpstreamReply),
    Failed(UpstreamFailure),
}

/// A header value that never shows in a debug print (an API key).
pub(crate) fn sensitive_header(value: &str) -> Result<http::HeaderValue, ProviderError> {
    let mut header = http::HeaderValue::from_str(value)
        .map_err(|_| ProviderError::BadResponse("the stored key is not a valid header value".into()))?;
    header.set_sensitive(true);
    Ok(header)
}

/// An error and its causes in one line (reqwest's without the URL: no query is ever sent,
/// but a URL is noise in a message meant to be acted on).
pub(crate) fn describe_reqwest_error(e: reqwest::Error) -> String {
    describe_error(&e.without_url())
}

/// An error and its causes, `: `-joined — enough to act on.
pub(crate) fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        // hyper-util wraps some causes in a layer that prints them again.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn header_text(response: &http::Response<hyper::body::Incoming>, name: http::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Splits a response into a streaming reply (2xx) or a bounded, scrubbed failure.
pub(crate) async fn into_outcome(response: http::Response<hyper::body::Incoming>, key: Option<&Secret>) -> ChatOutcome {
    let status = response.status().as_u16();
    let content_type = header_text(&response, http::header::CONTENT_TYPE);
    let success = response.status().is_success();
    let retry_after = match success {
        true => None,
        false => header_text(&response, http::header::RETRY_AFTER),
    };
    let body = http_body_util::BodyDataStream::new(response.into_body())
        .map_err(|e| ProviderError::Stream(describe_error(&e)))
        .boxed();
    if success {
        return ChatOutcome::Reply(UpstreamReply {
            status,
            content_type,
            body,
        });
    }
    let body = crate::bounded::read_prefix(body, MAX_ERROR_BODY).await;
    ChatOutcome::Failed(UpstreamFailure {
        status,
        content_type,
        body: scrub(body, key),
        retry_after,
    })
}

/// Reads a whole body, refusing one past `limit` bytes (`what` names it in the error).
pub(crate) async fn collect_body(
    body: BoxStream<'static, Result<Bytes, ProviderError>>,
    limit: usize,
    what: &str,
) -> Result<Bytes, ProviderError> {
    crate::bounded::read_to_limit(body, limit, 0)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge { limit } => {
                ProviderError::BadResponse(format!("{what} larger than {} MiB", limit / (1024 * 1024)))
            }
            ReadError::Broken(e) => e,
        })
}

/// Removes the provider key from a body an upstream sent back, should it echo it.
pub(crate) fn scrub(body: Bytes, key: Option<&Secret>) -> Bytes {
    let Some(key) = key.map(Secret::expose).filter(|k| k.len() >= 4) else {
        return body;
    };
    match std::str::from_utf8(&body) {
        Ok(text) if text.contains(key) => Bytes::from(text.replace(key, "[redacted]")),
        Ok(_) => body,
        // Not text: a key could still sit inside; drop the body rather than risk it.
        Err(_) if body.windows(key.len()).any(|w| w == key.as_bytes()) => Bytes::from_static(b"[redacted]"),
        Err(_) => body,
    }
}

/// The message inside `{"error":{"message":…}}` (OpenAI and Anthropic both), else the
/// first 300 characters of the body.
pub fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Inner {
        Object { message: String },
        Text(String),
    }
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(body) {
        return match envelope.error {
            Inner::Object { message } | Inner::Text(message) => message,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    text.chars().take(300).collect()
}

/// Lists a provider's models with `key`: the key check when a provider is added.
pub async fn list_models(
    http: &HttpClient,
    kind: ProviderKind,
    base_url: &str,
    key: Option<&Secret>,
    timeout: Duration,
) -> Result<Vec<CachedModel>, ProviderError> {
    match kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
            openai::list_models(http, base_url, key, timeout).await
        }
        ProviderKind::Anthropic => anthropic::list_models(http, base_url, key, timeout).await,
    }
}

/// Maps a failed model-list call to the error a caller can act on.
pub(crate) fn listing_error(failure: UpstreamFailure) -> ProviderError {
    let message = failure.message();
    match failure.status {
        401 | 403 => ProviderError::KeyRejected {
            status: failure.status,
            message,
        },
        status => ProviderError::Status { status, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_an_echoed_key() {
        let key = Secret::new("sk-echo-me-123456".into());
        let body = Bytes::from_static(b"{\"error\":{\"message\":\"bad key sk-echo-me-123456\"}}");
        let out = scrub(body, Some(&key));
        assert!(!String::from_utf8_lossy(&out).contains("sk-echo-me"));
    }

    #[test]
    fn error_message_reads_both_dialects() {
        assert_eq!(error_message(br#"{"error":{"message":"nope","type":"x"}}"#), "nope");
        assert_eq!(
            error_message(br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#),
            "invalid x-api-key"
        );
        assert_eq!(error_message(b"<html>bad gateway</html>"), "<html>bad gateway</html>");
    }
}

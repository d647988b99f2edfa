//! Cloud providers: the upstream HTTP calls (`openai.rs`, `anthropic.rs`) over one shared,
//! pooled client, and the registry that manages them (`registry.rs`).
//!
//! Providers are an enum, not a trait object: there are few kinds, each call is a `match`,
//! and async functions stay plain.

pub mod anthropic;
pub mod connect;
pub mod openai;
pub mod registry;
pub mod routing;

pub use crate::store::{CachedModel, ProviderKind};
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

/// The one upstream client: pooled, TCP_NODELAY, no redirects (a redirect could carry a
/// provider key header to another host). `connect` is the cloud tier's connect timeout
/// setting, read for every new connection.
pub fn build_http_client(connect: &connect::ConnectTimeout) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connector_layer(connect.layer())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("auxot/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A POST to `base_url` followed by `path`. The URL is parsed once per thread and cloned
/// after: parsing it (IDNA host checks included) took ~1.5 % of a proxied request's CPU, and
/// a router sends to a handful of URLs. A URL that does not parse goes to reqwest as text,
/// which reports the error where the request is sent.
pub(crate) fn post_to(http: &reqwest::Client, base_url: &str, path: &str) -> reqwest::RequestBuilder {
    /// Past this many URLs (providers edited many times), the cache starts over.
    const MAX_CACHED: usize = 256;
    thread_local! {
        static PARSED: std::cell::RefCell<std::collections::HashMap<String, Vec<(String, reqwest::Url)>>> =
            Default::default();
    }
    let parsed = PARSED.with_borrow_mut(|bases| {
        if let Some(url) = bases
            .get(base_url)
            .and_then(|paths| paths.iter().find(|(p, _)| p == path))
        {
            return Some(url.1.clone());
        }
        let url = reqwest::Url::parse(&format!("{base_url}{path}")).ok()?;
        if bases.values().map(Vec::len).sum::<usize>() >= MAX_CACHED {
            bases.clear();
        }
        bases
            .entry(base_url.to_string())
            .or_default()
            .push((path.to_string(), url.clone()));
        Some(url)
    });
    match parsed {
        Some(url) => http.post(url),
        None => http.post(format!("{base_url}{path}")),
    }
}

pub(crate) fn sensitive_header(value: &str) -> Result<reqwest::header::HeaderValue, ProviderError> {
    let mut header = reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| ProviderError::BadResponse("the stored key is not a valid header value".into()))?;
    header.set_sensitive(true);
    Ok(header)
}

pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderError> {
    match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => Err(ProviderError::Timeout(timeout)),
        Ok(Err(e)) if e.is_timeout() => Err(ProviderError::Timeout(timeout)),
        Ok(Err(e)) => Err(ProviderError::Unreachable(describe_reqwest_error(e))),
        Ok(Ok(response)) => Ok(response),
    }
}

/// reqwest's error chain without the URL's query (none is ever sent) — enough to act on.
pub(crate) fn describe_reqwest_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn content_type(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Splits a response into a streaming reply (2xx) or a bounded, scrubbed failure.
pub(crate) async fn into_outcome(response: reqwest::Response, key: Option<&Secret>) -> ChatOutcome {
    let status = response.status().as_u16();
    let content_type = content_type(&response);
    if response.status().is_success() {
        let body = response
            .bytes_stream()
            .map_err(|e| ProviderError::Stream(describe_reqwest_error(e)))
            .boxed();
        return ChatOutcome::Reply(UpstreamReply {
            status,
            content_type,
            body,
        });
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_bounded(response).await;
    ChatOutcome::Failed(UpstreamFailure {
        status,
        content_type,
        body: scrub(body, key),
        retry_after,
    })
}

async fn read_bounded(response: reqwest::Response) -> Bytes {
    crate::bounded::read_prefix(response.bytes_stream(), MAX_ERROR_BODY).await
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
    http: &reqwest::Client,
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
    fn post_to_parses_each_url_once_and_lets_reqwest_report_a_bad_one() {
        let http = reqwest::Client::new();
        for _ in 0..2 {
            let request = post_to(&http, "http://127.0.0.1:9/v1", "/chat/completions")
                .build()
                .unwrap();
            assert_eq!(request.url().as_str(), "http://127.0.0.1:9/v1/chat/completions");
            assert_eq!(request.method(), reqwest::Method::POST);
        }
        let other = post_to(&http, "http://127.0.0.1:9/v1", "/embeddings").build().unwrap();
        assert_eq!(other.url().as_str(), "http://127.0.0.1:9/v1/embeddings");
        assert!(post_to(&http, "not a url", "/chat/completions").build().is_err());
    }

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

//! OpenAI and OpenAI-compatible servers. `base_url` includes `/v1`, as in the OpenAI SDK.

use super::client::{endpoint, with_body};
use super::{into_outcome, listing_error, sensitive_header, CachedModel, ChatOutcome, HttpClient, ProviderError};
use crate::crypto::Secret;
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use std::time::Duration;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A request to `path` under `base_url`, with the key as a bearer token when there is one.
fn request(
    method: Method,
    base_url: &str,
    path: &str,
    key: Option<&Secret>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, ProviderError> {
    let post = method == Method::POST;
    let mut request = Request::builder().method(method).uri(endpoint(base_url, path)?);
    if let Some(key) = key {
        request = request.header(
            header::AUTHORIZATION,
            sensitive_header(&format!("Bearer {}", key.expose()))?,
        );
    }
    if post {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    with_body(request, body)
}

pub async fn list_models(
    http: &HttpClient,
    base_url: &str,
    key: Option<&Secret>,
    timeout: Duration,
) -> Result<Vec<CachedModel>, ProviderError> {
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
        #[serde(default)]
        created: Option<i64>,
    }
    let response = http
        .send(request(Method::GET, base_url, "/models", key, Bytes::new())?, timeout)
        .await?;
    match into_outcome(response, key).await {
        ChatOutcome::Failed(failure) => Err(listing_error(failure)),
        ChatOutcome::Reply(reply) => {
            let body = super::registry::collect(reply.body).await?;
            let list: List = serde_json::from_slice(&body)
                .map_err(|e| ProviderError::BadResponse(format!("model list is not OpenAI's list shape: {e}")))?;
            Ok(list
                .data
                .into_iter()
                .map(|m| CachedModel {
                    id: m.id,
                    display_name: None,
                    created: m.created,
                })
                .collect())
        }
    }
}

/// Sends a chat completion request body as it is and returns before reading the body.
pub async fn chat(
    http: &HttpClient,
    base_url: &str,
    key: Option<&Secret>,
    body: Bytes,
    timeout: Duration,
) -> Result<ChatOutcome, ProviderError> {
    post(http, base_url, key, "/chat/completions", body, timeout).await
}

/// Sends a body as it is to an endpoint under `base_url` (`/embeddings`, `/responses`) and
/// returns before reading the body.
pub async fn post(
    http: &HttpClient,
    base_url: &str,
    key: Option<&Secret>,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<ChatOutcome, ProviderError> {
    let response = http
        .send(request(Method::POST, base_url, path, key, body)?, timeout)
        .await?;
    Ok(into_outcome(response, key).await)
}

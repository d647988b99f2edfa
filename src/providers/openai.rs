//! OpenAI and OpenAI-compatible servers. `base_url` includes `/v1`, as in the OpenAI SDK.

use super::{into_outcome, listing_error, send, sensitive_header, CachedModel, ChatOutcome, ProviderError};
use crate::crypto::Secret;
use bytes::Bytes;
use std::time::Duration;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

fn authorized(
    request: reqwest::RequestBuilder,
    key: Option<&Secret>,
) -> Result<reqwest::RequestBuilder, ProviderError> {
    Ok(match key {
        Some(key) => request.header(
            reqwest::header::AUTHORIZATION,
            sensitive_header(&format!("Bearer {}", key.expose()))?,
        ),
        None => request,
    })
}

pub async fn list_models(
    http: &reqwest::Client,
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
    let request = authorized(http.get(format!("{base_url}/models")), key)?;
    let response = send(request, timeout).await?;
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
    http: &reqwest::Client,
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
    http: &reqwest::Client,
    base_url: &str,
    key: Option<&Secret>,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<ChatOutcome, ProviderError> {
    let request = authorized(super::post_to(http, base_url, path), key)?
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let response = send(request, timeout).await?;
    Ok(into_outcome(response, key).await)
}

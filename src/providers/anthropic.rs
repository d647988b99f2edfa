//! Anthropic. `base_url` excludes `/v1`, as in the Anthropic SDK.

use super::client::{endpoint, with_body};
use super::{into_outcome, listing_error, sensitive_header, CachedModel, ChatOutcome, HttpClient, ProviderError};
use crate::crypto::Secret;
use bytes::Bytes;
use http::{header, Method, Request};
use std::time::Duration;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const API_VERSION: &str = "2023-06-01";
/// Guards against a server that always says `has_more`.
const MAX_PAGES: usize = 50;

pub async fn list_models(
    http: &HttpClient,
    base_url: &str,
    key: Option<&Secret>,
    timeout: Duration,
) -> Result<Vec<CachedModel>, ProviderError> {
    #[derive(serde::Deserialize)]
    struct Page {
        data: Vec<Entry>,
        #[serde(default)]
        has_more: bool,
        #[serde(default)]
        last_id: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
        #[serde(default)]
        display_name: Option<String>,
        #[serde(default)]
        created_at: Option<String>,
    }
    let key = key.ok_or_else(|| ProviderError::KeyRejected {
        status: 401,
        message: "an Anthropic provider needs an API key".into(),
    })?;
    let mut models = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let query = {
            let mut query = url::form_urlencoded::Serializer::new(String::from("/v1/models?"));
            query.append_pair("limit", "1000");
            if let Some(after_id) = &after {
                query.append_pair("after_id", after_id);
            }
            query.finish()
        };
        let request = with_body(
            Request::get(endpoint(base_url, &query)?)
                .header("x-api-key", sensitive_header(key.expose())?)
                .header("anthropic-version", API_VERSION),
            Bytes::new(),
        )?;
        let response = http.send(request, timeout).await?;
        let page: Page = match into_outcome(response, Some(key)).await {
            ChatOutcome::Failed(failure) => return Err(listing_error(failure)),
            ChatOutcome::Reply(reply) => {
                let body = super::registry::collect(reply.body).await?;
                serde_json::from_slice(&body)
                    .map_err(|e| ProviderError::BadResponse(format!("model list is not Anthropic's list shape: {e}")))?
            }
        };
        models.extend(page.data.into_iter().map(|m| {
            CachedModel {
                id: m.id,
                display_name: m.display_name,
                created: m
                    .created_at
                    .and_then(|t| time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok())
                    .map(|t| t.unix_timestamp()),
            }
        }));
        match (page.has_more, page.last_id) {
            (true, Some(last)) => after = Some(last),
            _ => break,
        }
    }
    Ok(models)
}

/// Headers an Anthropic client sent that the upstream must see as they are.
#[derive(Debug, Clone, Default)]
pub struct ClientHeaders {
    /// Defaults to `API_VERSION` when the client is not an Anthropic client.
    pub version: Option<String>,
    /// Feature flags (`anthropic-beta`), passed through whatever their value.
    pub beta: Option<String>,
    /// The client's query string (Claude Code sends `beta=true`), without the `?`.
    pub query: Option<String>,
    /// `user-agent` and `x-app`: Anthropic tells clients apart by them.
    pub user_agent: Option<String>,
    pub x_app: Option<String>,
}

impl ClientHeaders {
    fn apply(&self, mut request: http::request::Builder) -> http::request::Builder {
        request = request.header("anthropic-version", self.version.as_deref().unwrap_or(API_VERSION));
        if let Some(beta) = &self.beta {
            request = request.header("anthropic-beta", beta);
        }
        if let Some(agent) = &self.user_agent {
            request = request.header(header::USER_AGENT, agent);
        }
        if let Some(app) = &self.x_app {
            request = request.header("x-app", app);
        }
        request
    }

    /// A POST to `path` under `base_url`, with the client's query string.
    fn post(&self, base_url: &str, path: &str) -> Result<http::request::Builder, ProviderError> {
        let uri = match self.query.as_deref().filter(|q| !q.is_empty()) {
            Some(query) => endpoint(base_url, &format!("{path}?{query}"))?,
            None => endpoint(base_url, path)?,
        };
        Ok(Request::builder().method(Method::POST).uri(uri))
    }
}

/// Sends a Messages request body as it is and returns before reading the body.
pub async fn chat(
    http: &HttpClient,
    base_url: &str,
    key: Option<&Secret>,
    body: Bytes,
    headers: &ClientHeaders,
    timeout: Duration,
) -> Result<ChatOutcome, ProviderError> {
    post(http, base_url, "/v1/messages", key, body, headers, timeout).await
}

/// Sends a `count_tokens` body as it is; Anthropic's count is exact where auxot's is an
/// estimate.
pub async fn count_tokens(
    http: &HttpClient,
    base_url: &str,
    key: Option<&Secret>,
    body: Bytes,
    headers: &ClientHeaders,
    timeout: Duration,
) -> Result<ChatOutcome, ProviderError> {
    post(http, base_url, "/v1/messages/count_tokens", key, body, headers, timeout).await
}

/// One authenticated POST of a body as it is, with the client's forwarded headers.
async fn post(
    http: &HttpClient,
    base_url: &str,
    path: &str,
    key: Option<&Secret>,
    body: Bytes,
    headers: &ClientHeaders,
    timeout: Duration,
) -> Result<ChatOutcome, ProviderError> {
    let key = key.ok_or_else(|| ProviderError::KeyRejected {
        status: 401,
        message: "an Anthropic provider needs an API key".into(),
    })?;
    let request = with_body(
        headers
            .apply(headers.post(base_url, path)?)
            .header("x-api-key", sensitive_header(key.expose())?)
            .header(header::CONTENT_TYPE, "application/json"),
        body,
    )?;
    let response = http.send(request, timeout).await?;
    Ok(into_outcome(response, Some(key)).await)
}

//! The model server a GPU worker sits beside, as its jobs ask it: each request carries the
//! worker's key, an answer with an error status becomes the job's outcome (throttled when
//! the server says when to retry), and the key is kept out of anything the router sees.

use crate::crypto::Secret;
use crate::workers::client::JobOutcome;

/// Error bodies are read up to this size; success bodies stream.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub struct ModelServer<'a> {
    pub http: &'a reqwest::Client,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8000/v1`.
    pub base: &'a str,
    pub key: Option<&'a Secret>,
}

impl ModelServer<'_> {
    /// `request` with the worker's key, if it has one.
    pub(super) fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.key {
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    }

    /// A JSON `POST {base}/{path}`.
    pub(super) fn post(&self, path: &str, body: String) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(format!("{}/{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.authorize(request)
    }

    /// Sends a job's request; an unreachable server or an error status is the job's outcome.
    pub(super) async fn answer(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, JobOutcome> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let detail = crate::providers::describe_reqwest_error(e);
                return Err(JobOutcome::failed(
                    format!("cannot reach the model server: {detail}"),
                    None,
                ));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_error_body(response).await;
        let message = self.scrub(crate::providers::error_message(&body));
        Err(match retry_after {
            Some(retry_after) => JobOutcome::Throttled {
                message,
                status: Some(status.as_u16()),
                retry_after: Some(retry_after),
                limited_until: None,
            },
            None => JobOutcome::failed(message, Some(status.as_u16())),
        })
    }

    /// Keeps the upstream key out of anything the router (and so a client) may see.
    pub(super) fn scrub(&self, text: String) -> String {
        match self.key.map(Secret::expose).filter(|k| k.len() >= 4) {
            Some(key) if text.contains(key) => text.replace(key, "[redacted]"),
            _ => text,
        }
    }
}

/// An answer's body as far as an error body is read.
pub(super) async fn read_error_body(response: reqwest::Response) -> bytes::Bytes {
    crate::bounded::read_prefix(response.bytes_stream(), MAX_ERROR_BODY).await
}

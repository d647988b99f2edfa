//! The OpenAI-format client API: `POST /v1/chat/completions`, `GET /v1/models`, and their
//! Auxot-compatible aliases under `/api/openai/`.

use super::error::{json_response, ApiError, Dialect};
use super::request::{api_key, header, parse_json, read_body};
use crate::dispatch::{ChatRequest, DispatchError, Routed};
use crate::providers::ProviderError;
use crate::AppState;
use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use std::time::Instant;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::Filter;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    let chat_path = warp::path!("v1" / "chat" / "completions")
        .or(warp::path!("api" / "openai" / "chat" / "completions"))
        .unify()
        .or(warp::path!("api" / "openai" / "v1" / "chat" / "completions"))
        .unify();
    let chat = chat_path
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(chat_completions);
    let models_path = warp::path!("v1" / "models")
        .or(warp::path!("api" / "openai" / "models"))
        .unify()
        .or(warp::path!("api" / "openai" / "v1" / "models"))
        .unify();
    let models = models_path
        .and(warp::get())
        .and(with_state)
        .and(warp::header::headers_cloned())
        .map(list_models);
    chat.or(models).unify().boxed()
}

/// What routing needs from a chat request; the rest of the body stays untouched.
#[derive(Deserialize)]
struct ChatPeek {
    model: String,
    messages: Vec<MessagePeek>,
    /// Read only to refuse a non-boolean early, with the field named.
    #[serde(default)]
    #[allow(dead_code)]
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct MessagePeek {
    #[allow(dead_code)] // read only to check that every message has a role
    role: String,
}

async fn chat_completions<S, B>(state: AppState, headers: HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    let started = Instant::now();
    match route_chat(&state, &headers, body).await {
        Ok((model, routed)) => {
            tracing::info!(model = %model, tier = routed.tier.as_str(), route = %routed.route, status = routed.reply.status,
                ms_to_headers = started.elapsed().as_millis() as u64, "chat completion");
            stream_reply(routed)
        }
        Err(e) => e.into_response(Dialect::OpenAi),
    }
}

async fn route_chat<S, B>(state: &AppState, headers: &HeaderMap, body: S) -> Result<(String, Routed), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    state.auth.authorize_client(api_key(headers))?;
    let body = read_body(headers, body, state.config.body_limit).await?;
    let peek: ChatPeek = parse_json(&body)?;
    if peek.model.trim().is_empty() {
        return Err(ApiError::bad_request("model must not be empty"));
    }
    if peek.messages.is_empty() {
        return Err(ApiError::bad_request("messages must hold at least one message"));
    }
    let request = ChatRequest {
        body,
        model: peek.model.clone(),
        provider: header(headers, "x-auxot-provider").map(str::to_string),
    };
    match state.dispatcher.chat(request).await {
        Ok(routed) => Ok((peek.model, routed)),
        Err(DispatchError::Upstream { route, failure, .. }) => Err(ApiError::new(
            failure.status,
            "upstream_error",
            format!("provider '{route}' answered {}: {}", failure.status, failure.message()),
        )
        .with_retry_after(failure.retry_after.clone())),
        Err(e) => Err(e.into()),
    }
}

/// Forwards the upstream body chunk by chunk. A stream that breaks after its first byte
/// cannot be retried: an SSE stream ends with an error event the SDKs understand.
fn stream_reply(routed: Routed) -> Response {
    let content_type = routed.reply.content_type.unwrap_or_else(|| "application/json".into());
    let is_sse = content_type.starts_with("text/event-stream");
    let route = routed.route.clone();
    let body = routed.reply.body.scan(false, move |ended, item| {
        let next = match (*ended, item) {
            (true, _) => None,
            (false, Ok(bytes)) => Some(Ok::<Bytes, ProviderError>(bytes)),
            (false, Err(e)) => {
                *ended = true;
                tracing::warn!(route = %route, error = %e, "upstream stream broke after the first byte");
                if is_sse {
                    let event = json!({"error": {"message": format!("upstream '{route}' failed mid-stream: {e}"), "type": "api_error", "code": "upstream_stream_error", "param": null}});
                    Some(Ok(Bytes::from(format!("data: {event}\n\n"))))
                } else {
                    Some(Err(e))
                }
            }
        };
        futures_util::future::ready(next)
    });
    let mut response = Response::new(warp::hyper::Body::wrap_stream(body));
    *response.status_mut() =
        warp::http::StatusCode::from_u16(routed.reply.status).unwrap_or(warp::http::StatusCode::OK);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(warp::http::header::CONTENT_TYPE, value);
    }
    if is_sse {
        headers.insert(warp::http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    headers.insert("x-auxot-tier", HeaderValue::from_static(routed.tier.as_str()));
    if let Ok(value) = HeaderValue::from_str(&routed.route) {
        headers.insert("x-auxot-route", value);
    }
    response
}

fn list_models(state: AppState, headers: HeaderMap) -> Response {
    if let Err(e) = state.auth.authorize_client(api_key(&headers)) {
        return ApiError::from(e).into_response(Dialect::OpenAi);
    }
    let table = state.providers.routing();
    let mut data = Vec::new();
    for (model, providers) in table.models() {
        if let Some(first) = providers.first() {
            data.push(json!({"id": model, "object": "model", "created": 0, "owned_by": first.name}));
        }
    }
    for (model, providers) in table.models() {
        for provider in providers {
            data.push(json!({"id": format!("{}/{model}", provider.name), "object": "model", "created": 0, "owned_by": provider.name}));
        }
    }
    json_response(200, &json!({"object": "list", "data": data}))
}

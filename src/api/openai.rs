//! The OpenAI-format client API: `POST /v1/chat/completions`, `GET /v1/models`, and their
//! Auxot-compatible aliases under `/api/openai/`.

use super::error::{bytes_response, json_response, ApiError, Dialect};
use super::relay;
use super::request::{api_key, header, parse_json, read_body};
use crate::dispatch::rules::validate_queue_timeout;
use crate::dispatch::{ChatRequest, Routed, RoutedReply, Tier};
use crate::providers::anthropic::ClientHeaders;
use crate::providers::UpstreamReply;
use crate::translate::anthropic::anthropic_to_openai_response;
use crate::translate::chunks::{is_usage_only, sse_event, SSE_DONE};
use crate::translate::Format;
use crate::workers::registry::{JobEvent, WorkerJob};
use crate::AppState;
use bytes::{Buf, Bytes};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
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
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
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
        Ok((model, include_usage, routed)) => {
            tracing::info!(model = %model, tier = routed.tier.as_str(), route = %routed.route,
                ms_to_first_byte = started.elapsed().as_millis() as u64, "chat completion");
            reply(routed, &model, include_usage).await
        }
        Err(e) => e.into_response(Dialect::OpenAi),
    }
}

/// Returns the model asked for, whether the client wants usage in its stream, and the route.
async fn route_chat<S, B>(state: &AppState, headers: &HeaderMap, body: S) -> Result<(String, bool, Routed), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    state.auth.authorize_client(api_key(headers))?;
    let overrides = RouteHeaders::read(headers)?;
    let body = read_body(headers, body, state.config.body_limit).await?;
    let peek: ChatPeek = parse_json(&body)?;
    if peek.model.trim().is_empty() {
        return Err(ApiError::bad_request("model must not be empty"));
    }
    if peek.messages.is_empty() {
        return Err(ApiError::bad_request("messages must hold at least one message"));
    }
    let include_usage = peek
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let request = ChatRequest {
        body,
        format: Format::OpenAi,
        anthropic: ClientHeaders::default(),
        model: peek.model.clone(),
        stream: peek.stream.unwrap_or(false),
        provider: overrides.provider,
        tiers: overrides.tiers,
        wait: overrides.wait,
    };
    let routed = state.dispatcher.chat(request).await?;
    Ok((peek.model, include_usage, routed))
}

/// The `X-Auxot-*` request overrides.
pub struct RouteHeaders {
    pub provider: Option<String>,
    pub tiers: Option<Vec<Tier>>,
    pub wait: Option<Duration>,
}

impl RouteHeaders {
    pub fn read(headers: &HeaderMap) -> Result<RouteHeaders, ApiError> {
        let tiers = match header(headers, "x-auxot-tier") {
            Some(value) => {
                let names: Vec<&str> = value.split(',').collect();
                Some(Tier::parse_order(&names).map_err(|e| ApiError::bad_request(format!("X-Auxot-Tier: {e}")))?)
            }
            None => None,
        };
        let wait = match header(headers, "x-auxot-wait-ms") {
            Some(value) => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| ApiError::bad_request("X-Auxot-Wait-Ms must be a whole number of milliseconds"))?;
                validate_queue_timeout(ms).map_err(|e| ApiError::bad_request(format!("X-Auxot-Wait-Ms: {e}")))?;
                Some(Duration::from_millis(ms))
            }
            None => None,
        };
        Ok(RouteHeaders {
            provider: header(headers, "x-auxot-provider").map(str::to_string),
            tiers,
            wait,
        })
    }
}

async fn reply(routed: Routed, model: &str, include_usage: bool) -> Response {
    let tier = routed.tier;
    let route = routed.route;
    let mut response = match routed.reply {
        RoutedReply::Upstream {
            reply,
            format: Format::OpenAi,
        } => relay::upstream_reply(reply, &route, openai_stream_error),
        RoutedReply::Upstream {
            reply,
            format: Format::Anthropic,
        } => from_anthropic(reply, model, include_usage).await,
        RoutedReply::WorkerStream { first, job } => worker_stream(first, job, &route, include_usage),
        RoutedReply::Complete(body) => bytes_response(200, "application/json", body),
    };
    relay::route_headers(&mut response, tier, &route);
    response
}

/// An Anthropic provider's answer for an OpenAI client.
async fn from_anthropic(reply: UpstreamReply, model: &str, include_usage: bool) -> Response {
    let is_sse = reply
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if is_sse {
        let mut response = Response::new(warp::hyper::Body::wrap_stream(relay::anthropic_sse_as_openai(
            reply.body,
            model,
            include_usage,
        )));
        relay::sse_headers(&mut response);
        return response;
    }
    let translated = match relay::collect(reply.body).await {
        Ok(body) => anthropic_to_openai_response(&body, model).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match translated {
        Ok(value) => json_response(200, &value),
        Err(e) => ApiError::new(
            502,
            "upstream_error",
            format!("cannot translate the upstream's answer: {e}"),
        )
        .into_response(Dialect::OpenAi),
    }
}

pub(super) fn openai_stream_error(route: &str, why: &str) -> Bytes {
    let event = json!({"error": {"message": format!("'{route}' failed mid-stream: {why}"), "type": "api_error", "code": "upstream_stream_error", "param": null}});
    sse_event(&event.to_string())
}

/// A worker's chunks as SSE, as they arrive. The stream owns the job: a client that goes
/// away drops it, which cancels the job on the worker and frees its slot.
/// Workers always report usage; a client that did not ask for it (`stream_options.
/// include_usage`) does not get the usage-only chunk.
fn worker_stream(first: Option<Box<RawValue>>, job: WorkerJob, route: &str, include_usage: bool) -> Response {
    enum Step {
        First(Option<Box<RawValue>>, WorkerJob),
        Next(WorkerJob),
        End,
    }
    let route = route.to_string();
    let body = futures_util::stream::unfold(Step::First(first, job), move |step| {
        let route = route.clone();
        async move {
            let mut job = match step {
                Step::First(Some(chunk), job) if include_usage || !is_usage_only(&chunk) => {
                    return Some((Ok::<Bytes, Infallible>(sse_event(chunk.get())), Step::Next(job)))
                }
                Step::First(_, job) | Step::Next(job) => job,
                Step::End => return None,
            };
            let mut event = job.next_event().await;
            while let JobEvent::Chunk(chunk) = &event {
                if include_usage || !is_usage_only(chunk) {
                    break;
                }
                event = job.next_event().await;
            }
            match event {
                JobEvent::Chunk(chunk) => Some((Ok(sse_event(chunk.get())), Step::Next(job))),
                JobEvent::Done(_) => Some((Ok(Bytes::from_static(SSE_DONE)), Step::End)),
                JobEvent::Failed { message, .. } => Some((Ok(openai_stream_error(&route, &message)), Step::End)),
                JobEvent::Disconnected => Some((Ok(openai_stream_error(&route, "the worker disconnected")), Step::End)),
            }
        }
    });
    let mut response = Response::new(warp::hyper::Body::wrap_stream(body));
    relay::sse_headers(&mut response);
    response
}

fn list_models(state: AppState, headers: HeaderMap) -> Response {
    // The Anthropic SDKs call the same path; they say who they are with this header.
    if headers.contains_key("anthropic-version") {
        return super::anthropic::list_models(&state, &headers);
    }
    if let Err(e) = state.auth.authorize_client(api_key(&headers)) {
        return ApiError::from(e).into_response(Dialect::OpenAi);
    }
    let data: Vec<serde_json::Value> = state
        .dispatcher
        .routable_models()
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    json_response(200, &json!({"object": "list", "data": data}))
}

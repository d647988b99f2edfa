//! The OpenAI-format client API: `POST /v1/chat/completions`, `GET /v1/models`, and their
//! Auxot-compatible aliases under `/api/openai/`.

use super::error::{ApiError, Dialect};
use super::relay;
use super::request::{parse_json, require_model_and_messages, RolePeek};
use crate::dispatch::{ChatRequest, Routed, RoutedReply};
use crate::providers::anthropic::ClientHeaders;
use crate::providers::UpstreamReply;
use crate::translate::anthropic::anthropic_to_openai_response;
use crate::translate::chunks::{is_usage_only, sse_event, SSE_DONE};
use crate::translate::Format;
use crate::usage::{Meter, MeterStart, RouteInfo};
use crate::workers::registry::{JobEvent, WorkerJob};
use crate::AppState;
use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use relay::Outgoing;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::convert::Infallible;
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
    // The legacy text-completions API is not served: say where to go instead of a bare 404.
    let legacy = warp::path!("v1" / "completions")
        .or(warp::path!("api" / "openai" / "v1" / "completions"))
        .unify()
        .map(|| {
            ApiError::new(
                404,
                "not_found",
                "the legacy completions API is not served by auxot; use POST /v1/chat/completions (or /v1/responses)",
            )
            .into_response(Dialect::OpenAi)
        });
    chat.or(legacy).unify().boxed()
}

/// What routing needs from a chat request; the rest of the body stays untouched.
#[derive(Deserialize)]
struct ChatPeek {
    model: String,
    messages: Vec<RolePeek>,
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

async fn chat_completions<S, B>(state: AppState, headers: HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    // Every request leaves one usage row, refused ones included.
    let mut meter = state.usage.meter(MeterStart::default());
    match route_chat(&state, &headers, body, &mut meter).await {
        Ok((model, include_usage, routed)) => reply(routed, &model, include_usage, meter).await,
        Err(e) => {
            meter.failed(e.code, e.status);
            e.into_response(Dialect::OpenAi)
        }
    }
}

/// Returns the model asked for, whether the client wants usage in its stream, and the route.
async fn route_chat<S, B>(
    state: &AppState,
    headers: &HeaderMap,
    body: S,
    meter: &mut Meter,
) -> Result<(String, bool, Routed), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let (overrides, body) = relay::admit(state, headers, body, meter).await?;
    let peek: ChatPeek = parse_json(&body)?;
    meter.set_request(&peek.model, peek.stream.unwrap_or(false), body.len());
    require_model_and_messages(&peek.model, peek.messages.len())?;
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
        include_usage,
        provider: overrides.provider,
        tiers: overrides.tiers,
        wait: overrides.wait,
        responses: None,
    };
    let routed = relay::dispatch(state, request, meter).await?;
    Ok((peek.model, include_usage, routed))
}

/// A routed reply as Chat Completions, whatever dialect the target answered in.
pub(super) async fn chat_outgoing(
    reply: RoutedReply,
    route: &str,
    model: &str,
    meter: &mut Meter,
) -> Result<Outgoing, ApiError> {
    match reply {
        RoutedReply::Upstream {
            reply,
            format: Format::OpenAi,
        } => Ok(relay::upstream_body(reply, route, Format::OpenAi, openai_stream_error)),
        RoutedReply::Upstream {
            reply,
            format: Format::Anthropic,
        } => from_anthropic(relay::watched(meter, reply, Format::Anthropic), model).await,
        RoutedReply::WorkerStream { held, job } => Ok(worker_stream(held, job, route)),
        RoutedReply::Complete(body) => Ok(Outgoing::json(200, body)),
        // Only a Responses request (`responses` set) is answered in that dialect, and
        // `api/responses.rs` forwards it before asking for Chat Completions.
        RoutedReply::Responses(_) => Err(ApiError::new(
            500,
            "internal_error",
            "a Responses answer cannot be read as Chat Completions",
        )),
    }
}

async fn reply(routed: Routed, model: &str, include_usage: bool, mut meter: Meter) -> Response {
    let out = chat_outgoing(routed.reply, &routed.route, model, &mut meter).await;
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            meter.failed(e.code, e.status);
            return e.into_response(Dialect::OpenAi);
        }
    };
    meter.routed(RouteInfo {
        tier: routed.tier.as_str(),
        route: &routed.route,
        target_model: &routed.model,
        cloud_model: routed.cloud_model.as_deref(),
        overflow: routed.overflow,
        client_format: Format::OpenAi,
        sse: out.is_sse(),
    });
    relay::respond(out, meter, !include_usage, routed.tier, &routed.route)
}

/// An Anthropic provider's answer for an OpenAI client. Usage chunks are always produced
/// (the meter reads them); `respond` drops them for clients that did not ask.
async fn from_anthropic(reply: UpstreamReply, model: &str) -> Result<Outgoing, ApiError> {
    let is_sse = reply
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if is_sse {
        return Ok(Outgoing::sse(relay::anthropic_sse_as_openai(reply.body, model, true)));
    }
    let body = relay::collect(reply.body)
        .await
        .map_err(|e| ApiError::new(502, "upstream_error", format!("cannot read the upstream's answer: {e}")))?;
    let value = anthropic_to_openai_response(&body, model).map_err(|e| {
        ApiError::new(
            502,
            "upstream_error",
            format!("cannot translate the upstream's answer: {e}"),
        )
    })?;
    Ok(Outgoing::json(200, Bytes::from(value.to_string())))
}

pub(super) fn openai_stream_error(route: &str, why: &str) -> Bytes {
    let event = json!({"error": {"message": format!("'{route}' failed mid-stream: {why}"), "type": "api_error", "code": "upstream_stream_error", "param": null}});
    sse_event(&event.to_string())
}

/// A worker's chunks as SSE, as they arrive. The stream owns the job: a client that goes
/// away drops it, which cancels the job on the worker and frees its slot. Usage from a
/// `done` (CLI workers) becomes a last usage-only chunk, as OpenAI streams carry it.
fn worker_stream(held: Vec<Box<RawValue>>, job: WorkerJob, route: &str) -> Outgoing {
    struct State {
        held: std::vec::IntoIter<Box<RawValue>>,
        job: WorkerJob,
        saw_usage: bool,
        /// `[DONE]` (or an error) went out: nothing more.
        ended: bool,
        pending_done: bool,
    }
    let route = route.to_string();
    let state = State {
        held: held.into_iter(),
        job,
        saw_usage: false,
        ended: false,
        pending_done: false,
    };
    let body = futures_util::stream::unfold(state, move |mut state| {
        let route = route.clone();
        async move {
            if state.ended {
                return None;
            }
            if state.pending_done {
                state.ended = true;
                return Some((Ok::<Bytes, Infallible>(Bytes::from_static(SSE_DONE)), state));
            }
            if let Some(chunk) = state.held.next() {
                state.saw_usage |= is_usage_only(&chunk);
                return Some((Ok(sse_event(chunk.get())), state));
            }
            let out = match state.job.next_event().await {
                JobEvent::Chunk(chunk) => {
                    state.saw_usage |= is_usage_only(&chunk);
                    sse_event(chunk.get())
                }
                JobEvent::Done(Some(usage)) if !state.saw_usage => {
                    state.pending_done = true;
                    let chunk = json!({"object": "chat.completion.chunk", "choices": [], "usage": usage});
                    sse_event(&chunk.to_string())
                }
                JobEvent::Done(_) => {
                    state.ended = true;
                    Bytes::from_static(SSE_DONE)
                }
                JobEvent::Failed { message, .. } => {
                    state.ended = true;
                    openai_stream_error(&route, &message)
                }
                JobEvent::Disconnected | JobEvent::Refused => {
                    state.ended = true;
                    openai_stream_error(&route, "the worker disconnected")
                }
            };
            Some((Ok(out), state))
        }
    });
    Outgoing::sse(body.boxed())
}

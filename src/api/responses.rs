//! The OpenAI Responses API: `POST /v1/responses` and `/api/openai/v1/responses`.
//!
//! The request is translated to Chat Completions at the edge and dispatched like any chat
//! request, so it runs on every tier; the chat answer (streamed or whole, metered as it
//! passes) is translated back into a `response` object or the Responses event sequence.

use super::error::{ApiError, Dialect};
use super::openai::chat_outgoing;
use super::relay;
use super::request::header;
use crate::dispatch::ChatRequest;
use crate::providers::anthropic::ClientHeaders;
use crate::translate::anthropic::SseParser;
use crate::translate::responses::{
    chat_to_response, responses_to_chat_request, ChatToResponsesStream, ResponseContext,
};
use crate::translate::Format;
use crate::usage::{MeterStart, RouteInfo};
use crate::AppState;
use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use std::collections::VecDeque;
use std::convert::Infallible;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::Filter;

/// A whole (non-streamed) chat answer bigger than this is refused rather than held.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    warp::path!("v1" / "responses")
        .or(warp::path!("api" / "openai" / "v1" / "responses"))
        .unify()
        .or(warp::path!("api" / "openai" / "responses"))
        .unify()
        .and(warp::post())
        .and(with_state)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(create_response)
        .boxed()
}

async fn create_response<S, B>(state: AppState, headers: HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    let mut meter = state.usage.meter(MeterStart::default());
    let routed = async {
        // Codex names its conversation in `session_id` (older builds: `conversation_id`).
        if let Some(session) = header(&headers, "session_id").or_else(|| header(&headers, "conversation_id")) {
            meter.set_session(Some(session));
        }
        let (overrides, body) = relay::admit(&state, &headers, body, &mut meter).await?;
        let (chat, context) = responses_to_chat_request(&body).map_err(|e| {
            let mut error = ApiError::bad_request(e.to_string());
            error.code = "invalid_request";
            error
        })?;
        let stream = chat["stream"] == serde_json::json!(true);
        meter.set_request(&context.model, stream, body.len());
        let chat = serde_json::to_vec(&chat)
            .map_err(|e| ApiError::new(500, "internal_error", format!("cannot encode the chat request: {e}")))?;
        let request = ChatRequest {
            body: Bytes::from(chat),
            format: Format::OpenAi,
            anthropic: ClientHeaders {
                user_agent: header(&headers, "user-agent").map(str::to_string),
                ..ClientHeaders::default()
            },
            model: context.model.clone(),
            stream,
            // The translation reads usage from the chat stream for `response.completed`.
            include_usage: true,
            provider: overrides.provider,
            tiers: overrides.tiers,
            wait: overrides.wait,
        };
        let routed = relay::dispatch(&state, request, &mut meter).await?;
        let out = chat_outgoing(routed.reply, &routed.route, &context.model, &mut meter).await?;
        Ok::<_, ApiError>((
            routed.tier,
            routed.route,
            routed.model,
            routed.cloud_model,
            routed.overflow,
            out,
            context,
        ))
    }
    .await;
    let (tier, route, target_model, cloud_model, overflow, out, context) = match routed {
        Ok(parts) => parts,
        Err(e) => {
            meter.failed(e.code, e.status);
            return e.into_response(Dialect::OpenAi);
        }
    };
    let sse = out.is_sse();
    meter.routed(RouteInfo {
        tier: tier.as_str(),
        route: &route,
        target_model: &target_model,
        cloud_model: cloud_model.as_deref(),
        overflow,
        client_format: Format::OpenAi,
        sse,
    });
    // Metered in the chat dialect as it passes, then translated for the client.
    let chat = relay::respond(out, meter, false, tier, &route);
    let (mut parts, body) = chat.into_parts();
    let body = http_body_util::BodyDataStream::new(body).boxed();
    if sse {
        let events = sse_as_responses(body, context);
        parts.headers.remove(warp::http::header::CONTENT_LENGTH);
        let (_, body) = super::body::streamed(events).into_parts();
        return Response::from_parts(parts, body);
    }
    match whole_answer(body).await.and_then(|bytes| {
        chat_to_response(&bytes, &context).map_err(|e| {
            ApiError::new(
                502,
                "upstream_error",
                format!("cannot translate the upstream's answer: {e}"),
            )
        })
    }) {
        Ok(response) => {
            parts.headers.remove(warp::http::header::CONTENT_LENGTH);
            parts.headers.insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("application/json"),
            );
            Response::from_parts(parts, super::body::full(response.to_string()).into_body())
        }
        Err(e) => e.into_response(Dialect::OpenAi),
    }
}

/// A reply body this process made, read back as a stream of chunks.
type ReplyBody = futures_util::stream::BoxStream<'static, Result<Bytes, warp::Error>>;

async fn whole_answer(mut body: ReplyBody) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(502, "upstream_error", format!("cannot read the upstream's answer: {e}")))?;
        if out.len() + chunk.len() > MAX_ANSWER {
            return Err(ApiError::new(
                502,
                "upstream_error",
                "the upstream's answer is larger than auxot translates",
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Chat SSE (already metered) as Responses events, event by event as it arrives.
fn sse_as_responses(
    body: ReplyBody,
    context: ResponseContext,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    struct State {
        body: ReplyBody,
        parser: SseParser,
        translator: ChatToResponsesStream,
        pending: VecDeque<Bytes>,
        ended: bool,
    }
    let state = State {
        body,
        parser: SseParser::new(),
        translator: ChatToResponsesStream::new(context),
        pending: VecDeque::new(),
        ended: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(bytes) = state.pending.pop_front() {
                return Some((Ok(bytes), state));
            }
            if state.ended {
                return None;
            }
            let events = match state.body.next().await {
                Some(Ok(chunk)) => state.parser.push(&chunk),
                Some(Err(e)) => {
                    state.ended = true;
                    let out = state.translator.fail(&format!("the stream broke: {e}"));
                    state.pending.extend(out);
                    continue;
                }
                None => {
                    state.ended = true;
                    let mut events = state.parser.finish();
                    events.retain(|e| !e.data.trim().is_empty());
                    for event in events {
                        let out = translate_event(&mut state.translator, &event.data);
                        state.pending.extend(out);
                    }
                    let out = state.translator.finish();
                    state.pending.extend(out);
                    continue;
                }
            };
            for event in events {
                let out = translate_event(&mut state.translator, &event.data);
                state.pending.extend(out);
            }
        }
    })
}

fn translate_event(translator: &mut ChatToResponsesStream, data: &str) -> Vec<Bytes> {
    match data.trim() {
        "[DONE]" => translator.finish(),
        "" => Vec::new(),
        chunk => translator.push_chunk(chunk),
    }
}

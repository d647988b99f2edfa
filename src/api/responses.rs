//! The OpenAI Responses API: `POST /v1/responses` and `/api/openai/v1/responses`.
//!
//! The request is read once at the edge into every form a target may take, and dispatched
//! like any chat request, so it runs on every tier: an OpenAI provider gets it as it came
//! (its answer passed through), an Anthropic provider as Messages (its answer translated
//! directly), GPU and CLI workers and chat-only providers as Chat Completions (the chat
//! answer, metered as it passes, translated back into a `response` object or the
//! Responses event sequence).

use super::error::{ApiError, Dialect};
use super::openai::chat_outgoing;
use super::relay::{self, Outgoing};
use super::request::header;
use super::responses_pass;
use crate::dispatch::{ChatRequest, ResponsesForms, RoutedReply};
use crate::providers::anthropic::ClientHeaders;
use crate::providers::UpstreamReply;
use crate::translate::anthropic::{SseEvent, SseParser};
use crate::translate::responses::{
    chat_to_response, messages_to_response, responses_to_chat_request, responses_to_messages_request,
    ChatToResponsesStream, MessagesToResponsesStream, ResponseContext,
};
use crate::translate::Format;
use crate::usage::{MeterStart, RouteInfo};
use crate::AppState;
use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use serde_json::Value;
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

/// What every Responses target needs first: a JSON object with a model, and nothing auxot
/// refuses on every tier (server-side state, background runs).
struct Peek {
    model: String,
    stream: bool,
}

fn peek(body: &[u8]) -> Result<Peek, ApiError> {
    let bad = |message: String| {
        let mut error = ApiError::bad_request(message);
        error.code = "invalid_request";
        error
    };
    let request: serde_json::Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(bad("the request body must be a JSON object".into())),
        Err(e) => return Err(bad(format!("the request body is not valid JSON: {e}"))),
    };
    let model = match request.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        _ => return Err(bad("model: is required and must be a non-empty string".into())),
    };
    if request.get("previous_response_id").is_some_and(|v| !v.is_null()) {
        return Err(bad("previous_response_id: auxot keeps no server-side conversation state: send the whole conversation in `input` (with store: false)".into()));
    }
    if request.get("background") == Some(&Value::Bool(true)) {
        return Err(bad("background: background responses are not supported by auxot".into()));
    }
    if !matches!(
        request.get("input"),
        None | Some(Value::Null | Value::String(_) | Value::Array(_))
    ) {
        return Err(bad("input: must be a string or an array of input items".into()));
    }
    let stream = match request.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(bad("stream: must be a boolean".into())),
    };
    Ok(Peek { model, stream })
}

/// The request in every form a target may take: as sent (OpenAI providers), as Messages
/// (Anthropic providers), as Chat (everything else). A form that cannot be made is refused
/// only by the targets that need it.
fn forms(body: &Bytes, peek: &Peek) -> (Bytes, ResponsesForms, ResponseContext) {
    let chat = responses_to_chat_request(body);
    let messages = responses_to_messages_request(body);
    let context = match (&chat, &messages) {
        (Ok((_, context)), _) | (_, Ok((_, context))) => context.clone(),
        _ => ResponseContext {
            model: peek.model.clone(),
            ..ResponseContext::default()
        },
    };
    let encode = |value: &Value| serde_json::to_vec(value).map(Bytes::from).map_err(|e| e.to_string());
    let (chat_body, chat_refusal) = match chat.map_err(|e| e.to_string()).and_then(|(v, _)| encode(&v)) {
        Ok(bytes) => (bytes, None),
        Err(why) => (Bytes::new(), Some(why)),
    };
    let messages = messages.map_err(|e| e.to_string()).and_then(|(v, _)| encode(&v));
    let forms = ResponsesForms {
        raw: body.clone(),
        messages,
        chat_refusal,
    };
    (chat_body, forms, context)
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
        let peek = peek(&body)?;
        meter.set_request(&peek.model, peek.stream, body.len());
        let (chat, forms, context) = forms(&body, &peek);
        let request = ChatRequest {
            body: chat,
            format: Format::OpenAi,
            anthropic: ClientHeaders {
                user_agent: header(&headers, "user-agent").map(str::to_string),
                ..ClientHeaders::default()
            },
            model: peek.model.clone(),
            stream: peek.stream,
            // The translation reads usage from the chat stream for `response.completed`.
            include_usage: true,
            provider: overrides.provider,
            tiers: overrides.tiers,
            wait: overrides.wait,
            responses: Some(forms),
        };
        let routed = relay::dispatch(&state, request, &mut meter).await?;
        let (out, chat) = match routed.reply {
            RoutedReply::Responses(reply) => (responses_pass::forward(reply, &routed.route), false),
            RoutedReply::Upstream {
                reply,
                format: Format::Anthropic,
            } => {
                let reply = relay::watched(&mut meter, reply, Format::Anthropic);
                (from_messages(reply, context.clone()).await?, false)
            }
            other => (
                chat_outgoing(other, &routed.route, &context.model, &mut meter).await?,
                true,
            ),
        };
        Ok::<_, ApiError>((
            routed.tier,
            routed.route,
            routed.model,
            routed.cloud_model,
            routed.overflow,
            out,
            chat,
            context,
        ))
    }
    .await;
    let (tier, route, target_model, cloud_model, overflow, out, chat, context) = match routed {
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
    if !chat {
        // Already in the Responses dialect: metered as it goes out.
        return relay::respond(out, meter, false, tier, &route);
    }
    // Metered in the chat dialect as it passes, then translated for the client.
    let chat = relay::respond(out, meter, false, tier, &route);
    let (mut parts, body) = chat.into_parts();
    let body = http_body_util::BodyDataStream::new(body).boxed();
    if sse {
        let events = translated(body, ChatEvents(ChatToResponsesStream::new(context)));
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

/// An Anthropic provider's answer to a Responses request, translated directly.
async fn from_messages(reply: UpstreamReply, context: ResponseContext) -> Result<Outgoing, ApiError> {
    let is_sse = reply
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if is_sse {
        let events = translated(reply.body, MessageEvents(MessagesToResponsesStream::new(context)));
        return Ok(Outgoing::sse(events.boxed()));
    }
    let body = relay::collect(reply.body)
        .await
        .map_err(|e| ApiError::new(502, "upstream_error", format!("cannot read the upstream's answer: {e}")))?;
    let response = messages_to_response(&body, &context).map_err(|e| {
        ApiError::new(
            502,
            "upstream_error",
            format!("cannot translate the upstream's answer: {e}"),
        )
    })?;
    Ok(Outgoing::json(200, Bytes::from(response.to_string())))
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

/// One upstream dialect's events as Responses events.
trait ToResponses: Send + 'static {
    fn event(&mut self, event: &SseEvent) -> Vec<Bytes>;
    /// The upstream ended: cleanly (`None`) or broken.
    fn end(&mut self, broken: Option<String>) -> Vec<Bytes>;
}

/// Chat chunks (already metered).
struct ChatEvents(ChatToResponsesStream);

impl ToResponses for ChatEvents {
    fn event(&mut self, event: &SseEvent) -> Vec<Bytes> {
        match event.data.trim() {
            "[DONE]" => self.0.finish(),
            "" => Vec::new(),
            chunk => self.0.push_chunk(chunk),
        }
    }

    fn end(&mut self, broken: Option<String>) -> Vec<Bytes> {
        match broken {
            None => self.0.finish(),
            Some(why) => self.0.fail(&format!("the stream broke: {why}")),
        }
    }
}

/// Anthropic Messages events.
struct MessageEvents(MessagesToResponsesStream);

impl ToResponses for MessageEvents {
    fn event(&mut self, event: &SseEvent) -> Vec<Bytes> {
        self.0.push_event(event)
    }

    fn end(&mut self, broken: Option<String>) -> Vec<Bytes> {
        match broken {
            None if self.0.is_finished() => Vec::new(),
            None => self.0.fail("the upstream stream ended before message_stop"),
            Some(why) => self.0.fail(&format!("the stream broke: {why}")),
        }
    }
}

/// An SSE body as Responses events, event by event as it arrives.
fn translated<S, E, T>(body: S, translator: T) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display,
    T: ToResponses,
{
    struct State<S, T> {
        body: S,
        parser: SseParser,
        translator: T,
        pending: VecDeque<Bytes>,
        ended: bool,
    }
    let state = State {
        body,
        parser: SseParser::new(),
        translator,
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
                    let out = state.translator.end(Some(e.to_string()));
                    state.pending.extend(out);
                    continue;
                }
                None => {
                    state.ended = true;
                    let events = state.parser.finish();
                    for event in events {
                        let out = state.translator.event(&event);
                        state.pending.extend(out);
                    }
                    let out = state.translator.end(None);
                    state.pending.extend(out);
                    continue;
                }
            };
            for event in events {
                let out = state.translator.event(&event);
                state.pending.extend(out);
            }
        }
    })
}

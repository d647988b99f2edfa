//! The OpenAI Responses API: `POST /v1/responses` and `/api/openai/v1/responses`.
//!
//! The request is read once at the edge into every form a target may take, and dispatched
//! like any chat request, so it runs on every tier: an OpenAI provider gets it as it came
//! (its answer passed through), an Anthropic provider as Messages (its answer translated
//! directly), GPU and CLI workers and chat-only providers as Chat Completions (the chat
//! answer, metered as it passes, translated back into a `response` object or the
//! Responses event sequence).

use super::admit;
use super::body::answered;
use super::error::{ApiError, Dialect};
use super::request::header;
use crate::dispatch::{ChatRequest, ResponsesForms, Routed};
use crate::exchange::Client;
use crate::providers::anthropic::ClientHeaders;
use crate::translate::responses::{responses_to_chat_request, responses_to_messages_request, ResponseContext};
use crate::translate::Format;
use crate::usage::{Meter, MeterStart};
use crate::AppState;
use bytes::{Buf, Bytes};
use futures_util::Stream;
use serde_json::Value;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::Filter;

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
    let routed = route_response(&state, &headers, body, &mut meter).await;
    answered(routed, meter, Dialect::OpenAi).await
}

async fn route_response<S, B>(
    state: &AppState,
    headers: &HeaderMap,
    body: S,
    meter: &mut Meter,
) -> Result<(Client, Routed), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    // Codex names its conversation in `session_id` (older builds: `conversation_id`).
    if let Some(session) = header(headers, "session_id").or_else(|| header(headers, "conversation_id")) {
        meter.set_session(Some(session));
    }
    let (overrides, body) = admit::admit(state, headers, body, meter).await?;
    let peek = peek(&body)?;
    meter.set_request(&peek.model, peek.stream, body.len());
    let (chat, forms, context) = forms(&body, &peek);
    let request = ChatRequest {
        body: chat,
        format: Format::OpenAi,
        anthropic: ClientHeaders {
            user_agent: header(headers, "user-agent").map(str::to_string),
            ..ClientHeaders::default()
        },
        model: peek.model.clone(),
        stream: peek.stream,
        // The translation reads usage from the chat stream for `response.completed`.
        include_usage: true,
        overrides,
        responses: Some(forms),
    };
    let routed = admit::route(state, request, meter).await?;
    Ok((Client::Responses(context), routed))
}

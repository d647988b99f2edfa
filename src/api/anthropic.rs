//! The Anthropic-format client API: `POST /v1/messages`, `POST /v1/messages/count_tokens`,
//! and the Anthropic-shaped model list, with their `/api/anthropic/v1/…` aliases. Requests
//! go through the same dispatcher as `/v1/chat/completions`, to any tier.

use super::admit;
use super::body::exchanged;
use super::error::{bytes_response, json_response, ApiError, Dialect};
use super::request::RouteHeaders;
use super::request::{api_key, header, parse_json, read_body, require_model_and_messages, RolePeek};
use crate::dispatch::{ChatRequest, Routed};
use crate::exchange::{self, Client};
use crate::providers::anthropic::ClientHeaders;
use crate::providers::ChatOutcome;
use crate::translate::Format;
use crate::usage::{Meter, MeterStart};
use crate::AppState;
use bytes::{Buf, Bytes};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::Filter;

/// A count answer bigger than this is refused rather than held in memory.
const MAX_COUNT_ANSWER: usize = 32 * 1024 * 1024;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    let messages_path = warp::path!("v1" / "messages")
        .or(warp::path!("api" / "anthropic" / "v1" / "messages"))
        .unify();
    let raw_query = || warp::query::raw().or(warp::any().map(String::new)).unify();
    let messages = messages_path
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::headers_cloned())
        .and(raw_query())
        .and(warp::body::stream())
        .then(create_message);
    // Claude Code and SDK health checks probe with HEAD before the first request.
    let head = warp::path!("v1" / "messages")
        .or(warp::path!("api" / "anthropic" / "v1" / "messages"))
        .unify()
        .or(warp::path::end())
        .unify()
        .and(warp::head())
        .map(|| bytes_response(200, "text/plain", Bytes::new()));
    let count_path = warp::path!("v1" / "messages" / "count_tokens")
        .or(warp::path!("api" / "anthropic" / "v1" / "messages" / "count_tokens"))
        .unify();
    let count = count_path
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::headers_cloned())
        .and(raw_query())
        .and(warp::body::stream())
        .then(count_tokens);
    messages.or(count).unify().or(head).unify().boxed()
}

/// What routing needs from a Messages request; the rest stays untouched.
#[derive(Deserialize)]
struct MessagesPeek {
    model: String,
    messages: Vec<RolePeek>,
    /// Required by the Messages API; read to refuse its absence with the field named.
    #[allow(dead_code)]
    max_tokens: u64,
    #[serde(default)]
    stream: Option<bool>,
}

async fn create_message<S, B>(state: AppState, headers: HeaderMap, query: String, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    let mut meter = state.usage.meter(MeterStart::default());
    match route_message(&state, &headers, query, body, &mut meter).await {
        Ok((client, routed)) => match exchange::answer(routed, client, meter).await {
            Ok(reply) => exchanged(reply),
            Err(e) => ApiError::from(e).into_response(Dialect::Anthropic),
        },
        Err(e) => {
            meter.failed(e.code, e.status);
            e.into_response(Dialect::Anthropic)
        }
    }
}

async fn route_message<S, B>(
    state: &AppState,
    headers: &HeaderMap,
    query: String,
    body: S,
    meter: &mut Meter,
) -> Result<(Client, Routed), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let (overrides, body) = admit::admit(state, headers, body, meter).await?;
    let peek: MessagesPeek = parse_json(&body)?;
    meter.set_request(&peek.model, peek.stream.unwrap_or(false), body.len());
    require_model_and_messages(&peek.model, peek.messages.len())?;
    let request = ChatRequest {
        body,
        format: Format::Anthropic,
        anthropic: client_headers(headers, query),
        model: peek.model.clone(),
        stream: peek.stream.unwrap_or(false),
        include_usage: false,
        provider: overrides.provider,
        tiers: overrides.tiers,
        wait: overrides.wait,
        responses: None,
    };
    let routed = admit::route(state, request, meter).await?;
    Ok((Client::Messages { model: peek.model }, routed))
}

/// What an Anthropic upstream must see as the client sent it. SDKs send new dates and beta
/// flags: accepted whatever their value, passed on.
fn client_headers(headers: &HeaderMap, query: String) -> ClientHeaders {
    let get = |name: &str| header(headers, name).map(str::to_string);
    ClientHeaders {
        version: get("anthropic-version"),
        beta: get("anthropic-beta"),
        query: (!query.is_empty()).then_some(query),
        user_agent: get("user-agent"),
        x_app: get("x-app"),
    }
}

#[derive(Deserialize)]
struct CountPeek {
    model: String,
    messages: Vec<Value>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
}

/// Answered by the Anthropic provider the request would go to first (exact); otherwise an
/// estimate, documented as such: about four characters per token over every text the
/// model would read (system, messages, tool definitions). No tokenizer ships with auxot.
async fn count_tokens<S, B>(state: AppState, headers: HeaderMap, query: String, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    let result: Result<Response, ApiError> = async {
        state.auth.authorize_client(api_key(&headers))?;
        let overrides = RouteHeaders::read(&headers)?;
        let body = read_body(&headers, body, state.config.body_limit).await?;
        let peek: CountPeek = parse_json(&body)?;
        if peek.model.trim().is_empty() {
            return Err(ApiError::bad_request("model must not be empty"));
        }
        let request = ChatRequest {
            body: body.clone(),
            format: Format::Anthropic,
            anthropic: client_headers(&headers, query),
            model: peek.model.clone(),
            stream: false,
            include_usage: false,
            provider: overrides.provider,
            tiers: overrides.tiers,
            wait: overrides.wait,
            responses: None,
        };
        match state.dispatcher.count_tokens_upstream(&request).await {
            Some(Ok(ChatOutcome::Reply(reply))) => {
                let answer = crate::providers::collect_body(reply.body, MAX_COUNT_ANSWER, "the upstream's answer")
                    .await
                    .map_err(|e| {
                        ApiError::new(502, "upstream_error", format!("cannot read the upstream's answer: {e}"))
                    })?;
                return Ok(bytes_response(200, "application/json", answer));
            }
            Some(Ok(ChatOutcome::Failed(failure))) if failure.status < 500 && failure.status != 429 => {
                return Ok(bytes_response(failure.status, "application/json", failure.body));
            }
            Some(other) => {
                let why = match other {
                    Ok(ChatOutcome::Failed(failure)) => failure.message(),
                    Err(e) => e.to_string(),
                    Ok(ChatOutcome::Reply(_)) => String::new(),
                };
                tracing::debug!(why = %why, "count_tokens upstream failed; estimating instead");
            }
            None => {}
        }
        let mut chars = 0usize;
        for message in &peek.messages {
            chars += text_chars(message);
        }
        chars += peek.system.as_ref().map_or(0, text_chars);
        for tool in peek.tools.iter().flatten() {
            chars += tool.to_string().chars().count();
        }
        // Per-message framing costs a few tokens in every real tokenizer.
        let tokens = chars.div_ceil(4) + 3 * peek.messages.len();
        Ok(json_response(200, &json!({"input_tokens": tokens})))
    }
    .await;
    result.unwrap_or_else(|e| e.into_response(Dialect::Anthropic))
}

/// Characters of every string value (text, tool inputs) under `value`; images count as
/// a fixed amount instead of their base64.
fn text_chars(value: &Value) -> usize {
    match value {
        Value::String(s) => s.chars().count(),
        Value::Array(items) => items.iter().map(text_chars).sum(),
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("image") {
                return 1600 * 4;
            }
            map.iter()
                .filter(|(key, _)| !matches!(key.as_str(), "type" | "role" | "id" | "tool_use_id" | "cache_control"))
                .map(|(_, v)| text_chars(v))
                .sum()
        }
        _ => 0,
    }
}

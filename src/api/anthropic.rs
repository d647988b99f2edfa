//! The Anthropic-format client API: `POST /v1/messages`, `POST /v1/messages/count_tokens`,
//! and the Anthropic-shaped model list, with their `/api/anthropic/v1/…` aliases. Requests
//! go through the same dispatcher as `/v1/chat/completions`, to any tier.

use super::admit;
use super::body::answered;
use super::error::{bytes_response, json_response, ApiError, Dialect};
use super::request::route_overrides;
use super::request::{api_key, header, parse_json, read_json_body, require_model_and_messages, RolePeek};
use crate::dispatch::{ChatRequest, Routed};
use crate::exchange::{self, Client, Count, CountInput};
use crate::providers::anthropic::ClientHeaders;
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
    let routed = route_message(&state, &headers, query, body, &mut meter).await;
    answered(routed, meter, Dialect::Anthropic).await
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
        overrides,
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

/// Answered exactly by the Anthropic provider the request would go to first, otherwise
/// estimated (`exchange::count_tokens` says how).
async fn count_tokens<S, B>(state: AppState, headers: HeaderMap, query: String, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    let result: Result<Response, ApiError> = async {
        state.auth.authorize_client(api_key(&headers))?;
        let overrides = route_overrides(&headers)?;
        let body = read_json_body(&headers, body, state.config.body_limit).await?;
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
            overrides,
            responses: None,
        };
        let input = CountInput {
            messages: &peek.messages,
            system: peek.system.as_ref(),
            tools: peek.tools.as_deref().unwrap_or_default(),
        };
        Ok(
            match exchange::count_tokens(&state.dispatcher, &request, input).await? {
                Count::Exact(answer) => bytes_response(200, "application/json", answer),
                Count::Refused { status, body } => bytes_response(status, "application/json", body),
                Count::Estimate(tokens) => json_response(200, &json!({"input_tokens": tokens})),
            },
        )
    }
    .await;
    result.unwrap_or_else(|e| e.into_response(Dialect::Anthropic))
}

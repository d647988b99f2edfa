//! The OpenAI-format client API: `POST /v1/chat/completions`, `GET /v1/models`, and their
//! Auxot-compatible aliases under `/api/openai/`.

use super::admit;
use super::body::answered;
use super::error::{ApiError, Dialect};
use super::request::{parse_json, require_model_and_messages, RolePeek};
use crate::dispatch::{ChatRequest, Routed};
use crate::exchange::Client;
use crate::providers::anthropic::ClientHeaders;
use crate::translate::Format;
use crate::usage::{Meter, MeterStart};
use crate::AppState;
use bytes::Buf;
use futures_util::Stream;
use serde::Deserialize;
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
    let routed = route_chat(&state, &headers, body, &mut meter).await;
    answered(routed, meter, Dialect::OpenAi).await
}

/// Returns the client (the model asked for, whether it wants usage in its stream) and the route.
async fn route_chat<S, B>(
    state: &AppState,
    headers: &HeaderMap,
    body: S,
    meter: &mut Meter,
) -> Result<(Client, Routed), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let (overrides, body) = admit::admit(state, headers, body, meter).await?;
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
        overrides,
        responses: None,
    };
    let routed = admit::route(state, request, meter).await?;
    Ok((
        Client::Chat {
            model: peek.model,
            include_usage,
        },
        routed,
    ))
}

//! The OpenAI embeddings API: `POST /v1/embeddings` and its Auxot-compatible aliases.
//!
//! Routed like chat (GPU workers that embed the model, then the OpenAI-format providers);
//! the answer is whole JSON, metered with the input tokens the target reported.

use super::admit;
use super::error::{ApiError, Dialect};
use super::key_grant;
use crate::dispatch::{Embedded, EmbeddingsCall};
use crate::translate::embeddings::{read_request, EmbeddingsError};
use crate::translate::Format;
use crate::usage::tap::Tokens;
use crate::usage::{Meter, MeterStart, RouteInfo};
use crate::AppState;
use bytes::Buf;
use futures_util::Stream;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::Filter;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    warp::path!("v1" / "embeddings")
        .or(warp::path!("api" / "openai" / "v1" / "embeddings"))
        .unify()
        .or(warp::path!("api" / "openai" / "embeddings"))
        .unify()
        .and(warp::post())
        .and(with_state)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(create_embeddings)
        .boxed()
}

async fn create_embeddings<S, B>(state: AppState, headers: HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    // Every request leaves one usage row, refused ones included.
    let mut meter = state.usage.meter(MeterStart::default());
    match embed(&state, &headers, body, &mut meter).await {
        Ok(embedded) => reply(embedded, meter).await,
        Err(e) => {
            meter.failed(e.code, e.status);
            e.into_response(Dialect::OpenAi)
        }
    }
}

async fn embed<S, B>(state: &AppState, headers: &HeaderMap, body: S, meter: &mut Meter) -> Result<Embedded, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let (overrides, body) = admit::admit(state, headers, body, meter).await?;
    let request = read_request(&body).map_err(|e| match e {
        EmbeddingsError::NotJson(why) => {
            ApiError::new(400, "invalid_json", format!("the request body is not JSON: {why}"))
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    meter.set_request(&request.model, false, body.len());
    let mut call = EmbeddingsCall {
        body,
        model: request.model.clone(),
        encoding: request.encoding,
        provider: overrides.provider,
        tiers: overrides.tiers,
        wait: overrides.wait,
    };
    if let Some(key_id) = meter.api_key_id().map(str::to_string) {
        key_grant::enforce_on(state, &key_id, &call.model, &mut call.tiers)?;
    }
    let result = state.dispatcher.embed(call).await;
    let tried = match &result {
        Ok(embedded) => {
            meter.set_queue_wait(embedded.queue_wait);
            embedded.failures.as_slice()
        }
        Err(e) => e.tried(),
    };
    for failure in tried {
        meter.add_attempt(failure.tier.as_str(), &failure.route, &failure.to_string());
    }
    let mut embedded = result.map_err(|e| {
        if let crate::dispatch::DispatchError::QueueTimeout { waited, .. } = &e {
            meter.set_queue_wait(*waited);
        }
        if let Some((tier, route)) = e.last_target() {
            meter.tried(tier.as_str(), route);
        }
        ApiError::from(e)
    })?;
    // Counted by the target when it says; else the documented estimate, marked as one.
    let (input, estimated) = match embedded.input_tokens.take() {
        Some(tokens) => (tokens, false),
        None => (request.estimated_tokens, true),
    };
    meter.set_tokens(
        Tokens {
            input,
            ..Tokens::default()
        },
        estimated,
    );
    Ok(embedded)
}

/// The answer, sent after its usage row is durable (as every answer is).
async fn reply(embedded: Embedded, mut meter: Meter) -> Response {
    meter.routed(RouteInfo {
        tier: embedded.tier.as_str(),
        route: &embedded.route,
        target_model: &embedded.model,
        cloud_model: embedded.cloud_model.as_deref(),
        overflow: embedded.overflow,
        client_format: Format::OpenAi,
        sse: false,
    });
    meter.completed();
    meter.finish_durably().await;
    let mut response = super::body::full(embedded.body);
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    super::body::route_headers(&mut response, embedded.tier, &embedded.route);
    response
}

//! The OpenAI embeddings API: `POST /v1/embeddings` and its Auxot-compatible aliases.
//!
//! Parses and admits the request; `exchange::embed` routes and meters it (like chat: GPU
//! workers that embed the model, then the OpenAI-format providers).

use super::admit;
use super::body::exchanged;
use super::error::{ApiError, Dialect};
use super::key_grant;
use crate::dispatch::{Embedded, EmbeddingsCall};
use crate::exchange;
use crate::translate::embeddings::{read_request, EmbeddingsError};
use crate::usage::{Meter, MeterStart};
use crate::AppState;
use bytes::Buf;
use futures_util::Stream;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
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
    match route_embeddings(&state, &headers, body, &mut meter).await {
        Ok(embedded) => exchanged(exchange::embeddings_reply(embedded, meter).await),
        Err(e) => {
            meter.failed(e.code, e.status);
            e.into_response(Dialect::OpenAi)
        }
    }
}

/// Parses and admits the request, narrows it to what the key may reach, and routes it.
async fn route_embeddings<S, B>(
    state: &AppState,
    headers: &HeaderMap,
    body: S,
    meter: &mut Meter,
) -> Result<Embedded, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let (mut overrides, body) = admit::admit(state, headers, body, meter).await?;
    let request = read_request(&body).map_err(|e| match e {
        EmbeddingsError::NotJson(why) => {
            ApiError::new(400, "invalid_json", format!("the request body is not JSON: {why}"))
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    meter.set_request(&request.model, false, body.len());
    if let Some(key_id) = meter.api_key_id() {
        key_grant::enforce(state, key_id, &request.model, &mut overrides)?;
    }
    let call = EmbeddingsCall {
        body,
        model: request.model,
        encoding: request.encoding,
        overrides,
    };
    Ok(exchange::embed(&state.dispatcher, call, request.estimated_tokens, meter).await?)
}

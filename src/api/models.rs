//! `GET /v1/models` (and its aliases): the models a client may ask for, in the caller's
//! dialect. The Anthropic SDKs call the same path and say who they are with
//! `anthropic-version`.

use super::error::{json_response, ApiError, Dialect};
use super::request::api_key;
use crate::AppState;
use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::Filter;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    let either = warp::path!("v1" / "models")
        .or(warp::path!("api" / "openai" / "models"))
        .unify()
        .or(warp::path!("api" / "openai" / "v1" / "models"))
        .unify()
        .and(warp::get())
        .and(with_state.clone())
        .and(warp::header::headers_cloned())
        .map(|state: AppState, headers: HeaderMap| {
            let dialect = match headers.contains_key("anthropic-version") {
                true => Dialect::Anthropic,
                false => Dialect::OpenAi,
            };
            list(&state, &headers, dialect)
        });
    let anthropic = warp::path!("api" / "anthropic" / "v1" / "models")
        .and(warp::get())
        .and(with_state)
        .and(warp::header::headers_cloned())
        .map(|state: AppState, headers: HeaderMap| list(&state, &headers, Dialect::Anthropic));
    either.or(anthropic).unify().boxed()
}

fn list(state: &AppState, headers: &HeaderMap, dialect: Dialect) -> Response {
    if let Err(e) = state.auth.authorize_client(api_key(headers)) {
        return ApiError::from(e).into_response(dialect);
    }
    let models = state.dispatcher.routable_models();
    let body = match dialect {
        Dialect::Anthropic => {
            let created = crate::clock::rfc3339(0);
            let data: Vec<Value> = models
                .into_iter()
                .map(|(id, _)| json!({"type": "model", "id": id, "display_name": id, "created_at": created}))
                .collect();
            let first = data.first().map(|m| m["id"].clone()).unwrap_or(Value::Null);
            let last = data.last().map(|m| m["id"].clone()).unwrap_or(Value::Null);
            json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
        }
        Dialect::OpenAi | Dialect::Admin => {
            let data: Vec<Value> = models
                .into_iter()
                .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
                .collect();
            json!({"object": "list", "data": data})
        }
    };
    json_response(200, &body)
}

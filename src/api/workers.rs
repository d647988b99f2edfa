//! Workers: the live list (`GET /api/workers`, the fleet's on a shared database) and their
//! tokens (`/api/worker-tokens`); the WebSocket they dial is `worker_socket.rs`.

use super::admin::{no_content, reply};
use super::error::{json_response, ApiError};
use super::request::{parse_json, read_body};
use super::worker_socket::connect;
use crate::workers::protocol::WorkerKind;
use crate::AppState;
use bytes::Buf;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::Filter;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let admin = super::filters::admin(state.clone());
    let with_state = warp::any().map(move || state.clone());
    let headers = warp::header::headers_cloned;
    let connect = warp::path!("api" / "workers" / "connect")
        .and(warp::get())
        .and(with_state.clone())
        .and(headers())
        .and(warp::ws())
        .map(connect);
    let list = warp::path!("api" / "workers")
        .and(warp::get())
        .and(admin.clone())
        .then(|state| reply(list_workers(state)));
    let create_token = warp::path!("api" / "worker-tokens")
        .and(warp::post())
        .and(admin.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|state, headers, body| reply(create_token(state, headers, body)));
    let list_tokens = warp::path!("api" / "worker-tokens")
        .and(warp::get())
        .and(admin.clone())
        .then(|state| reply(list_tokens(state)));
    let update_token = warp::path!("api" / "worker-tokens" / String)
        .and(warp::patch())
        .and(admin.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|id, state, headers, body| reply(update_token(state, headers, id, body)));
    let revoke_token = warp::path!("api" / "worker-tokens" / String)
        .and(warp::delete())
        .and(admin)
        .then(|id, state| reply(revoke_token(state, id)));
    connect
        .or(list)
        .unify()
        .or(create_token)
        .unify()
        .or(list_tokens)
        .unify()
        .or(update_token)
        .unify()
        .or(revoke_token)
        .unify()
        .boxed()
}

/// Every worker of the fleet once (this router's live and recent workers, and on a shared
/// database those connected only to other routers), each with the routers it is connected
/// to and its token's subscription price (if any). When the other routers' workers cannot be
/// read, this router's are listed and `fleet_error` says why.
async fn list_workers(state: AppState) -> Result<Response, ApiError> {
    let prices: std::collections::HashMap<String, Option<f64>> = state
        .auth
        .list_worker_tokens()
        .await?
        .into_iter()
        .map(|t| (t.id, t.monthly_price_usd))
        .collect();
    let (others, fleet_error) = match &state.presence {
        Some(presence) => match presence.others().await {
            Ok(others) => (others, None),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the other routers' workers; listing this router's");
                (Vec::new(), Some(e.to_string()))
            }
        },
        None => (Vec::new(), None),
    };
    let local = state.workers.views();
    let data: Vec<serde_json::Value> = crate::presence::merge(&state.config.router_name, local, others)
        .into_iter()
        .map(|w| {
            let price = prices.get(&w.view.token_id).copied().flatten();
            let mut value = serde_json::to_value(&w).unwrap_or_default();
            value["monthly_price_usd"] = json!(price);
            state.dispatcher.worker_health(&w.view.token_id).merge_into(&mut value);
            value
        })
        .collect();
    let mut body = json!({"data": data});
    if let Some(error) = fleet_error {
        body["fleet_error"] = json!(format!("the workers of the other routers could not be read: {error}"));
    }
    Ok(json_response(200, &body))
}

/// `{"monthly_price_usd": 20.0 | null, "allowed_models": ["qwen*"] | null}`; an absent field
/// stays as it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenPatch {
    #[serde(default, deserialize_with = "present")]
    monthly_price_usd: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    allowed_models: Option<Option<Vec<String>>>,
}

/// Tells "absent" (outer `None`) from "null" (`Some(None)`).
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

async fn update_token<S, B>(state: AppState, headers: HeaderMap, id: String, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let input: TokenPatch = parse_json(&body)?;
    let list_changed = input.allowed_models.is_some();
    let view = state
        .auth
        .update_worker_token(&id, input.monthly_price_usd, input.allowed_models)
        .await?;
    if list_changed {
        // The live worker reconnects (after a short backoff) under the new list.
        let kicked = state.workers.kick_token(&id);
        tracing::info!(worker_token_id = %id, allowed_models = ?view.allowed_models, disconnected = kicked, "worker token allow-list changed");
    }
    let body = serde_json::to_value(&view).map_err(|e| ApiError::new(500, "internal_error", e.to_string()))?;
    Ok(json_response(200, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWorkerToken {
    name: String,
    kind: WorkerKind,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
}

async fn create_token<S, B>(state: AppState, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let new: NewWorkerToken = parse_json(&body)?;
    let (view, token) = state
        .auth
        .create_worker_token_allowing(&new.name, new.kind, new.allowed_models)
        .await?;
    tracing::info!(worker_token_id = %view.id, name = %view.name, kind = view.kind.as_str(), "worker token created");
    let mut body = serde_json::to_value(&view).map_err(|e| ApiError::new(500, "internal_error", e.to_string()))?;
    body["token"] = json!(token.expose());
    Ok(json_response(201, &body))
}

async fn list_tokens(state: AppState) -> Result<Response, ApiError> {
    Ok(json_response(
        200,
        &json!({"data": state.auth.list_worker_tokens().await?}),
    ))
}

/// Revokes at once and disconnects the token's live worker.
async fn revoke_token(state: AppState, id: String) -> Result<Response, ApiError> {
    state.auth.revoke_worker_token(&id).await?;
    let kicked = state.workers.kick_token(&id);
    tracing::info!(worker_token_id = %id, disconnected = kicked, "worker token revoked");
    Ok(no_content())
}

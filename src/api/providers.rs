//! Providers and their models: `/api/providers…`, `/api/models`.

use super::admin::{no_content, reply};
use super::error::{json_response, ApiError};
use super::request::{parse_json, read_body};
use crate::crypto::Secret;
use crate::providers::{NewProvider, ProviderKind, ProviderPatch};
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
    let admin = super::filters::admin(state);
    let headers = warp::header::headers_cloned;
    let create = warp::path!("api" / "providers")
        .and(warp::post())
        .and(admin.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|state, headers, body| reply(create(state, headers, body)));
    let list = warp::path!("api" / "providers")
        .and(warp::get())
        .and(admin.clone())
        .then(|state| reply(list(state)));
    let get = warp::path!("api" / "providers" / String)
        .and(warp::get())
        .and(admin.clone())
        .then(|id, state| reply(get(state, id)));
    let update = warp::path!("api" / "providers" / String)
        .and(warp::patch())
        .and(admin.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|id, state, headers, body| reply(update(state, headers, id, body)));
    let delete = warp::path!("api" / "providers" / String)
        .and(warp::delete())
        .and(admin.clone())
        .then(|id, state| reply(delete(state, id)));
    let refresh = warp::path!("api" / "providers" / String / "refresh-models")
        .and(warp::post())
        .and(admin.clone())
        .then(|id, state| reply(refresh(state, id)));
    let models = warp::path!("api" / "models")
        .and(warp::get())
        .and(admin)
        .then(|state| reply(models(state)));
    create
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .or(refresh)
        .unify()
        .or(models)
        .unify()
        .boxed()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProvider {
    name: String,
    #[serde(rename = "type")]
    kind: ProviderKind,
    #[serde(default)]
    api_key: Option<Secret>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateProvider {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    api_key: Option<Secret>,
    #[serde(default)]
    base_url: Option<String>,
}

fn to_json<T: serde::Serialize>(status: u16, value: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_value(value).map_err(|e| ApiError::new(500, "internal_error", e.to_string()))?;
    Ok(json_response(status, &body))
}

async fn create<S, B>(state: AppState, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let new: CreateProvider = parse_json(&body)?;
    let view = state
        .providers
        .add(NewProvider {
            name: new.name,
            kind: new.kind,
            api_key: new.api_key,
            base_url: new.base_url,
            priority: new.priority,
            enabled: new.enabled,
        })
        .await?;
    to_json(201, &view)
}

async fn list(state: AppState) -> Result<Response, ApiError> {
    let providers: Vec<serde_json::Value> = state
        .providers
        .list()
        .await?
        .into_iter()
        .map(|p| {
            let mut value = serde_json::to_value(&p).unwrap_or_default();
            state.dispatcher.provider_health(&p.id).merge_into(&mut value);
            value
        })
        .collect();
    Ok(json_response(200, &json!({"data": providers})))
}

async fn get(state: AppState, id: String) -> Result<Response, ApiError> {
    to_json(200, &state.providers.get(&id).await?)
}

async fn update<S, B>(state: AppState, headers: HeaderMap, id: String, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let patch: UpdateProvider = parse_json(&body)?;
    let view = state
        .providers
        .update(
            &id,
            ProviderPatch {
                name: patch.name,
                enabled: patch.enabled,
                priority: patch.priority,
                api_key: patch.api_key,
                base_url: patch.base_url,
            },
        )
        .await?;
    to_json(200, &view)
}

async fn delete(state: AppState, id: String) -> Result<Response, ApiError> {
    state.providers.delete(&id).await?;
    Ok(no_content())
}

async fn refresh(state: AppState, id: String) -> Result<Response, ApiError> {
    to_json(200, &state.providers.refresh_models(&id).await?)
}

async fn models(state: AppState) -> Result<Response, ApiError> {
    let models = state.providers.list_models().await?;
    Ok(json_response(200, &json!({"data": models})))
}

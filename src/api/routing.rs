//! Routing rules: `/api/aliases`, `/api/agents`, `/api/settings`.

use super::admin::{no_content, reply};
use super::error::{json_response, ApiError};
use super::request::{parse_json, read_body};
use crate::agents::AgentInput;
use crate::dispatch::rules::{SettingsPatch, TimeoutsPatch};
use crate::store::AliasRecord;
use crate::AppState;
use bytes::{Buf, Bytes};
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
    let body = warp::body::stream;
    let list_aliases = warp::path!("api" / "aliases")
        .and(warp::get())
        .and(admin.clone())
        .then(|state| reply(list_aliases(state)));
    let create_alias = warp::path!("api" / "aliases")
        .and(warp::post())
        .and(admin.clone())
        .and(headers())
        .and(body())
        .then(|state, headers, body| reply(put_alias(state, headers, None, body)));
    let update_alias = warp::path!("api" / "aliases" / String)
        .and(warp::put().or(warp::patch()).unify())
        .and(admin.clone())
        .and(headers())
        .and(body())
        .then(|name, state, headers, body| reply(put_alias(state, headers, Some(name), body)));
    let delete_alias = warp::path!("api" / "aliases" / String)
        .and(warp::delete())
        .and(admin.clone())
        .then(|name, state| reply(delete_alias(state, name)));
    let list_agents = warp::path!("api" / "agents")
        .and(warp::get())
        .and(admin.clone())
        .then(|state| reply(list_agents(state)));
    let get_agent = warp::path!("api" / "agents" / String)
        .and(warp::get())
        .and(admin.clone())
        .then(|name, state| reply(get_agent(state, name)));
    let create_agent = warp::path!("api" / "agents")
        .and(warp::post())
        .and(admin.clone())
        .and(headers())
        .and(body())
        .then(|state, headers, body| reply(put_agent(state, headers, None, body)));
    let update_agent = warp::path!("api" / "agents" / String)
        .and(warp::put().or(warp::patch()).unify())
        .and(admin.clone())
        .and(headers())
        .and(body())
        .then(|name, state, headers, body| reply(put_agent(state, headers, Some(name), body)));
    let delete_agent = warp::path!("api" / "agents" / String)
        .and(warp::delete())
        .and(admin.clone())
        .then(|name, state| reply(delete_agent(state, name)));
    let get_settings = warp::path!("api" / "settings")
        .and(warp::get())
        .and(admin.clone())
        .then(|state| reply(get_settings(state)));
    let put_settings = warp::path!("api" / "settings")
        .and(warp::put().or(warp::patch()).unify())
        .and(admin)
        .and(headers())
        .and(body())
        .then(|state, headers, body| reply(put_settings(state, headers, body)));
    list_aliases
        .or(create_alias)
        .unify()
        .or(update_alias)
        .unify()
        .or(delete_alias)
        .unify()
        .or(list_agents)
        .unify()
        .or(get_agent)
        .unify()
        .or(create_agent)
        .unify()
        .or(update_agent)
        .unify()
        .or(delete_agent)
        .unify()
        .or(get_settings)
        .unify()
        .or(put_settings)
        .unify()
        .boxed()
}

async fn admin_body<S, B>(state: &AppState, headers: &HeaderMap, body: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    read_body(headers, body, state.config.body_limit).await
}

fn to_json<T: serde::Serialize>(status: u16, value: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_value(value).map_err(|e| ApiError::new(500, "internal_error", e.to_string()))?;
    Ok(json_response(status, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    gpu: Option<String>,
    #[serde(default)]
    cli: Option<String>,
    #[serde(default)]
    cloud: Option<String>,
    /// Absent on an update: the alias keeps its client model names.
    #[serde(default)]
    client_models: Option<Vec<String>>,
}

async fn list_aliases(state: AppState) -> Result<Response, ApiError> {
    Ok(json_response(200, &json!({"data": state.rules.aliases()})))
}

/// POST creates (name in the body); PUT/PATCH on `/api/aliases/{name}` replaces its models.
async fn put_alias<S, B>(
    state: AppState,
    headers: HeaderMap,
    path_name: Option<String>,
    body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = admin_body(&state, &headers, body).await?;
    let input: AliasBody = parse_json(&body)?;
    let create = path_name.is_none();
    let name = match (path_name, input.name) {
        (Some(path), Some(named)) if path != named => {
            return Err(ApiError::bad_request(
                "an alias cannot be renamed; delete it and create a new one",
            ))
        }
        (Some(path), _) => path,
        (None, Some(named)) => named,
        (None, None) => return Err(ApiError::bad_request("name is required")),
    };
    let client_models = match input.client_models {
        Some(names) => names,
        None if create => Vec::new(),
        None => state
            .rules
            .aliases()
            .into_iter()
            .find(|a| a.name == name)
            .map(|a| a.client_models)
            .unwrap_or_default(),
    };
    let alias = state
        .rules
        .put_alias(
            AliasRecord {
                name,
                gpu: input.gpu,
                cli: input.cli,
                cloud: input.cloud,
                client_models,
            },
            create,
        )
        .await?;
    to_json(if create { 201 } else { 200 }, &alias)
}

async fn delete_alias(state: AppState, name: String) -> Result<Response, ApiError> {
    state.rules.delete_alias(&name).await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    system_prompt: Option<String>,
    model: String,
    #[serde(default)]
    tier_order: Option<Vec<String>>,
    #[serde(default)]
    queue_timeout_ms: Option<u64>,
}

async fn list_agents(state: AppState) -> Result<Response, ApiError> {
    Ok(json_response(200, &json!({"data": state.agents.list()})))
}

async fn get_agent(state: AppState, name: String) -> Result<Response, ApiError> {
    to_json(200, &state.agents.get(&name)?)
}

async fn put_agent<S, B>(
    state: AppState,
    headers: HeaderMap,
    path_name: Option<String>,
    body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = admin_body(&state, &headers, body).await?;
    let input: AgentBody = parse_json(&body)?;
    let create = path_name.is_none();
    let name = match (path_name, input.name) {
        (Some(path), Some(named)) if !path.eq_ignore_ascii_case(&named) => {
            return Err(ApiError::bad_request(
                "an agent cannot be renamed; delete it and create a new one",
            ))
        }
        (Some(path), _) => path,
        (None, Some(named)) => named,
        (None, None) => return Err(ApiError::bad_request("name is required")),
    };
    let view = state
        .agents
        .put(
            AgentInput {
                name,
                system_prompt: input.system_prompt,
                model: input.model,
                tier_order: input.tier_order,
                queue_timeout_ms: input.queue_timeout_ms,
            },
            create,
        )
        .await?;
    to_json(if create { 201 } else { 200 }, &view)
}

async fn delete_agent(state: AppState, name: String) -> Result<Response, ApiError> {
    state.agents.delete(&name).await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    #[serde(default)]
    routing: Option<RoutingBody>,
    #[serde(default)]
    admin_agent: Option<AdminAgentBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminAgentBody {
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingBody {
    #[serde(default)]
    default_order: Option<Vec<String>>,
    #[serde(default)]
    queue_timeout_ms: Option<u64>,
    #[serde(default)]
    timeouts: Option<TimeoutsPatch>,
}

async fn get_settings(state: AppState) -> Result<Response, ApiError> {
    Ok(json_response(
        200,
        &json!({"routing": state.rules.settings(), "admin_agent": state.rules.admin_agent_settings()}),
    ))
}

async fn put_settings<S, B>(state: AppState, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = admin_body(&state, &headers, body).await?;
    let input: SettingsBody = parse_json(&body)?;
    let routing = input.routing.unwrap_or(RoutingBody {
        default_order: None,
        queue_timeout_ms: None,
        timeouts: None,
    });
    let settings = state
        .rules
        .update_settings(SettingsPatch {
            default_order: routing.default_order,
            queue_timeout_ms: routing.queue_timeout_ms,
            timeouts: routing.timeouts,
            admin_agent_model: input.admin_agent.and_then(|a| a.model),
        })
        .await?;
    Ok(json_response(
        200,
        &json!({"routing": settings, "admin_agent": state.rules.admin_agent_settings()}),
    ))
}

//! Admin accounts and API keys: `/api/setup`, `/api/login`, `/api/logout`, `/api/session`,
//! `/api/api-keys`.

use super::error::{json_response, ApiError, Dialect};
use super::filters::client_ip;
use super::request::{api_key, parse_json, read_body, session_token, SESSION_COOKIE};
use crate::auth::Source;
use crate::auth::{ApiKeyView, KeyPolicy, Principal};
use crate::crypto::Secret;
use crate::store::Role;
use crate::AppState;
use bytes::Buf;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::Filter;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    let headers = warp::header::headers_cloned;
    let setup_status = warp::path!("api" / "setup")
        .and(warp::get())
        .and(with_state.clone())
        .then(|state: AppState| reply(setup_status(state)));
    let setup = warp::path!("api" / "setup")
        .and(warp::post())
        .and(with_state.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|state, headers, body| reply(setup(state, headers, body)));
    let login = warp::path!("api" / "login")
        .and(warp::post())
        .and(with_state.clone())
        .and(client_ip())
        .and(headers())
        .and(warp::body::stream())
        .then(|state, ip, headers, body| reply(login(state, ip, headers, body)));
    let logout = warp::path!("api" / "logout")
        .and(warp::post())
        .and(with_state.clone())
        .and(headers())
        .then(|state, headers| reply(logout(state, headers)));
    let session = warp::path!("api" / "session")
        .and(warp::get())
        .and(with_state.clone())
        .and(headers())
        .then(|state, headers| reply(session(state, headers)));
    let create_key = warp::path!("api" / "api-keys")
        .and(warp::post())
        .and(with_state.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|state, headers, body| reply(create_api_key(state, headers, body)));
    let list_keys = warp::path!("api" / "api-keys")
        .and(warp::get())
        .and(with_state.clone())
        .and(headers())
        .then(|state, headers| reply(list_api_keys(state, headers)));
    let limit_key = warp::path!("api" / "api-keys" / String)
        .and(warp::patch())
        .and(with_state.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|id, state, headers, body| reply(set_api_key_limits(state, headers, id, body)));
    let revoke_key = warp::path!("api" / "api-keys" / String)
        .and(warp::delete())
        .and(with_state)
        .and(headers())
        .then(|id, state, headers| reply(revoke_api_key(state, headers, id)));
    setup_status
        .or(setup)
        .unify()
        .or(login)
        .unify()
        .or(logout)
        .unify()
        .or(session)
        .unify()
        .or(create_key)
        .unify()
        .or(list_keys)
        .unify()
        .or(limit_key)
        .unify()
        .or(revoke_key)
        .unify()
        .boxed()
}

/// Turns a handler's result into a reply in the admin dialect.
pub async fn reply(result: impl std::future::Future<Output = Result<Response, ApiError>>) -> Response {
    result.await.unwrap_or_else(|e| e.into_response(Dialect::Admin))
}

/// Every `/api/` endpoint but setup and login: an admin session or an admin key.
pub async fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    Ok(state
        .auth
        .authorize_admin(api_key(headers), session_token(headers))
        .await?)
}

pub fn no_content() -> Response {
    let mut response = super::body::empty();
    *response.status_mut() = warp::http::StatusCode::NO_CONTENT;
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: Secret,
}

async fn setup_status(state: AppState) -> Result<Response, ApiError> {
    let exists = state.auth.admin_exists().await?;
    Ok(json_response(200, &json!({"needs_setup": !exists})))
}

/// Anonymous requests (setup, login) carry a username and a password: no more.
const CREDENTIALS_BODY_LIMIT: u64 = 16 * 1024;

async fn setup<S, B>(state: AppState, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(&headers, body, CREDENTIALS_BODY_LIMIT).await?;
    let credentials: Credentials = parse_json(&body)?;
    state.auth.setup(&credentials.username, &credentials.password).await?;
    tracing::info!(username = %credentials.username.trim(), "first admin created");
    Ok(json_response(201, &json!({"username": credentials.username.trim()})))
}

async fn login<S, B>(
    state: AppState,
    ip: Option<std::net::IpAddr>,
    headers: HeaderMap,
    body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(&headers, body, CREDENTIALS_BODY_LIMIT).await?;
    let credentials: Credentials = parse_json(&body)?;
    let ip = super::filters::client_address(ip, &headers, &state.config.trusted_proxies);
    let token = state
        .auth
        .login(Source::of(ip), &credentials.username, &credentials.password)
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        token.expose(),
        state.auth.session_ttl().as_secs()
    );
    let mut response = json_response(200, &json!({"username": credentials.username.trim()}));
    let value = HeaderValue::from_str(&cookie)
        .map_err(|_| ApiError::new(500, "internal_error", "cannot set the session cookie"))?;
    response.headers_mut().insert(warp::http::header::SET_COOKIE, value);
    Ok(response)
}

async fn logout(state: AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = session_token(&headers) {
        state.auth.logout(token).await?;
    }
    let mut response = no_content();
    response.headers_mut().insert(
        warp::http::header::SET_COOKIE,
        HeaderValue::from_static("auxot_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

async fn session(state: AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    let body = match require_admin(&state, &headers).await? {
        Principal::AdminSession { username, role } => json!({"username": username, "role": role, "via": "session"}),
        Principal::ApiKey { id, .. } => json!({"api_key_id": id, "role": "admin", "via": "api_key"}),
    };
    Ok(json_response(200, &body))
}

/// `{"name", "role"}` and any field of `KeyPolicyBody`.
#[derive(Deserialize)]
struct NewApiKey {
    name: String,
    role: Role,
}

async fn create_api_key<S, B>(state: AppState, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    require_admin(&state, &headers).await?;
    let body = read_body(&headers, body, state.config.body_limit).await?;
    // The name and role, then the rest as a policy (which refuses unknown fields).
    let mut fields: serde_json::Map<String, serde_json::Value> = parse_json(&body)?;
    let mut head = serde_json::Map::new();
    for field in ["name", "role"] {
        if let Some(value) = fields.remove(field) {
            head.insert(field.to_string(), value);
        }
    }
    let new: NewApiKey = parse_json(&serde_json::to_vec(&head).unwrap_or_default())?;
    let policy: KeyPolicyBody = parse_json(&serde_json::to_vec(&fields).unwrap_or_default())?;
    let policy = policy.into_policy()?;
    let (view, key) = state.auth.create_governed_api_key(&new.name, new.role, policy).await?;
    tracing::info!(api_key_id = %view.id, name = %view.name, role = ?view.role, "api key created");
    let mut body = key_json(&state, &view)?;
    body["key"] = json!(key.expose());
    Ok(json_response(201, &body))
}

/// A key as listed: its settings and what it did this month.
fn key_json(state: &AppState, view: &ApiKeyView) -> Result<serde_json::Value, ApiError> {
    let mut body = serde_json::to_value(view).map_err(|e| ApiError::new(500, "internal_error", e.to_string()))?;
    let month = state.usage.key_month(&view.id);
    body["spent_this_month_usd"] = json!(month.spent_this_month_usd);
    body["requests_this_month"] = json!(month.requests_this_month);
    body["last_used_at"] = json!(month.last_used_ms.map(|ms| crate::clock::rfc3339(ms / 1000)));
    Ok(body)
}

async fn list_api_keys(state: AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    require_admin(&state, &headers).await?;
    let keys = state.auth.list_api_keys().await?;
    let keys = keys
        .iter()
        .map(|k| key_json(&state, k))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(200, &json!({"data": keys})))
}

async fn revoke_api_key(state: AppState, headers: HeaderMap, id: String) -> Result<Response, ApiError> {
    require_admin(&state, &headers).await?;
    state.auth.revoke_api_key(&id).await?;
    tracing::info!(api_key_id = %id, "api key revoked");
    Ok(no_content())
}

/// `{"rpm_limit": 60 | null, "tpm_limit": 100000 | null, "monthly_spend_cap_usd": 25.0 | null,
/// "allowed_models": ["auto", "claude-*"], "allowed_tiers": ["gpu", "cloud"],
/// "expires_at": "2026-12-31T00:00:00Z" | null}`; an absent field stays as it is, `null`
/// removes the limit, an empty list allows everything.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyPolicyBody {
    #[serde(default, deserialize_with = "present")]
    rpm_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    tpm_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    monthly_spend_cap_usd: Option<Option<f64>>,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
    #[serde(default)]
    allowed_tiers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
}

impl KeyPolicyBody {
    fn into_policy(self) -> Result<KeyPolicy, ApiError> {
        let expires_at = match self.expires_at {
            Some(Some(text)) => {
                let at = time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        ApiError::bad_request(format!(
                            "expires_at must be an RFC 3339 time such as 2026-12-31T00:00:00Z, not '{text}'"
                        ))
                    })?;
                Some(Some(at.unix_timestamp()))
            }
            Some(None) => Some(None),
            None => None,
        };
        Ok(KeyPolicy {
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            monthly_spend_cap_usd: self.monthly_spend_cap_usd,
            allowed_models: self.allowed_models,
            allowed_tiers: self.allowed_tiers,
            expires_at,
        })
    }
}

/// Tells "absent" (outer `None`) from "null" (`Some(None)`).
fn present<'de, T: serde::Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

async fn set_api_key_limits<S, B>(
    state: AppState,
    headers: HeaderMap,
    id: String,
    body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    require_admin(&state, &headers).await?;
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let policy: KeyPolicyBody = parse_json(&body)?;
    let view = state.auth.set_api_key_policy(&id, policy.into_policy()?).await?;
    Ok(json_response(200, &key_json(&state, &view)?))
}

//! Admin accounts: `/api/admins` (list, add, change role or reset a password, remove),
//! `/api/session/password` (change your own), and the read-only rule for viewers.

use super::admin::{no_content, reply, require_admin};
use super::error::{json_response, ApiError};
use super::request::{parse_json, read_body, SESSION_COOKIE};
use crate::auth::Principal;
use crate::crypto::Secret;
use crate::store::AdminRole;
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
    let admin = super::filters::admin(state);
    let headers = warp::header::headers_cloned;
    let list = warp::path!("api" / "admins")
        .and(warp::get())
        .and(admin.clone())
        .then(|state| reply(list_admins(state)));
    let create = warp::path!("api" / "admins")
        .and(warp::post())
        .and(admin.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|state, headers, body| reply(create_admin(state, headers, body)));
    let update = warp::path!("api" / "admins" / String)
        .and(warp::patch())
        .and(admin.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|name, state, headers, body| reply(update_admin(state, headers, name, body)));
    let remove = warp::path!("api" / "admins" / String)
        .and(warp::delete())
        .and(admin.clone())
        .and(headers())
        .then(|name, state, headers| reply(remove_admin(state, headers, name)));
    let password = warp::path!("api" / "session" / "password")
        .and(warp::post())
        .and(admin)
        .and(headers())
        .and(warp::body::stream())
        .then(|state, headers, body| reply(change_own_password(state, headers, body)));
    list.or(create)
        .unify()
        .or(update)
        .unify()
        .or(remove)
        .unify()
        .or(password)
        .unify()
        .boxed()
}

async fn list_admins(state: AppState) -> Result<Response, ApiError> {
    Ok(json_response(200, &json!({"data": state.auth.list_admins().await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAdmin {
    username: String,
    password: Secret,
    #[serde(default)]
    role: AdminRole,
}

async fn create_admin<S, B>(state: AppState, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let new: NewAdmin = parse_json(&body)?;
    let view = state.auth.create_admin(&new.username, &new.password, new.role).await?;
    tracing::info!(username = %view.username, role = view.role.as_str(), "admin account created");
    Ok(json_response(201, &json!(view)))
}

/// `{"role": "viewer"}` and/or `{"password": "…"}` (a reset: the account's sessions end).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminChange {
    #[serde(default)]
    role: Option<AdminRole>,
    #[serde(default)]
    password: Option<Secret>,
}

async fn update_admin<S, B>(
    state: AppState,
    headers: HeaderMap,
    username: String,
    body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let username = decode_segment(&username)?;
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let change: AdminChange = parse_json(&body)?;
    if change.role.is_none() && change.password.is_none() {
        return Err(ApiError::bad_request("send a new role, a new password, or both"));
    }
    if let Some(password) = &change.password {
        state.auth.reset_password(&username, password).await?;
        tracing::info!(username = %username, "admin password reset");
    }
    let mut view = None;
    if let Some(role) = change.role {
        let changed = state.auth.set_admin_role(&username, role).await?;
        tracing::info!(username = %changed.username, role = role.as_str(), "admin role changed");
        view = Some(changed);
    }
    let view = match view {
        Some(v) => v,
        None => state
            .auth
            .list_admins()
            .await?
            .into_iter()
            .find(|a| a.username.eq_ignore_ascii_case(&username))
            .ok_or_else(|| ApiError::new(404, "not_found", "admin account not found"))?,
    };
    Ok(json_response(200, &json!(view)))
}

async fn remove_admin(state: AppState, headers: HeaderMap, username: String) -> Result<Response, ApiError> {
    // The gate let only a writer through; who it is decides what may be removed.
    let principal = require_admin(&state, &headers).await?;
    let username = decode_segment(&username)?;
    let acting = match &principal {
        Principal::AdminSession { username, .. } => username.as_str(),
        Principal::ApiKey { .. } => "",
    };
    state.auth.remove_admin(acting, &username).await?;
    tracing::info!(username = %username, "admin account removed");
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: Secret,
    new_password: Secret,
}

/// Changes the signed-in account's password; its other sessions end and this one gets a
/// fresh cookie.
async fn change_own_password<S, B>(state: AppState, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let username = match require_admin(&state, &headers).await? {
        Principal::AdminSession { username, .. } => username,
        Principal::ApiKey { .. } => {
            return Err(ApiError::bad_request(
                "an API key has no password; sign in to change an account's password",
            ))
        }
    };
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let change: PasswordChange = parse_json(&body)?;
    let token = state
        .auth
        .change_own_password(&username, &change.current_password, &change.new_password)
        .await?;
    tracing::info!(username = %username, "admin changed their password");
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        token.expose(),
        state.auth.session_ttl().as_secs()
    );
    let mut response = json_response(200, &json!({"username": username}));
    let value = HeaderValue::from_str(&cookie)
        .map_err(|_| ApiError::new(500, "internal_error", "cannot set the session cookie"))?;
    response.headers_mut().insert(warp::http::header::SET_COOKIE, value);
    Ok(response)
}

/// Usernames may hold spaces and other characters the UI percent-encodes in the path.
fn decode_segment(segment: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("the username in the path is not valid UTF-8"))
}

//! What every model endpoint does before the exchange: authorise and rate-limit the key,
//! read the overrides and the body, and apply the key's allow-lists to the request.

use super::error::ApiError;
use super::request::{api_key, header, read_json_body, route_overrides};
use crate::dispatch::{ChatRequest, RouteOverrides, Routed};
use crate::usage::Meter;
use crate::AppState;
use bytes::Bytes;
use warp::http::HeaderMap;

/// Client API: the key, then its limits (429 with `Retry-After` when over one; on a fleet,
/// a request may wait briefly for this router's share of its key's rate). The meter learns
/// whose request this is either way.
pub async fn authorize_and_limit(state: &AppState, headers: &HeaderMap, meter: &mut Meter) -> Result<(), ApiError> {
    if let Some(session) = header(headers, "x-claude-code-session-id") {
        meter.set_session(Some(session));
    }
    let principal = match state.auth.authorize_client(api_key(headers)) {
        Ok(principal) => principal,
        Err(e) => {
            // An expired key is still a known key: its refusals belong on its usage rows.
            if let crate::auth::AuthError::KeyExpired { key_id, .. } = &e {
                meter.set_api_key(Some(key_id.clone()));
            }
            return Err(e.into());
        }
    };
    if let crate::auth::Principal::ApiKey { id, limits, .. } = principal {
        meter.set_api_key(Some(id.clone()));
        state.usage.admit(&id, limits).await.map_err(|e| {
            ApiError::new(429, "rate_limited", e.message).with_retry_after(Some(e.retry_after_secs.to_string()))
        })?;
    }
    Ok(())
}

/// What every model endpoint does first, in this order: authorise and rate-limit the key
/// (a refused caller's body is never read), read the `X-Auxot-*` overrides, then the body
/// within the size limit.
pub async fn admit<S, B>(
    state: &AppState,
    headers: &HeaderMap,
    body: S,
    meter: &mut Meter,
) -> Result<(RouteOverrides, Bytes), ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    authorize_and_limit(state, headers, meter).await?;
    let overrides = route_overrides(headers)?;
    let body = read_json_body(headers, body, state.config.body_limit).await?;
    Ok((overrides, body))
}

/// The request, narrowed to what the caller's key may reach, routed by the exchange.
pub async fn route(state: &AppState, mut request: ChatRequest, meter: &mut Meter) -> Result<Routed, ApiError> {
    if let Some(key_id) = meter.api_key_id() {
        super::key_grant::enforce(state, key_id, &request.model, &mut request.overrides)?;
    }
    Ok(crate::exchange::route(&state.dispatcher, request, meter).await?)
}

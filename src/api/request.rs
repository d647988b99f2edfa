//! Reading what a request carries: credentials, a size-limited body, a typed JSON body.

use super::error::ApiError;
use crate::bounded::{read_to_limit, ReadError};
use crate::dispatch::rules::validate_queue_timeout;
use crate::dispatch::{RouteOverrides, Tier};
use bytes::{Buf, Bytes};
use futures_util::Stream;
use serde::de::DeserializeOwned;
use std::time::Duration;
use warp::http::header::{AsHeaderName, HeaderName};
use warp::http::HeaderMap;

pub const SESSION_COOKIE: &str = "auxot_session";

/// The API key from `Authorization: Bearer <key>` or `x-api-key: <key>`.
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(warp::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim))
        .filter(|k| !k.is_empty())
}

pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(warp::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

pub fn header(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Reads the whole body, refusing (413) as soon as it passes `limit` — whether or not the
/// client declared its length.
pub async fn read_body<S, B>(headers: &HeaderMap, body: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = || {
        ApiError::new(
            413,
            "body_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let expected = declared.map_or(0, |len| usize::try_from(len).unwrap_or(usize::MAX));
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    read_to_limit(body, limit, expected).await.map_err(|e| match e {
        ReadError::TooLarge { .. } => too_large(),
        ReadError::Broken(e) => match stalled(&e) {
            Some(stalled) => ApiError::new(408, "request_timeout", stalled.to_string()),
            None => ApiError::bad_request(format!("could not read the request body: {e}")),
        },
    })
}

/// The stall behind a body that broke off, if that is why (`filters::WatchedBody`).
fn stalled(error: &warp::Error) -> Option<&super::filters::BodyStalled> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(stalled) = error.downcast_ref::<super::filters::BodyStalled>() {
            return Some(stalled);
        }
        cause = error.source();
    }
    None
}

/// A model request's body: within the limit, and UTF-8 as JSON must be (RFC 8259). The
/// request parsers leave the strings they do not read (message content) as raw bytes, so
/// without this a body that is not UTF-8 would reach a target just as it came.
pub async fn read_json_body<S, B>(headers: &HeaderMap, body: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(headers, body, limit).await?;
    if let Err(e) = std::str::from_utf8(&body) {
        return Err(ApiError::new(
            400,
            "invalid_json",
            format!("request body is not valid JSON: not UTF-8 at byte {}", e.valid_up_to()),
        ));
    }
    Ok(body)
}

/// A chat message read only to check that it has a role; its content stays raw.
#[derive(serde::Deserialize)]
pub struct RolePeek {
    #[allow(dead_code)]
    role: String,
}

/// What every chat request must carry, whatever its dialect.
pub fn require_model_and_messages(model: &str, messages: usize) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("model must not be empty"));
    }
    if messages == 0 {
        return Err(ApiError::bad_request("messages must hold at least one message"));
    }
    Ok(())
}

/// Parses a JSON body into `T`, naming the offending field in the error.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("request body is empty; send a JSON object"));
    }
    // Tracking the path costs an allocation per field on every request; only a body that
    // fails is parsed again with it, for the message.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            format!("request body is not valid JSON: {inner}")
        } else if path == "." {
            format!("invalid request body: {inner}")
        } else {
            format!("invalid request body at '{path}': {inner}")
        };
        ApiError::new(400, "invalid_json", what)
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::new(400, "invalid_json", format!("request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// The request's own routing from its `X-Auxot-*` headers.
/// The routing headers, named once rather than parsed from text on every request.
const TIER_HEADER: HeaderName = HeaderName::from_static("x-auxot-tier");
const WAIT_HEADER: HeaderName = HeaderName::from_static("x-auxot-wait-ms");
const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-auxot-provider");

pub fn route_overrides(headers: &HeaderMap) -> Result<RouteOverrides, ApiError> {
    let tiers = match header(headers, TIER_HEADER) {
        Some(value) => {
            let names: Vec<&str> = value.split(',').collect();
            Some(Tier::parse_order(&names).map_err(|e| ApiError::bad_request(format!("X-Auxot-Tier: {e}")))?)
        }
        None => None,
    };
    let wait = match header(headers, WAIT_HEADER) {
        Some(value) => {
            let ms: u64 = value
                .parse()
                .map_err(|_| ApiError::bad_request("X-Auxot-Wait-Ms must be a whole number of milliseconds"))?;
            validate_queue_timeout(ms).map_err(|e| ApiError::bad_request(format!("X-Auxot-Wait-Ms: {e}")))?;
            Some(Duration::from_millis(ms))
        }
        None => None,
    };
    Ok(RouteOverrides {
        provider: header(headers, PROVIDER_HEADER).map(str::to_string),
        tiers,
        wait,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    #[test]
    fn api_key_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer aux_abc"));
        assert_eq!(api_key(&h), Some("aux_abc"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("aux_def"));
        assert_eq!(api_key(&h), Some("aux_def"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic xyz"));
        assert_eq!(api_key(&h), None);
    }

    #[test]
    fn session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=1; auxot_session=tok; b=2"));
        assert_eq!(session_token(&h), Some("tok"));
    }

    #[test]
    fn json_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            name: String,
        }
        let e = parse_json::<Body>(br#"{"name": 5}"#).unwrap_err();
        assert!(e.message.contains("'name'"), "{}", e.message);
        let e = parse_json::<Body>(b"{nope").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = parse_json::<Body>(b"").unwrap_err();
        assert!(e.message.contains("empty"), "{}", e.message);
    }
}

//! Response bodies, built the one way warp 0.4 allows: whole bytes, or a stream; and the
//! exchange's reply written as one.

use super::error::{ApiError, Dialect};
use crate::dispatch::{Routed, Tier};
use crate::exchange::Client;
use crate::usage::Meter;
use bytes::Bytes;
use futures_util::Stream;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

/// A reply whose body is `bytes`, status 200, no headers yet.
pub fn full(bytes: impl Into<Bytes>) -> Response {
    Response::new(bytes.into().into())
}

/// A reply with no body, status 200.
pub fn empty() -> Response {
    full(Bytes::new())
}

/// A reply whose body is forwarded chunk by chunk as `stream` yields it. warp asks for a
/// `Sync` stream; ours (reqwest's, the translators') are `Send` only and polled by one task
/// at a time, which `SyncStream` states without a lock.
pub fn streamed<S, E>(stream: S) -> Response
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    warp::reply::stream(sync_wrapper::SyncStream::new(stream)).into_response()
}

/// The exchange's reply as HTTP: its status and content type, the route it took, its body
/// as it comes.
pub fn exchanged(reply: crate::exchange::Reply) -> Response {
    let mut response = match reply.body {
        crate::exchange::Body::Whole(bytes) => full(bytes),
        crate::exchange::Body::Stream(body) => streamed(body),
    };
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    if reply.sse {
        sse_headers(&mut response);
    } else if let Ok(value) = HeaderValue::from_str(&reply.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    route_headers(&mut response, reply.tier, &reply.route);
    response
}

/// A model request's answer in the client's dialect: what the exchange replies once it is
/// routed, or the error that stopped it, settled on the request's usage row either way (a
/// refused request leaves one too).
pub async fn answered(routed: Result<(Client, Routed), ApiError>, mut meter: Meter, dialect: Dialect) -> Response {
    match routed {
        Ok((client, routed)) => match crate::exchange::answer(routed, client, meter).await {
            Ok(reply) => exchanged(reply),
            Err(e) => ApiError::from(e).into_response(dialect),
        },
        Err(e) => {
            meter.failed(e.code, e.status);
            e.into_response(dialect)
        }
    }
}

pub fn sse_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// Every routed reply says where it went, streams included.
pub fn route_headers(response: &mut Response, tier: Tier, route: &str) {
    let headers = response.headers_mut();
    headers.insert("x-auxot-tier", HeaderValue::from_static(tier.as_str()));
    if let Ok(value) = HeaderValue::from_str(route) {
        headers.insert("x-auxot-route", value);
    }
}

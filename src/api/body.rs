//! Response bodies, built the one way warp 0.4 allows: whole bytes, or a stream.

use bytes::Bytes;
use futures_util::Stream;
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

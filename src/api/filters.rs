//! What every request passes through before (and after) its route: the client's address,
//! its request id, the cross-site write guard, security headers, and keeping refused
//! connections usable.

use super::conn::StallClock;
use super::error::{ApiError, Dialect};
use super::request::{api_key, session_token};
use crate::AppState;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::http::Request;
use warp::http::{header, HeaderMap, HeaderValue, Method, Version};
use warp::reply::Response;
use warp::Filter;

tokio::task_local! {
    /// The id of the request whose handler is running: error replies and their log line
    /// carry it, so a client's report finds the server's record.
    static REQUEST_ID: Arc<str>;
}

/// The running request's id (`None` outside a request's handler).
pub fn current_request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// Runs `work` as the request `id` (what `serve_request` does for every request).
#[cfg(test)]
pub async fn with_request_id<F: std::future::Future>(id: &str, work: F) -> F::Output {
    REQUEST_ID.scope(Arc::from(id), work).await
}

const REQUEST_ID_HEADER: &str = "x-request-id";

/// The client's own `X-Request-Id` when it is a sane token (a proxy in front may set one),
/// else a fresh one: a per-process random start plus a counter, unique and cheap.
fn request_id(headers: &HeaderMap) -> Arc<str> {
    static NEXT: LazyLock<AtomicU64> = LazyLock::new(|| AtomicU64::new(rand::random::<u64>() >> 1));
    let given = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    match given {
        Some(id) => Arc::from(id),
        None => Arc::from(format!("{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))),
    }
}

/// The TCP peer of the connection a request came on, put into the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The client's IP address (`None` when the request did not come over TCP).
pub fn client_ip() -> impl Filter<Extract = (Option<IpAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<ClientAddr>().map(|addr: Option<ClientAddr>| addr.map(|a| a.0.ip()))
}

/// The address a request came from: the TCP peer, unless the peer is a trusted reverse
/// proxy — then the right-most `X-Forwarded-For` entry that is not itself a trusted proxy
/// (entries left of it were written by the client and prove nothing).
pub fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else { return Some(peer) };
        for hop in text.split(',') {
            match parse_hop(hop) {
                Some(ip) => hops.push(ip),
                // A garbled chain: believe only the proxy itself.
                None => return Some(peer),
            }
        }
    }
    let mut nearest = peer;
    for hop in hops.into_iter().rev() {
        if !is_trusted(&hop) {
            return Some(canonical(hop));
        }
        nearest = hop;
    }
    Some(canonical(nearest))
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The UI's Content-Security-Policy: the bundled SPA loads its own hashed script and
/// stylesheet and talks to its own origin; nothing inline, nothing from elsewhere, no frames.
pub const UI_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// For everything that is not a page (JSON, SSE): nothing may run or frame it.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The headers every UI response carries.
pub fn ui_security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(UI_CSP));
    base_security_headers(headers);
}

fn base_security_headers(headers: &mut HeaderMap) {
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// Refuses cross-site writes made with the admin's session cookie; answers only the
/// requests it refuses (the rest fall through to their routes).
///
/// A state-changing `/api/` request that is not authenticated by a key (`Authorization:
/// Bearer` / `x-api-key` cannot be attached by another site without a CORS preflight, which
/// auxot never grants) must:
/// - come from this origin: `Sec-Fetch-Site` (when sent) is `same-origin`, and `Origin` (when
///   sent) names the host and port the request was sent to. A client that sends neither is
///   not a browser, so not a cross-site vector;
/// - carry its body as `Content-Type: application/json`: the only types another site's form
///   can send are urlencoded, multipart and text/plain.
pub fn csrf_guard() -> BoxedFilter<(Response,)> {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and_then(
            |method: Method, path: warp::path::FullPath, headers: HeaderMap| async move {
                match cross_site_refusal(&method, path.as_str(), &headers) {
                    Some(response) => Ok(response),
                    None => Err(warp::reject::not_found()),
                }
            },
        )
        .boxed()
}

/// Paths a viewer may write to: signing in and out, and changing their own password.
const OPEN_TO_VIEWERS: [&str; 4] = ["/api/login", "/api/logout", "/api/setup", "/api/session/password"];
/// Paths a viewer may not even read: a backup holds every sealed secret.
const CLOSED_TO_VIEWERS: [&str; 1] = ["/api/backup"];

/// An admin route's way to the state: it hands the state over only once the caller is an
/// admin (a session or an admin key), and to a viewer only for reading. Admin route modules
/// get the state from here alone, so a new route cannot skip the check; it runs after the
/// route's path and method matched, so other routes never pay for it.
pub fn admin(state: AppState) -> impl Filter<Extract = (AppState,), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and_then(move |method: Method, path: warp::path::FullPath, headers: HeaderMap| {
            let state = state.clone();
            async move {
                match admin_refusal(&state, &method, path.as_str(), &headers).await {
                    None => Ok(state),
                    Some(error) => Err(warp::reject::custom(Refused(error))),
                }
            }
        })
}

/// An admin route refused its caller; `api::routes` answers it in the admin dialect.
#[derive(Debug)]
pub struct Refused(pub ApiError);
impl warp::reject::Reject for Refused {}

async fn admin_refusal(state: &AppState, method: &Method, path: &str, headers: &HeaderMap) -> Option<ApiError> {
    let principal = match state
        .auth
        .authorize_admin(api_key(headers), session_token(headers))
        .await
    {
        Ok(principal) => principal,
        Err(e) => return Some(e.into()),
    };
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let guarded = (!reads && !OPEN_TO_VIEWERS.contains(&path)) || CLOSED_TO_VIEWERS.contains(&path);
    (guarded && !principal.can_change()).then(|| crate::auth::AuthError::ReadOnly.into())
}

fn cross_site_refusal(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let admin_path = path == "/api" || path.starts_with("/api/");
    if safe || !admin_path || api_key(headers).is_some() {
        return None;
    }
    if let Some(reason) = foreign_origin(headers) {
        return Some(ApiError::new(403, "cross_site_request", reason).into_response(Dialect::Admin));
    }
    if !json_or_empty(headers) {
        return Some(
            ApiError::new(
                415,
                "unsupported_media_type",
                "send the request body as 'Content-Type: application/json'",
            )
            .into_response(Dialect::Admin),
        );
    }
    None
}

fn foreign_origin(headers: &HeaderMap) -> Option<&'static str> {
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}").trim());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        // `none` is a request the user typed or bookmarked, never a script's or a form's.
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return Some("cross-site request refused: this endpoint only accepts writes from the auxot UI's own origin (or with an API key)");
        }
    }
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or("");
        if !same_host(origin, host) {
            return Some("cross-origin request refused: the Origin header does not match this server; use the auxot UI on its own address, or an API key");
        }
    }
    None
}

/// `Origin: scheme://host[:port]` against `Host: host[:port]`, default ports filled in.
fn same_host(origin: &str, host: &str) -> bool {
    let Ok(origin) = url::Url::parse(origin) else {
        return false; // "null" (sandboxed frames, file:) and garbage
    };
    let Some(origin_host) = origin.host_str() else {
        return false;
    };
    let origin_port = origin.port_or_known_default();
    let Ok(request) = url::Url::parse(&format!("{}://{host}", origin.scheme())) else {
        return false;
    };
    let same_name = request.host_str().is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
    same_name && request.port_or_known_default() == origin_port
}

fn json_or_empty(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json")),
        None => {
            let declared_empty = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|v| v.trim() == "0");
            declared_empty && !headers.contains_key(header::TRANSFER_ENCODING)
        }
    }
}

/// Serves one request through `service` (the composed routes), then makes sure the
/// connection stays usable: a request whose body the route never read (refused before
/// reading: 401, 403, 413, 429 …) is answered with `Connection: close`, so an HTTP/1.1
/// client opens a new connection instead of finding this one closed under its next request.
/// A body that sends nothing for `body_idle` fails its read (`BodyStalled`).
pub async fn serve_request<S>(
    mut service: S,
    peer: Option<SocketAddr>,
    body_idle: Duration,
    request: Request<Incoming>,
) -> Result<Response, Infallible>
where
    S: Service<Request<WatchedBody>, Response = Response, Error = Infallible>,
{
    let (mut parts, body) = request.into_parts();
    let id = request_id(&parts.headers);
    if let Some(peer) = peer {
        parts.extensions.insert(ClientAddr(peer));
    }
    let http1 = matches!(parts.version, Version::HTTP_10 | Version::HTTP_11);
    let read_whole = Arc::new(AtomicBool::new(body.is_end_stream()));
    let body = WatchedBody {
        inner: body,
        read_whole: read_whole.clone(),
        stall: StallClock::new(body_idle),
    };
    let handled = REQUEST_ID.scope(id.clone(), service.call(Request::from_parts(parts, body)));
    let mut response = match handled.await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(API_CSP));
    }
    base_security_headers(headers);
    if http1 && !read_whole.load(Ordering::Acquire) && response.status() != warp::http::StatusCode::SWITCHING_PROTOCOLS
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// Why a request body could not be read: the client sent nothing more of it for the
/// client timeout (a slow-loris, or a client gone silent mid-upload).
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing of its request body for {}s", .0.as_secs())]
pub struct BodyStalled(pub Duration);

/// A request body that records when it has been read to its end, and fails once the
/// client sends nothing of it for the stall clock's limit.
pub struct WatchedBody {
    inner: Incoming,
    read_whole: Arc<AtomicBool>,
    /// Runs while the read waits on the client.
    stall: StallClock,
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(next) => {
                this.stall.progressed();
                if next.is_none() {
                    this.read_whole.store(true, Ordering::Release);
                }
                Poll::Ready(next.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending if this.stall.expired(cx) => {
                Poll::Ready(Some(Err(Box::new(BodyStalled(this.stall.limit())))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.2.3")]);
        // No trusted proxies configured: the header is ignored.
        assert_eq!(client_address(ip("127.0.0.1"), &forwarded, &[]), ip("127.0.0.1"));
        // From an untrusted peer: ignored, whatever it says.
        assert_eq!(
            client_address(ip("198.51.100.7"), &forwarded, &trusted),
            ip("198.51.100.7")
        );
        // Through two trusted hops: the first untrusted address from the right.
        assert_eq!(client_address(ip("127.0.0.1"), &forwarded, &trusted), ip("203.0.113.9"));
        // A client cannot hide behind a spoofed left-most entry.
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9")]);
        assert_eq!(client_address(ip("127.0.0.1"), &spoofed, &trusted), ip("203.0.113.9"));
        // Several header lines are one list; ports and IPv4-mapped IPv6 are understood.
        let split = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "[::ffff:203.0.113.9]:443"),
        ]);
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &split, &trusted),
            ip("203.0.113.9")
        );
        // Garbage: only the proxy is believed.
        let garbage = headers(&[("x-forwarded-for", "203.0.113.9, not-an-ip")]);
        assert_eq!(client_address(ip("127.0.0.1"), &garbage, &trusted), ip("127.0.0.1"));
        // No header: the proxy itself.
        assert_eq!(
            client_address(ip("127.0.0.1"), &HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(client_address(None, &forwarded, &trusted), None);
    }

    #[test]
    fn a_sane_client_request_id_is_kept_and_any_other_replaced() {
        let given = |value: &'static str| request_id(&headers(&[("x-request-id", value)]));
        assert_eq!(&*given("abc-123_X.9"), "abc-123_X.9");
        for bad in ["", "has space", "semi;colon", "quote\"", &"x".repeat(65)] {
            let value = HeaderValue::from_str(bad).unwrap();
            let mut h = HeaderMap::new();
            h.insert("x-request-id", value);
            let id = request_id(&h);
            assert_eq!(id.len(), 16, "{bad:?} gave {id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        let (a, b) = (request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
        assert_ne!(a, b, "fresh ids are unique");
        assert_eq!(current_request_id(), None, "no id outside a request");
    }

    #[test]
    fn origins_must_match_the_host_and_port() {
        assert!(same_host("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_host("https://auxot.example", "auxot.example"));
        assert!(same_host("https://auxot.example", "auxot.example:443"));
        assert!(same_host("http://AUXOT.example", "auxot.example"));
        assert!(!same_host("http://127.0.0.1:8081", "127.0.0.1:8080"));
        assert!(!same_host("http://evil.example", "auxot.example"));
        assert!(!same_host("http://sub.auxot.example", "auxot.example"));
        assert!(!same_host("null", "auxot.example"));
        assert!(!same_host("http://auxot.example", ""));
    }

    #[test]
    fn cookie_writes_need_same_origin_and_json_keys_do_not() {
        let post = Method::POST;
        let cookie = ("cookie", "auxot_session=t");
        let host = ("host", "127.0.0.1:8080");
        let json = ("content-type", "application/json");
        let evil = ("origin", "http://evil.example");
        let ours = ("origin", "http://127.0.0.1:8080");
        let refused = |pairs: &[(&'static str, &'static str)]| {
            cross_site_refusal(&post, "/api/api-keys", &headers(pairs)).map(|r| r.status().as_u16())
        };
        assert_eq!(refused(&[cookie, host, json, evil]), Some(403));
        assert_eq!(
            refused(&[cookie, host, ("content-type", "text/plain"), ours]),
            Some(415)
        );
        assert_eq!(
            refused(&[cookie, host, ("content-type", "application/x-www-form-urlencoded")]),
            Some(415)
        );
        assert_eq!(
            refused(&[cookie, host, json, ("sec-fetch-site", "same-site")]),
            Some(403)
        );
        assert_eq!(
            refused(&[cookie, host, json, ours, ("sec-fetch-site", "same-origin")]),
            None
        );
        assert_eq!(refused(&[cookie, host, json]), None);
        assert_eq!(refused(&[cookie, host, ("content-length", "0"), ours]), None);
        assert_eq!(
            refused(&[
                ("authorization", "Bearer aux_x"),
                host,
                ("content-type", "text/plain"),
                evil
            ]),
            None
        );
        assert!(cross_site_refusal(&Method::GET, "/api/api-keys", &headers(&[cookie, evil])).is_none());
        assert!(cross_site_refusal(&post, "/v1/chat/completions", &headers(&[evil])).is_none());
    }
}

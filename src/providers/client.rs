//! The one client for cloud providers: hyper's pooled client over our own connector (DNS by
//! hickory, TCP_NODELAY, TLS by rustls, the `HTTP(S)_PROXY`/`NO_PROXY` environment), and
//! the connect limit an admin can change while the process runs.
//!
//! Providers are spoken to over HTTP/1.1, pooled and kept alive, even when they offer
//! HTTP/2. HTTP/2 would put every request to a provider on one connection: requests past the
//! provider's stream limit (often 100–256) would wait in hyper, unseen, for a stream to end
//! (hyper's pool never opens a second connection), and a client that stops reading its stream
//! holds part of the connection's shared window (with hyper's defaults, three such clients
//! stalled every other request to that provider). Over HTTP/1.1 each request has its own
//! connection, read ahead of its client by at most `UPSTREAM_READ_BUFFER`.
//!
//! Why not reqwest here: every proxied request went through reqwest's per-request layers
//! (its URL parsed twice, redirect policy, header map copies) and each pooled connection held
//! a boxed stream sized for TLS even on plain HTTP; on hyper directly a router serves about a
//! tenth more requests per core (BENCHMARKS.md). Redirects are not followed: one could carry
//! a provider key header to another host.

use super::connect::{ConnectTimedOut, ConnectTimeout};
use super::ProviderError;
use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, PROXY_AUTHORIZATION, USER_AGENT};
use http::uri::Scheme;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle pooled connections are closed after this long (providers close theirs at 60–120 s).
const POOL_IDLE: Duration = Duration::from_secs(90);
/// The most a provider connection reads ahead of the client (see `HttpClient::with`).
const UPSTREAM_READ_BUFFER: usize = 64 * 1024;
/// Idle connections kept per provider. Never more are idle than were busy at once, so this
/// bound only matters in a burst: with 64, a flood of 1,000 clients closed every connection
/// past the 64th as its answer came back and opened a new one (a TLS handshake, against a
/// real provider) for the next request: connect and close took a tenth of the CPU and
/// halved the throughput.
const POOL_MAX_IDLE_PER_HOST: usize = 4096;
/// TCP keepalive probes on upstream connections: a provider connection that died silently (a
/// NAT or firewall dropping it mid-generation) fails its stream within about a minute
/// instead of hanging until the client gives up.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 3;

/// The shared upstream client. Cloning shares the pool.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<Connector, Full<Bytes>>,
    proxies: Arc<Matcher>,
    user_agent: HeaderValue,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

impl HttpClient {
    /// The production client: proxies from the environment, the public web's roots.
    pub fn new(limit: &ConnectTimeout) -> Result<HttpClient, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        HttpClient::with(limit, Matcher::from_env(), roots)
    }

    /// A client with the proxies and trusted roots given (tests use their own of both).
    pub fn with(
        limit: &ConnectTimeout,
        proxies: Matcher,
        roots: rustls::RootCertStore,
    ) -> Result<HttpClient, ClientError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // HTTP/1.1 only (see the module comment).
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut tcp = HttpConnector::new_with_resolver(Resolver::default());
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(KEEPALIVE));
        tcp.set_keepalive_interval(Some(KEEPALIVE));
        tcp.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        let proxies = Arc::new(proxies);
        let connector = Connector {
            tcp,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            proxies: proxies.clone(),
            limit: limit.clone(),
        };
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            // Read ahead of a client that does not keep up: bounded (hyper's default is
            // ~400 KiB a connection). Also the largest response head a provider may send.
            .http1_max_buf_size(UPSTREAM_READ_BUFFER)
            .build(connector);
        Ok(HttpClient {
            inner,
            proxies,
            user_agent: HeaderValue::from_static(concat!("auxot/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// Sends `request` and waits up to `timeout` for the response head; the body streams.
    /// A request without a `user-agent` gets auxot's, one without `accept` gets `*/*`.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ProviderError> {
        let headers = request.headers_mut();
        headers.entry(USER_AGENT).or_insert_with(|| self.user_agent.clone());
        headers.entry(ACCEPT).or_insert(HeaderValue::from_static("*/*"));
        if request.uri().scheme() == Some(&Scheme::HTTP) {
            // Through a proxy a plain-HTTP request is sent to the proxy itself (absolute
            // form), so its credentials go on the request; HTTPS tunnels carry them on CONNECT.
            if let Some(auth) = proxy_for(&self.proxies, request.uri()).and_then(|p| p.basic_auth().cloned()) {
                request.headers_mut().insert(PROXY_AUTHORIZATION, auth);
            }
        }
        match tokio::time::timeout(timeout, self.inner.request(request)).await {
            Err(_) => Err(ProviderError::Timeout(timeout)),
            Ok(Err(e)) if short_of_resources(&e) => Err(ProviderError::Exhausted(super::describe_error(&e))),
            Ok(Err(e)) => Err(ProviderError::Unreachable(super::describe_error(&e))),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// Whether a failed request failed for want of the router's own resources: no file
/// descriptor left (process or system), no memory or buffer, no free local port. The
/// provider is then not at fault, and is not cooled down for it.
fn short_of_resources(e: &(dyn std::error::Error + 'static)) -> bool {
    use rustix::io::Errno;
    let mut cause = Some(e);
    while let Some(error) = cause {
        let errno = error.downcast_ref::<std::io::Error>().and_then(Errno::from_io_error);
        if errno.is_some_and(|errno| {
            [
                Errno::MFILE,
                Errno::NFILE,
                Errno::NOBUFS,
                Errno::NOMEM,
                Errno::ADDRNOTAVAIL,
            ]
            .contains(&errno)
        }) {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The proxy `dst` goes through, if any. A loopback destination (`localhost`, 127.0.0.0/8,
/// `::1`) never does, whatever `NO_PROXY` says: through a proxy it would reach the proxy's
/// own host, never the model server on this box that it names. The matcher is asked first:
/// with no proxy configured (the usual case) a request pays nothing more.
fn proxy_for(proxies: &Matcher, dst: &Uri) -> Option<hyper_util::client::proxy::matcher::Intercept> {
    let proxy = proxies.intercept(dst)?;
    let host = bare_host(dst)?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .len()
            .checked_sub(".localhost".len())
            .is_some_and(|at| host.as_bytes()[at..].eq_ignore_ascii_case(b".localhost"))
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then_some(proxy)
}

/// `dst`'s host without the brackets of an IPv6 literal.
fn bare_host(dst: &Uri) -> Option<&str> {
    let host = dst.host()?;
    Some(host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host))
}

/// `request` with `body`, as the client sends it.
pub(crate) fn with_body(request: http::request::Builder, body: Bytes) -> Result<Request<Full<Bytes>>, ProviderError> {
    request
        .body(Full::new(body))
        .map_err(|e| ProviderError::BadResponse(format!("cannot build the request: {e}")))
}

/// Parses `base_url` followed by `path` (a stored base URL was checked when it was saved).
pub fn endpoint(base_url: &str, path: &str) -> Result<Uri, ProviderError> {
    let text = format!("{base_url}{path}");
    Uri::try_from(text).map_err(|e| ProviderError::Unreachable(format!("the provider URL is not valid: {e}")))
}

/// DNS through hickory: a static binary has no NSS for `getaddrinfo`. IPv4 and IPv6 both;
/// `/etc/hosts` is read. Built on first use so a missing `/etc/resolv.conf` is an error
/// of the request that needed a name, not of the start.
#[derive(Clone, Default)]
struct Resolver {
    hickory: Arc<OnceLock<Result<hickory_resolver::TokioResolver, String>>>,
}

impl Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let hickory = self.hickory.clone();
        Box::pin(async move {
            let resolver = hickory
                .get_or_init(|| {
                    let mut builder = hickory_resolver::TokioResolver::builder_tokio()
                        .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?;
                    builder.options_mut().ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
                    Ok(builder.build())
                })
                .as_ref()
                .map_err(|e| BoxError::from(e.clone()))?;
            let found = resolver.lookup_ip(name.as_str()).await?;
            Ok(found
                .iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// Opens a connection for the pool: TCP, through a proxy where the environment says so,
/// then TLS for `https`, all within the connect limit read at this moment.
#[derive(Clone)]
struct Connector {
    tcp: HttpConnector<Resolver>,
    tls: tokio_rustls::TlsConnector,
    proxies: Arc<Matcher>,
    limit: ConnectTimeout,
}

#[derive(Debug, thiserror::Error)]
#[error("an https:// proxy is not supported; give HTTPS_PROXY as http://host:port (the tunnel to the provider is TLS either way)")]
struct TlsProxy;

impl Connector {
    async fn open(mut self, dst: Uri) -> Result<Upstream, BoxError> {
        let https = dst.scheme() == Some(&Scheme::HTTPS);
        let Some(proxy) = proxy_for(&self.proxies, &dst) else {
            let tcp = self.tcp.call(dst.clone()).await?;
            return match https {
                true => self.tls(tcp, &dst).await,
                false => Ok(Upstream::Plain {
                    io: tcp,
                    proxied: false,
                }),
            };
        };
        if proxy.uri().scheme() == Some(&Scheme::HTTPS) {
            return Err(Box::new(TlsProxy));
        }
        if !https {
            let tcp = self.tcp.call(proxy.uri().clone()).await?;
            return Ok(Upstream::Plain { io: tcp, proxied: true });
        }
        let mut tunnel = Tunnel::new(proxy.uri().clone(), self.tcp.clone());
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
        let tcp = tunnel.call(dst.clone()).await?;
        self.tls(tcp, &dst).await
    }

    async fn tls(&self, tcp: TokioIo<TcpStream>, dst: &Uri) -> Result<Upstream, BoxError> {
        let name = rustls::pki_types::ServerName::try_from(bare_host(dst).unwrap_or_default().to_string())?;
        let stream = self.tls.connect(name, tcp.into_inner()).await?;
        Ok(Upstream::Tls(Box::new(TokioIo::new(stream))))
    }
}

impl Service<Uri> for Connector {
    type Response = Upstream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Upstream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let limit = self.limit.get();
        let opening = self.clone().open(dst);
        Box::pin(async move {
            match tokio::time::timeout(limit, opening).await {
                Ok(opened) => opened,
                Err(_) => Err(Box::new(ConnectTimedOut::after(limit)) as BoxError),
            }
        })
    }
}

/// One upstream connection. The TLS state is boxed: most of a pooled plain-HTTP connection's
/// memory would otherwise be a TLS session it never uses.
enum Upstream {
    Plain { io: TokioIo<TcpStream>, proxied: bool },
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for Upstream {
    fn connected(&self) -> Connected {
        match self {
            Upstream::Plain { io, proxied } => io.inner().connected().proxy(*proxied),
            Upstream::Tls(io) => io.inner().get_ref().0.connected(),
        }
    }
}

impl Read for Upstream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain { io, .. } => Pin::new(io).poll_read(cx, buf),
            Upstream::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Upstream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain { io, .. } => Pin::new(io).poll_write(cx, buf),
            Upstream::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain { io, .. } => Pin::new(io).poll_write_vectored(cx, bufs),
            Upstream::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Upstream::Plain { io, .. } => io.is_write_vectored(),
            Upstream::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain { io, .. } => Pin::new(io).poll_flush(cx),
            Upstream::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain { io, .. } => Pin::new(io).poll_shutdown(cx),
            Upstream::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An error wrapping `cause`, as hyper-util wraps a connector's.
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Wrapped(#[source] std::io::Error);

    #[test]
    fn only_the_routers_own_shortages_count_as_short_of_resources() {
        for (errno, short) in [
            (24, true),
            (23, true),
            (105, true),
            (12, true),
            (99, true),
            (111, false),
            (113, false),
        ] {
            let wrapped = Wrapped(std::io::Error::from_raw_os_error(errno));
            assert_eq!(short_of_resources(&wrapped), short, "errno {errno}");
        }
        let plain: Box<dyn std::error::Error> = "tcp open error".into();
        assert!(!short_of_resources(plain.as_ref()));
    }

    /// What the test server saw of one request.
    #[derive(Debug, Clone, serde::Deserialize)]
    struct Seen {
        uri: String,
        version: String,
        user_agent: Option<String>,
        proxy_authorization: Option<String>,
        body: String,
    }

    async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let header = |name: &str| request.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        let seen = serde_json::json!({
            "uri": request.uri().to_string(),
            "version": format!("{:?}", request.version()),
            "user_agent": header("user-agent"),
            "proxy_authorization": header("proxy-authorization"),
        });
        let body = request.into_body().collect().await?.to_bytes();
        let mut seen = seen;
        seen["body"] = String::from_utf8_lossy(&body).into();
        Ok(Response::new(Full::new(Bytes::from(seen.to_string()))))
    }

    /// An echo server (plain, or TLS offering h2 and HTTP/1.1) and how many connections it took.
    async fn echo_server(tls: Option<Arc<rustls::ServerConfig>>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(echo);
                    let Some(tls) = tls else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                        return;
                    };
                    serve_tls(tls, tcp, service).await;
                });
            }
        });
        (addr, accepted)
    }

    /// Serves one TLS connection with the protocol the client chose: h2 (at most 4 streams at
    /// once, as providers limit them) or HTTP/1.1.
    async fn serve_tls<S, B>(tls: Arc<rustls::ServerConfig>, tcp: TcpStream, service: S)
    where
        S: hyper::service::HttpService<Incoming, ResBody = B> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let Ok(stream) = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await else {
            return;
        };
        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(4)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        } else {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    }

    /// A self-signed certificate for 127.0.0.1: the server's config and a root store trusting it.
    fn certificate() -> (Arc<rustls::ServerConfig>, rustls::RootCertStore) {
        let made =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into(), "models.test".into()])
                .unwrap();
        let cert = made.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
        let mut server =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        (Arc::new(server), roots)
    }

    fn client(proxies: Matcher, roots: rustls::RootCertStore) -> HttpClient {
        HttpClient::with(&ConnectTimeout::new(Duration::from_secs(5)), proxies, roots).unwrap()
    }

    fn post(url: &str, body: &'static str) -> Request<Full<Bytes>> {
        Request::post(url)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    async fn seen(response: Response<Incoming>) -> Seen {
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    const SECOND: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn plain_requests_carry_auxots_user_agent_unless_one_is_given_and_share_a_pooled_connection() {
        let (addr, accepted) = echo_server(None).await;
        let http = client(Matcher::builder().build(), rustls::RootCertStore::empty());
        let first = seen(
            http.send(post(&format!("http://{addr}/v1/chat"), "{\"a\":1}"), SECOND)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(first.uri, "/v1/chat");
        assert_eq!(first.body, "{\"a\":1}");
        assert!(first.user_agent.unwrap().starts_with("auxot/"));
        let mut own = post(&format!("http://{addr}/v1/chat"), "");
        own.headers_mut()
            .insert(USER_AGENT, HeaderValue::from_static("claude-cli/2.0"));
        let second = seen(http.send(own, SECOND).await.unwrap()).await;
        assert_eq!(second.user_agent.as_deref(), Some("claude-cli/2.0"));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the second request reuses the pooled connection"
        );
    }

    /// A TLS server offering h2 and HTTP/1.1 (`serve_tls`): `/fast` streams ~64 MB as fast
    /// as the client takes it, anything else answers `ok`.
    async fn streaming_server(tls: Arc<rustls::ServerConfig>) -> SocketAddr {
        use http_body_util::{combinators::BoxBody, StreamBody};
        async fn serve(request: Request<Incoming>) -> Result<Response<BoxBody<Bytes, hyper::Error>>, hyper::Error> {
            if request.uri().path() != "/fast" {
                return Ok(Response::new(
                    Full::new(Bytes::from_static(b"ok")).map_err(|e| match e {}).boxed(),
                ));
            }
            let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
            let frames = futures_util::stream::iter(
                (0..4096).map(move |_| Ok::<_, hyper::Error>(hyper::body::Frame::data(chunk.clone()))),
            );
            Ok(Response::new(StreamBody::new(frames).boxed()))
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let tls = tls.clone();
                tokio::spawn(async move {
                    serve_tls(tls, tcp, hyper::service::service_fn(serve)).await;
                });
            }
        });
        addr
    }

    /// Over HTTP/2 every request to a provider would share one connection: past its stream
    /// limit further requests would wait, and clients that stop reading would hold its
    /// shared window (hyper's defaults: three of them stalled every other request).
    #[tokio::test]
    async fn streams_whose_clients_stop_reading_do_not_hold_up_other_requests_to_the_provider() {
        let (tls, roots) = certificate();
        let addr = streaming_server(tls).await;
        let http = client(Matcher::builder().build(), roots);
        let url = |path: &str| format!("https://127.0.0.1:{}{path}", addr.port());
        let mut stalled = Vec::new();
        for _ in 0..8 {
            let response = http.send(post(&url("/fast"), ""), SECOND).await.unwrap();
            assert_eq!(response.version(), http::Version::HTTP_11);
            stalled.push(response);
        }
        // Let the stalled streams take what they may.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answered = tokio::time::timeout(SECOND, async {
            let response = http.send(post(&url("/small"), ""), SECOND).await.unwrap();
            response.into_body().collect().await.unwrap().to_bytes()
        })
        .await;
        assert_eq!(answered.expect("a request to the provider was held up").as_ref(), b"ok");
        drop(stalled);
    }

    #[tokio::test]
    async fn https_speaks_http1_though_the_server_offers_h2_and_refuses_a_certificate_it_does_not_trust() {
        let (tls, roots) = certificate();
        let (addr, _) = echo_server(Some(tls)).await;
        let url = format!("https://127.0.0.1:{}/v1/messages", addr.port());
        let trusted = client(Matcher::builder().build(), roots);
        let got = seen(trusted.send(post(&url, "hi"), SECOND).await.unwrap()).await;
        assert_eq!(got.version, "HTTP/1.1");
        assert_eq!(got.body, "hi");

        let stranger = client(Matcher::builder().build(), rustls::RootCertStore::empty());
        match stranger.send(post(&url, "hi"), SECOND).await {
            Err(ProviderError::Unreachable(why)) => assert!(why.contains("certificate"), "{why}"),
            other => panic!("expected a certificate error, got {:?}", other.map(|r| r.status())),
        }
    }

    /// A forward proxy that answers CONNECT by piping to `target` whatever host was asked
    /// for (names in tests resolve nowhere), keeping each head.
    async fn tunnel_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let kept = heads.clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if client.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    kept.lock().unwrap().push(String::from_utf8(head).unwrap());
                    let mut upstream = TcpStream::connect(target).await.unwrap();
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        (addr, heads)
    }

    #[tokio::test]
    async fn https_through_a_proxy_is_tunnelled_with_connect_and_the_proxy_credentials() {
        let (tls, roots) = certificate();
        let (server, _) = echo_server(Some(tls)).await;
        let (proxy, heads) = tunnel_proxy(server).await;
        let proxies = Matcher::builder().https(format!("http://user:pw@{proxy}")).build();
        let http = client(proxies, roots);
        let url = format!("https://models.test:{}/v1/responses", server.port());
        let got = seen(http.send(post(&url, "x"), SECOND).await.unwrap()).await;
        // Origin form inside the tunnel: the request is the server's, not the proxy's.
        assert_eq!(got.uri, "/v1/responses");
        assert_eq!(got.version, "HTTP/1.1");
        assert_eq!(
            got.proxy_authorization, None,
            "credentials stay on the CONNECT, not inside the tunnel"
        );
        let heads = heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 1);
        assert!(
            heads[0].starts_with(&format!("CONNECT models.test:{} HTTP/1.1\r\n", server.port())),
            "{}",
            heads[0]
        );
        // base64("user:pw")
        assert!(
            heads[0]
                .to_ascii_lowercase()
                .contains("proxy-authorization: basic dxnlcjpwdw=="),
            "{}",
            heads[0]
        );
    }

    #[tokio::test]
    async fn plain_http_through_a_proxy_is_sent_to_it_in_absolute_form_unless_no_proxy_names_the_host() {
        // The echo server plays the proxy: it sees the absolute URI and the credentials.
        let (proxy, seen_by_proxy) = echo_server(None).await;
        let proxies = Matcher::builder()
            .http(format!("http://user:pw@{proxy}"))
            .no("direct.test")
            .build();
        let http = HttpClient::with(
            &ConnectTimeout::new(Duration::from_secs(2)),
            proxies,
            rustls::RootCertStore::empty(),
        )
        .unwrap();
        let got = seen(
            http.send(post("http://models.test:8000/v1/chat", "x"), SECOND)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got.uri, "http://models.test:8000/v1/chat");
        assert_eq!(got.proxy_authorization.as_deref(), Some("Basic dXNlcjpwdw=="));

        // NO_PROXY: straight to the host, which no resolver here knows; the proxy sees nothing.
        let before = seen_by_proxy.load(Ordering::SeqCst);
        match http.send(post("http://direct.test:8000/v1/chat", "x"), SECOND).await {
            Err(ProviderError::Unreachable(_)) => {}
            other => panic!(
                "expected the direct connect to fail, got {:?}",
                other.map(|r| r.status())
            ),
        }
        assert_eq!(seen_by_proxy.load(Ordering::SeqCst), before);
    }

    #[tokio::test]
    async fn loopback_destinations_never_go_through_the_proxy() {
        let (server, _) = echo_server(None).await;
        // A proxy that is not there: going through it would fail.
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let proxies = Matcher::builder().all(format!("http://user:pw@{dead}")).build();
        let http = client(proxies, rustls::RootCertStore::empty());
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("http://{host}:{}/v1/chat", server.port());
            let got = seen(http.send(post(&url, "x"), SECOND).await.unwrap()).await;
            assert_eq!(got.uri, "/v1/chat", "{host}: origin form, sent directly");
            assert_eq!(got.proxy_authorization, None, "{host}");
        }
    }

    #[tokio::test]
    async fn a_connect_that_hangs_fails_after_the_current_limit_and_the_limit_can_change() {
        let (_listener, _fillers, addr) = super::super::connect::tests::unanswering_listener();
        let limit = ConnectTimeout::new(Duration::from_secs(30));
        let http = HttpClient::with(&limit, Matcher::builder().build(), rustls::RootCertStore::empty()).unwrap();
        limit.set(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let error = http
            .send(post(&format!("http://{addr}/"), ""), SECOND)
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(5),
            "took {took:?}"
        );
        match error {
            ProviderError::Unreachable(why) => assert!(why.contains("connect timed out after 300 ms"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_endpoint_that_is_not_a_url_is_an_error_not_a_panic() {
        assert!(endpoint("http://127.0.0.1:9/v1", "/chat/completions").is_ok());
        assert!(matches!(
            endpoint("not a url", "/x"),
            Err(ProviderError::Unreachable(_))
        ));
    }
}

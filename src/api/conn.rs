//! One accepted connection, as the HTTP server sees it: HTTP/1.1 or HTTP/2 (h2c with prior
//! knowledge), told apart by peeking at its first bytes, and served until it closes or the
//! server stops.
//!
//! hyper answers a request it cannot parse (headers too large or too many, a bad request
//! line) by itself, with an empty body, before any route runs. Every auxot error has a JSON
//! body, so this wrapper recognises that one automatic answer on its way out and writes a
//! JSON one in its place. The connection closes after it either way.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::metrics::Connections;

/// A client that has not sent its headers by then is dropped (slow-loris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP/2 connection opens with this preface; no HTTP/1 request line starts with "PRI".
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// The most an HTTP/1 connection buffers each way, and an HTTP/2 stream sends ahead (hyper's
/// default is ~400 KiB). A client that stops reading a fast stream otherwise leaves ~400 KiB
/// of it in the write buffer (and as much in the upstream's read buffer): ~1 MB a stalled
/// stream. It is also the largest request head accepted (431 past it); 64 KiB is twice
/// nginx's default.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;
const SNIFFED: usize = 3;

/// The protocols a connection is served with, built once for the whole server.
pub struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>,
    header_timeout: Duration,
}

impl Default for Protocols {
    fn default() -> Self {
        Protocols::with_header_timeout(HEADER_READ_TIMEOUT)
    }
}

impl Protocols {
    pub fn with_header_timeout(header_timeout: Duration) -> Protocols {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(MAX_CONNECTION_BUFFER);
        let mut http2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        // A peer that vanished (no FIN, no RST) stops answering pings: its connection and
        // streams are dropped instead of held forever. (HTTP/1 has the head timeout for that.)
        // The same bound per stream for a client that grants a large window and stops
        // reading: hyper buffers up to ~400 KiB of each stream otherwise.
        http2
            .max_send_buf_size(MAX_CONNECTION_BUFFER)
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Protocols {
            http1,
            http2,
            header_timeout,
        }
    }
}

/// Tells open connections to finish and waits until they have.
pub struct Shutdown {
    stop: watch::Sender<bool>,
}

/// What each connection holds: told when to finish; dropped when it has.
#[derive(Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl Shutdown {
    pub fn new() -> (Shutdown, StopSignal) {
        let (stop, signal) = watch::channel(false);
        (Shutdown { stop }, StopSignal(signal))
    }

    /// Asks every connection to finish its requests in flight and close, then waits until
    /// every `StopSignal` is gone (the accept loop's own included).
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        self.stop.closed().await;
    }
}

impl StopSignal {
    async fn stopping(&mut self) {
        // An error means the server dropped its end: stop as well.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// How many client connections are served at once. A permit is taken before each accept
/// and held until the connection closes.
pub struct ConnectionCap {
    connections: Arc<Connections>,
    /// When the cap was last said to be reached: said at most once a minute.
    said_at: Option<Instant>,
}

const CAP_SAID_EVERY: Duration = Duration::from_secs(60);

impl ConnectionCap {
    pub fn new(connections: Arc<Connections>) -> ConnectionCap {
        ConnectionCap {
            connections,
            said_at: None,
        }
    }

    /// A slot for the next connection, waiting for one to close when all are taken.
    pub async fn permit(&mut self) -> OwnedSemaphorePermit {
        let permits = &self.connections.permits;
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return permit;
        }
        if self.said_at.is_none_or(|at| at.elapsed() >= CAP_SAID_EVERY) {
            self.said_at = Some(Instant::now());
            tracing::warn!(
                max_connections = self.connections.max,
                "the connection cap is reached: new clients wait until a connection closes (--max-connections)"
            );
        }
        match permits.clone().acquire_owned().await {
            Ok(permit) => permit,
            // Only a closed semaphore fails, and this one is never closed.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Serves one accepted connection to the end. HTTP/1 connections are served by hyper's
/// HTTP/1 server directly: hyper-util's auto-detection reads the first bytes ahead and
/// hands them back in a way that makes every connection's read buffer grow to 16 KiB,
/// which a thousand open streams pay for in resident memory.
pub async fn serve<S, B>(stream: TcpStream, protocols: &Protocols, service: S, mut stop: StopSignal)
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let http2 = tokio::select! {
        sniffed = tokio::time::timeout(protocols.header_timeout, opens_with_h2_preface(&stream)) => match sniffed {
            Ok(Ok(http2)) => http2,
            // Nothing sent in time, or the socket failed: there is no one to answer.
            Ok(Err(_)) | Err(_) => return,
        },
        _ = stop.stopping() => return,
    };
    let io = hyper_util::rt::TokioIo::new(Conn::new(stream, protocols.header_timeout));
    let ended = if http2 {
        let conn = protocols.http2.serve_connection(io, service);
        until_stopped(std::pin::pin!(conn), stop, |conn| conn.graceful_shutdown()).await
    } else {
        let conn = protocols.http1.serve_connection(io, service).with_upgrades();
        until_stopped(std::pin::pin!(conn), stop, |conn| conn.graceful_shutdown()).await
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Runs a connection to its end; when the server stops, it is told to finish the requests
/// in flight and take no more.
async fn until_stopped<C: std::future::Future>(
    mut conn: Pin<&mut C>,
    mut stop: StopSignal,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    tokio::select! {
        ended = conn.as_mut() => return ended,
        _ = stop.stopping() => {}
    }
    graceful_shutdown(conn.as_mut());
    conn.await
}

/// Whether the client's first bytes are HTTP/2's preface, read without taking them off
/// the socket. `peek` answers at once while the same bytes wait, so a client that sent a
/// partial "P" or "PR" is polled again after a pause that doubles up to 200 ms: a client
/// sending a byte at a time is served within milliseconds, and a thousand connections
/// that stop there cost 5 wake-ups a second each, not a busy loop. Every other client is
/// decided by its first read.
async fn opens_with_h2_preface(stream: &TcpStream) -> io::Result<bool> {
    let mut head = [0u8; SNIFFED];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut head).await?;
        if n == 0 || head[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == SNIFFED {
            return Ok(true);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A client connection as hyper sees it: hyper's own bodiless parse-error answers are
/// replaced by JSON ones, and a client that takes nothing of what is written to it for the
/// client timeout is dropped (as nginx's `send_timeout`): one that stopped reading would
/// otherwise hold its connection, a slot of the connection cap and its buffers for ever.
pub struct Conn {
    inner: TcpStream,
    /// A replacement still being written; hyper was told its own bytes went out.
    pending: Vec<u8>,
    written: usize,
    /// Runs while a write waits on the client.
    stall: StallClock,
}

/// How long an I/O operation on a client has been waiting: armed at its first wait,
/// cleared by any progress. An operation that never waits (nearly every read of a body that
/// came with its head, every write to a socket with room) never arms a timer.
pub(super) struct StallClock {
    limit: Duration,
    armed: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallClock {
    pub(super) fn new(limit: Duration) -> StallClock {
        StallClock { limit, armed: None }
    }

    pub(super) fn limit(&self) -> Duration {
        self.limit
    }

    /// The operation went through: the clock stops.
    pub(super) fn progressed(&mut self) {
        self.armed = None;
    }

    /// The operation waits: whether it has now waited `limit` (else `cx` is woken when it has).
    pub(super) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let armed = self.armed.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        armed.as_mut().poll(cx).is_ready()
    }
}

impl Conn {
    pub fn new(inner: TcpStream, stall_limit: Duration) -> Conn {
        Conn {
            inner,
            pending: Vec::new(),
            written: 0,
            stall: StallClock::new(stall_limit),
        }
    }

    /// `polled`, a write on the socket; past the stall limit of waiting, an error that
    /// ends the connection.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stall.progressed();
            return polled;
        }
        if !self.stall.expired(cx) {
            return Poll::Pending;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client took nothing of its answer for {}s",
                self.stall.limit().as_secs()
            ),
        )))
    }

    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let Conn {
                inner,
                pending,
                written,
                ..
            } = self;
            let polled = Pin::new(inner).poll_write(cx, &pending[*written..]);
            match self.watch(cx, polled) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// The JSON answer for hyper's own bodiless parse-error response, if `head` is one. Routes
/// always send a content type, so a bodiless error head without one came from hyper.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let (status, code, message) = if head.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            "the request headers are too large or too many",
        )
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        ("414 URI Too Long", "uri_too_long", "the request URI is too long")
    } else if head.starts_with(b"HTTP/1.1 400 ") {
        (
            "400 Bad Request",
            "bad_request",
            "the request could not be parsed as HTTP",
        )
    } else {
        return None;
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    if text.contains("content-type:") || !text.contains("content-length: 0") || head.len() != end + 4 {
        return None;
    }
    let body = serde_json::json!({"type": "error", "error": {
        "type": "invalid_request_error",
        "code": code,
        "message": message,
        "param": null,
    }})
    .to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if let Some(json) = replacement(buf) {
            self.pending = json;
            self.written = 0;
            // Told as written; the replacement goes out in its place (now or on flush).
            let _ = self.drain(cx);
            return Poll::Ready(Ok(buf.len()));
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => {
                let polled = Pin::new(&mut self.inner).poll_flush(cx);
                self.watch(cx, polled)
            }
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => {
                let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
                self.watch(cx, polled)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on a loopback port that answers with the HTTP version it was asked in,
    /// after `delay` (`/big`: with 32 MB).
    async fn server(protocols: Protocols, delay: Duration) -> (std::net::SocketAddr, Shutdown) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, mut stop) = Shutdown::new();
        let protocols = Arc::new(protocols);
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => return,
                    },
                    _ = stop.stopping() => return,
                };
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        let answer = match request.uri().path() {
                            "/big" => bytes::Bytes::from(vec![b'x'; 32 << 20]),
                            _ => bytes::Bytes::from(format!("{:?}", request.version())),
                        };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(answer)))
                    });
                let protocols = protocols.clone();
                let stop = stop.clone();
                tokio::spawn(async move { serve(stream, &protocols, service, stop).await });
            }
        });
        (addr, shutdown)
    }

    async fn raw_exchange(addr: std::net::SocketAddr, parts: &[&[u8]]) -> String {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        for part in parts {
            socket.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn a_connection_past_the_cap_waits_until_one_closes() {
        let count = Arc::new(Connections::new(2));
        let mut cap = ConnectionCap::new(count.clone());
        let first = cap.permit().await;
        let _second = cap.permit().await;
        assert_eq!(count.open(), 2);
        let third = tokio::time::timeout(Duration::from_millis(100), cap.permit()).await;
        assert!(third.is_err(), "a third connection was let in past a cap of two");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), cap.permit()).await;
        assert!(
            third.is_ok(),
            "the slot of a closed connection was not given to the next"
        );
        assert_eq!(count.open(), 2);
        drop(third);
        assert_eq!(count.open(), 1, "a closed connection is still counted open");
    }

    #[tokio::test]
    async fn http1_and_prior_knowledge_http2_are_both_served() {
        let (addr, _shutdown) = server(Protocols::default(), Duration::ZERO).await;
        let url = format!("http://{addr}/");
        let http1 = reqwest::Client::new().get(&url).send().await.unwrap();
        assert_eq!(http1.version(), reqwest::Version::HTTP_11);
        assert_eq!(http1.text().await.unwrap(), "HTTP/1.1");
        let h2c = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
        let http2 = h2c.get(&url).send().await.unwrap();
        assert_eq!(http2.version(), reqwest::Version::HTTP_2);
        assert_eq!(http2.text().await.unwrap(), "HTTP/2.0");
    }

    #[tokio::test]
    async fn a_request_line_sent_a_byte_at_a_time_is_still_http1() {
        let (addr, _shutdown) = server(Protocols::default(), Duration::ZERO).await;
        let answer = raw_exchange(
            addr,
            &[b"P", b"R", b"OPFIND / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"],
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("HTTP/1.1"), "{answer}");
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_or_half_a_head_is_dropped_after_the_header_timeout() {
        let (addr, _shutdown) = server(
            Protocols::with_header_timeout(Duration::from_millis(300)),
            Duration::ZERO,
        )
        .await;
        for parts in [&[][..], &[&b"P"[..]][..], &[&b"POST / HTTP/1.1\r\nhost:"[..]][..]] {
            let started = std::time::Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(10), raw_exchange(addr, parts))
                .await
                .expect("the connection was never closed");
            assert!(
                started.elapsed() >= Duration::from_millis(250),
                "{parts:?} closed early: {answer}"
            );
            assert!(!answer.contains(" 200 "), "{answer}");
        }
    }

    #[tokio::test]
    async fn a_client_that_takes_nothing_of_its_answer_is_dropped_after_the_client_timeout() {
        let (addr, _shutdown) = server(
            Protocols::with_header_timeout(Duration::from_millis(300)),
            Duration::ZERO,
        )
        .await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stalled = socket.connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Reading nothing while the server fills the socket and then gives up on it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut got = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut got)).await;
        assert!(ended.is_ok(), "the stalled connection was kept open");
        assert!(
            got.len() < 32 << 20,
            "the whole answer went out to a client that read nothing"
        );

        // One that reads, however slowly it starts, gets it all.
        let mut reader = TcpStream::connect(addr).await.unwrap();
        reader
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        assert!(all.len() > 32 << 20, "{} bytes", all.len());
    }

    #[tokio::test]
    async fn a_stop_lets_the_request_in_flight_finish_closes_idle_connections_and_then_returns() {
        let (addr, shutdown) = server(Protocols::default(), Duration::from_millis(300)).await;
        let url = format!("http://{addr}/");
        // One keep-alive connection left idle after its request, one request in flight.
        let idle = reqwest::Client::new();
        let _ = idle.get(&url).send().await.unwrap().text().await.unwrap();
        let in_flight = tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let finished = tokio::spawn(shutdown.finish());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!finished.is_finished(), "finish() returned with a request in flight");
        assert_eq!(in_flight.await.unwrap(), "HTTP/1.1");
        tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .expect("finish() waited on an idle keep-alive connection")
            .unwrap();
    }

    #[test]
    fn only_hypers_bodiless_parse_errors_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let json = String::from_utf8(replacement(hyper_431).unwrap()).unwrap();
        assert!(json.contains("content-type: application/json"), "{json}");
        assert!(json.ends_with('}'), "{json}");
        let routed = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n";
        assert!(replacement(routed).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(ok).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nextra";
        assert!(replacement(with_body).is_none());
    }
}

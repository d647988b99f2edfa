//! A connect timeout an admin can change while the process runs. reqwest fixes its own
//! `connect_timeout` when the client is built, and rebuilding the client would drop its
//! pooled connections; this layer sits under reqwest's connector and reads the current
//! limit for every new connection instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The current connect limit, shared by the client's connector and whoever sets it.
#[derive(Debug, Clone)]
pub struct ConnectTimeout {
    ms: Arc<AtomicU64>,
}

impl ConnectTimeout {
    pub fn new(limit: Duration) -> Self {
        let timeout = ConnectTimeout {
            ms: Arc::new(AtomicU64::new(0)),
        };
        timeout.set(limit);
        timeout
    }

    pub fn set(&self, limit: Duration) {
        self.ms.store(
            u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self) -> Duration {
        Duration::from_millis(self.ms.load(Ordering::Relaxed))
    }

    /// The tower layer to hand to `reqwest::ClientBuilder::connector_layer`.
    pub fn layer(&self) -> ConnectTimeoutLayer {
        ConnectTimeoutLayer { limit: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct ConnectTimeoutLayer {
    limit: ConnectTimeout,
}

impl<S> tower_layer::Layer<S> for ConnectTimeoutLayer {
    type Service = ConnectWithTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectWithTimeout {
            inner,
            limit: self.limit.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConnectWithTimeout<S> {
    inner: S,
    limit: ConnectTimeout,
}

/// Named so the error chain a client sees says what happened and which limit applied.
#[derive(Debug, thiserror::Error)]
#[error("connect timed out after {} ms", .0.as_millis())]
pub struct ConnectTimedOut(Duration);

impl ConnectTimedOut {
    pub(crate) fn after(limit: Duration) -> Self {
        ConnectTimedOut(limit)
    }
}

impl<S, R> tower_service::Service<R> for ConnectWithTimeout<S>
where
    S: tower_service::Service<R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let limit = self.limit.get();
        let connecting = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimedOut::after(limit)) as BoxError),
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Instant;

    /// A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    /// to it hangs until the client gives up — a host that does not answer, on loopback.
    pub(crate) fn unanswering_listener() -> (socket2::Socket, Vec<std::net::TcpStream>, std::net::SocketAddr) {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        // Fill the accept queue; later connects stay in SYN_SENT.
        for _ in 0..8 {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into());
            fillers.push(std::net::TcpStream::from(s));
        }
        std::thread::sleep(Duration::from_millis(50));
        (socket, fillers, addr)
    }

    #[tokio::test]
    async fn a_connect_that_hangs_fails_after_the_current_limit_and_the_limit_can_change() {
        let (_listener, _fillers, addr) = unanswering_listener();
        let limit = ConnectTimeout::new(Duration::from_secs(30));
        let client = reqwest::Client::builder()
            .connector_layer(limit.layer())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        limit.set(Duration::from_millis(300));
        let started = Instant::now();
        let error = client.get(format!("http://{addr}/")).send().await.unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "took {took:?}");
        assert!(took >= Duration::from_millis(250), "took {took:?}");
        let chain = crate::providers::describe_reqwest_error(error);
        assert!(chain.contains("connect timed out after 300 ms"), "{chain}");
    }

    #[tokio::test]
    async fn a_connect_that_answers_is_not_limited() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        });
        let limit = ConnectTimeout::new(Duration::from_millis(500));
        let client = reqwest::Client::builder()
            .connector_layer(limit.layer())
            .build()
            .unwrap();
        let body = client
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
    }
}

//! A TCP proxy in front of a fake that can stop answering connects, as a host that went
//! away does: new connections hang in SYN_SENT instead of being refused.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    addr: SocketAddr,
    /// The scheme and path of the fake's base URL, with this proxy's address.
    base_url: String,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Keeps the listening socket open (full, never accepted) after `stop_answering`.
    listener: Arc<Mutex<Option<std::net::TcpListener>>>,
    fillers: Mutex<Vec<socket2::Socket>>,
}

impl Proxy {
    pub async fn start(upstream_base_url: &str) -> Proxy {
        let upstream = url::Url::parse(upstream_base_url).unwrap();
        let target = format!("{}:{}", upstream.host_str().unwrap(), upstream.port().unwrap());
        // A backlog of 0 so that a few unaccepted connects fill the accept queue.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(0).unwrap();
        socket.set_nonblocking(true).unwrap();
        let std_listener: std::net::TcpListener = socket.into();
        let addr = std_listener.local_addr().unwrap();
        let listener = TcpListener::from_std(std_listener.try_clone().unwrap()).unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = connections.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap().push(task);
            }
        });
        let mut base = upstream.clone();
        base.set_port(Some(addr.port())).unwrap();
        Proxy {
            addr,
            base_url: base.to_string().trim_end_matches('/').to_string(),
            accept,
            connections,
            listener: Arc::new(Mutex::new(Some(std_listener))),
            fillers: Mutex::new(Vec::new()),
        }
    }

    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Stops accepting, closes every open connection, and fills the accept queue so the
    /// kernel drops further SYNs.
    pub fn stop_answering(&self) {
        self.accept.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
        let mut fillers = self.fillers.lock().unwrap();
        for _ in 0..8 {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&self.addr.into());
            fillers.push(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.listener.lock().unwrap().take();
    }
}

//! Helpers for `bench/compare.sh` (auxot beside nginx on one core): a fast mock OpenAI
//! upstream, a time-to-first-chunk probe, and a holder of many open streams.
//!
//!   bench_tools mock  --port-file PATH          serve on 127.0.0.1:0, write the port
//!   bench_tools ttfc  --url URL --token T [--n 2000] [--warmup 200]
//!   bench_tools hold  --url URL --token T [--n 1000] [--secs 20]
//!   bench_tools floor --upstream URL --port-file PATH
//!
//! The mock speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) and answers
//! from precomputed bytes, so the upstream costs next to nothing next to the proxy:
//!   GET  /v1/models            the models `gpt-4o-mini` and `bench-hold`
//!   POST /v1/chat/completions  a fixed chat.completion with usage, or, when the body holds
//!                              `"stream":true`, 20 chunks + a usage chunk + `[DONE]`, each a
//!                              separate chunked write. Model `bench-hold` sends one chunk
//!                              and then holds the stream open for a minute.
//!
//! `ttfc` sends streaming requests one after another on one keep-alive connection and
//! prints the time from writing the request to reading the first SSE event's bytes (p50,
//! p90, p99, in µs). `hold` opens N streams at once (model `bench-hold`), prints `ready`
//! once every stream has its first event, and keeps them open for `--secs`.
//!
//! `floor` is the least a router built on auxot's stack can do: hyper 1 serving HTTP/1.1
//! on one thread (tokio's single-threaded scheduler, mimalloc, the header timer on, as
//! auxot serves), reading each request's body whole (a router must, to see the model), and
//! sending it on through hyper-util's pooled client (TCP_NODELAY, as auxot's provider
//! client), the answer streamed back as it arrives. No auth, routing, accounting or log:
//! its cost per request beside nginx's shows how much of auxot's is the HTTP stack itself.
//!
//! A benchmark tool, not part of the product: loopback only, no TLS.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const N_CHUNKS: usize = 20;

// auxot's allocator, so the floor pays what auxot pays for its buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |name: &str, default: usize| flag(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.first().map(String::as_str) {
        Some("mock") => runtime.block_on(mock(flag("--port-file"))),
        Some("ttfc") => runtime.block_on(ttfc(
            &flag("--url").expect("--url"),
            &flag("--token").unwrap_or_default(),
            number("--n", 2000),
            number("--warmup", 200),
        )),
        Some("hold") => runtime.block_on(hold(
            &flag("--url").expect("--url"),
            &flag("--token").unwrap_or_default(),
            number("--n", 1000),
            number("--secs", 20),
        )),
        Some("floor") => runtime.block_on(floor(&flag("--upstream").expect("--upstream"), flag("--port-file"))),
        _ => {
            eprintln!("usage: bench_tools mock|ttfc|hold|floor …  (see bench/tools.rs)");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The mock upstream.

struct Replies {
    models: Vec<u8>,
    completion: Vec<u8>,
    stream_head: Vec<u8>,
    stream_events: Vec<Vec<u8>>,
    hold_first: Vec<u8>,
    not_found: Vec<u8>,
}

fn fixed(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn chunked(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

fn replies() -> Replies {
    let models = r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"bench"},{"id":"bench-hold","object":"model","created":1700000000,"owned_by":"bench"}]}"#;
    let completion = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#;
    let chunk = |content: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
        )
    };
    let mut stream_events: Vec<Vec<u8>> = (0..N_CHUNKS).map(|i| chunked(&chunk(&format!("w{i} ")))).collect();
    stream_events.push(chunked(
        "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":20,\"total_tokens\":32}}\n\n",
    ));
    stream_events.push(chunked("data: [DONE]\n\n"));
    stream_events.push(b"0\r\n\r\n".to_vec());
    Replies {
        models: fixed("200 OK", "application/json", models),
        completion: fixed("200 OK", "application/json", completion),
        stream_head: b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(),
        stream_events,
        hold_first: chunked(&chunk("held")),
        not_found: fixed("404 Not Found", "application/json", r#"{"error":{"message":"not found"}}"#),
    }
}

async fn mock(port_file: Option<String>) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    println!("{port}");
    if let Some(path) = port_file {
        std::fs::write(path, port.to_string())?;
    }
    let replies: &'static Replies = Box::leak(Box::new(replies()));
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let _ = serve_connection(socket, replies).await;
        });
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn serve_connection(mut socket: TcpStream, replies: &Replies) -> io::Result<()> {
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    let mut read = [0u8; 8192];
    loop {
        // One request: the head, then a Content-Length body.
        let head_end = loop {
            if let Some(i) = find(&buffer, b"\r\n\r\n") {
                break i + 4;
            }
            let n = socket.read(&mut read).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&read[..n]);
        };
        let length = content_length(&buffer[..head_end]);
        while buffer.len() < head_end + length {
            let n = socket.read(&mut read).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&read[..n]);
        }
        let request: Vec<u8> = buffer.drain(..head_end + length).collect();
        let body = &request[head_end..];
        if request.starts_with(b"GET /v1/models") {
            socket.write_all(&replies.models).await?;
        } else if request.starts_with(b"POST /v1/chat/completions") {
            let stream = find(body, b"\"stream\":true").is_some() || find(body, b"\"stream\": true").is_some();
            if !stream {
                socket.write_all(&replies.completion).await?;
            } else if find(body, b"bench-hold").is_some() {
                socket.write_all(&replies.stream_head).await?;
                socket.write_all(&replies.hold_first).await?;
                tokio::time::sleep(Duration::from_secs(60)).await;
                return Ok(());
            } else {
                socket.write_all(&replies.stream_head).await?;
                for event in &replies.stream_events {
                    socket.write_all(event).await?;
                }
            }
        } else {
            socket.write_all(&replies.not_found).await?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Clients.

fn host_port_path(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (host.to_string(), if path.is_empty() { "/".into() } else { path.into() })
}

fn stream_request(host: &str, path: &str, token: &str, model: &str) -> Vec<u8> {
    let body =
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"Count to twenty."}}],"stream":true}}"#);
    format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads until the first SSE event's bytes (`data:` after the response head) have arrived.
async fn first_event(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<()> {
    let mut read = [0u8; 16384];
    loop {
        if let Some(head_end) = find(buffer, b"\r\n\r\n") {
            if !buffer.starts_with(b"HTTP/1.1 200") {
                return Err(io::Error::other(format!(
                    "answered {}",
                    String::from_utf8_lossy(&buffer[..head_end.min(200)])
                )));
            }
            if find(&buffer[head_end..], b"data:").is_some() {
                return Ok(());
            }
        }
        let n = socket.read(&mut read).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the first event",
            ));
        }
        buffer.extend_from_slice(&read[..n]);
    }
}

async fn ttfc(url: &str, token: &str, n: usize, warmup: usize) -> io::Result<()> {
    let (host, path) = host_port_path(url);
    let request = stream_request(&host, &path, token, "gpt-4o-mini");
    let mut socket = TcpStream::connect(&host).await?;
    socket.set_nodelay(true)?;
    let mut samples = Vec::with_capacity(n);
    let mut read = [0u8; 16384];
    for i in 0..warmup + n {
        let mut buffer = Vec::with_capacity(16384);
        let start = Instant::now();
        socket.write_all(&request).await?;
        first_event(&mut socket, &mut buffer).await?;
        let took = start.elapsed();
        // The rest of the stream, to its chunked terminator, before the next request.
        while !buffer.ends_with(b"0\r\n\r\n") {
            let got = socket.read(&mut read).await?;
            if got == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream cut"));
            }
            buffer.extend_from_slice(&read[..got]);
        }
        if i >= warmup {
            samples.push(took.as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "TTFC_RESULT n={} p50_us={:.1} p90_us={:.1} p99_us={:.1}",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99)
    );
    Ok(())
}

async fn hold(url: &str, token: &str, n: usize, secs: usize) -> io::Result<()> {
    let (host, path) = host_port_path(url);
    let request = stream_request(&host, &path, token, "bench-hold");
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let host = host.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut socket = TcpStream::connect(&host).await?;
            socket.write_all(&request).await?;
            let mut buffer = Vec::new();
            first_event(&mut socket, &mut buffer).await?;
            Ok::<TcpStream, io::Error>(socket)
        }));
    }
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(socket)) => open.push(socket),
            Ok(Err(e)) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("hold: {e}");
                }
            }
            Err(e) => eprintln!("hold: {e}"),
        }
    }
    println!("ready open={} failed={failed}", open.len());
    tokio::time::sleep(Duration::from_secs(secs as u64)).await;
    drop(open);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The floor: a bare hyper reverse proxy.

type Upstream = Client<HttpConnector, Full<Bytes>>;

async fn floor(upstream: &str, port_file: Option<String>) -> io::Result<()> {
    let upstream: hyper::Uri = upstream.trim_end_matches('/').parse().map_err(io::Error::other)?;
    let authority = upstream.authority().expect("an upstream with host:port").clone();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: &'static Upstream = Box::leak(Box::new(
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector),
    ));
    let authority: &'static str = Box::leak(authority.to_string().into_boxed_str());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    println!("{port}");
    if let Some(path) = port_file {
        std::fs::write(path, port.to_string())?;
    }
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let http1: &'static hyper::server::conn::http1::Builder = Box::leak(Box::new(http1));
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| forward(client, authority, request));
            let _ = http1.serve_connection(TokioIo::new(socket), service).await;
        });
    }
}

async fn forward(
    client: &'static Upstream,
    authority: &'static str,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Incoming>, io::Error> {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("http://{authority}{path}").parse().map_err(io::Error::other)?;
    parts.headers.remove(hyper::header::HOST);
    client
        .request(hyper::Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(io::Error::other)
}

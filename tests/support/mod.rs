//! `TestServer` (the real binary, port 0, temp data dir) and the fakes it talks to.
//!
//! Shared set-up lives here, named by what it sets up: `calls` (admin-API and client calls
//! on a `TestServer`), `command` (other `auxot` subcommands), `routers` (routers on one
//! PostgreSQL database), `postgres` (the throwaway clusters), `scripted` (a provider fake
//! whose answers a test writes), `sse` (reading event streams), `worker` (real and
//! hand-driven workers). A helper two test modules would both write belongs here.

pub mod blackhole;
pub mod calls;
pub mod command;
pub mod fake_llm;
pub mod fake_upstream;
pub mod model_server;
pub mod postgres;
pub mod routers;
pub mod scripted;
pub mod sse;
pub mod worker;

pub use fake_upstream::FakeUpstream;
pub use worker::{FakeCli, TestWorker};

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A fixed key so restarts in one test share it; 64 hex chars.
pub const TEST_KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";
pub const OTHER_KEY: &str = "0202020202020202020202020202020202020202020202020202020202020202";

pub struct Options {
    pub secret_key: Option<String>,
    pub log_level: &'static str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Soft and hard open-file limits to start under (`prlimit`), else the test's own.
    pub open_files: Option<(u64, u64)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            secret_key: Some(TEST_KEY.into()),
            log_level: "info",
            args: Vec::new(),
            env: Vec::new(),
            open_files: None,
        }
    }
}

impl Options {
    /// The default options with `key` as the secret key (`None`: no key configured).
    pub fn with_key(key: Option<&str>) -> Options {
        Options {
            secret_key: key.map(str::to_string),
            ..Options::default()
        }
    }

    /// The default options with these arguments to `auxot serve`.
    pub fn with_args(args: &[&str]) -> Options {
        args.iter().fold(Options::default(), |options, arg| options.arg(arg))
    }

    /// A router on the PostgreSQL database at `url` (`--database`).
    pub fn on_database(url: &str) -> Options {
        Options::default().arg("--database").arg(url)
    }

    /// `--router-name NAME`: the name its usage rows and worker connections carry.
    pub fn named(self, name: &str) -> Options {
        self.arg("--router-name").arg(name)
    }

    /// One more command-line argument to `auxot serve`.
    pub fn arg(mut self, arg: &str) -> Options {
        self.args.push(arg.to_string());
        self
    }

    /// Started under these soft and hard open-file limits.
    pub fn open_files(mut self, soft: u64, hard: u64) -> Options {
        self.open_files = Some((soft, hard));
        self
    }

    /// This secret key instead of the default one.
    pub fn key(mut self, key: &str) -> Options {
        self.secret_key = Some(key.to_string());
        self
    }
}

/// A reply as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self
    }
}

pub struct TestServer {
    pub url: String,
    pub data_dir: PathBuf,
    temp: Arc<tempfile::TempDir>,
    child: Child,
    logs: Arc<Mutex<String>>,
    /// Every response body this server sent to a test, for the leak scan.
    bodies: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Options::default()).await
    }

    /// A started server with its first admin: the admin's API key.
    pub async fn with_admin() -> (TestServer, String) {
        Self::with_admin_using(Options::default()).await
    }

    /// A server started with `options`, with its first admin: the admin's API key.
    pub async fn with_admin_using(options: Options) -> (TestServer, String) {
        let server = Self::start_with(options).await;
        let admin = server.admin_key().await;
        (server, admin)
    }

    /// A started server with its first admin and a client key: (server, admin key, client key).
    pub async fn with_admin_and_client() -> (TestServer, String, String) {
        let (server, admin) = Self::with_admin().await;
        let client = server.client_key(&admin).await;
        (server, admin, client)
    }

    pub async fn start_with(options: Options) -> TestServer {
        let temp = Arc::new(tempfile::tempdir().expect("temp dir"));
        let data_dir = temp.path().join("data");
        match Self::launch(temp.clone(), data_dir, options).await {
            Ok(server) => server,
            Err(logs) => panic!("auxot did not start:\n{logs}"),
        }
    }

    /// Starts a server on the data dir of this one (after `stop`), e.g. to restart it.
    pub async fn relaunch(&self, options: Options) -> Result<TestServer, String> {
        Self::launch(self.temp.clone(), self.data_dir.clone(), options).await
    }

    async fn launch(temp: Arc<tempfile::TempDir>, data_dir: PathBuf, options: Options) -> Result<TestServer, String> {
        let mut command = match options.open_files {
            // prlimit execs the server: the child's pid stays the server's.
            Some((soft, hard)) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={soft}:{hard}"))
                    .arg(env!("CARGO_BIN_EXE_auxot"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_auxot")),
        };
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&options.args)
            .env_remove("AUXOT_SECRET_KEY")
            .env_remove("AUXOT_SECRET_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("RUST_LOG", options.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command.envs(options.env.iter().cloned());
        if let Some(key) = &options.secret_key {
            command.env("AUXOT_SECRET_KEY", key);
        }
        let mut child = command.spawn().expect("spawn auxot");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (url_tx, mut url_rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("auxot listening on ") {
                    let url = line[at + "auxot listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = url_tx.send(url);
                }
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let url = tokio::select! {
            url = url_rx.recv() => url,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {
                return Err(format!("no listening line within 30 s\n{}", logs.lock().unwrap()));
            }
        };
        let Some(url) = url else {
            // stderr closed without the listening line: the process is exiting.
            let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(format!("exited with {status:?}\n{}", logs.lock().unwrap()));
        };
        Ok(TestServer {
            url,
            data_dir,
            temp,
            child,
            logs,
            bodies: Arc::new(Mutex::new(Vec::new())),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        })
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
        // The reader task may still hold the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// SIGKILL, as a crash or an OOM kill would: nothing gets to flush.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and returns at once (see `wait_exit`).
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }

    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait()).await.ok()?.ok()
    }

    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }

    /// The server process's id (to read its memory use, for example).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("server running")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("auxot.redb")
    }

    pub fn data_path(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    /// Sends a request; `auth` goes out as `Authorization: Bearer`.
    pub async fn call(&self, method: &str, path: &str, auth: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = self
            .http
            .request(method.parse().expect("method"), format!("{}{path}", self.url));
        if let Some(key) = auth {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// Sends a raw body with a content type.
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method.parse().expect("method"), format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = auth {
            request = request.bearer_auth(key);
        }
        self.send(request).await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request to auxot");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        self.bodies.lock().unwrap().push(text.clone());
        Reply { status, headers, text }
    }

    /// Creates the first admin and returns an admin API key.
    pub async fn admin_key(&self) -> String {
        self.setup_admin("admin", "password123").await.expect(201);
        let cookie = self.login("admin", "password123").await;
        let reply = self
            .send(
                self.http
                    .post(format!("{}/api/api-keys", self.url))
                    .header("cookie", cookie)
                    .json(&json!({"name": "test-admin", "role": "admin"})),
            )
            .await;
        reply.expect(201);
        reply.json()["key"].as_str().expect("key").to_string()
    }

    /// Logs in and returns the `Cookie` header value for the session.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let reply = self.try_login(username, password).await;
        reply.expect(200);
        let set_cookie = reply.header("set-cookie").expect("set-cookie").to_string();
        set_cookie.split(';').next().unwrap().to_string()
    }

    pub async fn client_key(&self, admin: &str) -> String {
        let reply = self
            .call(
                "POST",
                "/api/api-keys",
                Some(admin),
                Some(json!({"name": "client", "role": "client"})),
            )
            .await;
        reply.expect(201);
        reply.json()["key"].as_str().unwrap().to_string()
    }

    /// Adds a provider served by `fake` and returns its JSON.
    pub async fn add_provider(&self, admin: &str, name: &str, fake: &FakeUpstream, key: &str) -> Value {
        self.add_provider_at(admin, name, fake.kind.type_name(), &fake.base_url(), key)
            .await
    }

    /// A chat completion asking `model` to "Say hi" as `key`, to send or to add headers to.
    /// The provider `id` as `GET /api/providers` lists it (with its health).
    pub async fn provider_view(&self, admin: &str, id: &str) -> Value {
        let providers = self.call("GET", "/api/providers", Some(admin), None).await.json();
        providers["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("no provider {id}: {providers}"))
            .clone()
    }

    pub fn chat_request(&self, key: &str, model: &str, stream: bool) -> reqwest::RequestBuilder {
        self.post_as(
            "/v1/chat/completions",
            key,
            &json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hi"}]}),
        )
    }

    pub async fn chat(&self, key: &str, model: &str, stream: bool) -> Reply {
        self.send(self.chat_request(key, model, stream)).await
    }

    /// A streamed chat completion as `key` once its headers arrived: the body is still
    /// to come (a `gated` model's holds its slot until released).
    pub async fn open_stream(&self, key: &str, model: &str) -> reqwest::Response {
        self.chat_request(key, model, true)
            .send()
            .await
            .expect("request to auxot")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port that was free a moment ago: nothing listens there (a dead upstream), or
/// something of the test's own is about to.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// SSE text from `(event name, data)` pairs, as an upstream sends it.
pub fn sse(events: &[(Option<&str>, serde_json::Value)]) -> String {
    let mut out = String::new();
    for (name, data) in events {
        if let Some(name) = name {
            out += &format!("event: {name}\n");
        }
        out += &format!("data: {data}\n\n");
    }
    out
}

/// Serves a fake on 127.0.0.1 on a free port until `shutdown` resolves: the address, and the
/// server to spawn.
pub fn serve_warp<F>(
    filter: F,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (std::net::SocketAddr, impl std::future::Future<Output = ()>)
where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    (addr, warp::serve(filter).incoming(listener).graceful(shutdown).run())
}

/// A fake's reply body sent chunk by chunk as `stream` yields.
pub fn stream_body<S, E>(stream: S) -> WarpBody
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    warp::Reply::into_response(warp::reply::stream(sync_wrapper::SyncStream::new(stream))).into_body()
}

/// warp's response body type, which warp does not export by name.
pub type WarpBody = <warp::reply::Response as BodyOf>::Body;

pub trait BodyOf {
    type Body;
}

impl<B> BodyOf for warp::http::Response<B> {
    type Body = B;
}

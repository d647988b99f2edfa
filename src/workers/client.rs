//! The worker side of the protocol, shared by `auxot worker gpu` and `auxot worker cli`: dial
//! the router, say hello, heartbeat, run jobs in slots, reconnect with backoff.
//!
//! What a worker actually does with a job lives behind [`JobHandler`]; this module only moves
//! frames. Every outgoing frame goes through one channel into one socket writer task, so job
//! tasks never touch the socket.

use crate::crypto::Secret;
use crate::workers::args::ConnectionArgs;
use crate::workers::protocol::{JobKind, RouterMessage, Usage, WorkerKind, WorkerMessage, PROTOCOL_VERSION};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header::AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The router's WebSocket endpoint, relative to `--server`.
pub const CONNECT_PATH: &str = "api/workers/connect";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HELLO_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Used only if the router's hello_ack carries a nonsensical interval.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection that lived this long was healthy: the next failure starts backing off afresh.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);
/// Frames queued for the socket; a full queue slows job tasks down instead of growing memory.
const OUTGOING_QUEUE: usize = 256;
/// How long a shutting-down worker waits for its last frames to leave.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid --server URL {url:?}: {reason}")]
    ServerUrl { url: String, reason: String },
    #[error("invalid --upstream URL {url:?}: {reason}")]
    UpstreamUrl { url: String, reason: String },
    #[error("cannot reach the model server at {url}: {detail}")]
    Upstream { url: String, detail: String },
    #[error("cannot find the `{program}` CLI {place}; install it or give its path with --command")]
    CliNotFound { program: String, place: String },
    #[error("{0}")]
    InvalidConfig(String),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    // The variants below end one connection; the worker logs them and reconnects.
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("the router rejected the worker token (HTTP {status}); create a new token in the admin UI")]
    TokenRejected { status: u16 },
    #[error("the router answered HTTP {status} instead of opening a WebSocket")]
    UpgradeRefused { status: u16 },
    #[error("the router refused this worker: {0}")]
    Refused(String),
    #[error("the router sent no hello_ack within {0:?}")]
    NoHelloAck(Duration),
    #[error("the connection to the router was lost: {0}")]
    ConnectionLost(String),
}

impl WorkerError {
    /// Errors that retrying cannot fix: the worker stops instead of reconnecting forever.
    fn is_fatal(&self) -> bool {
        match self {
            WorkerError::ServerUrl { .. }
            | WorkerError::UpstreamUrl { .. }
            | WorkerError::Upstream { .. }
            | WorkerError::CliNotFound { .. }
            | WorkerError::InvalidConfig(_)
            | WorkerError::HttpClient(_) => true,
            WorkerError::Connect { .. }
            | WorkerError::TokenRejected { .. }
            | WorkerError::UpgradeRefused { .. }
            | WorkerError::Refused(_)
            | WorkerError::NoHelloAck(_)
            | WorkerError::ConnectionLost(_) => false,
        }
    }
}

/// Where and as whom a worker connects.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// The router's http(s) base URL, as given with `--server`.
    pub server: String,
    pub token: Secret,
    /// `None`: the router names the worker after its token.
    pub name: Option<String>,
    pub slots: u32,
    /// How often to re-read the handler's models; `None` when they never change.
    pub models_refresh: Option<Duration>,
}

impl ConnectionConfig {
    pub fn from_args(args: &ConnectionArgs, models_refresh: Option<Duration>) -> Self {
        ConnectionConfig {
            server: args.server.clone(),
            token: args.token.clone(),
            name: args.name.clone(),
            slots: args.slots.max(1),
            models_refresh,
        }
    }
}

/// One job as the router sent it.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    /// Chat or embeddings.
    pub endpoint: JobKind,
    /// An OpenAI request; `model` is one this worker advertised for `endpoint`. For chat,
    /// `stream` is the client's choice (older routers always sent `true`).
    pub request: Box<RawValue>,
}

/// How a job ended; the connection loop turns it into exactly one `done` or `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Done(Option<Usage>),
    Failed {
        message: String,
        status: Option<u16>,
    },
    /// Failed because the upstream is rate limited or the CLI's subscription is over its
    /// usage limit: the router routes around this worker until then.
    Throttled {
        message: String,
        status: Option<u16>,
        /// The upstream's `Retry-After` header.
        retry_after: Option<String>,
        /// Unix seconds when a subscription limit resets.
        limited_until: Option<i64>,
    },
}

impl JobOutcome {
    pub fn failed(message: impl Into<String>, status: Option<u16>) -> Self {
        JobOutcome::Failed {
            message: message.into(),
            status,
        }
    }
}

/// What a worker does with jobs. Futures are dropped mid-way when the router cancels a job
/// or the connection drops, so implementations must release what they hold on drop (an
/// HTTP response closes its connection; a CLI process group is killed by a guard).
pub trait JobHandler: Send + Sync + 'static {
    fn kind(&self) -> WorkerKind;
    /// The models to advertise now; called at every connect and every `models_refresh`.
    fn models(&self) -> impl Future<Output = Result<Vec<String>, WorkerError>> + Send;
    /// Of the models `models` last returned, those it also serves for embeddings jobs.
    fn embedding_models(&self) -> Vec<String> {
        Vec::new()
    }
    /// Runs one job, streaming `chat.completion.chunk` objects into `out`.
    fn run_job(&self, job: Job, out: ChunkSink) -> impl Future<Output = JobOutcome> + Send;
    /// The router's connect timeout for this worker's upstream; a handler without an
    /// upstream connection ignores it.
    fn set_upstream_connect_timeout(&self, _limit: Duration) {}
}

/// The socket is gone; the job's output has nowhere to go, so the job should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the router connection closed")]
pub struct SinkClosed;

/// Where a job streams its chunks.
pub struct ChunkSink {
    job_id: String,
    out: mpsc::Sender<Outgoing>,
}

impl ChunkSink {
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Queues one `chat.completion.chunk`; waits while the socket is slower than the job.
    pub async fn send(&self, chunk: Box<RawValue>) -> Result<(), SinkClosed> {
        let message = WorkerMessage::Chunk {
            job_id: self.job_id.clone(),
            chunk,
        };
        self.out.send(Outgoing::Frame(message)).await.map_err(|_| SinkClosed)
    }
}

enum Outgoing {
    Frame(WorkerMessage),
    /// Sends a close frame, then the writer stops.
    Close,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `--server` http://h:p/prefix → ws://h:p/prefix/api/workers/connect (https → wss).
pub fn connect_url(server: &str) -> Result<String, WorkerError> {
    let bad = |reason: &str| WorkerError::ServerUrl {
        url: server.to_string(),
        reason: reason.to_string(),
    };
    let mut url = url::Url::parse(server.trim()).map_err(|e| bad(&e.to_string()))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("use an http:// or https:// URL")),
    };
    if url.host_str().is_none() {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "remove the user name and password; the worker authenticates with --token",
        ));
    }
    url.set_scheme(scheme)
        .map_err(|()| bad("cannot turn it into a WebSocket URL"))?;
    let path = format!("{}/{CONNECT_PATH}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.to_string())
}

/// Runs the worker until `shutdown` completes: connect, serve, and on any failure reconnect
/// with jittered exponential backoff. Returns an error only for what retrying cannot fix.
pub async fn run_worker<H: JobHandler>(
    conn: ConnectionConfig,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    let url = connect_url(&conn.server)?;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::default();
    let mut last_offer = Offer::default();
    loop {
        let models = tokio::select! {
            () = &mut shutdown => return Ok(()),
            models = handler.models() => models,
        };
        let offer = match models {
            Ok(models) => {
                last_offer = Offer {
                    embedding_models: handler.embedding_models(),
                    models,
                };
                last_offer.clone()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the models; advertising the last known list");
                last_offer.clone()
            }
        };
        let session = Session {
            conn: &conn,
            url: &url,
            handler: &handler,
            offer,
        };
        match session.run(&mut shutdown).await {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Lost { error, served_for } => {
                if error.is_fatal() {
                    return Err(error);
                }
                if served_for.is_some_and(|d| d >= BACKOFF_RESET_AFTER) {
                    backoff = Backoff::default();
                }
                let delay = backoff.next_delay();
                match error {
                    WorkerError::TokenRejected { .. } | WorkerError::Refused(_) => {
                        tracing::error!(error = %error, retry_in_ms = delay.as_millis() as u64, "router refused the worker")
                    }
                    _ => {
                        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "not connected to the router")
                    }
                }
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

enum SessionEnd {
    Shutdown,
    /// `served_for` is how long the connection worked after hello_ack, if it got that far.
    Lost {
        error: WorkerError,
        served_for: Option<Duration>,
    },
}

impl SessionEnd {
    fn before_ack(error: WorkerError) -> Self {
        SessionEnd::Lost {
            error,
            served_for: None,
        }
    }
}

/// Aborts a spawned task when dropped, so no task outlives the connection it served.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Jobs running on one connection, by job id. A job leaves the map just before its final
/// frame is queued, so the router may reuse the slot as soon as it reads `done`/`error`.
#[derive(Clone, Default)]
struct RunningJobs(Arc<Mutex<HashMap<String, AbortHandle>>>);

impl RunningJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AbortHandle>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remove(&self, job_id: &str) -> Option<AbortHandle> {
        self.lock().remove(job_id)
    }

    fn abort_all(&self) -> Vec<String> {
        self.lock()
            .drain()
            .map(|(job_id, handle)| {
                handle.abort();
                job_id
            })
            .collect()
    }
}

/// Takes a job out of [`RunningJobs`] however its task ends (finished, aborted, panicked).
struct RunningEntry {
    job_id: String,
    jobs: RunningJobs,
}

impl Drop for RunningEntry {
    fn drop(&mut self) {
        self.jobs.remove(&self.job_id);
    }
}

/// What a worker advertises: its models, and those it serves for embeddings too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Offer {
    models: Vec<String>,
    embedding_models: Vec<String>,
}

struct Session<'a, H> {
    conn: &'a ConnectionConfig,
    url: &'a str,
    handler: &'a Arc<H>,
    offer: Offer,
}

impl<H: JobHandler> Session<'_, H> {
    async fn run<S: Future<Output = ()> + Unpin>(self, shutdown: &mut S) -> SessionEnd {
        let handshake = tokio::select! {
            () = &mut *shutdown => return SessionEnd::Shutdown,
            handshake = self.handshake() => handshake,
        };
        let (sink, mut stream, heartbeat_every) = match handshake {
            Ok(parts) => parts,
            Err(error) => return SessionEnd::before_ack(error),
        };
        let acked_at = Instant::now();
        tracing::info!(url = %self.url, name = self.conn.name.as_deref().unwrap_or("(the token's)"), models = ?self.offer.models, embedding_models = ?self.offer.embedding_models, slots = self.conn.slots, "connected to the router");

        let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
        let mut writer = AbortOnDrop(tokio::spawn(write_frames(sink, out_rx)));
        let _refresher = self.conn.models_refresh.map(|every| {
            AbortOnDrop(tokio::spawn(refresh_models(
                Arc::clone(self.handler),
                every,
                self.offer.clone(),
                out_tx.clone(),
            )))
        });
        let jobs = RunningJobs::default();
        let mut heartbeat = tokio::time::interval_at(acked_at + heartbeat_every, heartbeat_every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let error = loop {
            tokio::select! {
                () = &mut *shutdown => {
                    self.say_goodbye(&jobs, &out_tx, &mut writer).await;
                    return SessionEnd::Shutdown;
                }
                _ = heartbeat.tick() => {
                    if out_tx.send(Outgoing::Frame(WorkerMessage::Heartbeat)).await.is_err() {
                        break WorkerError::ConnectionLost("the socket writer stopped".into());
                    }
                }
                written = &mut writer.0 => {
                    break match written {
                        Ok(Err(e)) => e,
                        _ => WorkerError::ConnectionLost("the socket writer stopped".into()),
                    };
                }
                frame = stream.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(close))) => {
                            let reason = close.map(|c| c.reason.to_string()).filter(|r| !r.is_empty());
                            break WorkerError::ConnectionLost(reason.unwrap_or_else(|| "the router closed the socket".into()));
                        }
                        Some(Ok(_)) => continue, // ping/pong are answered by tungstenite
                        Some(Err(e)) => break WorkerError::ConnectionLost(e.to_string()),
                        None => break WorkerError::ConnectionLost("the socket ended".into()),
                    };
                    match RouterMessage::parse(&text) {
                        Ok(RouterMessage::Job { job_id, endpoint, request }) => {
                            let job = Job { id: job_id, endpoint, request };
                            if self.start_job(&jobs, &out_tx, job).await.is_err() {
                                break WorkerError::ConnectionLost("the socket writer stopped".into());
                            }
                        }
                        Ok(RouterMessage::Cancel { job_id }) => match jobs.remove(&job_id) {
                            Some(handle) => {
                                handle.abort();
                                tracing::info!(job_id = %job_id, "job cancelled by the router");
                            }
                            None => tracing::debug!(job_id = %job_id, "cancel for a job that is not running"),
                        },
                        Ok(RouterMessage::Refused { message }) => break WorkerError::Refused(message),
                        Ok(RouterMessage::HelloAck { .. }) => tracing::debug!("ignoring a repeated hello_ack"),
                        Ok(RouterMessage::Settings { upstream_connect_timeout_ms }) => {
                            tracing::debug!(upstream_connect_timeout_ms, "router settings");
                            self.handler.set_upstream_connect_timeout(Duration::from_millis(upstream_connect_timeout_ms));
                        }
                        // A newer router may send messages this worker does not know yet.
                        Err(e) => tracing::warn!(error = %e, "ignoring a message from the router that cannot be read"),
                    }
                }
            }
        };
        let aborted = jobs.abort_all();
        if !aborted.is_empty() {
            tracing::warn!(jobs = ?aborted, "connection lost: aborted the running jobs");
        }
        SessionEnd::Lost {
            error,
            served_for: Some(acked_at.elapsed()),
        }
    }

    /// Connects, sends hello and waits for hello_ack. Returns the socket halves and the
    /// heartbeat interval the router asked for.
    async fn handshake(&self) -> Result<(SplitSink<Socket, Message>, SplitStream<Socket>, Duration), WorkerError> {
        let socket = self.connect().await?;
        let (mut sink, mut stream) = socket.split();
        let hello = WorkerMessage::Hello {
            protocol: PROTOCOL_VERSION,
            kind: self.handler.kind(),
            name: self.conn.name.clone(),
            models: self.offer.models.clone(),
            embedding_models: self.offer.embedding_models.clone(),
            slots: self.conn.slots,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        sink.send(Message::text(hello.to_text()))
            .await
            .map_err(|e| WorkerError::ConnectionLost(e.to_string()))?;
        let ack = tokio::time::timeout(HELLO_ACK_TIMEOUT, async {
            loop {
                match stream.next().await {
                    Some(Ok(Message::Text(text))) => match RouterMessage::parse(&text) {
                        Ok(RouterMessage::HelloAck {
                            protocol,
                            worker_id,
                            heartbeat_interval_ms,
                            heartbeat_timeout_ms,
                        }) => {
                            if protocol != PROTOCOL_VERSION {
                                tracing::warn!(router = protocol, worker = PROTOCOL_VERSION, "protocol version differs");
                            }
                            tracing::debug!(worker_id = %worker_id, heartbeat_interval_ms, heartbeat_timeout_ms, "hello_ack");
                            return Ok(heartbeat_interval_ms);
                        }
                        Ok(RouterMessage::Refused { message }) => return Err(WorkerError::Refused(message)),
                        Ok(_) | Err(_) => tracing::debug!("ignoring a frame before hello_ack"),
                    },
                    Some(Ok(Message::Close(_))) | None => {
                        return Err(WorkerError::ConnectionLost("the router closed the socket before hello_ack".into()))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(WorkerError::ConnectionLost(e.to_string())),
                }
            }
        })
        .await
        .map_err(|_| WorkerError::NoHelloAck(HELLO_ACK_TIMEOUT))??;
        let heartbeat_every = match ack {
            0 => FALLBACK_HEARTBEAT,
            ms => Duration::from_millis(ms.max(100)),
        };
        Ok((sink, stream, heartbeat_every))
    }

    async fn connect(&self) -> Result<Socket, WorkerError> {
        use tokio_tungstenite::tungstenite::error::Error as WsError;
        let connect_error = |detail: String| WorkerError::Connect {
            url: self.url.to_string(),
            detail,
        };
        let mut request = self
            .url
            .into_client_request()
            .map_err(|e| connect_error(e.to_string()))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.conn.token.expose()))
            .map_err(|_| WorkerError::InvalidConfig("the worker token is not a valid header value".into()))?;
        auth.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, auth);
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(request, None, true),
        )
        .await
        .map_err(|_| connect_error(format!("no answer within {CONNECT_TIMEOUT:?}")))?;
        match connected {
            Ok((socket, _response)) => Ok(socket),
            Err(WsError::Http(response)) => {
                let status = response.status().as_u16();
                Err(match status {
                    401 | 403 => WorkerError::TokenRejected { status },
                    _ => WorkerError::UpgradeRefused { status },
                })
            }
            Err(e) => Err(connect_error(e.to_string())),
        }
    }

    /// Starts a job in a free slot, or answers at once that there is none.
    async fn start_job(&self, jobs: &RunningJobs, out: &mpsc::Sender<Outgoing>, job: Job) -> Result<(), SinkClosed> {
        let job_id = job.id.clone();
        let refusal = {
            let mut running = jobs.lock();
            if running.contains_key(&job_id) {
                Some("a job with this id is already running")
            } else if running.len() >= self.conn.slots as usize {
                Some("worker has no free slot")
            } else {
                let task = tokio::spawn(run_one_job(
                    Arc::clone(self.handler),
                    job,
                    out.clone(),
                    RunningEntry {
                        job_id: job_id.clone(),
                        jobs: jobs.clone(),
                    },
                ));
                // Inserted under the same lock the task's entry takes on exit, so a job that
                // ends instantly cannot leave a stale entry behind.
                running.insert(job_id.clone(), task.abort_handle());
                None
            }
        };
        let Some(message) = refusal else {
            return Ok(());
        };
        tracing::warn!(job_id = %job_id, slots = self.conn.slots, "refusing a job: {message}");
        let frame = WorkerMessage::Error {
            job_id,
            message: message.to_string(),
            status: Some(503),
            retry_after: None,
            limited_until: None,
        };
        out.send(Outgoing::Frame(frame)).await.map_err(|_| SinkClosed)
    }

    /// On shutdown: tell the router every running job failed (so it can retry them
    /// elsewhere at once), close the socket, and give the frames a moment to leave.
    async fn say_goodbye(
        &self,
        jobs: &RunningJobs,
        out: &mpsc::Sender<Outgoing>,
        writer: &mut AbortOnDrop<Result<(), WorkerError>>,
    ) {
        let goodbye = async {
            for job_id in jobs.abort_all() {
                let frame = WorkerMessage::Error {
                    job_id,
                    message: "the worker is shutting down".into(),
                    status: Some(503),
                    retry_after: None,
                    limited_until: None,
                };
                if out.send(Outgoing::Frame(frame)).await.is_err() {
                    return;
                }
            }
            if out.send(Outgoing::Close).await.is_ok() {
                let _ = (&mut writer.0).await;
            }
        };
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, goodbye).await;
    }
}

async fn run_one_job<H: JobHandler>(handler: Arc<H>, job: Job, out: mpsc::Sender<Outgoing>, entry: RunningEntry) {
    let job_id = job.id.clone();
    let started = Instant::now();
    tracing::info!(job_id = %job_id, "job started");
    let sink = ChunkSink {
        job_id: job_id.clone(),
        out: out.clone(),
    };
    let outcome = handler.run_job(job, sink).await;
    drop(entry);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let frame = match outcome {
        JobOutcome::Done(usage) => {
            tracing::info!(job_id = %job_id, elapsed_ms, ?usage, "job done");
            WorkerMessage::Done { job_id, usage }
        }
        JobOutcome::Failed { message, status } => {
            tracing::warn!(job_id = %job_id, elapsed_ms, ?status, error = %message, "job failed");
            WorkerMessage::Error {
                job_id,
                message,
                status,
                retry_after: None,
                limited_until: None,
            }
        }
        JobOutcome::Throttled {
            message,
            status,
            retry_after,
            limited_until,
        } => {
            tracing::warn!(job_id = %job_id, elapsed_ms, ?status, ?retry_after, ?limited_until, error = %message, "job throttled");
            WorkerMessage::Error {
                job_id,
                message,
                status,
                retry_after,
                limited_until,
            }
        }
    };
    // A closed channel means the connection is gone; the router fails the job on its side.
    let _ = out.send(Outgoing::Frame(frame)).await;
}

/// The one task that writes to the socket.
async fn write_frames(
    mut sink: SplitSink<Socket, Message>,
    mut frames: mpsc::Receiver<Outgoing>,
) -> Result<(), WorkerError> {
    let lost = |e: tokio_tungstenite::tungstenite::Error| WorkerError::ConnectionLost(e.to_string());
    while let Some(outgoing) = frames.recv().await {
        match outgoing {
            Outgoing::Frame(message) => sink.send(Message::text(message.to_text())).await.map_err(lost)?,
            Outgoing::Close => {
                sink.send(Message::Close(None)).await.map_err(lost)?;
                break;
            }
        }
    }
    Ok(())
}

/// Re-reads the models every `every` and tells the router when they changed.
async fn refresh_models<H: JobHandler>(
    handler: Arc<H>,
    every: Duration,
    mut advertised: Offer,
    out: mpsc::Sender<Outgoing>,
) {
    loop {
        tokio::time::sleep(every).await;
        match handler.models().await {
            Ok(models) => {
                let offer = Offer {
                    embedding_models: handler.embedding_models(),
                    models,
                };
                if offer == advertised {
                    continue;
                }
                tracing::info!(models = ?offer.models, embedding_models = ?offer.embedding_models, "models changed");
                advertised = offer.clone();
                let frame = WorkerMessage::Models {
                    models: offer.models,
                    embedding_models: offer.embedding_models,
                };
                if out.send(Outgoing::Frame(frame)).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot re-read the models; keeping the advertised list"),
        }
    }
}

/// Exponential backoff with ±50% jitter, so a fleet of workers does not reconnect in step
/// after a router restart.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_START }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        base.mul_f64(rand::thread_rng().gen_range(0.5..=1.5))
    }
}

/// A sink whose frames come out of the returned receiver, for testing job handlers.
#[cfg(test)]
pub(crate) fn test_sink(job_id: &str) -> (ChunkSink, mpsc::UnboundedReceiver<WorkerMessage>) {
    let (tx, mut rx) = mpsc::channel(OUTGOING_QUEUE);
    let (frames_tx, frames_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Outgoing::Frame(message)) = rx.recv().await {
            if frames_tx.send(message).is_err() {
                return;
            }
        }
    });
    let sink = ChunkSink {
        job_id: job_id.to_string(),
        out: tx,
    };
    (sink, frames_rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    #[test]
    fn server_url_becomes_the_connect_url() {
        assert_eq!(
            connect_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/api/workers/connect"
        );
        assert_eq!(
            connect_url("https://auxot.example.com/").unwrap(),
            "wss://auxot.example.com/api/workers/connect"
        );
        assert_eq!(
            connect_url("https://proxy.example.com/auxot/?x=1").unwrap(),
            "wss://proxy.example.com/auxot/api/workers/connect"
        );
        assert_eq!(connect_url(" ws://h:1 ").unwrap(), "ws://h:1/api/workers/connect");
        assert!(connect_url("ftp://h").is_err());
        assert!(connect_url("127.0.0.1:8080").is_err());
        assert!(connect_url("http://user:pw@h").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::default();
        let mut base = BACKOFF_START;
        for _ in 0..12 {
            let delay = backoff.next_delay();
            assert!(
                delay >= base.mul_f64(0.5) && delay <= base.mul_f64(1.5),
                "{delay:?} vs {base:?}"
            );
            base = (base * 2).min(BACKOFF_CAP);
        }
        assert_eq!(backoff.next, BACKOFF_CAP);
    }

    #[test]
    fn errors_never_show_the_token() {
        let conn = ConnectionConfig {
            server: "http://h".into(),
            token: Secret::new("tok-secret-value".into()),
            name: Some("n".into()),
            slots: 1,
            models_refresh: None,
        };
        assert!(!format!("{conn:?}").contains("tok-secret-value"));
    }

    /// Streams two chunks, or (for a request containing "slow") waits until cancelled.
    struct FakeHandler {
        dropped: Arc<AtomicUsize>,
    }

    struct CountDrop(Arc<AtomicUsize>);

    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl JobHandler for FakeHandler {
        fn kind(&self) -> WorkerKind {
            WorkerKind::Gpu
        }

        async fn models(&self) -> Result<Vec<String>, WorkerError> {
            Ok(vec!["m".into()])
        }

        async fn run_job(&self, job: Job, out: ChunkSink) -> JobOutcome {
            let _guard = CountDrop(Arc::clone(&self.dropped));
            if job.request.get().contains("slow") {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            for text in ["a", "b"] {
                let chunk = RawValue::from_string(format!(r#"{{"choices":[{{"delta":{{"content":"{text}"}}}}]}}"#));
                if out.send(chunk.unwrap()).await.is_err() {
                    return JobOutcome::failed("closed", None);
                }
            }
            JobOutcome::Done(Some(Usage::new(1, 2)))
        }
    }

    type ServerSocket = WebSocketStream<TcpStream>;

    async fn accept(listener: &TcpListener) -> (ServerSocket, String) {
        let (tcp, _) = listener.accept().await.unwrap();
        let auth = Arc::new(Mutex::new(String::new()));
        let seen = Arc::clone(&auth);
        #[allow(clippy::result_large_err)] // the error type is tungstenite's, not ours
        let callback = move |request: &Request, response: Response| {
            assert_eq!(request.uri().path(), "/api/workers/connect");
            let header = request
                .headers()
                .get(AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_string());
            *seen.lock().unwrap() = header.unwrap_or_default();
            Ok(response)
        };
        let socket = tokio_tungstenite::accept_hdr_async(tcp, callback).await.unwrap();
        let auth = auth.lock().unwrap().clone();
        (socket, auth)
    }

    /// The next message from the worker that is not a heartbeat.
    async fn next_message(socket: &mut ServerSocket) -> WorkerMessage {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
                .await
                .expect("the worker went quiet")
                .expect("the socket ended")
                .unwrap();
            if let Message::Text(text) = frame {
                match WorkerMessage::parse(&text).unwrap() {
                    WorkerMessage::Heartbeat => continue,
                    message => return message,
                }
            }
        }
    }

    async fn send(socket: &mut ServerSocket, message: RouterMessage) {
        socket.send(Message::text(message.to_text())).await.unwrap();
    }

    fn job(job_id: &str, request: &str) -> RouterMessage {
        RouterMessage::Job {
            job_id: job_id.into(),
            endpoint: JobKind::ChatCompletions,
            request: RawValue::from_string(request.into()).unwrap(),
        }
    }

    #[tokio::test]
    async fn worker_serves_jobs_enforces_slots_cancels_and_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let dropped = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(FakeHandler {
            dropped: Arc::clone(&dropped),
        });
        let conn = ConnectionConfig {
            server,
            token: Secret::new("tok-1".into()),
            name: Some("box".into()),
            slots: 1,
            models_refresh: None,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(run_worker(conn, handler, async {
            let _ = stop_rx.await;
        }));

        let (mut socket, auth) = accept(&listener).await;
        assert_eq!(auth, "Bearer tok-1");
        match next_message(&mut socket).await {
            WorkerMessage::Hello {
                protocol,
                kind,
                name,
                models,
                slots,
                ..
            } => {
                assert_eq!(
                    (protocol, kind, name.as_deref(), slots),
                    (PROTOCOL_VERSION, WorkerKind::Gpu, Some("box"), 1)
                );
                assert_eq!(models, ["m"]);
            }
            other => panic!("expected hello, got {other:?}"),
        }
        let ack = RouterMessage::HelloAck {
            protocol: PROTOCOL_VERSION,
            worker_id: "w1".into(),
            heartbeat_interval_ms: 50,
            heartbeat_timeout_ms: 500,
        };
        send(&mut socket, ack).await;

        // A job streams its chunks and ends with done; the slot is free again at once.
        for job_id in ["j1", "j2"] {
            send(&mut socket, job(job_id, r#"{"model":"m"}"#)).await;
            for _ in 0..2 {
                assert!(matches!(next_message(&mut socket).await, WorkerMessage::Chunk { .. }));
            }
            match next_message(&mut socket).await {
                WorkerMessage::Done { job_id: done, usage } => {
                    assert_eq!(done, job_id);
                    assert_eq!(usage.map(|u| u.total_tokens), Some(3));
                }
                other => panic!("expected done, got {other:?}"),
            }
        }

        // One slot: a second job while one runs is refused with 503.
        send(&mut socket, job("slow", r#"{"model":"m","slow":true}"#)).await;
        send(&mut socket, job("extra", r#"{"model":"m"}"#)).await;
        match next_message(&mut socket).await {
            WorkerMessage::Error {
                job_id,
                status,
                message,
                ..
            } => {
                assert_eq!((job_id.as_str(), status), ("extra", Some(503)), "{message}");
            }
            other => panic!("expected error, got {other:?}"),
        }
        // Cancel drops the job at once and frees its slot.
        let before = dropped.load(Ordering::SeqCst);
        send(&mut socket, RouterMessage::Cancel { job_id: "slow".into() }).await;
        send(&mut socket, job("j3", r#"{"model":"m"}"#)).await;
        assert!(matches!(next_message(&mut socket).await, WorkerMessage::Chunk { job_id, .. } if job_id == "j3"));
        assert!(
            dropped.load(Ordering::SeqCst) > before,
            "the cancelled job was not dropped"
        );

        // Heartbeats flow while idle.
        let heartbeat = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Some(Ok(Message::Text(text))) = socket.next().await {
                    if matches!(WorkerMessage::parse(&text), Ok(WorkerMessage::Heartbeat)) {
                        return;
                    }
                }
            }
        });
        heartbeat.await.expect("no heartbeat");

        // The router goes away: the worker dials again and says hello again.
        drop(socket);
        let (mut socket, _) = tokio::time::timeout(Duration::from_secs(5), accept(&listener))
            .await
            .unwrap();
        assert!(matches!(next_message(&mut socket).await, WorkerMessage::Hello { .. }));

        // A refusal is logged and retried, never fatal.
        send(&mut socket, RouterMessage::Refused { message: "no".into() }).await;
        let (mut socket, _) = tokio::time::timeout(Duration::from_secs(5), accept(&listener))
            .await
            .unwrap();
        assert!(matches!(next_message(&mut socket).await, WorkerMessage::Hello { .. }));

        stop_tx.send(()).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .unwrap()
            .unwrap();
        assert!(ended.is_ok(), "{ended:?}");
    }
}

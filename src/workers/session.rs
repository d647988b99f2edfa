//! One connection to one router, from dialling to its end: the handshake (hello, hello_ack,
//! capabilities), heartbeats, jobs run in the shared slot pool and cancelled on request, the
//! models re-advertised when they change, and one writer task that owns the socket.

use super::client::{ConnectionConfig, WorkerError};
use super::job::{ChunkSink, Job, JobHandler, JobOutcome, Outgoing, SinkClosed};
use crate::workers::pool::{LinkUp, Permit, SlotPool};
use crate::workers::protocol::{capability, RouterMessage, WorkerMessage, PROTOCOL_VERSION};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
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

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HELLO_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Used only if the router's hello_ack carries a nonsensical interval.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(10);
/// Frames queued for the socket; a full queue slows job tasks down instead of growing memory.
pub(super) const OUTGOING_QUEUE: usize = 256;
/// How long a shutting-down worker waits for its last frames to leave.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(super) enum SessionEnd {
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

/// Takes a job out of [`RunningJobs`] and gives its slot back to the pool however its task
/// ends (finished, aborted, panicked).
struct RunningEntry {
    job_id: String,
    jobs: RunningJobs,
    _permit: Permit,
}

impl Drop for RunningEntry {
    fn drop(&mut self) {
        self.jobs.remove(&self.job_id);
    }
}

/// What the router took up of this worker's capabilities.
#[derive(Debug, Clone, Copy, Default)]
struct Negotiated {
    job_ack: bool,
    status: bool,
}

impl Negotiated {
    fn from_ack(capabilities: &[String]) -> Negotiated {
        let has = |name: &str| capabilities.iter().any(|c| c == name);
        Negotiated {
            job_ack: has(capability::JOB_ACK),
            status: has(capability::STATUS),
        }
    }
}

/// What a worker advertises: its models, and those it serves for embeddings too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Offer {
    pub(super) models: Vec<String>,
    pub(super) embedding_models: Vec<String>,
}

/// One connection to one router, from dialling to its end.
pub(super) struct Session<'a, H> {
    pub(super) conn: &'a ConnectionConfig,
    pub(super) url: &'a str,
    pub(super) handler: &'a Arc<H>,
    pub(super) offer: Offer,
    pub(super) pool: &'a Arc<SlotPool>,
    /// This router's place in `--server`.
    pub(super) index: usize,
    pub(super) instance: &'a str,
}

impl<H: JobHandler> Session<'_, H> {
    pub(super) async fn run<S: Future<Output = ()> + Unpin>(self, shutdown: &mut S) -> SessionEnd {
        let handshake = tokio::select! {
            () = &mut *shutdown => return SessionEnd::Shutdown,
            handshake = self.handshake() => handshake,
        };
        let (sink, mut stream, heartbeat_every, negotiated) = match handshake {
            Ok(parts) => parts,
            Err(error) => return SessionEnd::before_ack(error),
        };
        let acked_at = Instant::now();
        tracing::info!(url = %self.url, name = self.conn.name.as_deref().unwrap_or("(the token's)"), models = ?self.offer.models, embedding_models = ?self.offer.embedding_models, slots = self.conn.slots, ?negotiated, "connected to the router");
        // Subscribed before the link is marked up, so the first status goes out at once.
        let mut pool_changes = self.pool.watch();
        let _link = LinkUp::new(self.pool, self.index);

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
                    // A router that reads statuses takes one as a heartbeat, and a status
                    // now and then corrects any view it marked full after a refusal.
                    let beat = if negotiated.status { self.status(&jobs) } else { WorkerMessage::Heartbeat };
                    if out_tx.send(Outgoing::Frame(beat)).await.is_err() {
                        break WorkerError::ConnectionLost("the socket writer stopped".into());
                    }
                }
                Ok(()) = pool_changes.changed(), if negotiated.status => {
                    pool_changes.borrow_and_update();
                    if out_tx.send(Outgoing::Frame(self.status(&jobs))).await.is_err() {
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
                            if self.start_job(&jobs, &out_tx, job, negotiated).await.is_err() {
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

    /// The pool as this router should see it.
    fn status(&self, jobs: &RunningJobs) -> WorkerMessage {
        WorkerMessage::Status {
            slots: self.pool.capacity(),
            busy: self.pool.busy(),
            busy_here: u32::try_from(jobs.lock().len()).unwrap_or(u32::MAX),
            routers: self.pool.links(),
        }
    }

    /// Connects, sends hello and waits for hello_ack. Returns the socket halves, the
    /// heartbeat interval the router asked for and the capabilities it took up.
    async fn handshake(
        &self,
    ) -> Result<(SplitSink<Socket, Message>, SplitStream<Socket>, Duration, Negotiated), WorkerError> {
        let socket = self.connect().await?;
        let (mut sink, mut stream) = socket.split();
        let hello = WorkerMessage::Hello {
            protocol: PROTOCOL_VERSION,
            kind: self.handler.kind(),
            name: self.conn.name.clone(),
            models: self.offer.models.clone(),
            embedding_models: self.offer.embedding_models.clone(),
            slots: self.pool.capacity(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            instance: Some(self.instance.to_string()),
            capabilities: capability::ALL.iter().map(|c| c.to_string()).collect(),
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
                            capabilities,
                        }) => {
                            if protocol != PROTOCOL_VERSION {
                                tracing::warn!(router = protocol, worker = PROTOCOL_VERSION, "protocol version differs");
                            }
                            tracing::debug!(worker_id = %worker_id, heartbeat_interval_ms, heartbeat_timeout_ms, ?capabilities, "hello_ack");
                            return Ok((heartbeat_interval_ms, Negotiated::from_ack(&capabilities)));
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
        let (interval_ms, negotiated) = ack;
        let heartbeat_every = match interval_ms {
            0 => FALLBACK_HEARTBEAT,
            ms => Duration::from_millis(ms.max(100)),
        };
        Ok((sink, stream, heartbeat_every, negotiated))
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

    /// Starts a job in a free slot of the shared pool, or answers at once that there is
    /// none. A router that took up `job_ack` hears `job_accepted` (queued before any of the
    /// job's chunks) or `job_refused`; an older one gets the 503 error it always got.
    async fn start_job(
        &self,
        jobs: &RunningJobs,
        out: &mpsc::Sender<Outgoing>,
        job: Job,
        negotiated: Negotiated,
    ) -> Result<(), SinkClosed> {
        let job_id = job.id.clone();
        // Jobs of one connection start one at a time (this runs in its read loop), so the
        // check and the insert below cannot be raced by another start on it.
        let duplicate = jobs.lock().contains_key(&job_id);
        let permit = if duplicate { None } else { self.pool.try_acquire() };
        let Some(permit) = permit else {
            let (message, reason) = if duplicate {
                ("a job with this id is already running", "duplicate")
            } else {
                ("worker has no free slot", "busy")
            };
            tracing::info!(router = %self.url, job_id = %job_id, slots = self.pool.capacity(), busy = self.pool.busy(), "refusing a job: {message}");
            let frame = if negotiated.job_ack {
                WorkerMessage::JobRefused {
                    job_id,
                    reason: reason.to_string(),
                }
            } else {
                WorkerMessage::Error {
                    job_id,
                    message: message.to_string(),
                    status: Some(503),
                    retry_after: None,
                    limited_until: None,
                }
            };
            return out.send(Outgoing::Frame(frame)).await.map_err(|_| SinkClosed);
        };
        if negotiated.job_ack {
            let accepted = WorkerMessage::JobAccepted { job_id: job_id.clone() };
            out.send(Outgoing::Frame(accepted)).await.map_err(|_| SinkClosed)?;
        }
        let mut running = jobs.lock();
        let task = tokio::spawn(run_one_job(
            Arc::clone(self.handler),
            job,
            out.clone(),
            RunningEntry {
                job_id: job_id.clone(),
                jobs: jobs.clone(),
                _permit: permit,
            },
        ));
        // Inserted under the same lock the task's entry takes on exit, so a job that
        // ends instantly cannot leave a stale entry behind.
        running.insert(job_id, task.abort_handle());
        Ok(())
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

/// A sink whose frames come out of the returned receiver, for testing job handlers.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secret;
    use crate::workers::fleet::run_worker;
    use crate::workers::protocol::{JobKind, Usage, WorkerKind};
    use serde_json::value::RawValue;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

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
        next_matching(socket, |message| !matches!(message, WorkerMessage::Heartbeat)).await
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

    /// Reads frames until one matches `wanted` (statuses and heartbeats come any time).
    async fn next_matching(socket: &mut ServerSocket, wanted: impl Fn(&WorkerMessage) -> bool) -> WorkerMessage {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
                .await
                .expect("the worker went quiet")
                .expect("the socket ended")
                .unwrap();
            if let Message::Text(text) = frame {
                let message = WorkerMessage::parse(&text).unwrap();
                if wanted(&message) {
                    return message;
                }
            }
        }
    }

    fn is_status(busy: u32, busy_here: u32) -> impl Fn(&WorkerMessage) -> bool {
        move |m| matches!(m, WorkerMessage::Status { busy: b, busy_here: h, .. } if (*b, *h) == (busy, busy_here))
    }

    /// Accepts a worker's connection, checks its hello and acks it with every capability.
    async fn greet(listener: &TcpListener) -> (ServerSocket, Option<String>) {
        let (mut socket, _) = tokio::time::timeout(Duration::from_secs(5), accept(listener))
            .await
            .unwrap();
        let instance = match next_message(&mut socket).await {
            WorkerMessage::Hello {
                instance, capabilities, ..
            } => {
                assert_eq!(capabilities, capability::ALL);
                instance
            }
            other => panic!("expected hello, got {other:?}"),
        };
        let ack = RouterMessage::HelloAck {
            protocol: PROTOCOL_VERSION,
            worker_id: "w".into(),
            heartbeat_interval_ms: 1000,
            heartbeat_timeout_ms: 3000,
            capabilities: capability::ALL.iter().map(|c| c.to_string()).collect(),
        };
        send(&mut socket, ack).await;
        (socket, instance)
    }

    #[tokio::test]
    async fn one_pool_serves_every_router_and_refuses_at_once_what_it_cannot_hold() {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (url_a, url_b) = (
            format!("http://{}", a.local_addr().unwrap()),
            format!("http://{}", b.local_addr().unwrap()),
        );
        let conn = ConnectionConfig {
            // The same router twice is dialled once.
            servers: vec![url_a.clone(), url_b.clone(), format!("{url_b}/")],
            token: Secret::new("tok".into()),
            name: None,
            slots: 1,
            models_refresh: None,
        };
        let handler = Arc::new(FakeHandler {
            dropped: Arc::new(AtomicUsize::new(0)),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(run_worker(conn, handler, async {
            let _ = stop_rx.await;
        }));
        let (mut on_a, instance_a) = greet(&a).await;
        let (mut on_b, instance_b) = greet(&b).await;
        assert!(instance_a.is_some());
        assert_eq!(instance_a, instance_b, "one worker, one instance id on every router");
        // Each router hears of both connections.
        let both_up = |m: &WorkerMessage| matches!(m, WorkerMessage::Status { routers, .. } if routers.len() == 2 && routers.iter().all(|r| r.connected));
        next_matching(&mut on_a, both_up).await;
        next_matching(&mut on_b, both_up).await;

        // Router A takes the only slot; router B's job, racing for it, is refused at once.
        send(&mut on_a, job("slow-a", r#"{"model":"m","slow":true}"#)).await;
        let accepted = next_matching(&mut on_a, |m| !matches!(m, WorkerMessage::Status { .. })).await;
        assert!(
            matches!(accepted, WorkerMessage::JobAccepted { ref job_id } if job_id == "slow-a"),
            "{accepted:?}"
        );
        next_matching(&mut on_b, is_status(1, 0)).await;
        send(&mut on_b, job("b1", r#"{"model":"m"}"#)).await;
        let refused = next_matching(&mut on_b, |m| !matches!(m, WorkerMessage::Status { .. })).await;
        assert!(
            matches!(refused, WorkerMessage::JobRefused { ref job_id, ref reason } if job_id == "b1" && reason == "busy"),
            "{refused:?}"
        );

        // A lets go: B hears the slot is free, and its next job runs.
        send(
            &mut on_a,
            RouterMessage::Cancel {
                job_id: "slow-a".into(),
            },
        )
        .await;
        next_matching(&mut on_b, is_status(0, 0)).await;
        send(&mut on_b, job("b2", r#"{"model":"m"}"#)).await;
        assert!(matches!(
            next_matching(&mut on_b, |m| !matches!(m, WorkerMessage::Status { .. })).await,
            WorkerMessage::JobAccepted { .. }
        ));
        next_matching(
            &mut on_b,
            |m| matches!(m, WorkerMessage::Done { job_id, .. } if job_id == "b2"),
        )
        .await;

        // Router A dies mid-job: the job is abandoned and its slot serves B.
        send(&mut on_a, job("slow-a2", r#"{"model":"m","slow":true}"#)).await;
        next_matching(&mut on_b, is_status(1, 0)).await;
        drop(on_a);
        let a_down = |m: &WorkerMessage| matches!(m, WorkerMessage::Status { busy: 0, routers, .. } if !routers[0].connected && routers[1].connected);
        next_matching(&mut on_b, a_down).await;
        send(&mut on_b, job("b3", r#"{"model":"m"}"#)).await;
        next_matching(
            &mut on_b,
            |m| matches!(m, WorkerMessage::Done { job_id, .. } if job_id == "b3"),
        )
        .await;
        // And A is dialled again when it is back.
        let (_on_a, again) = greet(&a).await;
        assert_eq!(again, instance_a);

        stop_tx.send(()).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .unwrap()
            .unwrap();
        assert!(ended.is_ok(), "{ended:?}");
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
            servers: vec![server],
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
            capabilities: Vec::new(),
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

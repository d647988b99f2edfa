//! A worker's WebSocket (`GET /api/workers/connect`): the token checked before the upgrade,
//! the hello checked against it, then one session from hello to goodbye that carries jobs,
//! statuses, model changes and heartbeats, and ends every job on it when it ends.

use super::error::{ApiError, Dialect};
use super::request::api_key;
use crate::auth::WorkerIdentity;
use crate::workers::policy;
use crate::workers::protocol::{capability, RouterLink, RouterMessage, WorkerKind, WorkerMessage, PROTOCOL_VERSION};
use crate::workers::registry::{Hello, JobEvent, LiveWorker};
use crate::AppState;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use warp::filters::ws::{Message, WebSocket, Ws};
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::Reply;

/// A worker must say hello this soon after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_SLOTS: u32 = 1024;
/// A hello is a name, a version and a model list: 1 MiB is far more than any needs.
const MAX_HELLO_BYTES: usize = 1024 * 1024;
const MAX_VERSION_LEN: usize = 64;
const MAX_INSTANCE_LEN: usize = 64;
/// A status names the worker's routers; a fleet is a handful, these bound a bad worker.
const MAX_ROUTER_LINKS: usize = 32;
const MAX_ROUTER_URL_LEN: usize = 512;
/// How often a connected worker's models are re-checked against the cloud providers' (a
/// provider added after the worker connected takes its names back within this).
const POLICY_RECHECK: Duration = Duration::from_secs(1);
/// The largest frame a worker may send; workers cap single events well below it.
const MAX_FRAME_BYTES: usize = 300 * 1024 * 1024;

/// The token is checked before the upgrade: a bad one gets a plain 401, no socket.
pub(super) fn connect(state: AppState, headers: HeaderMap, ws: Ws) -> Response {
    match state.auth.authenticate_worker(api_key(&headers)) {
        Ok(identity) => ws
            // Above the workers' per-event limit (16 MiB by default) plus the frame's
            // envelope: an oversized event fails its job on the worker, not this socket.
            .max_message_size(MAX_FRAME_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .on_upgrade(move |socket| worker_session(socket, identity, state))
            .into_response(),
        Err(e) => ApiError::from(e).into_response(Dialect::Admin),
    }
}

async fn send(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, message: &RouterMessage) -> bool {
    tx.send(Message::text(message.to_text())).await.is_ok()
}

/// Reads the worker's hello and checks it against its token. Returns the hello (with the
/// models the worker may serve) and every model it advertised.
async fn read_hello(
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
    identity: &WorkerIdentity,
    models: &ModelPolicy,
) -> Result<(Hello, Advertised, Vec<String>), String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, rx.next())
        .await
        .map_err(|_| "no hello within 10 s".to_string())?;
    let text = match first {
        Some(Ok(message)) if message.is_text() => message.to_str().map(str::to_string).unwrap_or_default(),
        _ => return Err("the first message must be a text hello".into()),
    };
    if text.len() > MAX_HELLO_BYTES {
        return Err(format!("the hello is larger than {MAX_HELLO_BYTES} bytes"));
    }
    match WorkerMessage::parse(&text).map_err(|e| e.to_string())? {
        WorkerMessage::Hello {
            protocol,
            kind,
            name,
            models: advertised,
            embedding_models,
            slots,
            version,
            instance,
            capabilities,
        } => {
            if protocol != PROTOCOL_VERSION {
                return Err(format!(
                    "protocol version {protocol} is not supported (this router speaks {PROTOCOL_VERSION}); upgrade the worker"
                ));
            }
            if kind != identity.kind {
                return Err(format!(
                    "this token is for a {} worker, not a {} worker",
                    identity.kind.as_str(),
                    kind.as_str()
                ));
            }
            if slots == 0 || slots > MAX_SLOTS {
                return Err(format!("slots must be 1 to {MAX_SLOTS}"));
            }
            // A worker started without --name carries its token's name.
            let name = name
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| identity.token_name.clone());
            if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
                return Err("name must be 1 to 64 printable characters".into());
            }
            let version = version.trim().to_string();
            if version.len() > MAX_VERSION_LEN || version.chars().any(char::is_control) {
                return Err(format!(
                    "version must be at most {MAX_VERSION_LEN} printable characters"
                ));
            }
            let instance = instance.map(|i| i.trim().to_string()).filter(|i| !i.is_empty());
            if instance
                .as_deref()
                .is_some_and(|i| i.len() > MAX_INSTANCE_LEN || i.chars().any(char::is_control))
            {
                return Err(format!(
                    "instance must be at most {MAX_INSTANCE_LEN} printable characters"
                ));
            }
            let advertised = policy::validate_models(advertised).map_err(|e| e.to_string())?;
            let embedding_models = policy::validate_models(embedding_models).map_err(|e| e.to_string())?;
            let permitted = models.permitted(&name, &advertised);
            if permitted.is_empty() && !advertised.is_empty() {
                return Err(models.refusal(&advertised));
            }
            Ok((
                Hello {
                    token_id: identity.token_id.clone(),
                    kind,
                    name,
                    version,
                    embedding_models: serves_embeddings(&permitted, &embedding_models),
                    models: permitted,
                    slots,
                    instance,
                    acks_jobs: taken_up(&capabilities).iter().any(|c| c == capability::JOB_ACK),
                    allowed_models: identity.allowed_models.clone(),
                },
                Advertised {
                    models: advertised,
                    embedding_models,
                },
                taken_up(&capabilities),
            ))
        }
        _ => Err("the first message must be a hello".into()),
    }
}

/// The capabilities of a hello this router takes up, as its hello_ack names them. `job_ack`
/// only with `status`: a refusal marks the worker full until its next status, so a worker
/// that never sends one would never get a job again.
fn taken_up(offered: &[String]) -> Vec<String> {
    let offers = |name: &str| offered.iter().any(|c| c == name);
    capability::ALL
        .iter()
        .filter(|known| offers(known))
        .filter(|known| **known != capability::JOB_ACK || offers(capability::STATUS))
        .map(|c| c.to_string())
        .collect()
}

/// The routers a worker's status names, bounded: it is shown to admins as it came.
fn router_links(mut routers: Vec<RouterLink>) -> Vec<RouterLink> {
    routers.truncate(MAX_ROUTER_LINKS);
    routers.retain(|r| r.url.len() <= MAX_ROUTER_URL_LEN && !r.url.chars().any(char::is_control));
    routers
}

/// What a worker last advertised, before the policy decides what it may serve of it.
struct Advertised {
    models: Vec<String>,
    embedding_models: Vec<String>,
}

/// A worker serves embeddings for the models it may serve at all and advertised for them.
fn serves_embeddings(permitted: &[String], embedding_models: &[String]) -> Vec<String> {
    embedding_models
        .iter()
        .filter(|m| permitted.contains(m))
        .cloned()
        .collect()
}

/// What one worker may serve: its token's allow-list, or (without one) any name no cloud
/// provider serves right now.
struct ModelPolicy {
    allowed: Option<Arc<[String]>>,
    state: AppState,
}

impl ModelPolicy {
    fn permitted(&self, worker: &str, advertised: &[String]) -> Vec<String> {
        let table = self.state.providers.routing();
        let (kept, refused) = policy::permitted(advertised, self.allowed.as_deref(), |model| {
            table.serving(model).next().is_some()
        });
        if !refused.is_empty() {
            tracing::warn!(
                worker = %worker,
                ?refused,
                "worker may not serve these models: {}",
                self.reason()
            );
        }
        kept
    }

    fn reason(&self) -> &'static str {
        if self.allowed.is_some() {
            "they are not on its token's allowed_models list"
        } else {
            "a cloud provider serves them; an admin can allow them on the worker token (allowed_models) to route them to this worker first"
        }
    }

    fn refusal(&self, advertised: &[String]) -> String {
        let mut names: Vec<&str> = advertised.iter().take(5).map(String::as_str).collect();
        if advertised.len() > 5 {
            names.push("…");
        }
        format!(
            "this worker may serve none of its models ({}): {}",
            names.join(", "),
            self.reason()
        )
    }
}

/// One worker's connection, from hello to goodbye. Every job on it ends when it ends.
async fn worker_session(socket: WebSocket, identity: WorkerIdentity, state: AppState) {
    let (mut tx, mut rx) = socket.split();
    let policy = ModelPolicy {
        allowed: identity.allowed_models.clone(),
        state: state.clone(),
    };
    let (hello, advertised, capabilities) = match read_hello(&mut rx, &identity, &policy).await {
        Ok(hello) => hello,
        Err(message) => {
            tracing::warn!(token = %identity.token_name, %message, "worker refused");
            let _ = send(&mut tx, &RouterMessage::Refused { message }).await;
            let _ = tx.close().await;
            return;
        }
    };
    let registry = state.workers.clone();
    let (worker, mut outbox) = registry.register(hello);
    tracing::info!(worker = %worker.name, instance = worker.instance.as_deref().unwrap_or("-"), kind = worker.kind.as_str(), slots = worker.slots, models = ?worker.models(), ?capabilities, "worker connected");
    let timeout = registry.heartbeat_timeout;
    let ack = RouterMessage::HelloAck {
        protocol: PROTOCOL_VERSION,
        worker_id: worker.id.clone(),
        heartbeat_interval_ms: (timeout.as_millis() as u64 / 3).max(100),
        heartbeat_timeout_ms: timeout.as_millis() as u64,
        capabilities,
    };
    if send(&mut tx, &ack).await {
        let mut gpu_connect = state.rules.gpu_connect();
        let connect_ms = *gpu_connect.borrow_and_update();
        let settings = RouterMessage::Settings {
            upstream_connect_timeout_ms: connect_ms,
        };
        // A worker starts with the default, so the common case costs no extra frame.
        let differs = connect_ms != crate::store::DEFAULT_CONNECT_MS;
        if worker.kind == WorkerKind::Gpu && differs && !send(&mut tx, &settings).await {
            registry.unregister(&worker);
            return;
        }
        let mut session = Session {
            worker: &worker,
            policy,
            advertised,
            gpu_connect,
        };
        let reason = session.serve(&mut tx, &mut rx, &mut outbox, timeout).await;
        tracing::info!(worker = %worker.name, %reason, "worker disconnected");
    }
    registry.unregister(&worker);
    let _ = tx.close().await;
}

struct Session<'w> {
    worker: &'w Arc<LiveWorker>,
    policy: ModelPolicy,
    /// What the worker last advertised; what it may serve of it is re-checked as the cloud
    /// providers' models change.
    advertised: Advertised,
    /// The GPU tier's connect timeout; a change is passed on to a GPU worker at once.
    gpu_connect: tokio::sync::watch::Receiver<u64>,
}

impl Session<'_> {
    async fn serve(
        &mut self,
        tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
        rx: &mut futures_util::stream::SplitStream<WebSocket>,
        outbox: &mut tokio::sync::mpsc::UnboundedReceiver<RouterMessage>,
        timeout: Duration,
    ) -> String {
        let worker = self.worker;
        let mut check = tokio::time::interval((timeout / 5).max(Duration::from_millis(50)));
        let mut recheck = tokio::time::interval(POLICY_RECHECK);
        let mut table = self.policy.state.providers.routing();
        loop {
            tokio::select! {
                incoming = rx.next() => match incoming {
                    Some(Ok(message)) => {
                        worker.touch();
                        if message.is_close() {
                            return "closed by the worker".into();
                        }
                        if let Ok(text) = message.to_str() {
                            self.handle_message(text);
                        }
                    }
                    Some(Err(e)) => return format!("socket error: {e}"),
                    None => return "connection ended".into(),
                },
                outgoing = outbox.recv() => match outgoing {
                    Some(message) => {
                        if !send(tx, &message).await {
                            return "cannot write to the worker".into();
                        }
                    }
                    None => return "router shutting down".into(),
                },
                _ = worker.kicked() => {
                    let _ = send(tx, &RouterMessage::Refused { message: "closed by the router (token revoked or changed, replaced by a newer connection, or the router is stopping)".into() }).await;
                    return "closed by the router".into();
                }
                _ = check.tick() => {
                    if worker.silent_for() > timeout {
                        return format!("no heartbeat for {}s", timeout.as_secs());
                    }
                }
                Ok(()) = self.gpu_connect.changed(), if worker.kind == WorkerKind::Gpu => {
                    let ms = *self.gpu_connect.borrow_and_update();
                    if !send(tx, &RouterMessage::Settings { upstream_connect_timeout_ms: ms }).await {
                        return "cannot write to the worker".into();
                    }
                }
                _ = recheck.tick() => {
                    let now = self.policy.state.providers.routing();
                    if !Arc::ptr_eq(&now, &table) {
                        table = now;
                        self.apply_models();
                    }
                }
            }
        }
    }

    fn apply_models(&self) {
        let permitted = self.policy.permitted(&self.worker.name, &self.advertised.models);
        let embedding = serves_embeddings(&permitted, &self.advertised.embedding_models);
        let changed = *self.worker.models() != permitted
            || *self.worker.models_for(crate::workers::protocol::JobKind::Embeddings) != embedding;
        if changed {
            tracing::info!(worker = %self.worker.name, models = ?permitted, embedding_models = ?embedding, "worker models changed");
            self.worker.set_models(permitted, embedding);
        }
    }

    fn handle_message(&mut self, text: &str) {
        let worker = self.worker;
        match WorkerMessage::parse(text) {
            Ok(WorkerMessage::Heartbeat) => {}
            Ok(WorkerMessage::JobAccepted { job_id }) => worker.deliver_ack(&job_id, true),
            Ok(WorkerMessage::JobRefused { job_id, reason }) => {
                tracing::debug!(worker = %worker.name, job_id = %job_id, %reason, "worker refused a job");
                worker.deliver_ack(&job_id, false);
            }
            Ok(WorkerMessage::Status {
                busy,
                busy_here,
                routers,
                ..
            }) => worker.apply_status(busy, busy_here, router_links(routers)),
            Ok(WorkerMessage::Models {
                models,
                embedding_models,
            }) => match policy::validate_models(models).and_then(|models| {
                policy::validate_models(embedding_models).map(|embedding_models| Advertised {
                    models,
                    embedding_models,
                })
            }) {
                Ok(advertised) => {
                    self.advertised = advertised;
                    self.apply_models();
                }
                Err(e) => tracing::warn!(worker = %worker.name, error = %e, "ignored a models update"),
            },
            Ok(WorkerMessage::Chunk { job_id, chunk }) => worker.deliver(&job_id, JobEvent::Chunk(chunk)),
            Ok(WorkerMessage::Done { job_id, usage }) => worker.deliver(&job_id, JobEvent::Done(usage)),
            Ok(WorkerMessage::Error {
                job_id,
                message,
                status,
                retry_after,
                limited_until,
            }) => worker.deliver(
                &job_id,
                JobEvent::Failed {
                    message,
                    status,
                    retry_after,
                    limited_until: limited_until
                        .and_then(|secs| u64::try_from(secs).ok())
                        .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)),
                },
            ),
            Ok(WorkerMessage::Hello { .. }) => tracing::warn!(worker = %worker.name, "ignored a second hello"),
            // A frame about a job that cannot be read fails that job at once (its request
            // fails over if nothing reached the client yet) rather than waiting for a timeout.
            Err(e) => match crate::workers::protocol::job_id_of(text) {
                Some(job_id) => {
                    tracing::warn!(worker = %worker.name, job_id = %job_id, error = %e, "unreadable frame fails its job");
                    worker.deliver(
                        &job_id,
                        JobEvent::Failed {
                            message: format!("the worker sent an unreadable message: {e}"),
                            status: None,
                            retry_after: None,
                            limited_until: None,
                        },
                    );
                }
                None => tracing::warn!(worker = %worker.name, error = %e, "ignored an unreadable message"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn capabilities_taken_up_are_the_known_ones_and_acks_only_with_statuses() {
        assert_eq!(
            taken_up(&names(&["status", "job_ack", "later"])),
            names(&["job_ack", "status"])
        );
        assert_eq!(taken_up(&names(&["job_ack"])), Vec::<String>::new());
        assert_eq!(taken_up(&names(&["status"])), names(&["status"]));
        assert!(taken_up(&[]).is_empty());
    }

    #[test]
    fn router_links_are_bounded() {
        let link = |url: String| RouterLink { url, connected: true };
        let mut many: Vec<RouterLink> = (0..40).map(|i| link(format!("http://r{i}"))).collect();
        many[0] = link("x".repeat(MAX_ROUTER_URL_LEN + 1));
        many[1] = link("http://bad\nline".to_string());
        let kept = router_links(many);
        assert_eq!(kept.len(), MAX_ROUTER_LINKS - 2);
        assert_eq!(kept[0].url, "http://r2");
    }
}

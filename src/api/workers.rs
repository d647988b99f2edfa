//! Workers: the WebSocket they dial (`GET /api/workers/connect`), the live list
//! (`GET /api/workers`) and their tokens (`/api/worker-tokens`).

use super::admin::{no_content, reply, require_admin};
use super::error::{json_response, ApiError, Dialect};
use super::request::{api_key, parse_json, read_body};
use crate::auth::WorkerIdentity;
use crate::workers::protocol::{RouterMessage, WorkerKind, WorkerMessage, PROTOCOL_VERSION};
use crate::workers::registry::{Hello, JobEvent, LiveWorker};
use crate::AppState;
use bytes::Buf;
use futures_util::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use warp::filters::ws::{Message, WebSocket, Ws};
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::{Filter, Reply};

/// A worker must say hello this soon after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_SLOTS: u32 = 1024;
const MAX_MODELS: usize = 1000;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    let headers = warp::header::headers_cloned;
    let connect = warp::path!("api" / "workers" / "connect")
        .and(warp::get())
        .and(with_state.clone())
        .and(headers())
        .and(warp::ws())
        .map(connect);
    let list = warp::path!("api" / "workers")
        .and(warp::get())
        .and(with_state.clone())
        .and(headers())
        .then(|state, headers| reply(list_workers(state, headers)));
    let create_token = warp::path!("api" / "worker-tokens")
        .and(warp::post())
        .and(with_state.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|state, headers, body| reply(create_token(state, headers, body)));
    let list_tokens = warp::path!("api" / "worker-tokens")
        .and(warp::get())
        .and(with_state.clone())
        .and(headers())
        .then(|state, headers| reply(list_tokens(state, headers)));
    let price_token = warp::path!("api" / "worker-tokens" / String)
        .and(warp::patch())
        .and(with_state.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|id, state, headers, body| reply(price_token(state, headers, id, body)));
    let revoke_token = warp::path!("api" / "worker-tokens" / String)
        .and(warp::delete())
        .and(with_state)
        .and(headers())
        .then(|id, state, headers| reply(revoke_token(state, headers, id)));
    connect
        .or(list)
        .unify()
        .or(create_token)
        .unify()
        .or(list_tokens)
        .unify()
        .or(price_token)
        .unify()
        .or(revoke_token)
        .unify()
        .boxed()
}

/// The token is checked before the upgrade: a bad one gets a plain 401, no socket.
fn connect(state: AppState, headers: HeaderMap, ws: Ws) -> Response {
    match state.auth.authenticate_worker(api_key(&headers)) {
        Ok(identity) => ws
            .max_message_size(16 * 1024 * 1024)
            .on_upgrade(move |socket| worker_session(socket, identity, state))
            .into_response(),
        Err(e) => ApiError::from(e).into_response(Dialect::Admin),
    }
}

async fn send(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, message: &RouterMessage) -> bool {
    tx.send(Message::text(message.to_text())).await.is_ok()
}

/// Reads the worker's hello and checks it against its token.
async fn read_hello(
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
    identity: &WorkerIdentity,
) -> Result<Hello, String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, rx.next())
        .await
        .map_err(|_| "no hello within 10 s".to_string())?;
    let text = match first {
        Some(Ok(message)) if message.is_text() => message.to_str().map(str::to_string).unwrap_or_default(),
        _ => return Err("the first message must be a text hello".into()),
    };
    match WorkerMessage::parse(&text).map_err(|e| e.to_string())? {
        WorkerMessage::Hello {
            protocol,
            kind,
            name,
            models,
            slots,
            version,
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
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                return Err("name must be 1 to 64 printable characters".into());
            }
            if models.len() > MAX_MODELS {
                return Err(format!("at most {MAX_MODELS} models"));
            }
            Ok(Hello {
                token_id: identity.token_id.clone(),
                kind,
                name,
                version,
                models,
                slots,
            })
        }
        _ => Err("the first message must be a hello".into()),
    }
}

/// One worker's connection, from hello to goodbye. Every job on it ends when it ends.
async fn worker_session(socket: WebSocket, identity: WorkerIdentity, state: AppState) {
    let (mut tx, mut rx) = socket.split();
    let hello = match read_hello(&mut rx, &identity).await {
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
    tracing::info!(worker = %worker.name, kind = worker.kind.as_str(), slots = worker.slots, models = ?worker.models(), "worker connected");
    let timeout = registry.heartbeat_timeout;
    let ack = RouterMessage::HelloAck {
        protocol: PROTOCOL_VERSION,
        worker_id: worker.id.clone(),
        heartbeat_interval_ms: (timeout.as_millis() as u64 / 3).max(100),
        heartbeat_timeout_ms: timeout.as_millis() as u64,
    };
    if send(&mut tx, &ack).await {
        let reason = serve_worker(&worker, &mut tx, &mut rx, &mut outbox, timeout).await;
        tracing::info!(worker = %worker.name, %reason, "worker disconnected");
    }
    registry.unregister(&worker);
    let _ = tx.close().await;
}

async fn serve_worker(
    worker: &Arc<LiveWorker>,
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
    outbox: &mut tokio::sync::mpsc::UnboundedReceiver<RouterMessage>,
    timeout: Duration,
) -> String {
    let mut check = tokio::time::interval((timeout / 5).max(Duration::from_millis(50)));
    loop {
        tokio::select! {
            incoming = rx.next() => match incoming {
                Some(Ok(message)) => {
                    worker.touch();
                    if message.is_close() {
                        return "closed by the worker".into();
                    }
                    if let Ok(text) = message.to_str() {
                        handle_message(worker, text);
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
                let _ = send(tx, &RouterMessage::Refused { message: "closed by the router (token revoked, replaced by a newer connection, or the router is stopping)".into() }).await;
                return "closed by the router".into();
            }
            _ = check.tick() => {
                if worker.silent_for() > timeout {
                    return format!("no heartbeat for {}s", timeout.as_secs());
                }
            }
        }
    }
}

fn handle_message(worker: &LiveWorker, text: &str) {
    match WorkerMessage::parse(text) {
        Ok(WorkerMessage::Heartbeat) => {}
        Ok(WorkerMessage::Models { models }) => {
            if models.len() <= MAX_MODELS {
                tracing::info!(worker = %worker.name, ?models, "worker models changed");
                worker.set_models(models);
            }
        }
        Ok(WorkerMessage::Chunk { job_id, chunk }) => worker.deliver(&job_id, JobEvent::Chunk(chunk)),
        Ok(WorkerMessage::Done { job_id, usage }) => worker.deliver(&job_id, JobEvent::Done(usage)),
        Ok(WorkerMessage::Error {
            job_id,
            message,
            status,
        }) => worker.deliver(&job_id, JobEvent::Failed { message, status }),
        Ok(WorkerMessage::Hello { .. }) => tracing::warn!(worker = %worker.name, "ignored a second hello"),
        Err(e) => tracing::warn!(worker = %worker.name, error = %e, "ignored an unreadable message"),
    }
}

/// Live and recent workers, each with its token's subscription price (if any).
async fn list_workers(state: AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    require_admin(&state, &headers).await?;
    let prices: std::collections::HashMap<String, Option<f64>> = state
        .auth
        .list_worker_tokens()
        .await?
        .into_iter()
        .map(|t| (t.id, t.monthly_price_usd))
        .collect();
    let data: Vec<serde_json::Value> = state
        .workers
        .views()
        .into_iter()
        .map(|w| {
            let price = prices.get(&w.token_id).copied().flatten();
            let mut value = serde_json::to_value(&w).unwrap_or_default();
            value["monthly_price_usd"] = json!(price);
            value
        })
        .collect();
    Ok(json_response(200, &json!({"data": data})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenPrice {
    monthly_price_usd: Option<f64>,
}

async fn price_token<S, B>(state: AppState, headers: HeaderMap, id: String, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    require_admin(&state, &headers).await?;
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let input: TokenPrice = parse_json(&body)?;
    let view = state.auth.set_worker_price(&id, input.monthly_price_usd).await?;
    let body = serde_json::to_value(&view).map_err(|e| ApiError::new(500, "internal_error", e.to_string()))?;
    Ok(json_response(200, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWorkerToken {
    name: String,
    kind: WorkerKind,
}

async fn create_token<S, B>(state: AppState, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    require_admin(&state, &headers).await?;
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let new: NewWorkerToken = parse_json(&body)?;
    let (view, token) = state.auth.create_worker_token(&new.name, new.kind).await?;
    tracing::info!(worker_token_id = %view.id, name = %view.name, kind = view.kind.as_str(), "worker token created");
    let mut body = serde_json::to_value(&view).map_err(|e| ApiError::new(500, "internal_error", e.to_string()))?;
    body["token"] = json!(token.expose());
    Ok(json_response(201, &body))
}

async fn list_tokens(state: AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    require_admin(&state, &headers).await?;
    Ok(json_response(
        200,
        &json!({"data": state.auth.list_worker_tokens().await?}),
    ))
}

/// Revokes at once and disconnects the token's live worker.
async fn revoke_token(state: AppState, headers: HeaderMap, id: String) -> Result<Response, ApiError> {
    require_admin(&state, &headers).await?;
    state.auth.revoke_worker_token(&id).await?;
    let kicked = state.workers.kick_token(&id);
    tracing::info!(worker_token_id = %id, disconnected = kicked, "worker token revoked");
    Ok(no_content())
}

//! The admin agent: `POST /api/admin-agent/chat` (SSE), `GET /api/admin-agent/conversations`
//! and `GET /api/admin-agent/conversations/{id}`.

use super::admin::reply;
use super::body::sse_headers;
use super::error::{json_response, ApiError};
use super::request::{parse_json, read_body};
use crate::AppState;
use bytes::{Buf, Bytes};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::Filter;

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let admin = super::filters::admin(state);
    let headers = warp::header::headers_cloned;
    let chat = warp::path!("api" / "admin-agent" / "chat")
        .and(warp::post())
        .and(admin.clone())
        .and(headers())
        .and(warp::body::stream())
        .then(|state, headers, body| reply(chat(state, headers, body)));
    let list = warp::path!("api" / "admin-agent" / "conversations")
        .and(warp::get())
        .and(admin.clone())
        .then(|state| reply(list(state)));
    let get = warp::path!("api" / "admin-agent" / "conversations" / String)
        .and(warp::get())
        .and(admin)
        .then(|id, state| reply(get(state, id)));
    chat.or(list).unify().or(get).unify().boxed()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    #[serde(default)]
    conversation_id: Option<String>,
    message: String,
}

/// Answers SSE: `conversation`, then `tool_call` / `tool_result` / `message` / `error` as
/// the turn runs, then `done`. The turn runs in its own task, so a client that goes away
/// does not leave an action half-recorded.
async fn chat<S, B>(state: AppState, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let body = read_body(&headers, body, state.config.body_limit).await?;
    let input: ChatBody = parse_json(&body)?;
    let (conversation, guard) = state
        .admin_agent
        .open(input.conversation_id.as_deref(), &input.message)
        .await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let agent = state.admin_agent.clone();
    tokio::spawn(async move {
        agent.run_turn(&state, conversation, &input.message, tx).await;
        drop(guard);
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let (name, data) = event.to_sse();
        let frame = Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
        Some((Ok::<_, Infallible>(frame), rx))
    });
    let mut response = super::body::streamed(events);
    sse_headers(&mut response);
    Ok(response)
}

async fn list(state: AppState) -> Result<Response, ApiError> {
    let conversations: Vec<_> = state
        .admin_agent
        .list()
        .await?
        .into_iter()
        .map(|c| json!({"id": c.id, "title": c.title, "updated_at": crate::clock::rfc3339(c.updated_at)}))
        .collect();
    Ok(json_response(200, &json!({"data": conversations})))
}

async fn get(state: AppState, id: String) -> Result<Response, ApiError> {
    let c = state.admin_agent.get(&id).await?;
    Ok(json_response(
        200,
        &json!({"id": c.id, "title": c.title, "created_at": crate::clock::rfc3339(c.created_at),
            "updated_at": crate::clock::rfc3339(c.updated_at), "messages": c.messages,
            "pending_confirmation": c.pending_delete.is_some()}),
    ))
}

//! The admin agent: an LLM tool-calling loop that runs on the router itself, through the
//! exchange like any request (so on whatever tier is available), over tools that call
//! the same domain functions as the admin API.
//!
//! Keys never reach the model: the operator's message is redacted (see `secrets`) before it
//! is stored or sent, tools get placeholders, and the server resolves them when it runs a
//! tool. Everything stored (conversations) and sent (request bodies) holds placeholders.

mod secrets;
mod tools;

use crate::clock::now_unix;
use crate::dispatch::{ChatRequest, DispatchError, RouteOverrides};
use crate::exchange::{self, Client};
use crate::providers::anthropic::ClientHeaders;
use crate::store::{ConversationRecord, ConversationSummary, Store, StoreError};
use crate::translate::Format;
use crate::usage::MeterStart;
use crate::AppState;
use bytes::Bytes;
use secrets::SecretVault;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};
use tokio::sync::mpsc::UnboundedSender;
use tools::ToolContext;

/// Tool calls run for one operator message before the agent stops and says so.
pub const MAX_TOOL_STEPS: usize = 8;
const MAX_MESSAGE_LEN: usize = 32 * 1024;
const TITLE_LEN: usize = 60;

const SYSTEM_PROMPT: &str = "You are the admin agent of auxot, a self-hosted AI inference router. auxot sends each \
OpenAI/Anthropic API request to the cheapest tier that can take it: GPU workers, then CLI workers, then cloud \
providers (openai, anthropic, openai-compatible). You manage it for the operator with the tools given: providers \
and their models, workers and worker tokens, named agents, API keys, usage and cost, model aliases.\n\
Rules:\n\
- Keys the operator types reach you as placeholders like [[secret:1]]. Pass the placeholder verbatim as api_key; \
the server substitutes the real key. Never ask for a key to be repeated in clear, never invent one.\n\
- Newly created tokens and API keys are shown to the operator directly; you never see them.\n\
- delete_provider needs the operator's explicit confirmation: the first call tells you to ask; after the operator \
answers yes, call it again.\n\
- If a tool fails, tell the operator plainly what failed and why.\n\
- Be brief.";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("message must be 1 to {MAX_MESSAGE_LEN} characters")]
    BadMessage,
    #[error("conversation not found")]
    NotFound,
    #[error("this conversation is still answering the previous message; wait for it to finish")]
    Busy,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AgentError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => AgentError::NotFound,
            other => AgentError::Store(other),
        }
    }
}

impl AgentError {
    pub fn status(&self) -> u16 {
        match self {
            AgentError::BadMessage => 400,
            AgentError::NotFound => 404,
            AgentError::Busy => 409,
            AgentError::Store(e) => e.status(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AgentError::BadMessage => "invalid_request",
            AgentError::NotFound => "not_found",
            AgentError::Busy => "conversation_busy",
            AgentError::Store(_) => "internal_error",
        }
    }
}

/// What the operator sees, in order, as the turn runs.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    Conversation { id: String },
    ToolCall { name: String, arguments: Value },
    ToolResult { name: String, result: String, ok: bool },
    Message { content: String },
    Error { message: String },
    Done,
}

impl AgentEvent {
    /// The SSE name and JSON payload.
    pub fn to_sse(&self) -> (&'static str, Value) {
        match self {
            AgentEvent::Conversation { id } => ("conversation", json!({"id": id})),
            AgentEvent::ToolCall { name, arguments } => ("tool_call", json!({"name": name, "arguments": arguments})),
            AgentEvent::ToolResult { name, result, ok } => {
                ("tool_result", json!({"name": name, "result": result, "ok": ok}))
            }
            AgentEvent::Message { content } => ("message", json!({"content": content})),
            AgentEvent::Error { message } => ("error", json!({"message": message})),
            AgentEvent::Done => ("done", json!({})),
        }
    }
}

pub struct AdminAgent {
    store: Store,
    vault: SecretVault,
    /// Conversations with a turn running: a second message would interleave with the first
    /// and overwrite its transcript.
    busy: Mutex<HashSet<String>>,
}

/// Holds a conversation for one turn; released when dropped, however the turn ends.
pub struct TurnGuard {
    agent: Arc<AdminAgent>,
    id: String,
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        self.agent
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// The operator's answer to a pending confirmation: an explicit yes, nothing vaguer.
fn is_explicit_yes(message: &str) -> bool {
    let text = message.trim().to_lowercase();
    ["yes", "y", "confirm", "confirmed", "go ahead", "do it"]
        .iter()
        .any(|word| {
            text.strip_prefix(word)
                .is_some_and(|rest| rest.chars().next().is_none_or(|c| !c.is_alphanumeric()))
        })
}

impl AdminAgent {
    pub fn new(store: Store) -> AdminAgent {
        AdminAgent {
            store,
            vault: SecretVault::default(),
            busy: Mutex::new(HashSet::new()),
        }
    }

    pub async fn list(&self) -> Result<Vec<ConversationSummary>, AgentError> {
        Ok(self.store.list_conversations().await?)
    }

    pub async fn get(&self, id: &str) -> Result<ConversationRecord, AgentError> {
        Ok(self.store.get_conversation(id).await?)
    }

    fn claim(self: &Arc<Self>, id: &str) -> Result<TurnGuard, AgentError> {
        if !self
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string())
        {
            return Err(AgentError::Busy);
        }
        Ok(TurnGuard {
            agent: self.clone(),
            id: id.to_string(),
        })
    }

    /// Checks the message and finds (or starts) the conversation, before any streaming. The
    /// guard is claimed before the record is read, so a turn never starts from a stale copy.
    pub async fn open(
        self: &Arc<Self>,
        conversation_id: Option<&str>,
        message: &str,
    ) -> Result<(ConversationRecord, TurnGuard), AgentError> {
        if message.trim().is_empty() || message.len() > MAX_MESSAGE_LEN {
            return Err(AgentError::BadMessage);
        }
        match conversation_id {
            Some(id) => {
                let guard = self.claim(id)?;
                Ok((self.get(id).await?, guard))
            }
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                let title: String = self.vault.redact(&id, message.trim()).chars().take(TITLE_LEN).collect();
                let now = now_unix();
                let guard = self.claim(&id)?;
                let record = ConversationRecord {
                    id,
                    title,
                    created_at: now,
                    updated_at: now,
                    messages: Vec::new(),
                    pending_delete: None,
                };
                Ok((record, guard))
            }
        }
    }

    /// Runs one operator message to the end, sending events as they happen. The
    /// conversation is stored after every step, so an interrupted turn keeps what ran.
    pub async fn run_turn(
        &self,
        state: &AppState,
        mut conversation: ConversationRecord,
        message: &str,
        events: UnboundedSender<AgentEvent>,
    ) {
        let send = |event| {
            // The operator may have gone away; the turn still finishes and is stored.
            let _ = events.send(event);
        };
        send(AgentEvent::Conversation {
            id: conversation.id.clone(),
        });
        let redacted = self.vault.redact(&conversation.id, message.trim());
        let confirmed = conversation
            .pending_delete
            .take()
            .filter(|_| is_explicit_yes(&redacted));
        conversation.messages.push(json!({"role": "user", "content": redacted}));
        self.save(&mut conversation, &send).await;
        let mut steps = 0;
        loop {
            let reply = match self.ask_model(state, &conversation.messages).await {
                Ok(reply) => reply,
                Err(message) => {
                    send(AgentEvent::Error { message });
                    break;
                }
            };
            let content = reply["content"].as_str().unwrap_or_default().to_string();
            let calls = reply["tool_calls"].as_array().cloned().unwrap_or_default();
            if calls.is_empty() {
                self.end_turn(&mut conversation, content, &send).await;
                break;
            }
            conversation
                .messages
                .push(json!({"role": "assistant", "content": reply["content"], "tool_calls": calls}));
            if !content.is_empty() {
                send(AgentEvent::Message { content });
            }
            let mut stopped = false;
            for call in &calls {
                let id = call["id"].as_str().unwrap_or_default();
                let name = call["function"]["name"].as_str().unwrap_or_default();
                if steps >= MAX_TOOL_STEPS {
                    // Every tool call still needs an answer for the transcript to stay valid.
                    conversation.messages.push(
                        json!({"role": "tool", "tool_call_id": id, "content": "not run: the step limit was reached"}),
                    );
                    stopped = true;
                    continue;
                }
                steps += 1;
                let result = self
                    .run_tool(state, &mut conversation, call, confirmed.as_deref(), &send)
                    .await;
                conversation
                    .messages
                    .push(json!({"role": "tool", "tool_call_id": id, "name": name, "content": result}));
                self.save(&mut conversation, &send).await;
            }
            if stopped {
                let content = format!(
                    "I stopped after {MAX_TOOL_STEPS} tool steps for this message (the limit). Tell me how to continue, or split the request into smaller ones."
                );
                self.end_turn(&mut conversation, content, &send).await;
                break;
            }
        }
        send(AgentEvent::Done);
    }

    /// Runs one tool call and returns what the model is told; the operator sees the call
    /// (placeholders only) and its result.
    async fn run_tool(
        &self,
        state: &AppState,
        conversation: &mut ConversationRecord,
        call: &Value,
        confirmed: Option<&str>,
        send: &impl Fn(AgentEvent),
    ) -> String {
        let name = call["function"]["name"].as_str().unwrap_or_default().to_string();
        let raw = call["function"]["arguments"].as_str().unwrap_or("{}");
        // The model only ever saw placeholders, but it may echo something key-like: redact
        // before showing or storing it.
        let raw = self.vault.scrub(&conversation.id, raw);
        let arguments: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
        send(AgentEvent::ToolCall {
            name: name.clone(),
            arguments: arguments.clone(),
        });
        let context = ToolContext {
            state,
            vault: &self.vault,
            conversation: &conversation.id,
            confirmed_delete: confirmed,
        };
        let outcome = if arguments.is_object() {
            context.run(&name, &arguments).await
        } else {
            Err(tools::ToolError::Invalid("arguments must be a JSON object".into()))
        };
        let (for_model, for_operator, ok) = match outcome {
            Ok(output) => {
                if output.pending_delete.is_some() {
                    conversation.pending_delete = output.pending_delete;
                }
                let operator = output.for_operator.unwrap_or_else(|| output.for_model.clone());
                (output.for_model, operator, true)
            }
            Err(e) => {
                let text = format!("error: {e}");
                (text.clone(), text, false)
            }
        };
        let for_model = self.vault.scrub(&conversation.id, &for_model);
        tracing::info!(tool = %name, ok, conversation = %conversation.id, "admin agent ran a tool");
        send(AgentEvent::ToolResult {
            name,
            result: self.vault.scrub(&conversation.id, &for_operator),
            ok,
        });
        for_model
    }

    /// The turn's last word: the assistant's `content`, stored, then shown.
    async fn end_turn(&self, conversation: &mut ConversationRecord, content: String, send: &impl Fn(AgentEvent)) {
        conversation
            .messages
            .push(json!({"role": "assistant", "content": content}));
        self.save(conversation, send).await;
        send(AgentEvent::Message { content });
    }

    async fn save(&self, conversation: &mut ConversationRecord, send: &impl Fn(AgentEvent)) {
        conversation.updated_at = now_unix();
        if let Err(e) = self.store.put_conversation(conversation.clone()).await {
            tracing::error!(error = %e, "cannot store an admin agent conversation");
            send(AgentEvent::Error {
                message: format!("the conversation could not be saved: {e}"),
            });
        }
    }

    /// One model call through the dispatcher; the assistant message of its answer.
    async fn ask_model(&self, state: &AppState, history: &[Value]) -> Result<Value, String> {
        let model = state.rules.admin_agent_settings().model;
        let body = serde_json::to_vec(&ModelCall {
            model: &model,
            messages: WithSystemPrompt(history),
            tools: &FIXED_PARTS.tools,
            stream: false,
        })
        .map_err(|e| e.to_string())?;
        // The agent's own model calls cost money too: they get usage rows like any request.
        let mut meter = state.usage.meter(MeterStart {
            agent: Some("admin-agent".into()),
            model: model.clone(),
            request_bytes: body.len(),
            ..MeterStart::default()
        });
        let request = ChatRequest {
            body: Bytes::from(body),
            format: Format::OpenAi,
            anthropic: ClientHeaders::default(),
            model: model.clone(),
            stream: false,
            include_usage: false,
            overrides: RouteOverrides::default(),
            responses: None,
        };
        let routed = exchange::route(&state.dispatcher, request, &mut meter)
            .await
            .map_err(|e| {
                meter.failed(e.code(), e.status());
                unreachable_message(&model, &e)
            })?;
        let route = routed.route.clone();
        let client = Client::Chat {
            model: model.clone(),
            include_usage: false,
        };
        // The same round trip as a client's: the answer comes back as Chat Completions,
        // metered as it is read.
        let reply = exchange::answer(routed, client, meter)
            .await
            .map_err(|e| format!("the model's answer could not be read: {e}"))?;
        if reply.sse {
            return Err("the model answered with a stream; expected one reply".into());
        }
        let bytes = reply
            .body
            .whole()
            .await
            .map_err(|e| format!("the model's answer could not be read: {e}"))?;
        let completion: Value = serde_json::from_slice(&bytes).map_err(|e| bad_answer(&e))?;
        let message = &completion["choices"][0]["message"];
        if message.is_object() {
            Ok(message.clone())
        } else {
            Err(format!("the model's answer has no message (route {route})"))
        }
    }
}

/// The parts of every model call that never change, serialised once: the system prompt's
/// message and the tool definitions.
struct FixedParts {
    system: Box<RawValue>,
    tools: Box<RawValue>,
}

static FIXED_PARTS: LazyLock<FixedParts> = LazyLock::new(|| {
    let raw = |value: Value| serde_json::value::to_raw_value(&value).unwrap_or_else(|_| RawValue::NULL.to_owned());
    FixedParts {
        system: raw(json!({"role": "system", "content": SYSTEM_PROMPT})),
        tools: raw(tools::definitions()),
    }
});

#[derive(Serialize)]
struct ModelCall<'a> {
    model: &'a str,
    messages: WithSystemPrompt<'a>,
    tools: &'a RawValue,
    stream: bool,
}

/// The conversation so far, after the system prompt's message.
struct WithSystemPrompt<'a>(&'a [Value]);

impl Serialize for WithSystemPrompt<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len() + 1))?;
        seq.serialize_element(&*FIXED_PARTS.system)?;
        for message in self.0 {
            seq.serialize_element(message)?;
        }
        seq.end()
    }
}

fn bad_answer(e: &dyn std::fmt::Display) -> String {
    format!("the model's answer is not a chat completion: {e}")
}

/// With no model at all the operator needs to know where to add one.
fn unreachable_message(model: &str, e: &DispatchError) -> String {
    match e {
        DispatchError::Upstream { .. } | DispatchError::BodyNotObject => {
            format!("the admin agent's model '{model}' failed: {e}")
        }
        _ => format!(
            "no model is reachable for the admin agent (model '{model}'): {e}. Add a provider in Settings → Providers (or connect a worker), or set admin_agent.model in Settings."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_yes_confirms() {
        for yes in ["yes", "Yes, delete it", "y", "CONFIRM", "go ahead please", "do it."] {
            assert!(is_explicit_yes(yes), "{yes}");
        }
        for no in ["no", "yesterday", "maybe", "you decide", "ok", "sure"] {
            assert!(!is_explicit_yes(no), "{no}");
        }
    }
}

//! Fake OpenAI and Anthropic upstreams on 127.0.0.1 that record what they receive.
//!
//! Behaviour is chosen by the requested model, so one fake serves many scenarios:
//! `fail-500`, `fail-429`, `fail-400` answer that status; `gated` streams its role chunk and first
//! content chunk and then waits for `release_stream()`; `break` streams two chunks and then drops the
//! connection; `slow` answers after 3 s; `sleep-<ms>` answers after that many ms;
//! `quota-after-role` streams a role chunk then an `insufficient_quota` error event (on
//! a fake whose name starts with `bad`; others answer it normally);
//! `stall-after-first` streams its opening and first content then goes silent;
//! `huge-event` streams a 20 MiB content event; `garbage-after-first` sends a non-JSON event
//! after its first content; `no-done` ends without `[DONE]`; `redirect` answers 302; anything else answers
//! "Hello from <name>" (SSE when `stream` is true, with small delays between chunks).

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warp::http::{HeaderMap, Response, StatusCode};
use warp::Filter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeKind {
    OpenAi,
    Anthropic,
}

impl FakeKind {
    pub fn type_name(self) -> &'static str {
        match self {
            FakeKind::OpenAi => "openai",
            FakeKind::Anthropic => "anthropic",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Without the `?`; empty when none.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The connection it came on (the router's end).
    pub peer: Option<SocketAddr>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

pub struct FakeState {
    me: std::sync::Weak<FakeState>,
    pub name: String,
    pub kind: FakeKind,
    keys: Mutex<Vec<String>>,
    models: Mutex<Vec<String>>,
    requests: Mutex<Vec<Recorded>>,
    gate: Arc<tokio::sync::Semaphore>,
    fail_with: Mutex<Option<u16>>,
    /// Like an OpenAI-compatible server without the Responses API: `/v1/responses` is 404.
    chat_only: std::sync::atomic::AtomicBool,
    /// Streams whose reader went away before the stream ended (auxot closed the request).
    pub streams_cancelled: std::sync::atomic::AtomicUsize,
    /// Chat requests being answered right now, and the most seen at once.
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub max_in_flight: std::sync::atomic::AtomicUsize,
}

pub struct FakeUpstream {
    pub kind: FakeKind,
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeUpstream {
    pub async fn openai(name: &str, keys: &[&str], models: &[&str]) -> FakeUpstream {
        Self::start(FakeKind::OpenAi, name, keys, models).await
    }

    pub async fn anthropic(name: &str, keys: &[&str], models: &[&str]) -> FakeUpstream {
        Self::start(FakeKind::Anthropic, name, keys, models).await
    }

    async fn start(kind: FakeKind, name: &str, keys: &[&str], models: &[&str]) -> FakeUpstream {
        let state = Arc::new_cyclic(|me| FakeState {
            me: me.clone(),
            name: name.to_string(),
            kind,
            keys: Mutex::new(keys.iter().map(|k| k.to_string()).collect()),
            models: Mutex::new(models.iter().map(|m| m.to_string()).collect()),
            requests: Mutex::new(Vec::new()),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            fail_with: Mutex::new(None),
            chat_only: std::sync::atomic::AtomicBool::new(false),
            streams_cancelled: std::sync::atomic::AtomicUsize::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            max_in_flight: std::sync::atomic::AtomicUsize::new(0),
        });
        let shared = state.clone();
        let routes = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::addr::remote())
            .and(warp::body::bytes())
            .then(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: HeaderMap,
                      peer: Option<SocketAddr>,
                      body: Bytes| {
                    let state = shared.clone();
                    async move {
                        state
                            .handle(method.as_str(), path.as_str(), &query, &headers, peer, body)
                            .await
                    }
                },
            );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = crate::support::serve_warp(routes, async move {
            let _ = stopped.await;
        });
        tokio::spawn(server);
        FakeUpstream {
            kind,
            addr,
            state,
            _stop: stop,
        }
    }

    /// As each SDK expects it: OpenAI's includes `/v1`, Anthropic's does not.
    pub fn base_url(&self) -> String {
        match self.kind {
            FakeKind::OpenAi => format!("http://{}/v1", self.addr),
            FakeKind::Anthropic => format!("http://{}", self.addr),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn chat_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/chat/completions") || r.path.ends_with("/messages"))
            .collect()
    }

    pub fn set_models(&self, models: &[&str]) {
        *self.state.models.lock().unwrap() = models.iter().map(|m| m.to_string()).collect();
    }

    pub fn set_keys(&self, keys: &[&str]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.to_string()).collect();
    }

    /// Every chat request answers this status from now on (`None`: back to normal).
    pub fn fail_chats_with(&self, status: Option<u16>) {
        *self.state.fail_with.lock().unwrap() = status;
    }

    /// From now on `/v1/responses` answers 404, as on a server that has only chat.
    pub fn drop_responses_api(&self) {
        self.state.chat_only.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn streams_cancelled(&self) -> usize {
        self.state.streams_cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets one `gated` stream go on past its first chunk.
    pub fn release_stream(&self) {
        self.state.gate.add_permits(1);
    }
}

fn json_reply(status: u16, body: Value) -> warp::reply::Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Into::into(body.to_string()))
        .unwrap()
}

/// The first offered tool's name, when tools are offered and the last message mentions
/// the weather.
/// The `encrypted_content` of the fake's reasoning item: any other is refused, as OpenAI
/// refuses reasoning it cannot decrypt.
pub const ENCRYPTED_REASONING: &str = "gAAAAABo-opaque+/reasoning==";

/// The fake's thinking text and signature: a thinking block sent back with any other
/// is refused, as Anthropic refuses a block whose signature does not match.
pub const FAKE_THINKING: &str = "The user wants Oslo's weather; I should call the tool.";
pub const FAKE_SIGNATURE: &str = "EqQBCkgIARABGAIiQLsigfakeAAAAAA==";

/// Why Anthropic would refuse this request's thinking, if it would: a budget under 1024, a
/// temperature other than 1, a thinking block not as the fake
/// wrote it. (Claude Code leaves the fake's thinking out of the next request, so Anthropic's
/// rule that a tool-calling turn starts with its thinking is asserted by the tests instead.)
fn thinking_refusal(request: &Value) -> Option<String> {
    let messages = request["messages"].as_array()?;
    for message in messages.iter().filter(|m| m["role"] == "assistant") {
        for block in message["content"].as_array().into_iter().flatten() {
            let bad = match block["type"].as_str() {
                Some("thinking") => block["signature"] != FAKE_SIGNATURE || block["thinking"] != FAKE_THINKING,
                Some("redacted_thinking") => !block["data"].is_string(),
                _ => false,
            };
            if bad {
                return Some("messages: Invalid `signature` in `thinking` block".into());
            }
        }
    }
    if request["thinking"]["type"] != "enabled" {
        return None;
    }
    // (Under `max_tokens` too, unless interleaved thinking is on: the fake does not see
    // the beta header, so the translator's property tests hold that rule.)
    if request["thinking"]["budget_tokens"].as_u64().unwrap_or(0) < 1024 {
        return Some("thinking.budget_tokens: must be at least 1024".into());
    }
    if request.get("temperature").is_some_and(|t| t != 1.0) {
        return Some("temperature may only be set to 1 when thinking is enabled".into());
    }
    None
}

fn wants_tool(request: &Value) -> Option<String> {
    let tools = request["tools"].as_array()?;
    let last = request["messages"].as_array()?.last()?.to_string();
    if !last.contains("weather") {
        return None;
    }
    let first = tools.first()?;
    first["function"]["name"]
        .as_str()
        .or(first["name"].as_str())
        .map(str::to_string)
}

/// A call of tool `name` with `{"city":"Oslo"}`; streamed with the arguments split.
fn openai_tool_call(request: &Value, model: &str, name: &str) -> warp::reply::Response {
    if request["stream"].as_bool() != Some(true) {
        return json_reply(
            200,
            json!({"id": "chatcmpl-2", "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{\"city\":\"Oslo\"}"}}]},
                    "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}),
        );
    }
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut out = chunk(
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}]}),
        Value::Null,
    );
    for part in ["{\"ci", "ty\":\"Os", "lo\"}"] {
        out += &chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
            Value::Null,
        );
    }
    out += &chunk(json!({}), json!("tool_calls"));
    if request["stream_options"]["include_usage"] == json!(true) {
        let usage = json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}});
        out += &format!("data: {usage}\n\n");
    }
    out += "data: [DONE]\n\n";
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(Into::into(out))
        .unwrap()
}

struct InFlight(Arc<FakeState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl FakeState {
    fn self_ref(&self) -> Arc<FakeState> {
        self.me.upgrade().expect("fake state alive")
    }

    async fn handle(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        body: Bytes,
    ) -> warp::reply::Response {
        self.requests.lock().unwrap().push(Recorded {
            peer,
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: String::from_utf8_lossy(&body).to_string(),
        });
        if let Some(denied) = self.check_key(headers) {
            return denied;
        }
        match (self.kind, method, path) {
            (FakeKind::OpenAi, "GET", "/v1/models") => self.openai_models(),
            (FakeKind::Anthropic, "GET", "/v1/models") => self.anthropic_models(query),
            (FakeKind::OpenAi, "POST", "/v1/chat/completions") => self.openai_chat(&body).await,
            (FakeKind::OpenAi, "POST", "/v1/embeddings") => self.openai_embeddings(&body),
            (FakeKind::OpenAi, "POST", "/v1/responses")
                if !self.chat_only.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                self.openai_responses(&body)
            }
            (FakeKind::Anthropic, "POST", "/v1/messages") => self.anthropic_messages(&body),
            (FakeKind::Anthropic, "POST", "/v1/messages/count_tokens") => {
                json_reply(200, json!({"input_tokens": 4242}))
            }
            _ => json_reply(
                404,
                json!({"error": {"message": format!("fake has no {method} {path}"), "type": "not_found"}}),
            ),
        }
    }

    /// 401 unless the request carries one of the valid keys in this dialect's header. A key
    /// starting `sk-echo` is echoed back in the error, as a careless upstream might.
    fn check_key(&self, headers: &HeaderMap) -> Option<warp::reply::Response> {
        let sent = match self.kind {
            FakeKind::OpenAi => headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string),
            FakeKind::Anthropic => {
                if headers.get("anthropic-version").is_none() {
                    return Some(json_reply(
                        400,
                        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version header is required"}}),
                    ));
                }
                headers
                    .get("x-api-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            }
        };
        let sent = sent.unwrap_or_default();
        if self.keys.lock().unwrap().contains(&sent) {
            return None;
        }
        let message = if sent.starts_with("sk-echo") {
            format!("Incorrect API key provided: {sent}")
        } else {
            "Incorrect API key provided".to_string()
        };
        Some(match self.kind {
            FakeKind::OpenAi => json_reply(
                401,
                json!({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}),
            ),
            FakeKind::Anthropic => json_reply(
                401,
                json!({"type": "error", "error": {"type": "authentication_error", "message": message}}),
            ),
        })
    }

    /// The error every request gets while `fail_chats_with` is set, in the Anthropic or the
    /// OpenAI shape; `None` otherwise.
    fn failing_on_purpose(&self, anthropic: bool) -> Option<warp::reply::Response> {
        let status = (*self.fail_with.lock().unwrap())?;
        let message = format!("{} is failing on purpose", self.name);
        Some(if anthropic {
            json_reply(
                status,
                json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            )
        } else {
            json_reply(status, json!({"error": {"message": message, "type": "server_error"}}))
        })
    }

    /// OpenAI embeddings for models whose name holds `embed` (others answer 400, as vLLM
    /// does for a chat model): input `i` gets `[i + 0.5, <length of the fake's name>, -1]`
    /// (`dimensions` long), base64 when asked; usage is one token per input unless the
    /// model's name holds `nousage`; `floats-only` ignores `encoding_format`.
    fn openai_embeddings(&self, body: &[u8]) -> warp::reply::Response {
        use base64::Engine;
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let model = request["model"].as_str().unwrap_or("").to_string();
        if let Some(failing) = self.failing_on_purpose(false) {
            return failing;
        }
        if !model.contains("embed") {
            return json_reply(
                400,
                json!({"error": {"message": format!("model {model} does not support embeddings"), "type": "invalid_request_error"}}),
            );
        }
        let inputs = match &request["input"] {
            Value::Array(items) => items.len(),
            _ => 1,
        };
        let dimensions = request["dimensions"].as_u64().unwrap_or(3) as usize;
        let base64 = request["encoding_format"] == "base64" && !model.contains("floats-only");
        let data: Vec<Value> = (0..inputs)
            .map(|i| {
                let mut vector = vec![i as f32 + 0.5, self.name.len() as f32, -1.0];
                vector.resize(dimensions, 0.0);
                let embedding = if base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(vector)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        let mut answer = json!({"object": "list", "data": data, "model": model});
        if !model.contains("nousage") {
            answer["usage"] = json!({"prompt_tokens": inputs, "total_tokens": inputs});
        }
        json_reply(200, answer)
    }

    /// The OpenAI Responses API as OpenAI answers it: input items of an unknown type and
    /// reasoning items whose `encrypted_content` this fake did not write are refused with
    /// 400; a reasoning item comes first (its `encrypted_content` only when `include` asks
    /// for it), then a `function_call` of the first function tool with `{"city":"Oslo"}`
    /// when the last input item is a user message about the weather, else the message
    /// "Hello from <name>"; the real event sequence when `stream` is true.
    fn openai_responses(&self, body: &[u8]) -> warp::reply::Response {
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let model = request["model"].as_str().unwrap_or("").to_string();
        if let Some(failing) = self.failing_on_purpose(false) {
            return failing;
        }
        let items = match &request["input"] {
            Value::Array(items) => items.clone(),
            Value::String(text) => vec![json!({"role": "user", "content": text})],
            _ => Vec::new(),
        };
        const KNOWN: &[&str] = &[
            "message",
            "function_call",
            "function_call_output",
            "custom_tool_call",
            "custom_tool_call_output",
            "reasoning",
            "item_reference",
            "web_search_call",
            "local_shell_call",
            "local_shell_call_output",
            "file_search_call",
            "computer_call",
            "computer_call_output",
            "image_generation_call",
            "code_interpreter_call",
            "mcp_call",
            "mcp_list_tools",
            "mcp_approval_request",
            "mcp_approval_response",
        ];
        for (i, item) in items.iter().enumerate() {
            let kind = item["type"].as_str().unwrap_or("message");
            if !KNOWN.contains(&kind) {
                return json_reply(
                    400,
                    json!({"error": {"message": format!("Invalid value: '{kind}'."), "type": "invalid_request_error",
                        "param": format!("input[{i}].type"), "code": "invalid_value"}}),
                );
            }
            if kind == "reasoning" && item["encrypted_content"].as_str() != Some(ENCRYPTED_REASONING) {
                return json_reply(
                    400,
                    json!({"error": {"message": "The encrypted content for item rs_1 could not be verified.",
                        "type": "invalid_request_error", "param": null, "code": "invalid_encrypted_content"}}),
                );
            }
        }
        let asks_weather = items.last().is_some_and(|last| {
            last["type"].as_str().unwrap_or("message") == "message"
                && last["role"] == "user"
                && last.to_string().contains("weather")
        });
        let tool = request["tools"]
            .as_array()
            .and_then(|tools| tools.iter().find(|t| t["type"] == "function"))
            .and_then(|t| t["name"].as_str())
            .filter(|_| asks_weather)
            .map(str::to_string);
        let include_encrypted = request["include"]
            .as_array()
            .is_some_and(|list| list.iter().any(|v| v == "reasoning.encrypted_content"));
        let mut reasoning = json!({"type": "reasoning", "id": "rs_1", "summary": []});
        if include_encrypted {
            reasoning["encrypted_content"] = json!(ENCRYPTED_REASONING);
        }
        let text = format!("Hello from {}", self.name);
        let arguments = "{\"city\":\"Oslo\"}";
        let answer = |done: bool| match &tool {
            Some(name) => json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": name,
                "arguments": if done { arguments } else { "" }, "status": if done { "completed" } else { "in_progress" }}),
            None => json!({"type": "message", "id": "msg_1", "status": if done { "completed" } else { "in_progress" },
                "role": "assistant",
                "content": if done { json!([{"type": "output_text", "text": text, "annotations": []}]) } else { json!([]) }}),
        };
        let usage = json!({"input_tokens": 9, "input_tokens_details": {"cached_tokens": 2},
            "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 13});
        let response = |status: &str, output: Value, usage: Value| {
            json!({"id": "resp_1", "object": "response", "created_at": 1700000000, "status": status,
                "model": model, "output": output, "usage": usage, "error": null, "incomplete_details": null})
        };
        if request["stream"].as_bool() != Some(true) {
            return json_reply(200, response("completed", json!([reasoning, answer(true)]), usage));
        }
        let mut seq = 0;
        let mut out = String::new();
        let mut event = |kind: &str, mut data: Value| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(seq);
            seq += 1;
            out += &format!("event: {kind}\ndata: {data}\n\n");
        };
        event(
            "response.created",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        );
        event(
            "response.in_progress",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        );
        event(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
        );
        event(
            "response.output_item.done",
            json!({"output_index": 0, "item": reasoning}),
        );
        event(
            "response.output_item.added",
            json!({"output_index": 1, "item": answer(false)}),
        );
        if tool.is_some() {
            for part in ["{\"ci", "ty\":\"Os", "lo\"}"] {
                event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": "fc_1", "output_index": 1, "delta": part}),
                );
            }
            event(
                "response.function_call_arguments.done",
                json!({"item_id": "fc_1", "output_index": 1, "arguments": arguments}),
            );
        } else {
            event(
                "response.content_part.added",
                json!({"item_id": "msg_1", "output_index": 1, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
            for word in text.split_inclusive(' ') {
                event(
                    "response.output_text.delta",
                    json!({"item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": word, "logprobs": []}),
                );
            }
            event(
                "response.output_text.done",
                json!({"item_id": "msg_1", "output_index": 1, "content_index": 0, "text": text, "logprobs": []}),
            );
            event(
                "response.content_part.done",
                json!({"item_id": "msg_1", "output_index": 1, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}),
            );
        }
        event(
            "response.output_item.done",
            json!({"output_index": 1, "item": answer(true)}),
        );
        event(
            "response.completed",
            json!({"response": response("completed", json!([reasoning, answer(true)]), usage)}),
        );
        Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .body(Into::into(out))
            .unwrap()
    }

    fn openai_models(&self) -> warp::reply::Response {
        let data: Vec<Value> = self
            .models
            .lock()
            .unwrap()
            .iter()
            .map(|m| json!({"id": m, "object": "model", "created": 1700000000, "owned_by": self.name}))
            .collect();
        json_reply(200, json!({"object": "list", "data": data}))
    }

    /// Two models a page, so auxot's pagination is exercised.
    fn anthropic_models(&self, query: &str) -> warp::reply::Response {
        let models = self.models.lock().unwrap().clone();
        let after = query
            .split('&')
            .find_map(|p| p.strip_prefix("after_id="))
            .map(str::to_string);
        let start = match after {
            Some(after) => models.iter().position(|m| *m == after).map_or(models.len(), |i| i + 1),
            None => 0,
        };
        let page: Vec<&String> = models.iter().skip(start).take(2).collect();
        let has_more = start + page.len() < models.len();
        let data: Vec<Value> = page
            .iter()
            .map(|m| json!({"type": "model", "id": m, "display_name": m.to_uppercase(), "created_at": "2025-02-19T00:00:00Z"}))
            .collect();
        json_reply(
            200,
            json!({"data": data, "has_more": has_more, "first_id": page.first(), "last_id": page.last()}),
        )
    }

    /// Anthropic Messages: text, or a `tool_use` when tools are offered and the last user
    /// message asks about the weather; SSE events when `stream` is true.
    fn anthropic_messages(&self, body: &[u8]) -> warp::reply::Response {
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let model = request["model"].as_str().unwrap_or("").to_string();
        if let Some(failing) = self.failing_on_purpose(true) {
            return failing;
        }
        let thinking = request["thinking"]["type"] == "enabled";
        if let Some(refusal) = thinking_refusal(&request) {
            return json_reply(
                400,
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": refusal}}),
            );
        }
        let text = format!("Hello from {}", self.name);
        let tool = wants_tool(&request);
        if request["stream"].as_bool() != Some(true) {
            let mut content = Vec::new();
            if thinking {
                content.push(json!({"type": "thinking", "thinking": FAKE_THINKING, "signature": FAKE_SIGNATURE}));
            }
            content.push(json!({"type": "text", "text": text}));
            if let Some(name) = &tool {
                content.push(json!({"type": "tool_use", "id": "toolu_1", "name": name, "input": {"city": "Oslo"}}));
            }
            return json_reply(
                200,
                json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
                    "stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null,
                    "usage": {"input_tokens": 11, "output_tokens": 6}}),
            );
        }
        let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        let mut out = String::new();
        if model == "overloaded-after-start" && self.name.starts_with("bad") {
            // As Anthropic does when it is overloaded mid-request: an opening, a ping, an error.
            out += &event(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 1}}}),
            );
            out += &event("ping", json!({"type": "ping"}));
            out += &event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            );
            return Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(Into::into(out))
                .unwrap();
        }
        out += &event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        );
        let mut index = 0;
        if thinking {
            out += &event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            );
            let (head, tail) = FAKE_THINKING.split_at(FAKE_THINKING.len() / 2);
            for part in [head, tail] {
                out += &event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": part}}),
                );
            }
            out += &event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": FAKE_SIGNATURE}}),
            );
            out += &event("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
            index += 1;
        }
        out += &event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        );
        out += &event("ping", json!({"type": "ping"}));
        for word in text.split_inclusive(' ') {
            out += &event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": word}}),
            );
        }
        out += &event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
        if let Some(name) = &tool {
            out += &event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}}),
            );
            for part in ["{\"ci", "ty\": \"Os", "lo\"}"] {
                out += &event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": part}}),
                );
            }
            out += &event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
        }
        let stop = if tool.is_some() { "tool_use" } else { "end_turn" };
        out += &event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 6}}),
        );
        out += &event("message_stop", json!({"type": "message_stop"}));
        Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .body(Into::into(out))
            .unwrap()
    }

    async fn openai_chat(&self, body: &[u8]) -> warp::reply::Response {
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let model = request["model"].as_str().unwrap_or("").to_string();
        if let Some(failing) = self.failing_on_purpose(false) {
            return failing;
        }
        match model.as_str() {
            "fail-500" => {
                return json_reply(
                    500,
                    json!({"error": {"message": "The server had an error", "type": "server_error"}}),
                )
            }
            "fail-429" => {
                let mut reply = json_reply(
                    429,
                    json!({"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}),
                );
                reply
                    .headers_mut()
                    .insert("retry-after", warp::http::HeaderValue::from_static("7"));
                return reply;
            }
            "fail-400" => {
                return json_reply(
                    400,
                    json!({"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error", "param": "temperature"}}),
                )
            }
            "slow" => tokio::time::sleep(Duration::from_secs(3)).await,
            "redirect" => {
                return Response::builder()
                    .status(302)
                    .header("location", "http://127.0.0.1:9/elsewhere")
                    .body(Into::into(Bytes::new()))
                    .unwrap()
            }
            "quota-after-role" if self.name.starts_with("bad") => return openai_scripted_stream(&model),
            "stall-before-content" if self.name.starts_with("stall") => return openai_scripted_stream(&model),
            "stall-after-first" | "huge-event" | "garbage-after-first" | "no-done" => {
                return openai_scripted_stream(&model)
            }
            m if m.starts_with("sleep-") => {
                let ms: u64 = m["sleep-".len()..].parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            _ => {}
        }
        let text = format!("Hello from {}", self.name);
        if let Some(name) = wants_tool(&request) {
            return openai_tool_call(&request, &model, &name);
        }
        if request["stream"].as_bool() != Some(true) {
            return json_reply(
                200,
                json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}),
            );
        }
        let chunk = |delta: Value, finish: Value| {
            let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            Bytes::from(format!("data: {c}\n\n"))
        };
        let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        for word in text.split_inclusive(' ') {
            chunks.push(chunk(json!({"content": word}), Value::Null));
        }
        chunks.push(chunk(json!({}), json!("stop")));
        // As OpenAI does: usage comes in a last chunk with no choices, only when asked for.
        if request["stream_options"]["include_usage"] == json!(true) {
            let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}});
            chunks.push(Bytes::from(format!("data: {usage}\n\n")));
        }
        chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
        let gated = model == "gated";
        let breaks = model == "break";
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let gate = self.gate.clone();
        let state = self.self_ref();
        tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            state.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let _done = InFlight(state.clone());
            for (i, chunk) in chunks.into_iter().enumerate() {
                // After the opening and the first content: auxot holds openings back
                // until content, so the gate sits behind the first content chunk.
                if i == 2 && gated {
                    tokio::select! {
                        permit = gate.acquire() => {
                            if let Ok(permit) = permit {
                                permit.forget();
                            }
                        }
                        _ = tx.closed() => {
                            state.streams_cancelled.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                } else if i > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if breaks && i == 2 {
                    let _ = tx.send(Err(std::io::Error::other("upstream died"))).await;
                    break;
                }
                if tx.send(Ok(chunk)).await.is_err() {
                    state.streams_cancelled.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream")
            .body(crate::support::stream_body(body))
            .unwrap()
    }
}

/// A stream that opens like OpenAI's and then errors (`quota-after-role`) or goes silent
/// after its first content (`stall-after-first`, until the client leaves).
fn openai_scripted_stream(model: &str) -> warp::reply::Response {
    let chunk = |delta: Value| {
        let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut parts = vec![chunk(json!({"role": "assistant", "content": ""}))];
    let stalls = model == "stall-after-first" || model == "stall-before-content";
    if model == "garbage-after-first" {
        parts.push(chunk(json!({"content": "Hel"})));
        parts.push(Bytes::from_static(b"data: {\"choices\": [trunc\n\n"));
        parts.push(Bytes::from_static(b"data: [DONE]\n\n"));
    } else if model == "no-done" {
        parts.push(chunk(json!({"content": "Hel"})));
    } else if model == "huge-event" {
        parts.push(chunk(json!({"content": "x".repeat(20 * 1024 * 1024)})));
        parts.push(Bytes::from_static(b"data: [DONE]\n\n"));
    } else if model == "stall-before-content" {
        // The role-only opening, then silence: nothing the client could have seen yet.
    } else if stalls {
        parts.push(chunk(json!({"content": "Hel"})));
    } else {
        let error = json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}});
        parts.push(Bytes::from(format!("data: {error}\n\n")));
    }
    let opening = futures_util::stream::iter(parts.into_iter().map(Ok::<Bytes, std::io::Error>));
    let body = if stalls {
        crate::support::stream_body(opening.chain(futures_util::stream::pending()))
    } else {
        crate::support::stream_body(opening)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

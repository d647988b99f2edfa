//! Local model servers as `auxot worker gpu` meets them, each faithful to how the real one
//! reports token counts:
//!
//! - `LlamaCppPython`: llama-cpp-python's server. Streams `json.dumps` chunks (spaces after
//!   `:` and `,`, `\r\n` line ends), ignores `stream_options.include_usage` and sends neither
//!   usage nor timings in a stream; a whole answer carries the exact `usage`.
//! - `LlamaServer`: llama.cpp's `llama-server` without usage chunks: the last chunk of a
//!   stream carries `timings` (`prompt_n` excludes the `cache_n` reused prompt tokens); a
//!   whole answer carries `usage` and `timings`.
//!
//! Both refuse `stream_options` on a non-streamed request (as OpenAI and vLLM do), and
//! answer every prompt with `TEXT`: 48 bytes, 12 tokens, after a 28-token prompt.

use bytes::Bytes;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use warp::http::Response;
use warp::Filter;

pub const TEXT: &str = "The quick brown fox jumps over the lazy dog now.";
pub const PROMPT_TOKENS: u64 = 28;
pub const COMPLETION_TOKENS: u64 = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    LlamaCppPython,
    LlamaServer,
}

pub struct FakeModelServer {
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeModelServer {
    pub async fn start(flavour: Flavour, model: &'static str) -> FakeModelServer {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let list = warp::get().and(warp::path!("v1" / "models")).map(move || {
            warp::reply::json(
                &json!({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "me", "permissions": []}]}),
            )
        });
        let seen = bodies.clone();
        let chat = warp::post()
            .and(warp::path!("v1" / "chat" / "completions"))
            .and(warp::body::bytes())
            .map(move |body: Bytes| {
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.lock().unwrap().push(request.clone());
                answer(flavour, model, &request)
            });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = crate::support::serve_warp(list.or(chat), async move {
            let _ = stopped.await;
        });
        tokio::spawn(server);
        FakeModelServer {
            addr,
            bodies,
            _stop: stop,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The chat requests received, oldest first.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// `json.dumps` spacing, as Python servers write JSON.
fn python_json(value: &Value) -> String {
    let compact = value.to_string();
    let mut out = String::with_capacity(compact.len() + compact.len() / 8);
    let mut in_string = false;
    let mut escaped = false;
    for c in compact.chars() {
        out.push(c);
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ':' || c == ',' {
            out.push(' ');
        }
    }
    out
}

fn answer(flavour: Flavour, model: &str, request: &Value) -> Response<String> {
    let stream = request["stream"] == json!(true);
    if !stream && request.get("stream_options").is_some() {
        return Response::builder()
            .status(400)
            .header("content-type", "application/json")
            .body(json!({"error": {"message": "stream_options is only allowed when stream is true", "type": "invalid_request_error", "code": 400}}).to_string())
            .unwrap();
    }
    let usage = json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS});
    let timings = json!({"cache_n": 4, "prompt_n": PROMPT_TOKENS - 4, "prompt_ms": 30.5, "prompt_per_token_ms": 1.27,
        "prompt_per_second": 786.8, "predicted_n": COMPLETION_TOKENS, "predicted_ms": 80.2, "predicted_per_token_ms": 6.68, "predicted_per_second": 149.6});
    if !stream {
        let mut whole = json!({"id": "chatcmpl-7", "object": "chat.completion", "created": 1_767_225_600, "model": model,
            "choices": [{"index": 0, "message": {"content": TEXT, "role": "assistant"}, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage});
        if flavour == Flavour::LlamaServer {
            whole["timings"] = timings;
            whole["system_fingerprint"] = json!("b6000-abcdef");
        }
        let body = match flavour {
            Flavour::LlamaCppPython => python_json(&whole),
            Flavour::LlamaServer => whole.to_string(),
        };
        return Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1_767_225_600, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut chunks = vec![chunk(json!({"role": "assistant"}), Value::Null)];
    // One token a chunk, as these servers stream.
    for word in TEXT.split_inclusive(' ') {
        chunks.push(chunk(json!({"content": word}), Value::Null));
    }
    let mut last = chunk(json!({}), json!("stop"));
    if flavour == Flavour::LlamaServer {
        last["timings"] = timings;
    }
    chunks.push(last);
    let mut body = String::new();
    for c in &chunks {
        match flavour {
            Flavour::LlamaCppPython => body += &format!("data: {}\r\n\r\n", python_json(c)),
            Flavour::LlamaServer => body += &format!("data: {c}\n\n"),
        }
    }
    body += "data: [DONE]\n\n";
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

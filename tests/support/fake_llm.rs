//! A scripted OpenAI-compatible LLM on 127.0.0.1 for the admin agent: `GET /v1/models`
//! lists one model; each `POST /v1/chat/completions` answers the next scripted step (a tool
//! call or a final text; "done" once the script runs out) and records the request body.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use warp::Filter;

pub const LLM_MODEL: &str = "agent-llm";

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Step {
    Tool(&'static str, Value),
    Text(&'static str),
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Step>>,
    bodies: Mutex<Vec<String>>,
    calls: Mutex<usize>,
}

pub struct FakeLlm {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeLlm {
    pub async fn start(script: Vec<Step>) -> FakeLlm {
        let shared = Arc::new(Shared::default());
        shared.script.lock().unwrap().extend(script);
        let models = warp::path!("v1" / "models")
            .and(warp::get())
            .map(|| warp::reply::json(&json!({"object": "list", "data": [{"id": LLM_MODEL, "object": "model"}]})));
        let state = shared.clone();
        let chat = warp::path!("v1" / "chat" / "completions")
            .and(warp::post())
            .and(warp::body::bytes())
            .map(move |body: bytes::Bytes| {
                state
                    .bodies
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).to_string());
                let n = {
                    let mut calls = state.calls.lock().unwrap();
                    *calls += 1;
                    *calls
                };
                let step = state.script.lock().unwrap().pop_front().unwrap_or(Step::Text("done"));
                warp::reply::json(&completion(step, n))
            });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = crate::support::serve_warp(models.or(chat), async move {
            let _ = stopped.await;
        });
        tokio::spawn(server);
        FakeLlm {
            addr,
            shared,
            _stop: stop,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues more steps (for the operator's next message).
    pub fn push(&self, steps: Vec<Step>) {
        self.shared.script.lock().unwrap().extend(steps);
    }

    /// Every chat request body received, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.shared.bodies.lock().unwrap().clone()
    }

    pub fn last_body(&self) -> Value {
        serde_json::from_str(self.bodies().last().expect("a request")).unwrap()
    }
}

fn completion(step: Step, n: usize) -> Value {
    let message = match step {
        Step::Tool(name, args) => json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": format!("call_{n}"), "type": "function", "function": {"name": name, "arguments": args.to_string()}}]}),
        Step::Text(text) => json!({"role": "assistant", "content": text}),
    };
    json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion", "created": 1700000000, "model": LLM_MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
}

//! Exact token counts from real-shaped local model servers behind a real `auxot worker gpu`:
//! in the client's answer (both dialects), on the usage row, and in the request log.

use crate::support::model_server::{FakeModelServer, Flavour, COMPLETION_TOKENS, PROMPT_TOKENS, TEXT};
use crate::support::worker::worker_token_allowing;
use crate::support::{TestServer, TestWorker};
use serde_json::{json, Value};

const MODEL: &str = "qwen2.5-7b-instruct";

struct Setup {
    server: TestServer,
    admin: String,
    client: String,
    model_server: FakeModelServer,
    _worker: TestWorker,
}

async fn setup(flavour: Flavour) -> Setup {
    let model_server = FakeModelServer::start(flavour, MODEL).await;
    let (server, admin) = TestServer::with_admin().await;
    let token = worker_token_allowing(&server, &admin, "box-1", "gpu", &["*"]).await;
    let args = vec!["gpu".to_string(), "--upstream".into(), model_server.base_url()];
    let worker = TestWorker::launch(&server, &admin, "box-1", &token, 2, args, &[]).await;
    let client = server.client_key(&admin).await;
    Setup {
        server,
        admin,
        client,
        model_server,
        _worker: worker,
    }
}

impl Setup {
    async fn openai(&self, body: Value) -> crate::support::Reply {
        let reply = self
            .server
            .call("POST", "/v1/chat/completions", Some(&self.client), Some(body))
            .await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-tier"), Some("gpu"), "{}", reply.text);
        reply
    }

    async fn anthropic(&self, stream: bool) -> crate::support::Reply {
        let body = json!({"model": MODEL, "max_tokens": 100, "stream": stream, "messages": [{"role": "user", "content": "Tell me about foxes"}]});
        let reply = self
            .server
            .call("POST", "/v1/messages", Some(&self.client), Some(body))
            .await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-tier"), Some("gpu"), "{}", reply.text);
        reply
    }

    /// The request log, newest first.
    async fn rows(&self) -> Vec<Value> {
        let reply = self
            .server
            .call("GET", "/api/requests?limit=50", Some(&self.admin), None)
            .await;
        reply.expect(200);
        reply.json()["requests"].as_array().unwrap().clone()
    }
}

fn chat(stream: bool) -> Value {
    json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "Tell me about foxes"}]})
}

fn exact(row: &Value) {
    assert_eq!(row["estimated"], false, "{row}");
    assert_eq!(row["input_tokens"], PROMPT_TOKENS, "{row}");
    assert_eq!(row["output_tokens"], COMPLETION_TOKENS, "{row}");
    assert_eq!(row["outcome"], "ok", "{row}");
    assert_eq!(row["tier"], "gpu", "{row}");
    assert!(row["cloud_equivalent_usd"].as_f64().unwrap() > 0.0, "{row}");
    assert_eq!(row["cost_usd"], 0.0, "{row}");
}

/// The last SSE event whose data holds `needle`, parsed.
fn last_event_with(text: &str, needle: &str) -> Value {
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .rfind(|d| d.contains(needle))
        .unwrap_or_else(|| panic!("no event with {needle}: {text}"));
    serde_json::from_str(data).unwrap()
}

#[tokio::test]
async fn llama_cpp_python_json_answers_carry_exact_usage_in_both_dialects() {
    let s = setup(Flavour::LlamaCppPython).await;

    let answer = s.openai(chat(false)).await.json();
    assert_eq!(answer["choices"][0]["message"]["content"], TEXT);
    assert_eq!(answer["usage"]["prompt_tokens"], PROMPT_TOKENS, "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], COMPLETION_TOKENS);
    let sent = s.model_server.bodies().pop().unwrap();
    assert_eq!(sent["stream"], false, "a JSON answer is asked whole: {sent}");
    assert!(sent.get("stream_options").is_none(), "{sent}");

    let answer = s.anthropic(false).await.json();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["content"][0]["text"], TEXT);
    assert_eq!(answer["usage"]["input_tokens"], PROMPT_TOKENS, "{answer}");
    assert_eq!(answer["usage"]["output_tokens"], COMPLETION_TOKENS);

    let rows = s.rows().await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        exact(row);
        assert_eq!(row["stream"], false);
    }
    let usage = s
        .server
        .call("GET", "/api/usage?group_by=tier", Some(&s.admin), None)
        .await
        .json();
    assert_eq!(usage["totals"]["input_tokens"], 2 * PROMPT_TOKENS, "{usage}");
    assert_eq!(usage["totals"]["output_tokens"], 2 * COMPLETION_TOKENS);
    assert_eq!(usage["totals"]["estimated"], 0);
}

#[tokio::test]
async fn llama_cpp_python_streams_report_nothing_so_the_row_is_a_marked_close_estimate() {
    let s = setup(Flavour::LlamaCppPython).await;
    let mut body = chat(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = s.openai(body).await;
    assert!(reply.text.contains("\"content\": \"fox \""), "{}", reply.text);
    assert!(reply.text.trim_end().ends_with("data: [DONE]"));
    let sent = s.model_server.bodies().pop().unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true, "usage is asked for");
    s.anthropic(true).await;

    let rows = s.rows().await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row["estimated"], true, "no count came back: {row}");
        assert_eq!(row["outcome"], "ok", "{row}");
        // 48 bytes of text / 4: the same as the 12 tokens generated (wire bytes / 12 gave ~3×).
        assert_eq!(row["output_tokens"], COMPLETION_TOKENS, "{row}");
        assert!(row["input_tokens"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["cost_usd"], 0.0);
    }
    let usage = s.server.call("GET", "/api/usage", Some(&s.admin), None).await.json();
    assert_eq!(usage["totals"]["estimated"], 2, "{usage}");
}

#[tokio::test]
async fn llama_server_timings_give_streams_exact_counts_in_both_dialects() {
    let s = setup(Flavour::LlamaServer).await;
    let mut body = chat(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = s.openai(body).await;
    let usage = last_event_with(&reply.text, "\"usage\"");
    assert_eq!(usage["usage"]["prompt_tokens"], PROMPT_TOKENS, "{}", reply.text);
    assert_eq!(usage["usage"]["completion_tokens"], COMPLETION_TOKENS);

    // A client that did not ask for usage does not get the usage-only chunk.
    let reply = s.openai(chat(true)).await;
    assert!(!reply.text.contains("\"choices\":[]"), "{}", reply.text);

    let reply = s.anthropic(true).await;
    let delta = last_event_with(&reply.text, "message_delta");
    assert_eq!(delta["usage"]["output_tokens"], COMPLETION_TOKENS, "{}", reply.text);
    assert_eq!(delta["usage"]["input_tokens"], PROMPT_TOKENS, "{}", reply.text);

    let answer = s.openai(chat(false)).await.json();
    assert_eq!(answer["usage"]["completion_tokens"], COMPLETION_TOKENS, "{answer}");

    let rows = s.rows().await;
    assert_eq!(rows.len(), 4);
    for row in &rows {
        exact(row);
    }
}

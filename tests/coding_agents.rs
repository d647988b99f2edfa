//! What coding agents (Claude Code, Codex) send, end to end: Claude Code's newest request
//! shape on every tier, the headers and query it needs forwarded, its probes, its model
//! names; the OpenAI Responses API on every tier.

use crate::support::{FakeUpstream, Reply, TestServer, TestWorker};
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-openai-provider-key-0101";
const ANTHROPIC_KEY: &str = "sk-ant-provider-key-0102";
const GPU_KEY: &str = "sk-local-model-server-0103";

async fn server() -> (TestServer, String, String) {
    let server = TestServer::start().await;
    let admin = server.admin_key().await;
    let client = server.client_key(&admin).await;
    (server, admin, client)
}

/// A request as Claude Code 2.1 sends it: `?beta=true`, its headers, a `role: "system"`
/// message mid-conversation, adaptive thinking, context management, a server tool.
fn claude_code_body(model: &str) -> Value {
    json!({
        "model": model, "max_tokens": 32000, "stream": true,
        "metadata": {"user_id": "user_1_account__session_2"},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "tools": [
            {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": "Hi."},
            {"role": "system", "content": "<system-reminder>Be terse.</system-reminder>"},
            {"role": "user", "content": "what is the weather in Oslo?"}
        ]
    })
}

async fn claude_code_call(server: &TestServer, key: &str, body: &Value) -> Reply {
    server
        .send(
            server
                .http
                .post(format!("{}/v1/messages?beta=true", server.url))
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
                .header(
                    "anthropic-beta",
                    "claude-code-20250219,mid-conversation-system-2026-04-07",
                )
                .header("user-agent", "claude-cli/2.1.0 (external, cli)")
                .header("x-app", "cli")
                .header("x-claude-code-session-id", "sess-1")
                .json(body),
        )
        .await
}

/// The `tool_use` block's input an Anthropic SSE stream carried, joined from its deltas.
fn streamed_tool_input(text: &str) -> (String, String) {
    let mut name = String::new();
    let mut input = String::new();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
            continue;
        };
        if event["content_block"]["type"] == "tool_use" {
            name = event["content_block"]["name"].as_str().unwrap_or("").to_string();
        }
        if event["delta"]["type"] == "input_json_delta" {
            input.push_str(event["delta"]["partial_json"].as_str().unwrap_or(""));
        }
    }
    (name, input)
}

#[tokio::test]
async fn claude_code_requests_with_system_messages_run_on_a_gpu_worker() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let (server, admin, client) = server().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 1).await;
    let reply = claude_code_call(&server, &client, &claude_code_body("qwen")).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("gpu"));
    let (name, input) = streamed_tool_input(&reply.text);
    assert_eq!(name, "get_weather", "{}", reply.text);
    assert_eq!(serde_json::from_str::<Value>(&input).unwrap(), json!({"city": "Oslo"}));
    let seen = gpu.chat_requests().pop().unwrap().json();
    let messages = seen["messages"].as_array().unwrap();
    // Local chat templates want one leading system message: the reminder joins the user turn.
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You are Claude Code."})
    );
    assert!(messages[1..].iter().all(|m| m["role"] != "system"), "{messages:?}");
    let last = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(last.contains("Be terse.") && last.contains("weather in Oslo"), "{last}");
    assert_eq!(
        seen["tools"].as_array().unwrap().len(),
        1,
        "the server tool is left out"
    );
}

#[tokio::test]
async fn claude_code_requests_with_system_messages_run_on_an_openai_provider() {
    let fake = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-4o"]).await;
    let (server, admin, client) = server().await;
    server.add_provider(&admin, "openai", &fake, OPENAI_KEY).await;
    let reply = claude_code_call(&server, &client, &claude_code_body("gpt-4o")).await;
    reply.expect(200);
    let (name, _) = streamed_tool_input(&reply.text);
    assert_eq!(name, "get_weather", "{}", reply.text);
    let seen = fake.chat_requests().pop().unwrap().json();
    let roles: Vec<&str> = seen["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "system", "user"]);
    for dropped in ["thinking", "context_management", "output_config"] {
        assert!(seen.get(dropped).is_none(), "{dropped} reached OpenAI");
    }
}

#[tokio::test]
async fn claude_code_reaches_anthropic_byte_exact_with_its_query_and_headers() {
    let fake = FakeUpstream::anthropic("claude", &[ANTHROPIC_KEY], &["claude-sonnet-4-5-20250929"]).await;
    let (server, admin, client) = server().await;
    server.add_provider(&admin, "anthropic", &fake, ANTHROPIC_KEY).await;
    let body = claude_code_body("claude-sonnet-4-5-20250929");
    let sent = body.to_string();
    let reply = server
        .send(
            server
                .http
                .post(format!("{}/v1/messages?beta=true", server.url))
                .header("x-api-key", &client)
                .header("anthropic-version", "2023-06-01")
                .header("anthropic-beta", "claude-code-20250219")
                .header("user-agent", "claude-cli/2.1.0 (external, cli)")
                .header("x-app", "cli")
                .header("content-type", "application/json")
                .body(sent.clone()),
        )
        .await;
    reply.expect(200);
    let seen = fake.chat_requests().pop().unwrap();
    assert_eq!(seen.body, sent, "pass-through must stay byte for byte");
    assert_eq!(seen.query, "beta=true");
    assert_eq!(seen.header("anthropic-beta"), Some("claude-code-20250219"));
    assert_eq!(seen.header("user-agent"), Some("claude-cli/2.1.0 (external, cli)"));
    assert_eq!(seen.header("x-app"), Some("cli"));
}

#[tokio::test]
async fn head_probes_answer_200() {
    let (server, _admin, _client) = server().await;
    for path in ["/", "/v1/messages", "/api/anthropic/v1/messages"] {
        let reply = server.send(server.http.head(format!("{}{path}", server.url))).await;
        assert_eq!(reply.status, 200, "HEAD {path}");
    }
}

#[tokio::test]
async fn count_tokens_is_answered_by_an_anthropic_target_and_estimated_otherwise() {
    let claude = FakeUpstream::anthropic("claude", &[ANTHROPIC_KEY], &["claude-sonnet-4-5-20250929"]).await;
    let openai = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-4o"]).await;
    let (server, admin, client) = server().await;
    server.add_provider(&admin, "anthropic", &claude, ANTHROPIC_KEY).await;
    server.add_provider(&admin, "openai", &openai, OPENAI_KEY).await;
    let count = |model: &str| {
        server
            .http
            .post(format!("{}/v1/messages/count_tokens?beta=true", server.url))
            .header("x-api-key", &client)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]}))
    };
    let reply = server.send(count("claude-sonnet-4-5-20250929")).await;
    reply.expect(200);
    assert_eq!(reply.json()["input_tokens"], 4242);
    let seen = claude
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/messages/count_tokens")
        .unwrap();
    assert_eq!(seen.query, "beta=true");
    let reply = server.send(count("gpt-4o")).await;
    reply.expect(200);
    let estimate = reply.json()["input_tokens"].as_u64().unwrap();
    assert!((1..50).contains(&estimate), "{estimate}");
}

#[tokio::test]
async fn undated_and_latest_model_names_resolve_to_the_newest_dated_id() {
    let fake = FakeUpstream::anthropic(
        "claude",
        &[ANTHROPIC_KEY],
        &[
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-5-20250101",
            "claude-3-5-haiku-20241022",
        ],
    )
    .await;
    let (server, admin, client) = server().await;
    server.add_provider(&admin, "anthropic", &fake, ANTHROPIC_KEY).await;
    for (asked, sent) in [
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ] {
        let body = json!({"model": asked, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        let reply = claude_code_call(&server, &client, &body).await;
        reply.expect(200);
        assert_eq!(fake.chat_requests().pop().unwrap().json()["model"], sent, "{asked}");
    }
    let body = json!({"model": "claude-sonnet-4", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    claude_code_call(&server, &client, &body).await.expect(404);
}

#[tokio::test]
async fn an_operator_sends_every_claude_model_to_an_alias_on_the_gpu() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen-coder"]).await;
    let (server, admin, client) = server().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 1).await;
    server
        .call(
            "POST",
            "/api/aliases",
            Some(&admin),
            Some(json!({"name": "coder", "gpu": "qwen-coder", "client_models": ["claude-*"]})),
        )
        .await
        .expect(201);
    let reply = claude_code_call(&server, &client, &claude_code_body("claude-opus-4-5-20251101")).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("gpu"));
    assert_eq!(gpu.chat_requests().pop().unwrap().json()["model"], "qwen-coder");
    let models = server
        .send(
            server
                .http
                .get(format!("{}/v1/models", server.url))
                .header("x-api-key", &client)
                .header("anthropic-version", "2023-06-01"),
        )
        .await;
    models.expect(200);
    let ids: Vec<String> = models.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"claude-sonnet-4-5".to_string()), "{ids:?}");
    // An update that does not mention client_models keeps them.
    server
        .call(
            "PUT",
            "/api/aliases/coder",
            Some(&admin),
            Some(json!({"gpu": "qwen-coder"})),
        )
        .await
        .expect(200);
    let aliases = server.call("GET", "/api/aliases", Some(&admin), None).await;
    let coder = aliases.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "coder")
        .cloned()
        .unwrap();
    assert_eq!(coder["client_models"], json!(["claude-*"]));
}

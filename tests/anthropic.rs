//! `/v1/messages` and translation end to end: Anthropic clients reach OpenAI providers and
//! GPU workers, OpenAI clients reach Anthropic providers, same-format paths pass through.

use crate::support::sse::sse_events;
use crate::support::{FakeUpstream, Reply, TestServer, TestWorker};
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-openai-provider-key-0001";
const ANTHROPIC_KEY: &str = "sk-ant-provider-key-0002";
const GPU_KEY: &str = "sk-local-model-server";

/// An Anthropic SDK-style call: `x-api-key`, `anthropic-version`, optional beta flags.
async fn messages(server: &TestServer, key: &str, body: Value, beta: Option<&str>) -> Reply {
    let mut request = server
        .http
        .post(format!("{}/v1/messages", server.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2099-01-01")
        .json(&body);
    if let Some(beta) = beta {
        request = request.header("anthropic-beta", beta);
    }
    server.send(request).await
}

fn weather_tool_anthropic() -> Value {
    json!({"name": "get_weather", "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

#[tokio::test]
async fn an_anthropic_client_reaches_an_openai_provider() {
    let fake = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-4o"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &fake, OPENAI_KEY).await;

    let reply = messages(
        &server,
        &client,
        json!({"model": "gpt-4o", "max_tokens": 100, "system": "Be brief.", "messages": [{"role": "user", "content": "Say hi"}]}),
        None,
    )
    .await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-route"), Some("openai"));
    let body = reply.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["content"][0], json!({"type": "text", "text": "Hello from oa"}));
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 5);
    assert_eq!(body["usage"]["output_tokens"], 4);
    let seen = fake.chat_requests().pop().unwrap().json();
    assert_eq!(seen["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(seen["messages"][1]["role"], "user");
    assert_eq!(seen["max_tokens"], 100);

    // Streaming, with a tool call whose arguments arrive in pieces.
    let reply = messages(
        &server,
        &client,
        json!({"model": "gpt-4o", "max_tokens": 100, "stream": true, "tools": [weather_tool_anthropic()],
            "messages": [{"role": "user", "content": "What is the weather in Oslo?"}]}),
        None,
    )
    .await;
    reply.expect(200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events = sse_events(&reply.text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    let tool_start = events
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(tool_start.1["content_block"]["name"], "get_weather");
    let partial: String = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"city": "Oslo"})
    );
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta.1["usage"]["output_tokens"], 7,
        "usage asked of the OpenAI upstream"
    );
    let seen = fake.chat_requests().pop().unwrap().json();
    assert_eq!(seen["tools"][0]["type"], "function");
    assert_eq!(seen["tools"][0]["function"]["parameters"]["required"], json!(["city"]));
    assert_eq!(seen["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn an_anthropic_client_reaches_a_gpu_worker() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 1).await;
    for stream in [false, true] {
        let reply = messages(
            &server,
            &client,
            json!({"model": "qwen", "max_tokens": 50, "stream": stream, "messages": [{"role": "user", "content": "Say hi"}]}),
            None,
        )
        .await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-tier"), Some("gpu"));
        if stream {
            let events = sse_events(&reply.text);
            let text: String = events
                .iter()
                .filter(|(_, d)| d["delta"]["type"] == "text_delta")
                .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(text, "Hello from gpu-box");
            assert_eq!(events.last().unwrap().0, "message_stop");
            let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
            assert_eq!(delta.1["delta"]["stop_reason"], "end_turn");
        } else {
            assert_eq!(reply.json()["content"][0]["text"], "Hello from gpu-box");
            assert_eq!(reply.json()["usage"]["output_tokens"], 4);
        }
    }
}

#[tokio::test]
async fn an_openai_client_reaches_an_anthropic_provider() {
    let fake = FakeUpstream::anthropic("claude", &[ANTHROPIC_KEY], &["claude-sonnet"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "anthropic", &fake, ANTHROPIC_KEY).await;

    let reply = server.chat(&client, "claude-sonnet", false).await;
    reply.expect(200);
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from claude");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 11);
    let seen = fake.chat_requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert!(
        seen.json()["max_tokens"].as_u64().unwrap() > 0,
        "Anthropic needs max_tokens"
    );

    // Streaming with tools: OpenAI chunks with incremental tool-call arguments.
    let reply = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&client),
            Some(json!({"model": "claude-sonnet", "stream": true,
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "messages": [{"role": "user", "content": "weather in Oslo?"}]})),
        )
        .await;
    reply.expect(200);
    assert!(reply.text.trim_end().ends_with("data: [DONE]"), "{}", reply.text);
    let chunks: Vec<Value> = reply
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let arguments: String = chunks
        .iter()
        .flat_map(|c| {
            c["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|t| t["function"]["arguments"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Oslo"})
    );
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    let seen = fake.chat_requests().pop().unwrap().json();
    assert_eq!(seen["tools"][0]["name"], "get_weather");
    assert_eq!(seen["tools"][0]["input_schema"]["type"], "object");
}

#[tokio::test]
async fn same_format_passes_through_untouched_with_beta_headers() {
    let fake = FakeUpstream::anthropic("claude", &[ANTHROPIC_KEY], &["claude-sonnet"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "anthropic", &fake, ANTHROPIC_KEY).await;
    let body = r#"{"model":"claude-sonnet","max_tokens":64,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"Say hi"}]}"#;
    let reply = server
        .send(
            server
                .http
                .post(format!("{}/v1/messages", server.url))
                .header("authorization", format!("Bearer {client}"))
                .header("anthropic-version", "2023-06-01")
                .header("anthropic-beta", "interleaved-thinking-2025-05-14")
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    reply.expect(200);
    // With thinking on, the fake (as Anthropic) answers its thinking block first.
    let answer = reply.json();
    let text = answer["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "text")
        .unwrap();
    assert_eq!(text["text"], "Hello from claude");
    let seen = fake.chat_requests().pop().unwrap();
    assert_eq!(
        seen.body, body,
        "a same-format body must reach the upstream byte for byte"
    );
    assert_eq!(seen.header("anthropic-beta"), Some("interleaved-thinking-2025-05-14"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert!(
        seen.header("authorization").is_none(),
        "the client key is never forwarded"
    );

    let reply = messages(
        &server,
        &client,
        json!({"model": "claude-sonnet", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        None,
    )
    .await;
    reply.expect(200);
    let names: Vec<String> = sse_events(&reply.text).into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"ping".to_string()),
        "pass-through keeps every event: {names:?}"
    );
}

#[tokio::test]
async fn a_claude_code_shaped_request_works_through_an_openai_provider() {
    let fake = FakeUpstream::openai("oa", &[OPENAI_KEY], &["claude-code-model"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &fake, OPENAI_KEY).await;
    let body = json!({
        "model": "claude-code-model",
        "max_tokens": 32000,
        "stream": true,
        "metadata": {"user_id": "user_abc"},
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Work in /repo."}
        ],
        "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "List the files", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "README.md\nsrc"}]}
        ]
    });
    let reply = messages(
        &server,
        &client,
        body,
        Some("claude-code-20250219,fine-grained-tool-streaming-2025-05-14"),
    )
    .await;
    reply.expect(200);
    let events = sse_events(&reply.text);
    assert_eq!(events.first().unwrap().0, "message_start");
    assert_eq!(events.last().unwrap().0, "message_stop");
    let seen = fake.chat_requests().pop().unwrap().json();
    let system = seen["messages"][0]["content"].to_string();
    assert!(
        system.contains("You are Claude Code.") && system.contains("Work in /repo."),
        "{seen}"
    );
    assert!(!seen.to_string().contains("cache_control"));
    let tool_reply = seen["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert_eq!(tool_reply["tool_call_id"], "toolu_9");
    let call = seen["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tool_calls"].is_array())
        .unwrap();
    assert_eq!(call["tool_calls"][0]["function"]["name"], "Bash");
}

#[tokio::test]
async fn messages_errors_use_the_anthropic_shape() {
    let fake = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-4o", "fail-500"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &fake, OPENAI_KEY).await;
    let cases: Vec<(Option<&str>, Value, u16, &str)> = vec![
        (
            Some(&client),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            400,
            "max_tokens",
        ),
        (
            Some(&client),
            json!({"model": "gpt-4o", "max_tokens": 5, "messages": "hi"}),
            400,
            "messages",
        ),
        (
            Some(&client),
            json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            404,
            "nope",
        ),
        (
            Some("aux_wrong"),
            json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            401,
            "invalid",
        ),
        (
            Some(&client),
            json!({"model": "fail-500", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            500,
            "error",
        ),
        (
            Some(&client),
            json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "hologram", "source": {"type": "text", "data": "x"}}]}]}),
            400,
            "messages[0].content[0]",
        ),
    ];
    for (key, body, status, fragment) in cases {
        let reply = messages(&server, key.unwrap(), body.clone(), None).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        let error = reply.json();
        assert_eq!(error["type"], "error", "{}", reply.text);
        assert!(error["error"]["type"].is_string());
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
}

#[tokio::test]
async fn models_and_count_tokens_answer_anthropic_clients() {
    let fake = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-4o"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &fake, OPENAI_KEY).await;
    for path in ["/v1/models", "/api/anthropic/v1/models"] {
        let reply = server.send(server.anthropic_request("GET", path, &client)).await;
        reply.expect(200);
        let body = reply.json();
        assert_eq!(body["has_more"], false);
        assert_eq!(body["data"][0]["type"], "model");
        assert!(body["data"].as_array().unwrap().iter().any(|m| m["id"] == "gpt-4o"));
    }
    for path in ["/v1/messages/count_tokens", "/api/anthropic/v1/messages/count_tokens"] {
        let reply = server
            .send(
                server.anthropic_request("POST", path, &client)
                    .json(&json!({"model": "gpt-4o", "system": "Be brief.", "messages": [{"role": "user", "content": "Hello there, how are you?"}]})),
            )
            .await;
        reply.expect(200);
        let tokens = reply.json()["input_tokens"].as_u64().unwrap();
        assert!((5..100).contains(&tokens), "{tokens}");
    }
    let reply = server
        .send(
            server
                .http
                .post(format!("{}/api/anthropic/v1/messages", server.url))
                .header("x-api-key", &client)
                .json(&json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    reply.expect(200);
}

//! What coding agents (Claude Code, Codex) send, end to end: Claude Code's newest request
//! shape on every tier, the headers and query it needs forwarded, its probes, its model
//! names; the OpenAI Responses API on every tier.

use crate::support::sse::responses_events;
use crate::support::{FakeUpstream, Reply, TestServer, TestWorker};
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-openai-provider-key-0101";
const ANTHROPIC_KEY: &str = "sk-ant-provider-key-0102";
const GPU_KEY: &str = "sk-local-model-server-0103";

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
                .anthropic_request("POST", "/v1/messages?beta=true", key)
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
    let (server, admin, client) = TestServer::with_admin_and_client().await;
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
    let (server, admin, client) = TestServer::with_admin_and_client().await;
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
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "anthropic", &fake, ANTHROPIC_KEY).await;
    let body = claude_code_body("claude-sonnet-4-5-20250929");
    let sent = body.to_string();
    let reply = server
        .send(
            server
                .anthropic_request("POST", "/v1/messages?beta=true", &client)
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
    let (server, _admin, _client) = TestServer::with_admin_and_client().await;
    for path in ["/", "/v1/messages", "/api/anthropic/v1/messages"] {
        let reply = server.send(server.http.head(format!("{}{path}", server.url))).await;
        assert_eq!(reply.status, 200, "HEAD {path}");
    }
}

#[tokio::test]
async fn count_tokens_is_answered_by_an_anthropic_target_and_estimated_otherwise() {
    let claude = FakeUpstream::anthropic("claude", &[ANTHROPIC_KEY], &["claude-sonnet-4-5-20250929"]).await;
    let openai = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-4o"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "anthropic", &claude, ANTHROPIC_KEY).await;
    server.add_provider(&admin, "openai", &openai, OPENAI_KEY).await;
    let count = |model: &str| {
        server
            .anthropic_request("POST", "/v1/messages/count_tokens?beta=true", &client)
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
    let (server, admin, client) = TestServer::with_admin_and_client().await;
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
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 1).await;
    server
        .add_alias(
            &admin,
            json!({"name": "coder", "gpu": "qwen-coder", "client_models": ["claude-*"]}),
        )
        .await;
    let reply = claude_code_call(&server, &client, &claude_code_body("claude-opus-4-5-20251101")).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("gpu"));
    assert_eq!(gpu.chat_requests().pop().unwrap().json()["model"], "qwen-coder");
    let models = server
        .send(server.anthropic_request("GET", "/v1/models", &client))
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

async fn responses_call(server: &TestServer, key: &str, body: &Value) -> Reply {
    server.send(server.post_as("/v1/responses", key, body)).await
}

fn codex_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model, "stream": stream, "store": false,
        "instructions": "You are Codex.",
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "medium", "summary": "auto"},
        "parallel_tool_calls": false, "tool_choice": "auto",
        "tools": [
            {"type": "function", "name": "shell", "description": "Runs a command",
             "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}}},
            {"type": "custom", "name": "apply_patch", "description": "Applies a patch",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
        ],
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: workspace-write"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
            {"type": "function_call", "call_id": "call_a", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
            {"type": "function_call_output", "call_id": "call_a", "output": "a.txt"},
            {"type": "custom_tool_call", "call_id": "call_b", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_b", "output": "Done"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what is the weather in Oslo?"}]}
        ]
    })
}

#[tokio::test]
async fn responses_stream_a_tool_call_from_a_gpu_worker_with_the_real_event_sequence() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 1).await;
    let reply = responses_call(&server, &client, &codex_body("qwen", true)).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("gpu"));
    assert!(reply.header("content-type").unwrap().starts_with("text/event-stream"));
    let events = responses_events(&reply.text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..3],
        ["response.created", "response.in_progress", "response.output_item.added"]
    );
    assert!(names.contains(&"response.function_call_arguments.delta"), "{names:?}");
    let done = events
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"], "{\"city\":\"Oslo\"}");
    let (last, completed) = events.last().unwrap();
    assert_eq!(last, "response.completed");
    let output = &completed["response"]["output"];
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(output[0]["name"], "shell");
    assert_eq!(completed["response"]["usage"]["input_tokens"], 12);
    assert_eq!(completed["response"]["usage"]["output_tokens"], 7);

    // What the model server got: a chat request with the whole conversation.
    let seen = gpu.chat_requests().pop().unwrap().json();
    let messages = seen["messages"].as_array().unwrap();
    assert_eq!(messages[0], json!({"role": "system", "content": "You are Codex."}));
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        [
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "user"
        ]
    );
    assert_eq!(
        messages[5]["tool_calls"][0]["function"]["arguments"],
        "{\"input\":\"*** Begin Patch\"}"
    );
    assert_eq!(seen["tools"][1]["function"]["name"], "apply_patch");
    assert_eq!(seen["parallel_tool_calls"], false);
}

#[tokio::test]
async fn responses_answer_whole_from_an_openai_provider_and_stream_from_an_anthropic_one() {
    let openai = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-5"]).await;
    let claude = FakeUpstream::anthropic("claude", &[ANTHROPIC_KEY], &["claude-sonnet-4-5-20250929"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &openai, OPENAI_KEY).await;
    server.add_provider(&admin, "anthropic", &claude, ANTHROPIC_KEY).await;

    let reply = responses_call(
        &server,
        &client,
        &json!({"model": "gpt-5", "input": "Say hi", "store": false}),
    )
    .await;
    reply.expect(200);
    let body = reply.json();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    // OpenAI's own answer, passed through: its reasoning item first.
    assert_eq!(body["output"][0]["type"], "reasoning");
    assert_eq!(body["output"][1]["type"], "message");
    assert_eq!(body["output"][1]["content"][0]["text"], "Hello from oa");
    assert_eq!(body["usage"]["input_tokens"], 9);

    // Through Messages: a custom tool call comes back as a custom_tool_call item.
    let mut codex = codex_body("claude-sonnet-4-5", true);
    codex["tools"] = json!([{"type": "custom", "name": "apply_patch", "description": "Applies a patch"}]);
    let reply = responses_call(&server, &client, &codex).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-route"), Some("anthropic"));
    let events = responses_events(&reply.text);
    let (last, completed) = events.last().unwrap();
    assert_eq!(last, "response.completed", "{}", reply.text);
    let output = completed["response"]["output"].as_array().unwrap();
    assert_eq!(output[0]["content"][0]["text"], "Hello from claude");
    assert_eq!(output[1]["type"], "custom_tool_call", "{}", reply.text);
    assert_eq!(output[1]["name"], "apply_patch");
    assert_eq!(completed["response"]["usage"]["output_tokens"], 6);
    assert!(events.iter().any(|(n, _)| n == "response.custom_tool_call_input.done"));
    let seen = claude.chat_requests().pop().unwrap().json();
    assert_eq!(seen["model"], "claude-sonnet-4-5-20250929");
    assert!(seen["system"].as_str().unwrap().contains("You are Codex."), "{seen}");
}

#[tokio::test]
async fn responses_refuse_what_they_cannot_do_in_the_openai_error_shape() {
    let openai = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-5"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &openai, OPENAI_KEY).await;
    let cases = [
        (
            json!({"model": "gpt-5", "input": "hi", "previous_response_id": "resp_1"}),
            400,
            "previous_response_id",
        ),
        (json!({"input": "hi"}), 400, "model"),
        (
            // Unknown item types pass through: OpenAI itself refuses this one.
            json!({"model": "gpt-5", "input": [{"type": "hologram"}]}),
            400,
            "hologram",
        ),
        (json!({"model": "gpt-5", "input": 5}), 400, "input"),
        (json!({"model": "nope", "input": "hi"}), 404, "nope"),
    ];
    for (body, status, fragment) in cases {
        let reply = responses_call(&server, &client, &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        let message = reply.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(fragment), "{message}");
    }
    let reply = responses_call(&server, "aux_wrong", &json!({"model": "gpt-5", "input": "hi"})).await;
    assert_eq!(reply.status, 401);
}

/// A real agent CLI installed by `tests/agents/install.sh`. Absent: the test is skipped
/// with a note, unless `AUXOT_REQUIRE_AGENT_CLIS=1` (CI) makes that a failure.
fn agent_cli(name: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/agents/node_modules/.bin")
        .join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("AUXOT_REQUIRE_AGENT_CLIS").as_deref() != Ok("1"),
        "{name} is not installed: run tests/agents/install.sh"
    );
    eprintln!("skipped: {name} is not installed (run tests/agents/install.sh)");
    None
}

/// Runs a CLI with a clean home, no telemetry, no update checks; returns (status, stdout, stderr).
async fn run_agent(
    program: &std::path::Path,
    args: &[&str],
    env: &[(&str, String)],
    home: &std::path::Path,
) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(home)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(cli_worker_env(home, env))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), command.output())
        .await
        .expect("the agent CLI finished within 120 s")
        .expect("the agent CLI started");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// Writes `HOME/.codex/config.toml`: `settings` (the model and its options), then the one
/// model provider `provider` at `base_url` on the Responses API, its key in `$env_key`.
fn write_codex_config(home: &std::path::Path, settings: &str, provider: &str, base_url: &str, env_key: &str) {
    std::fs::create_dir_all(home.join(".codex")).unwrap();
    let config = format!(
        "{settings}model_provider = \"{provider}\"\n\n[model_providers.{provider}]\nname = \"{provider}\"\nbase_url = \"{base_url}\"\nenv_key = \"{env_key}\"\nwire_api = \"responses\"\n"
    );
    std::fs::write(home.join(".codex/config.toml"), config).unwrap();
}

/// `codex exec` asks for the weather in Oslo through `server`'s Responses API as `client`,
/// with `settings` (the model and its options) in its config, and must succeed: (stdout, stderr).
async fn codex_asks_the_weather(
    codex: &std::path::Path,
    server: &TestServer,
    client: &str,
    settings: &str,
) -> (String, String) {
    let home = tempfile::tempdir().unwrap();
    write_codex_config(
        home.path(),
        settings,
        "auxot",
        &format!("{}/v1", server.url),
        "AUXOT_API_KEY",
    );
    let env = [("AUXOT_API_KEY", client.to_string())];
    let (ok, stdout, stderr) = run_agent(
        codex,
        &["exec", "--skip-git-repo-check", "What is the weather in Oslo?"],
        &env,
        home.path(),
    )
    .await;
    assert!(
        ok,
        "codex failed\nstdout: {stdout}\nstderr: {stderr}\nserver: {}",
        server.logs()
    );
    (stdout, stderr)
}

/// `claude -p` (with `options`) asks for the weather in Oslo through `server` as `client`,
/// and must succeed: (stdout, stderr).
async fn claude_asks_the_weather(
    claude: &std::path::Path,
    server: &TestServer,
    client: &str,
    options: &[&str],
) -> (String, String) {
    let home = tempfile::tempdir().unwrap();
    let env = [
        ("ANTHROPIC_BASE_URL", server.url.clone()),
        ("ANTHROPIC_API_KEY", client.to_string()),
    ];
    let mut args = vec!["-p", "What is the weather in Oslo?"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--max-turns", "3"]);
    let (ok, stdout, stderr) = run_agent(claude, &args, &env, home.path()).await;
    assert!(
        ok,
        "claude failed\nstdout: {stdout}\nstderr: {stderr}\nserver: {}",
        server.logs()
    );
    (stdout, stderr)
}

#[tokio::test]
async fn the_real_claude_code_runs_a_tool_using_turn_on_a_gpu_worker() {
    let Some(claude) = agent_cli("claude") else { return };
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen-coder"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 2).await;
    server
        .add_alias(
            &admin,
            json!({"name": "coder", "gpu": "qwen-coder", "client_models": ["claude-*"]}),
        )
        .await;
    let (stdout, stderr) = claude_asks_the_weather(&claude, &server, &client, &[]).await;
    assert!(
        stdout.contains("Hello from gpu-box"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let chats: Vec<Value> = gpu.chat_requests().iter().map(|r| r.json()).collect();
    assert!(
        chats
            .iter()
            .any(|c| c["messages"].as_array().unwrap().iter().any(|m| m["role"] == "tool")),
        "no request carried a tool result: {chats:?}"
    );
}

#[tokio::test]
async fn the_real_codex_runs_a_tool_using_turn_on_a_gpu_worker() {
    let Some(codex) = agent_cli("codex") else { return };
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen-coder"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 2).await;
    let (stdout, stderr) = codex_asks_the_weather(&codex, &server, &client, "model = \"qwen-coder\"\n").await;
    assert!(
        stdout.contains("Hello from gpu-box"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let chats: Vec<Value> = gpu.chat_requests().iter().map(|r| r.json()).collect();
    assert!(
        chats
            .iter()
            .any(|c| c["messages"].as_array().unwrap().iter().any(|m| m["role"] == "tool")),
        "no request carried a tool result: {chats:?}"
    );
}

#[tokio::test]
async fn the_real_claude_code_runs_a_tool_using_turn_on_an_anthropic_provider() {
    let Some(claude) = agent_cli("claude") else { return };
    let fake = FakeUpstream::anthropic(
        "claude",
        &[ANTHROPIC_KEY],
        &["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"],
    )
    .await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "anthropic", &fake, ANTHROPIC_KEY).await;
    let (stdout, stderr) = claude_asks_the_weather(&claude, &server, &client, &["--model", "claude-sonnet-4-5"]).await;
    assert!(
        stdout.contains("Hello from claude"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let chats = fake.chat_requests();
    assert!(
        chats
            .iter()
            .all(|r| r.json()["model"] == "claude-sonnet-4-5-20250929"
                || r.json()["model"] == "claude-haiku-4-5-20251001")
    );
    assert!(
        chats.iter().any(|r| r.body.contains("tool_result")),
        "no request carried a tool result"
    );
}

#[tokio::test]
async fn the_real_codex_runs_a_tool_using_turn_on_an_openai_provider() {
    let Some(codex) = agent_cli("codex") else { return };
    let fake = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-5"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &fake, OPENAI_KEY).await;
    let (stdout, stderr) = codex_asks_the_weather(&codex, &server, &client, "model = \"gpt-5\"\n").await;
    assert!(stdout.contains("Hello from oa"), "stdout: {stdout}\nstderr: {stderr}");
    // Passed through to OpenAI's own Responses API: the turn's second request carries the
    // tool's output and the first answer's encrypted reasoning, exactly as OpenAI wrote it.
    let turns: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/responses")
        .map(|r| r.json())
        .collect();
    assert!(fake.chat_requests().is_empty(), "nothing went through chat");
    assert!(turns.len() >= 2, "{turns:?}");
    let second = turns[1]["input"].as_array().unwrap();
    assert!(
        second
            .iter()
            .any(|i| i["type"] == "function_call_output" && i["call_id"] == "call_1"),
        "no tool result: {second:?}"
    );
    assert!(
        second.iter().any(|i| i["type"] == "reasoning"
            && i["encrypted_content"] == crate::support::fake_upstream::ENCRYPTED_REASONING),
        "the encrypted reasoning did not come back: {second:?}"
    );
}

#[tokio::test]
async fn the_real_codex_thinks_through_a_tool_using_turn_on_an_anthropic_provider() {
    let Some(codex) = agent_cli("codex") else { return };
    let fake = FakeUpstream::anthropic("claude", &[ANTHROPIC_KEY], &["claude-sonnet-4-5-20250929"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "anthropic", &fake, ANTHROPIC_KEY).await;
    let (stdout, stderr) = codex_asks_the_weather(
        &codex,
        &server,
        &client,
        "model = \"claude-sonnet-4-5\"\nmodel_reasoning_effort = \"medium\"\n",
    )
    .await;
    assert!(
        stdout.contains("Hello from claude"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    // The turn's second request gives Anthropic its own signed thinking back before the
    // tool call (the fake refuses any other), with thinking still on.
    let turns: Vec<Value> = fake.chat_requests().iter().map(|r| r.json()).collect();
    assert!(turns.len() >= 2, "{turns:?}");
    let second = &turns[1];
    assert_eq!(second["thinking"]["type"], "enabled", "{second}");
    let assistant = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap();
    assert_eq!(assistant["content"][0]["type"], "thinking", "{assistant}");
    assert_eq!(
        assistant["content"][0]["signature"],
        crate::support::fake_upstream::FAKE_SIGNATURE
    );
    assert!(second.to_string().contains("tool_result"), "{second}");
}

#[tokio::test]
async fn legacy_completions_name_the_chat_endpoint() {
    let (server, _admin, client) = TestServer::with_admin_and_client().await;
    let reply = server
        .send(server.post_as("/v1/completions", &client, &json!({"model": "m", "prompt": "hi"})))
        .await;
    reply.expect(404);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/chat/completions"));
}

#[tokio::test]
async fn claude_code_and_codex_run_plain_turns_on_a_cli_worker() {
    let cli = crate::support::FakeCli::new();
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::cli(&server, &admin, "c1", &cli, &["sonnet"], 2).await;
    server
        .add_alias(
            &admin,
            json!({"name": "coder", "cli": "sonnet", "client_models": ["claude-*", "gpt-5*"]}),
        )
        .await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "reminder"}]});
    let reply = claude_code_call(&server, &client, &body).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("cli"));
    assert!(reply.text.contains("Hello from cli"), "{}", reply.text);
    let reply = responses_call(
        &server,
        &client,
        &json!({"model": "gpt-5-codex", "input": "hi", "stream": true}),
    )
    .await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("cli"));
    let events = responses_events(&reply.text);
    let (last, completed) = events.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        "Hello from cli"
    );
}

#[tokio::test]
async fn responses_requests_are_metered_with_codex_session() {
    let openai = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-5"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &openai, OPENAI_KEY).await;
    for stream in [false, true] {
        let reply = server
            .send(
                server
                    .http
                    .post(format!("{}/v1/responses", server.url))
                    .header("authorization", format!("Bearer {client}"))
                    .header("session_id", "codex-sess-1")
                    .json(&json!({"model": "gpt-5", "input": "Say hi", "stream": stream})),
            )
            .await;
        reply.expect(200);
    }
    let found = crate::support::eventually(std::time::Duration::from_secs(5), || async {
        let rows = server
            .call("GET", "/api/requests?session=codex-sess-1", Some(&admin), None)
            .await;
        let rows = rows.json()["requests"].as_array().cloned().unwrap_or_default();
        rows.len() == 2
            && rows
                .iter()
                .all(|r| r["model_asked"] == "gpt-5" && r["tier"] == "cloud" && r["status"] == 200)
    })
    .await;
    let rows = server.call("GET", "/api/requests", Some(&admin), None).await;
    assert!(found, "{}", rows.text);
}

/// The environment a real agent CLI gets as a CLI worker's program: its own home, no
/// telemetry or update checks, loopback never proxied.
fn cli_worker_env(home: &std::path::Path, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("HOME", home.display().to_string()),
        ("CODEX_HOME", home.join(".codex").display().to_string()),
        ("NO_PROXY", "127.0.0.1,localhost".to_string()),
        ("DISABLE_TELEMETRY", "1".to_string()),
        ("DISABLE_ERROR_REPORTING", "1".to_string()),
        ("DISABLE_AUTOUPDATER", "1".to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

async fn cli_worker_running(
    server: &TestServer,
    admin: &str,
    name: &str,
    cli: &str,
    program: &std::path::Path,
    env: &[(String, String)],
) -> TestWorker {
    let token = crate::support::worker::worker_token_allowing(server, admin, name, "cli", &["*"]).await;
    let args = vec![
        "cli".to_string(),
        "--cli".into(),
        cli.into(),
        "--command".into(),
        program.display().to_string(),
        "--job-timeout-secs".into(),
        "90".into(),
    ];
    TestWorker::launch(server, admin, name, &token, 1, args, env).await
}

#[tokio::test]
async fn the_real_claude_code_serves_a_cli_worker_from_its_own_anthropic_backend() {
    let Some(claude) = agent_cli("claude") else { return };
    // Claude Code's own backend: what its subscription would be, here a fake on 127.0.0.1.
    let backend = FakeUpstream::anthropic(
        "claude-backend",
        &[ANTHROPIC_KEY],
        &["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"],
    )
    .await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let home = tempfile::tempdir().unwrap();
    let env = cli_worker_env(
        home.path(),
        &[
            ("ANTHROPIC_BASE_URL", backend.base_url()),
            ("ANTHROPIC_API_KEY", ANTHROPIC_KEY.to_string()),
        ],
    );
    let worker = cli_worker_running(&server, &admin, "cc", "claude", &claude, &env).await;
    let reply = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&client),
            Some(json!({"model": "claude-code", "messages": [{"role": "user", "content": "Say hi"}]})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}\nworker: {}", reply.text, worker.logs());
    assert_eq!(reply.header("x-auxot-tier"), Some("cli"));
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "Hello from claude-backend",
        "{}",
        reply.text
    );
    let asked = backend.chat_requests();
    assert!(
        asked.iter().any(|r| r.body.contains("Say hi")),
        "the prompt never reached Claude Code's backend: {asked:?}"
    );
}

#[tokio::test]
async fn the_real_codex_serves_a_cli_worker_from_its_own_responses_backend() {
    let Some(codex) = agent_cli("codex") else { return };
    // Codex's own backend speaks the Responses API: a fake on 127.0.0.1.
    let backend = FakeUpstream::openai("codex-backend", &[OPENAI_KEY], &["gpt-5"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let home = tempfile::tempdir().unwrap();
    write_codex_config(
        home.path(),
        "model = \"gpt-5\"\n",
        "backend",
        &backend.base_url(),
        "CODEX_BACKEND_KEY",
    );
    let env = cli_worker_env(home.path(), &[("CODEX_BACKEND_KEY", OPENAI_KEY.to_string())]);
    let worker = cli_worker_running(&server, &admin, "cx", "codex", &codex, &env).await;
    let reply = responses_call(
        &server,
        &client,
        &json!({"model": "codex", "input": "Say hi", "stream": true}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}\nworker: {}", reply.text, worker.logs());
    assert_eq!(reply.header("x-auxot-tier"), Some("cli"));
    let events = responses_events(&reply.text);
    let (last, completed) = events.last().unwrap();
    assert_eq!(last, "response.completed", "{}\nworker: {}", reply.text, worker.logs());
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"], "Hello from codex-backend",
        "{}",
        reply.text
    );
    let asked: Vec<_> = backend
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/responses")
        .collect();
    assert!(
        asked.iter().any(|r| r.body.contains("Say hi")),
        "the prompt never reached Codex's backend: {asked:?}"
    );
}

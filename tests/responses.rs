//! The Responses API on cloud providers: passed through to OpenAI byte for byte (and
//! through Chat to a server without `/responses`), translated directly to and from
//! Anthropic Messages with thinking carried across turns; metered either way.

use crate::support::fake_upstream::{ENCRYPTED_REASONING, FAKE_SIGNATURE, FAKE_THINKING};
use crate::support::sse::responses_events;
use crate::support::{FakeUpstream, Reply, TestServer};
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-openai-provider-key-0201";
const ANTHROPIC_KEY: &str = "sk-ant-provider-key-0202";

async fn call(server: &TestServer, key: &str, body: &str) -> Reply {
    server
        .send(
            server
                .http
                .post(format!("{}/v1/responses", server.url))
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
}

fn responses_posts(fake: &FakeUpstream) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/responses")
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn an_openai_provider_gets_the_request_byte_exact_and_its_stream_passes_through_metered() {
    let openai = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-5"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &openai, OPENAI_KEY).await;
    // Odd key order, escapes, an item type auxot does not know and a hosted tool: none of
    // it is auxot's business.
    let body = format!(
        r#"{{"stream":true,"model":"gpt-5","include":["reasoning.encrypted_content"],"tools":[{{"type":"web_search"}},{{"type":"function","name":"get_weather","parameters":{{"type":"object"}}}}],"input":[{{"type":"message","role":"user","content":"caf\u00e9 \"quoted\""}},{{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"{ENCRYPTED_REASONING}"}},{{"type":"mcp_list_tools","id":"mcpl_1","server_label":"x","tools":[]}},{{"type":"message","role":"user","content":"what is the weather?"}}],"store":false}}"#
    );
    let reply = call(&server, &client, &body).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("cloud"));
    assert_eq!(reply.header("x-auxot-route"), Some("openai"));
    assert_eq!(responses_posts(&openai), vec![body.clone()], "sent byte for byte");
    assert!(openai.chat_requests().is_empty());

    let seen = responses_events(&reply.text);
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..2], ["response.created", "response.in_progress"]);
    assert!(names.contains(&"response.function_call_arguments.delta"), "{names:?}");
    let (last, completed) = seen.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(
        completed["response"]["output"][0]["encrypted_content"],
        ENCRYPTED_REASONING
    );
    assert_eq!(completed["response"]["output"][1]["name"], "get_weather");

    let row = server.request_log_of(&admin, 1).await.remove(0);
    assert_eq!(row["route"], "openai");
    assert_eq!(row["status"], 200, "{row}");
    assert_eq!(row["estimated"], false, "{row}");
    assert_eq!(row["input_tokens"], 7, "{row}");
    assert_eq!(row["cache_read_tokens"], 2, "{row}");
    assert_eq!(row["output_tokens"], 4, "{row}");
    assert_eq!(row["reasoning_tokens"], 1, "{row}");
}

#[tokio::test]
async fn a_pinned_or_aliased_model_is_the_only_byte_that_changes_and_whole_answers_are_metered() {
    let openai = FakeUpstream::openai("oa", &[OPENAI_KEY], &["gpt-5-codex"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &openai, OPENAI_KEY).await;
    let body = format!(
        r#"{{"model":"openai/gpt-5-codex","input":[{{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"{ENCRYPTED_REASONING}"}},{{"role":"user","content":"hi"}}],"include":["reasoning.encrypted_content"]}}"#
    );
    let reply = call(&server, &client, &body).await;
    reply.expect(200);
    let answer = reply.json();
    assert_eq!(answer["output"][1]["content"][0]["text"], "Hello from oa");
    assert_eq!(answer["output"][0]["encrypted_content"], ENCRYPTED_REASONING);
    let sent = responses_posts(&openai).pop().unwrap();
    assert!(
        sent.contains(&format!(r#""encrypted_content":"{ENCRYPTED_REASONING}""#)),
        "{sent}"
    );
    assert_eq!(
        sent,
        body.replace(r#""model":"openai/gpt-5-codex""#, r#""model":"gpt-5-codex""#),
        "only the model's bytes change"
    );
    let row = server.request_log_of(&admin, 1).await.remove(0);
    assert_eq!(row["input_tokens"], 7, "{row}");
    assert_eq!(row["output_tokens"], 4, "{row}");
    assert_eq!(row["reasoning_tokens"], 1, "{row}");
}

#[tokio::test]
async fn a_server_without_responses_is_remembered_and_served_through_chat() {
    let openai = FakeUpstream::openai("compat", &[OPENAI_KEY], &["qwen"]).await;
    openai.drop_responses_api();
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "compat", &openai, OPENAI_KEY).await;
    for stream in [false, true] {
        let body = json!({"model": "qwen", "input": "Say hi", "stream": stream}).to_string();
        let reply = call(&server, &client, &body).await;
        reply.expect(200);
        let text = if stream {
            let seen = responses_events(&reply.text);
            let (last, completed) = seen.last().unwrap().clone();
            assert_eq!(last, "response.completed");
            completed["response"]["output"][0]["content"][0]["text"].clone()
        } else {
            reply.json()["output"][0]["content"][0]["text"].clone()
        };
        assert_eq!(text, "Hello from compat");
    }
    assert_eq!(responses_posts(&openai).len(), 1, "asked once, then remembered");
    assert_eq!(openai.chat_requests().len(), 2);
}

#[tokio::test]
async fn upstream_refusals_keep_their_status_and_a_failing_provider_fails_over_unseen() {
    let first = FakeUpstream::openai("first", &[OPENAI_KEY], &["gpt-5"]).await;
    let second = FakeUpstream::openai("second", &[OPENAI_KEY], &["gpt-5"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "first", &first, OPENAI_KEY).await;
    server.add_provider(&admin, "second", &second, OPENAI_KEY).await;
    // Reasoning OpenAI cannot decrypt: its 400 is the answer, in OpenAI's error shape.
    let body = json!({"model": "gpt-5", "input": [{"type": "reasoning", "id": "rs_9", "summary": [], "encrypted_content": "forged"}]});
    let reply = call(&server, &client, &body.to_string()).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let error = &reply.json()["error"];
    assert!(
        error["message"].as_str().unwrap().contains("could not be verified"),
        "{error}"
    );
    assert!(error["type"].is_string(), "{error}");

    // A server error before any content moves the request on; the client sees one stream.
    // Two requests: whatever the rotation, one of them tries the failing provider first.
    first.fail_chats_with(Some(503));
    let before = responses_posts(&first).len();
    for _ in 0..2 {
        let reply = call(
            &server,
            &client,
            &json!({"model": "gpt-5", "input": "hi", "stream": true}).to_string(),
        )
        .await;
        reply.expect(200);
        let seen = responses_events(&reply.text);
        assert_eq!(seen.iter().filter(|(n, _)| n == "response.created").count(), 1);
        assert_eq!(reply.header("x-auxot-route"), Some("second"));
    }
    assert!(responses_posts(&first).len() > before, "the failing provider was tried");
}

fn thinking_turn(model: &str, stream: bool) -> Value {
    json!({
        "model": model, "stream": stream, "store": false,
        "instructions": "You are Codex.",
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "medium", "summary": "auto"},
        "parallel_tool_calls": false,
        "tools": [
            {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"type": "custom", "name": "apply_patch", "description": "Applies a patch"}
        ],
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: read-only"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what is the weather in Oslo?"}]}
        ]
    })
}

#[tokio::test]
async fn an_anthropic_provider_thinks_and_its_thinking_comes_back_signed_on_the_next_turn() {
    let claude = FakeUpstream::anthropic("claude", &[ANTHROPIC_KEY], &["claude-sonnet-4-5-20250929"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "anthropic", &claude, ANTHROPIC_KEY).await;
    for stream in [true, false] {
        let mut turn = thinking_turn("claude-sonnet-4-5", stream);
        let reply = call(&server, &client, &turn.to_string()).await;
        reply.expect(200);
        let response = if stream {
            let seen = responses_events(&reply.text);
            let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
            for expected in [
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.output_text.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
            ] {
                assert!(names.contains(&expected), "{expected} missing: {names:?}");
            }
            let (last, completed) = seen.last().unwrap().clone();
            assert_eq!(last, "response.completed");
            completed["response"].clone()
        } else {
            reply.json()
        };
        let sent = claude.chat_requests().pop().unwrap().json();
        assert_eq!(sent["model"], "claude-sonnet-4-5-20250929");
        assert_eq!(sent["thinking"], json!({"type": "enabled", "budget_tokens": 8192}));
        assert!(sent["max_tokens"].as_u64().unwrap() > 8192);
        assert_eq!(sent["system"], "You are Codex.\n\nSandbox: read-only");
        assert_eq!(
            sent["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(sent["tools"][1]["input_schema"]["required"], json!(["input"]));

        let output = response["output"].as_array().unwrap().clone();
        assert_eq!(output[0]["type"], "reasoning", "{response}");
        assert_eq!(output[0]["summary"][0]["text"], FAKE_THINKING);
        assert!(output[0]["encrypted_content"].is_string());
        assert_eq!(output[1]["content"][0]["text"], "Hello from claude");
        assert_eq!(output[2]["type"], "function_call");
        let arguments: Value = serde_json::from_str(output[2]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": "Oslo"}));
        assert_eq!(response["usage"]["input_tokens"], 11);
        assert_eq!(response["usage"]["output_tokens"], 6);

        // The next request of the turn, as Codex sends it: the whole answer, then the result.
        let input = turn["input"].as_array_mut().unwrap();
        input.extend(output.iter().cloned());
        input.push(json!({"type": "function_call_output", "call_id": output[2]["call_id"], "output": "12°C"}));
        let reply = call(&server, &client, &turn.to_string()).await;
        reply.expect(200);
        let sent = claude.chat_requests().pop().unwrap().json();
        let messages = sent["messages"].as_array().unwrap();
        let assistant = &messages[1];
        assert_eq!(
            assistant["content"][0],
            json!({"type": "thinking", "thinking": FAKE_THINKING, "signature": FAKE_SIGNATURE})
        );
        assert_eq!(assistant["content"][2]["type"], "tool_use");
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(sent["thinking"]["type"], "enabled");
    }
    let row = server.request_log_of(&admin, 4).await.remove(0);
    assert_eq!(row["route"], "anthropic");
    assert_eq!(row["input_tokens"], 11, "{row}");
    assert_eq!(row["output_tokens"], 6, "{row}");
}

#[tokio::test]
async fn anthropic_refusals_say_what_cannot_be_sent() {
    let claude = FakeUpstream::anthropic("claude", &[ANTHROPIC_KEY], &["claude-sonnet-4-5-20250929"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "anthropic", &claude, ANTHROPIC_KEY).await;
    let body = json!({"model": "claude-sonnet-4-5", "input": [{"type": "hologram"}]});
    let reply = call(&server, &client, &body.to_string()).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let message = reply.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("input[0].type") && message.contains("hologram"),
        "{message}"
    );
    assert!(claude.chat_requests().is_empty());
}

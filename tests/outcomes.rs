//! Outcome is the truth: a stream that ends with an error event is booked as an error on
//! every path (same-dialect pass-through, translated both ways, the Responses API, a
//! worker failing after content, a CLI exiting non-zero), a client that goes away is
//! `cancelled`, and counts that had to be estimated are never billed.

use crate::support::scripted::ScriptedProvider;
use crate::support::sse;
use crate::support::worker::worker_token_allowing;
use crate::support::{FakeCli, TestServer, TestWorker};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "sk-outcome-provider-key-01";

fn openai_start(model: &str) -> String {
    let chunk = |delta: Value| json!({"id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
    sse(&[
        (None, chunk(json!({"role": "assistant", "content": ""}))),
        (None, chunk(json!({"content": "Partial "}))),
        (None, chunk(json!({"content": "answer"}))),
    ])
}

fn anthropic_start(model: &str) -> String {
    sse(&[
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "msg_f", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Partial answer"}}),
        ),
    ])
}

fn failing_body(model: &str) -> String {
    if model.starts_with("claude") {
        anthropic_start(model)
            + &sse(&[(
                Some("error"),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            )])
    } else {
        openai_start(model)
            + &sse(&[(
                None,
                json!({"error": {"message": "the server had an error while processing your request", "type": "server_error", "param": null, "code": null}}),
            )])
    }
}

/// An upstream that starts answering and then fails with an error event, in either dialect;
/// `*-hang` models send their first content and then nothing until the client goes away.
async fn failing(models: &'static [&'static str]) -> ScriptedProvider {
    ScriptedProvider::start(models, |request| {
        let model = request["model"].as_str().unwrap().to_string();
        let body = if model.ends_with("-hang") {
            let first = Bytes::from(openai_start(&model));
            let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(first) }).chain(
                futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(Bytes::from_static(b"data: [DONE]\n\n"))
                }),
            );
            crate::support::stream_body(stream)
        } else {
            failing_body(&model).into()
        };
        (body, "text/event-stream")
    })
    .await
}

/// Anthropic reports its counts in `message_start`, before the failure: those are booked
/// (and billed, 9 in and 1 out). The OpenAI-dialect upstreams reported none: estimated,
/// never billed.
fn booked_as_error(row: &Value, context: &str) {
    let outcome = row["outcome"].as_str().unwrap_or_default();
    assert!(outcome.starts_with("error"), "{context}: {row}");
    if row["route"] == "ant" {
        assert_eq!(row["estimated"], false, "{context}: {row}");
        assert_eq!(
            (row["input_tokens"].as_u64(), row["output_tokens"].as_u64()),
            (Some(9), Some(1)),
            "{context}: {row}"
        );
        // claude-haiku-4-5: 9 × $1 + 1 × $5 per million.
        assert_eq!(
            (row["cost_usd"].as_f64().unwrap() * 1e6).round() as i64,
            14,
            "{context}: {row}"
        );
    } else {
        assert_eq!(row["estimated"], true, "{context}: no upstream reported counts: {row}");
        assert_eq!(
            row["cost_usd"], 0.0,
            "{context}: estimated counts are never billed: {row}"
        );
    }
}

#[tokio::test]
async fn streams_that_end_in_an_error_event_are_errors_on_every_path() {
    let openai = failing(&["gpt-4o-mini"]).await;
    let anthropic = failing(&["claude-haiku-4-5-20251001"]).await;
    let local = failing(&["local-fails"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server
        .add_provider_at(&admin, "oai", "openai", &openai.openai_url(), KEY)
        .await;
    server
        .add_provider_at(&admin, "ant", "anthropic", &anthropic.anthropic_url(), KEY)
        .await;
    let token = worker_token_allowing(&server, &admin, "box-1", "gpu", &["*"]).await;
    let args = vec!["gpu".into(), "--upstream".into(), local.openai_url()];
    let _worker = TestWorker::launch(&server, &admin, "box-1", &token, 2, args, &[]).await;
    let client = server.client_key(&admin).await;

    let chat = |model: &str| json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let messages = |model: &str| json!({"model": model, "stream": true, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let cases = [
        (
            "OpenAI pass-through",
            "/v1/chat/completions",
            chat("gpt-4o-mini"),
            "cloud",
        ),
        (
            "Anthropic pass-through",
            "/v1/messages",
            messages("claude-haiku-4-5-20251001"),
            "cloud",
        ),
        (
            "OpenAI client, Anthropic provider",
            "/v1/chat/completions",
            chat("claude-haiku-4-5-20251001"),
            "cloud",
        ),
        (
            "Anthropic client, OpenAI provider",
            "/v1/messages",
            messages("gpt-4o-mini"),
            "cloud",
        ),
        (
            "Responses",
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "stream": true, "input": "hi"}),
            "cloud",
        ),
        (
            "OpenAI client, GPU worker",
            "/v1/chat/completions",
            chat("local-fails"),
            "gpu",
        ),
        (
            "Anthropic client, GPU worker",
            "/v1/messages",
            messages("local-fails"),
            "gpu",
        ),
    ];
    let count = cases.len() as u64;
    for (context, path, body, tier) in cases {
        let reply = server.call("POST", path, Some(&client), Some(body)).await;
        reply.expect(200);
        assert!(reply.text.contains("Partial"), "{context}: {}", reply.text);
        assert!(
            reply.text.contains("error"),
            "{context}: the client saw the error: {}",
            reply.text
        );
        let row = server.newest_request_row(&admin).await;
        assert_eq!(row["tier"], tier, "{context}: {row}");
        booked_as_error(&row, context);
    }
    let usage = server.call("GET", "/api/usage", Some(&admin), None).await.json();
    assert_eq!(usage["totals"]["errors"], count, "{usage}");
    // Only the two Anthropic-served rows' reported counts cost anything.
    assert_eq!(
        (usage["totals"]["cost_usd"].as_f64().unwrap() * 1e6).round() as i64,
        28,
        "{usage}"
    );
    let keys = server.call("GET", "/api/api-keys", Some(&admin), None).await.json();
    let spent: f64 = keys["data"]
        .as_array()
        .map(|all| all.iter().filter_map(|k| k["spent_this_month_usd"].as_f64()).sum())
        .unwrap_or(0.0);
    assert_eq!(
        (spent * 1e6).round() as i64,
        28,
        "estimated counts reached a key's spend: {keys}"
    );
}

#[tokio::test]
async fn a_client_leaving_a_worker_stream_is_booked_cancelled() {
    let local = failing(&["local-hang"]).await;
    let (server, admin) = TestServer::with_admin().await;
    let token = worker_token_allowing(&server, &admin, "box-1", "gpu", &["*"]).await;
    let args = vec!["gpu".into(), "--upstream".into(), local.openai_url()];
    let _worker = TestWorker::launch(&server, &admin, "box-1", &token, 1, args, &[]).await;
    let client = server.client_key(&admin).await;
    let response = server.open_stream(&client, "local-hang").await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    drop(body);
    let booked = crate::support::eventually(Duration::from_secs(10), || async {
        server.newest_request_row(&admin).await["outcome"] == "cancelled"
    })
    .await;
    let row = server.newest_request_row(&admin).await;
    assert!(booked, "{row}");
    assert_eq!(row["status"], 499, "{row}");
    assert_eq!(row["tier"], "gpu");
}

#[tokio::test]
async fn a_cli_that_exits_non_zero_after_answering_is_an_error() {
    let (server, admin) = TestServer::with_admin().await;
    let cli = FakeCli::with_script(
        r#"#!/bin/sh
cat > /dev/null
echo '{"type":"system","subtype":"init","session_id":"s1"}'
echo '{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Half an answer"}]}}'
echo '{"type":"result","subtype":"success","is_error":false,"result":"Half an answer","usage":{"input_tokens":4,"output_tokens":3}}'
echo 'fatal: lost the session' >&2
exit 2
"#,
    );
    let _worker = TestWorker::cli(&server, &admin, "cli-1", &cli, &["claude-code"], 1).await;
    let client = server.client_key(&admin).await;
    let anthropic = json!({"model": "claude-code", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "Say hi"}]});
    for (dialect, path, body) in [
        (
            "openai",
            "/v1/chat/completions",
            json!({"model": "claude-code", "stream": true, "messages": [{"role": "user", "content": "Say hi"}]}),
        ),
        ("anthropic", "/v1/messages", anthropic),
    ] {
        let reply = server.call("POST", path, Some(&client), Some(body)).await;
        reply.expect(200);
        assert!(reply.text.contains("Half an answer"), "{dialect}: {}", reply.text);
        assert!(reply.text.contains("lost the session"), "{dialect}: {}", reply.text);
        let row = server.newest_request_row(&admin).await;
        assert_eq!(row["outcome"], "error:stream_error", "{dialect}: {row}");
        assert_eq!(row["tier"], "cli");
        // The tokens the run reported before it failed.
        assert_eq!(row["estimated"], false, "{dialect}: {row}");
        assert_eq!(
            (row["input_tokens"].as_u64(), row["output_tokens"].as_u64()),
            (Some(4), Some(3)),
            "{dialect}: {row}"
        );
    }
}

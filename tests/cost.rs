//! Cost to the micro-dollar from real-shaped usage blocks, the request log, outcomes that
//! tell the truth, spend avoided for every local request, and retention with rollups.

use crate::support::scripted::ScriptedProvider;
use crate::support::sse;
use crate::support::{FakeCli, FakeUpstream, Options, TestServer, TestWorker};
use serde_json::{json, Value};

const KEY: &str = "sk-cost-provider-key-0001";

fn openai_answer(model: &str, stream: bool, usage: Value) -> (String, &'static str) {
    if !stream {
        let body = json!({"id": "chatcmpl-r", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi", "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage, "service_tier": "default", "system_fingerprint": "fp_1"});
        return (body.to_string(), "application/json");
    }
    let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-r", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null});
    let mut body = sse(&[
        (None, chunk(json!({"role": "assistant", "content": ""}), Value::Null)),
        (None, chunk(json!({"content": "Hi"}), Value::Null)),
        (None, chunk(json!({}), json!("stop"))),
        (
            None,
            json!({"id": "chatcmpl-r", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [], "usage": usage}),
        ),
    ]);
    body += "data: [DONE]\n\n";
    (body, "text/event-stream")
}

fn anthropic_answer(model: &str, stream: bool, start: Value, end: Value) -> (String, &'static str) {
    if !stream {
        let mut usage = start.clone();
        usage["output_tokens"] = end["output_tokens"].clone();
        let body = json!({"id": "msg_r", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": null, "usage": usage});
        return (body.to_string(), "application/json");
    }
    let body = sse(&[
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "msg_r", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": start}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (Some("ping"), json!({"type": "ping"})),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": end}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ]);
    (body, "text/event-stream")
}

/// The four answers, by model: what each costs is worked out by hand in the test.
fn answer(model: &str, stream: bool) -> (String, &'static str) {
    match model {
        "gpt-4o-2024-08-06" => openai_answer(
            model,
            stream,
            json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}),
        ),
        "o4-mini-2025-04-16" => openai_answer(
            model,
            stream,
            json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}),
        ),
        "claude-sonnet-4-5-20250929" => anthropic_answer(
            model,
            stream,
            json!({"input_tokens": 3, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 48000,
                "cache_creation": {"ephemeral_5m_input_tokens": 1200, "ephemeral_1h_input_tokens": 800},
                "output_tokens": 1, "service_tier": "standard"}),
            json!({"output_tokens": 512}),
        ),
        _ => anthropic_answer(
            model,
            stream,
            json!({"input_tokens": 10, "cache_creation_input_tokens": 500, "cache_read_input_tokens": 7000,
                "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 0}, "output_tokens": 1}),
            json!({"input_tokens": 10, "cache_creation_input_tokens": 500, "cache_read_input_tokens": 7000, "output_tokens": 120}),
        ),
    }
}

/// A provider answering as OpenAI and Anthropic do, byte for byte in shape: the usage
/// blocks in `answer` are what those APIs return for prompt-cached and reasoning requests.
async fn replay(models: &'static [&'static str]) -> ScriptedProvider {
    ScriptedProvider::start(models, |request| {
        let (text, content_type) = answer(request["model"].as_str().unwrap(), request["stream"] == json!(true));
        (text.into(), content_type)
    })
    .await
}

fn micro(usd: &Value) -> i64 {
    (usd.as_f64().unwrap() * 1e6).round() as i64
}

#[tokio::test]
async fn cache_and_reasoning_tokens_are_priced_to_the_micro_dollar_from_both_providers() {
    let openai = replay(&["gpt-4o-2024-08-06", "o4-mini-2025-04-16"]).await;
    let anthropic = replay(&["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server
        .add_provider_at(&admin, "oai", "openai", &openai.openai_url(), KEY)
        .await;
    server
        .add_provider_at(&admin, "ant", "anthropic", &anthropic.anthropic_url(), KEY)
        .await;
    let client = server.client_key(&admin).await;
    // (path, model, stream, expected micro-USD ×10 to keep the half micro-dollar exact)
    let cases = [
        // gpt-4o: 86 × $2.50 + 1920 cached × $1.25 + 300 × $10
        ("/v1/chat/completions", "gpt-4o-2024-08-06", false, 56_150),
        ("/v1/chat/completions", "gpt-4o-2024-08-06", true, 56_150),
        // o4-mini: 86 × $1.10 + 1920 × $0.275 + 300 (256 reasoning) × $4.40
        ("/v1/chat/completions", "o4-mini-2025-04-16", true, 19_426),
        // sonnet 4.5: 3 × $3 + 48000 × $0.30 + 1200 × $3.75 (5 m) + 800 × $6 (1 h) + 512 × $15
        ("/v1/messages", "claude-sonnet-4-5-20250929", false, 313_890),
        ("/v1/messages", "claude-sonnet-4-5-20250929", true, 313_890),
        // Translated for an OpenAI client: priced from Anthropic's own report.
        ("/v1/chat/completions", "claude-sonnet-4-5-20250929", true, 313_890),
        // haiku 4.5: 10 × $1 + 7000 × $0.10 + 500 × $1.25 + 120 × $5
        ("/v1/messages", "claude-haiku-4-5-20251001", true, 19_350),
        ("/v1/chat/completions", "claude-haiku-4-5-20251001", false, 19_350),
    ];
    let mut expected_total = 0;
    for (path, model, stream, _) in cases {
        let mut body = json!({"model": model, "stream": stream, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
        if path == "/v1/chat/completions" && stream && model.starts_with("gpt") {
            body["stream_options"] = json!({"include_usage": true});
        }
        let reply = server.call("POST", path, Some(&client), Some(body)).await;
        reply.expect(200);
    }
    let log = server.request_log_page(&admin, "limit=50").await;
    let rows = log["requests"].as_array().unwrap();
    assert_eq!(rows.len(), cases.len(), "{log}");
    // Newest first: the rows come back in the reverse order of the cases.
    for ((path, model, stream, tenth_micro), row) in cases.iter().zip(rows.iter().rev()) {
        let context = format!("{path} {model} stream={stream}: {row}");
        assert_eq!(row["model_served"], *model, "{context}");
        assert_eq!(row["estimated"], false, "{context}");
        assert_eq!(row["outcome"], "ok", "{context}");
        let cost = (row["cost_usd"].as_f64().unwrap() * 1e7).round() as i64;
        assert_eq!(cost, *tenth_micro, "{context}");
        assert_eq!(row["cloud_equivalent_usd"], row["cost_usd"], "{context}");
        expected_total += tenth_micro;
    }
    let sonnet = &rows[4];
    assert_eq!(
        (
            sonnet["input_tokens"].as_u64(),
            sonnet["cache_read_tokens"].as_u64(),
            sonnet["cache_write_5m_tokens"].as_u64(),
            sonnet["cache_write_1h_tokens"].as_u64(),
            sonnet["output_tokens"].as_u64()
        ),
        (Some(3), Some(48000), Some(1200), Some(800), Some(512)),
        "{sonnet}"
    );
    assert_eq!(rows[5]["reasoning_tokens"], 256, "{}", rows[5]);
    assert_eq!(rows[7]["cache_read_tokens"], 1920, "{}", rows[7]);
    // The aggregate and a key's spend use the same cost.
    let usage = server
        .call("GET", "/api/usage?group_by=model", Some(&admin), None)
        .await;
    usage.expect(200);
    let totals = &usage.json()["totals"];
    assert_eq!(
        (totals["cost_usd"].as_f64().unwrap() * 1e7).round() as i64,
        expected_total
    );
    assert_eq!(totals["cache_read_tokens"], 1920 * 3 + 48000 * 3 + 7000 * 2);
    let key_id = rows[0]["api_key_id"].as_str().unwrap().to_string();
    server
        .call(
            "PATCH",
            &format!("/api/api-keys/{key_id}"),
            Some(&admin),
            Some(json!({"monthly_spend_cap_usd": micro(&totals["cost_usd"]) as f64 / 1e6 + 0.000_001})),
        )
        .await
        .expect(200);
    let body = json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    server
        .call("POST", "/v1/messages", Some(&client), Some(body.clone()))
        .await
        .expect(200);
    // Over the cap by exactly what the log says was spent.
    server
        .call("POST", "/v1/messages", Some(&client), Some(body))
        .await
        .expect(429);
}

#[tokio::test]
async fn the_request_log_pages_newest_first_and_filters() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o", "gpt-4o-mini", "fail-500"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let first = server.client_key(&admin).await;
    let second = server
        .call(
            "POST",
            "/api/api-keys",
            Some(&admin),
            Some(json!({"name": "second-key", "role": "client"})),
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..5 {
        server
            .chat(&first, if i % 2 == 0 { "gpt-4o" } else { "gpt-4o-mini" }, i == 4)
            .await
            .expect(200);
    }
    let failed = server
        .send(
            server
                .http
                .post(format!("{}/v1/chat/completions", server.url))
                .bearer_auth(&second)
                .header("x-claude-code-session-id", "sess-42")
                .json(&json!({"model": "fail-500", "messages": [{"role": "user", "content": "PROMPT-SECRET"}]})),
        )
        .await;
    failed.expect(500);
    // Pages of two, newest first, until the cursor runs out.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=2&cursor={c}"),
            None => "limit=2".into(),
        };
        let page = server.request_log_page(&admin, &query).await;
        let rows = page["requests"].as_array().unwrap().clone();
        assert!(rows.len() <= 2);
        seen.extend(rows);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    let times: Vec<&str> = seen.iter().map(|r| r["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    let newest = &seen[0];
    assert_eq!(newest["model_asked"], "fail-500");
    assert_eq!(newest["status"], 500);
    assert_eq!(newest["outcome"].as_str().map(|o| o.starts_with("error")), Some(true));
    assert_eq!(newest["session"], "sess-42");
    assert_eq!(newest["api_key_name"], "second-key");
    assert!(newest["total_ms"].is_u64() && newest["attempts"].is_array());
    assert!(seen[1]["ttfb_ms"].is_u64(), "{}", seen[1]);
    assert!(
        seen[1]["queue_ms"].is_u64(),
        "the dispatcher reports queue wait: {}",
        seen[1]
    );
    assert_eq!(seen[1]["tier"], "cloud");
    assert_eq!(seen[1]["route"], "main");
    let all = serde_json::to_string(&seen).unwrap();
    assert!(!all.contains("PROMPT-SECRET") && !all.contains("Say hi"));

    let count = |query: &'static str| {
        let server = &server;
        let admin = &admin;
        async move {
            server.request_log_page(admin, query).await["requests"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(count("model=gpt-4o").await, 3);
    assert_eq!(
        count("model=gpt-4o&tier=cloud&route=main&status=200&outcome=ok").await,
        3
    );
    assert_eq!(count("outcome=error").await, 1);
    assert_eq!(count("session=sess-42").await, 1);
    assert_eq!(count("api_key=second-key").await, 1, "a key by its name");
    assert_eq!(count("api_key=second-key&status=200").await, 0);
    let second_id = newest["api_key_id"].as_str().unwrap().to_string();
    let by_key = server.request_log_page(&admin, &format!("api_key={second_id}")).await;
    assert_eq!(by_key["requests"].as_array().unwrap().len(), 1);
    assert_eq!(count("tier=gpu").await, 0);
    assert_eq!(count("to=2001-01-01").await, 0);
    assert_eq!(count("from=2001-01-01&tier=&model=").await, 6);

    for (query, says) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=abc", "cursor"),
        ("tier=moon", "tier"),
        ("status=9999", "status"),
        ("from=yesterday", "from"),
        ("colour=red", "unknown parameter"),
    ] {
        let reply = server
            .call("GET", &format!("/api/requests?{query}"), Some(&admin), None)
            .await;
        reply.expect(400);
        assert!(
            reply.json()["error"]["message"].as_str().unwrap().contains(says),
            "{query}: {}",
            reply.text
        );
    }
    server
        .call("GET", "/api/requests", Some(&first), None)
        .await
        .expect(403);
    server.call("GET", "/api/requests", None, None).await.expect(401);
}

#[tokio::test]
async fn a_cli_that_fails_after_starting_is_booked_as_an_error() {
    let (server, admin) = TestServer::with_admin().await;
    let cli = FakeCli::with_script(
        r#"#!/bin/sh
cat > /dev/null
echo '{"type":"system","subtype":"init","session_id":"s1"}'
echo '{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Partial"}]}}'
echo '{"type":"result","subtype":"success","is_error":true,"result":"Invalid API key · Please run /login","usage":{"input_tokens":4,"output_tokens":1}}'
exit 1
"#,
    );
    let _worker = TestWorker::cli(&server, &admin, "cli-1", &cli, &["claude-sonnet-4-5"], 1).await;
    let client = server.client_key(&admin).await;
    let reply = server.chat(&client, "claude-sonnet-4-5", true).await;
    reply.expect(200);
    assert!(reply.text.contains("Invalid API key"), "{}", reply.text);
    let log = server.request_log_page(&admin, "tier=cli").await;
    let row = &log["requests"][0];
    assert_eq!(row["outcome"], "error:stream_error", "{row}");
    assert_eq!(row["cost_usd"], 0.0);
    // The tokens the failed run reported, not an estimate.
    assert_eq!(row["estimated"], false, "{row}");
    assert_eq!(
        (row["input_tokens"].as_u64(), row["output_tokens"].as_u64()),
        (Some(4), Some(1)),
        "{row}"
    );
    let ok = server.request_log_page(&admin, "outcome=ok").await;
    assert_eq!(ok["requests"].as_array().unwrap().len(), 0, "{ok}");
}

#[tokio::test]
async fn a_local_model_asked_by_its_own_name_is_valued_at_a_cloud_price() {
    let model_server = FakeUpstream::openai("llama", &["sk-local"], &["qwen-local"]).await;
    let (server, admin) = TestServer::with_admin().await;
    let _worker = TestWorker::gpu(&server, &admin, "box-1", &model_server, "sk-local", 2).await;
    let client = server.client_key(&admin).await;
    server.chat(&client, "qwen-local", false).await.expect(200);
    let row = server.request_log_page(&admin, "tier=gpu").await["requests"][0].clone();
    assert_eq!(row["cloud_equivalent_model"], "gpt-4o-mini", "{row}");
    assert_eq!(row["cloud_equivalent_source"], "builtin_default");
    assert_eq!(row["estimated"], false);
    assert_eq!(row["cost_usd"], 0.0);
    // The fake reports 5 prompt and 4 completion tokens: at gpt-4o-mini's $0.15 / $0.60.
    assert_eq!(micro(&row["cloud_equivalent_usd"]), 3, "{row}");

    // The operator names the equivalent for this model; unpriced names are refused.
    server
        .call(
            "PUT",
            "/api/usage/equivalents",
            Some(&admin),
            Some(json!({"by_model": {"qwen-local": "no-such-model"}})),
        )
        .await
        .expect(400);
    let set = server
        .call(
            "PUT",
            "/api/usage/equivalents",
            Some(&admin),
            Some(json!({"by_model": {"qwen-local": "gpt-4o"}, "default_model": "gpt-4.1-mini"})),
        )
        .await;
    set.expect(200);
    assert_eq!(set.json()["by_model"]["qwen-local"], "gpt-4o");
    server.chat(&client, "qwen-local", true).await.expect(200);
    let row = server.request_log_page(&admin, "tier=gpu&limit=1").await["requests"][0].clone();
    assert_eq!(row["cloud_equivalent_model"], "gpt-4o", "{row}");
    assert_eq!(row["cloud_equivalent_source"], "model");
    assert!(row["cloud_equivalent_usd"].as_f64().unwrap() > 0.0);
    let usage = server
        .call("GET", "/api/usage?group_by=tier", Some(&admin), None)
        .await
        .json();
    assert!(usage["totals"]["saved_usd"].as_f64().unwrap() > 0.0, "{usage}");
    let gpu_latency = usage["latency"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["tier"] == "gpu")
        .unwrap()
        .clone();
    assert_eq!(gpu_latency["route"], "box-1");
    assert_eq!(gpu_latency["requests"], 2);
    assert!(
        gpu_latency["ttfb_p50_ms"].is_u64() && gpu_latency["total_p99_ms"].is_u64(),
        "{gpu_latency}"
    );
}

#[tokio::test]
async fn pruned_rows_leave_the_log_but_stay_in_the_totals() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let options = || Options {
        // The size cap is far above 3 rows: the row cap binds.
        args: vec![
            "--usage-max-rows".into(),
            "3".into(),
            "--usage-max-mib".into(),
            "64".into(),
        ],
        ..Options::default()
    };
    let (mut server, admin) = TestServer::with_admin_using(options()).await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    for _ in 0..5 {
        server.chat(&client, "gpt-4o", false).await.expect(200);
    }
    let before = server.call("GET", "/api/usage", Some(&admin), None).await.json();
    assert_eq!(before["totals"]["requests"], 5);
    server.stop().await;
    // Pruning runs at start (and every few minutes after).
    let server = server.relaunch(options()).await.unwrap();
    let mut kept = 0;
    for _ in 0..100 {
        kept = server.request_log_page(&admin, "").await["requests"]
            .as_array()
            .unwrap()
            .len();
        if kept == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(kept, 3);
    let after = server.call("GET", "/api/usage", Some(&admin), None).await.json();
    assert_eq!(after["totals"]["requests"], 5, "{after}");
    assert_eq!(after["totals"]["input_tokens"], before["totals"]["input_tokens"]);
    assert!(
        (after["totals"]["cost_usd"].as_f64().unwrap() - before["totals"]["cost_usd"].as_f64().unwrap()).abs() < 1e-12
    );
    assert!(after["pruned_before"].is_string(), "{after}");
}

#[tokio::test]
async fn local_answers_by_name_and_by_auto_are_valued_at_the_cheapest_enabled_cloud_model() {
    let cloud = FakeUpstream::openai("cloud", &[KEY], &["gpt-4o", "gpt-4.1-nano-2025-04-14"]).await;
    let model_server = FakeUpstream::openai("llama", &["sk-local"], &["qwen-local"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &cloud, KEY).await;
    let _worker = TestWorker::gpu(&server, &admin, "box-1", &model_server, "sk-local", 2).await;
    let client = server.client_key(&admin).await;
    for model in ["qwen-local", "auto"] {
        let reply = server.chat(&client, model, false).await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-tier"), Some("gpu"), "{model}: {}", reply.text);
        let row = server.request_log_page(&admin, "limit=1").await["requests"][0].clone();
        assert_eq!(row["model_asked"], model, "{row}");
        assert_eq!(row["cloud_equivalent_model"], "gpt-4.1-nano-2025-04-14", "{row}");
        assert_eq!(row["cloud_equivalent_source"], "cheapest_enabled", "{row}");
        // 5 prompt and 4 completion tokens at gpt-4.1-nano's $0.10 / $0.40.
        assert_eq!(
            (row["cloud_equivalent_usd"].as_f64().unwrap() * 1e7).round() as i64,
            21,
            "{row}"
        );
        assert_eq!(row["cost_usd"], 0.0);
    }
    let usage = server
        .call("GET", "/api/usage?group_by=tier", Some(&admin), None)
        .await
        .json();
    assert!(usage["totals"]["saved_usd"].as_f64().unwrap() > 0.0, "{usage}");
}

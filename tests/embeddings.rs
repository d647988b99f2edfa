//! `POST /v1/embeddings`: GPU workers that embed first (through a real `auxot worker gpu`),
//! then OpenAI-format providers; bad input, unknown models and no capacity answered in
//! OpenAI's error shape; one usage row per request.

use crate::support::worker::hand_driven_worker;
use crate::support::worker::worker_token_allowing;
use crate::support::{FakeUpstream, Reply, TestServer, TestWorker};
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

const CLOUD_KEY: &str = "sk-embeddings-cloud-0201";
const GPU_KEY: &str = "sk-embeddings-gpu-0202";

async fn embed(server: &TestServer, key: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
    let mut request = server
        .http
        .post(format!("{}/v1/embeddings", server.url))
        .header("authorization", format!("Bearer {key}"))
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    server.send(request).await
}

fn vectors(reply: &Reply) -> Vec<Vec<f32>> {
    reply.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| match &item["embedding"] {
            Value::String(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Value::Array(values) => values.iter().map(|v| v.as_f64().unwrap() as f32).collect(),
            other => panic!("not an embedding: {other}"),
        })
        .collect()
}

#[tokio::test]
async fn embeddings_run_on_a_gpu_worker_that_embeds_and_fail_over_to_the_cloud() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen", "nomic-embed"]).await;
    let cloud = FakeUpstream::openai("cloud-ai", &[CLOUD_KEY], &["nomic-embed", "text-embedding-3-small"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &cloud, CLOUD_KEY).await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 2).await;

    // The worker asked its model server which models embed, and says so.
    let view = crate::support::worker::worker_view(&server, &admin, "g1")
        .await
        .unwrap();
    assert_eq!(view["embedding_models"], json!(["nomic-embed"]), "{view}");

    let reply = embed(
        &server,
        &client,
        json!({"model": "nomic-embed", "input": ["a", "b"]}),
        &[],
    )
    .await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("gpu"));
    assert_eq!(reply.json()["object"], "list");
    assert_eq!(reply.json()["usage"]["prompt_tokens"], 2);
    // The fake's vectors carry its name's length: this one came from the GPU box.
    assert_eq!(vectors(&reply), vec![vec![0.5, 7.0, -1.0], vec![1.5, 7.0, -1.0]]);
    let sent = gpu
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/v1/embeddings")
        .unwrap()
        .json();
    assert_eq!(sent, json!({"model": "nomic-embed", "input": ["a", "b"]}));

    // base64 and dimensions, as the official SDKs send them.
    let reply = embed(
        &server,
        &client,
        json!({"model": "nomic-embed", "input": "hello", "encoding_format": "base64", "dimensions": 4, "user": "u1"}),
        &[],
    )
    .await;
    reply.expect(200);
    assert!(reply.json()["data"][0]["embedding"].is_string(), "{}", reply.text);
    assert_eq!(vectors(&reply), vec![vec![0.5, 7.0, -1.0, 0.0]]);

    // A model only the cloud has goes there, byte for byte.
    let reply = embed(
        &server,
        &client,
        json!({"model": "text-embedding-3-small", "input": [[1, 2, 3]]}),
        &[],
    )
    .await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("cloud"));
    assert_eq!(vectors(&reply), vec![vec![0.5, 8.0, -1.0]]);
    assert_eq!(
        cloud.requests().last().unwrap().body,
        json!({"model": "text-embedding-3-small", "input": [[1, 2, 3]]}).to_string()
    );

    // The model server fails: the request moves to the cloud before the client sees anything.
    gpu.fail_chats_with(Some(500));
    let reply = embed(&server, &client, json!({"model": "nomic-embed", "input": "x"}), &[]).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("cloud"));
    assert_eq!(vectors(&reply), vec![vec![0.5, 8.0, -1.0]]);
    gpu.fail_chats_with(None);

    // A chat-only model is nowhere to be embedded.
    let reply = embed(&server, &client, json!({"model": "qwen", "input": "x"}), &[]).await;
    reply.expect(404);
    assert_eq!(reply.json()["error"]["code"], "model_not_found", "{}", reply.text);

    // One row per request, input tokens as the target reported them.
    let rows = server.request_log_of(&admin, 5).await;
    let ok: Vec<&Value> = rows.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(ok.len(), 4, "{rows:?}");
    for row in &ok {
        assert_eq!(row["output_tokens"], 0, "{row}");
        assert_eq!(row["estimated"], false, "{row}");
    }
    assert!(
        ok.iter().any(|r| r["tier"] == "gpu" && r["input_tokens"] == 2),
        "{rows:?}"
    );
}

#[tokio::test]
async fn embeddings_skip_anthropic_providers_and_estimate_unreported_usage() {
    let anthropic = FakeUpstream::anthropic("claude", &["sk-ant-0203"], &["voyage-embed"]).await;
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["embed-nousage"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server
        .add_provider(&admin, "anthropic", &anthropic, "sk-ant-0203")
        .await;
    server.add_provider(&admin, "openai", &cloud, CLOUD_KEY).await;

    let reply = embed(&server, &client, json!({"model": "voyage-embed", "input": "x"}), &[]).await;
    reply.expect(404);
    assert_eq!(reply.json()["error"]["code"], "model_not_found", "{}", reply.text);
    assert!(anthropic.chat_requests().is_empty());
    assert!(!anthropic.requests().iter().any(|r| r.path.contains("embeddings")));

    // No usage in the answer: the documented estimate (4 bytes a token), marked as one.
    let reply = embed(
        &server,
        &client,
        json!({"model": "embed-nousage", "input": "sixteen bytes!!!"}),
        &[],
    )
    .await;
    reply.expect(200);
    let rows = server.request_log_of(&admin, 2).await;
    let row = rows.iter().find(|r| r["status"] == 200).unwrap();
    assert_eq!(row["input_tokens"], 4, "{row}");
    assert_eq!(row["estimated"], true, "{row}");
    assert_eq!(row["cost_usd"], 0.0, "{row}");
}

#[tokio::test]
async fn bad_embeddings_requests_get_openai_errors_and_reach_no_upstream() {
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["text-embedding-3-small"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &cloud, CLOUD_KEY).await;
    let cases = [
        (json!({"input": "x"}), "'model' is required"),
        (json!({"model": "text-embedding-3-small"}), "'input' is required"),
        (json!({"model": "text-embedding-3-small", "input": []}), "empty array"),
        (
            json!({"model": "text-embedding-3-small", "input": [1, "a"]}),
            "must hold non-negative integers",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": "x", "dimensions": -3}),
            "dimensions",
        ),
    ];
    for (body, expected) in cases {
        let reply = embed(&server, &client, body.clone(), &[]).await;
        reply.expect(400);
        let error = &reply.json()["error"];
        assert_eq!(error["type"], "invalid_request_error", "{body}: {}", reply.text);
        assert!(
            error["message"].as_str().unwrap().contains(expected),
            "{body}: {}",
            reply.text
        );
    }
    let reply = server
        .send(
            server
                .http
                .post(format!("{}/api/openai/v1/embeddings", server.url))
                .header("authorization", format!("Bearer {client}"))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    reply.expect(400);
    let reply = embed(
        &server,
        "not-a-key",
        json!({"model": "text-embedding-3-small", "input": "x"}),
        &[],
    )
    .await;
    reply.expect(401);
    let reply = embed(
        &server,
        &client,
        json!({"model": "no-such-embedder", "input": "x"}),
        &[],
    )
    .await;
    reply.expect(404);
    assert!(
        !cloud.requests().iter().any(|r| r.path.ends_with("/embeddings")),
        "bad input reached the upstream"
    );
    // The alias path serves the same API.
    let reply = server
        .send(server.post_as(
            "/api/openai/v1/embeddings",
            &client,
            &json!({"model": "text-embedding-3-small", "input": "x"}),
        ))
        .await;
    reply.expect(200);
}

#[tokio::test]
async fn embeddings_with_every_embedding_slot_busy_get_503_with_retry_after() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["gated", "nomic-embed"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 1).await;
    // A chat holds the worker's one slot.
    let url = format!("{}/v1/chat/completions", server.url);
    let mut held = server
        .http
        .post(url)
        .header("authorization", format!("Bearer {client}"))
        .json(&json!({"model": "gated", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let _first = held.chunk().await.unwrap();
    let reply = embed(
        &server,
        &client,
        json!({"model": "nomic-embed", "input": "x"}),
        &[("x-auxot-wait-ms", "200")],
    )
    .await;
    reply.expect(503);
    assert!(reply.header("retry-after").is_some(), "{:?}", reply.headers);
    assert_eq!(reply.json()["error"]["code"], "no_capacity", "{}", reply.text);
    gpu.release_stream();
    drop(held);
}

/// A worker from before embeddings says nothing about them: it never gets an embeddings job.
#[tokio::test]
async fn a_worker_that_predates_embeddings_never_gets_an_embeddings_job() {
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["old-embed"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "openai", &cloud, CLOUD_KEY).await;
    let token = worker_token_allowing(&server, &admin, "old", "gpu", &["*"]).await;
    let (ack, mut socket) = hand_driven_worker(&server, &token, json!({"type": "hello", "protocol": 1, "kind": "gpu", "name": "old", "models": ["old-embed"], "slots": 1, "version": "0.1.0"})).await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");

    let reply = embed(&server, &client, json!({"model": "old-embed", "input": "x"}), &[]).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("cloud"));
    // Chat still goes to it first; nothing else came over its socket.
    let frame = tokio::time::timeout(Duration::from_millis(300), socket.next()).await;
    assert!(frame.is_err(), "the old worker got a frame: {frame:?}");
}

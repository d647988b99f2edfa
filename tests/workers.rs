//! Workers: tokens, the live list, disconnects, heartbeats, cancellation, slot accounting.

use crate::support::worker::hand_driven_worker;
use crate::support::worker::{alive, worker_token, worker_token_allowing, worker_view};
use crate::support::{eventually, FakeCli, FakeUpstream, Options, TestServer, TestWorker};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const GPU_KEY: &str = "sk-local-model-server";
const CLOUD_KEY: &str = "sk-cloud-provider-key-0001";

async fn status_of(server: &TestServer, admin: &str, name: &str) -> String {
    worker_view(server, admin, name)
        .await
        .map(|w| w["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn worker_tokens_are_shown_once_listed_without_secrets_and_checked_on_connect() {
    let (server, admin) = TestServer::with_admin().await;
    let created = server
        .call(
            "POST",
            "/api/worker-tokens",
            Some(&admin),
            Some(json!({"name": "box-1", "kind": "gpu"})),
        )
        .await;
    created.expect(201);
    let token = created.json()["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("auxw_"));
    let list = server.call("GET", "/api/worker-tokens", Some(&admin), None).await;
    list.expect(200);
    assert!(!list.text.contains(&token));
    assert_eq!(list.json()["data"][0]["kind"], "gpu");
    for body in [
        json!({"name": "x", "kind": "tpu"}),
        json!({"kind": "gpu"}),
        json!({"name": "", "kind": "cli"}),
    ] {
        server
            .call("POST", "/api/worker-tokens", Some(&admin), Some(body))
            .await
            .expect(400);
    }
    let client = server.client_key(&admin).await;
    server
        .call("GET", "/api/worker-tokens", Some(&client), None)
        .await
        .expect(403);

    // The socket is refused without a valid token, before any upgrade.
    let ws_url = server.url.replace("http://", "ws://") + "/api/workers/connect";
    for bad in [None, Some("auxw_not-a-token")] {
        let mut request = ws_url.clone().into_client_request().unwrap();
        if let Some(bad) = bad {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {bad}").parse().unwrap());
        }
        let error = tokio_tungstenite::connect_async(request).await.unwrap_err().to_string();
        assert!(error.contains("401"), "{error}");
    }
}

#[tokio::test]
async fn a_worker_with_a_token_of_the_other_kind_is_refused() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let (server, admin) = TestServer::with_admin().await;
    let token = worker_token(&server, &admin, "wrong", "cli").await;
    let worker = TestWorker::spawn(
        &server.url,
        "wrong",
        &token,
        1,
        vec![
            "gpu".into(),
            "--upstream".into(),
            gpu.base_url(),
            "--upstream-key".into(),
            GPU_KEY.into(),
        ],
        &[],
    );
    let refused = eventually(Duration::from_secs(10), || async {
        worker
            .logs()
            .contains("this token is for a cli worker, not a gpu worker")
    })
    .await;
    assert!(refused, "{}", worker.logs());
    assert!(worker_view(&server, &admin, "wrong").await.is_none());
}

#[tokio::test]
async fn two_worker_machines_sharing_one_token_both_stay_connected_and_both_take_jobs() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let token = worker_token_allowing(&server, &admin, "shared", "gpu", &["*"]).await;
    let args = || {
        vec![
            "gpu".to_string(),
            "--upstream".into(),
            gpu.base_url(),
            "--upstream-key".into(),
            GPU_KEY.into(),
        ]
    };
    // Provisioned alike: the same token and the same name on both machines.
    let a = TestWorker::spawn(&server.url, "gpu-box", &token, 1, args(), &[]);
    let b = TestWorker::spawn(&server.url, "gpu-box", &token, 1, args(), &[]);
    let live_instances = || async {
        let workers = server.call("GET", "/api/workers", Some(&admin), None).await.json();
        let mut ids: Vec<String> = workers["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["status"] != "offline")
            .map(|w| w["instance_id"].as_str().unwrap_or_default().to_string())
            .collect();
        ids.sort();
        ids
    };
    let both = eventually(Duration::from_secs(20), || async { live_instances().await.len() == 2 }).await;
    assert!(both, "not both connected:\n{}\n{}", a.logs(), b.logs());
    let first = live_instances().await;
    // Replacing each other, they would reconnect every few hundred milliseconds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        live_instances().await,
        first,
        "the connections changed:\n{}\n{}",
        a.logs(),
        b.logs()
    );
    // Two slots in all: two requests at once both run.
    let (one, two) = tokio::join!(server.chat(&client, "qwen", false), server.chat(&client, "qwen", false));
    one.expect(200);
    two.expect(200);
    assert_eq!(live_instances().await, first);
}

#[tokio::test]
async fn revoking_a_token_disconnects_its_worker_at_once() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 1).await;
    server.chat(&client, "qwen", false).await.expect(200);
    let tokens = server
        .call("GET", "/api/worker-tokens", Some(&admin), None)
        .await
        .json();
    let id = tokens["data"][0]["id"].as_str().unwrap().to_string();
    server
        .call("DELETE", &format!("/api/worker-tokens/{id}"), Some(&admin), None)
        .await
        .expect(204);
    let offline = eventually(Duration::from_secs(5), || async {
        status_of(&server, &admin, "g1").await == "offline"
    })
    .await;
    assert!(offline, "the revoked worker is still listed live");
    let reply = server.chat(&client, "qwen", false).await;
    reply.expect(404);
    server
        .call("DELETE", &format!("/api/worker-tokens/{id}"), Some(&admin), None)
        .await
        .expect(404);
}

#[tokio::test]
async fn a_killed_gpu_worker_is_skipped_and_its_stream_ends_cleanly() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["gated", "qwen"]).await;
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["qwen"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    server.add_provider(&admin, "cloud", &cloud, CLOUD_KEY).await;
    let mut worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 1).await;

    let response = server.open_stream(&client, "gated").await;
    assert_eq!(response.headers()["x-auxot-route"], "g1");
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    worker.kill().await;
    let mut rest = String::new();
    while let Some(Ok(chunk)) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap()
    {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        rest.contains("upstream_stream_error") && rest.contains("disconnected"),
        "{rest}"
    );

    assert!(
        eventually(Duration::from_secs(5), || async {
            status_of(&server, &admin, "g1").await == "offline"
        })
        .await
    );
    let reply = server.chat(&client, "qwen", false).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("cloud"));
}

/// A worker that says hello, takes a job and then goes silent: after the heartbeat timeout
/// it is offline and the job it held fails over.
#[tokio::test]
async fn a_silent_worker_goes_offline_and_its_job_fails_over() {
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["qwen"]).await;
    let (server, admin) =
        TestServer::with_admin_using(Options::with_args(&["--worker-heartbeat-timeout-secs", "1"])).await;
    let client = server.client_key(&admin).await;
    server.add_provider(&admin, "cloud", &cloud, CLOUD_KEY).await;
    // The operator deliberately puts this worker before the cloud for "qwen".
    let token = worker_token_allowing(&server, &admin, "mute", "gpu", &["qwen"]).await;
    let (ack, mut socket) = hand_driven_worker(&server, &token, json!({"type": "hello", "protocol": 1, "kind": "gpu", "name": "mute", "models": ["qwen"], "slots": 1, "version": "test"})).await;
    assert_eq!(ack["type"], "hello_ack");
    assert_eq!(ack["heartbeat_timeout_ms"], 1000);

    let reply = server.chat(&client, "qwen", false).await;
    reply.expect(200);
    assert_eq!(
        reply.header("x-auxot-tier"),
        Some("cloud"),
        "the job of a silent worker must fail over"
    );
    // It did get the job first.
    let got_job = match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.contains("\"type\":\"job\""),
        _ => false,
    };
    assert!(got_job);
    assert_eq!(status_of(&server, &admin, "mute").await, "offline");
}

#[tokio::test]
async fn a_client_that_disconnects_frees_the_slot_and_the_upstream_sees_the_cancel() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["gated"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 1).await;
    let response = server.open_stream(&client, "gated").await;
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    assert_eq!(worker_view(&server, &admin, "g1").await.unwrap()["slots_in_use"], 1);
    drop(body);
    let cancelled = eventually(Duration::from_secs(5), || async { gpu.streams_cancelled() == 1 }).await;
    assert!(cancelled, "the model server never saw the request closed");
    let freed = eventually(Duration::from_secs(5), || async {
        worker_view(&server, &admin, "g1").await.unwrap()["slots_in_use"] == 0
    })
    .await;
    assert!(freed, "the slot was not given back");
    // And the slot really works again.
    gpu.release_stream();
    server.chat(&client, "gated", false).await.expect(200);
}

#[tokio::test]
async fn a_client_that_disconnects_kills_the_cli_process() {
    let cli = FakeCli::new();
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::cli(&server, &admin, "c1", &cli, &["sonnet"], 1).await;
    cli.close_gate();
    let url = server.url.clone();
    let key = client.clone();
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
    });
    assert!(eventually(Duration::from_secs(10), || async { !cli.running().is_empty() }).await);
    let pid = cli.running()[0];
    request.abort();
    let killed = eventually(Duration::from_secs(5), || async { !alive(pid) }).await;
    assert!(killed, "the CLI process {pid} outlived its cancelled job");
    let freed = eventually(Duration::from_secs(5), || async {
        worker_view(&server, &admin, "c1").await.unwrap()["slots_in_use"] == 0
    })
    .await;
    assert!(freed);
    // The prompt reached the CLI as the documented transcript.
    assert!(cli.runs()[0].contains("hi"), "{:?}", cli.runs());
}

#[tokio::test]
async fn a_hundred_concurrent_requests_never_exceed_the_slots_and_leave_none_taken() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let cli = FakeCli::new();
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _g = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 3).await;
    let _c = TestWorker::cli(&server, &admin, "c1", &cli, &["qwen"], 2).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(200).build().unwrap();
    let mut requests = Vec::new();
    for i in 0..100 {
        let http = http.clone();
        let url = format!("{}/v1/chat/completions", server.url);
        let key = client.clone();
        requests.push(tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": "qwen", "stream": i % 2 == 0, "messages": [{"role": "user", "content": format!("n{i}")}]}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let tier = response.headers().get("x-auxot-tier").map(|v| v.to_str().unwrap().to_string());
            let text = response.text().await.unwrap();
            (status, tier, text)
        }));
    }
    let mut by_tier = std::collections::HashMap::new();
    for request in requests {
        let (status, tier, text) = request.await.unwrap();
        assert_eq!(status, 200, "{text}");
        *by_tier.entry(tier.unwrap_or_default()).or_insert(0) += 1;
    }
    assert!(
        gpu.max_in_flight() <= 3,
        "the GPU worker ran {} jobs at once on 3 slots",
        gpu.max_in_flight()
    );
    assert_eq!(by_tier.values().sum::<i32>(), 100);
    for name in ["g1", "c1"] {
        let view = worker_view(&server, &admin, name).await.unwrap();
        assert_eq!(view["slots_in_use"], 0, "{name} leaked a slot: {view}");
    }
}

#[tokio::test]
async fn workers_fail_at_start_when_their_cli_or_model_server_is_missing() {
    let (server, admin) = TestServer::with_admin().await;
    let token = worker_token(&server, &admin, "w", "cli").await;
    let mut cli = TestWorker::spawn(
        &server.url,
        "w",
        &token,
        1,
        vec![
            "cli".into(),
            "--cli".into(),
            "claude".into(),
            "--command".into(),
            "/nonexistent/claude".into(),
        ],
        &[],
    );
    cli.fails_saying(Duration::from_secs(10), "/nonexistent/claude").await;

    let port = crate::support::free_port();
    let token = worker_token(&server, &admin, "g", "gpu").await;
    let mut gpu = TestWorker::spawn(
        &server.url,
        "g",
        &token,
        1,
        vec!["gpu".into(), "--upstream".into(), format!("http://127.0.0.1:{port}/v1")],
        &[],
    );
    gpu.fails_saying(Duration::from_secs(20), "cannot reach the model server")
        .await;
    assert!(worker_view(&server, &admin, "g").await.is_none());
}

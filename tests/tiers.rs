//! The tiered dispatcher through real workers: GPU → CLI → cloud, overflow, the queue,
//! failover, per-request and per-agent overrides, aliases.

use crate::support::worker::worker_view;
use crate::support::{eventually, FakeCli, FakeUpstream, TestServer, TestWorker};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;

const GPU_KEY: &str = "sk-local-model-server";
const CLOUD_KEY: &str = "sk-cloud-provider-key-0001";

struct Setup {
    server: TestServer,
    admin: String,
    client: String,
}

async fn setup() -> Setup {
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    Setup { server, admin, client }
}

impl Setup {
    async fn chat_with(&self, model: &str, stream: bool, headers: &[(&str, &str)]) -> crate::support::Reply {
        let mut request = self.server.chat_request(&self.client, model, stream);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.server.send(request).await
    }

    /// Starts a streaming request and returns once its first chunk arrived (its slot is held).
    async fn hold(&self, model: &str) -> reqwest::Response {
        let response = self.server.open_stream(&self.client, model).await;
        assert_eq!(response.status(), 200);
        response
    }

    async fn slots_in_use(&self, worker: &str) -> u64 {
        worker_view(&self.server, &self.admin, worker)
            .await
            .map_or(0, |w| w["slots_in_use"].as_u64().unwrap_or(0))
    }
}

#[tokio::test]
async fn an_idle_gpu_worker_takes_the_request() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let s = setup().await;
    let _worker = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 2).await;

    let reply = s.chat_with("qwen", false, &[]).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("gpu"));
    assert_eq!(reply.header("x-auxot-route"), Some("g1"));
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from gpu-box");
    assert_eq!(body["usage"]["total_tokens"], 9, "usage from the model server's answer");
    let seen = gpu.chat_requests().pop().unwrap().json();
    assert_eq!(seen["model"], "qwen");
    assert_eq!(
        seen["stream"], false,
        "a JSON answer is asked whole (its usage is exact)"
    );
    assert!(seen.get("stream_options").is_none(), "{seen}");
    assert_eq!(seen["messages"][0]["content"], "Say hi");

    let reply = s.chat_with("qwen", true, &[]).await;
    reply.expect(200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.header("x-auxot-tier"), Some("gpu"));
    assert!(reply.text.contains("\"content\":\"Hello \""), "{}", reply.text);
    assert!(reply.text.trim_end().ends_with("data: [DONE]"), "{}", reply.text);
    let seen = gpu.chat_requests().pop().unwrap().json();
    assert_eq!(seen["stream"], true);
    assert_eq!(seen["stream_options"]["include_usage"], true, "usage is asked for");
    assert!(
        !reply.text.contains("\"choices\":[]"),
        "a usage-only chunk reached a client that did not ask: {}",
        reply.text
    );

    let view = worker_view(&s.server, &s.admin, "g1").await.unwrap();
    assert_eq!(view["kind"], "gpu");
    assert_eq!(view["status"], "idle");
    assert_eq!(view["slots_total"], 2);
    assert_eq!(view["slots_in_use"], 0);
    assert_eq!(view["jobs_served"], 2);
    assert_eq!(view["models"], json!(["qwen"]));

    let models = s.server.call("GET", "/v1/models", Some(&s.client), None).await.json();
    let listed: Vec<(String, String)> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["owned_by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(listed.contains(&("qwen".into(), "g1".into())), "{listed:?}");
    assert!(listed.iter().any(|(id, _)| id == "auto"), "{listed:?}");
}

#[tokio::test]
async fn overflows_to_cli_when_gpu_is_busy_and_to_cloud_when_cli_is_full() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["gated"]).await;
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["gated"]).await;
    let cli = FakeCli::new();
    let s = setup().await;
    s.server.add_provider(&s.admin, "cloud", &cloud, CLOUD_KEY).await;
    let _g = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 1).await;
    let _c = TestWorker::cli(&s.server, &s.admin, "c1", &cli, &["gated"], 1).await;

    // 1. The GPU worker's only slot is taken by a stream that waits.
    let held = s.hold("gated").await;
    assert_eq!(held.headers()["x-auxot-tier"], "gpu");
    // 2. The next request goes to the CLI worker, which is held at its gate.
    cli.close_gate();
    let url = s.server.url.clone();
    let client_key = s.client.clone();
    let second = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(client_key)
            .json(&json!({"model": "gated", "messages": [{"role": "user", "content": "second"}]}))
            .send()
            .await
            .unwrap()
    });
    assert!(
        eventually(Duration::from_secs(10), || async { s.slots_in_use("c1").await == 1 }).await,
        "the CLI worker never took the overflow"
    );
    // 3. GPU busy, CLI full: the cloud takes the third.
    let third = s.chat_with("gated", false, &[]).await;
    third.expect(200);
    assert_eq!(third.header("x-auxot-tier"), Some("cloud"));
    assert_eq!(third.header("x-auxot-route"), Some("cloud"));

    cli.open_gate();
    let second = second.await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-auxot-tier"], "cli");
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from cli");
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    gpu.release_stream();
    drop(held);
}

#[tokio::test]
async fn with_nothing_free_and_no_cloud_a_request_waits_for_the_first_free_slot() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["gated", "qwen"]).await;
    let s = setup().await;
    let _g = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 1).await;
    let held = s.hold("gated").await;

    let url = s.server.url.clone();
    let client_key = s.client.clone();
    let waiting = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(client_key)
            .json(&json!({"model": "qwen", "messages": [{"role": "user", "content": "queued"}]}))
            .send()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered although no slot was free");

    // Finish the held stream: its slot frees and the queued request takes it.
    gpu.release_stream();
    let rest = held.text().await.unwrap();
    assert!(rest.contains("[DONE]"));
    let served = waiting.await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["x-auxot-route"], "g1");
    assert_eq!(s.slots_in_use("g1").await, 0);
}

#[tokio::test]
async fn a_queue_timeout_is_503_naming_each_tier_and_why() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["gated", "qwen"]).await;
    let s = setup().await;
    let _g = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 1).await;
    let held = s.hold("gated").await;
    let reply = s.chat_with("qwen", false, &[("x-auxot-wait-ms", "200")]).await;
    reply.expect(503);
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "no_capacity");
    let message = error["message"].as_str().unwrap();
    for fragment in [
        "gpu: 1 worker(s) serve qwen but all 1/1 slots are busy",
        "cli: no cli worker serves qwen",
        "cloud: no enabled provider serves qwen",
    ] {
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
    // The default comes from the settings.
    s.server
        .put_settings(&s.admin, json!({"routing": {"queue_timeout_ms": 150}}))
        .await;
    s.chat_with("qwen", false, &[]).await.expect(503);
    gpu.release_stream();
    drop(held);
}

#[tokio::test]
async fn a_gpu_upstream_failing_before_the_first_byte_is_served_by_the_next_tier() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let cli = FakeCli::new();
    let s = setup().await;
    let _g = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 1).await;
    let _c = TestWorker::cli(&s.server, &s.admin, "c1", &cli, &["qwen"], 1).await;
    gpu.fail_chats_with(Some(500));
    for stream in [false, true] {
        let reply = s.chat_with("qwen", stream, &[]).await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-tier"), Some("cli"), "{}", reply.text);
        assert!(reply.text.contains("Hello from cli"));
    }
    assert_eq!(s.slots_in_use("g1").await, 0, "the failed job gave its slot back");
    // A client error from the model server is the answer, not a reason to fail over.
    gpu.fail_chats_with(Some(400));
    let reply = s.chat_with("qwen", false, &[]).await;
    reply.expect(400);
    assert_eq!(cli.runs().len(), 2);
}

#[tokio::test]
async fn request_overrides_beat_agent_overrides_beat_the_default() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["qwen"]).await;
    let cli = FakeCli::new();
    let s = setup().await;
    s.server.add_provider(&s.admin, "cloud", &cloud, CLOUD_KEY).await;
    let _g = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 2).await;
    let _c = TestWorker::cli(&s.server, &s.admin, "c1", &cli, &["qwen"], 2).await;

    let tier = |reply: &crate::support::Reply| reply.header("x-auxot-tier").unwrap_or_default().to_string();
    assert_eq!(tier(s.chat_with("qwen", false, &[]).await.expect(200)), "gpu");
    assert_eq!(
        tier(
            s.chat_with("qwen", false, &[("x-auxot-tier", "cloud")])
                .await
                .expect(200)
        ),
        "cloud"
    );
    assert_eq!(
        tier(
            s.chat_with("qwen", false, &[("x-auxot-tier", "cli,cloud")])
                .await
                .expect(200)
        ),
        "cli"
    );
    assert_eq!(
        tier(
            s.chat_with("qwen", false, &[("x-auxot-provider", "cloud")])
                .await
                .expect(200)
        ),
        "cloud"
    );
    s.chat_with("qwen", false, &[("x-auxot-tier", "tpu")]).await.expect(400);
    s.chat_with("qwen", false, &[("x-auxot-tier", "gpu,gpu")])
        .await
        .expect(400);
    s.chat_with("qwen", false, &[("x-auxot-wait-ms", "soon")])
        .await
        .expect(400);

    // The default order is a setting.
    s.server
        .put_settings(&s.admin, json!({"routing": {"default_order": ["cloud", "gpu"]}}))
        .await;
    assert_eq!(tier(s.chat_with("qwen", false, &[]).await.expect(200)), "cloud");
    let settings = s.server.call("GET", "/api/settings", Some(&s.admin), None).await.json();
    assert_eq!(settings["routing"]["default_order"], json!(["cloud", "gpu"]));
    s.server
        .call(
            "PUT",
            "/api/settings",
            Some(&s.admin),
            Some(json!({"routing": {"default_order": ["gpu", "bogus"]}})),
        )
        .await
        .expect(400);
    s.server
        .put_settings(&s.admin, json!({"routing": {"default_order": ["gpu", "cli", "cloud"]}}))
        .await;

    // An agent brings its own order and system prompt.
    s.server
        .call(
            "POST",
            "/api/agents",
            Some(&s.admin),
            Some(json!({"name": "reviewer", "system_prompt": "You review code.", "model": "qwen", "tier_order": ["cloud"]})),
        )
        .await
        .expect(201);
    let reply = s.chat_with("agent:reviewer", false, &[]).await;
    reply.expect(200);
    assert_eq!(tier(&reply), "cloud");
    let seen = cloud.chat_requests().pop().unwrap().json();
    assert_eq!(seen["model"], "qwen");
    assert_eq!(
        seen["messages"][0],
        json!({"role": "system", "content": "You review code."})
    );
    assert_eq!(seen["messages"][1]["content"], "Say hi");
    // The request's own header still wins over the agent's order.
    let reply = s.chat_with("agent:reviewer", false, &[("x-auxot-tier", "gpu")]).await;
    assert_eq!(tier(reply.expect(200)), "gpu");
    assert_eq!(
        gpu.chat_requests().pop().unwrap().json()["messages"][0]["content"],
        "You review code."
    );
    s.chat_with("agent:nobody", false, &[]).await.expect(404);

    let models = s.server.call("GET", "/v1/models", Some(&s.client), None).await.text;
    assert!(models.contains("\"agent:reviewer\""), "{models}");
    let agents = s.server.call("GET", "/api/agents", Some(&s.admin), None).await.json();
    assert_eq!(agents["data"][0]["name"], "reviewer");
    s.server
        .call(
            "PUT",
            "/api/agents/reviewer",
            Some(&s.admin),
            Some(json!({"model": "qwen", "tier_order": ["cli"]})),
        )
        .await
        .expect(200);
    assert_eq!(tier(s.chat_with("agent:reviewer", false, &[]).await.expect(200)), "cli");
    s.server
        .call(
            "POST",
            "/api/agents",
            Some(&s.admin),
            Some(json!({"name": "reviewer", "model": "qwen"})),
        )
        .await
        .expect(409);
    s.server
        .call(
            "POST",
            "/api/agents",
            Some(&s.admin),
            Some(json!({"name": "x", "model": "qwen", "tier_order": ["tpu"]})),
        )
        .await
        .expect(400);
    s.server
        .call("DELETE", "/api/agents/reviewer", Some(&s.admin), None)
        .await
        .expect(204);
    s.chat_with("agent:reviewer", false, &[]).await.expect(404);
}

#[tokio::test]
async fn an_alias_maps_one_name_to_a_model_per_tier() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen-coder"]).await;
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["gpt-4o-mini"]).await;
    let cli = FakeCli::new();
    let s = setup().await;
    s.server.add_provider(&s.admin, "openai", &cloud, CLOUD_KEY).await;
    let _g = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 1).await;
    let _c = TestWorker::cli(&s.server, &s.admin, "c1", &cli, &["sonnet"], 1).await;

    let created = s
        .server
        .call(
            "POST",
            "/api/aliases",
            Some(&s.admin),
            Some(json!({"name": "coder", "gpu": "qwen-coder", "cli": "sonnet", "cloud": "openai/gpt-4o-mini"})),
        )
        .await;
    created.expect(201);
    let reply = s.chat_with("coder", false, &[]).await;
    assert_eq!(reply.expect(200).header("x-auxot-tier"), Some("gpu"));
    assert_eq!(gpu.chat_requests().pop().unwrap().json()["model"], "qwen-coder");
    let reply = s.chat_with("coder", false, &[("x-auxot-tier", "cli")]).await;
    assert_eq!(reply.expect(200).header("x-auxot-tier"), Some("cli"));
    let reply = s.chat_with("coder", false, &[("x-auxot-tier", "cloud")]).await;
    assert_eq!(reply.expect(200).header("x-auxot-route"), Some("openai"));
    assert_eq!(cloud.chat_requests().pop().unwrap().json()["model"], "gpt-4o-mini");

    // `auto` exists by default and takes whatever the worker tiers serve; never a paid
    // cloud model unless one is set.
    let aliases = s.server.call("GET", "/api/aliases", Some(&s.admin), None).await.json();
    assert!(aliases["data"].as_array().unwrap().iter().any(|a| a["name"] == "auto"));
    let reply = s.chat_with("auto", false, &[]).await;
    assert_eq!(reply.expect(200).header("x-auxot-tier"), Some("gpu"));
    s.chat_with("auto", false, &[("x-auxot-tier", "cloud")])
        .await
        .expect(404);
    s.server
        .call(
            "PUT",
            "/api/aliases/auto",
            Some(&s.admin),
            Some(json!({"cloud": "gpt-4o-mini"})),
        )
        .await
        .expect(200);
    let reply = s.chat_with("auto", false, &[("x-auxot-tier", "cloud")]).await;
    assert_eq!(reply.expect(200).header("x-auxot-tier"), Some("cloud"));

    s.server
        .call("DELETE", "/api/aliases/auto", Some(&s.admin), None)
        .await
        .expect(400);
    s.server
        .call("POST", "/api/aliases", Some(&s.admin), Some(json!({"name": "coder"})))
        .await
        .expect(409);
    s.server
        .call(
            "POST",
            "/api/aliases",
            Some(&s.admin),
            Some(json!({"name": "bad/name"})),
        )
        .await
        .expect(400);
    s.server
        .call("DELETE", "/api/aliases/coder", Some(&s.admin), None)
        .await
        .expect(204);
    s.chat_with("coder", false, &[]).await.expect(404);
}

#[tokio::test]
async fn a_stream_from_a_worker_passes_chunks_as_they_come_and_usage_only_on_request() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["gated", "qwen"]).await;
    let s = setup().await;
    let _g = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 1).await;
    let response = s.hold("gated").await;
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    gpu.release_stream();
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");

    let reply = s
        .server
        .send(s.server.post_as(
            "/v1/chat/completions",
            &s.client,
            &json!({"model": "qwen", "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "hi"}]}),
        ))
        .await;
    reply.expect(200);
    assert!(reply.text.contains("\"prompt_tokens\":5"), "{}", reply.text);
}

//! The dispatcher under load and under faults: no head-of-line blocking, no serialised
//! queue, clocks on every phase, failover until the first content, status hygiene and
//! provider health — through the real binary.

use crate::support::worker::worker_view;
use crate::support::{FakeCli, FakeUpstream, TestServer, TestWorker};
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

const GPU_KEY: &str = "sk-local-model-server";
const CLOUD_KEY: &str = "sk-cloud-provider-key-0001";
const OTHER_KEY: &str = "sk-cloud-provider-key-0002";

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
    fn request(&self, path: &str, body: serde_json::Value) -> reqwest::RequestBuilder {
        self.server
            .http
            .post(format!("{}{path}", self.server.url))
            .bearer_auth(&self.client)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
    }

    fn chat(&self, model: &str, stream: bool) -> reqwest::RequestBuilder {
        self.request(
            "/v1/chat/completions",
            json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hi"}]}),
        )
    }

    fn message(&self, model: &str, stream: bool) -> reqwest::RequestBuilder {
        self.request(
            "/v1/messages",
            json!({"model": model, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "Say hi"}]}),
        )
    }

    async fn set_timeouts(&self, tier: &str, phases: serde_json::Value) {
        self.server
            .put_settings(&self.admin, json!({"routing": {"timeouts": {tier: phases}}}))
            .await;
    }
}

#[tokio::test]
async fn a_request_the_cloud_can_take_is_answered_while_a_gpu_only_request_waits() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["gated"]).await;
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["gpt-4o"]).await;
    let s = setup().await;
    let _worker = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 1).await;
    s.server.add_provider(&s.admin, "main", &cloud, CLOUD_KEY).await;

    let held = s.chat("gated", true).send().await.unwrap();
    assert_eq!(held.status(), 200);
    let queued = tokio::spawn(s.chat("gated", false).send());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let reply = s.server.send(s.chat("gpt-4o", false)).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("cloud"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the cloud request waited behind the GPU queue: {:?}",
        started.elapsed()
    );

    gpu.release_stream();
    gpu.release_stream();
    drop(held);
    let queued = queued.await.unwrap().unwrap();
    assert_eq!(
        queued.status(),
        200,
        "the queued GPU request is served once the slot frees"
    );
}

#[tokio::test]
async fn thirty_requests_on_three_slots_run_three_at_a_time() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["sleep-400"]).await;
    let s = setup().await;
    let _worker = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 3).await;
    // Ideal: 10 rounds of 0.4 s. Serialising would take 12 s and more.
    let ideal = Duration::from_millis(4000);
    let started = Instant::now();
    let requests = (0..30).map(|i| {
        let request = s.chat("sleep-400", i % 2 == 0);
        async move { request.send().await.map(|r| r.status().as_u16()) }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let took = started.elapsed();
    for status in &statuses {
        assert_eq!(status.as_ref().ok(), Some(&200), "{statuses:?}");
    }
    assert!(
        took < ideal * 2,
        "30 requests on 3 slots took {took:?} (ideal {ideal:?})"
    );
    assert!(
        gpu.max_in_flight() <= 3,
        "more jobs than slots: {}",
        gpu.max_in_flight()
    );
}

#[tokio::test]
async fn an_error_after_the_role_chunk_fails_over_before_the_client_sees_anything() {
    let bad = FakeUpstream::openai("bad", &[CLOUD_KEY], &["quota-after-role"]).await;
    let good = FakeUpstream::openai("good", &[OTHER_KEY], &["quota-after-role"]).await;
    let s = setup().await;

    // Only the bad provider: the error becomes a clean 502, not a broken 200 stream.
    let first = s.server.add_provider(&s.admin, "first", &bad, CLOUD_KEY).await;
    let reply = s.server.send(s.chat("quota-after-role", true)).await;
    reply.expect(502);
    assert!(reply.text.contains("quota"), "{}", reply.text);

    s.server.patch_provider(&s.admin, &first, json!({"priority": 1})).await;
    s.server.add_provider(&s.admin, "second", &good, OTHER_KEY).await;
    for (dialect, request) in [
        ("openai", s.chat("quota-after-role", true)),
        ("anthropic", s.message("quota-after-role", true)),
    ] {
        let before = bad.chat_requests().len();
        let reply = s.server.send(request).await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-route"), Some("second"), "{dialect}");
        assert!(reply.text.contains("Hello"), "{dialect}: {}", reply.text);
        assert!(!reply.text.contains("exceeded"), "{dialect}: {}", reply.text);
        assert!(
            bad.chat_requests().len() > before,
            "{dialect}: the bad provider was tried first"
        );
    }
}

#[tokio::test]
async fn an_upstream_redirect_is_a_502_not_passed_through() {
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["redirect"]).await;
    let s = setup().await;
    s.server.add_provider(&s.admin, "main", &cloud, CLOUD_KEY).await;
    let reply = s.server.send(s.chat("redirect", false)).await;
    reply.expect(502);
    assert!(reply.header("location").is_none());
    assert!(
        reply.json()["error"]["message"].as_str().unwrap().contains("302"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn a_cloud_stream_that_stalls_after_its_first_chunk_ends_with_an_error_event_in_each_dialect() {
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["stall-after-first"]).await;
    let s = setup().await;
    s.server.add_provider(&s.admin, "main", &cloud, CLOUD_KEY).await;
    s.set_timeouts("cloud", json!({"idle_ms": 500})).await;

    for (dialect, request) in [
        ("openai", s.chat("stall-after-first", true)),
        ("anthropic", s.message("stall-after-first", true)),
    ] {
        let started = Instant::now();
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{dialect}");
        let mut body = response.bytes_stream();
        let mut text = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(chunk) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            }
        })
        .await;
        assert!(read.is_ok(), "{dialect}: the stalled stream never ended: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{dialect}: {:?}",
            started.elapsed()
        );
        assert!(
            text.contains("Hel"),
            "{dialect}: the content before the stall arrived: {text}"
        );
        assert!(
            text.contains("idle"),
            "{dialect}: an error event names the idle timeout: {text}"
        );
        if dialect == "anthropic" {
            assert!(text.contains("event: error"), "{text}");
        } else {
            assert!(text.contains("\"error\""), "{text}");
        }
    }
}

#[tokio::test]
async fn a_stalled_non_streamed_request_is_a_504() {
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["sleep-5000"]).await;
    let s = setup().await;
    s.server.add_provider(&s.admin, "main", &cloud, CLOUD_KEY).await;
    s.set_timeouts("cloud", json!({"headers_ms": 400})).await;
    let started = Instant::now();
    let reply = s.server.send(s.chat("sleep-5000", false)).await;
    reply.expect(504);
    assert_eq!(reply.json()["error"]["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_gpu_stream_that_stalls_ends_with_an_error_event_and_frees_its_slot() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["stall-after-first"]).await;
    let s = setup().await;
    let _worker = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 1).await;
    s.set_timeouts("gpu", json!({"idle_ms": 500})).await;
    let reply = s.server.send(s.chat("stall-after-first", true)).await;
    reply.expect(200);
    assert!(reply.text.contains("Hel"), "{}", reply.text);
    assert!(reply.text.contains("idle"), "{}", reply.text);
    let freed = crate::support::eventually(Duration::from_secs(5), || async {
        crate::support::worker::worker_view(&s.server, &s.admin, "g1")
            .await
            .is_some_and(|w| w["slots_in_use"] == 0)
    })
    .await;
    assert!(freed, "the stalled job's slot was not freed");
}

#[tokio::test]
async fn timeouts_are_settings_with_defaults_and_bad_values_are_refused() {
    let s = setup().await;
    let settings = s.server.call("GET", "/api/settings", Some(&s.admin), None).await.json();
    let cloud = &settings["routing"]["timeouts"]["cloud"];
    assert_eq!(cloud["idle_ms"], 60_000, "{settings}");
    assert!(cloud["total_ms"].as_u64().unwrap() >= cloud["first_content_ms"].as_u64().unwrap());
    let reply = s
        .server
        .call(
            "PUT",
            "/api/settings",
            Some(&s.admin),
            Some(json!({"routing": {"timeouts": {"gpu": {"idle_ms": 5}}}})),
        )
        .await;
    reply.expect(400);
    assert!(reply.text.contains("idle_ms"), "{}", reply.text);
}

#[tokio::test]
async fn a_failing_provider_cools_down_and_is_skipped_for_a_healthy_one() {
    let failing = FakeUpstream::openai("failing", &[CLOUD_KEY], &["gpt-4o"]).await;
    let healthy = FakeUpstream::openai("healthy", &[OTHER_KEY], &["gpt-4o"]).await;
    let s = setup().await;
    let first = s.server.add_provider(&s.admin, "first", &failing, CLOUD_KEY).await;
    let id = first["id"].as_str().unwrap().to_string();
    s.server
        .call(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(&s.admin),
            Some(json!({"priority": 1})),
        )
        .await
        .expect(200);
    s.server.add_provider(&s.admin, "second", &healthy, OTHER_KEY).await;
    failing.fail_chats_with(Some(503));
    for _ in 0..3 {
        let reply = s.server.send(s.chat("gpt-4o", false)).await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-route"), Some("second"));
    }
    let tried = failing.chat_requests().len();
    assert_eq!(tried, 3);
    let reply = s.server.send(s.chat("gpt-4o", false)).await;
    reply.expect(200);
    assert_eq!(failing.chat_requests().len(), tried, "a cooling provider was called");
    let view = s.server.provider_view(&s.admin, &id).await;
    assert!(view["cooldown_until"].is_string(), "{view}");
    assert!(view["cooldown_reason"].as_str().unwrap().contains("503"), "{view}");
    let metrics = s.server.call("GET", "/metrics", Some(&s.admin), None).await;
    assert!(metrics.text.contains("auxot_targets_cooling 1"), "{}", metrics.text);
}

#[tokio::test]
async fn a_20_mib_event_fails_that_job_and_the_worker_stays_connected() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["huge-event", "qwen"]).await;
    let s = setup().await;
    let _worker = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 2).await;
    let before = worker_view(&s.server, &s.admin, "g1").await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), s.server.send(s.chat("huge-event", true))).await;
    let Ok(reply) = reply else {
        panic!("no answer; worker:\n{}\nserver:\n{}", _worker.logs(), s.server.logs());
    };
    reply.expect(502);
    assert!(reply.text.contains("MiB"), "{}", reply.text);
    let reply = s.server.send(s.chat("qwen", false)).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-route"), Some("g1"));
    let after = worker_view(&s.server, &s.admin, "g1").await.unwrap();
    assert_eq!(
        before["id"], after["id"],
        "the worker reconnected: the oversized event dropped it"
    );
    assert_eq!(after["status"], "idle");
}

#[tokio::test]
async fn a_cli_worker_over_its_usage_limit_is_routed_around_until_it_resets() {
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["claude-code"]).await;
    let s = setup().await;
    let cli = FakeCli::new();
    let _worker = TestWorker::cli(&s.server, &s.admin, "c1", &cli, &["claude-code"], 1).await;
    s.server.add_provider(&s.admin, "main", &cloud, CLOUD_KEY).await;
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    cli.set_limited(reset as i64);

    let reply = s.server.send(s.chat("claude-code", false)).await;
    reply.expect(200);
    assert_eq!(
        reply.header("x-auxot-tier"),
        Some("cloud"),
        "the job failed over to the next tier"
    );
    assert_eq!(cli.runs().len(), 1);
    let view = worker_view(&s.server, &s.admin, "c1").await.unwrap();
    assert!(view["limited_until"].is_string(), "{view}");

    let reply = s.server.send(s.chat("claude-code", false)).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("cloud"));
    assert_eq!(cli.runs().len(), 1, "a limited CLI worker got another job");
}

#[tokio::test]
async fn broken_cloud_sse_ends_with_an_error_event_and_an_error_usage_row() {
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["garbage-after-first", "no-done"]).await;
    let s = setup().await;
    s.server.add_provider(&s.admin, "main", &cloud, CLOUD_KEY).await;
    for model in ["garbage-after-first", "no-done"] {
        let reply = s.server.send(s.chat(model, true)).await;
        reply.expect(200);
        assert!(reply.text.contains("Hel"), "{model}: {}", reply.text);
        assert!(
            !reply.text.contains("data: {\"choices\": [trunc"),
            "{model}: garbage reached the client: {}",
            reply.text
        );
        assert!(reply.text.contains("upstream_stream_error"), "{model}: {}", reply.text);
    }
    let logged = crate::support::eventually(Duration::from_secs(5), || async {
        let metrics = s.server.call("GET", "/metrics", Some(&s.admin), None).await.text;
        let errors: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("auxot_requests_total{") && l.contains("outcome=\"error"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let ok = metrics
            .lines()
            .any(|l| l.starts_with("auxot_requests_total{") && l.contains("outcome=\"ok\""));
        errors >= 2.0 && !ok
    })
    .await;
    let metrics = s.server.call("GET", "/metrics", Some(&s.admin), None).await.text;
    assert!(logged, "the broken streams were not counted as errors:\n{metrics}");
}

#[tokio::test]
async fn a_gpu_stream_that_stalls_before_any_content_fails_over_to_the_cloud() {
    let gpu = FakeUpstream::openai("stall-box", &[GPU_KEY], &["stall-before-content"]).await;
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["stall-before-content"]).await;
    let s = setup().await;
    let _worker = TestWorker::gpu(&s.server, &s.admin, "g1", &gpu, GPU_KEY, 1).await;
    s.server.add_provider(&s.admin, "main", &cloud, CLOUD_KEY).await;
    s.set_timeouts("gpu", json!({"first_content_ms": 500})).await;
    for (dialect, request) in [
        ("openai non-streamed", s.chat("stall-before-content", false)),
        ("openai", s.chat("stall-before-content", true)),
        ("anthropic", s.message("stall-before-content", true)),
    ] {
        let started = Instant::now();
        let reply = s.server.send(request).await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-route"), Some("main"), "{dialect}");
        // Streamed, the words arrive in separate events.
        assert!(reply.text.contains("cloud"), "{dialect}: {}", reply.text);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{dialect}: {:?}",
            started.elapsed()
        );
        let freed = crate::support::eventually(Duration::from_secs(5), || async {
            worker_view(&s.server, &s.admin, "g1")
                .await
                .is_some_and(|w| w["slots_in_use"] == 0)
        })
        .await;
        assert!(freed, "{dialect}: the stalled job's slot was not freed");
    }
}

#[tokio::test]
async fn an_anthropic_provider_overloaded_after_message_start_fails_over_before_the_client_sees_anything() {
    let bad = FakeUpstream::anthropic("bad", &[CLOUD_KEY], &["overloaded-after-start"]).await;
    let good = FakeUpstream::anthropic("good", &[OTHER_KEY], &["overloaded-after-start"]).await;
    let s = setup().await;
    let first = s.server.add_provider(&s.admin, "first", &bad, CLOUD_KEY).await;

    // Alone, the overloaded provider is a clean error status, not a broken 200 stream.
    let reply = s.server.send(s.message("overloaded-after-start", true)).await;
    assert!(reply.status >= 500, "{} {}", reply.status, reply.text);
    assert!(reply.text.contains("Overloaded"), "{}", reply.text);
    assert!(!reply.text.contains("message_start"), "{}", reply.text);

    s.server.patch_provider(&s.admin, &first, json!({"priority": 1})).await;
    s.server.add_provider(&s.admin, "second", &good, OTHER_KEY).await;
    for (dialect, request) in [
        ("anthropic", s.message("overloaded-after-start", true)),
        ("openai", s.chat("overloaded-after-start", true)),
    ] {
        let reply = s.server.send(request).await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-route"), Some("second"), "{dialect}");
        assert!(reply.text.contains("good"), "{dialect}: {}", reply.text);
        assert!(!reply.text.contains("Overloaded"), "{dialect}: {}", reply.text);
        assert_eq!(
            reply.text.matches("event: message_start").count(),
            usize::from(dialect == "anthropic"),
            "{dialect}: exactly one opening reaches the client: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn a_cloud_provider_that_stops_answering_connects_fails_over_within_the_connect_timeout() {
    let behind = FakeUpstream::openai("first", &[CLOUD_KEY], &["gpt-4o"]).await;
    let proxy = crate::support::blackhole::Proxy::start(&behind.base_url()).await;
    let healthy = FakeUpstream::openai("healthy", &[OTHER_KEY], &["gpt-4o"]).await;
    let s = setup().await;
    let first = s
        .server
        .call(
            "POST",
            "/api/providers",
            Some(&s.admin),
            Some(json!({"name": "first", "type": "openai", "base_url": proxy.base_url(), "api_key": CLOUD_KEY})),
        )
        .await;
    first.expect(201);
    s.server
        .call(
            "PATCH",
            &format!("/api/providers/{}", first.json()["id"].as_str().unwrap()),
            Some(&s.admin),
            Some(json!({"priority": 1})),
        )
        .await
        .expect(200);
    s.server.add_provider(&s.admin, "second", &healthy, OTHER_KEY).await;
    let reply = s.server.send(s.chat("gpt-4o", false)).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-route"), Some("first"));

    s.set_timeouts("cloud", json!({"connect_ms": 300})).await;
    proxy.stop_answering();
    let started = Instant::now();
    let reply = s.server.send(s.chat("gpt-4o", false)).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-route"), Some("second"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the connect was not cut at 300 ms: {:?}",
        started.elapsed()
    );
    let settings = s.server.call("GET", "/api/settings", Some(&s.admin), None).await.json();
    assert_eq!(
        settings["routing"]["timeouts"]["cloud"]["connect_ms"], 300,
        "{settings}"
    );
    assert_eq!(
        settings["routing"]["timeouts"]["gpu"]["connect_ms"], 10_000,
        "{settings}"
    );
}

#[tokio::test]
async fn a_gpu_worker_whose_model_server_stops_answering_connects_fails_over_within_the_gpu_connect_timeout() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let proxy = crate::support::blackhole::Proxy::start(&gpu.base_url()).await;
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["qwen"]).await;
    let s = setup().await;
    let token = crate::support::worker::worker_token_allowing(&s.server, &s.admin, "g1", "gpu", &["*"]).await;
    let args = vec![
        "gpu".to_string(),
        "--upstream".into(),
        proxy.base_url(),
        "--upstream-key".into(),
        GPU_KEY.into(),
    ];
    let _worker = TestWorker::launch(&s.server, &s.admin, "g1", &token, 1, args, &[]).await;
    s.server.add_provider(&s.admin, "main", &cloud, CLOUD_KEY).await;
    let reply = s.server.send(s.chat("qwen", false)).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("gpu"), "{:?}", reply.headers);

    // The change reaches the connected worker without a reconnect.
    s.set_timeouts("gpu", json!({"connect_ms": 300})).await;
    proxy.stop_answering();
    let started = Instant::now();
    let reply = s.server.send(s.chat("qwen", false)).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-route"), Some("main"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the worker's connect was not cut at 300 ms: {:?}",
        started.elapsed()
    );
}

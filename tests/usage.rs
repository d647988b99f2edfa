//! Usage, cost, limits and metrics.

use crate::support::{eventually, FakeUpstream, Options, TestServer, TestWorker};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "sk-usage-provider-key-0001";
const GPU_KEY: &str = "sk-local-model-server";
const PROMPT: &str = "PROMPT-TEXT-THAT-MUST-NOT-BE-STORED";

async fn usage(server: &TestServer, admin: &str, query: &str) -> Value {
    let reply = server
        .call("GET", &format!("/api/usage?{query}"), Some(admin), None)
        .await;
    reply.expect(200);
    reply.json()
}

/// Waits until the batched writer has stored `n` rows in total.
pub(crate) async fn wait_rows(server: &TestServer, admin: &str, n: u64) -> Value {
    let ok = eventually(Duration::from_secs(10), || async {
        usage(server, admin, "group_by=tier").await["totals"]["requests"].as_u64() == Some(n)
    })
    .await;
    let last = usage(server, admin, "group_by=tier").await;
    assert!(ok, "expected {n} rows, have {last}");
    last
}

fn group<'a>(body: &'a Value, key: &str) -> &'a Value {
    body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("no group {key} in {body}"))
}

#[tokio::test]
async fn every_request_leaves_one_row_with_tokens_and_never_its_text() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o", "fail-500", "gated"]).await;
    let (mut server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    let ask = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]});
    server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&client),
            Some(ask("gpt-4o", false)),
        )
        .await
        .expect(200);
    // Streamed, and the client did not ask for usage: auxot asks the upstream anyway and
    // hides the usage chunk from the client.
    let streamed = server
        .call("POST", "/v1/chat/completions", Some(&client), Some(ask("gpt-4o", true)))
        .await;
    streamed.expect(200);
    assert!(!streamed.text.contains("\"choices\":[]"), "{}", streamed.text);
    assert_eq!(
        fake.chat_requests().pop().unwrap().json()["stream_options"]["include_usage"],
        true
    );
    server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&client),
            Some(ask("fail-500", false)),
        )
        .await
        .expect(500);
    server
        .call("POST", "/v1/chat/completions", Some(&client), Some(ask("nope", false)))
        .await
        .expect(404);
    // Cancelled: the client goes away mid-stream.
    let response = server
        .post_as("/v1/chat/completions", &client, &ask("gated", true))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);

    let by_tier = wait_rows(&server, &admin, 5).await;
    let cloud = group(&by_tier, "cloud");
    assert_eq!(cloud["requests"], 4, "{by_tier}");
    assert_eq!(cloud["errors"], 1);
    assert_eq!(cloud["cancelled"], 1);
    assert!(cloud["input_tokens"].as_u64().unwrap() >= 10, "{cloud}");
    assert_eq!(
        group(&by_tier, "none")["errors"],
        1,
        "the unknown model never reached a tier"
    );
    let by_model = usage(&server, &admin, "group_by=model").await;
    let gpt = group(&by_model, "gpt-4o");
    assert_eq!(gpt["requests"], 2);
    assert_eq!(gpt["input_tokens"], 10, "5 + 5, from the body and from the stream");
    assert_eq!(gpt["output_tokens"], 8);
    // gpt-4o's seeded price: $2.50 in / $10 out per million tokens.
    let expected = (10.0 * 2.5 + 8.0 * 10.0) / 1e6;
    assert!((gpt["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12, "{gpt}");
    let by_key = usage(&server, &admin, "group_by=api_key").await;
    assert_eq!(by_key["groups"].as_array().unwrap().len(), 1);

    let csv = server
        .call("GET", "/api/usage?group_by=tier&format=csv", Some(&admin), None)
        .await;
    csv.expect(200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.text.starts_with("key,requests,errors,cancelled,"), "{}", csv.text);

    server.stop().await;
    assert!(!server.logs().contains(PROMPT), "the prompt reached the log");
    let db = std::fs::read(server.db_path()).unwrap();
    assert!(
        !db.windows(PROMPT.len()).any(|w| w == PROMPT.as_bytes()),
        "the prompt reached the database"
    );
    assert!(
        server.logs().contains("outcome=cancelled"),
        "one log line per request, with its outcome"
    );
}

#[tokio::test]
async fn worker_answers_show_what_the_cloud_would_have_cost() {
    let gpu = FakeUpstream::openai("gpu-box", &[GPU_KEY], &["qwen"]).await;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::gpu(&server, &admin, "g1", &gpu, GPU_KEY, 1).await;
    server
        .add_alias(
            &admin,
            json!({"name": "coder", "gpu": "qwen", "cloud": "openai/gpt-4o"}),
        )
        .await;
    server.chat(&client, "coder", true).await.expect(200);
    let body = wait_rows(&server, &admin, 1).await;
    let gpu_row = group(&body, "gpu");
    assert_eq!(gpu_row["cost_usd"], 0.0);
    let expected = (5.0 * 2.5 + 4.0 * 10.0) / 1e6;
    assert!(
        (gpu_row["saved_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{gpu_row}"
    );
    assert!((body["totals"]["saved_usd"].as_f64().unwrap() - expected).abs() < 1e-12);
}

#[tokio::test]
async fn limits_answer_429_with_retry_after_in_the_callers_dialect() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    let keys = server.call("GET", "/api/api-keys", Some(&admin), None).await.json();
    let id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "client")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Requests per minute.
    let set = server
        .call(
            "PATCH",
            &format!("/api/api-keys/{id}"),
            Some(&admin),
            Some(json!({"rpm_limit": 2})),
        )
        .await;
    set.expect(200);
    assert_eq!(set.json()["rpm_limit"], 2);
    server.chat(&client, "gpt-4o", false).await.expect(200);
    server.chat(&client, "gpt-4o", false).await.expect(200);
    let limited = server.chat(&client, "gpt-4o", false).await;
    limited.expect(429);
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let anthropic = server
        .send(
            server
                .http
                .post(format!("{}/v1/messages", server.url))
                .header("x-api-key", &client)
                .json(&json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    anthropic.expect(429);
    assert_eq!(anthropic.json()["error"]["type"], "rate_limit_error");
    assert!(anthropic.header("retry-after").is_some());

    // Monthly spend cap: make one request cost $9 and cap the key at $5.
    server
        .call(
            "PATCH",
            &format!("/api/api-keys/{id}"),
            Some(&admin),
            Some(json!({"rpm_limit": null, "monthly_spend_cap_usd": 5.0})),
        )
        .await
        .expect(200);
    server
        .call(
            "PUT",
            "/api/prices/gpt-4o",
            Some(&admin),
            Some(json!({"input_per_mtok": 1000000.0, "output_per_mtok": 1000000.0})),
        )
        .await
        .expect(200);
    server.chat(&client, "gpt-4o", false).await.expect(200);
    let capped = server.chat(&client, "gpt-4o", false).await;
    capped.expect(429);
    assert!(capped.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("spend cap"));
    let retry: u64 = capped.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 31 * 86_400, "{retry}");
    // Lifting the cap lets it through again.
    server
        .call(
            "PATCH",
            &format!("/api/api-keys/{id}"),
            Some(&admin),
            Some(json!({"monthly_spend_cap_usd": null})),
        )
        .await
        .expect(200);
    server.chat(&client, "gpt-4o", false).await.expect(200);
    for bad in [
        json!({"rpm_limit": 0}),
        json!({"monthly_spend_cap_usd": -1}),
        json!({"rpm": 5}),
    ] {
        server
            .call("PATCH", &format!("/api/api-keys/{id}"), Some(&admin), Some(bad))
            .await
            .expect(400);
    }
    server
        .call(
            "PATCH",
            "/api/api-keys/nope",
            Some(&admin),
            Some(json!({"rpm_limit": 5})),
        )
        .await
        .expect(404);
}

#[tokio::test]
async fn sigterm_flushes_the_rows_still_queued() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (mut server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    for _ in 0..3 {
        server.chat(&client, "gpt-4o", false).await.expect(200);
    }
    // Stop at once: the rows may still sit in the batch queue.
    server.stop().await;
    let again = server.relaunch(Options::default()).await.expect("restart");
    let body = usage(&again, &admin, "group_by=tier").await;
    assert_eq!(body["totals"]["requests"], 3, "{body}");
}

#[tokio::test]
async fn metrics_count_requests_for_admins_and_the_metrics_token() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) =
        TestServer::with_admin_using(Options::with_args(&["--metrics-token", "scrape-token-0123456789"])).await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    server.chat(&client, "gpt-4o", false).await.expect(200);
    server.chat(&client, "gpt-4o", true).await.expect(200);
    let text = server
        .call("GET", "/metrics", Some("scrape-token-0123456789"), None)
        .await;
    text.expect(200);
    assert!(text.header("content-type").unwrap().starts_with("text/plain"));
    for name in [
        "auxot_requests_total",
        "auxot_request_duration_seconds_bucket",
        "auxot_time_to_first_byte_seconds_bucket",
        "auxot_tokens_total",
        "auxot_cost_usd_total",
        "auxot_cloud_overflow_total",
        "auxot_queue_depth",
    ] {
        assert!(text.text.contains(name), "{name} missing:\n{}", text.text);
    }
    let line = text
        .text
        .lines()
        .find(|l| {
            l.starts_with("auxot_requests_total{") && l.contains("route=\"main\"") && l.contains("outcome=\"ok\"")
        })
        .unwrap_or_else(|| panic!("{}", text.text));
    assert!(line.ends_with(" 2"), "{line}");
    server.call("GET", "/metrics", Some(&admin), None).await.expect(200);
    server.call("GET", "/metrics", Some(&client), None).await.expect(403);
    server.call("GET", "/metrics", None, None).await.expect(401);
}

#[tokio::test]
async fn usage_queries_and_prices_are_validated() {
    let (server, admin) = TestServer::with_admin().await;
    for query in [
        "group_by=bogus",
        "from=yesterday",
        "from=2026-02-01&to=2026-01-01",
        "format=xml",
    ] {
        let reply = server
            .call("GET", &format!("/api/usage?{query}"), Some(&admin), None)
            .await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text);
    }
    usage(&server, &admin, "from=2026-01-01&to=2026-12-31T23:59:59Z&group_by=day").await;
    let prices = server.call("GET", "/api/prices", Some(&admin), None).await.json();
    assert!(prices["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["model"] == "claude-sonnet-4"));
    server
        .call(
            "PUT",
            "/api/prices/my-model",
            Some(&admin),
            Some(json!({"input_per_mtok": -1, "output_per_mtok": 1})),
        )
        .await
        .expect(400);
    server
        .call("DELETE", "/api/prices/gpt-4o", Some(&admin), None)
        .await
        .expect(204);
    server
        .call("DELETE", "/api/prices/gpt-4o", Some(&admin), None)
        .await
        .expect(404);
}

#[tokio::test]
async fn a_cli_subscription_price_shows_beside_its_workers_usage() {
    let cli = crate::support::FakeCli::new();
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let _worker = TestWorker::cli(&server, &admin, "c1", &cli, &["sonnet"], 1).await;
    let tokens = server
        .call("GET", "/api/worker-tokens", Some(&admin), None)
        .await
        .json();
    let id = tokens["data"][0]["id"].as_str().unwrap().to_string();
    let priced = server
        .call(
            "PATCH",
            &format!("/api/worker-tokens/{id}"),
            Some(&admin),
            Some(json!({"monthly_price_usd": 20.0})),
        )
        .await;
    priced.expect(200);
    assert_eq!(priced.json()["monthly_price_usd"], 20.0);
    server
        .call(
            "PATCH",
            &format!("/api/worker-tokens/{id}"),
            Some(&admin),
            Some(json!({"monthly_price_usd": -5})),
        )
        .await
        .expect(400);
    server.chat(&client, "sonnet", false).await.expect(200);
    wait_rows(&server, &admin, 1).await;
    let by_provider = usage(&server, &admin, "group_by=provider").await;
    let row = group(&by_provider, "c1");
    assert_eq!(row["subscription_usd_per_month"], 20.0, "{by_provider}");
    assert_eq!(row["input_tokens"], 7, "usage from the CLI's result line");
    assert_eq!(by_provider["subscriptions"][0]["monthly_price_usd"], 20.0);
    let workers = server.call("GET", "/api/workers", Some(&admin), None).await.json();
    assert_eq!(workers["data"][0]["monthly_price_usd"], 20.0);
}

//! `/v1/chat/completions` and `/v1/models` through the cloud tier.

use crate::support::{FakeUpstream, Options, TestServer};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;

const KEY: &str = "sk-chat-provider-key-0001";

async fn server_with(fakes: &[(&str, &FakeUpstream)]) -> (TestServer, String, String) {
    let (server, admin) = TestServer::with_admin().await;
    for (name, fake) in fakes {
        server.add_provider(&admin, name, fake, KEY).await;
    }
    let client = server.client_key(&admin).await;
    (server, admin, client)
}

#[tokio::test]
async fn proxies_a_chat_completion_with_the_provider_key_and_never_the_client_key() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, _, client) = server_with(&[("main", &fake)]).await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hi"}],"temperature":0.2,"x_vendor":{"keep":[1,2]}}"#;
    let reply = server
        .call_raw("POST", "/v1/chat/completions", Some(&client), body)
        .await;
    reply.expect(200);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "Hello from up");
    assert_eq!(reply.header("x-auxot-tier"), Some("cloud"));
    assert_eq!(reply.header("x-auxot-route"), Some("main"));

    let seen = fake.chat_requests().pop().unwrap();
    assert_eq!(
        seen.body, body,
        "a pass-through body must reach the upstream byte for byte"
    );
    assert_eq!(seen.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    for (name, value) in &seen.headers {
        assert!(!value.contains(&client), "client key forwarded in header {name}");
    }
    assert!(!seen.body.contains(&client));
}

#[tokio::test]
async fn streams_arrive_chunk_by_chunk_before_the_upstream_finishes() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gated"]).await;
    let (server, _, client) = server_with(&[("main", &fake)]).await;
    let response = server.open_stream(&client, "gated").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-auxot-route"], "main");
    let mut body = response.bytes_stream();
    // The upstream holds everything after its first chunk until released: seeing that
    // chunk now proves auxot forwards it without waiting for the rest.
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("first chunk never arrived while the upstream was still open")
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first).to_string();
    assert!(first.contains("\"role\":\"assistant\""), "{first}");
    assert!(!first.contains("[DONE]"));
    fake.release_stream();
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(rest.contains("Hello "), "{rest}");
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
}

#[tokio::test]
async fn a_stream_that_breaks_mid_way_ends_with_an_error_event() {
    let fake = FakeUpstream::openai("up", &[KEY], &["break"]).await;
    let (server, _, client) = server_with(&[("main", &fake)]).await;
    let reply = server.chat(&client, "break", true).await;
    reply.expect(200);
    assert!(reply.text.contains("\"role\":\"assistant\""), "{}", reply.text);
    let last = reply.text.trim_end().lines().last().unwrap().to_string();
    assert!(last.starts_with("data: {\"error\""), "{}", reply.text);
    assert!(last.contains("upstream_stream_error"));
}

#[tokio::test]
async fn a_provider_prefix_pins_the_provider_and_is_stripped() {
    let a = FakeUpstream::openai("a", &[KEY], &["gpt-4o"]).await;
    let b = FakeUpstream::openai("b", &[KEY], &["gpt-4o"]).await;
    let (server, _, client) = server_with(&[("alpha", &a), ("beta", &b)]).await;
    for _ in 0..3 {
        let reply = server.chat(&client, "beta/gpt-4o", false).await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-route"), Some("beta"));
    }
    assert!(a.chat_requests().is_empty());
    let seen = b.chat_requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].json()["model"], "gpt-4o");
    assert_eq!(seen[0].json()["messages"][0]["content"], "Say hi");

    let reply = server
        .send(
            server
                .chat_request(&client, "gpt-4o", false)
                .header("x-auxot-provider", "alpha"),
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-route"), Some("alpha"));
    let reply = server
        .send(
            server
                .chat_request(&client, "gpt-4o", false)
                .header("x-auxot-provider", "nobody"),
        )
        .await;
    reply.expect(404);
}

#[tokio::test]
async fn equal_priority_providers_share_requests() {
    let a = FakeUpstream::openai("a", &[KEY], &["gpt-4o"]).await;
    let b = FakeUpstream::openai("b", &[KEY], &["gpt-4o"]).await;
    let (server, _, client) = server_with(&[("alpha", &a), ("beta", &b)]).await;
    for _ in 0..4 {
        server.chat(&client, "gpt-4o", false).await.expect(200);
    }
    assert_eq!(a.chat_requests().len(), 2);
    assert_eq!(b.chat_requests().len(), 2);
}

#[tokio::test]
async fn fails_over_to_the_next_provider_before_the_first_byte() {
    let a = FakeUpstream::openai("a", &[KEY], &["gpt-4o"]).await;
    let b = FakeUpstream::openai("b", &[KEY], &["gpt-4o"]).await;
    let (server, admin, client) = server_with(&[("alpha", &a), ("beta", &b)]).await;
    a.fail_chats_with(Some(503));
    for stream in [false, true, false, true] {
        let reply = server.chat(&client, "gpt-4o", stream).await;
        reply.expect(200);
        assert_eq!(reply.header("x-auxot-route"), Some("beta"));
    }
    // A provider whose key stopped working is failed over too.
    a.fail_chats_with(None);
    a.set_keys(&[]);
    for _ in 0..2 {
        server.chat(&client, "gpt-4o", false).await.expect(200);
    }
    // And one that is gone altogether.
    let providers = server.call("GET", "/api/providers", Some(&admin), None).await.json();
    let alpha = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "alpha")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .call(
            "PATCH",
            &format!("/api/providers/{alpha}"),
            Some(&admin),
            Some(json!({"priority": 1})),
        )
        .await
        .expect(200);
    drop(a);
    let reply = server.chat(&client, "gpt-4o", false).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-route"), Some("beta"));
}

#[tokio::test]
async fn upstream_errors_keep_their_status_in_openai_shape() {
    let fake = FakeUpstream::openai("up", &[KEY], &["fail-500", "fail-429", "fail-400"]).await;
    let (server, _, client) = server_with(&[("main", &fake)]).await;
    for (model, status, fragment) in [
        ("fail-500", 500, "The server had an error"),
        ("fail-429", 429, "Rate limit reached"),
        ("fail-400", 400, "temperature"),
    ] {
        let reply = server.chat(&client, model, false).await;
        reply.expect(status);
        let error = &reply.json()["error"];
        assert!(error["message"].as_str().unwrap().contains(fragment), "{}", reply.text);
        assert!(error["type"].is_string());
        if status == 429 {
            assert_eq!(
                reply.header("retry-after"),
                Some("7"),
                "the upstream's Retry-After is passed on"
            );
        }
    }
}

#[tokio::test]
async fn a_client_error_is_not_retried_elsewhere() {
    let a = FakeUpstream::openai("a", &[KEY], &["fail-400"]).await;
    let b = FakeUpstream::openai("b", &[KEY], &["fail-400"]).await;
    let (server, _, client) = server_with(&[("alpha", &a), ("beta", &b)]).await;
    server.chat(&client, "fail-400", false).await.expect(400);
    assert_eq!(a.chat_requests().len() + b.chat_requests().len(), 1);
}

#[tokio::test]
async fn every_candidate_failing_names_them_all() {
    let port = crate::support::free_port();
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) = TestServer::with_admin().await;
    // Point a provider at a dead port by moving it after it was validated.
    let id = server.add_provider(&admin, "main", &fake, KEY).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dead = FakeUpstream::openai("dead", &[KEY], &["gpt-4o"]).await;
    server
        .call(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(&admin),
            Some(json!({"base_url": dead.base_url(), "api_key": KEY})),
        )
        .await
        .expect(200);
    drop(dead);
    let _ = port;
    let client = server.client_key(&admin).await;
    let reply = server.chat(&client, "gpt-4o", false).await;
    reply.expect(502);
    let message = reply.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("main (cloud)"), "{message}");
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let fake = FakeUpstream::openai("up", &[KEY], &["slow"]).await;
    let (server, admin) = TestServer::with_admin_using(Options::with_args(&["--upstream-timeout-secs", "1"])).await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    let reply = server.chat(&client, "slow", false).await;
    reply.expect(504);
    assert_eq!(reply.json()["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn models_are_listed_in_openai_format_on_every_alias() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o", "o3"]).await;
    let (server, _, client) = server_with(&[("main", &fake)]).await;
    for path in ["/v1/models", "/api/openai/models", "/api/openai/v1/models"] {
        let reply = server.call("GET", path, Some(&client), None).await;
        reply.expect(200);
        let body = reply.json();
        assert_eq!(body["object"], "list");
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-4o", "o3", "auto", "main/gpt-4o", "main/o3"], "{path}");
        assert_eq!(body["data"][0]["object"], "model");
        assert_eq!(body["data"][0]["owned_by"], "main");
    }
    for path in ["/api/openai/chat/completions", "/api/openai/v1/chat/completions"] {
        let reply = server
            .call(
                "POST",
                path,
                Some(&client),
                Some(json!({"model": "o3", "messages": [{"role": "user", "content": "hi"}]})),
            )
            .await;
        reply.expect(200);
    }
    server.call("GET", "/v1/models", None, None).await.expect(401);
}

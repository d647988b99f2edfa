//! Bad input gets a 4xx JSON error that says what is wrong, the server keeps serving, and
//! nothing is written or forwarded.

use crate::support::{FakeUpstream, Options, TestServer};
use serde_json::json;

const KEY: &str = "sk-bad-input-key-0001";

#[tokio::test]
async fn bad_chat_requests_get_clear_4xx_errors_and_reach_no_upstream() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) = TestServer::with_admin_using(Options::with_args(&["--body-limit", "4096"])).await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    let huge = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(8192)
    );
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            r#"{"model": "gpt-4o", "messages": ["#.into(),
            400,
            "not valid JSON",
        ),
        ("not an object", r#"["gpt-4o"]"#.into(), 400, "invalid request body"),
        ("empty body", "".into(), 400, "empty"),
        (
            "missing model",
            r#"{"messages":[{"role":"user","content":"hi"}]}"#.into(),
            400,
            "model",
        ),
        (
            "model of wrong type",
            r#"{"model":5,"messages":[{"role":"user","content":"hi"}]}"#.into(),
            400,
            "model",
        ),
        (
            "empty model",
            r#"{"model":" ","messages":[{"role":"user","content":"hi"}]}"#.into(),
            400,
            "model",
        ),
        (
            "messages of wrong type",
            r#"{"model":"gpt-4o","messages":"hi"}"#.into(),
            400,
            "messages",
        ),
        (
            "message without role",
            r#"{"model":"gpt-4o","messages":[{"content":"hi"}]}"#.into(),
            400,
            "messages[0]",
        ),
        (
            "no messages",
            r#"{"model":"gpt-4o","messages":[]}"#.into(),
            400,
            "messages",
        ),
        (
            "stream of wrong type",
            r#"{"model":"gpt-4o","stream":"yes","messages":[{"role":"user","content":"hi"}]}"#.into(),
            400,
            "stream",
        ),
        (
            "trailing garbage",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]} x"#.into(),
            400,
            "not valid JSON",
        ),
        (
            "unknown model",
            r#"{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}"#.into(),
            404,
            "gpt-9",
        ),
        (
            "unknown pinned provider model",
            r#"{"model":"main/gpt-9","messages":[{"role":"user","content":"hi"}]}"#.into(),
            404,
            "gpt-9",
        ),
        ("body over the limit", huge.clone(), 413, "4096"),
    ];
    for (what, body, status, fragment) in cases {
        let reply = server
            .call_raw("POST", "/v1/chat/completions", Some(&client), body)
            .await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text);
        let error = &reply.json()["error"];
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(fragment),
            "{what}: message {message:?} lacks {fragment:?}"
        );
        assert!(error["type"].is_string(), "{what}: not OpenAI-shaped: {}", reply.text);
    }
    // A chunked body (no Content-Length) over the limit is cut off too.
    let chunks = vec![Ok::<_, std::io::Error>(huge.clone().into_bytes())];
    let reply = server
        .call_raw(
            "POST",
            "/v1/chat/completions",
            Some(&client),
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
        )
        .await;
    reply.expect(413);

    assert!(fake.chat_requests().is_empty(), "bad input reached the upstream");
    server.call("GET", "/healthz", None, None).await.expect(200);
    server.chat(&client, "gpt-4o", false).await.expect(200);
}

#[tokio::test]
async fn bad_admin_requests_write_nothing() {
    let (server, admin) = TestServer::with_admin_using(Options::with_args(&["--body-limit", "1024"])).await;
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("POST", "/api/providers", "{nope".into(), 400),
        ("POST", "/api/providers", "".into(), 400),
        (
            "POST",
            "/api/providers",
            format!(r#"{{"name":"{}","type":"openai","api_key":"k"}}"#, "n".repeat(2000)),
            413,
        ),
        ("POST", "/api/api-keys", r#"{"name": 1, "role": "client"}"#.into(), 400),
        ("PATCH", "/api/providers/x", "[]".into(), 400),
    ];
    for (method, path, body, status) in cases {
        let reply = server.call_raw(method, path, Some(&admin), body.clone()).await;
        assert_eq!(reply.status, status, "{method} {path} {body}: {}", reply.text);
        assert!(reply.json()["error"]["message"].is_string());
        assert!(reply.json()["error"]["code"].is_string());
    }
    assert_eq!(
        server.call("GET", "/api/providers", Some(&admin), None).await.json()["data"],
        json!([])
    );
    assert_eq!(
        server.call("GET", "/api/api-keys", Some(&admin), None).await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn unknown_endpoints_and_wrong_methods_are_json_errors() {
    let server = TestServer::start().await;
    let reply = server.call("GET", "/v1/nothing-here", None, None).await;
    reply.expect(404);
    assert_eq!(reply.json()["error"]["code"], "not_found");
    let reply = server.call("POST", "/api/nothing-here", None, Some(json!({}))).await;
    reply.expect(404);
    let reply = server.call("GET", "/v1/chat/completions", None, None).await;
    reply.expect(405);
    assert_eq!(reply.json()["error"]["code"], "method_not_allowed");
    let reply = server.call("DELETE", "/api/providers", None, None).await;
    reply.expect(405);
    // Non-API paths are the web UI.
    let reply = server.call("GET", "/settings/providers", None, None).await;
    reply.expect(200);
    assert!(reply.header("content-type").unwrap().starts_with("text/html"));
    server.call("GET", "/healthz", None, None).await.expect(200);
}

#[tokio::test]
async fn the_ui_is_served_compressed_cached_and_with_real_404s_for_stale_assets() {
    let server = TestServer::start().await;
    let index = server.send(server.http.get(format!("{}/", server.url))).await;
    index.expect(200);
    assert!(index.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let script = index
        .text
        .split("src=\"/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("index.html loads a script")
        .to_string();
    let raw = server
        .http
        .get(format!("{}/{script}", server.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["content-encoding"], "gzip");
    assert!(raw.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert!(raw.headers()["content-type"].to_str().unwrap().contains("javascript"));
    let plain = server
        .http
        .get(format!("{}/{script}", server.url))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    server
        .call("GET", "/assets/index-missing.js", None, None)
        .await
        .expect(404);
}

#[tokio::test]
async fn every_reply_carries_a_request_id_and_keeps_a_sane_one_the_client_sent() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let first = http.get(format!("{}/healthz", server.url)).send().await.unwrap();
    let second = http
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({"model": "gpt-4o", "messages": []}))
        .send()
        .await
        .unwrap();
    let id = |reply: &reqwest::Response| {
        reply
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (a, b) = (id(&first), id(&second));
    assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
    assert_eq!(second.status(), 401);
    let traced = http
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "proxy-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(id(&traced).as_deref(), Some("proxy-7f3a"));
    let spoofed = http
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "a b\"<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(id(&spoofed).as_deref(), Some("a b\"<script>"));
}

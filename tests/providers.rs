//! Adding, listing, rotating, refreshing and deleting providers.

use crate::support::{eventually, FakeUpstream, Options, TestServer};
use serde_json::json;
use std::time::Duration;

const KEY: &str = "sk-test-valid-key-0001";
const NEW_KEY: &str = "sk-test-rotated-key-0002";

/// No provider is stored, and so no model is listed.
async fn assert_no_provider_stored(server: &TestServer, admin: &str) {
    let providers = server.call("GET", "/api/providers", Some(admin), None).await.json();
    assert_eq!(providers["data"], json!([]), "{providers}");
    let models = server.call("GET", "/api/models", Some(admin), None).await.json();
    assert_eq!(models["data"], json!([]), "{models}");
}

#[tokio::test]
async fn add_list_get_rotate_delete_a_provider() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o", "gpt-4o-mini"]).await;
    let (server, admin) = TestServer::with_admin().await;

    let added = server.add_provider(&admin, "openai-main", &fake, KEY).await;
    assert_eq!(added["name"], "openai-main");
    assert_eq!(added["type"], "openai");
    assert_eq!(added["model_count"], 2);
    assert_eq!(added["enabled"], true);
    assert_eq!(added["key_hint"], "…0001");
    assert_eq!(added["base_url"], fake.base_url());
    let id = added["id"].as_str().unwrap().to_string();
    // The key was checked against the model list with the provider's own auth scheme.
    let listing = fake.requests().into_iter().find(|r| r.path == "/v1/models").unwrap();
    assert_eq!(listing.method, "GET");
    assert_eq!(listing.header("authorization"), Some(format!("Bearer {KEY}").as_str()));

    let list = server.call("GET", "/api/providers", Some(&admin), None).await;
    list.expect(200);
    assert_eq!(list.json()["data"][0]["id"], id.as_str());
    let one = server
        .call("GET", &format!("/api/providers/{id}"), Some(&admin), None)
        .await;
    one.expect(200);
    assert_eq!(one.json()["model_count"], 2);

    let models = server.call("GET", "/api/models", Some(&admin), None).await;
    models.expect(200);
    let models = models.json();
    let entry = &models["data"][0];
    assert_eq!(entry["id"], "gpt-4o");
    assert_eq!(entry["provider"], "openai-main");
    assert!(entry["fetched_at"].as_str().unwrap().contains('T'));

    // Rotate: the new key is validated, then replaces the old one.
    fake.set_keys(&[KEY, NEW_KEY]);
    let rotated = server
        .call(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(&admin),
            Some(json!({"api_key": NEW_KEY})),
        )
        .await;
    rotated.expect(200);
    assert_eq!(rotated.json()["key_hint"], "…0002");
    fake.set_keys(&[NEW_KEY]);
    let client = server.client_key(&admin).await;
    server.chat(&client, "gpt-4o", false).await.expect(200);
    let last = fake.chat_requests().pop().unwrap();
    assert_eq!(last.header("authorization"), Some(format!("Bearer {NEW_KEY}").as_str()));

    // Rename and disable.
    let renamed = server
        .call(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(&admin),
            Some(json!({"name": "primary", "enabled": false})),
        )
        .await;
    renamed.expect(200);
    assert_eq!(renamed.json()["name"], "primary");
    assert_eq!(renamed.json()["enabled"], false);
    server.chat(&client, "gpt-4o", false).await.expect(404);

    server
        .call("DELETE", &format!("/api/providers/{id}"), Some(&admin), None)
        .await
        .expect(204);
    server
        .call("GET", &format!("/api/providers/{id}"), Some(&admin), None)
        .await
        .expect(404);
    server
        .call("DELETE", &format!("/api/providers/{id}"), Some(&admin), None)
        .await
        .expect(404);
    assert_no_provider_stored(&server, &admin).await;
}

#[tokio::test]
async fn invalid_key_is_422_with_the_providers_reason_and_nothing_is_stored() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) = TestServer::with_admin().await;
    let reply = server
        .call(
            "POST",
            "/api/providers",
            Some(&admin),
            Some(json!({"name": "bad", "type": "openai", "api_key": "sk-wrong-key-9999", "base_url": fake.base_url()})),
        )
        .await;
    reply.expect(422);
    let message = reply.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("Incorrect API key"), "{message}");
    assert!(!reply.text.contains("sk-wrong-key-9999"));
    assert_no_provider_stored(&server, &admin).await;
    // The name is still free.
    server.add_provider(&admin, "bad", &fake, KEY).await;
}

#[tokio::test]
async fn unreachable_provider_is_502_and_nothing_is_stored() {
    let (server, admin) = TestServer::with_admin().await;
    // A port that was just free: nothing listens there.
    let port = crate::support::free_port();
    let reply = server
        .call(
            "POST",
            "/api/providers",
            Some(&admin),
            Some(json!({"name": "gone", "type": "openai", "api_key": KEY, "base_url": format!("http://127.0.0.1:{port}/v1")})),
        )
        .await;
    reply.expect(502);
    assert_eq!(reply.json()["error"]["code"], "provider_unreachable");
    assert_no_provider_stored(&server, &admin).await;
}

#[tokio::test]
async fn duplicate_names_are_409_case_insensitively() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let reply = server
        .call(
            "POST",
            "/api/providers",
            Some(&admin),
            Some(json!({"name": "MAIN", "type": "openai", "api_key": KEY, "base_url": fake.base_url()})),
        )
        .await;
    reply.expect(409);
    let other = server.add_provider(&admin, "other", &fake, KEY).await;
    let id = other["id"].as_str().unwrap();
    server
        .call(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(&admin),
            Some(json!({"name": "Main"})),
        )
        .await
        .expect(409);
    assert_eq!(
        server.call("GET", "/api/providers", Some(&admin), None).await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_rejected_new_key_leaves_the_old_one_working() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) = TestServer::with_admin().await;
    let id = server.add_provider(&admin, "main", &fake, KEY).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = server
        .call(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(&admin),
            Some(json!({"api_key": "sk-not-accepted-7777"})),
        )
        .await;
    reply.expect(422);
    let view = server
        .call("GET", &format!("/api/providers/{id}"), Some(&admin), None)
        .await
        .json();
    assert_eq!(view["key_hint"], "…0001");
    let client = server.client_key(&admin).await;
    server.chat(&client, "gpt-4o", false).await.expect(200);
    assert_eq!(
        fake.chat_requests().pop().unwrap().header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn changing_base_url_needs_the_key_in_the_same_request() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let moved = FakeUpstream::openai("moved", &[NEW_KEY], &["gpt-4o", "o3"]).await;
    let (server, admin) = TestServer::with_admin().await;
    let id = server.add_provider(&admin, "main", &fake, KEY).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = server
        .call(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(&admin),
            Some(json!({"base_url": moved.base_url()})),
        )
        .await;
    reply.expect(400);
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("api_key"));
    assert!(moved.requests().is_empty(), "the stored key went to the new host");
    let reply = server
        .call(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(&admin),
            Some(json!({"base_url": moved.base_url(), "api_key": NEW_KEY})),
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.json()["base_url"], moved.base_url());
    assert_eq!(reply.json()["model_count"], 2);
}

#[tokio::test]
async fn refresh_models_on_demand_and_on_schedule() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) = TestServer::with_admin_using(Options::with_args(&["--models-refresh-secs", "1"])).await;
    let id = server.add_provider(&admin, "main", &fake, KEY).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    fake.set_models(&["gpt-4o", "o3"]);
    let refreshed = server
        .call(
            "POST",
            &format!("/api/providers/{id}/refresh-models"),
            Some(&admin),
            None,
        )
        .await;
    refreshed.expect(200);
    assert_eq!(refreshed.json()["model_count"], 2);

    fake.set_models(&["gpt-4o", "o3", "gpt-5"]);
    let client = server.client_key(&admin).await;
    let picked_up = eventually(Duration::from_secs(10), || async {
        server
            .call("GET", "/v1/models", Some(&client), None)
            .await
            .text
            .contains("gpt-5")
    })
    .await;
    assert!(picked_up, "the background refresh never picked up the new model");
    server
        .call("POST", "/api/providers/nope/refresh-models", Some(&admin), None)
        .await
        .expect(404);
}

#[tokio::test]
async fn anthropic_provider_is_validated_with_its_own_headers_and_paginated() {
    let fake = FakeUpstream::anthropic(
        "claude",
        &["sk-ant-test-key-0003"],
        &["claude-a", "claude-b", "claude-c"],
    )
    .await;
    let (server, admin) = TestServer::with_admin().await;
    let added = server
        .add_provider(&admin, "anthropic", &fake, "sk-ant-test-key-0003")
        .await;
    assert_eq!(added["type"], "anthropic");
    assert_eq!(added["model_count"], 3, "all pages were read");
    let listing = fake.requests().into_iter().find(|r| r.path == "/v1/models").unwrap();
    assert_eq!(listing.header("x-api-key"), Some("sk-ant-test-key-0003"));
    assert!(listing.header("anthropic-version").is_some());
    assert!(listing.header("authorization").is_none());
    let models = server.call("GET", "/api/models", Some(&admin), None).await.json();
    assert_eq!(models["data"][0]["display_name"], "CLAUDE-A");

    let reply = server
        .call(
            "POST",
            "/api/providers",
            Some(&admin),
            Some(json!({"name": "anthropic-2", "type": "anthropic", "api_key": "sk-ant-wrong-0000", "base_url": fake.base_url()})),
        )
        .await;
    reply.expect(422);
}

#[tokio::test]
async fn provider_requests_are_validated() {
    let (server, admin) = TestServer::with_admin().await;
    let cases = [
        json!({"name": "x", "type": "azure", "api_key": KEY}),
        json!({"name": "has space", "type": "openai", "api_key": KEY}),
        json!({"name": "x/y", "type": "openai", "api_key": KEY}),
        json!({"name": "x", "type": "openai"}),
        json!({"name": "x", "type": "openai", "api_key": ""}),
        json!({"name": "x", "type": "openai", "api_key": KEY, "base_url": "ftp://host"}),
        json!({"name": "x", "type": "openai", "api_key": KEY, "base_url": "http://user:pw@host/v1"}),
        json!({"name": "x", "type": "openai-compatible"}),
        json!({"name": "x", "type": "openai", "api_key": KEY, "apikey": KEY}),
        json!({"name": "x", "type": "openai", "api_key": 42}),
    ];
    for body in cases {
        let reply = server
            .call("POST", "/api/providers", Some(&admin), Some(body.clone()))
            .await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert!(!reply.text.contains(KEY), "{}", reply.text);
    }
    let reply = server
        .call(
            "PATCH",
            "/api/providers/missing",
            Some(&admin),
            Some(json!({"enabled": false})),
        )
        .await;
    reply.expect(404);
    let reply = server
        .call("PATCH", "/api/providers/missing", Some(&admin), Some(json!({})))
        .await;
    reply.expect(400);
}

/// A base URL that accepts the connection and then never answers. Each accepted connection
/// reports on `closed` when the peer (auxot) hangs up.
async fn silent_upstream() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (opened_tx, opened) = tokio::sync::mpsc::unbounded_channel();
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = opened_tx.send(());
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Read (and ignore) the request until auxot hangs up; never write a byte.
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                let _ = closed_tx.send(());
            });
        }
    });
    (url, opened, closed)
}

#[tokio::test]
async fn a_dropped_add_request_stops_the_check_and_stores_nothing() {
    let (server, admin) = TestServer::with_admin().await;
    let (base_url, mut opened, mut closed) = silent_upstream().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let sent = tokio::spawn(
        impatient
            .post(format!("{}/api/providers", server.url))
            .bearer_auth(&admin)
            .json(&json!({"name": "slow", "type": "openai", "api_key": KEY, "base_url": base_url}))
            .send(),
    );
    // auxot reached the provider and is waiting for its model list...
    tokio::time::timeout(Duration::from_secs(10), opened.recv())
        .await
        .expect("auxot never called the provider");
    // ...the browser gives up (Cancel); auxot hangs up on the provider well before its own timeout.
    assert!(sent.await.unwrap().is_err(), "the impatient client timed out");
    tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("auxot kept waiting on the provider for a request nobody waits for");
    assert_no_provider_stored(&server, &admin).await;
    // Nothing half-done holds the name.
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    server.add_provider(&admin, "slow", &fake, KEY).await;
}

/// A forward proxy for plain HTTP: each request it is sent (in absolute form) is passed on to
/// `target` whatever host it names, and its URI and `proxy-authorization` are kept.
async fn forward_proxy(
    target: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>,
) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        let onward = reqwest::Client::builder().no_proxy().build().unwrap();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (kept, onward) = (kept.clone(), onward.clone());
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (kept, onward) = (kept.clone(), onward.clone());
                async move {
                    let auth = request
                        .headers()
                        .get("proxy-authorization")
                        .map(|v| v.to_str().unwrap().to_string());
                    kept.lock().unwrap().push((request.uri().to_string(), auth));
                    let path = request.uri().path_and_query().unwrap().to_string();
                    let mut forwarded = onward.request(request.method().clone(), format!("http://{target}{path}"));
                    for (name, value) in request.headers() {
                        if name != "host" && name != "proxy-authorization" {
                            forwarded = forwarded.header(name, value);
                        }
                    }
                    let body = request.into_body().collect().await?.to_bytes();
                    let answer = forwarded.body(body).send().await.unwrap();
                    let mut reply = hyper::Response::builder().status(answer.status().as_u16());
                    for (name, value) in answer.headers() {
                        reply = reply.header(name, value);
                    }
                    let body = answer.bytes().await.unwrap();
                    Ok::<_, hyper::Error>(reply.body(http_body_util::Full::new(body)).unwrap())
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn providers_are_reached_through_the_proxy_the_environment_names_with_its_credentials() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (proxy, seen) = forward_proxy(fake.addr).await;
    let proxy_url = format!("http://user:pw@{proxy}");
    let mut options = Options::default();
    for (name, value) in [
        ("HTTP_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ] {
        options.env.push((name.into(), value.into()));
    }
    let (server, admin) = TestServer::with_admin_using(options).await;
    // A host only the proxy can reach: nothing resolves it here.
    let base = "http://models.internal.test:8000/v1";
    server
        .add_provider_at(&admin, "behind-proxy", "openai", base, KEY)
        .await;
    let client = server.client_key(&admin).await;
    server.chat(&client, "gpt-4o", false).await.expect(200);

    let seen = seen.lock().unwrap().clone();
    let uris: Vec<&str> = seen.iter().map(|(uri, _)| uri.as_str()).collect();
    assert!(uris.contains(&"http://models.internal.test:8000/v1/models"), "{uris:?}");
    assert!(
        uris.contains(&"http://models.internal.test:8000/v1/chat/completions"),
        "{uris:?}"
    );
    // base64("user:pw")
    assert!(
        seen.iter()
            .all(|(_, auth)| auth.as_deref() == Some("Basic dXNlcjpwdw==")),
        "{seen:?}"
    );
    assert_eq!(fake.chat_requests().len(), 1);
}

/// The connections a burst of requests opened to a provider all stay pooled for the next
/// burst, however many there were: none is closed as its answer comes back only to be
/// opened again (a TLS handshake each, against a real provider).
#[tokio::test]
async fn a_burst_of_requests_reuses_every_upstream_connection_the_last_burst_opened() {
    const AT_ONCE: usize = 120;
    let fake = FakeUpstream::openai("up", &[KEY], &["sleep-400"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let client = server.client_key(&admin).await;
    let burst = || {
        futures_util::future::join_all((0..AT_ONCE).map(|_| {
            let request = reqwest::Client::new()
                .post(format!("{}/v1/chat/completions", server.url))
                .bearer_auth(&client)
                .json(&json!({"model": "sleep-400", "messages": [{"role": "user", "content": "hi"}]}));
            async move { request.send().await.unwrap().status().as_u16() }
        }))
    };
    let connections = || {
        let peers: std::collections::HashSet<_> = fake.chat_requests().iter().map(|r| r.peer.unwrap()).collect();
        peers.len()
    };
    assert!(burst().await.iter().all(|status| *status == 200));
    let opened = connections();
    // More at once than the 64 idle connections a pool used to keep.
    assert!(opened > 64, "the burst was not concurrent: {opened} connections");
    assert!(burst().await.iter().all(|status| *status == 200));
    assert_eq!(connections(), opened, "the second burst opened connections anew");
}

//! What the operator's console relies on: API-key governance (allow-lists, expiry, tokens
//! per minute, duplicate names, this month's activity), several admin accounts with a
//! read-only viewer role, and workers named after their token.

use crate::support::worker::hand_driven_worker;
use crate::support::worker::worker_token;
use crate::support::{eventually, FakeUpstream, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "sk-cloud-provider-key-0001";

async fn anthropic_message(server: &TestServer, key: &str, model: &str) -> crate::support::Reply {
    server
        .send(
            server
                .http
                .post(format!("{}/v1/messages", server.url))
                .header("x-api-key", key)
                .json(&json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await
}

#[tokio::test]
async fn api_key_names_are_unique_whatever_their_case() {
    let (server, admin) = TestServer::with_admin().await;
    server
        .new_api_key(&admin, json!({"name": "ci-bot", "role": "client"}))
        .await;
    let again = server
        .call(
            "POST",
            "/api/api-keys",
            Some(&admin),
            Some(json!({"name": " CI-Bot ", "role": "client"})),
        )
        .await;
    again.expect(409);
    assert_eq!(again.json()["error"]["code"], "conflict");
    assert!(again.json()["error"]["message"].as_str().unwrap().contains("ci-bot"));
    let listed = server.call("GET", "/api/api-keys", Some(&admin), None).await.json();
    let named: Vec<&Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "ci-bot")
        .collect();
    assert_eq!(named.len(), 1, "the refused key must not be stored: {listed}");
}

#[tokio::test]
async fn a_model_allow_list_refuses_other_models_in_the_callers_dialect() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o", "gpt-4o-mini"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let (id, key) = server
        .new_api_key(
            &admin,
            json!({"name": "narrow", "role": "client", "allowed_models": ["gpt-4o-mini", "claude-*"]}),
        )
        .await;
    server.chat(&key, "gpt-4o-mini", false).await.expect(200);
    let refused = server.chat(&key, "gpt-4o", false).await;
    refused.expect(403);
    assert_eq!(refused.json()["error"]["code"], "model_not_allowed");
    assert_eq!(refused.json()["error"]["type"], "permission_error");
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gpt-4o-mini"));
    let anthropic = anthropic_message(&server, &key, "gpt-4o").await;
    anthropic.expect(403);
    assert_eq!(anthropic.json()["type"], "error");
    assert_eq!(anthropic.json()["error"]["type"], "permission_error");

    // Lifting the list (empty) lets every model through again.
    let lifted = server
        .call(
            "PATCH",
            &format!("/api/api-keys/{id}"),
            Some(&admin),
            Some(json!({"allowed_models": []})),
        )
        .await;
    lifted.expect(200);
    assert_eq!(lifted.json()["allowed_models"], json!([]));
    server.chat(&key, "gpt-4o", false).await.expect(200);
}

#[tokio::test]
async fn a_tier_allow_list_keeps_requests_off_other_tiers() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let (_, local_only) = server
        .new_api_key(
            &admin,
            json!({"name": "local", "role": "client", "allowed_tiers": ["gpu", "cli"]}),
        )
        .await;
    let (_, cloud_ok) = server
        .new_api_key(
            &admin,
            json!({"name": "cloud", "role": "client", "allowed_tiers": ["cloud"]}),
        )
        .await;
    let ok = server.chat(&cloud_ok, "gpt-4o", false).await;
    ok.expect(200);
    assert_eq!(ok.header("x-auxot-tier"), Some("cloud"));
    // No worker serves gpt-4o and the cloud is off limits: never sent to the provider.
    let before = fake.requests().len();
    let refused = server
        .send(
            server
                .http
                .post(format!("{}/v1/chat/completions", server.url))
                .bearer_auth(&local_only)
                .header("x-auxot-tier", "cloud")
                .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    refused.expect(403);
    assert_eq!(refused.json()["error"]["code"], "tier_not_allowed");
    let narrowed = server.chat(&local_only, "gpt-4o", false).await;
    assert_ne!(narrowed.status, 200, "{}", narrowed.text);
    assert_eq!(fake.requests().len(), before, "a local-only key reached the cloud");
    server
        .call(
            "POST",
            "/api/api-keys",
            Some(&admin),
            Some(json!({"name": "bad", "role": "client", "allowed_tiers": ["tpu"]})),
        )
        .await
        .expect(400);
}

#[tokio::test]
async fn an_expired_key_is_refused_and_a_later_expiry_revives_it() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let (id, key) = server
        .new_api_key(
            &admin,
            json!({"name": "temp", "role": "client", "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    let refused = server.chat(&key, "gpt-4o", false).await;
    refused.expect(401);
    assert_eq!(refused.json()["error"]["code"], "expired_api_key");
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2020-01-01"));
    let anthropic = anthropic_message(&server, &key, "gpt-4o").await;
    anthropic.expect(401);
    assert_eq!(anthropic.json()["error"]["type"], "authentication_error");
    // The refusals are in the request log under the expired key, so an admin sees who.
    let log = server
        .call("GET", &format!("/api/requests?api_key={id}"), Some(&admin), None)
        .await
        .json();
    let refusals: Vec<&serde_json::Value> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 401)
        .collect();
    assert_eq!(refusals.len(), 2, "{log}");
    let temp = server.listed_api_key(&admin, &id).await;
    assert_eq!(temp["expired"], true);
    server
        .call(
            "PATCH",
            &format!("/api/api-keys/{id}"),
            Some(&admin),
            Some(json!({"expires_at": "2999-01-01T00:00:00Z"})),
        )
        .await
        .expect(200);
    server.chat(&key, "gpt-4o", false).await.expect(200);
    server
        .call(
            "PATCH",
            &format!("/api/api-keys/{id}"),
            Some(&admin),
            Some(json!({"expires_at": "next week"})),
        )
        .await
        .expect(400);
}

#[tokio::test]
async fn tokens_per_minute_and_this_months_activity_are_per_key() {
    let fake = FakeUpstream::openai("up", &[KEY], &["gpt-4o"]).await;
    let (server, admin) = TestServer::with_admin().await;
    server.add_provider(&admin, "main", &fake, KEY).await;
    let (id, key) = server
        .new_api_key(&admin, json!({"name": "metered", "role": "client", "tpm_limit": 1}))
        .await;
    server.chat(&key, "gpt-4o", false).await.expect(200);
    // The first answer's tokens are counted once its row is written (off the request path).
    let limited = eventually(Duration::from_secs(5), || async {
        server.chat(&key, "gpt-4o", false).await.status == 429
    })
    .await;
    assert!(limited, "the tokens/min limit never applied");
    let reply = server.chat(&key, "gpt-4o", false).await;
    reply.expect(429);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tokens per minute"));
    assert!(reply.header("retry-after").is_some());

    let metered = server.listed_api_key(&admin, &id).await;
    assert_eq!(metered["tpm_limit"], 1);
    assert!(metered["requests_this_month"].as_u64().unwrap() >= 2, "{metered}");
    assert!(metered["spent_this_month_usd"].as_f64().unwrap() > 0.0, "{metered}");
    assert!(metered["last_used_at"].as_str().is_some(), "{metered}");
    server
        .call(
            "PATCH",
            &format!("/api/api-keys/{id}"),
            Some(&admin),
            Some(json!({"tpm_limit": 0})),
        )
        .await
        .expect(400);
}

async fn session_call(
    server: &TestServer,
    cookie: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> crate::support::Reply {
    let mut request = server
        .http
        .request(method.parse().unwrap(), format!("{}{path}", server.url))
        .header("cookie", cookie);
    if let Some(body) = body {
        request = request.json(&body);
    }
    server.send(request).await
}

#[tokio::test]
async fn several_admins_with_a_read_only_viewer() {
    let server = TestServer::start().await;
    let admin_key = server.admin_key().await;
    let admin = server.login("admin", "password123").await;
    let session = session_call(&server, &admin, "GET", "/api/session", None).await;
    assert_eq!(session.json()["role"], "admin");

    let created = session_call(
        &server,
        &admin,
        "POST",
        "/api/admins",
        Some(json!({"username": "dana", "password": "dana-password", "role": "viewer"})),
    )
    .await;
    created.expect(201);
    assert_eq!(created.json()["role"], "viewer");
    assert!(!created.text.contains("argon2"));
    session_call(
        &server,
        &admin,
        "POST",
        "/api/admins",
        Some(json!({"username": "DANA", "password": "another-pass"})),
    )
    .await
    .expect(409);
    session_call(
        &server,
        &admin,
        "POST",
        "/api/admins",
        Some(json!({"username": "x", "password": "short"})),
    )
    .await
    .expect(400);

    // The viewer reads everything but changes nothing, whatever the endpoint.
    let viewer = server.login("dana", "dana-password").await;
    assert_eq!(
        session_call(&server, &viewer, "GET", "/api/session", None).await.json()["role"],
        "viewer"
    );
    session_call(&server, &viewer, "GET", "/api/api-keys", None)
        .await
        .expect(200);
    session_call(&server, &viewer, "GET", "/api/admins", None)
        .await
        .expect(200);
    for (method, path, body) in [
        ("POST", "/api/api-keys", json!({"name": "v", "role": "admin"})),
        (
            "POST",
            "/api/admins",
            json!({"username": "eve", "password": "eve-password"}),
        ),
        ("PATCH", "/api/admins/admin", json!({"password": "taken-over!"})),
        ("PUT", "/api/settings", json!({})),
        ("DELETE", "/api/admins/admin", json!({})),
    ] {
        let reply = session_call(&server, &viewer, method, path, Some(body)).await;
        reply.expect(403);
        assert_eq!(reply.json()["error"]["code"], "read_only", "{method} {path}");
    }
    // A viewer may change their own password: other sessions end, this one goes on.
    let wrong = session_call(
        &server,
        &viewer,
        "POST",
        "/api/session/password",
        Some(json!({"current_password": "nope-nope", "new_password": "dana-new-pass"})),
    )
    .await;
    wrong.expect(400);
    let changed = session_call(
        &server,
        &viewer,
        "POST",
        "/api/session/password",
        Some(json!({"current_password": "dana-password", "new_password": "dana-new-pass"})),
    )
    .await;
    changed.expect(200);
    let fresh = changed
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    session_call(&server, &viewer, "GET", "/api/session", None)
        .await
        .expect(401);
    session_call(&server, &fresh, "GET", "/api/session", None)
        .await
        .expect(200);
    server.login("dana", "dana-new-pass").await;

    // An admin resets another's password (their sessions end), promotes and removes them.
    session_call(
        &server,
        &admin,
        "PATCH",
        "/api/admins/dana",
        Some(json!({"password": "reset-by-admin"})),
    )
    .await
    .expect(200);
    session_call(&server, &fresh, "GET", "/api/session", None)
        .await
        .expect(401);
    let promoted = session_call(
        &server,
        &admin,
        "PATCH",
        "/api/admins/dana",
        Some(json!({"role": "admin"})),
    )
    .await;
    promoted.expect(200);
    assert_eq!(promoted.json()["role"], "admin");
    let dana = server.login("dana", "reset-by-admin").await;
    session_call(
        &server,
        &dana,
        "POST",
        "/api/api-keys",
        Some(json!({"name": "by-dana", "role": "client"})),
    )
    .await
    .expect(201);
    session_call(&server, &admin, "DELETE", "/api/admins/admin", None)
        .await
        .expect(400);
    session_call(&server, &admin, "DELETE", "/api/admins/dana", None)
        .await
        .expect(204);
    session_call(&server, &dana, "GET", "/api/session", None)
        .await
        .expect(401);
    session_call(&server, &admin, "DELETE", "/api/admins/dana", None)
        .await
        .expect(404);
    // The last admin cannot be removed or made a viewer.
    let last = server
        .call(
            "PATCH",
            "/api/admins/admin",
            Some(&admin_key),
            Some(json!({"role": "viewer"})),
        )
        .await;
    last.expect(409);
    server
        .call("DELETE", "/api/admins/admin", Some(&admin_key), None)
        .await
        .expect(409);
    let admins = server.call("GET", "/api/admins", Some(&admin_key), None).await.json();
    assert_eq!(admins["data"].as_array().unwrap().len(), 1, "{admins}");
}

#[tokio::test]
async fn a_worker_without_a_name_carries_its_tokens_name() {
    let (server, admin) = TestServer::with_admin().await;
    let token = worker_token(&server, &admin, "rack-7-gpu", "gpu").await;
    let (ack, _socket) = hand_driven_worker(
        &server,
        &token,
        json!({"type": "hello", "protocol": 1, "kind": "gpu", "models": ["qwen"], "slots": 2, "version": "test"}),
    )
    .await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");
    let workers = server.call("GET", "/api/workers", Some(&admin), None).await.json();
    let worker = &workers["data"][0];
    assert_eq!(worker["name"], "rack-7-gpu", "{workers}");
    let tokens = server
        .call("GET", "/api/worker-tokens", Some(&admin), None)
        .await
        .json();
    assert_eq!(worker["token_id"], tokens["data"][0]["id"]);
}

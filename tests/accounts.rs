//! Admin accounts, sessions and API keys.

use crate::support::TestServer;
use serde_json::json;

#[tokio::test]
async fn setup_creates_the_first_admin_once() {
    let server = TestServer::start().await;
    assert_eq!(
        server.call("GET", "/api/setup", None, None).await.json()["needs_setup"],
        true
    );
    let body = json!({"username": "admin", "password": "password123"});
    server
        .call("POST", "/api/setup", None, Some(body.clone()))
        .await
        .expect(201);
    assert_eq!(
        server.call("GET", "/api/setup", None, None).await.json()["needs_setup"],
        false
    );
    let again = server.setup_admin("evil", "password123").await;
    again.expect(409);
    assert_eq!(again.json()["error"]["code"], "already_set_up");
}

#[tokio::test]
async fn setup_refuses_weak_or_missing_credentials() {
    let server = TestServer::start().await;
    for body in [
        json!({"username": "admin", "password": "short"}),
        json!({"username": "", "password": "password123"}),
        json!({"username": "admin"}),
    ] {
        let reply = server.call("POST", "/api/setup", None, Some(body.clone())).await;
        reply.expect(400);
        assert!(reply.json()["error"]["message"].as_str().unwrap().len() > 5, "{body}");
    }
    assert_eq!(
        server.call("GET", "/api/setup", None, None).await.json()["needs_setup"],
        true
    );
}

#[tokio::test]
async fn login_sets_an_httponly_strict_session_cookie_and_logout_ends_it() {
    let server = TestServer::start().await;
    server.setup_admin("admin", "password123").await.expect(201);
    let reply = server.try_login("admin", "password123").await;
    reply.expect(200);
    let cookie = reply.header("set-cookie").unwrap();
    assert!(cookie.starts_with("auxot_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();

    let with_cookie = |path: &str| {
        server
            .http
            .get(format!("{}{path}", server.url))
            .header("cookie", session.clone())
    };
    server.send(with_cookie("/api/session")).await.expect(200);
    server.send(with_cookie("/api/providers")).await.expect(200);

    server
        .send(
            server
                .http
                .post(format!("{}/api/logout", server.url))
                .header("cookie", session.clone()),
        )
        .await
        .expect(204);
    server.send(with_cookie("/api/providers")).await.expect(401);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_both_401() {
    let server = TestServer::start().await;
    server.setup_admin("admin", "password123").await.expect(201);
    for body in [
        json!({"username": "admin", "password": "wrong-password"}),
        json!({"username": "nobody", "password": "password123"}),
    ] {
        let reply = server.call("POST", "/api/login", None, Some(body)).await;
        reply.expect(401);
        assert!(reply.header("set-cookie").is_none());
    }
}

#[tokio::test]
async fn api_keys_are_shown_once_listed_without_secrets_and_revoked_at_once() {
    let (server, admin) = TestServer::with_admin().await;
    assert!(admin.starts_with("aux_"));
    let created = server
        .call(
            "POST",
            "/api/api-keys",
            Some(&admin),
            Some(json!({"name": "ci", "role": "client"})),
        )
        .await;
    created.expect(201);
    let created = created.json();
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("aux_") && key.len() > 40);

    let list = server.call("GET", "/api/api-keys", Some(&admin), None).await;
    list.expect(200);
    assert!(!list.text.contains(&key), "list shows a key: {}", list.text);
    let entry = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(entry["role"], "client");
    assert!(entry.get("key").is_none());

    // The client key works on the client API, as Bearer and as x-api-key.
    server.call("GET", "/v1/models", Some(&key), None).await.expect(200);
    let via_header = server
        .send(
            server
                .http
                .get(format!("{}/v1/models", server.url))
                .header("x-api-key", &key),
        )
        .await;
    via_header.expect(200);

    server
        .call("DELETE", &format!("/api/api-keys/{id}"), Some(&admin), None)
        .await
        .expect(204);
    let after = server.call("GET", "/v1/models", Some(&key), None).await;
    after.expect(401);
    assert_eq!(after.json()["error"]["type"], "authentication_error");
    server
        .call("DELETE", &format!("/api/api-keys/{id}"), Some(&admin), None)
        .await
        .expect(404);
}

#[tokio::test]
async fn admin_api_needs_admin_credentials() {
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let cases: [(Option<&str>, u16); 4] = [
        (None, 401),
        (Some("aux_not-a-real-key"), 401),
        (Some(&client), 403),
        (Some(&admin), 200),
    ];
    for (key, status) in cases {
        for path in ["/api/providers", "/api/api-keys", "/api/models"] {
            let reply = server.call("GET", path, key, None).await;
            assert_eq!(reply.status, status, "{path} with {key:?}: {}", reply.text);
            if status != 200 {
                assert!(reply.json()["error"]["message"].is_string(), "{}", reply.text);
                assert!(reply.json()["error"]["code"].is_string(), "{}", reply.text);
            }
        }
    }
    // Admin keys work on the client API too.
    server.call("GET", "/v1/models", Some(&admin), None).await.expect(200);
}

/// Every admin route, listed by hand: one that does not take its state through
/// `filters::admin` fails here. Anonymous callers get 401 and client keys 403, in the admin error shape, before
/// any handler runs (so nothing is read or changed).
#[tokio::test]
async fn every_admin_route_refuses_anonymous_callers_and_client_keys() {
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let routes = [
        ("GET", "/api/session"),
        ("POST", "/api/session/password"),
        ("GET", "/api/api-keys"),
        ("POST", "/api/api-keys"),
        ("PATCH", "/api/api-keys/k1"),
        ("DELETE", "/api/api-keys/k1"),
        ("GET", "/api/admins"),
        ("POST", "/api/admins"),
        ("PATCH", "/api/admins/dana"),
        ("DELETE", "/api/admins/dana"),
        ("POST", "/api/admin-agent/chat"),
        ("GET", "/api/admin-agent/conversations"),
        ("GET", "/api/admin-agent/conversations/c1"),
        ("GET", "/api/providers"),
        ("POST", "/api/providers"),
        ("GET", "/api/providers/p1"),
        ("PATCH", "/api/providers/p1"),
        ("DELETE", "/api/providers/p1"),
        ("POST", "/api/providers/p1/refresh-models"),
        ("GET", "/api/models"),
        ("GET", "/api/workers"),
        ("GET", "/api/worker-tokens"),
        ("POST", "/api/worker-tokens"),
        ("PATCH", "/api/worker-tokens/t1"),
        ("DELETE", "/api/worker-tokens/t1"),
        ("GET", "/api/aliases"),
        ("POST", "/api/aliases"),
        ("PUT", "/api/aliases/a1"),
        ("DELETE", "/api/aliases/a1"),
        ("GET", "/api/agents"),
        ("POST", "/api/agents"),
        ("GET", "/api/agents/a1"),
        ("PUT", "/api/agents/a1"),
        ("DELETE", "/api/agents/a1"),
        ("GET", "/api/settings"),
        ("PUT", "/api/settings"),
        ("GET", "/api/backup"),
        ("GET", "/api/requests"),
        ("GET", "/api/usage"),
        ("GET", "/api/prices"),
        ("PUT", "/api/prices/gpt-4o"),
        ("DELETE", "/api/prices/gpt-4o"),
        ("GET", "/api/usage/equivalents"),
        ("PUT", "/api/usage/equivalents"),
    ];
    for (method, path) in routes {
        for (key, status) in [(None, 401), (Some(client.as_str()), 403)] {
            let reply = server.call(method, path, key, Some(json!({}))).await;
            assert_eq!(reply.status, status, "{method} {path} with {key:?}: {}", reply.text);
            assert!(
                reply.json()["error"]["code"].is_string(),
                "{method} {path}: {}",
                reply.text
            );
        }
    }
    // Past the gate, routing answers as before.
    server
        .call("GET", "/api/no-such-endpoint", Some(&admin), None)
        .await
        .expect(404);
    server.call("GET", "/api/setup", None, None).await.expect(200);
    // The client API's aliases keep their own answers (405 here, not the gate's 401).
    let wrong_method = server.call("GET", "/api/openai/v1/chat/completions", None, None).await;
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.text);
}

#[tokio::test]
async fn api_key_requests_are_validated() {
    let (server, admin) = TestServer::with_admin().await;
    for body in [
        json!({"name": "x", "role": "superuser"}),
        json!({"name": "", "role": "client"}),
        json!({"role": "client"}),
        json!({"name": "x", "role": "client", "extra": 1}),
    ] {
        server
            .call("POST", "/api/api-keys", Some(&admin), Some(body))
            .await
            .expect(400);
    }
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_with_retry_after() {
    let server = TestServer::start().await;
    server.setup_admin("admin", "password123").await.expect(201);
    // Five misses from one address are free (see README "Login throttling").
    for _ in 0..5 {
        server.try_login("admin", "wrong-guess").await.expect(401);
    }
    // Now even the right password from that address waits: a guesser cannot tell it worked.
    let throttled = server.try_login("Admin", "password123").await;
    throttled.expect(429);
    assert_eq!(throttled.json()["error"]["code"], "too_many_attempts");
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
}

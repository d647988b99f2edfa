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
    let again = server
        .call(
            "POST",
            "/api/setup",
            None,
            Some(json!({"username": "evil", "password": "password123"})),
        )
        .await;
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
    server
        .call(
            "POST",
            "/api/setup",
            None,
            Some(json!({"username": "admin", "password": "password123"})),
        )
        .await
        .expect(201);
    let reply = server
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"username": "admin", "password": "password123"})),
        )
        .await;
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
    server
        .call(
            "POST",
            "/api/setup",
            None,
            Some(json!({"username": "admin", "password": "password123"})),
        )
        .await
        .expect(201);
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
    let server = TestServer::start().await;
    let admin = server.admin_key().await;
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
    let server = TestServer::start().await;
    let admin = server.admin_key().await;
    let client = server.client_key(&admin).await;
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

#[tokio::test]
async fn api_key_requests_are_validated() {
    let server = TestServer::start().await;
    let admin = server.admin_key().await;
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
    server
        .call(
            "POST",
            "/api/setup",
            None,
            Some(json!({"username": "admin", "password": "password123"})),
        )
        .await
        .expect(201);
    // Five misses from one address are free (see README "Login throttling").
    for _ in 0..5 {
        server
            .call(
                "POST",
                "/api/login",
                None,
                Some(json!({"username": "admin", "password": "wrong-guess"})),
            )
            .await
            .expect(401);
    }
    // Now even the right password from that address waits: a guesser cannot tell it worked.
    let throttled = server
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"username": "Admin", "password": "password123"})),
        )
        .await;
    throttled.expect(429);
    assert_eq!(throttled.json()["error"]["code"], "too_many_attempts");
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
}

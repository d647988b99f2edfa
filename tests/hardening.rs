//! Hardening (issue 13): anonymous callers cannot exhaust the box, cookie writes cannot be
//! forged cross-site, workers serve only what the operator allows, refused requests leave
//! their connection usable, and the data dir stays private and untouched by a refused start.

use crate::support::worker::{hand_driven_worker, WorkerSocket};
use crate::support::worker::{worker_token, worker_token_allowing, TestWorker};
use crate::support::{eventually, FakeUpstream, Options, TestServer, OTHER_KEY};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const CLOUD_KEY: &str = "sk-cloud-hardening";

/// A client whose connections come from `127.0.0.<last>` (any 127/8 address is loopback).
fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .build()
        .unwrap()
}

async fn login_from(server: &TestServer, last: u8, username: &str, password: &str) -> reqwest::Response {
    client_from(last)
        .post(format!("{}/api/login", server.url))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_login_flood_from_many_addresses_stays_small_and_is_answered_quickly() {
    let (server, admin) = TestServer::with_admin().await;
    let client = server.client_key(&admin).await;
    let idle = rss_kib(server.pid());
    let started = Instant::now();
    let flood = (0..200u32).map(|i| {
        let server = &server;
        async move {
            // 200 sources, a wrong password each: the throttle lets every one through, so
            // only the hasher pool bounds the cost.
            let last = 2 + (i % 250) as u8;
            let name = if i % 2 == 0 { "admin" } else { "nobody" };
            let reply = login_from(server, last, name, "wrong-password").await;
            let status = reply.status().as_u16();
            let retry = reply.headers().get("retry-after").is_some();
            let body: Value = reply.json().await.unwrap();
            (status, retry, body)
        }
    });
    let during = async {
        // Client traffic keeps flowing meanwhile.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        let reply = server.call("GET", "/v1/models", Some(&client), None).await;
        reply.expect(200);
        t.elapsed()
    };
    let (results, models_took) = tokio::join!(futures_util::future::join_all(flood), during);
    let took = started.elapsed();
    let peak = rss_kib(server.pid());
    for (status, retry, body) in &results {
        assert!([401, 429, 503].contains(status), "{status}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
        if *status != 401 {
            assert!(retry, "a {status} carries Retry-After");
        }
    }
    let checked = results.iter().filter(|r| r.0 == 401).count();
    eprintln!("flood: {checked} checked, idle {idle} KiB, peak {peak} KiB, {took:?}, /v1/models {models_took:?}");
    assert!(checked >= 2, "some logins are checked: {checked}");
    assert!(
        peak.saturating_sub(idle) < 100 * 1024,
        "RSS grew from {idle} KiB to {peak} KiB"
    );
    assert!(took < Duration::from_secs(30), "the flood took {took:?}");
    assert!(
        models_took < Duration::from_secs(3),
        "/v1/models took {models_took:?} during the flood"
    );
}

#[tokio::test]
async fn password_hashes_leave_no_argon2_memory_in_the_router() {
    let server = TestServer::start().await;
    let before = rss_kib(server.pid());
    // Each hash fills 19 MiB; in the router those pages would stay mapped for good.
    let _admin = server.admin_key().await;
    for _ in 0..3 {
        assert_eq!(login_from(&server, 1, "admin", "password123").await.status(), 200);
    }
    assert_eq!(login_from(&server, 1, "admin", "wrong-password").await.status(), 401);
    let after = rss_kib(server.pid());
    assert!(
        after.saturating_sub(before) < 12 * 1024,
        "RSS grew from {before} KiB to {after} KiB over five password hashes"
    );
}

#[tokio::test]
async fn concurrent_wrong_logins_cannot_race_past_the_limit_and_the_owner_still_logs_in() {
    let (server, _admin) = TestServer::with_admin().await;
    let guesses = (0..60).map(|_| login_from(&server, 1, "admin", "wrong-guess"));
    let statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + throttled, 60, "{statuses:?}");
    assert!(checked <= 5, "only the 5 free misses are checked: {statuses:?}");
    // The guessing address waits even with the right password...
    let same = login_from(&server, 1, "admin", "password123").await;
    assert_eq!(same.status(), 429);
    // ...but the owner's own machine, which has not been failing, gets in.
    let owner = login_from(&server, 9, "admin", "password123").await;
    assert_eq!(owner.status(), 200);
    assert!(owner.headers().get("set-cookie").is_some());
}

#[tokio::test]
async fn cookie_writes_need_this_origin_and_json_while_keys_are_unaffected() {
    let (server, admin) = TestServer::with_admin().await;
    let cookie = server.login("admin", "password123").await;
    let host = server.url.trim_start_matches("http://").to_string();
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    let same = server.url.clone();
    let other_port = format!("http://127.0.0.1:{}", port.wrapping_add(1));
    let origins: [(&str, Option<&str>, bool); 6] = [
        ("no origin", None, true),
        ("same origin", Some(&same), true),
        ("evil site", Some("http://evil.example"), false),
        ("other port", Some(&other_port), false),
        ("sub-domain", Some("http://sub.localhost"), false),
        ("null", Some("null"), false),
    ];
    let types = [
        ("application/json", true),
        ("application/json; charset=utf-8", true),
        ("text/plain", false),
        ("application/x-www-form-urlencoded", false),
        ("multipart/form-data; boundary=x", false),
    ];
    let mut created = 0;
    for (what, origin, origin_ok) in origins {
        for (content_type, type_ok) in types {
            // Key names are unique: each accepted create needs its own.
            created += 1;
            let body = json!({"name": format!("csrf-{created}"), "role": "admin"}).to_string();
            let mut request = server
                .http
                .post(format!("{}/api/api-keys", server.url))
                .header("cookie", &cookie)
                .header("content-type", content_type)
                .body(body);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            let reply = server.send(request).await;
            let expected = match (origin_ok, type_ok) {
                (false, _) => 403,
                (true, false) => 415,
                (true, true) => 201,
            };
            assert_eq!(reply.status, expected, "{what} × {content_type}: {}", reply.text);
            assert!(reply.json()["error"].is_object() || expected == 201, "{}", reply.text);
        }
    }
    // A browser's own signal beats a missing Origin.
    let reply = server
        .send(
            server
                .http
                .delete(format!("{}/api/api-keys/whatever", server.url))
                .header("cookie", &cookie)
                .header("sec-fetch-site", "same-site"),
        )
        .await;
    reply.expect(403);
    // A key is not a cookie: another site cannot attach it, so nothing is checked.
    let reply = server
        .send(
            server
                .http
                .post(format!("{}/api/api-keys", server.url))
                .bearer_auth(&admin)
                .header("origin", "http://evil.example")
                .header("content-type", "text/plain")
                .body(json!({"name": "csrf-by-key", "role": "admin"}).to_string()),
        )
        .await;
    reply.expect(201);
    // Reads are not writes.
    let reply = server
        .send(
            server
                .http
                .get(format!("{}/api/api-keys", server.url))
                .header("cookie", &cookie)
                .header("origin", "http://evil.example"),
        )
        .await;
    reply.expect(200);
}

#[tokio::test]
async fn every_response_carries_security_headers_and_the_ui_a_strict_csp() {
    let server = TestServer::start().await;
    for path in ["/", "/providers", "/favicon.svg"] {
        let reply = server.call("GET", path, None, None).await;
        reply.expect(200);
        let csp = reply.header("content-security-policy").unwrap_or_default();
        for part in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"), "{path}");
    }
    let index = server.call("GET", "/", None, None).await;
    assert!(!index.text.contains("<script>"), "no inline script in index.html");
    let reply = server.call("GET", "/api/session", None, None).await;
    reply.expect(401);
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert!(reply.header("content-security-policy").is_some());
}

/// Says hello over a raw socket; returns the router's answer and the socket.
async fn hello(server: &TestServer, token: &str, name: &str, models: Value) -> (Value, WorkerSocket) {
    let hello = json!({"type": "hello", "protocol": 1, "kind": "gpu", "name": name, "models": models, "slots": 1, "version": "test"});
    hand_driven_worker(server, token, hello).await
}

async fn worker_models(server: &TestServer, admin: &str, name: &str) -> Vec<String> {
    let workers = server.call("GET", "/api/workers", Some(admin), None).await.json();
    workers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name && w["status"] != "offline")
        .map(|w| serde_json::from_value(w["models"].clone()).unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_hostile_worker_cannot_take_a_cloud_models_traffic_unless_the_operator_allows_it() {
    let (server, admin) = TestServer::with_admin().await;
    let client = server.client_key(&admin).await;
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["gpt-4o-mini"]).await;
    server.add_provider(&admin, "openai", &cloud, CLOUD_KEY).await;

    // A token with no allow-list: the cloud's name is dropped, its own model kept.
    let token = worker_token(&server, &admin, "hostile", "gpu").await;
    let (ack, mut socket) = hello(&server, &token, "hostile", json!(["gpt-4o-mini", "local-qwen"])).await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");
    assert_eq!(worker_models(&server, &admin, "hostile").await, ["local-qwen"]);
    let reply = server.chat(&client, "gpt-4o-mini", false).await;
    reply.expect(200);
    assert_eq!(reply.header("x-auxot-tier"), Some("cloud"));
    // Nothing reached the worker.
    let got = tokio::time::timeout(Duration::from_millis(300), socket.next()).await;
    assert!(
        !matches!(&got, Ok(Some(Ok(Message::Text(t)))) if t.contains("\"job\"")),
        "{got:?}"
    );
    drop(socket);

    // Advertising only a cloud model: refused, saying why.
    let token = worker_token(&server, &admin, "only-cloud", "gpu").await;
    let (answer, _) = hello(&server, &token, "only-cloud", json!(["gpt-4o-mini"])).await;
    assert_eq!(answer["type"], "refused", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("allowed_models"),
        "{answer}"
    );

    // Names and counts are bounded; the refusal quotes only a prefix.
    let (answer, _) = hello(&server, &token, "huge", json!(["x".repeat(1_000_000)])).await;
    assert_eq!(answer["type"], "refused");
    assert!(
        answer["message"].as_str().unwrap().len() < 1000,
        "{}",
        answer["message"]
    );
    let many: Vec<String> = (0..1001).map(|i| format!("m{i}")).collect();
    let (answer, _) = hello(&server, &token, "many", json!(many)).await;
    assert_eq!(answer["type"], "refused");

    // The operator's deliberate override: this worker goes first for the cloud's model.
    let token = worker_token_allowing(&server, &admin, "blessed", "gpu", &["gpt-4o-mini"]).await;
    let (ack, _socket) = hello(&server, &token, "blessed", json!(["gpt-4o-mini", "other"])).await;
    assert_eq!(ack["type"], "hello_ack");
    assert_eq!(worker_models(&server, &admin, "blessed").await, ["gpt-4o-mini"]);
}

#[tokio::test]
async fn a_provider_added_later_takes_its_names_back_from_connected_workers() {
    let (server, admin) = TestServer::with_admin().await;
    let token = worker_token(&server, &admin, "early", "gpu").await;
    let (ack, _socket) = hello(&server, &token, "early", json!(["gpt-4o-mini", "qwen"])).await;
    assert_eq!(ack["type"], "hello_ack");
    assert_eq!(worker_models(&server, &admin, "early").await, ["gpt-4o-mini", "qwen"]);
    let cloud = FakeUpstream::openai("cloud", &[CLOUD_KEY], &["gpt-4o-mini"]).await;
    server.add_provider(&admin, "openai", &cloud, CLOUD_KEY).await;
    let narrowed = eventually(Duration::from_secs(5), || async {
        worker_models(&server, &admin, "early").await == ["qwen"]
    })
    .await;
    assert!(narrowed, "{:?}", worker_models(&server, &admin, "early").await);
}

#[tokio::test]
async fn worker_token_allow_lists_are_set_shown_and_validated() {
    let (server, admin) = TestServer::with_admin().await;
    let reply = server
        .call(
            "POST",
            "/api/worker-tokens",
            Some(&admin),
            Some(json!({"name": "w", "kind": "gpu", "allowed_models": ["qwen*", "gpt-4o"]})),
        )
        .await;
    reply.expect(201);
    let created = reply.json();
    assert_eq!(created["allowed_models"], json!(["qwen*", "gpt-4o"]));
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/worker-tokens/{id}");
    let reply = server
        .call("PATCH", &path, Some(&admin), Some(json!({"monthly_price_usd": 20.0})))
        .await;
    reply.expect(200);
    assert_eq!(
        reply.json()["allowed_models"],
        json!(["qwen*", "gpt-4o"]),
        "an absent field is kept"
    );
    let reply = server
        .call("PATCH", &path, Some(&admin), Some(json!({"allowed_models": null})))
        .await;
    reply.expect(200);
    assert_eq!(reply.json()["allowed_models"], Value::Null);
    assert_eq!(reply.json()["monthly_price_usd"], 20.0);
    for bad in [json!(["a b"]), json!([""]), json!(["q*w*"]), json!(["x".repeat(300)])] {
        let reply = server
            .call("PATCH", &path, Some(&admin), Some(json!({"allowed_models": bad})))
            .await;
        reply.expect(400);
        assert!(reply.text.len() < 1000, "{}", reply.text);
    }
    let listed = server
        .call("GET", "/api/worker-tokens", Some(&admin), None)
        .await
        .json();
    assert_eq!(listed["data"][0]["allowed_models"], Value::Null);
}

/// One raw HTTP/1.1 exchange on `stream`: returns (status, headers lower-cased, body).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Option<(u16, String, Vec<u8>)> {
    stream.write_all(request).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((status, head, buf[head_end..head_end + length].to_vec()))
}

fn post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[tokio::test]
async fn a_refused_request_never_spoils_its_keep_alive_connection() {
    let (server, admin) = TestServer::with_admin_using(Options::with_args(&["--body-limit", "100000"])).await;
    let client = server.client_key(&admin).await;
    for _ in 0..5 {
        login_from(&server, 1, "admin", "wrong").await;
    }
    let addr = server.url.trim_start_matches("http://").to_string();
    let big = vec![b' '; 200_000];
    let small = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    let kinds: Vec<(&str, Vec<u8>, u16)> = vec![
        ("401 no key, big body", post("/v1/chat/completions", "", &big), 401),
        ("401 no key, small body", post("/v1/chat/completions", "", &small), 401),
        (
            "403 client key on an admin write",
            post("/api/api-keys", &format!("authorization: Bearer {client}\r\n"), &big),
            403,
        ),
        (
            "413 over the limit",
            post(
                "/v1/chat/completions",
                &format!("authorization: Bearer {client}\r\n"),
                &big,
            ),
            413,
        ),
        ("413 oversized login", post("/api/login", "", &big), 413),
        (
            "429 throttled login",
            post("/api/login", "", br#"{"username":"admin","password":"wrong"}"#),
            429,
        ),
        (
            "403 cross-site",
            post(
                "/api/api-keys",
                "cookie: auxot_session=x\r\norigin: http://evil.example\r\n",
                &big,
            ),
            403,
        ),
        ("404 no such endpoint", post("/api/nothing-here", "", &big), 404),
        ("405 wrong method", post("/healthz", "", &big), 405),
    ];
    for (what, request, status) in kinds {
        for round in 0..3 {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            let (got, head, body) = exchange(&mut stream, &request)
                .await
                .unwrap_or_else(|| panic!("{what}: no answer"));
            assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
            let parsed: Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{what}: not JSON"));
            assert!(parsed["error"].is_object(), "{what}: {parsed}");
            if head.contains("connection: close") {
                // Announced: the client opens a new connection, as HTTP/1.1 clients do.
                let mut rest = Vec::new();
                let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
                assert!(closed.is_ok(), "{what}: announced a close but kept the socket open");
                continue;
            }
            let next = exchange(&mut stream, b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await;
            assert!(
                matches!(next, Some((200, _, _))),
                "{what} (round {round}): the connection was spoiled without `Connection: close`"
            );
        }
    }
}

#[tokio::test]
async fn error_bodies_quote_only_a_bounded_prefix_of_the_input() {
    let (server, admin) = TestServer::with_admin().await;
    let client = server.client_key(&admin).await;
    let model = "m".repeat(2_000_000);
    let reply = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&client),
            Some(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert!(reply.status >= 400, "{}", reply.status);
    assert!(reply.text.len() < 8 * 1024, "{} bytes of error body", reply.text.len());
    let reply = server
        .call(
            "POST",
            "/v1/messages",
            Some(&client),
            Some(json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert!(reply.status >= 400);
    assert!(reply.text.len() < 8 * 1024, "{} bytes of error body", reply.text.len());
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_is_private_and_a_refused_start_leaves_the_db_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let (mut server, admin) = TestServer::with_admin().await;
    server.client_key(&admin).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&server.data_dir), 0o700);
    assert_eq!(mode(&server.db_path()), 0o600);
    for entry in std::fs::read_dir(&server.data_dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path) & 0o077, 0, "{} is readable by others", path.display());
    }
    server.stop().await;
    let before = std::fs::read(server.db_path()).unwrap();
    let mtime = std::fs::metadata(server.db_path()).unwrap().modified().unwrap();
    // mtime has coarse granularity on some file systems: give a write a chance to show.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let refused = server
        .relaunch(Options {
            secret_key: Some(OTHER_KEY.into()),
            ..Options::default()
        })
        .await;
    let logs = refused.err().expect("a wrong key must be refused");
    assert!(logs.contains("not the key"), "{logs}");
    assert_eq!(std::fs::read(server.db_path()).unwrap(), before, "the db changed");
    assert_eq!(
        std::fs::metadata(server.db_path()).unwrap().modified().unwrap(),
        mtime,
        "the db's mtime changed"
    );
}

#[tokio::test]
async fn a_rejected_worker_token_backs_off_and_says_why() {
    let server = TestServer::start().await;
    let gpu = FakeUpstream::openai("gpu-box", &["k"], &["qwen"]).await;
    let args = vec![
        "gpu".to_string(),
        "--upstream".into(),
        gpu.base_url(),
        "--upstream-key".into(),
        "k".into(),
    ];
    let mut worker = TestWorker::spawn(&server.url, "revoked", "auxw_not-a-real-token", 1, args, &[]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let logs = worker.logs();
    worker.kill().await;
    let attempts = logs.matches("rejected the worker token").count();
    assert!(attempts >= 2, "it retries: {logs}");
    // 0.25 s doubling (±50 %): at most ~5 tries in 4 s, never a tight loop.
    assert!(attempts <= 6, "{attempts} attempts in 4 s:\n{logs}");
    assert!(logs.contains("retry_in_ms"), "{logs}");
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_a_json_error_too() {
    let server = TestServer::start().await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let huge = format!("x-big: {}\r\n", "a".repeat(1_000_000));
    let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    for (what, extra, status) in [("one huge header", huge, 431), ("too many headers", many, 431)] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let request = format!("GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n{extra}\r\n");
        // The server may answer before it has read everything: ignore a failed write.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{what}: {text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let parsed: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert_eq!(parsed["error"]["code"], "headers_too_large", "{what}");
    }
}

async fn login_via_proxy(server: &TestServer, forwarded_for: &str, password: &str) -> u16 {
    client_from(1)
        .post(format!("{}/api/login", server.url))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Wrong guesses through the proxy, as `forwarded_for`, until the throttle refuses them: 20 at
/// once, then one at a time. A guess the busy hasher turned away (503, on a loaded machine)
/// has no verdict and is not a miss, so the burst alone may fall short of the limit.
async fn guess_until_throttled(server: &TestServer, forwarded_for: &str) {
    let burst =
        futures_util::future::join_all((0..20).map(|_| login_via_proxy(server, forwarded_for, "wrong-guess"))).await;
    if burst.contains(&429) {
        return;
    }
    for _ in 0..10 {
        if login_via_proxy(server, forwarded_for, "wrong-guess").await == 429 {
            return;
        }
    }
    panic!("30 wrong guesses as {forwarded_for} were never throttled: {burst:?}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_login_throttle_counts_each_client_not_the_proxy() {
    let server = TestServer::start_with(Options::with_args(&["--trusted-proxy", "127.0.0.1,10.0.0.0/8"])).await;
    server.admin_key().await;
    guess_until_throttled(&server, "203.0.113.9").await;
    assert_eq!(login_via_proxy(&server, "203.0.113.9", "password123").await, 429);
    // Another client behind the same proxy is not locked out by the first one's guesses.
    assert_eq!(
        login_via_proxy(&server, "203.0.113.10, 10.0.0.5", "password123").await,
        200
    );
    // A forged entry left of the real client changes nothing.
    assert_eq!(
        login_via_proxy(&server, "198.51.100.1, 203.0.113.9", "password123").await,
        429
    );

    // Without the setting the header is ignored: the guesses count against the proxy.
    let plain = TestServer::start().await;
    plain.admin_key().await;
    guess_until_throttled(&plain, "203.0.113.9").await;
    assert_eq!(login_via_proxy(&plain, "203.0.113.10", "password123").await, 429);
}

/// The router's open descriptors and its soft open-file limit, from /proc.
fn open_files(pid: u32) -> (u64, u64) {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    (open, soft)
}

#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_limit_and_a_low_one_is_said() {
    // A shell's 1024 would refuse a flood of some 500 clients.
    let roomy = TestServer::start_with(Options::default().open_files(256, 8192)).await;
    assert_eq!(open_files(roomy.pid()).1, 8192);
    assert!(!roomy.logs().contains("open-file limit is low"), "{}", roomy.logs());
    let tight = TestServer::start_with(Options::default().open_files(256, 1024)).await;
    assert_eq!(open_files(tight.pid()).1, 1024);
    assert!(tight.logs().contains("open-file limit is low"), "{}", tight.logs());
}

/// Sends one request for /healthz on `socket` and reads its reply's status line, waiting at
/// most `wait`; `None` when no reply came in time.
async fn health_on(socket: &mut TcpStream, wait: Duration) -> Option<String> {
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: auxot\r\n\r\n")
        .await
        .unwrap();
    let mut reply = vec![0u8; 4096];
    let read = tokio::time::timeout(wait, socket.read(&mut reply)).await.ok()?.unwrap();
    let text = String::from_utf8_lossy(&reply[..read]).into_owned();
    text.lines().next().map(str::to_string)
}

#[tokio::test]
async fn clients_past_the_connection_cap_wait_in_the_backlog_until_one_closes() {
    let options = Options::with_args(&["--max-connections", "3", "--metrics-token", "scrape-token"]);
    let server = TestServer::start_with(options).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        let status = health_on(&mut socket, Duration::from_secs(10)).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
        open.push(socket);
    }
    // The fourth is let into the backlog by the kernel, but not served while three are open.
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    let early = health_on(&mut fourth, Duration::from_millis(300)).await;
    assert_eq!(early, None, "a fourth connection was served past a cap of three");
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.logs().contains("connection cap is reached")
        })
        .await,
        "{}",
        server.logs()
    );
    // One closes: the waiting client is served, its request not lost.
    drop(open.remove(0));
    let mut reply = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), fourth.read(&mut reply))
        .await
        .expect("the waiting client was not served once a connection closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&reply[..read]).starts_with("HTTP/1.1 200 OK"));
    // The ones still open are served as before, and /metrics counts the three.
    let status = health_on(&mut open[0], Duration::from_secs(10)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    open[0]
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: auxot\r\nauthorization: Bearer scrape-token\r\n\r\n")
        .await
        .unwrap();
    let mut metrics = String::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while !metrics.contains("auxot_connections_max 3") {
        let read = tokio::time::timeout(Duration::from_secs(10), open[0].read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no whole /metrics reply: {metrics}"))
            .unwrap();
        assert!(read > 0, "closed mid-reply: {metrics}");
        metrics.push_str(&String::from_utf8_lossy(&chunk[..read]));
    }
    assert!(metrics.contains("\nauxot_connections_open 3\n"), "{metrics}");
}

#[tokio::test]
async fn a_router_out_of_file_descriptors_answers_503_and_leaves_the_provider_healthy() {
    const LIMIT: u64 = 64;
    let fake = FakeUpstream::openai("tight", &[CLOUD_KEY], &["sleep-1500"]).await;
    // A cap above the limit: the default one would stop the idle clients before the
    // descriptors run out, and this is what a router set that high does when they do.
    let options = Options::default()
        .open_files(LIMIT, LIMIT)
        .arg("--max-connections")
        .arg("1000");
    let (server, admin) = TestServer::with_admin_using(options).await;
    let provider = server.add_provider(&admin, "tight", &fake, CLOUD_KEY).await;
    let id = provider["id"].as_str().unwrap().to_string();
    let client = server.client_key(&admin).await;
    let pid = server.pid();
    let addr = server.url.trim_start_matches("http://").to_string();
    // Idle client connections take the router's descriptors until four are left.
    let mut idle = Vec::new();
    while open_files(pid).0 < LIMIT - 4 {
        let before = open_files(pid).0;
        idle.push(TcpStream::connect(&addr).await.unwrap());
        let accepted = eventually(Duration::from_secs(5), || async { open_files(pid).0 > before }).await;
        assert!(accepted, "a connection was not accepted at {before} open files");
    }
    // Eight requests at once, each on its own connection, to a model that answers after
    // 1.5 s: the pooled connection serves one, the others find no descriptor to connect with.
    let replies = futures_util::future::join_all((0..8).map(|_| {
        let request = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", server.url))
            .bearer_auth(&client)
            .json(&json!({"model": "sleep-1500", "messages": [{"role": "user", "content": "hi"}]}));
        async move {
            let reply = request.send().await.unwrap();
            let status = reply.status().as_u16();
            let retry = reply
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (status, retry, reply.json::<Value>().await.unwrap())
        }
    }))
    .await;
    let short = replies.iter().filter(|(status, _, _)| *status == 503).count();
    assert!(short >= 1, "no request met the shortage: {replies:?}");
    for (status, retry, body) in &replies {
        match status {
            200 => {}
            503 => {
                assert_eq!(body["error"]["code"], "router_out_of_resources", "{body}");
                assert!(
                    body["error"]["message"].as_str().unwrap().contains("open files"),
                    "{body}"
                );
                assert_eq!(retry.as_deref(), Some("1"), "{body}");
            }
            _ => panic!("answered {status}: {body}"),
        }
    }
    // The shortage was the router's: the provider never cooled, and serves at once.
    drop(idle);
    server.chat(&client, "sleep-1500", false).await.expect(200);
    let view = server.provider_view(&admin, &id).await;
    assert!(view["cooldown_until"].is_null(), "{view}");
    assert!(!server.logs().contains("target cooling down"), "{}", server.logs());
}

/// A router with a client key and one provider, whose stream (model `fast-stream`) is
/// ~100 MB of 2 KB chunks sent as fast as it can.
async fn router_with_fast_stream() -> (crate::support::scripted::ScriptedProvider, TestServer, String) {
    let upstream = crate::support::scripted::ScriptedProvider::start(&["fast-stream"], |_| {
        let event = format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fast-stream",
                   "choices": [{"index": 0, "delta": {"content": "x".repeat(2000)}, "finish_reason": null}]})
        );
        let event = bytes::Bytes::from(event);
        // ~100 MB, far more than every buffer on the way holds.
        let chunks = futures_util::stream::iter((0..50_000).map(move |_| Ok::<_, std::io::Error>(event.clone())));
        (crate::support::stream_body(chunks), "text/event-stream")
    })
    .await;
    let (server, admin) = TestServer::with_admin().await;
    server
        .add_provider_at(&admin, "fast", "openai-compatible", &upstream.openai_url(), CLOUD_KEY)
        .await;
    let client = server.client_key(&admin).await;
    (upstream, server, client)
}

/// Once `streams` stalled streams have filled what they may (the router's growth stopped, or
/// 8 s passed), the router at `pid` must have grown over `before` KiB by under 500 KiB a
/// stream at its peak: 64 KiB of buffer each way and the stream's own state.
async fn assert_stalled_streams_hold_little(pid: u32, before: u64, streams: usize, what: &str) {
    let started = Instant::now();
    let (mut peak, mut last) = (before, before);
    while started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss_kib(pid);
        peak = peak.max(now);
        if started.elapsed() > Duration::from_secs(2) && now.abs_diff(last) < 256 {
            break;
        }
        last = now;
    }
    let grown = peak.saturating_sub(before);
    assert!(
        grown < (streams as u64) * 500,
        "{streams} stalled {what} streams grew the router by {grown} KiB ({} KiB each)",
        grown / streams as u64
    );
}

/// A client that stops reading a fast stream costs the router a bounded buffer, not what
/// hyper would hold by default (~400 KiB each way, ~1 MB a stalled stream).
#[tokio::test]
async fn clients_that_stop_reading_a_fast_stream_hold_little_memory() {
    const STALLED: usize = 40;
    let (_upstream, server, client) = router_with_fast_stream().await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let body =
        json!({"model": "fast-stream", "stream": true, "messages": [{"role": "user", "content": "go"}]}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {client}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let before = rss_kib(server.pid());
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    // Every stream fills what it may: the kernel's socket buffers, then the router's
    // (~220–260 KiB measured a stream).
    assert_stalled_streams_hold_little(server.pid(), before, STALLED, "HTTP/1.1").await;
    // They were answered (a stream, not an error), just not read.
    for stream in &mut stalled {
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "a stalled stream was answered");
    }
    drop(stalled);
    // The router is still itself.
    server.call("GET", "/v1/models", Some(&client), None).await.expect(200);
}

/// The same over HTTP/2: many stalled streams on one connection, each bounded.
#[tokio::test]
async fn http2_streams_a_client_stops_reading_hold_little_memory() {
    const STALLED: usize = 40;
    let (_upstream, server, client) = router_with_fast_stream().await;
    // Large windows, as some clients grant: the router may send far ahead of the reader,
    // so what it buffers per stream is its own bound.
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(16 << 20)
        .http2_initial_connection_window_size(1 << 30)
        .build()
        .unwrap();
    let before = rss_kib(server.pid());
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let response = h2c
            .post(format!("{}/v1/chat/completions", server.url))
            .bearer_auth(&client)
            .json(&json!({"model": "fast-stream", "stream": true, "messages": [{"role": "user", "content": "go"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        stalled.push(response);
    }
    // ~360–390 KiB measured a stream.
    assert_stalled_streams_hold_little(server.pid(), before, STALLED, "HTTP/2").await;
    drop(stalled);
    server.call("GET", "/v1/models", Some(&client), None).await.expect(200);
}

/// The next frame of type `kind` a hand-driven worker gets (within 10 s).
async fn next_of_type(worker: &mut WorkerSocket, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, worker.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == kind {
                    return frame;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no {kind} frame: {other:?}"),
        }
    }
}

/// A worker's chunk frame with 2,000 characters of content.
fn big_chunk(job: &str) -> String {
    json!({"type": "chunk", "job_id": job, "chunk": {"id": "c", "object": "chat.completion.chunk", "created": 1,
           "model": "qwen", "choices": [{"index": 0, "delta": {"content": "x".repeat(2000)}, "finish_reason": null}]}})
    .to_string()
}

/// A plain chat request for `qwen`, sent from a task of its own (a hand-driven worker
/// answers it meanwhile).
fn ask_qwen_in_background(server: &TestServer, client: &str) -> tokio::task::JoinHandle<reqwest::Response> {
    let (url, client) = (server.url.clone(), client.to_string());
    tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(client)
            .json(&json!({"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    })
}

async fn fast_worker(server: &TestServer, admin: &str) -> WorkerSocket {
    let token = worker_token(server, admin, "fast", "gpu").await;
    let hello = json!({"type": "hello", "protocol": 1, "kind": "gpu", "name": "fast", "models": ["qwen"], "slots": 1, "version": "test"});
    let (ack, worker) = hand_driven_worker(server, &token, hello).await;
    assert_eq!(ack["type"], "hello_ack");
    worker
}

#[tokio::test]
async fn a_client_that_stops_reading_a_workers_stream_has_its_job_cancelled_and_frees_the_slot() {
    use futures_util::SinkExt;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let mut worker = fast_worker(&server, &admin).await;

    // A streaming client that never reads.
    let body = json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": "go"}]}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {client}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket
        .connect(server.url.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    stalled.write_all(request.as_bytes()).await.unwrap();
    let job = next_of_type(&mut worker, "job").await;
    let job_id = job["job_id"].as_str().unwrap().to_string();
    // The model server is fast: ~20 MB at once, far past what the socket buffers hold
    // and the router keeps for a reader that reads nothing, then a chunk every 50 ms until
    // the router gives up on the reader.
    for _ in 0..10_000 {
        worker.send(Message::text(big_chunk(&job_id))).await.unwrap();
    }
    let started = Instant::now();
    let cancel = loop {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the stalled job was never cancelled"
        );
        worker.send(Message::text(big_chunk(&job_id))).await.unwrap();
        if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(Duration::from_millis(50), worker.next()).await
        {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "cancel" {
                break frame;
            }
        }
    };
    assert_eq!(cancel["job_id"], job_id.as_str());
    worker
        .send(Message::text(json!({"type": "done", "job_id": job_id}).to_string()))
        .await
        .unwrap();

    // The one slot serves the next request while the stalled client still holds its stream.
    let next = ask_qwen_in_background(&server, &client);
    let second = next_of_type(&mut worker, "job").await;
    let second_id = second["job_id"].as_str().unwrap().to_string();
    assert_ne!(second_id, job_id);
    let answer = json!({"type": "chunk", "job_id": second_id, "chunk": {"id": "c2", "object": "chat.completion.chunk",
        "created": 1, "model": "qwen", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}});
    worker.send(Message::text(answer.to_string())).await.unwrap();
    worker
        .send(Message::text(json!({"type": "done", "job_id": second_id}).to_string()))
        .await
        .unwrap();
    let reply = next.await.unwrap();
    assert_eq!(reply.status(), 200);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "hello");
    drop(stalled);
}

#[tokio::test]
async fn a_workers_whole_answer_past_32_mib_is_refused_not_held() {
    use futures_util::SinkExt;
    let (server, admin, client) = TestServer::with_admin_and_client().await;
    let mut worker = fast_worker(&server, &admin).await;
    let asked = ask_qwen_in_background(&server, &client);
    let job = next_of_type(&mut worker, "job").await;
    let job_id = job["job_id"].as_str().unwrap().to_string();
    for _ in 0..17_000 {
        worker.send(Message::text(big_chunk(&job_id))).await.unwrap();
    }
    let cancel = next_of_type(&mut worker, "cancel").await;
    assert_eq!(cancel["job_id"], job_id.as_str());
    let reply = asked.await.unwrap();
    assert_eq!(reply.status(), 502);
    let body: Value = reply.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("larger than 32 MiB"), "{body}");
}

/// Sends `head` and the first `sent` bytes of `body` (its whole length declared), then
/// nothing more: what the router answers, and how long it took.
async fn stall_mid_body(server: &TestServer, head: &str, body: &str, sent: usize) -> (String, Duration) {
    let mut socket = TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "{head}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.write_all(&body.as_bytes()[..sent]).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a client stalled mid-body was never let go");
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test]
async fn a_client_that_stalls_mid_body_is_answered_408_and_let_go_but_a_slow_steady_one_is_served() {
    let upstream = FakeUpstream::openai("oa", &[CLOUD_KEY], &["gpt-4o-mini"]).await;
    let (server, admin) = TestServer::with_admin_using(Options::with_args(&["--client-timeout-secs", "1"])).await;
    server.add_provider(&admin, "openai", &upstream, CLOUD_KEY).await;
    let client = server.client_key(&admin).await;

    // Anonymous: the login form, half sent.
    let login = json!({"username": "admin", "password": "password123"}).to_string();
    let (answer, took) = stall_mid_body(&server, "POST /api/login HTTP/1.1\r\nhost: x\r\n", &login, 10).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(took < Duration::from_secs(5), "let go after {took:?}");

    // The same limit holds for the head.
    let mut half_head = TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap();
    half_head.write_all(b"POST /api/login HTTP/1.1\r\nhost:").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), half_head.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a half-sent head was held past the client timeout");

    // A model request, in the caller's dialect.
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let openai = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {client}\r\n");
    let (answer, _) = stall_mid_body(&server, &openai, &chat, 20).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    let anthropic =
        format!("POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {client}\r\nanthropic-version: 2023-06-01\r\n");
    let (answer, _) = stall_mid_body(&server, &anthropic, &chat, 20).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["type"], "error", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("sent nothing of its request body"), "{body}");

    // A slow but steady upload (a piece every 400 ms, 2.4 s in all) is no stall.
    let mut socket = TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap();
    socket
        .write_all(
            format!(
                "{openai}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                chat.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    for piece in chat.as_bytes().chunks(chat.len() / 6 + 1) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        socket.write_all(piece).await.unwrap();
    }
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

//! The provider key appears nowhere it must not: no log line (at trace level), no response
//! body, no byte of the data dir — neither as text nor as base64.

use crate::support::{FakeUpstream, Options, TestServer};
use base64::Engine as _;
use serde_json::json;

const FIRST: &str = "sk-LEAKCHECK-first-0123456789abcdef";
const ROTATED: &str = "sk-LEAKCHECK-rotated-fedcba9876543210";
const ECHOED: &str = "sk-echo-LEAKCHECK-echoed-5555555555";

fn forms(key: &str) -> Vec<String> {
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut out = vec![key.to_string()];
    out.extend(engines.iter().map(|e| e.encode(key)));
    out.push(hex::encode(key));
    out
}

fn assert_absent(haystack: &[u8], key: &str, place: &str) {
    for form in forms(key) {
        let found = haystack.windows(form.len()).any(|w| w == form.as_bytes());
        assert!(!found, "{place} contains the provider key (as {form})");
    }
}

#[tokio::test]
async fn provider_keys_never_reach_logs_responses_or_the_database() {
    let fake = FakeUpstream::openai("up", &[FIRST, ROTATED], &["gpt-4o", "fail-500"]).await;
    let (mut server, admin) = TestServer::with_admin_using(Options {
        log_level: "trace",
        ..Options::default()
    })
    .await;
    let provider = server.add_provider(&admin, "main", &fake, FIRST).await;
    let id = provider["id"].as_str().unwrap().to_string();
    let client = server.client_key(&admin).await;

    server.chat(&client, "gpt-4o", false).await.expect(200);
    server.chat(&client, "gpt-4o", true).await.expect(200);
    server.chat(&client, "fail-500", false).await.expect(500);
    server.chat(&client, "gpt-99", false).await.expect(404);
    server
        .call_raw("POST", "/v1/chat/completions", Some(&client), "{bad json")
        .await
        .expect(400);
    server
        .call("GET", "/api/providers", Some(&admin), None)
        .await
        .expect(200);
    server
        .call("GET", &format!("/api/providers/{id}"), Some(&admin), None)
        .await
        .expect(200);
    server.call("GET", "/api/models", Some(&admin), None).await.expect(200);
    server.call("GET", "/v1/models", Some(&client), None).await.expect(200);
    // A key the upstream echoes back in its error must not come through either.
    server
        .call(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(&admin),
            Some(json!({"api_key": ECHOED})),
        )
        .await
        .expect(422);
    server
        .call(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(&admin),
            Some(json!({"api_key": ROTATED})),
        )
        .await
        .expect(200);
    server.chat(&client, "gpt-4o", true).await.expect(200);
    server
        .call(
            "POST",
            &format!("/api/providers/{id}/refresh-models"),
            Some(&admin),
            None,
        )
        .await
        .expect(200);
    // Malformed provider bodies that carry a key.
    server
        .call_raw(
            "POST",
            "/api/providers",
            Some(&admin),
            format!(r#"{{"name":"x","type":"openai","api_key":"{FIRST}""#),
        )
        .await
        .expect(400);
    server
        .call(
            "POST",
            "/api/providers",
            Some(&admin),
            Some(json!({"name": "bad name", "type": "openai", "api_key": FIRST})),
        )
        .await
        .expect(400);
    server.stop().await;

    let logs = server.logs();
    assert!(logs.contains("TRACE"), "the scan needs trace-level logs");
    assert!(fake.chat_requests().len() >= 4, "the fake saw the requests");
    for key in [FIRST, ROTATED, ECHOED] {
        assert_absent(logs.as_bytes(), key, "the log");
        for (i, body) in server.bodies().iter().enumerate() {
            assert_absent(body.as_bytes(), key, &format!("response body #{i}"));
        }
        for path in files_below(&server.data_dir) {
            assert_absent(&std::fs::read(&path).unwrap(), key, &path.display().to_string());
        }
    }
    // The upstream did get the key: the scan looks for something real.
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.header("authorization") == Some(format!("Bearer {ROTATED}").as_str())));
}

/// Every file in `dir` and the folders below it (the usage journal is one).
fn files_below(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files
}

//! In-process handler tests: the whole route table driven through `warp::test`, no socket
//! and no child process, for what a handler decides before any target is reached — a
//! refused caller, a body that cannot be read — and the shape of its error in the caller's
//! dialect. (Black-box tests against the real server are in `tests/`.)

use crate::config::{ServeArgs, ServeConfig};
use crate::store::Role;
use crate::AppState;
use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// A router on a fresh data dir, with a client API key.
struct Harness {
    _temp: tempfile::TempDir,
    state: AppState,
    key: String,
}

async fn harness() -> Harness {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let cli = Cli::parse_from(["auxot", "--data-dir", data_dir.to_str().unwrap()]);
    let state = crate::start(ServeConfig::load(cli.serve).unwrap()).await.unwrap();
    let (_, key) = state.auth.create_api_key("handler-tests", Role::Client).await.unwrap();
    Harness {
        _temp: temp,
        state,
        key: key.expose().to_string(),
    }
}

impl Harness {
    async fn send(&self, request: warp::test::RequestBuilder) -> (u16, Value) {
        let response = request.reply(&super::routes(self.state.clone())).await;
        let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (response.status().as_u16(), body)
    }

    async fn post(&self, path: &str, body: impl AsRef<[u8]>) -> (u16, Value) {
        let request = warp::test::request()
            .method("POST")
            .path(path)
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json")
            .body(body);
        self.send(request).await
    }
}

#[tokio::test]
async fn embeddings_requests_that_cannot_be_read_get_openai_errors() {
    let h = harness().await;
    let cases = [
        ("{nope", "invalid_json", "not JSON"),
        ("[1]", "invalid_request", "must be a JSON object"),
        (r#"{"input":"hi"}"#, "invalid_request", "'model' is required"),
        (r#"{"model":"m"}"#, "invalid_request", "'input' is required"),
        (
            r#"{"model":"m","input":"hi","encoding_format":"hex"}"#,
            "invalid_request",
            "'encoding_format' must be",
        ),
    ];
    for (body, code, message) in cases {
        for path in ["/v1/embeddings", "/api/openai/v1/embeddings"] {
            let (status, reply) = h.post(path, body).await;
            assert_eq!(status, 400, "{path} {body}: {reply}");
            assert_eq!(reply["error"]["code"], code, "{path} {body}: {reply}");
            assert_eq!(reply["error"]["type"], "invalid_request_error", "{body}: {reply}");
            let text = reply["error"]["message"].as_str().unwrap_or_default();
            assert!(text.contains(message), "{path} {body}: {reply}");
        }
    }
}

#[tokio::test]
async fn a_caller_without_a_valid_key_is_refused_in_its_dialect() {
    let h = harness().await;
    let openai = warp::test::request().method("GET").path("/v1/models");
    let (status, reply) = h.send(openai).await;
    assert_eq!(status, 401, "{reply}");
    assert!(reply["error"]["message"].is_string(), "{reply}");

    let anthropic = warp::test::request()
        .method("POST")
        .path("/v1/messages")
        .header("x-api-key", "aux_not_a_key")
        .body(r#"{"model":"m","max_tokens":5,"messages":[]}"#);
    let (status, reply) = h.send(anthropic).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["error"]["type"], "authentication_error", "{reply}");

    let embeddings = warp::test::request()
        .method("POST")
        .path("/v1/embeddings")
        .body(r#"{"model":"m","input":"hi"}"#);
    let (status, reply) = h.send(embeddings).await;
    assert_eq!(status, 401, "{reply}");
}

#[tokio::test]
async fn models_lists_what_a_client_may_name() {
    let h = harness().await;
    let request = warp::test::request()
        .method("GET")
        .path("/v1/models")
        .header("authorization", format!("Bearer {}", h.key));
    let (status, reply) = h.send(request).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["object"], "list", "{reply}");
    assert!(reply["data"].is_array(), "{reply}");
}

#[tokio::test]
async fn a_model_request_that_is_not_utf8_is_refused_in_the_callers_dialect() {
    let h = harness().await;
    let chat = b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec();
    let messages =
        b"{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\"}]}".to_vec();
    let cases: [(&str, &[u8], bool); 5] = [
        ("/v1/chat/completions", &chat, false),
        ("/v1/responses", b"{\"model\":\"m\",\"input\":\"\xff\"}", false),
        ("/v1/embeddings", b"{\"model\":\"m\",\"input\":\"\xed\xa0\x80\"}", false),
        ("/v1/messages", &messages, true),
        ("/v1/messages/count_tokens", &messages, true),
    ];
    for (path, body, anthropic) in cases {
        let (status, reply) = h.post(path, body).await;
        assert_eq!(status, 400, "{path}: {reply}");
        assert_eq!(reply["error"]["type"], "invalid_request_error", "{path}: {reply}");
        let text = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains("not UTF-8"), "{path}: {reply}");
        if anthropic {
            assert_eq!(reply["type"], "error", "{path}: {reply}");
        } else {
            assert_eq!(reply["error"]["code"], "invalid_json", "{path}: {reply}");
        }
    }
}

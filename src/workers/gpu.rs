//! `auxot worker gpu`: serves the models of a local OpenAI-compatible server (llama.cpp
//! `llama-server`, vLLM, Ollama, SGLang). Each job is one `POST {upstream}/chat/completions`:
//! streamed for a streaming client (the SSE `data:` objects go to the router unchanged),
//! whole for the rest (`gpu_whole`), so the server's own usage report is always read.

use crate::bounded::read_to_limit;
use crate::crypto::Secret;
use crate::providers::connect::ConnectTimeout;
use crate::translate::fields::{edit_fields, Edit};
use crate::translate::sse::SseParser;
use crate::workers::args::GpuWorkerArgs;
use crate::workers::client::{ChunkSink, ConnectionConfig, Job, JobHandler, JobOutcome, WorkerError};
use crate::workers::fleet::run_worker;
use crate::workers::gpu_usage::ChunkProbe;
use crate::workers::gpu_whole;
use crate::workers::model_server::{read_error_body, ModelServer};
use crate::workers::protocol::{JobKind, Usage, WorkerKind};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const MODELS_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the GPU worker until `shutdown`. Fails at once if the model server cannot be listed.
pub async fn run(args: GpuWorkerArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), WorkerError> {
    let worker = GpuWorker::new(&args)?;
    let models = worker.models().await?;
    tracing::info!(upstream = %worker.upstream, models = ?models, "model server reachable");
    let conn = ConnectionConfig::from_args(&args.connection, Some(args.models_refresh()));
    run_worker(conn, Arc::new(worker), shutdown).await
}

struct GpuWorker {
    http: reqwest::Client,
    /// The router's GPU-tier connect timeout, read for every new upstream connection.
    connect: ConnectTimeout,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8000/v1`.
    upstream: String,
    key: Option<Secret>,
    /// `--model`: advertise only these.
    only: Vec<String>,
    /// The `--model` names last found missing, so the warning is logged once per change.
    warned_missing: Mutex<Vec<String>>,
    /// `--max-event-mib` in bytes.
    max_event: usize,
    embedding_models: super::embeddings::EmbeddingModels,
}

impl GpuWorker {
    fn new(args: &GpuWorkerArgs) -> Result<Self, WorkerError> {
        let upstream = args.upstream.trim().trim_end_matches('/').to_string();
        let bad = |reason: &str| WorkerError::UpstreamUrl {
            url: args.upstream.clone(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(&upstream).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("use an http:// or https:// URL"));
        }
        // The router's setting arrives after hello_ack; until then the documented default.
        let connect = ConnectTimeout::new(Duration::from_secs(10));
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connector_layer(connect.layer())
            .pool_idle_timeout(Duration::from_secs(90))
            // A redirect could carry the upstream key to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("auxot-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WorkerError::HttpClient(crate::providers::describe_reqwest_error(e)))?;
        let mut only = Vec::new();
        for model in args.models.iter().map(|m| m.trim()).filter(|m| !m.is_empty()) {
            if !only.iter().any(|m: &String| m == model) {
                only.push(model.to_string());
            }
        }
        Ok(GpuWorker {
            http,
            connect,
            upstream,
            key: args.upstream_key.clone().filter(|k| !k.is_empty()),
            only,
            warned_missing: Mutex::new(Vec::new()),
            max_event: usize::try_from(args.max_event_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX),
            embedding_models: super::embeddings::EmbeddingModels::default(),
        })
    }

    async fn list_upstream_models(&self) -> Result<Vec<String>, WorkerError> {
        #[derive(Deserialize)]
        struct ModelList {
            data: Vec<ModelEntry>,
        }
        #[derive(Deserialize)]
        struct ModelEntry {
            id: String,
        }
        let unreachable = |detail: String| WorkerError::Upstream {
            url: self.upstream.clone(),
            detail,
        };
        let url = format!("{}/models", self.upstream);
        let response = self
            .model_server()
            .authorize(self.http.get(&url))
            .timeout(MODELS_TIMEOUT)
            .send()
            .await
            .map_err(|e| unreachable(crate::providers::describe_reqwest_error(e)))?;
        let status = response.status();
        let body = read_error_body(response).await;
        if !status.is_success() {
            let message = self.scrub(crate::providers::error_message(&body));
            return Err(unreachable(format!(
                "GET /models answered {}: {message}",
                status.as_u16()
            )));
        }
        let list: ModelList = serde_json::from_slice(&body)
            .map_err(|e| unreachable(format!("GET /models did not return an OpenAI model list: {e}")))?;
        let mut models: Vec<String> = Vec::with_capacity(list.data.len());
        for entry in list.data {
            if !models.contains(&entry.id) {
                models.push(entry.id);
            }
        }
        Ok(models)
    }

    /// Applies `--model`, warning (once per change) about names the upstream does not list.
    fn select_models(&self, listed: Vec<String>) -> Vec<String> {
        if self.only.is_empty() {
            return listed;
        }
        let missing: Vec<String> = self.only.iter().filter(|m| !listed.contains(m)).cloned().collect();
        let mut warned = self.warned_missing.lock().unwrap_or_else(PoisonError::into_inner);
        if *warned != missing {
            if !missing.is_empty() {
                tracing::warn!(missing = ?missing, listed = ?listed, "--model names the model server does not list; not advertising them");
            }
            warned.clone_from(&missing);
        }
        self.only.iter().filter(|m| listed.contains(m)).cloned().collect()
    }

    fn model_server(&self) -> ModelServer<'_> {
        ModelServer {
            http: &self.http,
            base: &self.upstream,
            key: self.key.as_ref(),
        }
    }

    fn scrub(&self, text: String) -> String {
        self.model_server().scrub(text)
    }

    /// Posts `body` to the model server; an error status becomes the job's outcome.
    async fn post_chat(&self, body: String, accept: &'static str) -> Result<reqwest::Response, JobOutcome> {
        let server = self.model_server();
        let request = server
            .post("chat/completions", body)
            .header(reqwest::header::ACCEPT, accept);
        server.answer(request).await
    }

    /// A client that wants one JSON answer: the model server is asked the same way, so its
    /// `usage` is exact even when it ignores `include_usage` in streams.
    async fn whole_chat(&self, job: Job, out: &ChunkSink) -> JobOutcome {
        let body = match gpu_whole::without_streaming(&job.request) {
            Ok(body) => body,
            Err(message) => return JobOutcome::failed(message, Some(400)),
        };
        let response = match self.post_chat(body, "application/json").await {
            Ok(response) => response,
            Err(outcome) => return outcome,
        };
        let answer = match read_to_limit(response.bytes_stream(), self.max_event, 0).await {
            Ok(answer) => answer,
            Err(e) => {
                return JobOutcome::unread(e, |mib| {
                    format!("the model server sent an answer larger than {mib} MiB (the worker's --max-event-mib)")
                })
            }
        };
        let chunk = match gpu_whole::completion_as_chunk(&answer) {
            Ok(chunk) => chunk,
            Err(message) => return JobOutcome::failed(self.scrub(message), Some(502)),
        };
        let usage = serde_json::from_slice::<ChunkProbe>(&answer)
            .ok()
            .and_then(ChunkProbe::usage);
        match out.send(chunk).await {
            Ok(()) => JobOutcome::Done(usage),
            Err(closed) => JobOutcome::failed(closed.to_string(), None),
        }
    }

    async fn stream_chat(&self, job: Job, out: &ChunkSink) -> JobOutcome {
        let body = match force_streaming(&job.request) {
            Ok(body) => body,
            Err(message) => return JobOutcome::failed(message, Some(400)),
        };
        let mut response = match self.post_chat(body, "text/event-stream").await {
            Ok(response) => response,
            Err(outcome) => return outcome,
        };
        let mut decoder = SseParser::with_max_event(self.max_event);
        let mut usage = None;
        let mut usage_exact = false;
        loop {
            let piece = match response.chunk().await {
                Ok(Some(piece)) => piece,
                Ok(None) => break,
                Err(e) => {
                    let detail = crate::providers::describe_reqwest_error(e);
                    return JobOutcome::failed(format!("the model server's stream broke: {detail}"), None);
                }
            };
            let events = decoder.push(&piece);
            if decoder.dropped() > 0 {
                return JobOutcome::failed(
                    format!(
                        "the model server sent an event larger than {} MiB (the worker's --max-event-mib)",
                        self.max_event / (1024 * 1024)
                    ),
                    Some(502),
                );
            }
            for event in events {
                match self.forward_event(event.data, out, &mut usage, &mut usage_exact).await {
                    Forwarded::More => {}
                    Forwarded::End => return JobOutcome::Done(usage),
                    Forwarded::Failed(outcome) => return outcome,
                }
            }
        }
        for event in decoder.finish() {
            match self.forward_event(event.data, out, &mut usage, &mut usage_exact).await {
                Forwarded::More => {}
                Forwarded::End => break,
                Forwarded::Failed(outcome) => return outcome,
            }
        }
        // Some servers end the body without `[DONE]`; a clean end is still a finished answer.
        JobOutcome::Done(usage)
    }

    async fn forward_event(
        &self,
        data: String,
        out: &ChunkSink,
        usage: &mut Option<Usage>,
        usage_exact: &mut bool,
    ) -> Forwarded {
        if data.trim() == "[DONE]" {
            return Forwarded::End;
        }
        let mut probe: ChunkProbe = match serde_json::from_str(&data) {
            Ok(probe) => probe,
            Err(e) => {
                return Forwarded::Failed(JobOutcome::failed(
                    format!("the model server sent a stream event that is not JSON: {e}"),
                    None,
                ))
            }
        };
        // vLLM and llama.cpp report mid-stream failures as an error object in place of a chunk.
        let error = probe.error.take();
        if let Some(error) = error.filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| error.to_string());
            return Forwarded::Failed(JobOutcome::failed(self.scrub(message), None));
        }
        // `usage` beats `timings`, whichever event brings it.
        let exact = probe.usage.is_some();
        if let Some(reported) = probe.usage() {
            if exact || !*usage_exact {
                *usage = Some(reported);
                *usage_exact = exact;
            }
        }
        let chunk = match RawValue::from_string(data) {
            Ok(chunk) => chunk,
            Err(e) => return Forwarded::Failed(JobOutcome::failed(format!("unreadable stream event: {e}"), None)),
        };
        match out.send(chunk).await {
            Ok(()) => Forwarded::More,
            Err(closed) => Forwarded::Failed(JobOutcome::failed(closed.to_string(), None)),
        }
    }
}

enum Forwarded {
    More,
    End,
    Failed(JobOutcome),
}

impl JobHandler for GpuWorker {
    fn kind(&self) -> WorkerKind {
        WorkerKind::Gpu
    }

    fn set_upstream_connect_timeout(&self, limit: Duration) {
        self.connect.set(limit);
    }

    async fn models(&self) -> Result<Vec<String>, WorkerError> {
        let listed = self.list_upstream_models().await?;
        let models = self.select_models(listed);
        self.embedding_models.update(&self.model_server(), &models).await;
        Ok(models)
    }

    fn embedding_models(&self) -> Vec<String> {
        self.embedding_models.current()
    }

    async fn run_job(&self, job: Job, out: ChunkSink) -> JobOutcome {
        match job.endpoint {
            JobKind::ChatCompletions if gpu_whole::wants_stream(&job.request) => self.stream_chat(job, &out).await,
            JobKind::ChatCompletions => self.whole_chat(job, &out).await,
            JobKind::Embeddings => super::embeddings::run_job(&self.model_server(), job, &out).await,
        }
    }
}

/// The job's request with `stream: true` and usage in the last chunk forced. Only the top
/// level is touched: every other value is passed on byte for byte.
fn force_streaming(request: &RawValue) -> Result<String, String> {
    let edits = [
        ("stream", Edit::Set("true")),
        ("stream_options", Edit::Set(r#"{"include_usage":true}"#)),
    ];
    let body = edit_fields(request.get().as_bytes(), &edits)
        .map_err(|e| format!("the job's request is not a JSON object: {e}"))?;
    String::from_utf8(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_is_forced_at_the_top_level_only() {
        let request = RawValue::from_string(
            r#"{"model":"qwen","stream":false,"messages":[{"role":"user","content":"hi","stream":false}],"temperature":0.70}"#
                .into(),
        )
        .unwrap();
        let body: serde_json::Value = serde_json::from_str(&force_streaming(&request).unwrap()).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["messages"][0]["stream"], false);
        assert!(
            force_streaming(&request).unwrap().contains("0.70"),
            "numbers pass through unchanged"
        );
        assert!(force_streaming(&RawValue::from_string("[1]".into()).unwrap()).is_err());
    }

    #[test]
    fn upstream_errors_are_read_from_either_shape() {
        assert_eq!(
            crate::providers::error_message(br#"{"error":{"message":"model not found","code":404}}"#),
            "model not found"
        );
        assert_eq!(crate::providers::error_message(br#"{"error":"busy"}"#), "busy");
        assert_eq!(crate::providers::error_message(&[b'x'; 400]).len(), 300);
    }

    use crate::workers::args::ConnectionArgs;
    use crate::workers::client::test_sink;
    use crate::workers::protocol::WorkerMessage;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A model server on a raw socket, so the SSE body can be cut at awkward places. Answers
    /// `/v1/models`, and `/v1/chat/completions` with `reply`; sends each received chat body on.
    async fn fake_upstream(
        reply: &'static [&'static str],
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let (bodies_tx, bodies_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let bodies_tx = bodies_tx.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let (head, body_start) = loop {
                        let read = tcp.read(&mut buffer).await.unwrap();
                        request.extend_from_slice(&buffer[..read]);
                        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            break (String::from_utf8_lossy(&request[..end]).to_lowercase(), end + 4);
                        }
                    };
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while request.len() < body_start + length {
                        let read = tcp.read(&mut buffer).await.unwrap();
                        request.extend_from_slice(&buffer[..read]);
                    }
                    if head.starts_with("get /v1/models") {
                        let body = r#"{"object":"list","data":[{"id":"qwen"},{"id":"llama"}]}"#;
                        let response = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                        tcp.write_all(response.as_bytes()).await.unwrap();
                        return;
                    }
                    if head.starts_with("post /v1/embeddings") {
                        // A chat-only server, as llama.cpp without --embeddings answers.
                        let response = "HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                        tcp.write_all(response.as_bytes()).await.unwrap();
                        return;
                    }
                    let _ = bodies_tx.send(serde_json::from_slice(&request[body_start..]).unwrap());
                    for piece in reply {
                        tcp.write_all(piece.as_bytes()).await.unwrap();
                        tcp.flush().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
            }
        });
        (base, bodies_rx)
    }

    fn worker(upstream: &str, models: &[&str]) -> GpuWorker {
        GpuWorker::new(&GpuWorkerArgs {
            connection: ConnectionArgs {
                server: vec!["http://router".into()],
                token: Secret::new("t".into()),
                name: Some("n".into()),
                slots: 1,
            },
            upstream: upstream.into(),
            upstream_key: None,
            models_refresh_secs: 60,
            models: models.iter().map(|m| m.to_string()).collect(),
            max_event_mib: 16,
        })
        .unwrap()
    }

    fn job(request: &str) -> Job {
        Job {
            id: "j1".into(),
            endpoint: crate::workers::protocol::JobKind::ChatCompletions,
            request: RawValue::from_string(request.into()).unwrap(),
        }
    }

    #[tokio::test]
    async fn chunks_stream_through_raw_with_usage() {
        const REPLY: &[&str] = &[
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            ": ping\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"He\"}}],  \"usage\":null}\r\n\r\nda",
            "ta: {\"choices\":[{\"delta\":{\"content\":\"llo\"}}]}\n",
            "\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
            "data: [DONE]\n\n",
        ];
        let (base, mut bodies) = fake_upstream(REPLY).await;
        let worker = worker(&format!("{base}/"), &["qwen", "missing"]);
        assert_eq!(worker.models().await.unwrap(), ["qwen"]);

        let (sink, mut frames) = test_sink("j1");
        let outcome = worker
            .run_job(
                job(r#"{"model":"qwen","messages":[{"role":"user","content":"hi"}],"stream":true}"#),
                sink,
            )
            .await;
        assert_eq!(outcome, JobOutcome::Done(Some(Usage::new(5, 2))));
        let sent = bodies.recv().await.unwrap();
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["stream_options"], serde_json::json!({"include_usage": true}));
        assert_eq!(sent["messages"][0]["content"], "hi");
        let mut chunks = Vec::new();
        while let Ok(WorkerMessage::Chunk { chunk, .. }) = frames.try_recv() {
            chunks.push(chunk.get().to_string());
        }
        assert_eq!(
            chunks,
            [
                r#"{"choices":[{"delta":{"content":"He"}}],  "usage":null}"#,
                r#"{"choices":[{"delta":{"content":"llo"}}]}"#,
                r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
            ]
        );
    }

    #[tokio::test]
    async fn a_whole_answer_is_asked_whole_and_its_usage_is_exact() {
        // llama-cpp-python: ignores include_usage in streams, but a whole answer has usage.
        const REPLY: &[&str] = &[
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
            r#"{"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "qwen", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "logprobs": null, "finish_reason": "stop"}], "usage": {"prompt_tokens": 28, "completion_tokens": 12, "total_tokens": 40}}"#,
        ];
        let (base, mut bodies) = fake_upstream(REPLY).await;
        let (sink, mut frames) = test_sink("j1");
        let outcome = worker(&base, &[])
            .run_job(
                job(r#"{"model":"qwen","stream":false,"stream_options":{"include_usage":true},"messages":[]}"#),
                sink,
            )
            .await;
        assert_eq!(outcome, JobOutcome::Done(Some(Usage::new(28, 12))));
        let sent = bodies.recv().await.unwrap();
        assert_eq!(sent["stream"], false);
        assert!(sent.get("stream_options").is_none(), "{sent}");
        match frames.recv().await {
            Some(WorkerMessage::Chunk { chunk, .. }) => {
                let chunk: serde_json::Value = serde_json::from_str(chunk.get()).unwrap();
                assert_eq!(chunk["choices"][0]["delta"]["content"], "Hi there");
                assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
            }
            other => panic!("{other:?}"),
        }

        // A 200 whose body is an error object fails the job.
        const ERROR: &[&str] = &[
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
            r#"{"error":{"message":"the context is full","code":500}}"#,
        ];
        let (base, _bodies) = fake_upstream(ERROR).await;
        let (sink, _frames) = test_sink("j1");
        let outcome = worker(&base, &[]).run_job(job(r#"{"model":"qwen"}"#), sink).await;
        assert_eq!(outcome, JobOutcome::failed("the context is full", Some(502)));
    }

    #[tokio::test]
    async fn upstream_failures_become_job_errors() {
        const NOT_FOUND: &[&str] = &[
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 47\r\nconnection: close\r\n\r\n",
            r#"{"error":{"message":"model 'nope' not found"}}"#,
            " ",
        ];
        let (base, _bodies) = fake_upstream(NOT_FOUND).await;
        let (sink, _frames) = test_sink("j1");
        let outcome = worker(&base, &[]).run_job(job(r#"{"model":"nope"}"#), sink).await;
        assert_eq!(outcome, JobOutcome::failed("model 'nope' not found", Some(404)));

        const MID_STREAM: &[&str] = &[
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            "data: {\"error\":{\"message\":\"out of memory\",\"code\":500}}\n\n",
        ];
        let (base, _bodies) = fake_upstream(MID_STREAM).await;
        let (sink, _frames) = test_sink("j1");
        let outcome = worker(&base, &[])
            .run_job(job(r#"{"model":"qwen","stream":true}"#), sink)
            .await;
        assert_eq!(outcome, JobOutcome::failed("out of memory", None));

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", closed.local_addr().unwrap());
        drop(closed);
        let (sink, _frames) = test_sink("j1");
        match worker(&base, &[]).run_job(job(r#"{"model":"qwen"}"#), sink).await {
            JobOutcome::Failed { status: None, message } => assert!(message.starts_with("cannot reach"), "{message}"),
            other => panic!("{other:?}"),
        }
        let err = worker(&base, &[]).models().await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot reach the model server at {base}: ")),
            "{err}"
        );
    }
}

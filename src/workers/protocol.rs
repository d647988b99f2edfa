//! The worker wire protocol: JSON text frames over one WebSocket per worker, each message a
//! `{"type": …}` object. Workers dial OUT to `GET /api/workers/connect` (so they work behind
//! NAT) with `Authorization: Bearer <worker token>`. Documented in docs/worker-protocol.md.
//!
//! Chat payloads stay raw JSON (`RawValue`): the router forwards them without re-parsing.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Bumped on any incompatible change; the router refuses a `hello` of another version.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerKind {
    Gpu,
    Cli,
}

impl WorkerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Gpu => "gpu",
            WorkerKind::Cli => "cli",
        }
    }
}

/// Token counts as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// Worker → router.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// First message after connecting.
    Hello {
        protocol: u32,
        kind: WorkerKind,
        name: String,
        models: Vec<String>,
        slots: u32,
        /// The worker's auxot version, for the workers list.
        version: String,
    },
    /// Every `heartbeat_interval_ms`; a worker silent for `heartbeat_timeout_ms` is offline.
    Heartbeat,
    /// The models it serves changed (the upstream was re-read).
    Models { models: Vec<String> },
    /// One OpenAI `chat.completion.chunk` object.
    Chunk { job_id: String, chunk: Box<RawValue> },
    /// The job finished; usage when the upstream reported it.
    Done {
        job_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// The job failed. Before any chunk the router may give the request to another target.
    Error {
        job_id: String,
        message: String,
        /// The upstream's HTTP status, when there was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
}

/// Router → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RouterMessage {
    HelloAck {
        protocol: u32,
        worker_id: String,
        heartbeat_interval_ms: u64,
        heartbeat_timeout_ms: u64,
    },
    /// Run an OpenAI chat request. `request.stream` is always true and `request.model` is
    /// the model to use; the worker answers with `chunk`s then `done` (or `error`).
    Job { job_id: String, request: Box<RawValue> },
    /// Stop the job now (the client went away, or it timed out); no `done` is expected.
    Cancel { job_id: String },
    /// The router refuses this worker (bad hello, revoked token); the socket closes next.
    Refused { message: String },
}

impl WorkerMessage {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl RouterMessage {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shape() {
        let hello = WorkerMessage::Hello {
            protocol: 1,
            kind: WorkerKind::Gpu,
            name: "box-1".into(),
            models: vec!["qwen".into()],
            slots: 2,
            version: "0.1.0".into(),
        };
        let text = hello.to_text();
        assert!(
            text.starts_with(r#"{"type":"hello","protocol":1,"kind":"gpu""#),
            "{text}"
        );
        let chunk: WorkerMessage =
            serde_json::from_str(r#"{"type":"chunk","job_id":"j1","chunk":{"choices":[{"delta":{"content":"hi"}}]}}"#)
                .unwrap();
        match chunk {
            WorkerMessage::Chunk { job_id, chunk } => {
                assert_eq!(job_id, "j1");
                assert_eq!(chunk.get(), r#"{"choices":[{"delta":{"content":"hi"}}]}"#);
            }
            other => panic!("{other:?}"),
        }
        let job = RouterMessage::Job {
            job_id: "j2".into(),
            request: RawValue::from_string(r#"{"model":"qwen","stream":true}"#.into()).unwrap(),
        };
        assert_eq!(
            job.to_text(),
            r#"{"type":"job","job_id":"j2","request":{"model":"qwen","stream":true}}"#
        );
        let done: WorkerMessage = serde_json::from_str(r#"{"type":"done","job_id":"j1"}"#).unwrap();
        assert!(matches!(done, WorkerMessage::Done { usage: None, .. }));
    }
}

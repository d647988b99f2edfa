//! The worker wire protocol: JSON text frames over one WebSocket per worker, each message a
//! `{"type": …}` object. Workers dial OUT to `GET /api/workers/connect` (so they work behind
//! NAT) with `Authorization: Bearer <worker token>`. Documented in docs/worker-protocol.md.
//!
//! Chat payloads stay raw JSON (`RawValue`): the router forwards them without re-parsing.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Bumped on any incompatible change; the router refuses a `hello` of another version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Optional features a worker offers in its `hello` and the router takes up in `hello_ack`.
/// Either side without one behaves as protocol 1 always did.
pub mod capability {
    /// The worker answers every job at once with `job_accepted` or `job_refused`; the
    /// router waits for that answer before counting the job as started.
    pub const JOB_ACK: &str = "job_ack";
    /// The worker reports its shared slot pool and its router connections in `status`
    /// frames (on every change, and in place of heartbeats).
    pub const STATUS: &str = "status";
    /// What this build offers (worker) and takes up (router).
    pub const ALL: [&str; 2] = [JOB_ACK, STATUS];
}

/// One router a worker is connected to (or trying to be), as the worker names it: the
/// `--server` URL it dials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterLink {
    pub url: String,
    pub connected: bool,
}

/// A worker token's kind: stored with the token, said again in the worker's `hello`.
pub use crate::store::WorkerKind;

/// What a job asks of a worker. A job names its kind only when it is not chat, and the
/// router sends an embeddings job only to a worker that advertised `embedding_models`, so a
/// worker that predates embeddings never receives one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// An OpenAI chat request, answered with `chat.completion.chunk`s.
    #[default]
    ChatCompletions,
    /// An OpenAI embeddings request, answered with one `chunk` holding the whole response.
    Embeddings,
}

impl JobKind {
    pub fn is_chat(&self) -> bool {
        *self == JobKind::ChatCompletions
    }
}

/// Token counts as OpenAI reports them (`prompt_tokens` counts cached and cache-written
/// prompt tokens too), with Anthropic's cache-write counters beside them when a CLI
/// reports those. The same object becomes the `usage` of the client's answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation: Option<CacheCreation>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// Cache writes by lifetime, as Anthropic reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCreation {
    #[serde(default)]
    pub ephemeral_5m_input_tokens: u64,
    #[serde(default)]
    pub ephemeral_1h_input_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            ..Usage::default()
        }
    }
}

/// Worker → router. Read with `WorkerMessage::parse`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// First message after connecting.
    Hello {
        protocol: u32,
        kind: WorkerKind,
        /// Absent: the router names the worker after its token.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        models: Vec<String>,
        /// The models it serves for embeddings jobs (absent: none).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        embedding_models: Vec<String>,
        slots: u32,
        /// The worker's auxot version, for the workers list.
        version: String,
        /// Made once when the worker process starts, the same on its connection to every
        /// router: one worker is recognisable across a fleet.
        #[serde(skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
        /// What it offers of [`capability`]; absent: nothing.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        capabilities: Vec<String>,
    },
    /// Every `heartbeat_interval_ms`; a worker silent for `heartbeat_timeout_ms` is offline.
    Heartbeat,
    /// (`job_ack`) The job has a slot and runs now.
    JobAccepted { job_id: String },
    /// (`job_ack`) The job was not started: `reason` is `busy` when every slot of the
    /// worker is taken (by this router or another one). The router tries elsewhere.
    JobRefused { job_id: String, reason: String },
    /// (`status`) The worker's whole slot pool, shared by every router it serves: `busy`
    /// slots in all, `busy_here` of them running jobs of this connection, and the routers
    /// it is connected to. Also counts as a heartbeat.
    Status {
        slots: u32,
        busy: u32,
        busy_here: u32,
        routers: Vec<RouterLink>,
    },
    /// The models it serves changed (the upstream was re-read).
    Models {
        models: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        embedding_models: Vec<String>,
    },
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
        /// The upstream's `Retry-After` header, passed on to the client.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
        /// A CLI subscription hit its usage limit: usable again at this Unix time. The
        /// router routes around the worker until then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limited_until: Option<i64>,
    },
}

/// Router → worker. Read with `RouterMessage::parse`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RouterMessage {
    HelloAck {
        protocol: u32,
        worker_id: String,
        heartbeat_interval_ms: u64,
        heartbeat_timeout_ms: u64,
        /// The hello's capabilities this router takes up; absent: none.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        capabilities: Vec<String>,
    },
    /// Run an OpenAI request. `request.model` is the model to use. For chat, `request.stream`
    /// is the client's choice (older routers always sent true): the worker answers with
    /// `chunk`s then `done` (or `error`); for `stream: false` a GPU worker asks its model
    /// server for a whole answer and sends it as one chunk, its exact usage in `done`.
    /// `endpoint` (absent: `chat_completions`) says what the request is; an `embeddings`
    /// job is answered with one `chunk` holding the whole embeddings response, then `done`.
    Job {
        job_id: String,
        #[serde(skip_serializing_if = "JobKind::is_chat")]
        endpoint: JobKind,
        request: Box<RawValue>,
    },
    /// Stop the job now (the client went away, or it timed out); no `done` is expected.
    Cancel { job_id: String },
    /// Router settings a worker applies on its side: sent after `hello_ack` and again on
    /// every change. Workers that predate a field (or the message) ignore it.
    Settings {
        /// The GPU tier's connect timeout, for the worker's connections to its model server.
        upstream_connect_timeout_ms: u64,
    },
    /// The router refuses this worker (bad hello, revoked token); the socket closes next.
    Refused { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("not a protocol message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("message of type '{kind}' lacks field '{field}'")]
    Missing { kind: String, field: &'static str },
    #[error("unknown message type '{0}'")]
    UnknownType(String),
}

/// Every field any message may carry, flat. serde cannot read a `RawValue` inside an
/// internally tagged enum (it buffers the content first), so messages are parsed through
/// this and the chat payloads stay raw.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    protocol: Option<u32>,
    kind_of_worker: Option<WorkerKind>,
    name: Option<String>,
    models: Option<Vec<String>>,
    embedding_models: Option<Vec<String>>,
    endpoint: Option<JobKind>,
    slots: Option<u32>,
    version: Option<String>,
    job_id: Option<String>,
    chunk: Option<Box<RawValue>>,
    request: Option<Box<RawValue>>,
    usage: Option<Usage>,
    message: Option<String>,
    status: Option<u16>,
    retry_after: Option<String>,
    limited_until: Option<i64>,
    worker_id: Option<String>,
    heartbeat_interval_ms: Option<u64>,
    heartbeat_timeout_ms: Option<u64>,
    upstream_connect_timeout_ms: Option<u64>,
    instance: Option<String>,
    capabilities: Option<Vec<String>>,
    reason: Option<String>,
    busy: Option<u32>,
    busy_here: Option<u32>,
    routers: Option<Vec<RouterLink>>,
}

fn need<T>(value: Option<T>, kind: &str, field: &'static str) -> Result<T, ProtocolError> {
    value.ok_or_else(|| ProtocolError::Missing {
        kind: kind.to_string(),
        field,
    })
}

/// `kind` is both the tag's name and the hello's worker kind: read the hello's separately.
fn parse_frame(text: &str) -> Result<Frame, ProtocolError> {
    #[derive(Deserialize)]
    struct HelloKind {
        kind: WorkerKind,
    }
    let mut frame: Frame = serde_json::from_str(text)?;
    if frame.kind == "hello" {
        // A hello carries "kind": "gpu"|"cli" in place of the tag's name; the tag is "type".
        frame.kind_of_worker = serde_json::from_str::<HelloKind>(text).ok().map(|h| h.kind);
    }
    Ok(frame)
}

/// The `job_id` of a frame that does not parse as a whole (a wrong field type, a broken
/// chunk), so the router can fail that one job at once.
pub fn job_id_of(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct JobOnly {
        job_id: String,
    }
    serde_json::from_str::<JobOnly>(text).ok().map(|j| j.job_id)
}

impl WorkerMessage {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<WorkerMessage, ProtocolError> {
        let f = parse_frame(text)?;
        let k = f.kind.as_str();
        Ok(match k {
            "hello" => WorkerMessage::Hello {
                protocol: need(f.protocol, k, "protocol")?,
                kind: need(f.kind_of_worker, k, "kind")?,
                name: f.name,
                models: f.models.unwrap_or_default(),
                embedding_models: f.embedding_models.unwrap_or_default(),
                slots: need(f.slots, k, "slots")?,
                version: f.version.unwrap_or_default(),
                instance: f.instance,
                capabilities: f.capabilities.unwrap_or_default(),
            },
            "heartbeat" => WorkerMessage::Heartbeat,
            "job_accepted" => WorkerMessage::JobAccepted {
                job_id: need(f.job_id, k, "job_id")?,
            },
            "job_refused" => WorkerMessage::JobRefused {
                job_id: need(f.job_id, k, "job_id")?,
                reason: f.reason.unwrap_or_else(|| "busy".to_string()),
            },
            "status" => WorkerMessage::Status {
                slots: need(f.slots, k, "slots")?,
                busy: need(f.busy, k, "busy")?,
                busy_here: need(f.busy_here, k, "busy_here")?,
                routers: f.routers.unwrap_or_default(),
            },
            "models" => WorkerMessage::Models {
                models: need(f.models, k, "models")?,
                embedding_models: f.embedding_models.unwrap_or_default(),
            },
            "chunk" => WorkerMessage::Chunk {
                job_id: need(f.job_id, k, "job_id")?,
                chunk: need(f.chunk, k, "chunk")?,
            },
            "done" => WorkerMessage::Done {
                job_id: need(f.job_id, k, "job_id")?,
                usage: f.usage,
            },
            "error" => WorkerMessage::Error {
                job_id: need(f.job_id, k, "job_id")?,
                message: need(f.message, k, "message")?,
                status: f.status,
                retry_after: f.retry_after,
                limited_until: f.limited_until,
            },
            other => return Err(ProtocolError::UnknownType(other.to_string())),
        })
    }
}

impl RouterMessage {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<RouterMessage, ProtocolError> {
        let f = parse_frame(text)?;
        let k = f.kind.as_str();
        Ok(match k {
            "hello_ack" => RouterMessage::HelloAck {
                protocol: need(f.protocol, k, "protocol")?,
                worker_id: need(f.worker_id, k, "worker_id")?,
                heartbeat_interval_ms: need(f.heartbeat_interval_ms, k, "heartbeat_interval_ms")?,
                heartbeat_timeout_ms: need(f.heartbeat_timeout_ms, k, "heartbeat_timeout_ms")?,
                capabilities: f.capabilities.unwrap_or_default(),
            },
            "job" => RouterMessage::Job {
                job_id: need(f.job_id, k, "job_id")?,
                endpoint: f.endpoint.unwrap_or_default(),
                request: need(f.request, k, "request")?,
            },
            "cancel" => RouterMessage::Cancel {
                job_id: need(f.job_id, k, "job_id")?,
            },
            "refused" => RouterMessage::Refused {
                message: need(f.message, k, "message")?,
            },
            "settings" => RouterMessage::Settings {
                upstream_connect_timeout_ms: need(f.upstream_connect_timeout_ms, k, "upstream_connect_timeout_ms")?,
            },
            other => return Err(ProtocolError::UnknownType(other.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_worker_messages_travel_as_documented() {
        let accepted = WorkerMessage::JobAccepted { job_id: "j1".into() };
        assert_eq!(accepted.to_text(), r#"{"type":"job_accepted","job_id":"j1"}"#);
        assert!(
            matches!(WorkerMessage::parse(&accepted.to_text()).unwrap(), WorkerMessage::JobAccepted { job_id } if job_id == "j1")
        );
        let refused = WorkerMessage::JobRefused {
            job_id: "j2".into(),
            reason: "busy".into(),
        };
        assert_eq!(
            refused.to_text(),
            r#"{"type":"job_refused","job_id":"j2","reason":"busy"}"#
        );
        assert!(
            matches!(WorkerMessage::parse(&refused.to_text()).unwrap(), WorkerMessage::JobRefused { reason, .. } if reason == "busy")
        );
        let status = WorkerMessage::Status {
            slots: 4,
            busy: 3,
            busy_here: 1,
            routers: vec![RouterLink {
                url: "http://a:8080".into(),
                connected: true,
            }],
        };
        let text = status.to_text();
        assert_eq!(
            text,
            r#"{"type":"status","slots":4,"busy":3,"busy_here":1,"routers":[{"url":"http://a:8080","connected":true}]}"#
        );
        assert!(
            matches!(WorkerMessage::parse(&text).unwrap(), WorkerMessage::Status { busy: 3, busy_here: 1, ref routers, .. } if routers.len() == 1)
        );
        assert!(WorkerMessage::parse(r#"{"type":"status","slots":1}"#).is_err());

        // A hello and hello_ack without capabilities read as protocol 1 always did.
        let hello =
            WorkerMessage::parse(r#"{"type":"hello","protocol":1,"kind":"cli","models":["m"],"slots":1}"#).unwrap();
        assert!(
            matches!(hello, WorkerMessage::Hello { instance: None, ref capabilities, .. } if capabilities.is_empty())
        );
        let ack = RouterMessage::HelloAck {
            protocol: 1,
            worker_id: "w".into(),
            heartbeat_interval_ms: 5,
            heartbeat_timeout_ms: 15,
            capabilities: Vec::new(),
        };
        assert!(!ack.to_text().contains("capabilities"));
        let ack = RouterMessage::parse(
            r#"{"type":"hello_ack","protocol":1,"worker_id":"w","heartbeat_interval_ms":5,"heartbeat_timeout_ms":15,"capabilities":["job_ack","later"]}"#,
        )
        .unwrap();
        assert!(
            matches!(ack, RouterMessage::HelloAck { ref capabilities, .. } if capabilities == &["job_ack", "later"])
        );
    }

    #[test]
    fn settings_travel_as_documented_and_parse_back() {
        let settings = RouterMessage::Settings {
            upstream_connect_timeout_ms: 2500,
        };
        let text = serde_json::to_string(&settings).unwrap();
        assert_eq!(text, r#"{"type":"settings","upstream_connect_timeout_ms":2500}"#);
        assert!(matches!(
            RouterMessage::parse(&text).unwrap(),
            RouterMessage::Settings {
                upstream_connect_timeout_ms: 2500
            }
        ));
        assert!(RouterMessage::parse(r#"{"type":"settings"}"#).is_err());
    }

    #[test]
    fn messages_have_the_documented_shape() {
        let hello = WorkerMessage::Hello {
            protocol: 1,
            kind: WorkerKind::Gpu,
            name: Some("box-1".into()),
            models: vec!["qwen".into()],
            embedding_models: Vec::new(),
            slots: 2,
            version: "0.1.0".into(),
            instance: None,
            capabilities: Vec::new(),
        };
        let text = hello.to_text();
        assert!(
            text.starts_with(r#"{"type":"hello","protocol":1,"kind":"gpu""#),
            "{text}"
        );
        assert!(matches!(
            WorkerMessage::parse(&text).unwrap(),
            WorkerMessage::Hello {
                kind: WorkerKind::Gpu,
                slots: 2,
                ..
            }
        ));
        let chunk =
            WorkerMessage::parse(r#"{"type":"chunk","job_id":"j1","chunk":{"choices":[{"delta":{"content":"hi"}}]}}"#)
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
            endpoint: JobKind::ChatCompletions,
            request: RawValue::from_string(r#"{"model":"qwen","stream":true}"#.into()).unwrap(),
        };
        assert_eq!(
            job.to_text(),
            r#"{"type":"job","job_id":"j2","request":{"model":"qwen","stream":true}}"#
        );
        match RouterMessage::parse(&job.to_text()).unwrap() {
            RouterMessage::Job { request, .. } => assert_eq!(request.get(), r#"{"model":"qwen","stream":true}"#),
            other => panic!("{other:?}"),
        }
        let done = WorkerMessage::parse(r#"{"type":"done","job_id":"j1"}"#).unwrap();
        // An embeddings job names its endpoint; a chat job's frame is as it always was.
        let embed = RouterMessage::Job {
            job_id: "j3".into(),
            endpoint: JobKind::Embeddings,
            request: RawValue::from_string(r#"{"model":"e5","input":"hi"}"#.into()).unwrap(),
        };
        assert_eq!(
            embed.to_text(),
            r#"{"type":"job","job_id":"j3","endpoint":"embeddings","request":{"model":"e5","input":"hi"}}"#
        );
        assert!(matches!(
            RouterMessage::parse(&embed.to_text()).unwrap(),
            RouterMessage::Job {
                endpoint: JobKind::Embeddings,
                ..
            }
        ));
        let hello = WorkerMessage::parse(
            r#"{"type":"hello","protocol":1,"kind":"gpu","models":["q","e5"],"embedding_models":["e5"],"slots":1}"#,
        )
        .unwrap();
        assert!(
            matches!(&hello, WorkerMessage::Hello { embedding_models, .. } if embedding_models == &["e5".to_string()])
        );
        assert!(matches!(done, WorkerMessage::Done { usage: None, .. }));
        assert!(WorkerMessage::parse(r#"{"type":"chunk","job_id":"j1"}"#).is_err());
        assert!(WorkerMessage::parse(r#"{"type":"bogus"}"#).is_err());
    }
}

//! What a worker kind does with a job ([`JobHandler`]), and the sink its chunks go into: the
//! contract between a connection (`session.rs`) and the GPU or CLI worker.

use super::client::WorkerError;
use crate::bounded::ReadError;
use crate::workers::protocol::{JobKind, Usage, WorkerKind, WorkerMessage};
use serde_json::value::RawValue;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

/// One job as the router sent it.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    /// Chat or embeddings.
    pub endpoint: JobKind,
    /// An OpenAI request; `model` is one this worker advertised for `endpoint`. For chat,
    /// `stream` is the client's choice (older routers always sent `true`).
    pub request: Box<RawValue>,
}

/// How a job ended; the connection loop turns it into exactly one `done` or `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Done(Option<Usage>),
    Failed {
        message: String,
        status: Option<u16>,
    },
    /// Failed because the upstream is rate limited or the CLI's subscription is over its
    /// usage limit: the router routes around this worker until then.
    Throttled {
        message: String,
        status: Option<u16>,
        /// The upstream's `Retry-After` header.
        retry_after: Option<String>,
        /// Unix seconds when a subscription limit resets.
        limited_until: Option<i64>,
    },
}

impl JobOutcome {
    pub fn failed(message: impl Into<String>, status: Option<u16>) -> Self {
        JobOutcome::Failed {
            message: message.into(),
            status,
        }
    }

    /// A model server's answer that could not be read whole: it broke off, or passed its
    /// limit (`too_large` says what was too large, given the limit in MiB).
    pub fn unread(error: ReadError<reqwest::Error>, too_large: impl FnOnce(usize) -> String) -> Self {
        match error {
            ReadError::Broken(e) => {
                let detail = crate::providers::describe_reqwest_error(e);
                JobOutcome::failed(format!("the model server's answer broke off: {detail}"), None)
            }
            ReadError::TooLarge { limit } => JobOutcome::failed(too_large(limit / (1024 * 1024)), Some(502)),
        }
    }
}

/// What a worker does with jobs. Futures are dropped mid-way when the router cancels a job
/// or the connection drops, so implementations must release what they hold on drop (an
/// HTTP response closes its connection; a CLI process group is killed by a guard).
pub trait JobHandler: Send + Sync + 'static {
    fn kind(&self) -> WorkerKind;
    /// The models to advertise now; called at every connect and every `models_refresh`.
    fn models(&self) -> impl Future<Output = Result<Vec<String>, WorkerError>> + Send;
    /// Of the models `models` last returned, those it also serves for embeddings jobs.
    fn embedding_models(&self) -> Vec<String> {
        Vec::new()
    }
    /// Runs one job, streaming `chat.completion.chunk` objects into `out`.
    fn run_job(&self, job: Job, out: ChunkSink) -> impl Future<Output = JobOutcome> + Send;
    /// The router's connect timeout for this worker's upstream; a handler without an
    /// upstream connection ignores it.
    fn set_upstream_connect_timeout(&self, _limit: Duration) {}
}

/// The socket is gone; the job's output has nowhere to go, so the job should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the router connection closed")]
pub struct SinkClosed;

/// Where a job streams its chunks.
pub struct ChunkSink {
    pub(super) job_id: String,
    pub(super) out: mpsc::Sender<Outgoing>,
}

impl ChunkSink {
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Queues one `chat.completion.chunk`; waits while the socket is slower than the job.
    pub async fn send(&self, chunk: Box<RawValue>) -> Result<(), SinkClosed> {
        let message = WorkerMessage::Chunk {
            job_id: self.job_id.clone(),
            chunk,
        };
        self.out.send(Outgoing::Frame(message)).await.map_err(|_| SinkClosed)
    }
}

pub(super) enum Outgoing {
    Frame(WorkerMessage),
    /// Sends a close frame, then the writer stops.
    Close,
}

#[cfg(test)]
pub(crate) fn test_sink(job_id: &str) -> (ChunkSink, mpsc::UnboundedReceiver<WorkerMessage>) {
    let (tx, mut rx) = mpsc::channel(super::session::OUTGOING_QUEUE);
    let (frames_tx, frames_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Outgoing::Frame(message)) = rx.recv().await {
            if frames_tx.send(message).is_err() {
                return;
            }
        }
    });
    let sink = ChunkSink {
        job_id: job_id.to_string(),
        out: tx,
    };
    (sink, frames_rx)
}

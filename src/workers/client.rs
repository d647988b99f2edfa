//! The worker side of the protocol, shared by `auxot worker gpu` and `auxot worker cli`: dial
//! every router of the fleet (one connection each, each with its own reconnect backoff), say
//! hello, heartbeat, run jobs in the slots of one pool shared by all connections.
//!
//! What a worker actually does with a job lives behind [`JobHandler`] (`job.rs`); one
//! connection's life is a `Session` (`session.rs`), which only moves frames. Every outgoing
//! frame goes through one channel into one socket writer task, so job tasks never touch the
//! socket. Here: where and as whom a worker connects, and what can go wrong.

use crate::crypto::Secret;
use crate::workers::args::ConnectionArgs;
use std::time::Duration;

#[cfg(test)]
pub(crate) use super::job::test_sink;
pub use super::job::{ChunkSink, Job, JobHandler, JobOutcome, SinkClosed};

/// The router's WebSocket endpoint, relative to `--server`.
pub const CONNECT_PATH: &str = "api/workers/connect";

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid --server URL {url:?}: {reason}")]
    ServerUrl { url: String, reason: String },
    #[error("invalid --upstream URL {url:?}: {reason}")]
    UpstreamUrl { url: String, reason: String },
    #[error("cannot reach the model server at {url}: {detail}")]
    Upstream { url: String, detail: String },
    #[error("cannot find the `{program}` CLI {place}; install it or give its path with --command")]
    CliNotFound { program: String, place: String },
    #[error("{0}")]
    InvalidConfig(String),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    // The variants below end one connection; the worker logs them and reconnects.
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("the router rejected the worker token (HTTP {status}); create a new token in the admin UI")]
    TokenRejected { status: u16 },
    #[error("the router answered HTTP {status} instead of opening a WebSocket")]
    UpgradeRefused { status: u16 },
    #[error("the router refused this worker: {0}")]
    Refused(String),
    #[error("the router sent no hello_ack within {0:?}")]
    NoHelloAck(Duration),
    #[error("the connection to the router was lost: {0}")]
    ConnectionLost(String),
}

impl WorkerError {
    /// Errors that retrying cannot fix: the worker stops instead of reconnecting forever.
    pub(super) fn is_fatal(&self) -> bool {
        match self {
            WorkerError::ServerUrl { .. }
            | WorkerError::UpstreamUrl { .. }
            | WorkerError::Upstream { .. }
            | WorkerError::CliNotFound { .. }
            | WorkerError::InvalidConfig(_)
            | WorkerError::HttpClient(_) => true,
            WorkerError::Connect { .. }
            | WorkerError::TokenRejected { .. }
            | WorkerError::UpgradeRefused { .. }
            | WorkerError::Refused(_)
            | WorkerError::NoHelloAck(_)
            | WorkerError::ConnectionLost(_) => false,
        }
    }
}

/// Where and as whom a worker connects.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Every router's http(s) base URL, as given with `--server`.
    pub servers: Vec<String>,
    pub token: Secret,
    /// `None`: the router names the worker after its token.
    pub name: Option<String>,
    pub slots: u32,
    /// How often to re-read the handler's models; `None` when they never change.
    pub models_refresh: Option<Duration>,
}

impl ConnectionConfig {
    pub fn from_args(args: &ConnectionArgs, models_refresh: Option<Duration>) -> Self {
        ConnectionConfig {
            servers: args.server.clone(),
            token: args.token.clone(),
            name: args.name.clone(),
            slots: args.slots.max(1),
            models_refresh,
        }
    }
}

/// `--server` http://h:p/prefix → ws://h:p/prefix/api/workers/connect (https → wss).
pub fn connect_url(server: &str) -> Result<String, WorkerError> {
    let bad = |reason: &str| WorkerError::ServerUrl {
        url: server.to_string(),
        reason: reason.to_string(),
    };
    let mut url = url::Url::parse(server.trim()).map_err(|e| bad(&e.to_string()))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("use an http:// or https:// URL")),
    };
    if url.host_str().is_none() {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "remove the user name and password; the worker authenticates with --token",
        ));
    }
    url.set_scheme(scheme)
        .map_err(|()| bad("cannot turn it into a WebSocket URL"))?;
    let path = format!("{}/{CONNECT_PATH}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_becomes_the_connect_url() {
        assert_eq!(
            connect_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/api/workers/connect"
        );
        assert_eq!(
            connect_url("https://auxot.example.com/").unwrap(),
            "wss://auxot.example.com/api/workers/connect"
        );
        assert_eq!(
            connect_url("https://proxy.example.com/auxot/?x=1").unwrap(),
            "wss://proxy.example.com/auxot/api/workers/connect"
        );
        assert_eq!(connect_url(" ws://h:1 ").unwrap(), "ws://h:1/api/workers/connect");
        assert!(connect_url("ftp://h").is_err());
        assert!(connect_url("127.0.0.1:8080").is_err());
        assert!(connect_url("http://user:pw@h").is_err());
    }

    #[test]
    fn errors_never_show_the_token() {
        let conn = ConnectionConfig {
            servers: vec!["http://h".into()],
            token: Secret::new("tok-secret-value".into()),
            name: Some("n".into()),
            slots: 1,
            models_refresh: None,
        };
        assert!(!format!("{conn:?}").contains("tok-secret-value"));
    }
}

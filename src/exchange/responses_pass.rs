//! An OpenAI provider's own Responses answer, forwarded to the client as it comes: a JSON
//! body as it is, an event stream event by event, each checked on the way. A stream that
//! breaks, sends an event that is not JSON or ends before its last event
//! (`response.completed`, `response.incomplete`, `response.failed`) ends with an `error`
//! event numbered after the last one, and the request is metered as failed.

use super::passthrough::fail;
use super::pump::{sse_pump, Flow, SseStep};
use super::{BoxError, Outgoing};
use crate::providers::UpstreamReply;
use crate::translate::sse::SseEvent;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use std::collections::VecDeque;

const TERMINAL: &[&str] = &["response.completed", "response.incomplete", "response.failed"];

pub(super) fn forward(upstream: UpstreamReply, route: &str) -> Outgoing {
    let content_type = upstream.content_type.unwrap_or_else(|| "application/json".into());
    if !content_type.starts_with("text/event-stream") {
        return Outgoing {
            status: upstream.status,
            content_type,
            body: upstream
                .body
                .map(|item| item.map_err(|e| Box::new(e) as BoxError))
                .boxed(),
        };
    }
    let checked = Checked {
        next_sequence: 0,
        terminated: false,
        route: route.to_string(),
    };
    Outgoing {
        status: upstream.status,
        content_type,
        body: sse_pump(upstream.body, checked).boxed(),
    }
}

/// A Responses stream's events, checked as they pass.
struct Checked {
    /// The next sequence number, for an error event auxot adds.
    next_sequence: u64,
    terminated: bool,
    route: String,
}

impl Checked {
    fn broke(&mut self, why: &str, out: &mut VecDeque<Result<Bytes, BoxError>>) -> Flow {
        tracing::warn!(route = %self.route, %why, "a passed-through Responses stream failed");
        let message = format!("'{}' failed mid-stream: {why}", self.route);
        let event = json!({"type": "error", "sequence_number": self.next_sequence,
            "code": "upstream_stream_error", "message": message, "param": null});
        fail(out, Bytes::from(format!("event: error\ndata: {event}\n\n")))
    }
}

impl SseStep for Checked {
    type Out = Result<Bytes, BoxError>;

    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<Self::Out>) -> Flow {
        #[derive(Deserialize)]
        struct Peek {
            #[serde(default, rename = "type")]
            kind: Option<String>,
            #[serde(default)]
            sequence_number: Option<u64>,
        }
        let data = event.data.trim();
        if data.is_empty() {
            return Flow::More;
        }
        let Ok(peek) = serde_json::from_str::<Peek>(data) else {
            let shown: String = data.chars().take(120).collect();
            return self.broke(&format!("the upstream sent an event that is not JSON: {shown}"), out);
        };
        if let Some(n) = peek.sequence_number {
            self.next_sequence = self.next_sequence.max(n + 1);
        }
        let kind = event.event.as_deref().or(peek.kind.as_deref()).unwrap_or_default();
        self.terminated |= TERMINAL.contains(&kind);
        // JSON has no raw newlines outside strings: joined multi-line data goes on one line.
        let line = data.replace(['\n', '\r'], "");
        let bytes = match &event.event {
            Some(name) => format!("event: {name}\ndata: {line}\n\n"),
            None => format!("data: {line}\n\n"),
        };
        out.push_back(Ok(Bytes::from(bytes)));
        Flow::More
    }

    fn end(&mut self, broken: Option<String>, out: &mut VecDeque<Self::Out>) {
        match broken {
            Some(why) => self.broke(&why, out),
            None if self.terminated => Flow::Ended,
            None => self.broke("the upstream stream ended before response.completed", out),
        };
    }
}

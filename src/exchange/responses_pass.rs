//! An OpenAI provider's own Responses answer, forwarded to the client as it comes: a JSON
//! body as it is, an event stream event by event, each checked on the way. A stream that
//! breaks, sends an event that is not JSON or ends before its last event
//! (`response.completed`, `response.incomplete`, `response.failed`) ends with an `error`
//! event numbered after the last one, and the request is metered as failed.

use super::passthrough::fail;
use super::{BoxError, Outgoing};
use crate::providers::{ProviderError, UpstreamReply};
use crate::translate::sse::{SseEvent, SseParser};
use bytes::Bytes;
use futures_util::stream::BoxStream;
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
    struct Checked {
        body: BoxStream<'static, Result<Bytes, ProviderError>>,
        parser: SseParser,
        pending: VecDeque<Result<Bytes, BoxError>>,
        /// The next sequence number, for an error event auxot adds.
        next_sequence: u64,
        terminated: bool,
        ended: bool,
        route: String,
    }
    impl Checked {
        fn pass(&mut self, event: &SseEvent) -> Result<(), String> {
            #[derive(Deserialize)]
            struct Peek {
                #[serde(default, rename = "type")]
                kind: Option<String>,
                #[serde(default)]
                sequence_number: Option<u64>,
            }
            let data = event.data.trim();
            if data.is_empty() {
                return Ok(());
            }
            let peek: Peek = serde_json::from_str(data).map_err(|_| {
                let shown: String = data.chars().take(120).collect();
                format!("the upstream sent an event that is not JSON: {shown}")
            })?;
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
            self.pending.push_back(Ok(Bytes::from(bytes)));
            Ok(())
        }

        fn broke(&mut self, why: &str) {
            tracing::warn!(route = %self.route, %why, "a passed-through Responses stream failed");
            let message = format!("'{}' failed mid-stream: {why}", self.route);
            let event = json!({"type": "error", "sequence_number": self.next_sequence,
                "code": "upstream_stream_error", "message": message, "param": null});
            fail(
                &mut self.pending,
                &mut self.ended,
                Bytes::from(format!("event: error\ndata: {event}\n\n")),
            );
        }
    }
    let state = Checked {
        body: upstream.body,
        parser: SseParser::new(),
        pending: VecDeque::new(),
        next_sequence: 0,
        terminated: false,
        ended: false,
        route: route.to_string(),
    };
    let body = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.pending.pop_front() {
                return Some((item, state));
            }
            if state.ended {
                return None;
            }
            let (events, at_end) = match state.body.next().await {
                Some(Ok(chunk)) => (state.parser.push(&chunk), false),
                Some(Err(e)) => {
                    state.broke(&e.to_string());
                    continue;
                }
                None => (state.parser.finish(), true),
            };
            for event in &events {
                if let Err(why) = state.pass(event) {
                    state.broke(&why);
                    break;
                }
            }
            if at_end && !state.ended {
                if state.terminated {
                    state.ended = true;
                } else {
                    state.broke("the upstream stream ended before response.completed");
                }
            }
        }
    });
    Outgoing {
        status: upstream.status,
        content_type,
        body: body.boxed(),
    }
}

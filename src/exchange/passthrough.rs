//! A same-dialect answer forwarded as it arrives, each SSE event checked on the way; and
//! the error events a broken stream ends with, in each dialect.

use super::pump::{sse_pump, Flow, SseStep};
use super::{BoxError, Outgoing};
use crate::providers::{ProviderError, UpstreamReply};
use crate::translate::chunks::sse_event;
use crate::translate::sse::SseEvent;
use crate::translate::Format;
use crate::usage::Meter;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::json;
use std::collections::VecDeque;

/// A translated body bigger than this is refused rather than held in memory.
const MAX_TRANSLATED_BODY: usize = 32 * 1024 * 1024;

type UpstreamBody = BoxStream<'static, Result<Bytes, ProviderError>>;

/// An upstream reply whose body the meter reads as it passes: for answers the client gets
/// translated, the upstream's own usage report is the complete one.
pub(super) fn watched(meter: &mut Meter, mut reply: UpstreamReply, format: crate::translate::Format) -> UpstreamReply {
    let sse = reply
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/event-stream"));
    reply.body = meter.watch_upstream(reply.body, format, sse);
    reply
}

/// Reads a non-streaming upstream body whole, bounded.
pub(super) async fn collect(body: UpstreamBody) -> Result<Bytes, String> {
    crate::providers::collect_body(body, MAX_TRANSLATED_BODY, "the upstream's answer")
        .await
        .map_err(|e| e.to_string())
}

/// Forwards a same-dialect upstream body as it arrives. An SSE body is forwarded event by
/// event, each checked on the way: an event whose data is not JSON, a stream that breaks or
/// one that ends without its terminator (`[DONE]`, `message_stop`) ends with an error event
/// in the client's dialect (`error_event(route, why)`) and the request is metered as failed.
/// Multi-line `data:` events are joined as the SSE spec says.
pub(super) fn upstream_body(
    upstream: UpstreamReply,
    route: &str,
    format: Format,
    error_event: fn(&str, &str) -> Bytes,
) -> Outgoing {
    let content_type = upstream.content_type.unwrap_or_else(|| "application/json".into());
    let is_sse = content_type.starts_with("text/event-stream");
    if !is_sse {
        let body = upstream.body.map(|item| item.map_err(|e| Box::new(e) as BoxError));
        return Outgoing {
            status: upstream.status,
            content_type,
            body: body.boxed(),
        };
    }
    let checked = Checked {
        format,
        route: route.to_string(),
        error_event,
        terminated: false,
    };
    Outgoing {
        status: upstream.status,
        content_type,
        body: sse_pump(upstream.body, checked).boxed(),
    }
}

/// A same-dialect SSE stream's events, checked as they pass.
struct Checked {
    format: Format,
    route: String,
    error_event: fn(&str, &str) -> Bytes,
    /// The dialect's last event (`[DONE]`, `message_stop`) went by.
    terminated: bool,
}

impl SseStep for Checked {
    type Out = Result<Bytes, BoxError>;

    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<Self::Out>) -> Flow {
        match checked_event(self.format, event) {
            Ok((bytes, terminal)) => {
                self.terminated |= terminal;
                out.push_back(Ok(bytes));
                Flow::More
            }
            Err(why) => {
                tracing::warn!(route = %self.route, %why, "upstream sent an unreadable event");
                fail(out, (self.error_event)(&self.route, &why))
            }
        }
    }

    fn end(&mut self, broken: Option<String>, out: &mut VecDeque<Self::Out>) {
        match broken {
            Some(e) => {
                tracing::warn!(route = %self.route, error = %e, "upstream stream broke after the first content");
                fail(out, (self.error_event)(&self.route, &e));
            }
            None if self.terminated => {}
            None => {
                let why = "the upstream stream ended without its final event";
                fail(out, (self.error_event)(&self.route, why));
            }
        }
    }
}

/// The stream ended with an error event: `metered` settles it as failed and ends the body
/// cleanly (the client reads the error event, not a cut connection).
#[derive(Debug, thiserror::Error)]
#[error("the upstream stream failed: the client got an error event")]
pub(super) struct EndedWithErrorEvent;

/// Ends the stream with `event`, then the marker that has it metered as failed.
pub(super) fn fail(out: &mut VecDeque<Result<Bytes, BoxError>>, event: Bytes) -> Flow {
    out.push_back(Ok(event));
    out.push_back(Err(Box::new(EndedWithErrorEvent)));
    Flow::Ended
}

/// One upstream event re-serialised for the client, and whether it ends the stream; an
/// event that is not what the dialect allows is the reason it cannot pass.
fn checked_event(format: Format, event: &SseEvent) -> Result<(Bytes, bool), String> {
    let data = event.data.as_str();
    if matches!(format, Format::OpenAi) && data.trim() == "[DONE]" {
        return Ok((Bytes::from_static(b"data: [DONE]\n\n"), true));
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(data).is_err() {
        let shown: String = data.chars().take(120).collect();
        return Err(format!("the upstream sent an event that is not JSON: {shown}"));
    }
    // JSON has no raw newlines outside strings: joined multi-line data goes out on one line.
    let line = data.replace(['\n', '\r'], "");
    let terminal = matches!(format, Format::Anthropic)
        && (event.event.as_deref() == Some("message_stop") || line.contains("\"message_stop\""));
    let bytes = match &event.event {
        Some(name) => format!("event: {name}\ndata: {line}\n\n"),
        None => format!("data: {line}\n\n"),
    };
    Ok((Bytes::from(bytes), terminal))
}

pub(super) fn openai_stream_error(route: &str, why: &str) -> Bytes {
    let event = json!({"error": {"message": format!("'{route}' failed mid-stream: {why}"), "type": "api_error", "code": "upstream_stream_error", "param": null}});
    sse_event(&event.to_string())
}

pub(super) fn anthropic_stream_error(route: &str, why: &str) -> Bytes {
    let event = json!({"type": "error", "error": {"type": "api_error", "message": format!("'{route}' failed mid-stream: {why}")}});
    Bytes::from(format!("event: error\ndata: {event}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse_reply(chunks: Vec<Result<&'static str, ProviderError>>) -> UpstreamReply {
        let items: Vec<Result<Bytes, ProviderError>> = chunks
            .into_iter()
            .map(|c| c.map(|s| Bytes::from_static(s.as_bytes())))
            .collect();
        UpstreamReply {
            status: 200,
            content_type: Some("text/event-stream".into()),
            body: futures_util::stream::iter(items).boxed(),
        }
    }

    /// What the client reads, and whether the body ended by asking the meter to fail it.
    async fn drain(out: Outgoing) -> (String, bool) {
        let mut body = out.body;
        let mut text = String::new();
        let mut failed = false;
        while let Some(item) = body.next().await {
            match item {
                Ok(bytes) => text.push_str(std::str::from_utf8(&bytes).unwrap()),
                Err(e) => failed |= e.is::<EndedWithErrorEvent>(),
            }
        }
        (text, failed)
    }

    #[tokio::test]
    async fn a_complete_openai_stream_passes_event_by_event_joined_lines_on_one() {
        let reply = sse_reply(vec![Ok("data: {\"a\":\ndata: 1}\n\n"), Ok("data: [DONE]\n\n")]);
        let (text, failed) = drain(upstream_body(reply, "main", Format::OpenAi, openai_stream_error)).await;
        assert_eq!(text, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert!(!failed);
    }

    #[tokio::test]
    async fn an_anthropic_stream_cut_before_message_stop_ends_with_an_anthropic_error_event() {
        let reply = sse_reply(vec![Ok("event: message_start\ndata: {\"type\":\"message_start\"}\n\n")]);
        let (text, failed) = drain(upstream_body(reply, "main", Format::Anthropic, anthropic_stream_error)).await;
        assert!(text.starts_with("event: message_start\n"), "{text}");
        assert!(text.contains("event: error\ndata: "), "{text}");
        assert!(text.contains("'main' failed mid-stream"), "{text}");
        assert!(failed, "the meter must record the cut stream as failed");
    }

    #[tokio::test]
    async fn an_event_that_is_not_json_stops_the_stream_with_an_openai_error() {
        let reply = sse_reply(vec![
            Ok("data: {\"ok\":true}\n\ndata: <html>\n\n"),
            Ok("data: [DONE]\n\n"),
        ]);
        let (text, failed) = drain(upstream_body(reply, "main", Format::OpenAi, openai_stream_error)).await;
        assert!(text.starts_with("data: {\"ok\":true}\n\n"), "{text}");
        assert!(
            text.contains("upstream_stream_error") && text.contains("not JSON"),
            "{text}"
        );
        assert!(!text.contains("[DONE]"), "nothing passes after the error: {text}");
        assert!(failed);
    }
}

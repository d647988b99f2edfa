//! The opening of a reply, up to its first content, and the clocks on the rest.
//!
//! Providers often open a stream with events that carry no content (OpenAI's role-only
//! chunk, Anthropic's `message_start` and pings) and then send an error (quota, overload).
//! Those openings are held back until the first content or tool-call delta: an error
//! before it is a failure like one before the first byte, and the request moves on to the
//! next candidate. After it, the stream is the client's, and the idle and total clocks
//! end a stalled one with an error the relays turn into a well-formed error event.

use super::error::Why;
use crate::bounded::ReadError;
use crate::providers::ProviderError;
use crate::translate::sse::{SseEvent, SseParser};
use crate::translate::Format;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::Duration;
use tokio::time::Instant;

/// The clocks on one attempt, all measured from its start except `idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    /// Until the upstream's response headers (a worker: its first event).
    pub headers: Duration,
    /// Until the first content or tool-call delta.
    pub first_content: Duration,
    /// The longest silence between two chunks once content flows.
    pub idle: Duration,
    /// The whole request.
    pub total: Duration,
}

/// Absolute deadlines of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub phases: Phases,
    pub started: Instant,
}

impl Clock {
    pub fn start(phases: Phases) -> Clock {
        Clock {
            phases,
            started: Instant::now(),
        }
    }

    fn total_deadline(&self) -> Instant {
        self.started + self.phases.total
    }

    pub fn headers_deadline(&self) -> (Instant, &'static str, Duration) {
        self.earliest(self.phases.headers, "response headers")
    }

    pub fn first_content_deadline(&self) -> (Instant, &'static str, Duration) {
        self.earliest(self.phases.first_content, "first content")
    }

    /// The next idle deadline from now, or the total one if it comes first.
    pub fn idle_deadline(&self) -> (Instant, &'static str, Duration) {
        let idle = Instant::now() + self.phases.idle;
        if idle <= self.total_deadline() {
            (idle, "idle", self.phases.idle)
        } else {
            (self.total_deadline(), "total", self.phases.total)
        }
    }

    fn earliest(&self, phase: Duration, name: &'static str) -> (Instant, &'static str, Duration) {
        let at = self.started + phase;
        if at <= self.total_deadline() {
            (at, name, phase)
        } else {
            (self.total_deadline(), "total", self.phases.total)
        }
    }
}

#[derive(Deserialize)]
struct ChunkPeek {
    #[serde(default)]
    choices: Vec<ChoicePeek>,
    #[serde(default)]
    usage: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ChoicePeek {
    #[serde(default)]
    delta: Option<DeltaPeek>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct DeltaPeek {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
}

/// What one OpenAI chunk is, for the hold: an opening, content, or an error.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkKind {
    Opening,
    Content,
    Error,
}

pub fn openai_chunk_kind(data: &str) -> Result<ChunkKind, String> {
    let peek: ChunkPeek = serde_json::from_str(data).map_err(|e| format!("not a chat chunk: {e}"))?;
    if peek.error.is_some() {
        return Ok(ChunkKind::Error);
    }
    let content = peek.usage.is_some()
        || peek.choices.iter().any(|c| {
            let delta = c.delta.as_ref();
            c.finish_reason.is_some()
                || delta.is_some_and(|d| {
                    d.content.as_deref().is_some_and(|t| !t.is_empty())
                        || d.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                        || d.refusal.as_deref().is_some_and(|t| !t.is_empty())
                        || d.reasoning_content.as_deref().is_some_and(|t| !t.is_empty())
                        || d.reasoning.as_deref().is_some_and(|t| !t.is_empty())
                })
        });
    Ok(if content {
        ChunkKind::Content
    } else {
        ChunkKind::Opening
    })
}

/// An event's type: its SSE `event:` name, else the `type` field of its data (`dialect`
/// names the events expected, for the error when it has neither).
fn event_type(event: &SseEvent, dialect: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct TypePeek {
        #[serde(rename = "type")]
        kind: String,
    }
    match event.event.as_deref() {
        Some(name) if name != "message" => Ok(name.to_string()),
        _ => serde_json::from_str::<TypePeek>(&event.data)
            .map(|peek| peek.kind)
            .map_err(|e| format!("not {dialect} event: {e}")),
    }
}

fn anthropic_event_kind(event: &SseEvent) -> Result<ChunkKind, String> {
    let kind = event_type(event, "an Anthropic")?;
    Ok(match kind.as_str() {
        "message_start" | "ping" => ChunkKind::Opening,
        "error" => ChunkKind::Error,
        _ => ChunkKind::Content,
    })
}

fn event_kind(format: Format, event: &SseEvent) -> Result<ChunkKind, String> {
    match format {
        Format::Anthropic => anthropic_event_kind(event),
        _ => {
            let data = event.data.trim();
            if data == "[DONE]" {
                return Ok(ChunkKind::Content);
            }
            if data.is_empty() {
                return Ok(ChunkKind::Opening);
            }
            openai_chunk_kind(data)
        }
    }
}

pub type UpstreamBody = BoxStream<'static, Result<Bytes, ProviderError>>;

/// Reads an upstream SSE body until its first content event, within the first-content
/// deadline. Returns the body with the held bytes put back in front (the client gets the
/// stream exactly as sent), its rest under the idle and total clocks.
pub async fn hold_until_content(body: UpstreamBody, format: Format, clock: Clock) -> Result<UpstreamBody, Why> {
    hold_until(body, clock, |event| event_kind(format, event)).await
}

/// The same for an OpenAI Responses event stream (`/responses` passed through).
pub async fn hold_responses_until_content(body: UpstreamBody, clock: Clock) -> Result<UpstreamBody, Why> {
    hold_until(body, clock, responses_event_kind).await
}

/// A Responses event: its announcements (`response.created`, `in_progress`, an item or
/// part added empty) are openings; `error` and `response.failed` are errors; anything else
/// (a delta, a finished item, the end) is content.
fn responses_event_kind(event: &SseEvent) -> Result<ChunkKind, String> {
    let kind = event_type(event, "a Responses")?;
    Ok(match kind.as_str() {
        "response.created"
        | "response.in_progress"
        | "response.queued"
        | "response.output_item.added"
        | "response.content_part.added"
        | "response.reasoning_summary_part.added"
        | "keepalive" => ChunkKind::Opening,
        "error" | "response.failed" => ChunkKind::Error,
        _ => ChunkKind::Content,
    })
}

async fn hold_until(
    mut body: UpstreamBody,
    clock: Clock,
    classify: impl Fn(&SseEvent) -> Result<ChunkKind, String>,
) -> Result<UpstreamBody, Why> {
    let (deadline, phase, limit) = clock.first_content_deadline();
    let mut parser = SseParser::new();
    let mut held: Vec<Bytes> = Vec::new();
    loop {
        let next = tokio::time::timeout_at(deadline, body.next())
            .await
            .map_err(|_| Why::Timeout { phase, limit })?;
        let chunk = match next {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(Why::Provider(e)),
            None => {
                let events = parser.finish();
                return match first_verdict(&classify, &events)? {
                    Some(()) => Ok(resume(held, body, clock)),
                    None => Err(Why::Provider(ProviderError::Stream(
                        "the stream ended before any content".into(),
                    ))),
                };
            }
        };
        let events = parser.push(&chunk);
        held.push(chunk);
        if first_verdict(&classify, &events)?.is_some() {
            return Ok(resume(held, body, clock));
        }
    }
}

/// `Some` once an event carries content; an error or unreadable event before it fails.
fn first_verdict(
    classify: &impl Fn(&SseEvent) -> Result<ChunkKind, String>,
    events: &[SseEvent],
) -> Result<Option<()>, Why> {
    for event in events {
        match classify(event).map_err(Why::BadChunk)? {
            ChunkKind::Opening => {}
            ChunkKind::Content => return Ok(Some(())),
            ChunkKind::Error => {
                return Err(Why::Provider(ProviderError::Stream(format!(
                    "error event before any content: {}",
                    crate::providers::error_message(event.data.as_bytes())
                ))))
            }
        }
    }
    Ok(None)
}

fn resume(held: Vec<Bytes>, rest: UpstreamBody, clock: Clock) -> UpstreamBody {
    futures_util::stream::iter(held.into_iter().map(Ok))
        .chain(with_clocks(rest, clock))
        .boxed()
}

/// Ends a body that goes silent for `idle` (or runs past the total time) with a
/// `ProviderError::Timeout`: the relays turn that into an error event in the client's
/// dialect, and dropping the body frees the connection.
pub fn with_clocks(body: UpstreamBody, clock: Clock) -> UpstreamBody {
    futures_util::stream::unfold(Some(body), move |state| async move {
        let mut body = state?;
        let (deadline, phase, limit) = clock.idle_deadline();
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(item)) => Some((item, Some(body))),
            Ok(None) => None,
            Err(_) => {
                let e = ProviderError::Stream(format!(
                    "no data from the upstream for {}ms ({phase} timeout)",
                    limit.as_millis()
                ));
                Some((Err(e), None))
            }
        }
    })
    .boxed()
}

/// An answer past `limit` bytes, refused rather than held in memory.
pub(super) fn too_large(limit: usize) -> Why {
    Why::BadChunk(format!("an answer larger than {} MiB", limit / (1024 * 1024)))
}

/// Reads a non-streamed body whole under the clocks, bounded; a body that is not JSON is
/// a broken upstream (the next candidate gets the request).
pub async fn read_whole(body: UpstreamBody, clock: Clock, limit: usize) -> Result<Bytes, Why> {
    // Each piece comes by the idle clock: a stall is a timeout, not a broken body.
    let timed = futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        let (deadline, phase, phase_limit) = clock.idle_deadline();
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(e))) => Some((Err(Why::Provider(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(Why::Timeout {
                    phase,
                    limit: phase_limit,
                }),
                None,
            )),
        }
    });
    let out = crate::bounded::read_to_limit(timed, limit, 0)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge { limit } => too_large(limit),
            ReadError::Broken(why) => why,
        })?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_err() {
        let text = String::from_utf8_lossy(&out);
        return Err(Why::BadChunk(format!(
            "the answer is not JSON: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    Ok(out)
}

/// Whether a worker's chunk carries content (held back until one does).
pub fn worker_chunk_kind(chunk: &RawValue) -> Result<ChunkKind, Why> {
    openai_chunk_kind(chunk.get()).map_err(Why::BadChunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(ms: u64) -> Phases {
        Phases {
            headers: Duration::from_millis(ms),
            first_content: Duration::from_millis(ms),
            idle: Duration::from_millis(ms),
            total: Duration::from_secs(60),
        }
    }

    fn body(parts: Vec<&'static str>) -> UpstreamBody {
        futures_util::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p.as_bytes())))).boxed()
    }

    #[test]
    fn openings_are_told_from_content() {
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        assert_eq!(openai_chunk_kind(role).unwrap(), ChunkKind::Opening);
        let text = r#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
        assert_eq!(openai_chunk_kind(text).unwrap(), ChunkKind::Content);
        let tool = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}"#;
        assert_eq!(openai_chunk_kind(tool).unwrap(), ChunkKind::Content);
        let stop = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert_eq!(openai_chunk_kind(stop).unwrap(), ChunkKind::Content);
        let error = r#"{"error":{"message":"insufficient_quota"}}"#;
        assert_eq!(openai_chunk_kind(error).unwrap(), ChunkKind::Error);
        assert!(openai_chunk_kind("garbage").is_err());
    }

    #[tokio::test]
    async fn an_error_after_the_role_chunk_fails_over() {
        let b = body(vec![
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"error\":{\"message\":\"insufficient_quota\"}}\n\n",
        ]);
        let err = hold_until_content(b, Format::OpenAi, Clock::start(phases(1000)))
            .await
            .err()
            .unwrap();
        assert!(format!("{err:?}").contains("insufficient_quota"), "{err:?}");
    }

    #[tokio::test]
    async fn an_anthropic_error_after_message_start_fails_over_and_content_passes_whole() {
        let b = body(vec![
            "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        ]);
        let err = hold_until_content(b, Format::Anthropic, Clock::start(phases(1000)))
            .await
            .err()
            .unwrap();
        assert!(format!("{err:?}").contains("Overloaded"), "{err:?}");
        let parts = vec![
            "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\"}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        let whole: String = parts.concat();
        let held = hold_until_content(body(parts), Format::Anthropic, Clock::start(phases(1000)))
            .await
            .ok()
            .unwrap();
        let got: Vec<Bytes> = held.map(|c| c.unwrap()).collect().await;
        assert_eq!(got.concat(), whole.as_bytes());
    }

    #[tokio::test]
    async fn a_responses_stream_is_held_until_its_first_content() {
        let opening = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n\
            event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"sequence_number\":1}\n\n\
            event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":2}\n\n";
        let failed = "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"message\":\"quota\"}}}\n\n";
        let err = hold_responses_until_content(body(vec![opening, failed]), Clock::start(phases(1000)))
            .await
            .err()
            .unwrap();
        assert!(format!("{err:?}").contains("error event before any content"), "{err:?}");
        let delta = "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"delta\":\"Hi\"}\n\n";
        let held = hold_responses_until_content(body(vec![opening, delta]), Clock::start(phases(1000)))
            .await
            .ok()
            .unwrap();
        let got: Vec<Bytes> = held.map(|c| c.unwrap()).collect().await;
        assert_eq!(
            got.concat(),
            [opening, delta].concat().as_bytes(),
            "passed whole, as sent"
        );
        let silent = hold_responses_until_content(body(vec![opening]), Clock::start(phases(1000))).await;
        assert!(silent.is_err(), "a stream that ends before any content fails over");
    }

    #[tokio::test]
    async fn a_silent_stream_ends_with_an_idle_error() {
        let silent = futures_util::stream::pending::<Result<Bytes, ProviderError>>().boxed();
        let first = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"data: {}\n\n"))]).boxed();
        let mut clocked = with_clocks(first.chain(silent).boxed(), Clock::start(phases(50)));
        assert!(clocked.next().await.unwrap().is_ok());
        let err = clocked.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("idle"), "{err}");
        assert!(clocked.next().await.is_none());
    }

    #[tokio::test]
    async fn no_content_in_time_is_a_first_content_timeout() {
        let silent = futures_util::stream::pending::<Result<Bytes, ProviderError>>().boxed();
        let err = hold_until_content(silent, Format::OpenAi, Clock::start(phases(50)))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                Why::Timeout {
                    phase: "first content",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

//! Replies in the client's dialect when the body comes in the other one: SSE streams are
//! translated event by event as they arrive (never buffered whole); non-streaming bodies
//! are read (bounded) and translated once.

use crate::dispatch::Tier;
use crate::providers::{ProviderError, UpstreamReply};
use crate::translate::anthropic::{AnthropicToOpenAiStream, OpenAiToAnthropicStream, SseEvent, SseParser};
use crate::workers::registry::{JobEvent, WorkerJob};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::convert::Infallible;
use warp::http::HeaderValue;
use warp::reply::Response;

/// A translated body bigger than this is refused rather than held in memory.
const MAX_TRANSLATED_BODY: usize = 32 * 1024 * 1024;

pub type ClientStream = BoxStream<'static, Result<Bytes, Infallible>>;
type UpstreamBody = BoxStream<'static, Result<Bytes, ProviderError>>;

/// Reads a non-streaming upstream body whole, bounded.
pub async fn collect(mut body: UpstreamBody) -> Result<Bytes, String> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        out.extend_from_slice(&chunk);
        if out.len() > MAX_TRANSLATED_BODY {
            return Err("the upstream's answer is larger than 32 MiB".into());
        }
    }
    Ok(Bytes::from(out))
}

/// One direction of stream translation.
trait Translate: Send + 'static {
    fn event(&mut self, event: &SseEvent) -> Vec<Bytes>;
    /// The upstream ended, cleanly (`None`) or with an error.
    fn end(&mut self, error: Option<String>) -> Vec<Bytes>;
}

/// Anthropic SSE from an upstream, as OpenAI chunks for the client.
struct ToOpenAi {
    inner: AnthropicToOpenAiStream,
    stopped: bool,
}

impl Translate for ToOpenAi {
    fn event(&mut self, event: &SseEvent) -> Vec<Bytes> {
        if event.event.as_deref() == Some("message_stop") || event.data.contains("\"message_stop\"") {
            self.stopped = true;
        }
        self.inner.push_event(event)
    }

    fn end(&mut self, error: Option<String>) -> Vec<Bytes> {
        match error {
            None if self.stopped => Vec::new(),
            other => {
                let message = other.unwrap_or_else(|| "the upstream stream ended before message_stop".into());
                let event = json!({"error": {"message": message, "type": "api_error", "code": "upstream_stream_error", "param": null}});
                vec![Bytes::from(format!("data: {event}\n\n"))]
            }
        }
    }
}

/// OpenAI SSE from an upstream, as Anthropic events for the client.
struct ToAnthropic {
    inner: OpenAiToAnthropicStream,
}

impl Translate for ToAnthropic {
    fn event(&mut self, event: &SseEvent) -> Vec<Bytes> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.inner.finish()
        } else if data.is_empty() {
            Vec::new()
        } else {
            self.inner.push_chunk(data)
        }
    }

    fn end(&mut self, error: Option<String>) -> Vec<Bytes> {
        match error {
            None => self.inner.finish(),
            Some(message) => vec![self.inner.error_event(&message)],
        }
    }
}

struct Relay<T> {
    body: UpstreamBody,
    parser: SseParser,
    translator: T,
    pending: VecDeque<Bytes>,
    ended: bool,
}

fn relay<T: Translate>(body: UpstreamBody, translator: T) -> ClientStream {
    let state = Relay {
        body,
        parser: SseParser::new(),
        translator,
        pending: VecDeque::new(),
        ended: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(bytes) = state.pending.pop_front() {
                return Some((Ok(bytes), state));
            }
            if state.ended {
                return None;
            }
            match state.body.next().await {
                Some(Ok(chunk)) => {
                    for event in state.parser.push(&chunk) {
                        let out = state.translator.event(&event);
                        state.pending.extend(out);
                    }
                }
                Some(Err(e)) => {
                    state.ended = true;
                    let out = state.translator.end(Some(e.to_string()));
                    state.pending.extend(out);
                }
                None => {
                    state.ended = true;
                    let out = state.translator.end(None);
                    state.pending.extend(out);
                }
            }
        }
    })
    .boxed()
}

pub fn anthropic_sse_as_openai(body: UpstreamBody, model: &str, include_usage: bool) -> ClientStream {
    relay(
        body,
        ToOpenAi {
            inner: AnthropicToOpenAiStream::new(model, include_usage),
            stopped: false,
        },
    )
}

pub fn openai_sse_as_anthropic(body: UpstreamBody, model: &str) -> ClientStream {
    relay(
        body,
        ToAnthropic {
            inner: OpenAiToAnthropicStream::new(model),
        },
    )
}

/// A worker's OpenAI chunks as Anthropic events. The stream owns the job: a client that
/// goes away drops it, which cancels the job on the worker.
pub fn worker_chunks_as_anthropic(first: Option<Box<RawValue>>, job: WorkerJob, model: &str) -> ClientStream {
    struct State {
        job: WorkerJob,
        translator: OpenAiToAnthropicStream,
        pending: VecDeque<Bytes>,
        ended: bool,
    }
    let mut translator = OpenAiToAnthropicStream::new(model);
    let pending: VecDeque<Bytes> = first.map(|c| translator.push_chunk(c.get())).unwrap_or_default().into();
    let state = State {
        job,
        translator,
        pending,
        ended: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(bytes) = state.pending.pop_front() {
                return Some((Ok(bytes), state));
            }
            if state.ended {
                return None;
            }
            let out = match state.job.next_event().await {
                JobEvent::Chunk(chunk) => state.translator.push_chunk(chunk.get()),
                JobEvent::Done(usage) => {
                    state.ended = true;
                    // A CLI worker reports usage only with `done`: hand it over as OpenAI
                    // streams do, in a last chunk without choices.
                    let mut out = Vec::new();
                    if let Some(usage) = usage {
                        let chunk = json!({"object": "chat.completion.chunk", "choices": [], "usage": usage});
                        out.extend(state.translator.push_chunk(&chunk.to_string()));
                    }
                    out.extend(state.translator.finish());
                    out
                }
                JobEvent::Failed { message, .. } => {
                    state.ended = true;
                    vec![state.translator.error_event(&message)]
                }
                JobEvent::Disconnected => {
                    state.ended = true;
                    vec![state.translator.error_event("the worker disconnected")]
                }
            };
            state.pending.extend(out);
        }
    })
    .boxed()
}

pub fn sse_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        warp::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(warp::http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// Every routed reply says where it went, streams included.
pub fn route_headers(response: &mut Response, tier: Tier, route: &str) {
    let headers = response.headers_mut();
    headers.insert("x-auxot-tier", HeaderValue::from_static(tier.as_str()));
    if let Ok(value) = HeaderValue::from_str(route) {
        headers.insert("x-auxot-route", value);
    }
}

/// Forwards a same-dialect upstream body chunk by chunk. A stream that breaks after its
/// first byte cannot be retried: an SSE stream ends with an error event in the client's
/// dialect (`error_event(route, why)`).
pub fn upstream_reply(upstream: UpstreamReply, route: &str, error_event: fn(&str, &str) -> Bytes) -> Response {
    let content_type = upstream.content_type.unwrap_or_else(|| "application/json".into());
    let is_sse = content_type.starts_with("text/event-stream");
    let route = route.to_string();
    let body = upstream.body.scan(false, move |ended, item| {
        let next = match (*ended, item) {
            (true, _) => None,
            (false, Ok(bytes)) => Some(Ok::<Bytes, ProviderError>(bytes)),
            (false, Err(e)) => {
                *ended = true;
                tracing::warn!(route = %route, error = %e, "upstream stream broke after the first byte");
                if is_sse {
                    Some(Ok(error_event(&route, &e.to_string())))
                } else {
                    Some(Err(e))
                }
            }
        };
        futures_util::future::ready(next)
    });
    let mut response = Response::new(warp::hyper::Body::wrap_stream(body));
    *response.status_mut() = warp::http::StatusCode::from_u16(upstream.status).unwrap_or(warp::http::StatusCode::OK);
    if is_sse {
        sse_headers(&mut response);
    } else if let Ok(value) = HeaderValue::from_str(&content_type) {
        response.headers_mut().insert(warp::http::header::CONTENT_TYPE, value);
    }
    response
}

//! Replies in the client's dialect when the body comes in the other one: SSE streams are
//! translated event by event as they arrive (never buffered whole); non-streaming bodies
//! are read (bounded) and translated once.

use super::error::ApiError;
use crate::dispatch::Tier;
use crate::providers::{ProviderError, UpstreamReply};
use crate::translate::anthropic::{AnthropicToOpenAiStream, OpenAiToAnthropicStream, SseEvent, SseParser};
use crate::usage::tap::is_usage_only_event;
use crate::usage::Meter;
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
pub async fn collect(body: UpstreamBody) -> Result<Bytes, String> {
    crate::providers::collect_body(body, MAX_TRANSLATED_BODY, "the upstream's answer")
        .await
        .map_err(|e| e.to_string())
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
pub fn worker_chunks_as_anthropic(held: Vec<Box<RawValue>>, job: WorkerJob, model: &str) -> ClientStream {
    struct State {
        job: WorkerJob,
        translator: OpenAiToAnthropicStream,
        pending: VecDeque<Bytes>,
        ended: bool,
    }
    let mut translator = OpenAiToAnthropicStream::new(model);
    let pending: VecDeque<Bytes> = held.iter().flat_map(|c| translator.push_chunk(c.get())).collect();
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

/// What goes back to the client, before metering: status, content type, body.
pub struct Outgoing {
    pub status: u16,
    pub content_type: String,
    pub body: BoxStream<'static, Result<Bytes, BoxError>>,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Outgoing {
    pub fn sse(body: ClientStream) -> Outgoing {
        Outgoing {
            status: 200,
            content_type: "text/event-stream".into(),
            body: body.map(|item| item.map_err(|never| match never {})).boxed(),
        }
    }

    pub fn json(status: u16, body: Bytes) -> Outgoing {
        Outgoing {
            status,
            content_type: "application/json".into(),
            body: futures_util::stream::once(async move { Ok::<Bytes, BoxError>(body) }).boxed(),
        }
    }

    pub fn is_sse(&self) -> bool {
        self.content_type.starts_with("text/event-stream")
    }
}

/// Forwards a same-dialect upstream body chunk by chunk. A stream that breaks after its
/// first byte cannot be retried: an SSE stream ends with an error event in the client's
/// dialect (`error_event(route, why)`).
pub fn upstream_body(upstream: UpstreamReply, route: &str, error_event: fn(&str, &str) -> Bytes) -> Outgoing {
    let content_type = upstream.content_type.unwrap_or_else(|| "application/json".into());
    let is_sse = content_type.starts_with("text/event-stream");
    let route = route.to_string();
    let body = upstream.body.scan(false, move |ended, item| {
        let next = match (*ended, item) {
            (true, _) => None,
            (false, Ok(bytes)) => Some(Ok::<Bytes, BoxError>(bytes)),
            (false, Err(e)) => {
                *ended = true;
                tracing::warn!(route = %route, error = %e, "upstream stream broke after the first byte");
                if is_sse {
                    Some(Ok(error_event(&route, &e.to_string())))
                } else {
                    Some(Err(Box::new(e) as BoxError))
                }
            }
        };
        futures_util::future::ready(next)
    });
    Outgoing {
        status: upstream.status,
        content_type,
        body: body.boxed(),
    }
}

/// The HTTP response for `out`, its body metered: the meter reads usage from the bytes as
/// they pass, and learns whether the client got everything (completed) or went away
/// (cancelled). `strip_usage_only` drops the usage-only chunk an OpenAI client did not ask
/// for (auxot asks upstreams for usage so streams are never priced at zero).
pub fn respond(out: Outgoing, meter: Meter, strip_usage_only: bool, tier: Tier, route: &str) -> Response {
    struct Metered {
        body: BoxStream<'static, Result<Bytes, BoxError>>,
        meter: Meter,
        strip: bool,
        partial: Vec<u8>,
        ready: VecDeque<Bytes>,
        done: bool,
    }
    let strip = strip_usage_only && out.is_sse();
    let sse = out.is_sse();
    let state = Metered {
        body: out.body,
        meter,
        strip,
        partial: Vec::new(),
        ready: VecDeque::new(),
        done: false,
    };
    let body = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(bytes) = s.ready.pop_front() {
                return Some((Ok::<Bytes, BoxError>(bytes), s));
            }
            if s.done {
                return None;
            }
            match s.body.next().await {
                Some(Ok(bytes)) => {
                    s.meter.observe(&bytes);
                    if !s.strip {
                        return Some((Ok(bytes), s));
                    }
                    s.partial.extend_from_slice(&bytes);
                    while let Some(end) = event_end(&s.partial) {
                        let event: Vec<u8> = s.partial.drain(..end).collect();
                        if !is_usage_only_event(&event) {
                            s.ready.push_back(Bytes::from(event));
                        }
                    }
                }
                Some(Err(e)) => {
                    s.meter.failed("upstream_stream_error", 502);
                    s.done = true;
                    return Some((Err(e), s));
                }
                None => {
                    if !s.partial.is_empty() {
                        let rest = std::mem::take(&mut s.partial);
                        s.ready.push_back(Bytes::from(rest));
                    }
                    s.meter.completed();
                    s.done = true;
                }
            }
        }
    });
    let mut response = Response::new(warp::hyper::Body::wrap_stream(body));
    *response.status_mut() = warp::http::StatusCode::from_u16(out.status).unwrap_or(warp::http::StatusCode::OK);
    if sse {
        sse_headers(&mut response);
    } else if let Ok(value) = HeaderValue::from_str(&out.content_type) {
        response.headers_mut().insert(warp::http::header::CONTENT_TYPE, value);
    }
    route_headers(&mut response, tier, route);
    response
}

/// The end (exclusive) of the first complete SSE event in `buffer`, if there is one.
fn event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Client API: the key, then its limits (429 with `Retry-After` when over one). The
/// meter learns whose request this is either way.
pub fn authorize_and_limit(
    state: &crate::AppState,
    headers: &warp::http::HeaderMap,
    meter: &mut Meter,
) -> Result<(), ApiError> {
    let principal = state.auth.authorize_client(super::request::api_key(headers))?;
    if let crate::auth::Principal::ApiKey { id, limits, .. } = principal {
        meter.set_api_key(Some(id.clone()));
        state.usage.check_limits(&id, limits).map_err(|e| {
            ApiError::new(429, "rate_limited", e.message).with_retry_after(Some(e.retry_after_secs.to_string()))
        })?;
    }
    Ok(())
}

/// Runs the request through the dispatcher; a failure still tells the meter which target
/// it reached, so its usage row names the tier and route.
pub async fn dispatch(
    state: &crate::AppState,
    mut request: crate::dispatch::ChatRequest,
    meter: &mut Meter,
) -> Result<crate::dispatch::Routed, ApiError> {
    if let Some(key_id) = meter.api_key_id() {
        super::key_grant::enforce(state, key_id, &mut request)?;
    }
    state.dispatcher.chat(request).await.map_err(|e| {
        if let Some((tier, route)) = e.last_target() {
            meter.tried(tier.as_str(), route);
        }
        ApiError::from(e)
    })
}

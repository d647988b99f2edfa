//! Replies in the client's dialect when the body comes in the other one: SSE streams are
//! translated event by event as they arrive (never buffered whole); non-streaming bodies
//! are read (bounded) and translated once.

use super::error::ApiError;
use crate::dispatch::Tier;
use crate::providers::{ProviderError, UpstreamReply};
use crate::translate::anthropic::{AnthropicToOpenAiStream, OpenAiToAnthropicStream, SseEvent, SseParser};
use crate::translate::Format;
use crate::usage::tap::{ends_stream, is_usage_only_event};
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

/// An upstream reply whose body the meter reads as it passes: for answers the client gets
/// translated, the upstream's own usage report is the complete one.
pub fn watched(meter: &mut Meter, mut reply: UpstreamReply, format: crate::translate::Format) -> UpstreamReply {
    let sse = reply
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/event-stream"));
    reply.body = meter.watch_upstream(reply.body, format, sse);
    reply
}

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
                JobEvent::Disconnected | JobEvent::Refused => {
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

/// Forwards a same-dialect upstream body as it arrives. An SSE body is forwarded event by
/// event, each checked on the way: an event whose data is not JSON, a stream that breaks or
/// one that ends without its terminator (`[DONE]`, `message_stop`) ends with an error event
/// in the client's dialect (`error_event(route, why)`) and the request is metered as failed.
/// Multi-line `data:` events are joined as the SSE spec says.
pub fn upstream_body(
    upstream: UpstreamReply,
    route: &str,
    format: Format,
    error_event: fn(&str, &str) -> Bytes,
) -> Outgoing {
    let content_type = upstream.content_type.unwrap_or_else(|| "application/json".into());
    let is_sse = content_type.starts_with("text/event-stream");
    let route = route.to_string();
    if !is_sse {
        let body = upstream.body.map(|item| item.map_err(|e| Box::new(e) as BoxError));
        return Outgoing {
            status: upstream.status,
            content_type,
            body: body.boxed(),
        };
    }
    struct Checked {
        body: UpstreamBody,
        parser: SseParser,
        pending: VecDeque<Result<Bytes, BoxError>>,
        terminated: bool,
        ended: bool,
    }
    let state = Checked {
        body: upstream.body,
        parser: SseParser::new(),
        pending: VecDeque::new(),
        terminated: false,
        ended: false,
    };
    let body = futures_util::stream::unfold(state, move |mut state| {
        let route = route.clone();
        async move {
            loop {
                if let Some(item) = state.pending.pop_front() {
                    return Some((item, state));
                }
                if state.ended {
                    return None;
                }
                let events = match state.body.next().await {
                    Some(Ok(chunk)) => state.parser.push(&chunk),
                    Some(Err(e)) => {
                        tracing::warn!(route = %route, error = %e, "upstream stream broke after the first content");
                        fail(
                            &mut state.pending,
                            &mut state.ended,
                            error_event(&route, &e.to_string()),
                        );
                        continue;
                    }
                    None => {
                        let events = state.parser.finish();
                        let mut out = Vec::new();
                        let mut broken = None;
                        for event in &events {
                            match checked_event(format, event) {
                                Ok((bytes, terminal)) => {
                                    out.push(bytes);
                                    state.terminated |= terminal;
                                }
                                Err(why) => {
                                    broken = Some(why);
                                    break;
                                }
                            }
                        }
                        state.pending.extend(out.into_iter().map(Ok));
                        state.ended = true;
                        let why = broken.or_else(|| {
                            (!state.terminated).then(|| "the upstream stream ended without its final event".to_string())
                        });
                        if let Some(why) = why {
                            state.ended = false;
                            fail(&mut state.pending, &mut state.ended, error_event(&route, &why));
                        }
                        continue;
                    }
                };
                for event in &events {
                    match checked_event(format, event) {
                        Ok((bytes, terminal)) => {
                            state.terminated |= terminal;
                            state.pending.push_back(Ok(bytes));
                        }
                        Err(why) => {
                            tracing::warn!(route = %route, %why, "upstream sent an unreadable event");
                            fail(&mut state.pending, &mut state.ended, error_event(&route, &why));
                            break;
                        }
                    }
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

/// The stream ended with an error event: `respond` meters it as failed and ends the body
/// cleanly (the client reads the error event, not a cut connection).
#[derive(Debug, thiserror::Error)]
#[error("the upstream stream failed: the client got an error event")]
pub(super) struct EndedWithErrorEvent;

pub(super) fn fail(pending: &mut VecDeque<Result<Bytes, BoxError>>, ended: &mut bool, event: Bytes) {
    pending.push_back(Ok(event));
    pending.push_back(Err(Box::new(EndedWithErrorEvent)));
    *ended = true;
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

/// The HTTP response for `out`, its body metered: the meter reads usage from the bytes as
/// they pass, and learns whether the client got everything (completed) or went away
/// (cancelled). `strip_usage_only` drops the usage-only chunk an OpenAI client did not ask
/// for (auxot asks upstreams for usage so streams are never priced at zero).
///
/// No answered request is lost from the books: the bytes that end an answer (a stream's
/// closing event, the last piece of a JSON body) are held until the usage row is durable.
pub fn respond(out: Outgoing, meter: Meter, strip_usage_only: bool, tier: Tier, route: &str) -> Response {
    struct Metered {
        body: BoxStream<'static, Result<Bytes, BoxError>>,
        meter: Meter,
        strip: bool,
        sse: bool,
        partial: Vec<u8>,
        ready: VecDeque<Bytes>,
        /// Bytes that end the answer, sent after the row is written.
        held: Vec<Bytes>,
        done: bool,
    }
    impl Metered {
        /// Sends `bytes` now, unless they end the answer.
        fn pass(&mut self, bytes: Bytes) {
            if self.sse && !ends_stream(&bytes) {
                self.ready.push_back(bytes);
                return;
            }
            // A JSON body: only its last piece waits (the one before is released now).
            if !self.sse {
                let earlier = std::mem::take(&mut self.held);
                self.ready.extend(earlier);
            }
            self.held.push(bytes);
        }
    }
    let strip = strip_usage_only && out.is_sse();
    let sse = out.is_sse();
    let state = Metered {
        body: out.body,
        meter,
        strip,
        sse,
        partial: Vec::new(),
        ready: VecDeque::new(),
        held: Vec::new(),
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
                        s.pass(bytes);
                        continue;
                    }
                    s.partial.extend_from_slice(&bytes);
                    while let Some(end) = event_end(&s.partial) {
                        let event: Vec<u8> = s.partial.drain(..end).collect();
                        if !is_usage_only_event(&event) {
                            s.pass(Bytes::from(event));
                        }
                    }
                }
                Some(Err(e)) if e.is::<EndedWithErrorEvent>() => {
                    // The client still gets everything, the error event last.
                    s.meter.failed("upstream_stream_error", 502);
                    s.meter.finish_durably().await;
                    let held = std::mem::take(&mut s.held);
                    s.ready.extend(held);
                    if !s.partial.is_empty() {
                        let rest = std::mem::take(&mut s.partial);
                        s.ready.push_back(Bytes::from(rest));
                    }
                    s.done = true;
                }
                Some(Err(e)) => {
                    // The body broke: what was held is no answer's end any more.
                    s.meter.failed("upstream_stream_error", 502);
                    s.done = true;
                    s.held.clear();
                    return Some((Err(e), s));
                }
                None => {
                    s.meter.completed();
                    s.meter.finish_durably().await;
                    let held = std::mem::take(&mut s.held);
                    s.ready.extend(held);
                    if !s.partial.is_empty() {
                        let rest = std::mem::take(&mut s.partial);
                        s.ready.push_back(Bytes::from(rest));
                    }
                    s.done = true;
                }
            }
        }
    });
    let mut response = super::body::streamed(body);
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
    if let Some(session) = super::request::header(headers, "x-claude-code-session-id") {
        meter.set_session(Some(session));
    }
    let principal = match state.auth.authorize_client(super::request::api_key(headers)) {
        Ok(principal) => principal,
        Err(e) => {
            // An expired key is still a known key: its refusals belong on its usage rows.
            if let crate::auth::AuthError::KeyExpired { key_id, .. } = &e {
                meter.set_api_key(Some(key_id.clone()));
            }
            return Err(e.into());
        }
    };
    if let crate::auth::Principal::ApiKey { id, limits, .. } = principal {
        meter.set_api_key(Some(id.clone()));
        state.usage.check_limits(&id, limits).map_err(|e| {
            ApiError::new(429, "rate_limited", e.message).with_retry_after(Some(e.retry_after_secs.to_string()))
        })?;
    }
    Ok(())
}

/// What every model endpoint does first, in this order: authorise and rate-limit the key
/// (a refused caller's body is never read), read the `X-Auxot-*` overrides, then the body
/// within the size limit.
pub async fn admit<S, B>(
    state: &crate::AppState,
    headers: &warp::http::HeaderMap,
    body: S,
    meter: &mut Meter,
) -> Result<(super::request::RouteHeaders, Bytes), ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    authorize_and_limit(state, headers, meter)?;
    let overrides = super::request::RouteHeaders::read(headers)?;
    let body = super::request::read_body(headers, body, state.config.body_limit).await?;
    Ok((overrides, body))
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
    let result = state.dispatcher.chat(request).await;
    let tried = match &result {
        Ok(routed) => {
            meter.set_queue_wait(routed.queue_wait);
            routed.failures.as_slice()
        }
        Err(e) => e.tried(),
    };
    for failure in tried {
        meter.add_attempt(failure.tier.as_str(), &failure.route, &failure.to_string());
    }
    result.map_err(|e| {
        if let crate::dispatch::DispatchError::QueueTimeout { waited, .. } = &e {
            meter.set_queue_wait(*waited);
        }
        if let Some((tier, route)) = e.last_target() {
            meter.tried(tier.as_str(), route);
        }
        ApiError::from(e)
    })
}

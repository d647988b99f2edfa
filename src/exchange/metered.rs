//! The reply's body metered: a stream as it passes (the meter reads usage from the bytes,
//! and learns whether the client got everything or went away), a JSON answer whole.

use super::passthrough::EndedWithErrorEvent;
use super::{whole_answer, BoxError, ExchangeError, Outgoing};
use crate::translate::sse::SseFramer;
use crate::usage::tap::{ends_stream, is_usage_only_event};
use crate::usage::Meter;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::VecDeque;

/// `out`'s event stream, metered: the meter reads usage from the bytes as they pass, and
/// learns whether the client got everything (completed) or went away (cancelled).
/// `strip_usage_only` drops the usage-only chunk an OpenAI client did not ask for (auxot
/// asks upstreams for usage so streams are never priced at zero).
///
/// No answered request is lost from the books: the stream's closing event is held until
/// the usage row is durable.
pub(super) fn metered(
    out: Outgoing,
    meter: Meter,
    strip_usage_only: bool,
) -> BoxStream<'static, Result<Bytes, BoxError>> {
    struct Metered {
        body: BoxStream<'static, Result<Bytes, BoxError>>,
        meter: Meter,
        strip: bool,
        /// Cuts the stream into whole events when usage-only ones are dropped.
        framer: SseFramer,
        ready: VecDeque<Bytes>,
        /// Bytes that end the answer, sent after the row is written.
        held: Vec<Bytes>,
        done: bool,
    }
    impl Metered {
        /// Sends `bytes` now, unless they end the answer.
        fn pass(&mut self, bytes: Bytes) {
            if ends_stream(&bytes) {
                self.held.push(bytes);
            } else {
                self.ready.push_back(bytes);
            }
        }
    }
    let state = Metered {
        body: out.body,
        meter,
        strip: strip_usage_only,
        framer: SseFramer::new(),
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
                    for event in s.framer.push(&bytes) {
                        if !is_usage_only_event(&event) {
                            s.pass(event);
                        }
                    }
                }
                Some(Err(e)) if e.is::<EndedWithErrorEvent>() => {
                    // The client still gets everything, the error event last.
                    s.meter.failed("upstream_stream_error", 502);
                    s.meter.finish_durably().await;
                    let held = std::mem::take(&mut s.held);
                    s.ready.extend(held);
                    s.ready.extend(s.framer.finish());
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
                    s.ready.extend(s.framer.finish());
                    s.done = true;
                }
            }
        }
    });
    body.boxed()
}

/// A JSON answer, metered whole. It is in memory already (held whole to check it, or
/// translated whole), so its row is made durable before any of it goes out and the reply
/// leaves in one piece, head and body together, with its length.
pub(super) async fn metered_whole(
    body: BoxStream<'static, Result<Bytes, BoxError>>,
    mut meter: Meter,
) -> Result<Bytes, ExchangeError> {
    let bytes = match whole_answer(body).await {
        Ok(bytes) => bytes,
        Err(e) => {
            meter.failed(e.code(), e.status());
            return Err(e);
        }
    };
    meter.observe(&bytes);
    meter.completed();
    meter.finish_durably().await;
    Ok(bytes)
}

//! The reply's body metered as it passes: the meter reads usage from the bytes, and learns
//! whether the client got everything (completed) or went away (cancelled).

use super::passthrough::EndedWithErrorEvent;
use super::{BoxError, Outgoing};
use crate::translate::sse::SseFramer;
use crate::usage::tap::{ends_stream, is_usage_only_event};
use crate::usage::Meter;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::VecDeque;

/// `out`'s body, metered: the meter reads usage from the bytes as
/// they pass, and learns whether the client got everything (completed) or went away
/// (cancelled). `strip_usage_only` drops the usage-only chunk an OpenAI client did not ask
/// for (auxot asks upstreams for usage so streams are never priced at zero).
///
/// No answered request is lost from the books: the bytes that end an answer (a stream's
/// closing event, the last piece of a JSON body) are held until the usage row is durable.
pub(super) fn metered(
    out: Outgoing,
    meter: Meter,
    strip_usage_only: bool,
) -> BoxStream<'static, Result<Bytes, BoxError>> {
    struct Metered {
        body: BoxStream<'static, Result<Bytes, BoxError>>,
        meter: Meter,
        strip: bool,
        sse: bool,
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

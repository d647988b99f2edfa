//! A worker's job, streamed to the client as its chunks arrive. The stream owns the job: a
//! client that goes away drops it, which cancels the job on the worker and frees its slot.

use super::passthrough::openai_stream_error;
use super::{ClientStream, Outgoing};
use crate::translate::anthropic::OpenAiToAnthropicStream;
use crate::translate::chunks::{is_usage_only, sse_event, SSE_DONE};
use crate::workers::registry::{JobEvent, WorkerJob};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::convert::Infallible;

/// A worker's OpenAI chunks as Anthropic events. The stream owns the job: a client that
/// goes away drops it, which cancels the job on the worker.
pub(super) fn worker_chunks_as_anthropic(held: Vec<Box<RawValue>>, job: WorkerJob, model: &str) -> ClientStream {
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

/// A worker's chunks as SSE, as they arrive. The stream owns the job: a client that goes
/// away drops it, which cancels the job on the worker and frees its slot. Usage from a
/// `done` (CLI workers) becomes a last usage-only chunk, as OpenAI streams carry it.
pub(super) fn worker_chunks_as_openai(held: Vec<Box<RawValue>>, job: WorkerJob, route: &str) -> Outgoing {
    struct State {
        held: std::vec::IntoIter<Box<RawValue>>,
        job: WorkerJob,
        saw_usage: bool,
        /// `[DONE]` (or an error) went out: nothing more.
        ended: bool,
        pending_done: bool,
    }
    let route = route.to_string();
    let state = State {
        held: held.into_iter(),
        job,
        saw_usage: false,
        ended: false,
        pending_done: false,
    };
    let body = futures_util::stream::unfold(state, move |mut state| {
        let route = route.clone();
        async move {
            if state.ended {
                return None;
            }
            if state.pending_done {
                state.ended = true;
                return Some((Ok::<Bytes, Infallible>(Bytes::from_static(SSE_DONE)), state));
            }
            if let Some(chunk) = state.held.next() {
                state.saw_usage |= is_usage_only(&chunk);
                return Some((Ok(sse_event(chunk.get())), state));
            }
            let out = match state.job.next_event().await {
                JobEvent::Chunk(chunk) => {
                    state.saw_usage |= is_usage_only(&chunk);
                    sse_event(chunk.get())
                }
                JobEvent::Done(Some(usage)) if !state.saw_usage => {
                    state.pending_done = true;
                    let chunk = json!({"object": "chat.completion.chunk", "choices": [], "usage": usage});
                    sse_event(&chunk.to_string())
                }
                JobEvent::Done(_) => {
                    state.ended = true;
                    Bytes::from_static(SSE_DONE)
                }
                JobEvent::Failed { message, .. } => {
                    state.ended = true;
                    openai_stream_error(&route, &message)
                }
                JobEvent::Disconnected | JobEvent::Refused => {
                    state.ended = true;
                    openai_stream_error(&route, "the worker disconnected")
                }
            };
            Some((Ok(out), state))
        }
    });
    Outgoing::sse(body.boxed())
}

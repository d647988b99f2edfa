//! A worker's job, streamed to the client as its chunks arrive. The stream owns the job: a
//! client that goes away drops it, which cancels the job on the worker and frees its slot.

use super::passthrough::openai_stream_error;
use super::pump::{pump, Flow};
use super::{ClientStream, Outgoing};
use crate::translate::anthropic::OpenAiToAnthropicStream;
use crate::translate::chunks::{is_usage_only, sse_event, SSE_DONE};
use crate::workers::registry::{JobEvent, WorkerJob};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::VecDeque;

/// The chunks held while the walk waited for the first content, then the job's events as
/// they come. The stream owns the job: dropping it cancels the job on the worker.
fn job_events(held: Vec<Box<RawValue>>, job: WorkerJob) -> BoxStream<'static, JobEvent> {
    let live = futures_util::stream::unfold(job, |mut job| async move {
        let event = job.next_event().await;
        Some((event, job))
    });
    futures_util::stream::iter(held)
        .map(JobEvent::Chunk)
        .chain(live)
        .boxed()
}

/// The chunk a CLI worker's `done` usage becomes: OpenAI streams carry usage in a last
/// chunk without choices.
fn usage_chunk(usage: &impl serde::Serialize) -> String {
    json!({"object": "chat.completion.chunk", "choices": [], "usage": usage}).to_string()
}

/// A worker's OpenAI chunks as Anthropic events. The stream owns the job: a client that
/// goes away drops it, which cancels the job on the worker.
pub(super) fn worker_chunks_as_anthropic(held: Vec<Box<RawValue>>, job: WorkerJob, model: &str) -> ClientStream {
    let mut translator = OpenAiToAnthropicStream::new(model);
    pump(job_events(held, job), VecDeque::new(), move |event, out| {
        match event {
            Some(JobEvent::Chunk(chunk)) => {
                out.extend(translator.push_chunk(chunk.get()));
                return Flow::More;
            }
            Some(JobEvent::Done(usage)) => {
                if let Some(usage) = usage {
                    out.extend(translator.push_chunk(&usage_chunk(&usage)));
                }
                out.extend(translator.finish());
            }
            Some(JobEvent::Failed { message, .. }) => out.push_back(translator.error_event(&message)),
            Some(JobEvent::Disconnected | JobEvent::Refused) | None => {
                out.push_back(translator.error_event("the worker disconnected"))
            }
        }
        Flow::Ended
    })
    .map(Ok)
    .boxed()
}

/// A worker's chunks as SSE, as they arrive. The stream owns the job: a client that goes
/// away drops it, which cancels the job on the worker and frees its slot. Usage from a
/// `done` (CLI workers) becomes a last usage-only chunk, as OpenAI streams carry it.
pub(super) fn worker_chunks_as_openai(held: Vec<Box<RawValue>>, job: WorkerJob, route: &str) -> Outgoing {
    let route = route.to_string();
    let mut saw_usage = false;
    let body = pump(job_events(held, job), VecDeque::new(), move |event, out| {
        match event {
            Some(JobEvent::Chunk(chunk)) => {
                saw_usage |= is_usage_only(&chunk);
                out.push_back(sse_event(chunk.get()));
                return Flow::More;
            }
            Some(JobEvent::Done(usage)) => {
                if let Some(usage) = usage.filter(|_| !saw_usage) {
                    out.push_back(sse_event(&usage_chunk(&usage)));
                }
                out.push_back(Bytes::from_static(SSE_DONE));
            }
            Some(JobEvent::Failed { message, .. }) => out.push_back(openai_stream_error(&route, &message)),
            Some(JobEvent::Disconnected | JobEvent::Refused) | None => {
                out.push_back(openai_stream_error(&route, "the worker disconnected"))
            }
        }
        Flow::Ended
    });
    Outgoing::sse(body.map(Ok).boxed())
}

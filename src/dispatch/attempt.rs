//! One chat request through the dispatcher: resolve agent and alias, walk the plan
//! (`walk.rs`: failover, the wait queue, health) and, per target, send the request in its
//! dialect (`target_body.rs`) and wait for its first event. A failure before the client saw
//! content moves on to the next candidate; a client error (400, 422…) is the answer.

use super::body::rewrite_anthropic;
use super::dispatcher::Resolved;
pub use super::dispatcher::{Dispatcher, DispatcherParts, RouteOverrides, Routed};
pub use super::error::{DispatchError, TargetFailure, Why};
use super::plan::Tier;
use super::responses::{chat_form, ResponsesForms};
use super::stream::{
    hold_responses_until_content, hold_until_content, read_whole, too_large, worker_chunk_kind, ChunkKind, Clock,
};
use super::target_body::{anthropic_body, openai_body, with_reasoning_token_field};
use super::walk::Runner;
use crate::providers::anthropic::{self as anthropic_api, ClientHeaders};
use crate::providers::{openai, ChatOutcome, LiveProvider, ProviderError, UpstreamReply};
use crate::translate::chunks::Aggregator;
use crate::translate::Format;
use crate::workers::protocol::JobKind;
use crate::workers::registry::{JobEvent, SlotGuard, WorkerJob};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;

/// A chat request as the client sent it, with what routing needs already read out.
pub struct ChatRequest {
    /// In `format`'s dialect.
    pub body: Bytes,
    pub format: Format,
    /// `anthropic-version` / `anthropic-beta` from an Anthropic client.
    pub anthropic: ClientHeaders,
    pub model: String,
    /// The client wants SSE.
    pub stream: bool,
    /// An OpenAI client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// `X-Auxot-Provider`, `X-Auxot-Tier`, `X-Auxot-Wait-Ms`.
    pub overrides: RouteOverrides,
    /// A `/v1/responses` request (then `body` is its Chat translation, for the targets
    /// that take neither of these forms).
    pub responses: Option<ResponsesForms>,
}

/// How a chat request's target answered.
pub enum RoutedReply {
    /// A cloud provider's answer, forwarded as it comes; its body is in `format`'s dialect.
    Upstream { reply: UpstreamReply, format: Format },
    /// A worker's stream for an SSE client: the chunks up to its first content (held
    /// back until then) and the rest to come, under the idle and total clocks.
    WorkerStream { held: Vec<Box<RawValue>>, job: WorkerJob },
    /// A worker's chunks folded into one `chat.completion` for a non-streaming client.
    Complete(Bytes),
    /// An OpenAI provider's own Responses answer (`/responses`) to a Responses request,
    /// forwarded as it comes.
    Responses(UpstreamReply),
}

impl Dispatcher {
    pub async fn chat(&self, request: ChatRequest) -> Result<Routed, DispatchError> {
        let resolved = self.resolve_route(&request.model, &request.overrides)?;
        let table = self.providers.routing();
        let runner = LiveRunner {
            dispatcher: self,
            request: &request,
            resolved: &resolved,
        };
        let provider = request.overrides.provider.as_deref();
        self.walk_resolved(&resolved, provider, &table, JobKind::ChatCompletions, &runner)
            .await
    }

    /// Sends the request to a provider and reads its reply up to the first content (a
    /// stream) or whole (JSON), so an error in an opening or a broken body still fails over.
    async fn try_cloud(
        &self,
        provider: &Arc<LiveProvider>,
        model: &str,
        request: &ChatRequest,
        resolved: &Resolved,
    ) -> Result<RoutedReply, Why> {
        let key = provider.open_key(&self.master).map_err(|e| {
            tracing::error!(provider = %provider.name, error = %e, "cannot open a stored provider key");
            Why::KeyUnreadable
        })?;
        let clock = Clock::start(self.phases(Tier::Cloud));
        let (_, phase, limit) = clock.headers_deadline();
        if let Some(passed) = self
            .pass_responses(
                provider,
                key.as_ref(),
                model,
                request,
                resolved.system_prompt.as_deref(),
                clock,
            )
            .await?
        {
            return Ok(passed);
        }
        let (outcome, format) = if provider.kind.speaks_openai() {
            chat_form(request.responses.as_ref())?;
            let mut body = openai_body(request, resolved, model, false)?;
            if request.format == Format::Anthropic && provider.kind == crate::store::ProviderKind::Openai {
                body = with_reasoning_token_field(body, model);
            }
            let outcome = openai::chat(&self.http, &provider.base_url, key.as_ref(), body, limit).await;
            (outcome, Format::OpenAi)
        } else {
            let body = match request.responses.as_ref() {
                Some(forms) => {
                    let messages = forms.messages.as_ref().map_err(|e| Why::Untranslatable(e.clone()))?;
                    let changed = (model != request.model).then_some(model);
                    rewrite_anthropic(messages, changed, resolved.system_prompt.as_deref())
                        .map_err(|e| Why::Untranslatable(e.to_string()))?
                }
                None => anthropic_body(request, resolved, model)?,
            };
            let outcome = anthropic_api::chat(
                &self.http,
                &provider.base_url,
                key.as_ref(),
                body,
                &request.anthropic,
                limit,
            )
            .await;
            (outcome, Format::Anthropic)
        };
        let reply = held_reply(outcome, phase, limit, clock, Some(format)).await?;
        Ok(RoutedReply::Upstream { reply, format })
    }

    /// Sends the job and waits for its first content, holding content-free openings back:
    /// until then a failure can still move the request elsewhere. A non-streaming
    /// client's answer is folded whole here, so a worker failing half-way fails over too.
    async fn try_worker(
        &self,
        slot: SlotGuard,
        tier: Tier,
        model: &str,
        request: &ChatRequest,
        resolved: &Resolved,
    ) -> Result<RoutedReply, Why> {
        chat_form(request.responses.as_ref())?;
        let body = openai_body(request, resolved, model, true)?;
        let text = String::from_utf8(body.to_vec()).map_err(|e| Why::BadChunk(e.to_string()))?;
        let raw = RawValue::from_string(text).map_err(|e| Why::BadChunk(e.to_string()))?;
        let worker = slot.worker().clone();
        let clock = Clock::start(self.phases(tier));
        let mut job = worker
            .start_job(slot, JobKind::ChatCompletions, raw)
            .ok_or(Why::WorkerGone)?;
        let mut held = Vec::new();
        let mut deadline = clock.headers_deadline();
        if request.stream {
            loop {
                match next_event(&mut job, deadline).await? {
                    JobEvent::Chunk(chunk) => {
                        let kind = worker_chunk_kind(&chunk)?;
                        match kind {
                            ChunkKind::Opening => held.push(chunk),
                            ChunkKind::Content => {
                                held.push(chunk);
                                break;
                            }
                            ChunkKind::Error => return Err(Why::BadChunk(format!("error chunk: {}", chunk.get()))),
                        }
                    }
                    JobEvent::Done(usage) => {
                        job.push_back(JobEvent::Done(usage));
                        break;
                    }
                    other => return Err(event_failure(other)),
                }
                deadline = clock.first_content_deadline();
            }
            job.set_clock(clock.phases.idle, clock.started + clock.phases.total);
            return Ok(RoutedReply::WorkerStream { held, job });
        }
        // A whole job's first event is its whole answer: it comes by the first-content clock.
        deadline = clock.first_content_deadline();
        let mut folded = Aggregator::default();
        let mut content = false;
        let mut size = 0usize;
        loop {
            match next_event(&mut job, deadline).await? {
                JobEvent::Chunk(chunk) => {
                    size += chunk.get().len();
                    if size > MAX_ANSWER_BYTES {
                        return Err(too_large(MAX_ANSWER_BYTES));
                    }
                    content = content || worker_chunk_kind(&chunk)? == ChunkKind::Content;
                    folded.push(&chunk).map_err(|e| Why::BadChunk(e.to_string()))?
                }
                JobEvent::Done(usage) => {
                    let usage = usage.and_then(|u| serde_json::to_value(u).ok());
                    let completion = folded.finish(model, usage);
                    let bytes = serde_json::to_vec(&completion).map_err(|e| Why::BadChunk(e.to_string()))?;
                    return Ok(RoutedReply::Complete(Bytes::from(bytes)));
                }
                other => return Err(event_failure(other)),
            }
            // Silent after an opening is a stall before content: the same clock as a stream.
            deadline = if content {
                clock.idle_deadline()
            } else {
                clock.first_content_deadline()
            };
        }
    }
}

/// A provider's answer with a success status, or why it failed (`limit` was the clock on
/// `phase` when it timed out).
pub(super) fn answered(
    outcome: Result<ChatOutcome, ProviderError>,
    phase: &'static str,
    limit: Duration,
) -> Result<UpstreamReply, Why> {
    let reply = match outcome {
        Ok(ChatOutcome::Reply(reply)) => reply,
        Ok(ChatOutcome::Failed(failure)) => return Err(Why::Status(failure)),
        Err(ProviderError::Timeout(_)) => return Err(Why::Timeout { phase, limit }),
        Err(e) => return Err(Why::Provider(e)),
    };
    if !(200..300).contains(&reply.status) {
        return Err(Why::BadChunk(format!("answered with status {}", reply.status)));
    }
    Ok(reply)
}

/// A provider's reply read up to its first content (a stream: in `format`'s dialect, `None`
/// for Responses events) or whole (JSON), so an error in an opening or a broken body still
/// fails over.
pub(super) async fn held_reply(
    outcome: Result<ChatOutcome, ProviderError>,
    phase: &'static str,
    limit: Duration,
    clock: Clock,
    format: Option<Format>,
) -> Result<UpstreamReply, Why> {
    let mut reply = answered(outcome, phase, limit)?;
    let is_sse = reply
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/event-stream"));
    reply.body = match (is_sse, format) {
        (true, Some(format)) => hold_until_content(reply.body, format, clock).await?,
        (true, None) => hold_responses_until_content(reply.body, clock).await?,
        (false, _) => {
            let whole = read_whole(reply.body, clock, MAX_ANSWER_BYTES).await?;
            futures_util::stream::once(async move { Ok(whole) }).boxed()
        }
    };
    Ok(reply)
}

/// A reply body bigger than this is refused rather than held in memory.
pub(super) const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

pub(super) async fn next_event(
    job: &mut WorkerJob,
    (deadline, phase, limit): (tokio::time::Instant, &'static str, Duration),
) -> Result<JobEvent, Why> {
    tokio::time::timeout_at(deadline, job.next_event())
        .await
        .map_err(|_| Why::Timeout { phase, limit })
}

/// The live targets behind the failover loop.
struct LiveRunner<'a> {
    dispatcher: &'a Dispatcher,
    request: &'a ChatRequest,
    resolved: &'a Resolved,
}

impl Runner for LiveRunner<'_> {
    type Reply = RoutedReply;

    async fn run_worker(&self, slot: SlotGuard, tier: Tier, model: &str) -> Result<RoutedReply, Why> {
        self.dispatcher
            .try_worker(slot, tier, model, self.request, self.resolved)
            .await
    }

    async fn run_cloud(&self, provider: &Arc<LiveProvider>, model: &str) -> Result<RoutedReply, Why> {
        self.dispatcher
            .try_cloud(provider, model, self.request, self.resolved)
            .await
    }
}

pub(super) fn event_failure(event: JobEvent) -> Why {
    match event {
        JobEvent::Failed {
            message,
            status,
            retry_after,
            limited_until,
        } => match limited_until {
            Some(until) => Why::Limited { message, until },
            None => Why::Worker {
                message,
                status,
                retry_after,
            },
        },
        JobEvent::Disconnected => Why::WorkerGone,
        JobEvent::Refused => Why::Refused,
        JobEvent::Chunk(_) | JobEvent::Done(_) => Why::BadChunk("unexpected event".into()),
    }
}

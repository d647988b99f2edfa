//! One chat request through the dispatcher: resolve agent and alias, walk the plan
//! (`walk.rs`: failover, the wait queue, health) and, per target, send the request in its
//! dialect and wait for its first event. A failure before the client saw content moves on
//! to the next candidate; a client error (400, 422…) is the answer.

use super::body::{rewrite, rewrite_anthropic, Rewrite};
pub use super::error::{DispatchError, TargetFailure, Why};
use super::health::{provider_key, worker_key, Health, HealthView};
use super::plan::{plan, PlanInput, Target, Tier, WorkerSnapshot};
use super::queue::SlotQueue;
use super::responses::{chat_form, ChatOnlyProviders, ResponsesForms};
use super::rules::RoutingRules;
use super::stream::{
    hold_responses_until_content, hold_until_content, read_whole, worker_chunk_kind, ChunkKind, Clock, Phases,
};
use super::walk::{walk, Runner, Walk};
use crate::agents::{AgentBook, MODEL_PREFIX};
use crate::crypto::MasterKey;
use crate::providers::anthropic::{self as anthropic_api, ClientHeaders};
use crate::providers::{openai, ChatOutcome, LiveProvider, ProviderError, ProviderRegistry, UpstreamReply};
use crate::translate::anthropic::{anthropic_to_openai_request, openai_to_anthropic_request};
use crate::translate::chunks::Aggregator;
use crate::translate::Format;
use crate::workers::protocol::JobKind;
use crate::workers::registry::{JobEvent, SlotGuard, WorkerJob, WorkerRegistry};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// An OpenAI client gave no `max_tokens`, and Anthropic needs one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

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
    /// `X-Auxot-Provider`.
    pub provider: Option<String>,
    /// `X-Auxot-Tier`.
    pub tiers: Option<Vec<Tier>>,
    /// `X-Auxot-Wait-Ms`.
    pub wait: Option<Duration>,
    /// A `/v1/responses` request (then `body` is its Chat translation, for the targets
    /// that take neither of these forms).
    pub responses: Option<ResponsesForms>,
}

/// Where a request went and its reply, the body not yet (fully) read.
pub struct Routed {
    pub tier: Tier,
    pub route: String,
    /// The model the target ran.
    pub model: String,
    /// The alias's cloud model, for pricing what a GPU/CLI answer would have cost.
    pub cloud_model: Option<String>,
    /// Went to the cloud although a worker tier came first in its order.
    pub overflow: bool,
    /// Time spent waiting in the queue for a worker slot.
    pub queue_wait: Duration,
    /// The candidates that failed before this one answered, in order.
    pub failures: Vec<TargetFailure>,
    pub reply: RoutedReply,
}

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

/// The request with what the agent, alias and settings decided, for one dispatch.
pub(super) struct Resolved {
    pub(super) model: String,
    pub(super) order: Vec<Tier>,
    pub(super) wait: Duration,
    /// Shared with the agent: never copied per request.
    system_prompt: Option<Arc<str>>,
}

pub struct Dispatcher {
    pub(super) providers: Arc<ProviderRegistry>,
    pub(super) workers: Arc<WorkerRegistry>,
    pub(super) rules: Arc<RoutingRules>,
    agents: Arc<AgentBook>,
    pub(super) master: Arc<MasterKey>,
    pub(super) http: reqwest::Client,
    pub(super) upstream_timeout: Duration,
    pub(super) turn: AtomicUsize,
    pub(super) queue: Arc<SlotQueue>,
    pub(super) health: Arc<Health>,
    pub(super) chat_only: ChatOnlyProviders,
}

pub struct DispatcherParts {
    pub providers: Arc<ProviderRegistry>,
    pub workers: Arc<WorkerRegistry>,
    pub rules: Arc<RoutingRules>,
    pub agents: Arc<AgentBook>,
    pub master: Arc<MasterKey>,
    pub http: reqwest::Client,
    pub upstream_timeout: Duration,
}

impl Dispatcher {
    pub fn new(parts: DispatcherParts) -> Self {
        let queue = Arc::new(SlotQueue::new());
        parts.workers.set_exchange(queue.clone());
        Dispatcher {
            providers: parts.providers,
            workers: parts.workers,
            rules: parts.rules,
            agents: parts.agents,
            master: parts.master,
            http: parts.http,
            upstream_timeout: parts.upstream_timeout,
            turn: AtomicUsize::new(0),
            queue,
            health: Arc::new(Health::default()),
            chat_only: ChatOnlyProviders::default(),
        }
    }

    /// A provider's health (cooldown, limit) for `GET /api/providers`.
    pub fn provider_health(&self, provider_id: &str) -> HealthView {
        self.health.view(&provider_key(provider_id), SystemTime::now())
    }

    /// A worker's health (cooldown, usage limit) for `GET /api/workers`.
    pub fn worker_health(&self, token_id: &str) -> HealthView {
        self.health.view(&worker_key(token_id), SystemTime::now())
    }

    /// Targets cooling down or limited right now, for the metrics.
    pub fn cooling_targets(&self) -> usize {
        self.health.cooling_count(SystemTime::now())
    }

    /// Every name a client can send as `model` right now: models served by live workers or
    /// enabled providers, aliases, agents, and `provider/model` pins. `(id, owner)` pairs.
    pub fn routable_models(&self) -> Vec<(String, String)> {
        let mut plain: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
        for worker in self.workers.live() {
            for model in worker.models().iter() {
                plain.entry(model.clone()).or_insert_with(|| worker.name.clone());
            }
        }
        let table = self.providers.routing();
        let cloud = table.models();
        for (model, providers) in &cloud {
            if let Some(first) = providers.first() {
                plain.entry(model.to_string()).or_insert_with(|| first.name.clone());
            }
        }
        let mut out: Vec<(String, String)> = plain.into_iter().collect();
        out.extend(self.rules.aliases().into_iter().map(|a| (a.name, "auxot".to_string())));
        for (name, _alias) in self.rules.client_model_names() {
            if !out.iter().any(|(id, _)| *id == name) {
                out.push((name, "auxot".to_string()));
            }
        }
        out.extend(
            self.agents
                .list()
                .into_iter()
                .map(|a| (format!("{MODEL_PREFIX}{}", a.name), "auxot".to_string())),
        );
        for (model, providers) in cloud {
            for provider in providers {
                out.push((format!("{}/{model}", provider.name), provider.name.clone()));
            }
        }
        out
    }

    /// Asks the Anthropic provider a request would go to first for its exact token count.
    /// `None` when the first target is anything else (the caller estimates then).
    pub async fn count_tokens_upstream(&self, request: &ChatRequest) -> Option<Result<ChatOutcome, ProviderError>> {
        let resolved = self.resolve(request).ok()?;
        let table = self.providers.routing();
        let snapshot: Vec<WorkerSnapshot> = self.workers.live().iter().map(|w| WorkerSnapshot::of(w)).collect();
        let alias = self.rules.alias(&resolved.model);
        let input = PlanInput {
            model: &resolved.model,
            provider: request.provider.as_deref(),
            order: &resolved.order,
            alias: alias.as_ref(),
            table: &table,
            workers: &snapshot,
            turn: self.turn.load(Ordering::Relaxed),
            job: JobKind::ChatCompletions,
        };
        let first = plan(&input).ok()?.targets.into_iter().next()?;
        let Target::Cloud { provider, model } = first else {
            return None;
        };
        if provider.kind != crate::store::ProviderKind::Anthropic {
            return None;
        }
        let key = match provider.open_key(&self.master) {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(provider = %provider.name, error = %e, "cannot open a stored provider key");
                return None;
            }
        };
        let model = (model != request.model).then_some(model.as_str());
        let body = rewrite_anthropic(&request.body, model, None).ok()?;
        Some(
            anthropic_api::count_tokens(
                &self.http,
                &provider.base_url,
                key.as_ref(),
                body,
                &request.anthropic,
                self.upstream_timeout,
            )
            .await,
        )
    }

    /// Requests waiting for a free slot right now.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    pub async fn chat(&self, request: ChatRequest) -> Result<Routed, DispatchError> {
        let resolved = self.resolve(&request)?;
        let table = self.providers.routing();
        let alias = self.rules.alias(&resolved.model);
        let runner = LiveRunner {
            dispatcher: self,
            request: &request,
            resolved: &resolved,
        };
        let walked = walk(
            Walk {
                queue: &self.queue,
                workers: &self.workers,
                table: &table,
                health: &self.health,
                model: &resolved.model,
                provider: request.provider.as_deref(),
                order: &resolved.order,
                alias: alias.as_ref(),
                turn: self.turn.fetch_add(1, Ordering::Relaxed),
                wait: resolved.wait,
                job: JobKind::ChatCompletions,
            },
            &runner,
        )
        .await?;
        let overflow = walked.tier == Tier::Cloud && resolved.order.first().is_some_and(|t| *t != Tier::Cloud);
        Ok(Routed {
            tier: walked.tier,
            route: walked.route,
            model: walked.model,
            cloud_model: alias.as_ref().and_then(|a| a.cloud.clone()),
            overflow,
            queue_wait: walked.queue_wait,
            failures: walked.failures,
            reply: walked.reply,
        })
    }

    fn resolve(&self, request: &ChatRequest) -> Result<Resolved, DispatchError> {
        self.resolve_route(&request.model, request.tiers.as_ref(), request.wait)
    }

    /// Request beats agent beats default.
    pub(super) fn resolve_route(
        &self,
        model: &str,
        tiers: Option<&Vec<Tier>>,
        wait: Option<Duration>,
    ) -> Result<Resolved, DispatchError> {
        let agent = match model.strip_prefix(MODEL_PREFIX) {
            Some(name) => Some(
                self.agents
                    .resolve(name)
                    .ok_or_else(|| DispatchError::UnknownAgent(name.to_string()))?,
            ),
            None => None,
        };
        let model = agent.as_ref().map_or_else(|| model.to_string(), |a| a.model.clone());
        let order = tiers
            .cloned()
            .or_else(|| agent.as_ref().and_then(|a| a.tier_order.clone()))
            .unwrap_or_else(|| self.rules.default_order());
        let wait = wait
            .or_else(|| {
                agent
                    .as_ref()
                    .and_then(|a| a.queue_timeout_ms)
                    .map(Duration::from_millis)
            })
            .unwrap_or_else(|| self.rules.queue_timeout());
        Ok(Resolved {
            model,
            order,
            wait,
            system_prompt: agent.and_then(|a| a.system_prompt.clone()),
        })
    }

    /// The clocks for an attempt on `tier`: the admin's settings, the response-headers
    /// phase capped by `--upstream-timeout-secs`.
    pub(super) fn phases(&self, tier: Tier) -> Phases {
        let mut phases = self.rules.phases(tier);
        phases.headers = phases.headers.min(self.upstream_timeout);
        phases
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
        loop {
            match next_event(&mut job, deadline).await? {
                JobEvent::Chunk(chunk) => {
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
    let mut reply = match outcome {
        Ok(ChatOutcome::Reply(reply)) => reply,
        Ok(ChatOutcome::Failed(failure)) => return Err(Why::Status(failure)),
        Err(ProviderError::Timeout(_)) => return Err(Why::Timeout { phase, limit }),
        Err(e) => return Err(Why::Provider(e)),
    };
    if !(200..300).contains(&reply.status) {
        return Err(Why::BadChunk(format!("answered with status {}", reply.status)));
    }
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

/// The request as an OpenAI body for `model`: as sent (rewritten only where needed) from an
/// OpenAI client, translated from an Anthropic one. `for_worker`: a worker gets the
/// client's `stream` choice, so a GPU worker asks its model server for a whole answer (with
/// exact usage) when the client wants one.
fn openai_body(request: &ChatRequest, resolved: &Resolved, model: &str, for_worker: bool) -> Result<Bytes, Why> {
    let system_prompt = resolved.system_prompt.as_deref();
    match request.format {
        Format::OpenAi => {
            let spec = Rewrite {
                model: (for_worker || model != request.model).then_some(model),
                force_stream: for_worker && request.stream,
                system_prompt,
                // Streams are priced from the upstream's usage: always ask for it (the
                // usage-only chunk is dropped for clients that did not).
                ask_usage: !for_worker && request.stream && !request.include_usage,
            };
            if spec.is_noop() {
                return Ok(request.body.clone());
            }
            rewrite(&request.body, spec).map_err(|e| Why::Untranslatable(e.to_string()))
        }
        Format::Anthropic => {
            let mut body =
                anthropic_to_openai_request(&request.body).map_err(|e| Why::Untranslatable(e.to_string()))?;
            body["model"] = serde_json::json!(model);
            if for_worker {
                body["stream"] = serde_json::json!(request.stream);
                crate::translate::late_system::fold_late_system_messages(&mut body);
            }
            if body["stream"] == serde_json::json!(true) && !for_worker {
                // The Anthropic stream reports output tokens at its end: ask for them.
                body["stream_options"] = serde_json::json!({"include_usage": true});
            }
            if let (Some(prompt), Some(messages)) = (system_prompt, body["messages"].as_array_mut()) {
                messages.insert(0, serde_json::json!({"role": "system", "content": prompt}));
            }
            serde_json::to_vec(&body)
                .map(Bytes::from)
                .map_err(|e| Why::Untranslatable(e.to_string()))
        }
    }
}

/// OpenAI's reasoning models refuse `max_tokens` and want `max_completion_tokens`. A
/// translated request always says `max_tokens` (what OpenAI-compatible servers accept), so
/// it is renamed for those models on OpenAI itself.
fn with_reasoning_token_field(body: Bytes, model: &str) -> Bytes {
    let reasoning = ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|prefix| model == *prefix || model.starts_with(&format!("{prefix}-")));
    if !reasoning {
        return body;
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    let Some(object) = value.as_object_mut() else {
        return body;
    };
    if let Some(max) = object.remove("max_tokens") {
        object.insert("max_completion_tokens".into(), max);
    }
    serde_json::to_vec(&value).map(Bytes::from).unwrap_or(body)
}

/// The request as an Anthropic Messages body for `model`.
fn anthropic_body(request: &ChatRequest, resolved: &Resolved, model: &str) -> Result<Bytes, Why> {
    let system_prompt = resolved.system_prompt.as_deref();
    match request.format {
        Format::Anthropic => {
            let model = (model != request.model).then_some(model);
            rewrite_anthropic(&request.body, model, system_prompt).map_err(|e| Why::Untranslatable(e.to_string()))
        }
        Format::OpenAi => {
            let with_prompt = match system_prompt {
                Some(_) => rewrite(
                    &request.body,
                    Rewrite {
                        system_prompt,
                        ..Rewrite::default()
                    },
                )
                .map_err(|e| Why::Untranslatable(e.to_string()))?,
                None => request.body.clone(),
            };
            let mut body = openai_to_anthropic_request(&with_prompt, DEFAULT_MAX_TOKENS)
                .map_err(|e| Why::Untranslatable(e.to_string()))?;
            body["model"] = serde_json::json!(model);
            serde_json::to_vec(&body)
                .map(Bytes::from)
                .map_err(|e| Why::Untranslatable(e.to_string()))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_models_get_max_completion_tokens() {
        let body = Bytes::from_static(br#"{"model":"o3-mini","max_tokens":100,"messages":[]}"#);
        let out: serde_json::Value = serde_json::from_slice(&with_reasoning_token_field(body, "o3-mini")).unwrap();
        assert_eq!(out["max_completion_tokens"], 100);
        assert!(out.get("max_tokens").is_none());
        for model in ["gpt-4o", "o3x", "gpt-5x"] {
            let body = Bytes::from_static(br#"{"max_tokens":100}"#);
            assert_eq!(with_reasoning_token_field(body.clone(), model), body, "{model}");
        }
        let out: serde_json::Value = serde_json::from_slice(&with_reasoning_token_field(
            Bytes::from_static(br#"{"max_tokens":5}"#),
            "gpt-5",
        ))
        .unwrap();
        assert_eq!(out["max_completion_tokens"], 5);
    }
}

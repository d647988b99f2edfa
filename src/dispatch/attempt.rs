//! Walks a plan: one candidate after another until one answers. A failure before the first
//! byte (unreachable, timeout, 5xx, 429, a provider refusing its key, a worker erroring or
//! disconnecting) moves on to the next candidate, each at most once; a client error (400,
//! 422…) is the answer. When every eligible target is full the request waits in a FIFO
//! queue for the first free slot, up to its queue timeout.

use super::body::{rewrite, rewrite_anthropic, Rewrite};
use super::plan::{plan, PlanError, PlanInput, Target, Tier, WorkerSnapshot};
use super::rules::RoutingRules;
use crate::agents::{AgentBook, MODEL_PREFIX};
use crate::crypto::MasterKey;
use crate::providers::anthropic::{self as anthropic_api, ClientHeaders};
use crate::providers::{
    openai, ChatOutcome, LiveProvider, ProviderError, ProviderRegistry, UpstreamFailure, UpstreamReply,
};
use crate::translate::anthropic::{anthropic_to_openai_request, openai_to_anthropic_request};
use crate::translate::chunks::Aggregator;
use crate::translate::Format;
use crate::workers::registry::{JobEvent, LiveWorker, SlotGuard, WorkerJob, WorkerRegistry};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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
    pub reply: RoutedReply,
}

pub enum RoutedReply {
    /// A cloud provider's answer, forwarded as it comes; its body is in `format`'s dialect.
    Upstream { reply: UpstreamReply, format: Format },
    /// A worker's stream for an SSE client: the first chunk (if any) and the rest to come.
    WorkerStream {
        first: Option<Box<RawValue>>,
        job: WorkerJob,
    },
    /// A worker's chunks folded into one `chat.completion` for a non-streaming client.
    Complete(Bytes),
}

#[derive(Debug)]
pub enum Why {
    Provider(ProviderError),
    Status(UpstreamFailure),
    /// The request cannot be put in this target's dialect (the reason names the field).
    Untranslatable(String),
    KeyUnreadable,
    Worker {
        message: String,
        status: Option<u16>,
    },
    WorkerGone,
    FirstByteTimeout(Duration),
    BadChunk(String),
}

#[derive(Debug)]
pub struct TargetFailure {
    pub tier: Tier,
    pub route: String,
    pub why: Why,
}

impl std::fmt::Display for TargetFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): ", self.route, self.tier.as_str())?;
        match &self.why {
            Why::Provider(e) => write!(f, "{e}"),
            Why::Status(s) => write!(f, "answered {}: {}", s.status, s.message()),
            Why::Untranslatable(why) => write!(f, "the request cannot be translated for it: {why}"),
            Why::KeyUnreadable => f.write_str("its stored key cannot be opened"),
            Why::Worker {
                message,
                status: Some(s),
            } => write!(f, "worker error {s}: {message}"),
            Why::Worker { message, status: None } => write!(f, "worker error: {message}"),
            Why::WorkerGone => f.write_str("the worker disconnected"),
            Why::FirstByteTimeout(t) => write!(f, "no first token within {t:?}"),
            Why::BadChunk(e) => write!(f, "sent a chunk that is not a chat chunk: {e}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("no agent is named '{0}'")]
    UnknownAgent(String),
    /// The target's own answer: a client error, or the last retryable one when every
    /// candidate failed. Status and body are passed on (the body already scrubbed).
    #[error("{route} answered {}", failure.status)]
    Upstream {
        tier: Tier,
        route: String,
        failure: Box<UpstreamFailure>,
        tried: Vec<TargetFailure>,
    },
    #[error("{}", describe_all(.0))]
    AllFailed(Vec<TargetFailure>),
    #[error("no capacity for this request after waiting {}ms: {}", waited.as_millis(), notes.join("; "))]
    QueueTimeout { waited: Duration, notes: Vec<String> },
    #[error("the request body is not a JSON object with a messages array")]
    BodyNotObject,
}

fn describe_all(failures: &[TargetFailure]) -> String {
    let parts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    format!("every candidate failed: {}", parts.join("; "))
}

impl DispatchError {
    /// The last target the request reached before failing, for its usage row.
    pub fn last_target(&self) -> Option<(Tier, &str)> {
        match self {
            DispatchError::Upstream { tier, route, .. } => Some((*tier, route.as_str())),
            DispatchError::AllFailed(failures) => failures.last().map(|f| (f.tier, f.route.as_str())),
            _ => None,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            DispatchError::Plan(PlanError::ConflictingPins { .. } | PlanError::PinWithoutCloud(_))
            | DispatchError::BodyNotObject => 400,
            DispatchError::Plan(_) | DispatchError::UnknownAgent(_) => 404,
            DispatchError::Upstream { failure, .. } => failure.status,
            DispatchError::QueueTimeout { .. } => 503,
            DispatchError::AllFailed(failures) => {
                if failures.iter().all(|f| matches!(f.why, Why::Untranslatable(_))) {
                    400
                } else if failures.iter().all(|f| {
                    matches!(
                        f.why,
                        Why::Provider(ProviderError::Timeout(_)) | Why::FirstByteTimeout(_)
                    )
                }) {
                    504
                } else {
                    502
                }
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            DispatchError::Plan(PlanError::NoRoute { .. } | PlanError::NotServedBy { .. }) => "model_not_found",
            DispatchError::Plan(PlanError::UnknownProvider(_)) => "provider_not_found",
            DispatchError::UnknownAgent(_) => "agent_not_found",
            DispatchError::Plan(_) | DispatchError::BodyNotObject => "invalid_request",
            DispatchError::Upstream { .. } => "upstream_error",
            DispatchError::QueueTimeout { .. } => "no_capacity",
            DispatchError::AllFailed(_) => match self.status() {
                400 => "untranslatable_request",
                504 => "upstream_timeout",
                _ => "upstream_unavailable",
            },
        }
    }
}

/// Worth trying the next candidate: the failure is this target's, not the request's.
fn worth_failing_over(status: u16) -> bool {
    status >= 500 || matches!(status, 401 | 403 | 404 | 408 | 429)
}

/// The request with what the agent, alias and settings decided, for one dispatch.
struct Resolved {
    model: String,
    order: Vec<Tier>,
    wait: Duration,
    system_prompt: Option<String>,
}

enum Pass {
    Done(Box<Result<Routed, DispatchError>>),
    /// Nothing eligible had room; these notes say why, tier by tier.
    Wait(Vec<String>),
}

pub struct Dispatcher {
    providers: Arc<ProviderRegistry>,
    workers: Arc<WorkerRegistry>,
    rules: Arc<RoutingRules>,
    agents: Arc<AgentBook>,
    master: Arc<MasterKey>,
    http: reqwest::Client,
    upstream_timeout: Duration,
    turn: AtomicUsize,
    /// Queued requests take turns in arrival order (tokio's mutex is fair FIFO).
    queue: tokio::sync::Mutex<()>,
    queued: AtomicUsize,
}

/// Counts a request as queued for as long as it waits.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
        Dispatcher {
            providers: parts.providers,
            workers: parts.workers,
            rules: parts.rules,
            agents: parts.agents,
            master: parts.master,
            http: parts.http,
            upstream_timeout: parts.upstream_timeout,
            turn: AtomicUsize::new(0),
            queue: tokio::sync::Mutex::new(()),
            queued: AtomicUsize::new(0),
        }
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
        let snapshot: Vec<WorkerSnapshot> = self
            .workers
            .live()
            .iter()
            .map(|w| WorkerSnapshot {
                id: w.id.clone(),
                kind: w.kind,
                name: w.name.clone(),
                models: w.models(),
                slots: w.slots,
                in_use: w.in_use(),
            })
            .collect();
        let alias = self.rules.alias(&resolved.model);
        let input = PlanInput {
            model: &resolved.model,
            provider: request.provider.as_deref(),
            order: &resolved.order,
            alias: alias.as_ref(),
            table: &table,
            workers: &snapshot,
            turn: self.turn.load(Ordering::Relaxed),
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
        self.queued.load(Ordering::Acquire)
    }

    pub async fn chat(&self, request: ChatRequest) -> Result<Routed, DispatchError> {
        let resolved = self.resolve(&request)?;
        let started = Instant::now();
        let deadline = started + resolved.wait;
        // Fast path: with nobody queued, a request that finds room goes at once.
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Pass::Done(result) = self.pass(&request, &resolved).await {
                return *result;
            }
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let _queued = Queued(&self.queued);
        let mut notes;
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.queue.lock()).await else {
            return Err(DispatchError::QueueTimeout {
                waited: started.elapsed(),
                notes: vec!["earlier requests are still waiting for the same capacity".into()],
            });
        };
        loop {
            // Listen before looking, so a slot freed in between is not missed.
            let freed = self.workers.capacity().notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.pass(&request, &resolved).await {
                Pass::Done(result) => return *result,
                Pass::Wait(why) => notes = why,
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        Err(DispatchError::QueueTimeout {
            waited: started.elapsed(),
            notes,
        })
    }

    /// Request beats agent beats default.
    fn resolve(&self, request: &ChatRequest) -> Result<Resolved, DispatchError> {
        let agent = match request.model.strip_prefix(MODEL_PREFIX) {
            Some(name) => Some(
                self.agents
                    .resolve(name)
                    .ok_or_else(|| DispatchError::UnknownAgent(name.to_string()))?,
            ),
            None => None,
        };
        let model = agent
            .as_ref()
            .map_or_else(|| request.model.clone(), |a| a.model.clone());
        let order = request
            .tiers
            .clone()
            .or_else(|| agent.as_ref().and_then(|a| a.tier_order.clone()))
            .unwrap_or_else(|| self.rules.default_order());
        let wait = request
            .wait
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
            system_prompt: agent.and_then(|a| a.system_prompt),
        })
    }

    /// One look at the live state and one walk of the resulting plan.
    async fn pass(&self, request: &ChatRequest, resolved: &Resolved) -> Pass {
        let table = self.providers.routing();
        let live = self.workers.live();
        let snapshot: Vec<WorkerSnapshot> = live
            .iter()
            .map(|w| WorkerSnapshot {
                id: w.id.clone(),
                kind: w.kind,
                name: w.name.clone(),
                models: w.models(),
                slots: w.slots,
                in_use: w.in_use(),
            })
            .collect();
        let alias = self.rules.alias(&resolved.model);
        let input = PlanInput {
            model: &resolved.model,
            provider: request.provider.as_deref(),
            order: &resolved.order,
            alias: alias.as_ref(),
            table: &table,
            workers: &snapshot,
            turn: self.turn.fetch_add(1, Ordering::Relaxed),
        };
        let plan = match plan(&input) {
            Ok(plan) => plan,
            Err(e) => return Pass::Done(Box::new(Err(e.into()))),
        };
        let mut failures = Vec::new();
        let mut lost_races = false;
        for target in &plan.targets {
            let tier = target.tier();
            let attempt = match target {
                Target::Worker { index, model, .. } => {
                    let worker = &live[*index];
                    let Some(slot) = worker.try_reserve() else {
                        // Taken since the snapshot: another request got there first.
                        lost_races = true;
                        continue;
                    };
                    self.try_worker(worker, slot, tier, model, request, resolved)
                        .await
                        .map_err(|why| (worker.name.clone(), why))
                }
                Target::Cloud { provider, model } => self
                    .try_cloud(provider, model, request, resolved)
                    .await
                    .map_err(|why| (provider.name.clone(), why)),
            };
            match attempt {
                Ok(mut routed) => {
                    routed.cloud_model = alias.as_ref().and_then(|a| a.cloud.clone());
                    routed.overflow = tier == Tier::Cloud
                        && resolved
                            .order
                            .iter()
                            .take_while(|t| **t != Tier::Cloud)
                            .next()
                            .is_some();
                    if !failures.is_empty() {
                        tracing::info!(route = %routed.route, failed_over = failures.len(), "served after failover");
                    }
                    return Pass::Done(Box::new(Ok(routed)));
                }
                Err((route, why)) => {
                    let failure = TargetFailure { tier, route, why };
                    tracing::warn!(failure = %failure, "candidate failed");
                    if let Some(final_answer) = client_error(&failure) {
                        return Pass::Done(Box::new(Err(DispatchError::Upstream {
                            tier: failure.tier,
                            route: failure.route.clone(),
                            failure: Box::new(final_answer),
                            tried: failures,
                        })));
                    }
                    failures.push(failure);
                }
            }
        }
        if failures.is_empty() && (plan.can_wait || lost_races) {
            return Pass::Wait(plan.notes);
        }
        Pass::Done(Box::new(Err(all_failed(failures))))
    }

    async fn try_cloud(
        &self,
        provider: &Arc<LiveProvider>,
        model: &str,
        request: &ChatRequest,
        resolved: &Resolved,
    ) -> Result<Routed, Why> {
        let key = provider.open_key(&self.master).map_err(|e| {
            tracing::error!(provider = %provider.name, error = %e, "cannot open a stored provider key");
            Why::KeyUnreadable
        })?;
        let (outcome, format) = if provider.kind.speaks_openai() {
            let mut body = openai_body(request, resolved, model, false)?;
            if request.format == Format::Anthropic && provider.kind == crate::store::ProviderKind::Openai {
                body = with_reasoning_token_field(body, model);
            }
            let outcome = openai::chat(
                &self.http,
                &provider.base_url,
                key.as_ref(),
                body,
                self.upstream_timeout,
            )
            .await;
            (outcome, Format::OpenAi)
        } else {
            let body = anthropic_body(request, resolved, model)?;
            let outcome = anthropic_api::chat(
                &self.http,
                &provider.base_url,
                key.as_ref(),
                body,
                &request.anthropic,
                self.upstream_timeout,
            )
            .await;
            (outcome, Format::Anthropic)
        };
        match outcome.map_err(Why::Provider)? {
            ChatOutcome::Reply(reply) => Ok(Routed {
                tier: Tier::Cloud,
                route: provider.name.clone(),
                model: model.to_string(),
                cloud_model: None,
                overflow: false,
                reply: RoutedReply::Upstream { reply, format },
            }),
            ChatOutcome::Failed(failure) => Err(Why::Status(failure)),
        }
    }

    /// Sends the job and waits for its first event: until then a failure can still move
    /// the request elsewhere. A non-streaming client's answer is folded whole here, so a
    /// worker failing half-way can still fail over too.
    async fn try_worker(
        &self,
        worker: &Arc<LiveWorker>,
        slot: SlotGuard,
        tier: Tier,
        model: &str,
        request: &ChatRequest,
        resolved: &Resolved,
    ) -> Result<Routed, Why> {
        let body = openai_body(request, resolved, model, true)?;
        let text = String::from_utf8(body.to_vec()).map_err(|e| Why::BadChunk(e.to_string()))?;
        let raw = RawValue::from_string(text).map_err(|e| Why::BadChunk(e.to_string()))?;
        let mut job = worker.start_job(slot, raw).ok_or(Why::WorkerGone)?;
        let routed = |reply| Routed {
            tier,
            route: worker.name.clone(),
            model: model.to_string(),
            cloud_model: None,
            overflow: false,
            reply,
        };
        let first = self.next_event(&mut job).await?;
        if request.stream {
            return match first {
                JobEvent::Chunk(chunk) => Ok(routed(RoutedReply::WorkerStream {
                    first: Some(chunk),
                    job,
                })),
                JobEvent::Done(_) => Ok(routed(RoutedReply::WorkerStream { first: None, job })),
                other => Err(event_failure(other)),
            };
        }
        let mut folded = Aggregator::default();
        let mut event = first;
        loop {
            match event {
                JobEvent::Chunk(chunk) => folded.push(&chunk).map_err(|e| Why::BadChunk(e.to_string()))?,
                JobEvent::Done(usage) => {
                    let usage = usage.and_then(|u| serde_json::to_value(u).ok());
                    let completion = folded.finish(model, usage);
                    let bytes = serde_json::to_vec(&completion).map_err(|e| Why::BadChunk(e.to_string()))?;
                    return Ok(routed(RoutedReply::Complete(Bytes::from(bytes))));
                }
                other => return Err(event_failure(other)),
            }
            event = self.next_event(&mut job).await?;
        }
    }

    async fn next_event(&self, job: &mut WorkerJob) -> Result<JobEvent, Why> {
        tokio::time::timeout(self.upstream_timeout, job.next_event())
            .await
            .map_err(|_| Why::FirstByteTimeout(self.upstream_timeout))
    }
}

/// The request as an OpenAI body for `model`: as sent (rewritten only where needed) from an
/// OpenAI client, translated from an Anthropic one. `for_worker`: workers always stream.
fn openai_body(request: &ChatRequest, resolved: &Resolved, model: &str, for_worker: bool) -> Result<Bytes, Why> {
    let system_prompt = resolved.system_prompt.as_deref();
    match request.format {
        Format::OpenAi => {
            let spec = Rewrite {
                model: (for_worker || model != request.model).then_some(model),
                force_stream: for_worker,
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
                body["stream"] = serde_json::json!(true);
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

fn event_failure(event: JobEvent) -> Why {
    match event {
        JobEvent::Failed { message, status } => Why::Worker { message, status },
        JobEvent::Disconnected => Why::WorkerGone,
        JobEvent::Chunk(_) | JobEvent::Done(_) => Why::BadChunk("unexpected event".into()),
    }
}

/// A failure that is the request's fault, answered as is rather than failed over.
fn client_error(failure: &TargetFailure) -> Option<UpstreamFailure> {
    match &failure.why {
        Why::Status(status) if !worth_failing_over(status.status) => Some(status.clone()),
        Why::Worker {
            message,
            status: Some(status),
        } if !worth_failing_over(*status) => Some(UpstreamFailure {
            status: *status,
            content_type: Some("application/json".into()),
            body: Bytes::from(serde_json::json!({"error": {"message": message}}).to_string()),
            retry_after: None,
        }),
        _ => None,
    }
}

/// Prefer the upstream's own last answer: its status class and message say most.
fn all_failed(failures: Vec<TargetFailure>) -> DispatchError {
    let last_status = failures.iter().rev().find_map(|f| match &f.why {
        Why::Status(s) => Some((f.tier, f.route.clone(), s.clone())),
        _ => None,
    });
    match last_status {
        Some((tier, route, failure)) if failures.iter().all(|f| matches!(f.why, Why::Status(_))) => {
            DispatchError::Upstream {
                tier,
                route,
                failure: Box::new(failure),
                tried: failures,
            }
        }
        _ => DispatchError::AllFailed(failures),
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

    #[test]
    fn which_statuses_fail_over() {
        for s in [500, 502, 503, 429, 401, 404] {
            assert!(worth_failing_over(s), "{s}");
        }
        for s in [400, 413, 422] {
            assert!(!worth_failing_over(s), "{s}");
        }
    }
}

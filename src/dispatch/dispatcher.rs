//! The dispatcher: the live state requests are routed over (workers, providers, routing
//! rules, agents, the wait queue, target health), and what every kind of request shares on
//! its way: its own routing overrides, the order its agent or the defaults give, the clocks
//! per tier, and the walk over the plan that says where it went ([`Routed`]). A chat
//! attempt is `attempt.rs`, an embeddings one `embed.rs`.

use super::attempt::RoutedReply;
use super::error::{DispatchError, TargetFailure};
use super::health::{provider_key, worker_key, Health, HealthView};
use super::plan::Tier;
use super::queue::SlotQueue;
use super::responses::ChatOnlyProviders;
use super::rules::RoutingRules;
use super::stream::Phases;
use super::walk::{walk, Runner, Walk};
use crate::agents::{AgentBook, MODEL_PREFIX};
use crate::crypto::MasterKey;
use crate::providers::{ProviderRegistry, RoutingTable};
use crate::workers::protocol::JobKind;
use crate::workers::registry::WorkerRegistry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A request's own routing, which beats its agent's and the defaults: `X-Auxot-Provider`,
/// `X-Auxot-Tier` and `X-Auxot-Wait-Ms`.
#[derive(Debug, Clone, Default)]
pub struct RouteOverrides {
    pub provider: Option<String>,
    pub tiers: Option<Vec<Tier>>,
    pub wait: Option<Duration>,
}

/// Where a request went and its reply (for chat, the body not yet fully read).
pub struct Routed<R = RoutedReply> {
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
    pub reply: R,
}

/// The request with what the agent, alias and settings decided, for one dispatch.
pub(super) struct Resolved {
    pub(super) model: String,
    pub(super) order: Vec<Tier>,
    pub(super) wait: Duration,
    /// Shared with the agent: never copied per request.
    pub(super) system_prompt: Option<Arc<str>>,
}

pub struct Dispatcher {
    pub(super) providers: Arc<ProviderRegistry>,
    pub(super) workers: Arc<WorkerRegistry>,
    pub(super) rules: Arc<RoutingRules>,
    agents: Arc<AgentBook>,
    pub(super) master: Arc<MasterKey>,
    pub(super) http: crate::providers::HttpClient,
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
    pub http: crate::providers::HttpClient,
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

    /// Requests waiting for a free slot right now.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Request beats agent beats default.
    pub(super) fn resolve_route(&self, model: &str, overrides: &RouteOverrides) -> Result<Resolved, DispatchError> {
        let agent = match model.strip_prefix(MODEL_PREFIX) {
            Some(name) => Some(
                self.agents
                    .resolve(name)
                    .ok_or_else(|| DispatchError::UnknownAgent(name.to_string()))?,
            ),
            None => None,
        };
        let model = agent.as_ref().map_or_else(|| model.to_string(), |a| a.model.clone());
        let order = overrides
            .tiers
            .clone()
            .or_else(|| agent.as_ref().and_then(|a| a.tier_order.clone()))
            .unwrap_or_else(|| self.rules.default_order());
        let wait = overrides
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

    /// Walks the plan for a resolved request with `runner` trying each target, and says
    /// where it went.
    pub(super) async fn walk_resolved<R: Runner>(
        &self,
        resolved: &Resolved,
        provider: Option<&str>,
        table: &RoutingTable,
        job: JobKind,
        runner: &R,
    ) -> Result<Routed<R::Reply>, DispatchError> {
        let alias = self.rules.alias(&resolved.model);
        let walked = walk(
            Walk {
                queue: &self.queue,
                workers: &self.workers,
                table,
                health: &self.health,
                model: &resolved.model,
                provider,
                order: &resolved.order,
                alias: alias.as_ref(),
                turn: self.turn.fetch_add(1, Ordering::Relaxed),
                wait: resolved.wait,
                job,
            },
            runner,
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
}

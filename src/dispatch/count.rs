//! `POST /v1/messages/count_tokens` upstream: the Anthropic provider a request would reach
//! first counts it exactly.

use super::attempt::ChatRequest;
use super::body::rewrite_anthropic;
use super::dispatcher::Dispatcher;
use super::plan::{plan, PlanInput, Target, WorkerSnapshot};
use crate::providers::anthropic as anthropic_api;
use crate::providers::{ChatOutcome, ProviderError};
use crate::workers::protocol::JobKind;
use std::sync::atomic::Ordering;

impl Dispatcher {
    /// Asks the Anthropic provider a request would go to first for its exact token count.
    /// `None` when the first target is anything else (the caller estimates then).
    pub async fn count_tokens_upstream(&self, request: &ChatRequest) -> Option<Result<ChatOutcome, ProviderError>> {
        let resolved = self.resolve_route(&request.model, &request.overrides).ok()?;
        let table = self.providers.routing();
        let snapshot: Vec<WorkerSnapshot> = self.workers.live().iter().map(|w| WorkerSnapshot::of(w)).collect();
        let alias = self.rules.alias(&resolved.model);
        let input = PlanInput {
            model: &resolved.model,
            provider: request.overrides.provider.as_deref(),
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
}

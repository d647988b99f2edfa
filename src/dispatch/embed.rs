//! One embeddings request through the dispatcher: the same plan, wait queue, failover and
//! health as chat (`walk.rs`), over GPU workers that advertised the model for embeddings and
//! the providers that speak the OpenAI format (Anthropic has no embeddings API). The answer
//! is read whole, so any failure before it is complete moves on to the next candidate.

use super::attempt::{answered, event_failure, next_event, MAX_ANSWER_BYTES};
use super::body::{rewrite, Rewrite};
use super::dispatcher::{Dispatcher, RouteOverrides, Routed};
use super::error::{DispatchError, Why};
use super::plan::Tier;
use super::stream::{read_whole, Clock};
use super::walk::Runner;
use crate::providers::{openai, LiveProvider};
use crate::translate::embeddings::{conform_encoding, reported_tokens, Encoding};
use crate::workers::protocol::JobKind;
use crate::workers::registry::{JobEvent, SlotGuard};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::sync::Arc;

/// An embeddings request as the client sent it, already checked.
pub struct EmbeddingsCall {
    /// The OpenAI embeddings body.
    pub body: Bytes,
    pub model: String,
    pub encoding: Encoding,
    /// `X-Auxot-Provider`, `X-Auxot-Tier`, `X-Auxot-Wait-Ms`.
    pub overrides: RouteOverrides,
}

/// An embeddings answer: the OpenAI embeddings response, vectors in the encoding asked for,
/// and the input tokens the target reported, if it did.
pub struct Embeddings {
    pub body: Bytes,
    pub input_tokens: Option<u64>,
}

/// Where an embeddings request went and its whole answer.
pub type Embedded = Routed<Embeddings>;

impl Dispatcher {
    pub async fn embed(&self, call: EmbeddingsCall) -> Result<Embedded, DispatchError> {
        let resolved = self.resolve_route(&call.model, &call.overrides)?;
        let table = self.providers.routing().openai_format();
        let runner = EmbeddingsRunner {
            dispatcher: self,
            call: &call,
        };
        let provider = call.overrides.provider.as_deref();
        self.walk_resolved(&resolved, provider, &table, JobKind::Embeddings, &runner)
            .await
    }
}

struct EmbeddingsRunner<'a> {
    dispatcher: &'a Dispatcher,
    call: &'a EmbeddingsCall,
}

impl EmbeddingsRunner<'_> {
    /// The client's body for `model`: as sent, the model swapped where the target names it
    /// otherwise (an alias, an undated name).
    fn body_for(&self, model: &str) -> Result<Bytes, Why> {
        if model == self.call.model {
            return Ok(self.call.body.clone());
        }
        rewrite(
            &self.call.body,
            Rewrite {
                model: Some(model),
                ..Rewrite::default()
            },
        )
        .map_err(|e| Why::Untranslatable(e.to_string()))
    }

    /// The answer checked and in the client's encoding, with the tokens it reports.
    fn finish(&self, answer: Bytes) -> Result<Embeddings, Why> {
        let body = match conform_encoding(&answer, self.call.encoding) {
            Ok(Some(converted)) => Bytes::from(converted),
            Ok(None) => answer,
            Err(e) => return Err(Why::BadChunk(e.to_string())),
        };
        let input_tokens = reported_tokens(&body);
        Ok(Embeddings { body, input_tokens })
    }
}

impl Runner for EmbeddingsRunner<'_> {
    type Reply = Embeddings;

    async fn run_worker(&self, slot: SlotGuard, tier: Tier, model: &str) -> Result<Self::Reply, Why> {
        let body = self.body_for(model)?;
        let text = String::from_utf8(body.to_vec()).map_err(|e| Why::BadChunk(e.to_string()))?;
        let raw = RawValue::from_string(text).map_err(|e| Why::BadChunk(e.to_string()))?;
        let worker = slot.worker().clone();
        let clock = Clock::start(self.dispatcher.phases(tier));
        let mut job = worker
            .start_job(slot, JobKind::Embeddings, raw)
            .ok_or(Why::WorkerGone)?;
        let mut answer: Option<Box<RawValue>> = None;
        let mut deadline = clock.headers_deadline();
        loop {
            match next_event(&mut job, deadline).await? {
                JobEvent::Chunk(chunk) if answer.is_none() => answer = Some(chunk),
                JobEvent::Chunk(_) => return Err(Why::BadChunk("more than one answer to an embeddings job".into())),
                JobEvent::Done(usage) => {
                    let answer =
                        answer.ok_or_else(|| Why::BadChunk("an embeddings job ended without an answer".into()))?;
                    let mut answer = self.finish(Bytes::from(answer.get().to_string()))?;
                    answer.input_tokens = answer.input_tokens.or(usage.map(|u| u.prompt_tokens));
                    return Ok(answer);
                }
                other => return Err(event_failure(other)),
            }
            deadline = clock.idle_deadline();
        }
    }

    async fn run_cloud(&self, provider: &Arc<LiveProvider>, model: &str) -> Result<Self::Reply, Why> {
        let dispatcher = self.dispatcher;
        let key = provider.open_key(&dispatcher.master).map_err(|e| {
            tracing::error!(provider = %provider.name, error = %e, "cannot open a stored provider key");
            Why::KeyUnreadable
        })?;
        let body = self.body_for(model)?;
        let clock = Clock::start(dispatcher.phases(Tier::Cloud));
        let (_, phase, limit) = clock.headers_deadline();
        let outcome = openai::post(
            &dispatcher.http,
            &provider.base_url,
            key.as_ref(),
            "/embeddings",
            body,
            limit,
        )
        .await;
        let reply = answered(outcome, phase, limit)?;
        let whole = read_whole(reply.body, clock, MAX_ANSWER_BYTES).await?;
        self.finish(whole)
    }
}

//! One embeddings request's round trip: routed like chat (GPU workers that embed the model,
//! then the OpenAI-format providers), its answer whole JSON in the encoding the client asked
//! for, metered with the input tokens the target reported — or the documented estimate,
//! marked as one.

use super::route::note_walk;
use super::{Body, Reply};
use crate::dispatch::{DispatchError, Dispatcher, Embedded, EmbeddingsCall};
use crate::translate::Format;
use crate::usage::tap::Tokens;
use crate::usage::{Meter, RouteInfo};

/// Runs the request through the dispatcher, writing what the walk learnt and the tokens on
/// the meter. `estimated_tokens`: the input by the estimate, for a target that reports none.
pub async fn embed(
    dispatcher: &Dispatcher,
    call: EmbeddingsCall,
    estimated_tokens: u64,
    meter: &mut Meter,
) -> Result<Embedded, DispatchError> {
    let result = dispatcher.embed(call).await;
    note_walk(meter, &result);
    let mut embedded = result?;
    let (input, estimated) = match embedded.reply.input_tokens.take() {
        Some(tokens) => (tokens, false),
        None => (estimated_tokens, true),
    };
    meter.set_tokens(
        Tokens {
            input,
            ..Tokens::default()
        },
        estimated,
    );
    Ok(embedded)
}

/// The answer as the reply, its usage row made durable first (as every answer's is).
pub async fn embeddings_reply(embedded: Embedded, mut meter: Meter) -> Reply {
    meter.routed(RouteInfo {
        tier: embedded.tier.as_str(),
        route: &embedded.route,
        target_model: &embedded.model,
        cloud_model: embedded.cloud_model.as_deref(),
        overflow: embedded.overflow,
        client_format: Format::OpenAi,
        sse: false,
    });
    meter.completed();
    meter.finish_durably().await;
    Reply {
        status: 200,
        content_type: "application/json".into(),
        sse: false,
        tier: embedded.tier,
        route: embedded.route,
        body: Body::Whole(embedded.reply.body),
    }
}

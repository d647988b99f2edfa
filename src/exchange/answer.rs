//! The routed answer as the client's dialect wants it, whatever dialect the target
//! answered in: passed through when they match, translated when not, metered either way.

use super::metered::{metered, metered_whole};
use super::passthrough::{anthropic_stream_error, collect, openai_stream_error, upstream_body, watched};
use super::translated::{anthropic_sse_as_openai, openai_sse_as_anthropic};
use super::worker::{worker_chunks_as_anthropic, worker_chunks_as_openai};
use super::{responses, Body, ExchangeError, Outgoing, Reply};
use crate::dispatch::{Routed, RoutedReply};
use crate::providers::UpstreamReply;
use crate::translate::anthropic::{anthropic_to_openai_response, openai_to_anthropic_response};
use crate::translate::responses::ResponseContext;
use crate::translate::Format;
use crate::usage::{Meter, RouteInfo};
use bytes::Bytes;

/// Who asked, in which dialect, and what the translation back needs to know.
pub enum Client {
    /// OpenAI Chat Completions. `include_usage`: the client asked for the usage chunk in its
    /// stream (auxot always asks upstreams for it, so streams are never priced at zero).
    Chat { model: String, include_usage: bool },
    /// Anthropic Messages.
    Messages { model: String },
    /// OpenAI Responses.
    Responses(ResponseContext),
}

impl Client {
    fn format(&self) -> Format {
        match self {
            Client::Chat { .. } | Client::Responses(_) => Format::OpenAi,
            Client::Messages { .. } => Format::Anthropic,
        }
    }
}

/// The reply for `client`, its body metered. The meter is settled either way: on an error
/// it records the failure, and the caller only has to show it.
///
/// No answered request is lost from the books: a stream's closing event is held until the
/// usage row is durable, and a JSON answer goes out once its row is.
pub async fn answer(routed: Routed, client: Client, mut meter: Meter) -> Result<Reply, ExchangeError> {
    let built = match &client {
        Client::Chat { model, .. } => chat(routed.reply, &routed.route, model, &mut meter)
            .await
            .map(|out| (out, false)),
        Client::Messages { model } => messages(routed.reply, &routed.route, model, &mut meter)
            .await
            .map(|out| (out, false)),
        Client::Responses(context) => responses_answer(routed.reply, &routed.route, context, &mut meter).await,
    };
    let (out, through_chat) = match built {
        Ok(built) => built,
        Err(e) => {
            meter.failed(e.code(), e.status());
            return Err(e);
        }
    };
    let sse = out.is_sse();
    meter.routed(RouteInfo {
        tier: routed.tier.as_str(),
        route: &routed.route,
        target_model: &routed.model,
        cloud_model: routed.cloud_model.as_deref(),
        overflow: routed.overflow,
        client_format: client.format(),
        sse,
    });
    let strip_usage_only = matches!(
        client,
        Client::Chat {
            include_usage: false,
            ..
        }
    );
    let status = out.status;
    let content_type = out.content_type.clone();
    let body = if sse {
        Body::Stream(metered(out, meter, strip_usage_only))
    } else {
        Body::Whole(metered_whole(out.body, meter).await?)
    };
    let reply = Reply {
        status,
        content_type,
        sse,
        tier: routed.tier,
        route: routed.route,
        body,
    };
    match client {
        // Metered in the chat dialect as it passed, then translated for the client.
        Client::Responses(context) if through_chat => responses::from_chat(reply, context).await,
        _ => Ok(reply),
    }
}

/// A routed answer as Chat Completions.
async fn chat(reply: RoutedReply, route: &str, model: &str, meter: &mut Meter) -> Result<Outgoing, ExchangeError> {
    match reply {
        RoutedReply::Upstream {
            reply,
            format: Format::OpenAi,
        } => Ok(upstream_body(reply, route, Format::OpenAi, openai_stream_error)),
        RoutedReply::Upstream {
            reply,
            format: Format::Anthropic,
        } => from_anthropic(watched(meter, reply, Format::Anthropic), model).await,
        RoutedReply::WorkerStream { held, job } => Ok(worker_chunks_as_openai(held, job, route)),
        RoutedReply::Complete(body) => Ok(Outgoing::json(200, body)),
        // Only a Responses request (`responses` set) is answered in that dialect, and
        // `responses_answer` forwards it before asking for Chat Completions.
        RoutedReply::Responses(_) => Err(ExchangeError::WrongDialect(
            "a Responses answer cannot be read as Chat Completions",
        )),
    }
}

/// An Anthropic provider's answer for an OpenAI client. Usage chunks are always produced
/// (the meter reads them); `metered` drops them for clients that did not ask.
async fn from_anthropic(reply: UpstreamReply, model: &str) -> Result<Outgoing, ExchangeError> {
    if is_sse(&reply) {
        return Ok(Outgoing::sse(anthropic_sse_as_openai(reply.body, model, true)));
    }
    let body = collect(reply.body).await.map_err(ExchangeError::Unreadable)?;
    let value = anthropic_to_openai_response(&body, model).map_err(|e| ExchangeError::Untranslatable(e.to_string()))?;
    Ok(Outgoing::json(200, Bytes::from(value.to_string())))
}

/// A routed answer as Anthropic Messages.
async fn messages(reply: RoutedReply, route: &str, model: &str, meter: &mut Meter) -> Result<Outgoing, ExchangeError> {
    match reply {
        RoutedReply::Upstream {
            reply,
            format: Format::Anthropic,
        } => Ok(upstream_body(reply, route, Format::Anthropic, anthropic_stream_error)),
        RoutedReply::Upstream {
            reply,
            format: Format::OpenAi,
        } => from_openai(watched(meter, reply, Format::OpenAi), model).await,
        RoutedReply::WorkerStream { held, job } => Ok(Outgoing::sse(worker_chunks_as_anthropic(held, job, model))),
        RoutedReply::Complete(body) => openai_to_anthropic_response(&body, model)
            .map(|value| Outgoing::json(200, Bytes::from(value.to_string())))
            .map_err(|e| ExchangeError::Untranslatable(e.to_string())),
        // Only a Responses request (`responses` set) is answered in that dialect.
        RoutedReply::Responses(_) => Err(ExchangeError::Untranslatable(
            "a Responses answer to a Messages request".into(),
        )),
    }
}

/// An OpenAI-format answer (provider) for an Anthropic client.
async fn from_openai(reply: UpstreamReply, model: &str) -> Result<Outgoing, ExchangeError> {
    if is_sse(&reply) {
        return Ok(Outgoing::sse(openai_sse_as_anthropic(reply.body, model)));
    }
    let body = collect(reply.body).await.map_err(ExchangeError::Untranslatable)?;
    openai_to_anthropic_response(&body, model)
        .map(|value| Outgoing::json(200, Bytes::from(value.to_string())))
        .map_err(|e| ExchangeError::Untranslatable(e.to_string()))
}

/// A routed answer for a Responses client, and whether it is still Chat Completions (to be
/// translated after metering): an OpenAI provider's own Responses answer passes through,
/// an Anthropic provider's is translated directly, everything else answered in chat.
async fn responses_answer(
    reply: RoutedReply,
    route: &str,
    context: &ResponseContext,
    meter: &mut Meter,
) -> Result<(Outgoing, bool), ExchangeError> {
    match reply {
        RoutedReply::Responses(reply) => Ok((super::responses_pass::forward(reply, route), false)),
        RoutedReply::Upstream {
            reply,
            format: Format::Anthropic,
        } => {
            let reply = watched(meter, reply, Format::Anthropic);
            Ok((responses::from_messages(reply, context.clone()).await?, false))
        }
        other => Ok((chat(other, route, &context.model, meter).await?, true)),
    }
}

pub(super) fn is_sse(reply: &UpstreamReply) -> bool {
    reply
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/event-stream"))
}

//! Answers for a Responses client: an Anthropic provider's Messages answer translated
//! directly, and a chat answer (already metered as it passed) translated into a `response`
//! object or the Responses event sequence.

use super::answer::is_sse;
use super::passthrough::collect;
use super::pump::{sse_pump, Flow, SseStep};
use super::{Body, BoxError, ExchangeError, Outgoing, Reply};
use crate::providers::UpstreamReply;
use crate::translate::responses::{
    chat_to_response, messages_to_response, ChatToResponsesStream, MessagesToResponsesStream, ResponseContext,
};
use crate::translate::sse::SseEvent;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::VecDeque;

/// An Anthropic provider's answer to a Responses request, translated directly.
pub(super) async fn from_messages(reply: UpstreamReply, context: ResponseContext) -> Result<Outgoing, ExchangeError> {
    if is_sse(&reply) {
        let events = sse_pump(reply.body, MessageEvents(MessagesToResponsesStream::new(context)));
        return Ok(Outgoing::sse(events.map(Ok).boxed()));
    }
    let body = collect(reply.body).await.map_err(ExchangeError::Unreadable)?;
    let response = messages_to_response(&body, &context).map_err(|e| ExchangeError::Untranslatable(e.to_string()))?;
    Ok(Outgoing::json(200, Bytes::from(response.to_string())))
}

/// A metered chat reply as the Responses dialect: events as they arrive, or one object.
pub(super) async fn from_chat(chat: Reply, context: ResponseContext) -> Result<Reply, ExchangeError> {
    if !chat.sse {
        let bytes = chat.body.whole().await?;
        let response = chat_to_response(&bytes, &context).map_err(|e| ExchangeError::Untranslatable(e.to_string()))?;
        return Ok(Reply {
            content_type: "application/json".into(),
            body: Body::Whole(Bytes::from(response.to_string())),
            ..chat
        });
    }
    let body = match chat.body {
        Body::Stream(body) => body,
        Body::Whole(bytes) => futures_util::stream::once(async move { Ok::<Bytes, BoxError>(bytes) }).boxed(),
    };
    let events = sse_pump(body, ChatEvents(ChatToResponsesStream::new(context)));
    Ok(Reply {
        body: Body::Stream(events.map(Ok).boxed()),
        ..chat
    })
}

/// Chat chunks (already metered).
struct ChatEvents(ChatToResponsesStream);

impl SseStep for ChatEvents {
    type Out = Bytes;

    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<Bytes>) -> Flow {
        match event.data.trim() {
            "[DONE]" => out.extend(self.0.finish()),
            "" => {}
            chunk => out.extend(self.0.push_chunk(chunk)),
        }
        Flow::More
    }

    fn end(&mut self, broken: Option<String>, out: &mut VecDeque<Bytes>) {
        out.extend(match broken {
            None => self.0.finish(),
            Some(why) => self.0.fail(&format!("the stream broke: {why}")),
        });
    }
}

/// Anthropic Messages events.
struct MessageEvents(MessagesToResponsesStream);

impl SseStep for MessageEvents {
    type Out = Bytes;

    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<Bytes>) -> Flow {
        out.extend(self.0.push_event(event));
        Flow::More
    }

    fn end(&mut self, broken: Option<String>, out: &mut VecDeque<Bytes>) {
        out.extend(match broken {
            None if self.0.is_finished() => Vec::new(),
            None => self.0.fail("the upstream stream ended before message_stop"),
            Some(why) => self.0.fail(&format!("the stream broke: {why}")),
        });
    }
}

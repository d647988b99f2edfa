//! Answers for a Responses client: an Anthropic provider's Messages answer translated
//! directly, and a chat answer (already metered as it passed) translated into a `response`
//! object or the Responses event sequence.

use super::answer::is_sse;
use super::passthrough::collect;
use super::{Body, BoxError, ExchangeError, Outgoing, Reply};
use crate::providers::UpstreamReply;
use crate::translate::responses::{
    chat_to_response, messages_to_response, ChatToResponsesStream, MessagesToResponsesStream, ResponseContext,
};
use crate::translate::sse::{SseEvent, SseParser};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::VecDeque;
use std::convert::Infallible;

/// An Anthropic provider's answer to a Responses request, translated directly.
pub(super) async fn from_messages(reply: UpstreamReply, context: ResponseContext) -> Result<Outgoing, ExchangeError> {
    if is_sse(&reply) {
        let events = translated(reply.body, MessageEvents(MessagesToResponsesStream::new(context)));
        return Ok(Outgoing::sse(events.boxed()));
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
    let events = translated(body, ChatEvents(ChatToResponsesStream::new(context)));
    Ok(Reply {
        body: Body::Stream(events.map(|item| item.map_err(|never| match never {})).boxed()),
        ..chat
    })
}

/// One upstream dialect's events as Responses events.
trait ToResponses: Send + 'static {
    fn event(&mut self, event: &SseEvent) -> Vec<Bytes>;
    /// The upstream ended: cleanly (`None`) or broken.
    fn end(&mut self, broken: Option<String>) -> Vec<Bytes>;
}

/// Chat chunks (already metered).
struct ChatEvents(ChatToResponsesStream);

impl ToResponses for ChatEvents {
    fn event(&mut self, event: &SseEvent) -> Vec<Bytes> {
        match event.data.trim() {
            "[DONE]" => self.0.finish(),
            "" => Vec::new(),
            chunk => self.0.push_chunk(chunk),
        }
    }

    fn end(&mut self, broken: Option<String>) -> Vec<Bytes> {
        match broken {
            None => self.0.finish(),
            Some(why) => self.0.fail(&format!("the stream broke: {why}")),
        }
    }
}

/// Anthropic Messages events.
struct MessageEvents(MessagesToResponsesStream);

impl ToResponses for MessageEvents {
    fn event(&mut self, event: &SseEvent) -> Vec<Bytes> {
        self.0.push_event(event)
    }

    fn end(&mut self, broken: Option<String>) -> Vec<Bytes> {
        match broken {
            None if self.0.is_finished() => Vec::new(),
            None => self.0.fail("the upstream stream ended before message_stop"),
            Some(why) => self.0.fail(&format!("the stream broke: {why}")),
        }
    }
}

/// An SSE body as Responses events, event by event as it arrives.
fn translated<S, E, T>(body: S, translator: T) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display,
    T: ToResponses,
{
    struct State<S, T> {
        body: S,
        parser: SseParser,
        translator: T,
        pending: VecDeque<Bytes>,
        ended: bool,
    }
    let state = State {
        body,
        parser: SseParser::new(),
        translator,
        pending: VecDeque::new(),
        ended: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(bytes) = state.pending.pop_front() {
                return Some((Ok(bytes), state));
            }
            if state.ended {
                return None;
            }
            let events = match state.body.next().await {
                Some(Ok(chunk)) => state.parser.push(&chunk),
                Some(Err(e)) => {
                    state.ended = true;
                    let out = state.translator.end(Some(e.to_string()));
                    state.pending.extend(out);
                    continue;
                }
                None => {
                    state.ended = true;
                    let events = state.parser.finish();
                    for event in events {
                        let out = state.translator.event(&event);
                        state.pending.extend(out);
                    }
                    let out = state.translator.end(None);
                    state.pending.extend(out);
                    continue;
                }
            };
            for event in events {
                let out = state.translator.event(&event);
                state.pending.extend(out);
            }
        }
    })
}

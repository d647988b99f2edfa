//! A target's SSE stream in the other dialect, translated event by event as it arrives
//! (never buffered whole).

use super::pump::{sse_pump, Flow, SseStep};
use super::ClientStream;
use crate::providers::ProviderError;
use crate::translate::anthropic::{AnthropicToOpenAiStream, OpenAiToAnthropicStream};
use crate::translate::sse::SseEvent;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::json;
use std::collections::VecDeque;

type UpstreamBody = BoxStream<'static, Result<Bytes, ProviderError>>;

/// Anthropic SSE from an upstream, as OpenAI chunks for the client.
struct ToOpenAi {
    inner: AnthropicToOpenAiStream,
    stopped: bool,
}

impl SseStep for ToOpenAi {
    type Out = Bytes;

    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<Bytes>) -> Flow {
        if event.event.as_deref() == Some("message_stop") || event.data.contains("\"message_stop\"") {
            self.stopped = true;
        }
        out.extend(self.inner.push_event(event));
        Flow::More
    }

    fn end(&mut self, error: Option<String>, out: &mut VecDeque<Bytes>) {
        match error {
            None if self.stopped => {}
            other => {
                let message = other.unwrap_or_else(|| "the upstream stream ended before message_stop".into());
                let event = json!({"error": {"message": message, "type": "api_error", "code": "upstream_stream_error", "param": null}});
                out.push_back(Bytes::from(format!("data: {event}\n\n")));
            }
        }
    }
}

/// OpenAI SSE from an upstream, as Anthropic events for the client.
struct ToAnthropic {
    inner: OpenAiToAnthropicStream,
}

impl SseStep for ToAnthropic {
    type Out = Bytes;

    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<Bytes>) -> Flow {
        match event.data.trim() {
            "[DONE]" => out.extend(self.inner.finish()),
            "" => {}
            data => out.extend(self.inner.push_chunk(data)),
        }
        Flow::More
    }

    fn end(&mut self, error: Option<String>, out: &mut VecDeque<Bytes>) {
        match error {
            None => out.extend(self.inner.finish()),
            Some(message) => out.push_back(self.inner.error_event(&message)),
        }
    }
}

fn relay(body: UpstreamBody, translator: impl SseStep<Out = Bytes>) -> ClientStream {
    sse_pump(body, translator).map(Ok).boxed()
}

pub(super) fn anthropic_sse_as_openai(body: UpstreamBody, model: &str, include_usage: bool) -> ClientStream {
    relay(
        body,
        ToOpenAi {
            inner: AnthropicToOpenAiStream::new(model, include_usage),
            stopped: false,
        },
    )
}

pub(super) fn openai_sse_as_anthropic(body: UpstreamBody, model: &str) -> ClientStream {
    relay(
        body,
        ToAnthropic {
            inner: OpenAiToAnthropicStream::new(model),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text_of(stream: ClientStream) -> String {
        let chunks: Vec<_> = stream.collect().await;
        chunks
            .into_iter()
            .map(|c| match c {
                Ok(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
                Err(never) => match never {},
            })
            .collect()
    }

    #[tokio::test]
    async fn an_anthropic_stream_cut_before_message_stop_ends_with_an_openai_error_chunk() {
        let body = futures_util::stream::iter(vec![Ok::<_, ProviderError>(Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1,\"output_tokens\":0}}}\n\n",
        ))])
        .boxed();
        let text = text_of(anthropic_sse_as_openai(body, "claude", true)).await;
        assert!(text.contains("upstream_stream_error"), "{text}");
        assert!(text.contains("ended before message_stop"), "{text}");
    }

    #[tokio::test]
    async fn an_openai_stream_that_breaks_ends_with_an_anthropic_error_event() {
        let body = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(
                b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
            )),
            Err(ProviderError::Unreachable("connection reset".into())),
        ])
        .boxed();
        let text = text_of(openai_sse_as_anthropic(body, "gpt")).await;
        assert!(text.contains("event: error"), "{text}");
        assert!(text.contains("connection reset"), "{text}");
    }
}

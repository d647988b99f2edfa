//! An Anthropic event stream as OpenAI `chat.completion.chunk`s.
//!
//! Anthropic numbers content blocks across text, thinking and tool use; OpenAI numbers
//! tool calls only, so tool_use blocks are renumbered 0, 1, … as they start.

use super::common::{finish_from_stop_reason, now_unix, openai_completion_id, Usage};
use super::frames::openai_event;
use crate::translate::chunks::SSE_DONE;
use crate::translate::sse::SseEvent;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub struct AnthropicToOpenAiStream {
    requested_model: String,
    include_usage: bool,
    id: String,
    model: String,
    created: i64,
    started: bool,
    sent_finish: bool,
    finished: bool,
    /// Anthropic block index → OpenAI tool call index.
    tool_calls: BTreeMap<u64, usize>,
    usage: Usage,
}

impl AnthropicToOpenAiStream {
    /// `include_usage` is the client's `stream_options.include_usage`: only then does a
    /// usage chunk without choices go out, since some clients index `choices[0]` blindly.
    pub fn new(requested_model: &str, include_usage: bool) -> Self {
        Self {
            requested_model: requested_model.to_string(),
            include_usage,
            id: openai_completion_id(None),
            model: requested_model.to_string(),
            created: now_unix(),
            started: false,
            sent_finish: false,
            finished: false,
            tool_calls: BTreeMap::new(),
            usage: Usage::default(),
        }
    }

    /// Takes one upstream event; returns complete `data: …` events for the client, ending
    /// with `data: [DONE]` after `message_stop`.
    pub fn push_event(&mut self, event: &SseEvent) -> Vec<Bytes> {
        let data = event.data.trim();
        if self.finished || data.is_empty() {
            return Vec::new();
        }
        let Ok(data) = serde_json::from_str::<Value>(data) else {
            return vec![
                self.fail(&json!({"type": "api_error", "message": "the upstream sent an event that is not JSON"}))
            ];
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                if let Some(usage) = message.get("usage") {
                    self.usage.update_from_anthropic(usage);
                }
                self.start(message, &mut out);
            }
            "content_block_start" => {
                self.start(&Value::Null, &mut out);
                let block = data.get("content_block").unwrap_or(&Value::Null);
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                self.block_start(index, block, &mut out);
            }
            "content_block_delta" => {
                self.start(&Value::Null, &mut out);
                let delta = data.get("delta").unwrap_or(&Value::Null);
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                self.block_delta(index, delta, &mut out);
            }
            "message_delta" => {
                self.start(&Value::Null, &mut out);
                if let Some(usage) = data.get("usage") {
                    self.usage.update_from_anthropic(usage);
                }
                let stop = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                if let Some(stop) = stop {
                    self.send_finish(finish_from_stop_reason(Some(stop)), &mut out);
                }
            }
            "message_stop" => out.extend(self.finish()),
            "error" => out.push(self.fail(data.get("error").unwrap_or(&Value::Null))),
            // ping, content_block_stop and event types added after this was written.
            _ => {}
        }
        out
    }

    /// Ends the stream if `message_stop` never came: a finish chunk if none went out, the
    /// usage chunk if asked for, `[DONE]`. A second call sends nothing.
    pub fn finish(&mut self) -> Vec<Bytes> {
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.start(&Value::Null, &mut out);
        let finish = if self.tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        self.send_finish(finish, &mut out);
        if self.include_usage {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage.to_openai(),
            });
            out.push(openai_event(&chunk));
        }
        out.push(Bytes::from_static(SSE_DONE));
        self.finished = true;
        out
    }

    /// An OpenAI-style error event for a failure outside the upstream's events; the stream
    /// is over after it.
    pub fn error_event(&mut self, message: &str) -> Bytes {
        self.fail(&json!({"type": "api_error", "message": message}))
    }

    /// OpenAI SDKs raise on a chunk carrying `error`; no `[DONE]` follows it.
    fn fail(&mut self, error: &Value) -> Bytes {
        self.finished = true;
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the upstream failed mid-stream");
        let kind = error.get("type").and_then(Value::as_str).unwrap_or("api_error");
        openai_event(&json!({"error": {"message": message, "type": kind, "param": null, "code": null}}))
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        openai_event(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        }))
    }

    /// The role chunk. An upstream that skips `message_start` still gets one, with the
    /// requested model and a fresh id.
    fn start(&mut self, message: &Value, out: &mut Vec<Bytes>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        if let Some(id) = message.get("id").and_then(Value::as_str) {
            self.id = openai_completion_id(Some(id));
        }
        self.model = message
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.requested_model)
            .to_string();
        out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
    }

    fn block_start(&mut self, index: u64, block: &Value, out: &mut Vec<Bytes>) {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = block.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    out.push(self.chunk(json!({"content": text}), None));
                }
            }
            Some("tool_use") => {
                let call_index = self.tool_calls.len();
                self.tool_calls.insert(index, call_index);
                // Input normally streams as input_json_delta from `{}`; a block that
                // arrives already filled carries it here.
                let arguments = match block.get("input") {
                    Some(Value::Object(input)) if !input.is_empty() => Value::Object(input.clone()).to_string(),
                    _ => String::new(),
                };
                let call = json!({
                    "index": call_index,
                    "id": block.get("id").and_then(Value::as_str).unwrap_or_default(),
                    "type": "function",
                    "function": {"name": block.get("name").and_then(Value::as_str).unwrap_or_default(), "arguments": arguments},
                });
                out.push(self.chunk(json!({"tool_calls": [call]}), None));
            }
            // Thinking has no OpenAI counterpart; server-tool blocks cannot have been asked for.
            _ => {}
        }
    }

    fn block_delta(&mut self, index: u64, delta: &Value, out: &mut Vec<Bytes>) {
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                if let Some(text) = delta.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    out.push(self.chunk(json!({"content": text}), None));
                }
            }
            Some("input_json_delta") => {
                let partial = delta.get("partial_json").and_then(Value::as_str).unwrap_or_default();
                if let (Some(&call_index), false) = (self.tool_calls.get(&index), partial.is_empty()) {
                    let call = json!({"index": call_index, "function": {"arguments": partial}});
                    out.push(self.chunk(json!({"tool_calls": [call]}), None));
                }
            }
            // thinking_delta, signature_delta, citations_delta.
            _ => {}
        }
    }

    fn send_finish(&mut self, finish_reason: &str, out: &mut Vec<Bytes>) {
        if !std::mem::replace(&mut self.sent_finish, true) {
            out.push(self.chunk(json!({}), Some(finish_reason)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: Value) -> SseEvent {
        SseEvent {
            event: data["type"].as_str().map(str::to_string),
            data: data.to_string(),
        }
    }

    fn datas(out: &[Bytes]) -> Vec<String> {
        out.iter()
            .map(|b| {
                let text = std::str::from_utf8(b).unwrap();
                assert!(text.starts_with("data: ") && text.ends_with("\n\n"), "{text:?}");
                text["data: ".len()..text.len() - 2].to_string()
            })
            .collect()
    }

    #[test]
    fn a_stream_without_message_stop_is_closed_by_finish_once() {
        let mut stream = AnthropicToOpenAiStream::new("m", false);
        let out = stream.push_event(&event(
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}),
        ));
        assert_eq!(out.len(), 2, "role chunk then content");
        let closing = datas(&stream.finish());
        assert_eq!(closing.len(), 2);
        let finish: Value = serde_json::from_str(&closing[0]).unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["model"], "m");
        assert_eq!(closing[1], "[DONE]");
        assert!(stream.finish().is_empty());
    }

    #[test]
    fn garbage_and_unknown_events_do_not_break_the_stream() {
        let mut stream = AnthropicToOpenAiStream::new("m", true);
        assert!(stream
            .push_event(&SseEvent {
                event: Some("ping".into()),
                data: "{\"type\":\"ping\"}".into()
            })
            .is_empty());
        assert!(stream.push_event(&event(json!({"type":"brand_new_event"}))).is_empty());
        let out = datas(&stream.push_event(&SseEvent {
            event: None,
            data: "{oops".into(),
        }));
        assert!(out[0].contains("\"error\""));
        assert!(stream.finish().is_empty());
        let mut stream = AnthropicToOpenAiStream::new("m", true);
        let out = datas(&[stream.error_event("gone")]);
        assert!(out[0].contains("gone"));
    }
}

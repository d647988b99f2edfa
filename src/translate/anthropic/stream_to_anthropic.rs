//! OpenAI `chat.completion.chunk`s as an Anthropic event stream.
//!
//! OpenAI streams flat deltas (text, tool calls keyed by index) and ends with a
//! `finish_reason`, usage possibly in a later chunk; Anthropic streams numbered content
//! blocks that open, fill and close one after another, then the stop reason and usage.

use super::common::{anthropic_message_id, anthropic_tool_id, fresh_tool_use_id, stop_reason_from_finish, Usage};
use super::error::anthropic_error_type;
use super::frames::anthropic_event;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Tool,
}

/// A tool call as its deltas arrive; its block opens once the name is known.
#[derive(Default)]
struct ToolCall {
    id: Option<String>,
    name: String,
    block: Option<usize>,
    pending_arguments: String,
}

pub struct OpenAiToAnthropicStream {
    requested_model: String,
    started: bool,
    finished: bool,
    open: Option<(usize, Open)>,
    next_block: usize,
    tools: BTreeMap<u64, ToolCall>,
    saw_tool_use: bool,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl OpenAiToAnthropicStream {
    pub fn new(requested_model: &str) -> Self {
        Self {
            requested_model: requested_model.to_string(),
            started: false,
            finished: false,
            open: None,
            next_block: 0,
            tools: BTreeMap::new(),
            saw_tool_use: false,
            finish_reason: None,
            usage: None,
        }
    }

    /// Takes one chunk's JSON (an SSE `data` payload; `[DONE]` finishes the stream). The
    /// closing `message_delta` waits for [`finish`](Self::finish) because the usage it
    /// carries may come in a chunk after the one with the `finish_reason`.
    pub fn push_chunk(&mut self, chunk_json: &str) -> Vec<Bytes> {
        let data = chunk_json.trim();
        if self.finished || data.is_empty() {
            return Vec::new();
        }
        if data == "[DONE]" {
            return self.finish();
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return vec![self.fail("api_error", "the upstream sent a stream chunk that is not JSON")];
        };
        // OpenAI-compatible servers report failures mid-stream as an `error` object.
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return vec![self.fail_with_upstream_error(error)];
        }
        let mut out = Vec::new();
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(Usage::from_openai(usage));
        }
        self.start(&chunk, &mut out);
        let choices = chunk
            .get("choices")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Only the first choice: requests asking for several were refused.
        let first = choices
            .iter()
            .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0);
        if let Some(choice) = first {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            for key in ["content", "refusal"] {
                if let Some(text) = delta.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    self.text(text, &mut out);
                }
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (position, call) in calls.iter().enumerate() {
                    let index = call.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
                    self.tool_delta(index, call, &mut out);
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_string());
                self.close_block(&mut out);
            }
        }
        out
    }

    /// Closes whatever is open and ends the message; a second call sends nothing.
    pub fn finish(&mut self) -> Vec<Bytes> {
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.start(&Value::Null, &mut out);
        self.close_block(&mut out);
        let usage = self.usage.unwrap_or_default();
        let stop_reason = stop_reason_from_finish(self.finish_reason.as_deref(), self.saw_tool_use);
        // Input counts ride along: the message_start went out before the upstream knew them.
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": usage.to_anthropic(),
        });
        out.push(anthropic_event("message_delta", &delta));
        out.push(anthropic_event("message_stop", &json!({"type": "message_stop"})));
        self.finished = true;
        out
    }

    /// An Anthropic `error` event for a failure outside the chunks (the upstream or worker
    /// went away); the stream is over after it, so a later `finish` sends nothing.
    pub fn error_event(&mut self, message: &str) -> Bytes {
        self.fail("api_error", message)
    }

    fn fail(&mut self, kind: &str, message: &str) -> Bytes {
        self.finished = true;
        let error = anthropic_event(
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": message}}),
        );
        // Counts the upstream reported before failing still reach the client (and the
        // meter), in a `message_delta` with no stop reason just ahead of the error.
        match self.usage.filter(|_| self.started) {
            Some(usage) => {
                let delta = json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": null, "stop_sequence": null},
                    "usage": usage.to_anthropic(),
                });
                let mut both = anthropic_event("message_delta", &delta).to_vec();
                both.extend_from_slice(&error);
                Bytes::from(both)
            }
            None => error,
        }
    }

    fn fail_with_upstream_error(&mut self, error: &Value) -> Bytes {
        let message = match error {
            Value::String(s) => s.clone(),
            other => other
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the upstream failed mid-stream")
                .to_string(),
        };
        let status = error
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok());
        self.fail(status.map_or("api_error", anthropic_error_type), &message)
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<Bytes>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let model = chunk
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.requested_model);
        let usage = self.usage.unwrap_or_default();
        let message = json!({
            "type": "message_start",
            "message": {
                "id": anthropic_message_id(chunk.get("id").and_then(Value::as_str)),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": usage.input,
                    "output_tokens": 0,
                    "cache_creation_input_tokens": usage.cache_creation,
                    "cache_read_input_tokens": usage.cache_read,
                },
            },
        });
        out.push(anthropic_event("message_start", &message));
    }

    fn open_block(&mut self, kind: Open, block: Value, out: &mut Vec<Bytes>) -> usize {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        let start = json!({"type": "content_block_start", "index": index, "content_block": block});
        out.push(anthropic_event("content_block_start", &start));
        self.open = Some((index, kind));
        index
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if let Some((index, _)) = self.open.take() {
            out.push(anthropic_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn block_delta(index: usize, delta: Value, out: &mut Vec<Bytes>) {
        let event = json!({"type": "content_block_delta", "index": index, "delta": delta});
        out.push(anthropic_event("content_block_delta", &event));
    }

    fn text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        let index = match self.open {
            Some((index, Open::Text)) => index,
            _ => self.open_block(Open::Text, json!({"type": "text", "text": ""}), out),
        };
        Self::block_delta(index, json!({"type": "text_delta", "text": text}), out);
    }

    fn tool_delta(&mut self, index: u64, call: &Value, out: &mut Vec<Bytes>) {
        let function = call.get("function").unwrap_or(&Value::Null);
        let slot = self.tools.entry(index).or_default();
        if slot.id.is_none() {
            slot.id = call
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map(anthropic_tool_id);
        }
        if slot.block.is_none() {
            slot.name
                .push_str(function.get("name").and_then(Value::as_str).unwrap_or_default());
        }
        match function.get("arguments") {
            Some(Value::String(fragment)) => slot.pending_arguments.push_str(fragment),
            // A few servers send the arguments already parsed, whole.
            Some(parsed @ Value::Object(_)) => slot.pending_arguments.push_str(&parsed.to_string()),
            _ => {}
        }

        let (block, partial) = match slot.block {
            Some(block) => (block, std::mem::take(&mut slot.pending_arguments)),
            None if slot.name.is_empty() => return,
            None => {
                let id = slot.id.clone().unwrap_or_else(fresh_tool_use_id);
                let start = json!({"type": "tool_use", "id": id, "name": slot.name, "input": {}});
                let partial = std::mem::take(&mut slot.pending_arguments);
                let block = self.open_block(Open::Tool, start, out);
                self.saw_tool_use = true;
                if let Some(slot) = self.tools.get_mut(&index) {
                    slot.block = Some(block);
                }
                (block, partial)
            }
        };
        // A delta for a call whose block already closed (an upstream interleaving calls)
        // still goes to that call's index: SDKs accumulate by index.
        if !partial.is_empty() {
            Self::block_delta(block, json!({"type": "input_json_delta", "partial_json": partial}), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(out: &[Bytes]) -> Vec<Value> {
        let mut parser = crate::translate::sse::SseParser::new();
        out.iter()
            .flat_map(|b| parser.push(b))
            .map(|e| {
                let data: Value = serde_json::from_str(&e.data).unwrap();
                assert_eq!(Some(data["type"].as_str().unwrap()), e.event.as_deref());
                data
            })
            .collect()
    }

    #[test]
    fn finish_is_idempotent_and_an_empty_stream_is_still_a_message() {
        let mut stream = OpenAiToAnthropicStream::new("m");
        let first = events(&stream.finish());
        let kinds: Vec<_> = first.iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds, ["message_start", "message_delta", "message_stop"]);
        assert_eq!(first[0]["message"]["model"], "m");
        assert!(stream.finish().is_empty());
        assert!(stream
            .push_chunk(r#"{"choices":[{"delta":{"content":"late"}}]}"#)
            .is_empty());
    }

    #[test]
    fn errors_end_the_stream() {
        let mut stream = OpenAiToAnthropicStream::new("m");
        let out = stream.push_chunk(r#"{"error":{"message":"slow down","code":429}}"#);
        let got = events(&out);
        assert_eq!(
            got[0]["error"],
            json!({"type":"rate_limit_error","message":"slow down"})
        );
        assert!(stream.finish().is_empty());

        let mut stream = OpenAiToAnthropicStream::new("m");
        assert_eq!(events(&stream.push_chunk("{not json"))[0]["error"]["type"], "api_error");
        let mut stream = OpenAiToAnthropicStream::new("m");
        let _ = stream.push_chunk(r#"{"choices":[{"delta":{"content":"hi"}}]}"#);
        assert_eq!(
            events(&[stream.error_event("worker gone")])[0]["error"]["message"],
            "worker gone"
        );
        assert!(stream.finish().is_empty());
    }

    #[test]
    fn counts_reported_before_a_failure_go_out_ahead_of_the_error() {
        let mut stream = OpenAiToAnthropicStream::new("m");
        let _ = stream.push_chunk(r#"{"choices":[{"delta":{"content":"half"}}]}"#);
        let _ = stream.push_chunk(r#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":3}}"#);
        let got = events(&[stream.error_event("the CLI exited with status 2")]);
        let kinds: Vec<_> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["message_delta", "error"]);
        assert_eq!(got[0]["delta"]["stop_reason"], Value::Null);
        assert_eq!(got[0]["usage"]["output_tokens"], 3);
        assert_eq!(got[0]["usage"]["input_tokens"], 4);
        assert!(stream.finish().is_empty());
    }

    #[test]
    fn a_tool_name_arriving_late_still_opens_one_block_with_all_arguments() {
        let mut stream = OpenAiToAnthropicStream::new("m");
        let mut out = stream.push_chunk(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"arguments":"{\"a\""}}]}}]}"#,
        );
        out.extend(stream.push_chunk(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":":1}"}}]}}]}"#,
        ));
        out.extend(stream.finish());
        let got = events(&out);
        assert_eq!(
            got[1]["content_block"],
            json!({"type":"tool_use","id":"c1","name":"f","input":{}})
        );
        assert_eq!(got[2]["delta"]["partial_json"], "{\"a\":1}");
        assert_eq!(got[4]["delta"]["stop_reason"], "tool_use");
    }
}

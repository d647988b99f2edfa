//! Chat Completions chunks as the Responses event sequence, as they arrive:
//! `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added` … `response.output_item.done` (text through
//! `content_part.added`, `output_text.delta`, `output_text.done`, `content_part.done`;
//! function calls through `function_call_arguments.delta`/`.done`; custom tool calls through
//! `custom_tool_call_input.delta`/`.done`), and `response.completed` (or `incomplete`,
//! `failed`) with usage. Every event carries its `sequence_number`.

use super::events::ResponseEvents;
use super::response_from_chat::{call_item, custom_input, message_item, responses_usage, status_for};
use super::{new_id, ResponseContext};
use bytes::Bytes;
use serde_json::{json, Value};

struct TextItem {
    output_index: usize,
    id: String,
    text: String,
}

struct ToolItem {
    /// Set once the item is announced (its name is known).
    output_index: Option<usize>,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
    custom: bool,
}

pub struct ChatToResponsesStream {
    core: ResponseEvents,
    next_output_index: usize,
    text: Option<TextItem>,
    /// By the chat stream's tool call index, in order of first appearance.
    tools: Vec<(u64, ToolItem)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl ChatToResponsesStream {
    pub fn new(context: ResponseContext) -> Self {
        ChatToResponsesStream {
            core: ResponseEvents::new(context),
            next_output_index: 0,
            text: None,
            tools: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    fn event(&mut self, kind: &str, payload: Value) -> Bytes {
        self.core.event(kind, payload)
    }

    /// `response.created` and `response.in_progress`, once, before anything else.
    pub fn start(&mut self) -> Vec<Bytes> {
        self.core.start()
    }

    /// One chat chunk (the JSON after `data:`).
    pub fn push_chunk(&mut self, data: &str) -> Vec<Bytes> {
        let mut out = self.start();
        if self.core.finished {
            return out;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            tracing::debug!("skipped a chunk that is not JSON");
            return out;
        };
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_string);
            out.extend(self.fail(&message));
            return out;
        }
        if let Some(usage) = chunk.get("usage").and_then(responses_usage) {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return out;
        };
        if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(finish.to_string());
        }
        let delta = choice.get("delta").cloned().unwrap_or(Value::Null);
        if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            out.extend(self.text_delta(text));
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            out.extend(self.tool_delta(call));
        }
        out
    }

    fn text_delta(&mut self, text: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.text.is_none() {
            let index = self.next_output_index;
            self.next_output_index += 1;
            let id = new_id("msg");
            let item =
                json!({"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []});
            out.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
            out.push(self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            ));
            self.text = Some(TextItem {
                output_index: index,
                id,
                text: String::new(),
            });
        }
        let Some(item) = self.text.as_mut() else {
            return out;
        };
        item.text.push_str(text);
        let (id, index) = (item.id.clone(), item.output_index);
        out.push(self.event(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
        ));
        out
    }

    fn close_text(&mut self) -> Vec<Bytes> {
        let Some(item) = self.text.take() else {
            return Vec::new();
        };
        let (id, index, text) = (item.id, item.output_index, item.text);
        let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
        let done = message_item(&id, &text, "completed");
        let out = vec![
            self.event(
                "response.output_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
            ),
            self.event(
                "response.content_part.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
            ),
            self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": done.clone()}),
            ),
        ];
        self.core.output.push((index, done));
        out
    }

    fn tool_delta(&mut self, call: &Value) -> Vec<Bytes> {
        let mut out = self.close_text();
        let key = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let position = match self.tools.iter().position(|(k, _)| *k == key) {
            Some(position) => position,
            None => {
                self.tools.push((
                    key,
                    ToolItem {
                        output_index: None,
                        id: new_id("fc"),
                        call_id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                        custom: false,
                    },
                ));
                self.tools.len() - 1
            }
        };
        let tool = &mut self.tools[position].1;
        if let Some(id) = call.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            tool.call_id = id.to_string();
        }
        if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
            tool.name.push_str(name);
        }
        let fresh = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        tool.arguments.push_str(&fresh);
        let announce = tool.output_index.is_none() && !tool.name.is_empty();
        if announce {
            if tool.call_id.is_empty() {
                tool.call_id = new_id("call");
            }
            tool.custom = self.core.context.custom_tools.contains(&tool.name);
            let index = self.next_output_index;
            self.next_output_index += 1;
            let tool = &mut self.tools[position].1;
            tool.output_index = Some(index);
            let item = if tool.custom {
                json!({"id": tool.id, "type": "custom_tool_call", "status": "in_progress", "call_id": tool.call_id,
                    "name": tool.name, "input": ""})
            } else {
                json!({"id": tool.id, "type": "function_call", "status": "in_progress", "call_id": tool.call_id,
                    "name": tool.name, "arguments": ""})
            };
            let (custom, id, buffered) = (tool.custom, tool.id.clone(), tool.arguments.clone());
            out.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
            if !custom && !buffered.is_empty() {
                out.push(self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": buffered}),
                ));
            }
            return out;
        }
        let tool = &self.tools[position].1;
        if let (Some(index), false, false) = (tool.output_index, tool.custom, fresh.is_empty()) {
            let id = tool.id.clone();
            out.push(self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": fresh}),
            ));
        }
        out
    }

    fn close_tools(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        for (_, tool) in std::mem::take(&mut self.tools) {
            // A call whose name never came cannot be reported as a call.
            let Some(index) = tool.output_index else {
                tracing::debug!("dropped a streamed tool call that never named its tool");
                continue;
            };
            let item = call_item(&self.core.context, &tool.id, &tool.call_id, &tool.name, &tool.arguments);
            if tool.custom {
                let input = custom_input(&tool.arguments);
                out.push(self.event(
                    "response.custom_tool_call_input.delta",
                    json!({"item_id": tool.id, "output_index": index, "delta": input}),
                ));
                out.push(self.event(
                    "response.custom_tool_call_input.done",
                    json!({"item_id": tool.id, "output_index": index, "input": input}),
                ));
            } else {
                out.push(self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": tool.id, "output_index": index, "name": tool.name, "arguments": tool.arguments}),
                ));
            }
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item.clone()}),
            ));
            self.core.output.push((index, item));
        }
        out
    }

    /// The chat stream ended (`[DONE]` or its end): open items close, then
    /// `response.completed` (`response.incomplete` when the token limit cut it short).
    /// Idempotent.
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = self.start();
        if self.core.finished {
            return out;
        }
        out.extend(self.close_text());
        out.extend(self.close_tools());
        let status = status_for(self.finish_reason.as_deref());
        let usage = self.usage.clone();
        out.push(self.core.complete(status, usage));
        out
    }

    /// The stream broke: an `error` event, then `response.failed`. Idempotent.
    pub fn fail(&mut self, message: &str) -> Vec<Bytes> {
        let usage = self.usage.clone();
        self.core.fail(message, usage)
    }
}

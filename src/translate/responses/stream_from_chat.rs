//! Chat Completions chunks as the Responses event sequence, as they arrive:
//! `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added` … `response.output_item.done` (text through
//! `content_part.added`, `output_text.delta`, `output_text.done`, `content_part.done`;
//! function calls through `function_call_arguments.delta`/`.done`; custom tool calls through
//! `custom_tool_call_input.delta`/`.done`), and `response.completed` (or `incomplete`,
//! `failed`) with usage. Every event carries its `sequence_number`.

use super::response_from_chat::{call_item, custom_input, message_item, response_object, responses_usage, status_for};
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
    context: ResponseContext,
    id: String,
    created_at: i64,
    sequence: u64,
    started: bool,
    finished: bool,
    next_output_index: usize,
    /// Finished items by output index.
    output: Vec<(usize, Value)>,
    text: Option<TextItem>,
    /// By the chat stream's tool call index, in order of first appearance.
    tools: Vec<(u64, ToolItem)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl ChatToResponsesStream {
    pub fn new(context: ResponseContext) -> Self {
        ChatToResponsesStream {
            context,
            id: new_id("resp"),
            created_at: crate::clock::now_unix(),
            sequence: 0,
            started: false,
            finished: false,
            next_output_index: 0,
            output: Vec::new(),
            text: None,
            tools: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    fn event(&mut self, kind: &str, mut payload: Value) -> Bytes {
        payload["type"] = json!(kind);
        payload["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        Bytes::from(format!("event: {kind}\ndata: {payload}\n\n"))
    }

    fn snapshot(&self, status: &str) -> Value {
        let mut output = self.output.clone();
        output.sort_by_key(|(index, _)| *index);
        let output = output.into_iter().map(|(_, item)| item).collect();
        let usage = if status == "in_progress" {
            None
        } else {
            self.usage.clone()
        };
        response_object(&self.context, &self.id, self.created_at, status, output, usage)
    }

    /// `response.created` and `response.in_progress`, once, before anything else.
    pub fn start(&mut self) -> Vec<Bytes> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        let response = self.snapshot("in_progress");
        vec![
            self.event("response.created", json!({"response": response.clone()})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    /// One chat chunk (the JSON after `data:`).
    pub fn push_chunk(&mut self, data: &str) -> Vec<Bytes> {
        let mut out = self.start();
        if self.finished {
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
        self.output.push((index, done));
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
            tool.custom = self.context.custom_tools.contains(&tool.name);
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
            let item = call_item(&self.context, &tool.id, &tool.call_id, &tool.name, &tool.arguments);
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
            self.output.push((index, item));
        }
        out
    }

    /// The chat stream ended (`[DONE]` or its end): open items close, then
    /// `response.completed` (`response.incomplete` when the token limit cut it short).
    /// Idempotent.
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = self.start();
        if self.finished {
            return out;
        }
        out.extend(self.close_text());
        out.extend(self.close_tools());
        self.finished = true;
        let status = status_for(self.finish_reason.as_deref());
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let response = self.snapshot(status);
        out.push(self.event(kind, json!({"response": response})));
        out
    }

    /// The stream broke: an `error` event, then `response.failed`. Idempotent.
    pub fn fail(&mut self, message: &str) -> Vec<Bytes> {
        let mut out = self.start();
        if self.finished {
            return out;
        }
        self.finished = true;
        out.push(self.event(
            "error",
            json!({"code": "upstream_stream_error", "message": message, "param": null}),
        ));
        let mut response = self.snapshot("failed");
        response["error"] = json!({"code": "server_error", "message": message});
        out.push(self.event("response.failed", json!({"response": response})));
        out
    }
}

//! Anthropic Messages stream events as the Responses event sequence, as they arrive:
//! `message_start` opens the response (`response.created`, `response.in_progress`); each
//! content block is one output item — `thinking` a `reasoning` item whose summary streams
//! (`reasoning_summary_part.added`, `reasoning_summary_text.delta`/`.done`,
//! `reasoning_summary_part.done`), `text` a `message` (`content_part.added`,
//! `output_text.delta`/`.done`, `content_part.done`), `tool_use` a `function_call`
//! (`function_call_arguments.delta`/`.done`) or a `custom_tool_call`
//! (`custom_tool_call_input.delta`/`.done`); `message_stop` ends it with
//! `response.completed` (or `response.incomplete`). Every event carries its
//! `sequence_number`.

use super::events::ResponseEvents;
use super::response_from_chat::{call_item, custom_input, message_item};
use super::response_from_messages::{arguments_of, reasoning_item, status_for_stop, usage_from_anthropic};
use super::{new_id, ResponseContext};
use crate::translate::sse::SseEvent;
use bytes::Bytes;
use serde_json::{json, Value};

enum Open {
    Text {
        text: String,
    },
    Thinking {
        block: Value,
    },
    Tool {
        call_id: String,
        name: String,
        arguments: String,
        custom: bool,
        seeded: Option<Value>,
    },
}

struct Block {
    output_index: usize,
    id: String,
    open: Open,
}

pub struct MessagesToResponsesStream {
    core: ResponseEvents,
    /// By Anthropic's block index.
    blocks: Vec<(u64, Block)>,
    stop_reason: Option<String>,
    /// Anthropic's usage, later reports replacing earlier fields.
    usage: serde_json::Map<String, Value>,
}

impl MessagesToResponsesStream {
    pub fn new(context: ResponseContext) -> Self {
        MessagesToResponsesStream {
            core: ResponseEvents::new(context),
            blocks: Vec::new(),
            stop_reason: None,
            usage: serde_json::Map::new(),
        }
    }

    fn event(&mut self, kind: &str, payload: Value) -> Bytes {
        self.core.event(kind, payload)
    }

    fn start(&mut self) -> Vec<Bytes> {
        self.core.start()
    }

    fn note_usage(&mut self, usage: Option<&Value>) {
        if let Some(Value::Object(fields)) = usage {
            for (key, value) in fields {
                if !value.is_null() {
                    self.usage.insert(key.clone(), value.clone());
                }
            }
        }
    }

    /// One upstream SSE event.
    pub fn push_event(&mut self, event: &SseEvent) -> Vec<Bytes> {
        let mut out = self.start();
        if self.core.finished || event.data.trim().is_empty() {
            return out;
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            tracing::debug!("skipped an Anthropic event that is not JSON");
            return out;
        };
        let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "message_start" => self.note_usage(data.pointer("/message/usage")),
            "content_block_start" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = data.get("content_block").cloned().unwrap_or(Value::Null);
                out.extend(self.open_block(index, &block));
            }
            "content_block_delta" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = data.get("delta").cloned().unwrap_or(Value::Null);
                out.extend(self.delta(index, &delta));
            }
            "content_block_stop" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                out.extend(self.close_block(index));
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_string());
                }
                self.note_usage(data.get("usage"));
            }
            "message_stop" => out.extend(self.finish()),
            "error" => {
                let message = data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the upstream reported an error")
                    .to_string();
                out.extend(self.fail(&message));
            }
            _ => {}
        }
        out
    }

    fn open_block(&mut self, index: u64, block: &Value) -> Vec<Bytes> {
        let output_index = self.blocks.len() + self.core.output.len();
        let kind = block.get("type").and_then(Value::as_str).unwrap_or_default();
        let mut out = Vec::new();
        let (id, open) = match kind {
            "text" => {
                let id = new_id("msg");
                let item =
                    json!({"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []});
                out.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                ));
                out.push(self.event(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                ));
                let text = block.get("text").and_then(Value::as_str).unwrap_or("").to_string();
                (id, Open::Text { text })
            }
            "thinking" | "redacted_thinking" => {
                let id = new_id("rs");
                out.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": {"id": id, "type": "reasoning", "summary": []}}),
                ));
                if kind == "thinking" {
                    out.push(self.event(
                        "response.reasoning_summary_part.added",
                        json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                            "part": {"type": "summary_text", "text": ""}}),
                    ));
                }
                (id, Open::Thinking { block: block.clone() })
            }
            "tool_use" => {
                let id = new_id("fc");
                let name = block.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                let call_id = block
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| new_id("call"), str::to_string);
                let custom = self.core.context.custom_tools.contains(&name);
                let item = if custom {
                    json!({"id": id, "type": "custom_tool_call", "status": "in_progress", "call_id": call_id,
                        "name": name, "input": ""})
                } else {
                    json!({"id": id, "type": "function_call", "status": "in_progress", "call_id": call_id,
                        "name": name, "arguments": ""})
                };
                out.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                ));
                // A non-empty input in the start event is the whole input (no deltas follow).
                let seeded = block
                    .get("input")
                    .filter(|i| i.as_object().is_some_and(|m| !m.is_empty()))
                    .cloned();
                (
                    id,
                    Open::Tool {
                        call_id,
                        name,
                        arguments: String::new(),
                        custom,
                        seeded,
                    },
                )
            }
            other => {
                tracing::debug!(kind = other, "dropped: an Anthropic block with no Responses item");
                return out;
            }
        };
        self.blocks.push((index, Block { output_index, id, open }));
        out
    }

    fn delta(&mut self, index: u64, delta: &Value) -> Vec<Bytes> {
        let Some(position) = self.blocks.iter().position(|(i, _)| *i == index) else {
            return Vec::new();
        };
        let kind = delta.get("type").and_then(Value::as_str).unwrap_or_default();
        let block = &mut self.blocks[position].1;
        let (id, output_index) = (block.id.clone(), block.output_index);
        match (&mut block.open, kind) {
            (Open::Text { text }, "text_delta") => {
                let piece = delta.get("text").and_then(Value::as_str).unwrap_or("").to_string();
                text.push_str(&piece);
                vec![self.event(
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0, "delta": piece, "logprobs": []}),
                )]
            }
            (Open::Thinking { block }, "thinking_delta") => {
                let piece = delta.get("thinking").and_then(Value::as_str).unwrap_or("").to_string();
                let so_far = block.get("thinking").and_then(Value::as_str).unwrap_or("").to_string();
                block["thinking"] = json!(so_far + &piece);
                vec![self.event(
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "delta": piece}),
                )]
            }
            (Open::Thinking { block }, "signature_delta") => {
                let piece = delta.get("signature").and_then(Value::as_str).unwrap_or("");
                let so_far = block.get("signature").and_then(Value::as_str).unwrap_or("").to_string();
                block["signature"] = json!(so_far + piece);
                Vec::new()
            }
            (Open::Tool { arguments, custom, .. }, "input_json_delta") => {
                let piece = delta
                    .get("partial_json")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                arguments.push_str(&piece);
                if *custom || piece.is_empty() {
                    // A custom tool's input is known only once its JSON is whole.
                    return Vec::new();
                }
                vec![self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": output_index, "delta": piece}),
                )]
            }
            _ => Vec::new(),
        }
    }

    fn close_block(&mut self, index: u64) -> Vec<Bytes> {
        let Some(position) = self.blocks.iter().position(|(i, _)| *i == index) else {
            return Vec::new();
        };
        let (_, block) = self.blocks.remove(position);
        let (id, output_index) = (block.id, block.output_index);
        let mut out = Vec::new();
        let item = match block.open {
            Open::Text { text } => {
                let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                out.push(self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0, "text": text, "logprobs": []}),
                ));
                out.push(self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0, "part": part}),
                ));
                message_item(&id, &text, "completed")
            }
            Open::Thinking { block } => {
                if block["type"] == "thinking" {
                    let text = block.get("thinking").and_then(Value::as_str).unwrap_or("").to_string();
                    out.push(self.event(
                        "response.reasoning_summary_text.done",
                        json!({"item_id": id, "output_index": output_index, "summary_index": 0, "text": text}),
                    ));
                    out.push(self.event(
                        "response.reasoning_summary_part.done",
                        json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                            "part": {"type": "summary_text", "text": text}}),
                    ));
                }
                reasoning_item(&id, &block)
            }
            Open::Tool {
                call_id,
                name,
                arguments,
                custom,
                seeded,
            } => {
                let arguments = match (arguments.trim().is_empty(), seeded) {
                    (true, Some(input)) => arguments_of(Some(&input)),
                    (true, None) => "{}".to_string(),
                    (false, _) => arguments,
                };
                if custom {
                    let input = custom_input(&arguments);
                    out.push(self.event(
                        "response.custom_tool_call_input.delta",
                        json!({"item_id": id, "output_index": output_index, "delta": input}),
                    ));
                    out.push(self.event(
                        "response.custom_tool_call_input.done",
                        json!({"item_id": id, "output_index": output_index, "input": input}),
                    ));
                } else {
                    out.push(self.event(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": output_index, "name": name, "arguments": arguments}),
                    ));
                }
                call_item(&self.core.context, &id, &call_id, &name, &arguments)
            }
        };
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": output_index, "item": item.clone()}),
        ));
        self.core.output.push((output_index, item));
        out
    }

    /// The upstream ended (`message_stop`, or its end without one: then the answer is
    /// whatever came, still closed properly). Idempotent.
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = self.start();
        if self.core.finished {
            return out;
        }
        let open: Vec<u64> = self.blocks.iter().map(|(i, _)| *i).collect();
        for index in open {
            out.extend(self.close_block(index));
        }
        let status = status_for_stop(self.stop_reason.as_deref());
        let usage = (!self.usage.is_empty()).then(|| usage_from_anthropic(&Value::Object(self.usage.clone())));
        out.push(self.core.complete(status, usage));
        out
    }

    /// The stream broke: an `error` event, then `response.failed`. Idempotent.
    pub fn fail(&mut self, message: &str) -> Vec<Bytes> {
        let usage = (!self.usage.is_empty()).then(|| usage_from_anthropic(&Value::Object(self.usage.clone())));
        self.core.fail(message, usage)
    }

    /// Whether `message_stop` (or an error) ended the stream.
    pub fn is_finished(&self) -> bool {
        self.core.finished
    }
}

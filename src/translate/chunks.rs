//! Workers stream OpenAI `chat.completion.chunk` objects. A streaming client gets them as
//! SSE events unchanged; a non-streaming client gets them folded into one
//! `chat.completion`, tool calls included.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

/// One SSE event carrying `raw` as its data.
pub fn sse_event(raw: &str) -> Bytes {
    let mut out = String::with_capacity(raw.len() + 8);
    out.push_str("data: ");
    out.push_str(raw);
    out.push_str("\n\n");
    Bytes::from(out)
}

pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// A chunk that only carries usage (empty `choices`): sent to clients that asked for it
/// with `stream_options.include_usage`, dropped for the rest — some clients index
/// `choices[0]` on every chunk.
pub fn is_usage_only(chunk: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        choices: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        usage: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<Peek>(chunk.get())
        .map(|p| p.choices.is_empty() && p.usage.is_some())
        .unwrap_or(false)
}

#[derive(Default)]
struct ToolCall {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

/// Folds chunks into a `chat.completion`.
#[derive(Default)]
pub struct Aggregator {
    id: Option<String>,
    model: Option<String>,
    created: Option<i64>,
    content: String,
    saw_content: bool,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkIn {
    id: Option<String>,
    model: Option<String>,
    created: Option<i64>,
    #[serde(default)]
    choices: Vec<ChoiceIn>,
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct ChoiceIn {
    #[serde(default)]
    delta: DeltaIn,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct DeltaIn {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallIn>,
}

#[derive(Deserialize)]
struct ToolCallIn {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<FunctionIn>,
}

#[derive(Deserialize)]
struct FunctionIn {
    name: Option<String>,
    arguments: Option<String>,
}

impl Aggregator {
    /// Adds one chunk; a chunk that is not a chat chunk is an error the caller reports.
    pub fn push(&mut self, chunk: &RawValue) -> Result<(), serde_json::Error> {
        let chunk: ChunkIn = serde_json::from_str(chunk.get())?;
        self.id = self.id.take().or(chunk.id);
        self.model = self.model.take().or(chunk.model);
        self.created = self.created.or(chunk.created);
        if chunk.usage.as_ref().is_some_and(|u| !u.is_null()) {
            self.usage = chunk.usage;
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content {
                self.saw_content = true;
                self.content.push_str(&text);
            }
            for call in choice.delta.tool_calls {
                while self.tool_calls.len() <= call.index {
                    self.tool_calls.push(ToolCall::default());
                }
                let slot = &mut self.tool_calls[call.index];
                slot.id = slot.id.take().or(call.id);
                slot.kind = slot.kind.take().or(call.kind);
                if let Some(function) = call.function {
                    if let Some(name) = function.name {
                        slot.name.push_str(&name);
                    }
                    if let Some(arguments) = function.arguments {
                        slot.arguments.push_str(&arguments);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
        Ok(())
    }

    /// The completion; `usage` from the stream, else the one the worker's `done` carried.
    pub fn finish(self, model: &str, usage: Option<Value>) -> Value {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        let content = if self.saw_content || self.tool_calls.is_empty() {
            json!(self.content)
        } else {
            Value::Null
        };
        message.insert("content".into(), content);
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .into_iter()
                .map(|c| {
                    json!({"id": c.id.unwrap_or_default(), "type": c.kind.unwrap_or_else(|| "function".into()),
                        "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        let mut completion = json!({
            "id": self.id.unwrap_or_else(|| format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())),
            "object": "chat.completion",
            "created": self.created.unwrap_or_else(crate::clock::now_unix),
            "model": self.model.unwrap_or_else(|| model.to_string()),
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason.unwrap_or_else(|| "stop".into())}],
        });
        if let Some(usage) = self.usage.or(usage) {
            completion["usage"] = usage;
        }
        completion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    #[test]
    fn folds_text_chunks_and_usage() {
        let mut agg = Aggregator::default();
        for c in [
            json!({"id":"c1","model":"qwen","created":5,"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}),
            json!({"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}),
            json!({"id":"c1","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}),
            json!({"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}),
        ] {
            agg.push(&raw(c)).unwrap();
        }
        let done = agg.finish("fallback", None);
        assert_eq!(done["object"], "chat.completion");
        assert_eq!(done["id"], "c1");
        assert_eq!(done["model"], "qwen");
        assert_eq!(done["choices"][0]["message"]["content"], "Hello");
        assert_eq!(done["choices"][0]["finish_reason"], "stop");
        assert_eq!(done["usage"]["total_tokens"], 5);
    }

    #[test]
    fn folds_tool_call_deltas_by_index() {
        let mut agg = Aggregator::default();
        for c in [
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"get_time","arguments":"{}"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]},"finish_reason":"tool_calls"}]}),
        ] {
            agg.push(&raw(c)).unwrap();
        }
        let done = agg.finish("m", None);
        let message = &done["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(message["tool_calls"][1]["id"], "call_b");
        assert_eq!(message["tool_calls"][1]["type"], "function");
        assert_eq!(done["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn usage_only_chunks_are_recognised() {
        assert!(is_usage_only(&raw(json!({"choices":[],"usage":{"prompt_tokens":1}}))));
        assert!(!is_usage_only(&raw(
            json!({"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}})
        )));
        assert!(!is_usage_only(&raw(json!({"choices":[]}))));
    }
}

//! A whole Anthropic `message` as a Responses `response` object, and the pieces the
//! stream translation shares: thinking blocks become `reasoning` items (the thinking as
//! their summary, the block itself in `encrypted_content`), text becomes `message` items,
//! `tool_use` becomes `function_call` or `custom_tool_call`.

use super::response_from_chat::{call_item, message_item, response_object};
use super::{new_id, reasoning_payload, ResponseContext};
use crate::translate::anthropic::TranslateError;
use serde_json::{json, Value};

/// Anthropic `usage` in Responses terms: input counts cache reads and writes too, as
/// OpenAI's does; cache reads are its `cached_tokens`.
pub(super) fn usage_from_anthropic(usage: &Value) -> Value {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("cache_read_input_tokens");
    let input = count("input_tokens") + cached + count("cache_creation_input_tokens");
    let output = count("output_tokens");
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output,
    })
}

/// A Responses status for an Anthropic `stop_reason`.
pub(super) fn status_for_stop(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "incomplete",
        _ => "completed",
    }
}

/// A `reasoning` item for a `thinking` or `redacted_thinking` block.
pub(super) fn reasoning_item(id: &str, block: &Value) -> Value {
    let summary = match block.get("thinking").and_then(Value::as_str) {
        Some(text) if !text.is_empty() => json!([{"type": "summary_text", "text": text}]),
        _ => json!([]),
    };
    json!({"id": id, "type": "reasoning", "summary": summary,
        "encrypted_content": reasoning_payload::encode(block)})
}

/// A `tool_use` input as the arguments string of a call item.
pub(super) fn arguments_of(input: Option<&Value>) -> String {
    match input {
        Some(Value::Object(map)) => Value::Object(map.clone()).to_string(),
        _ => "{}".into(),
    }
}

/// Translates an Anthropic Messages answer body.
pub fn messages_to_response(body: &[u8], context: &ResponseContext) -> Result<Value, TranslateError> {
    let fail = |field: &str, message: &str| TranslateError {
        field: field.to_string(),
        message: message.to_string(),
    };
    let message: Value = serde_json::from_slice(body).map_err(|e| fail("", &format!("the answer is not JSON: {e}")))?;
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("content", "the answer holds no content array"))?;
    let mut output = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("thinking" | "redacted_thinking") => output.push(reasoning_item(&new_id("rs"), block)),
            Some("text") => {
                let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                if !text.is_empty() {
                    output.push(message_item(&new_id("msg"), text, "completed"));
                }
            }
            Some("tool_use") => {
                let name = block.get("name").and_then(Value::as_str).unwrap_or("");
                let call_id = block
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| new_id("call"), str::to_string);
                let arguments = arguments_of(block.get("input"));
                output.push(call_item(context, &new_id("fc"), &call_id, name, &arguments));
            }
            other => tracing::debug!(kind = ?other, "dropped: an Anthropic block with no Responses item"),
        }
    }
    let status = status_for_stop(message.get("stop_reason").and_then(Value::as_str));
    let usage = message.get("usage").map(usage_from_anthropic);
    Ok(response_object(
        context,
        &new_id("resp"),
        crate::clock::now_unix(),
        status,
        output,
        usage,
    ))
}

//! A whole `chat.completion` as a Responses `response` object, and the pieces of a
//! `response` the stream translation shares.

use super::{new_id, ResponseContext, CUSTOM_TOOL_INPUT};
use crate::translate::anthropic::TranslateError;
use serde_json::{json, Map, Value};

/// A `response` object around `output`: what the request asked for, echoed back, and the
/// state it is in (`in_progress`, `completed`, `incomplete`, `failed`).
pub(super) fn response_object(
    context: &ResponseContext,
    id: &str,
    created_at: i64,
    status: &str,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let mut response = Map::new();
    response.insert("id".into(), json!(id));
    response.insert("object".into(), json!("response"));
    response.insert("created_at".into(), json!(created_at));
    response.insert("status".into(), json!(status));
    response.insert("background".into(), json!(false));
    response.insert("error".into(), Value::Null);
    response.insert(
        "incomplete_details".into(),
        if status == "incomplete" {
            json!({"reason": "max_output_tokens"})
        } else {
            Value::Null
        },
    );
    response.insert("model".into(), json!(context.model));
    response.insert("output".into(), Value::Array(output));
    response.insert("parallel_tool_calls".into(), json!(true));
    response.insert("tool_choice".into(), json!("auto"));
    response.insert("tools".into(), json!([]));
    response.insert("instructions".into(), Value::Null);
    response.insert("store".into(), json!(false));
    response.insert("text".into(), json!({"format": {"type": "text"}}));
    response.insert("reasoning".into(), json!({"effort": null, "summary": null}));
    response.insert("metadata".into(), json!({}));
    response.insert("temperature".into(), json!(1.0));
    response.insert("top_p".into(), json!(1.0));
    response.insert("max_output_tokens".into(), Value::Null);
    response.insert("truncation".into(), json!("disabled"));
    for (key, value) in &context.echo {
        if !value.is_null() {
            response.insert(key.clone(), value.clone());
        }
    }
    response.insert("usage".into(), usage.unwrap_or(Value::Null));
    Value::Object(response)
}

/// Chat `usage` in Responses terms.
pub(super) fn responses_usage(usage: &Value) -> Option<Value> {
    let input = usage.get("prompt_tokens")?.as_u64().unwrap_or(0);
    let output = usage.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0);
    let cached = usage
        .pointer("/prompt_tokens_details/cached_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let reasoning = usage
        .pointer("/completion_tokens_details/reasoning_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output,
    }))
}

pub(super) fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

/// A tool call as the item the client declared it as: `custom_tool_call` (the freeform
/// input unwrapped) or `function_call`.
pub(super) fn call_item(context: &ResponseContext, id: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    if context.custom_tools.contains(name) {
        json!({"id": id, "type": "custom_tool_call", "status": "completed", "call_id": call_id, "name": name,
            "input": custom_input(arguments)})
    } else {
        json!({"id": id, "type": "function_call", "status": "completed", "call_id": call_id, "name": name,
            "arguments": arguments})
    }
}

/// The freeform input inside a custom tool's `{"input": "…"}` arguments; arguments a model
/// wrote any other way are passed on as they are.
pub(super) fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => match map.get(CUSTOM_TOOL_INPUT) {
            Some(Value::String(s)) => s.clone(),
            _ => arguments.to_string(),
        },
        _ => arguments.to_string(),
    }
}

pub(super) fn status_for(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "incomplete",
        _ => "completed",
    }
}

/// Translates a `chat.completion` body.
pub fn chat_to_response(body: &[u8], context: &ResponseContext) -> Result<Value, TranslateError> {
    let fail = |field: &str, message: &str| TranslateError {
        field: field.to_string(),
        message: message.to_string(),
    };
    let completion: Value =
        serde_json::from_slice(body).map_err(|e| fail("", &format!("the answer is not JSON: {e}")))?;
    let choice = completion
        .pointer("/choices/0")
        .ok_or_else(|| fail("choices", "the answer holds no choice"))?;
    let message = choice
        .get("message")
        .ok_or_else(|| fail("choices[0].message", "is missing"))?;
    let mut output = Vec::new();
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    if !text.is_empty() {
        output.push(message_item(&new_id("msg"), &text, "completed"));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or("");
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let call_id = call
            .get("id")
            .and_then(Value::as_str)
            .map_or_else(|| new_id("call"), str::to_string);
        output.push(call_item(context, &new_id("fc"), &call_id, name, arguments));
    }
    let status = status_for(choice.get("finish_reason").and_then(Value::as_str));
    let created = completion
        .get("created")
        .and_then(Value::as_i64)
        .unwrap_or_else(crate::clock::now_unix);
    let usage = completion.get("usage").and_then(responses_usage);
    Ok(response_object(
        context,
        &new_id("resp"),
        created,
        status,
        output,
        usage,
    ))
}

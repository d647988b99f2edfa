//! Non-streaming answers: an OpenAI `chat.completion` as an Anthropic `message`, and back.

use super::common::{
    anthropic_message_id, anthropic_tool_id, as_array, as_object, finish_from_stop_reason, fresh_tool_use_id, now_unix,
    openai_completion_id, parse_object, present, stop_reason_from_finish, Usage,
};
use super::error::err;
use super::request_to_anthropic::arguments;
use super::TranslateError;
use serde_json::{json, Value};

/// Translates an OpenAI `chat.completion` body. Only `choices[0]` is read (requests are
/// refused with `n` > 1). `reasoning_content`, which some OpenAI-compatible servers add, is
/// dropped: an Anthropic thinking block needs a signature only Anthropic can make.
pub fn openai_to_anthropic_response(body: &[u8], requested_model: &str) -> Result<Value, TranslateError> {
    let completion = parse_object(body)?;
    if present(&completion, "error").is_some() {
        return Err(err("error", "the upstream answered with an error, not a completion"));
    }
    let choices = as_array(present(&completion, "choices").unwrap_or(&Value::Null), "choices")?;
    let choice = as_object(choices.first().ok_or_else(|| err("choices", "is empty"))?, "choices[0]")?;
    let message = as_object(present(choice, "message").unwrap_or(&Value::Null), "choices[0].message")?;

    let mut content = Vec::new();
    let text = match present(message, "content") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        // Some servers answer with content parts; their texts are the answer.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        Some(_) => return Err(err("choices[0].message.content", "must be a string, parts or null")),
    };
    let refusal = present(message, "refusal").and_then(Value::as_str).unwrap_or_default();
    for said in [text.as_str(), refusal] {
        if !said.is_empty() {
            content.push(json!({"type": "text", "text": said}));
        }
    }
    let mut has_tool_use = false;
    if let Some(calls) = present(message, "tool_calls") {
        for (j, call) in as_array(calls, "choices[0].message.tool_calls")?.iter().enumerate() {
            let field = format!("choices[0].message.tool_calls[{j}]");
            let call = as_object(call, &field)?;
            let function = as_object(
                present(call, "function").unwrap_or(&Value::Null),
                &format!("{field}.function"),
            )?;
            let name = present(function, "name").and_then(Value::as_str).unwrap_or_default();
            let input = arguments(present(function, "arguments"), &format!("{field}.function.arguments"))?;
            let id = match present(call, "id").and_then(Value::as_str) {
                Some(id) => anthropic_tool_id(id),
                None => fresh_tool_use_id(),
            };
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
            has_tool_use = true;
        }
    }
    let finish = present(choice, "finish_reason").and_then(Value::as_str);
    let usage = present(&completion, "usage")
        .map(Usage::from_openai)
        .unwrap_or_default();
    Ok(json!({
        "id": anthropic_message_id(present(&completion, "id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model_or(present(&completion, "model"), requested_model),
        "content": content,
        "stop_reason": stop_reason_from_finish(finish, has_tool_use),
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    }))
}

/// Translates an Anthropic `message` body. Thinking blocks are dropped (OpenAI has no
/// place for them) and text blocks are joined without separators, exactly as a streaming
/// OpenAI client would have received them.
pub fn anthropic_to_openai_response(body: &[u8], requested_model: &str) -> Result<Value, TranslateError> {
    let message = parse_object(body)?;
    if present(&message, "error").is_some() || present(&message, "type").and_then(Value::as_str) == Some("error") {
        return Err(err("error", "the upstream answered with an error, not a message"));
    }
    let blocks = as_array(present(&message, "content").unwrap_or(&Value::Null), "content")?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let field = format!("content[{j}]");
        let block = as_object(block, &field)?;
        match present(block, "type").and_then(Value::as_str) {
            Some("text") => text.push_str(present(block, "text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => {
                let id = present(block, "id").and_then(Value::as_str).map(str::to_string);
                let name = present(block, "name").and_then(Value::as_str).unwrap_or_default();
                let input = present(block, "input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id.unwrap_or_else(fresh_tool_use_id),
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            // Thinking, and server-tool blocks a request could not have asked for.
            _ => {}
        }
    }
    let mut reply = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        reply["tool_calls"] = Value::Array(calls);
    }
    let stop = present(&message, "stop_reason").and_then(Value::as_str);
    let usage = present(&message, "usage")
        .map(Usage::from_anthropic)
        .unwrap_or_default();
    Ok(json!({
        "id": openai_completion_id(present(&message, "id").and_then(Value::as_str)),
        "object": "chat.completion",
        "created": now_unix(),
        "model": model_or(present(&message, "model"), requested_model),
        "choices": [{"index": 0, "message": reply, "logprobs": null, "finish_reason": finish_from_stop_reason(stop)}],
        "usage": usage.to_openai(),
    }))
}

fn model_or(upstream: Option<&Value>, requested: &str) -> String {
    upstream
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(requested)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ids_and_models_are_filled_in() {
        let out = openai_to_anthropic_response(br#"{"choices":[{"message":{"content":"hi"}}]}"#, "asked").unwrap();
        assert!(out["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(out["model"], "asked");
        assert_eq!(out["stop_reason"], "end_turn");
        assert_eq!(out["usage"]["input_tokens"], 0);
        let out = anthropic_to_openai_response(br#"{"content":[{"type":"text","text":"hi"}]}"#, "asked").unwrap();
        assert!(out["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(out["model"], "asked");
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn untranslatable_answers_name_the_field() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"choices":[]}"#, "choices"),
            (br#"{"object":"chat.completion"}"#, "choices"),
            (br#"{"error":{"message":"x"}}"#, "error"),
            (
                br#"{"choices":[{"message":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{"}}]}}]}"#,
                "choices[0].message.tool_calls[0].function.arguments",
            ),
            (b"nope", "body"),
        ];
        for (body, field) in cases {
            assert_eq!(openai_to_anthropic_response(body, "m").unwrap_err().field, field);
        }
        assert_eq!(
            anthropic_to_openai_response(br#"{"type":"error","error":{}}"#, "m")
                .unwrap_err()
                .field,
            "error"
        );
        assert_eq!(
            anthropic_to_openai_response(br#"{"content":5}"#, "m")
                .unwrap_err()
                .field,
            "content"
        );
    }

    #[test]
    fn refusals_become_text_with_refusal_stop() {
        let body =
            br#"{"choices":[{"message":{"content":null,"refusal":"I can't."},"finish_reason":"content_filter"}]}"#;
        let out = openai_to_anthropic_response(body, "m").unwrap();
        assert_eq!(out["content"], json!([{"type":"text","text":"I can't."}]));
        assert_eq!(out["stop_reason"], "refusal");
    }
}

//! A non-streamed job on the GPU worker. A client that asked for one JSON answer gets the
//! model server asked the same way: servers that ignore `stream_options.include_usage`
//! (llama-cpp-python) still put the exact `usage` in a whole `chat.completion`. The answer
//! goes to the router as one `chat.completion.chunk`, so the router folds it as it folds
//! any stream.

use crate::translate::fields::{edit_fields, Edit};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Whether the job asks for a stream: `stream: true` at the top level. Routers before this
/// change always sent `true`; an absent or `false` value means one whole answer.
pub fn wants_stream(request: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        stream: Option<Value>,
    }
    serde_json::from_str::<Peek>(request.get())
        .map(|p| !matches!(p.stream, Some(Value::Bool(false)) | None))
        .unwrap_or(true)
}

/// The job's request with `stream: false` and without `stream_options` (OpenAI and vLLM
/// refuse that field on a non-streamed request). Only the top level is touched.
pub fn without_streaming(request: &RawValue) -> Result<String, String> {
    let edits = [("stream", Edit::Set("false")), ("stream_options", Edit::Remove)];
    let body = edit_fields(request.get().as_bytes(), &edits)
        .map_err(|e| format!("the job's request is not a JSON object: {e}"))?;
    String::from_utf8(body).map_err(|e| e.to_string())
}

/// A whole `chat.completion` as the one chunk that says the same: each choice's `message`
/// becomes its `delta` (every field kept), tool calls get their `index`. Usage is left out:
/// it travels in the job's `done`, read by `ChunkProbe` from the same body.
pub fn completion_as_chunk(completion: &[u8]) -> Result<Box<RawValue>, String> {
    let value: Value =
        serde_json::from_slice(completion).map_err(|e| format!("the model server's answer is not JSON: {e}"))?;
    let Value::Object(mut completion) = value else {
        return Err("the model server's answer is not a JSON object".into());
    };
    if let Some(error) = completion.get("error").filter(|e| !e.is_null()) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_string);
        return Err(message);
    }
    let Some(Value::Array(choices)) = completion.remove("choices") else {
        return Err("the model server's answer has no choices".into());
    };
    let mut chunk = Map::new();
    for field in ["id", "created", "model", "system_fingerprint"] {
        if let Some(value) = completion.remove(field) {
            chunk.insert(field.into(), value);
        }
    }
    chunk.insert("object".into(), Value::from("chat.completion.chunk"));
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(i, choice)| as_delta_choice(i, choice))
        .collect();
    chunk.insert("choices".into(), Value::Array(choices));
    RawValue::from_string(Value::Object(chunk).to_string()).map_err(|e| e.to_string())
}

fn as_delta_choice(position: usize, choice: Value) -> Value {
    let Value::Object(mut choice) = choice else {
        return serde_json::json!({"index": position, "delta": {}, "finish_reason": null});
    };
    let mut delta = match choice.remove("message") {
        Some(Value::Object(message)) => message,
        _ => Map::new(),
    };
    if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
        for (i, call) in calls.iter_mut().enumerate() {
            if let Value::Object(call) = call {
                call.entry("index").or_insert(Value::from(i));
            }
        }
    }
    let mut out = Map::new();
    out.insert("index".into(), choice.remove("index").unwrap_or(Value::from(position)));
    out.insert("delta".into(), Value::Object(delta));
    for field in ["logprobs", "finish_reason"] {
        out.insert(field.into(), choice.remove(field).unwrap_or(Value::Null));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::chunks::Aggregator;
    use serde_json::json;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.into()).unwrap()
    }

    #[test]
    fn the_clients_stream_choice_is_read_from_the_top_level() {
        assert!(wants_stream(&raw(r#"{"stream":true}"#)));
        assert!(!wants_stream(&raw(r#"{"stream":false,"messages":[{"stream":true}]}"#)));
        assert!(!wants_stream(&raw(r#"{"model":"m"}"#)));
        // Anything odd keeps the old behaviour: stream.
        assert!(wants_stream(&raw(r#"{"stream":"yes"}"#)));
        assert!(wants_stream(&raw("[1]")));
    }

    #[test]
    fn a_whole_request_drops_stream_options_and_keeps_the_rest_byte_for_byte() {
        let body = without_streaming(&raw(
            r#"{"model":"q","stream":false,"stream_options":{"include_usage":true},"temperature":0.70,"messages":[]}"#,
        ))
        .unwrap();
        assert!(body.contains(r#""temperature":0.70"#), "{body}");
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["stream"], false);
        assert!(value.get("stream_options").is_none());
        assert!(without_streaming(&raw("[]")).is_err());
    }

    #[test]
    fn a_completion_folds_back_to_the_same_answer() {
        let completion = json!({"id": "chatcmpl-9", "object": "chat.completion", "created": 7, "model": "qwen",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "reasoning_content": "hm",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 28, "completion_tokens": 12, "total_tokens": 40}});
        let chunk = completion_as_chunk(completion.to_string().as_bytes()).unwrap();
        let value: Value = serde_json::from_str(chunk.get()).unwrap();
        assert_eq!(value["object"], "chat.completion.chunk");
        assert_eq!(value["choices"][0]["delta"]["reasoning_content"], "hm");
        assert_eq!(value["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert!(value.get("usage").is_none(), "usage travels in `done`");
        let mut folded = Aggregator::default();
        folded.push(&chunk).unwrap();
        let answer = folded.finish("qwen", Some(json!({"prompt_tokens": 28})));
        assert_eq!(answer["id"], "chatcmpl-9");
        assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        let text =
            json!({"choices": [{"message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]});
        let mut folded = Aggregator::default();
        folded
            .push(&completion_as_chunk(text.to_string().as_bytes()).unwrap())
            .unwrap();
        assert_eq!(folded.finish("m", None)["choices"][0]["message"]["content"], "Hello");
    }

    #[test]
    fn answers_that_are_not_completions_are_errors() {
        assert_eq!(
            completion_as_chunk(br#"{"error":{"message":"context too long"}}"#).unwrap_err(),
            "context too long"
        );
        assert!(completion_as_chunk(br#"{"object":"chat.completion"}"#).is_err());
        assert!(completion_as_chunk(b"<html>").is_err());
        assert!(completion_as_chunk(b"[]").is_err());
    }
}

//! Golden fixtures (`tests/fixtures/translate/*.json`) and an OpenAI→Anthropic→OpenAI round
//! trip. Each fixture names its `kind`, an `input` and either the `expected` output or the
//! `expected_error` field; several `cases` may share one kind. In expectations, `"<int>"`
//! matches any integer (timestamps) and `"<generated:PREFIX>"` any string with that prefix.

use super::*;
use crate::translate::sse::{SseEvent, SseParser};
use bytes::Bytes;
use serde_json::{json, Value};

macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../tests/fixtures/translate/", $name, ".json")))),*]
    };
}

const FIXTURES: &[(&str, &str)] = fixtures![
    "o2a_request_system_multi_turn",
    "o2a_request_images",
    "o2a_request_tools",
    "o2a_request_merge_and_named_choice",
    "o2a_request_tool_choice_variants",
    "o2a_request_errors",
    "a2o_request_claude_code",
    "a2o_request_claude_code_2_1",
    "a2o_request_tools_images",
    "a2o_request_tool_choice_variants",
    "a2o_request_errors",
    "o2a_response_text",
    "o2a_response_tool_calls",
    "o2a_response_stop_reasons",
    "a2o_response_text",
    "a2o_response_tool_use",
    "a2o_response_stop_reasons",
    "o2a_stream_text",
    "o2a_stream_tool_call_split",
    "o2a_stream_two_tool_calls",
    "o2a_stream_text_then_tool",
    "o2a_stream_error",
    "a2o_stream_text_usage_on",
    "a2o_stream_tool_usage_off",
    "a2o_stream_two_tools",
    "a2o_stream_error",
];

#[test]
fn every_fixture_file_is_in_the_table() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/translate");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_string()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn golden_fixtures() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, text) in FIXTURES {
        let fixture: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let cases = match fixture.get("cases") {
            Some(Value::Array(cases)) => cases.clone(),
            _ => vec![fixture.clone()],
        };
        for (i, case) in cases.iter().enumerate() {
            checked += 1;
            if let Err(why) = run_case(&fixture, case) {
                failures.push(format!("{name} case {i}: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn run_case(fixture: &Value, case: &Value) -> Result<(), String> {
    let input = &case["input"];
    let body = input.to_string();
    let model = fixture["requested_model"].as_str().unwrap_or("requested-model");
    let outcome = match fixture["kind"].as_str().unwrap_or_default() {
        "openai_to_anthropic_request" => {
            let default = fixture["default_max_tokens"].as_u64().unwrap_or(4096) as u32;
            openai_to_anthropic_request(body.as_bytes(), default)
        }
        "anthropic_to_openai_request" => anthropic_to_openai_request(body.as_bytes()),
        "openai_to_anthropic_response" => openai_to_anthropic_response(body.as_bytes(), model),
        "anthropic_to_openai_response" => anthropic_to_openai_response(body.as_bytes(), model),
        "openai_to_anthropic_stream" => run_openai_stream(input, model),
        "anthropic_to_openai_stream" => {
            let include_usage = fixture["include_usage"].as_bool().ok_or("include_usage missing")?;
            run_anthropic_stream(input, model, include_usage)
        }
        other => return Err(format!("unknown kind `{other}`")),
    };
    match (outcome, case.get("expected"), case.get("expected_error")) {
        (Ok(actual), Some(expected), _) => {
            matches(expected, &actual, "$").map_err(|why| format!("{why}\nactual: {actual:#}"))
        }
        (Err(e), _, Some(expected)) if expected["field"] == e.field.as_str() => Ok(()),
        (Err(e), _, Some(expected)) => Err(format!(
            "error on `{}` ({e}), expected on {}",
            e.field, expected["field"]
        )),
        (Ok(actual), None, _) => Err(format!("expected an error, got {actual:#}")),
        (Err(e), ..) => Err(format!("unexpected error: {e}")),
    }
}

/// Feeds the chunks as an SSE body cut into 7-byte pieces, like a network would.
fn sse_events(body: &str) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events: Vec<SseEvent> = body.as_bytes().chunks(7).flat_map(|piece| parser.push(piece)).collect();
    events.extend(parser.finish());
    events
}

fn run_openai_stream(input: &Value, model: &str) -> Result<Value, TranslateError> {
    let body: String = input
        .as_array()
        .unwrap()
        .iter()
        .map(|chunk| match chunk {
            Value::String(raw) => format!("data: {raw}\n\n"),
            other => format!("data: {other}\n\n"),
        })
        .collect();
    let mut stream = OpenAiToAnthropicStream::new(model);
    let mut out: Vec<Bytes> = sse_events(&body)
        .iter()
        .flat_map(|e| stream.push_chunk(&e.data))
        .collect();
    out.extend(stream.finish());
    assert!(stream.finish().is_empty(), "finish() must be idempotent");
    Ok(Value::Array(anthropic_events(&out)))
}

/// Parses emitted Anthropic events, checking each is complete and named after its type.
pub(super) fn anthropic_events(out: &[Bytes]) -> Vec<Value> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for bytes in out {
        let parsed = parser.push(bytes);
        assert_eq!(parsed.len(), 1, "each Bytes is one complete event: {bytes:?}");
        for event in parsed {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(event.event.as_deref(), data["type"].as_str(), "event name = data.type");
            events.push(data);
        }
    }
    events
}

fn run_anthropic_stream(input: &Value, model: &str, include_usage: bool) -> Result<Value, TranslateError> {
    let body: String = input
        .as_array()
        .unwrap()
        .iter()
        .map(|event| format!("event: {}\ndata: {event}\n\n", event["type"].as_str().unwrap()))
        .collect();
    let mut stream = AnthropicToOpenAiStream::new(model, include_usage);
    let mut out: Vec<Bytes> = sse_events(&body).iter().flat_map(|e| stream.push_event(e)).collect();
    out.extend(stream.finish());
    assert!(stream.finish().is_empty(), "finish() must be idempotent");
    Ok(Value::Array(openai_datas(&out)))
}

pub(super) fn openai_datas(out: &[Bytes]) -> Vec<Value> {
    out.iter()
        .map(|bytes| {
            let text = std::str::from_utf8(bytes).unwrap();
            let data = text
                .strip_prefix("data: ")
                .and_then(|t| t.strip_suffix("\n\n"))
                .unwrap_or_else(|| panic!("not one data event: {text:?}"));
            if data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

/// Structural comparison naming the first differing path. Numbers compare by value (1 =
/// 1.0) and tool-call `arguments` strings by the JSON they encode.
fn matches(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::String(e), _) if e == "<int>" => actual.as_i64().map(|_| ()).ok_or(format!("{path}: want an integer")),
        (Value::String(e), Value::String(a)) if e.starts_with("<generated:") => {
            let prefix = e.trim_start_matches("<generated:").trim_end_matches('>');
            (a.starts_with(prefix) && a.len() > prefix.len())
                .then_some(())
                .ok_or(format!("{path}: `{a}` is not a generated `{prefix}…`"))
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => Ok(()),
        (Value::Object(e), Value::Object(a)) => {
            let missing: Vec<_> = e.keys().filter(|k| !a.contains_key(*k)).collect();
            let extra: Vec<_> = a.keys().filter(|k| !e.contains_key(*k)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                return Err(format!("{path}: missing keys {missing:?}, unexpected keys {extra:?}"));
            }
            for (key, e_value) in e {
                let a_value = &a[key];
                if key == "arguments" {
                    if let (Some(e_json), Some(a_json)) = (parse_str(e_value), parse_str(a_value)) {
                        if e_json == a_json {
                            continue;
                        }
                    }
                }
                matches(e_value, a_value, &format!("{path}.{key}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{path}: {} items, want {}", a.len(), e.len()));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .try_for_each(|(i, (e, a))| matches(e, a, &format!("{path}[{i}]")))
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{path}: got {actual}, want {expected}")),
    }
}

fn parse_str(value: &Value) -> Option<Value> {
    value.as_str().and_then(|s| serde_json::from_str(s).ok())
}

/// What an OpenAI request means, independent of how it is spelled: content as a list of
/// parts, tool arguments parsed, stream_options ignored.
pub(super) fn openai_meaning(request: &Value) -> Value {
    let mut request = request.clone();
    if let Some(map) = request.as_object_mut() {
        map.remove("stream_options");
    }
    if let Some(messages) = request["messages"].as_array_mut() {
        for message in messages {
            let content = match &message["content"] {
                Value::String(s) if s.is_empty() => json!([]),
                Value::String(s) => json!([{"type": "text", "text": s}]),
                Value::Null => json!([]),
                other => other.clone(),
            };
            message["content"] = content;
            if let Some(calls) = message["tool_calls"].as_array_mut() {
                for call in calls {
                    let parsed = parse_str(&call["function"]["arguments"]).unwrap_or(json!({}));
                    call["function"]["arguments"] = parsed;
                }
            }
        }
    }
    request
}

#[test]
fn openai_to_anthropic_to_openai_keeps_the_meaning() {
    let original = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be helpful."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and what's the weather there?"},
                {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
            ]},
            {"role": "assistant", "content": "It's Oslo; checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "cold"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
            {"role": "user", "content": "Thanks. Dress advice?"},
            {"role": "assistant", "content": "Wear a coat."},
        ],
        "max_tokens": 256,
        "temperature": 0.3,
        "top_p": 0.95,
        "stop": ["END"],
        "stream": true,
        "user": "u-1",
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {}}}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": false,
    });
    let anthropic = openai_to_anthropic_request(original.to_string().as_bytes(), 1000).unwrap();
    let back = anthropic_to_openai_request(anthropic.to_string().as_bytes()).unwrap();
    assert_eq!(openai_meaning(&back), openai_meaning(&original), "via {anthropic:#}");
}

#[test]
fn anthropic_responses_survive_a_round_trip_through_openai() {
    let original = json!({
        "id": "msg_rt", "type": "message", "role": "assistant", "model": "claude",
        "content": [
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2, {"b": null}]}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 7, "output_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3},
    });
    let openai = anthropic_to_openai_response(original.to_string().as_bytes(), "x").unwrap();
    let back = openai_to_anthropic_response(openai.to_string().as_bytes(), "x").unwrap();
    assert_eq!(back, original);
}

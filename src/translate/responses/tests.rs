//! Golden cases: a Codex-shaped request, whole answers, and a streamed text-then-tool turn.

use super::*;
use serde_json::{json, Value};

fn translate(body: Value) -> (Value, ResponseContext) {
    responses_to_chat_request(body.to_string().as_bytes()).unwrap()
}

#[test]
fn a_codex_request_becomes_a_chat_request() {
    let (chat, context) = translate(json!({
        "model": "gpt-5-codex", "instructions": "Be Codex.", "stream": true, "store": false,
        "max_output_tokens": 100, "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}},
        "tools": [
            {"type": "function", "name": "shell", "parameters": {"type": "object"}, "strict": false},
            {"type": "custom", "name": "apply_patch", "description": "Patch.", "format": {"type": "grammar", "definition": "start: x"}},
            {"type": "web_search"}
        ],
        "tool_choice": {"type": "custom", "name": "apply_patch"},
        "input": [
            {"role": "user", "content": "hi"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Looking."}]},
            {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "PATCH"},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "ok"}]},
            {"type": "custom_tool_call_output", "call_id": "c2", "output": "applied"},
            {"type": "web_search_call", "id": "ws", "status": "completed"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": "data:image/png;base64,QQ==", "detail": "low"}]}
        ]
    }));
    assert_eq!(
        chat,
        json!({
            "model": "gpt-5-codex", "stream": true, "stream_options": {"include_usage": true},
            "max_tokens": 100, "reasoning_effort": "low",
            "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}},
            "tool_choice": {"type": "function", "function": {"name": "apply_patch"}},
            "tools": [
                {"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}, "strict": false}},
                {"type": "function", "function": {"name": "apply_patch",
                    "description": "Patch.\n\nThe input must follow this grammar:\nstart: x",
                    "parameters": {"type": "object", "properties": {"input": {"type": "string", "description": "The raw freeform input for this tool."}},
                        "required": ["input"], "additionalProperties": false}}}
            ],
            "messages": [
                {"role": "system", "content": "Be Codex."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Looking.", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"PATCH\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                {"role": "tool", "tool_call_id": "c2", "content": "applied"},
                {"role": "user", "content": [{"type": "text", "text": "see"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ==", "detail": "low"}}]}
            ]
        })
    );
    assert!(context.custom_tools.contains("apply_patch"));
    assert_eq!(context.echo["instructions"], "Be Codex.");
}

#[test]
fn refusals_name_the_field() {
    let cases = [
        (
            json!({"model": "m", "input": "x", "previous_response_id": "r"}),
            "previous_response_id",
        ),
        (json!({"input": "x"}), "model"),
        (json!({"model": "m"}), "input"),
        (
            json!({"model": "m", "input": [{"type": "message", "role": "tool", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
            "input[0].call_id",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}),
            "tools[0].name",
        ),
        (
            json!({"model": "m", "input": "x", "max_output_tokens": -1}),
            "max_output_tokens",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}),
            "text.format.type",
        ),
    ];
    for (body, field) in cases {
        let e = responses_to_chat_request(body.to_string().as_bytes()).expect_err(&body.to_string());
        assert_eq!(e.field, field, "{body}: {e}");
    }
}

#[test]
fn a_whole_answer_becomes_a_response_with_items_and_usage() {
    let (_, context) =
        translate(json!({"model": "m", "input": "x", "tools": [{"type": "custom", "name": "apply_patch"}]}));
    let completion = json!({"id": "c", "object": "chat.completion", "created": 7, "model": "m", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "Patching.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]},
        "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}}});
    let response = chat_to_response(completion.to_string().as_bytes(), &context).unwrap();
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["created_at"], 7);
    assert_eq!(response["output"][0]["content"][0]["text"], "Patching.");
    assert_eq!(response["output"][1]["type"], "custom_tool_call");
    assert_eq!(response["output"][1]["input"], "*** Begin");
    assert_eq!(response["output"][1]["call_id"], "call_1");
    assert_eq!(response["output"][2]["type"], "function_call");
    assert_eq!(response["output"][2]["arguments"], "{}");
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 4,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 14})
    );
    assert_eq!(response["tools"], json!([{"type": "custom", "name": "apply_patch"}]));
    let cut = json!({"choices": [{"message": {"content": "par"}, "finish_reason": "length"}]});
    let response = chat_to_response(cut.to_string().as_bytes(), &context).unwrap();
    assert_eq!(response["status"], "incomplete");
    assert_eq!(response["incomplete_details"]["reason"], "max_output_tokens");
}

/// Each Responses event as its name and its data.
pub(super) fn names_and_data(events: &[bytes::Bytes]) -> Vec<(String, Value)> {
    events
        .iter()
        .map(|e| {
            let text = std::str::from_utf8(e).unwrap();
            let name = text
                .lines()
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_string();
            let data = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[test]
fn a_streamed_text_then_tool_turn_has_the_real_event_sequence() {
    let context = ResponseContext {
        model: "m".into(),
        ..ResponseContext::default()
    };
    let mut stream = ChatToResponsesStream::new(context);
    let chunks = [
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": " there"}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "shell", "arguments": "{\"a\""}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}),
    ];
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(stream.push_chunk(&chunk.to_string()));
    }
    events.extend(stream.finish());
    let events = names_and_data(&events);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[6].1["text"], "Hi there");
    assert_eq!(events[9].1["output_index"], 1);
    assert_eq!(events[9].1["item"]["call_id"], "call_9");
    assert_eq!(events[12].1["arguments"], "{\"a\":1}");
    let response = &events[14].1["response"];
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"][0]["content"][0]["text"], "Hi there");
    assert_eq!(response["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(response["usage"]["total_tokens"], 8);
    assert_eq!(events[0].1["response"]["status"], "in_progress");
}

#[test]
fn a_broken_stream_ends_with_error_and_response_failed() {
    let mut stream = ChatToResponsesStream::new(ResponseContext::default());
    let mut events = stream.push_chunk(&json!({"choices": [{"index": 0, "delta": {"content": "x"}}]}).to_string());
    events.extend(stream.push_chunk(&json!({"error": {"message": "worker died"}}).to_string()));
    events.extend(stream.finish());
    let events = names_and_data(&events);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[names.len() - 2..], ["error", "response.failed"]);
    assert_eq!(events.last().unwrap().1["response"]["error"]["message"], "worker died");
}

//! Golden and property tests of the direct Responses ⇄ Anthropic Messages translation.

use super::*;
use crate::translate::sse::SseEvent;
use proptest::prelude::*;
use serde_json::{json, Value};

fn translate(body: Value) -> Value {
    responses_to_messages_request(body.to_string().as_bytes()).unwrap().0
}

fn thinking_block() -> Value {
    json!({"type": "thinking", "thinking": "Let me think.", "signature": "sig/+=="})
}

#[test]
fn a_codex_turn_becomes_a_messages_request() {
    let reasoning = reasoning_payload::encode(&thinking_block());
    let body = json!({
        "model": "claude-sonnet-4-5", "stream": true, "store": false,
        "instructions": "You are Codex.",
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low", "summary": "auto"},
        "parallel_tool_calls": false, "tool_choice": "auto",
        "tools": [
            {"type": "function", "name": "shell", "description": "Runs a command",
             "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}},
            {"type": "custom", "name": "apply_patch", "description": "Applies a patch",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
            {"type": "web_search"}
        ],
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: read-only"}]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "fix it"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Let me think."}], "encrypted_content": reasoning},
            {"type": "function_call", "call_id": "toolu_a", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
            {"type": "function_call_output", "call_id": "toolu_a", "output": "a.txt"},
            {"type": "custom_tool_call", "call_id": "toolu_b", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "toolu_b", "output": "Done"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"}
        ]
    });
    let expected = json!({
        "model": "claude-sonnet-4-5",
        "system": "You are Codex.\n\nSandbox: read-only",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "fix it"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": [
                thinking_block(),
                {"type": "tool_use", "id": "toolu_a", "name": "shell", "input": {"command": ["ls"]}}
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_a", "content": "a.txt"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_b", "name": "apply_patch", "input": {"input": "*** Begin Patch"}}
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_b", "content": "Done"}]}
        ],
        "tools": [
            {"name": "shell", "description": "Runs a command",
             "input_schema": {"type": "object", "properties": {"command": {"type": "array"}}}},
            {"name": "apply_patch",
             "description": "Applies a patch\n\nThe input must follow this grammar:\nstart: /.+/",
             "input_schema": {"type": "object",
                "properties": {"input": {"type": "string", "description": "The raw freeform input for this tool."}},
                "required": ["input"]}}
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        // `low` effort, but the last tool-calling turn has no thinking of its own: Anthropic
        // would refuse thinking on, so it is off.
        "max_tokens": DEFAULT_ANSWER_TOKENS,
        "stream": true
    });
    assert_eq!(translate(body), expected);
}

#[test]
fn effort_maps_to_a_thinking_budget_that_fits_under_max_tokens() {
    /// effort, max_output_tokens → max_tokens, thinking budget
    type Case = (Option<&'static str>, Option<u64>, u64, Option<u64>);
    let cases: [Case; 9] = [
        (None, None, DEFAULT_ANSWER_TOKENS, None),
        (Some("minimal"), None, DEFAULT_ANSWER_TOKENS, None),
        (Some("none"), Some(500), 500, None),
        (Some("low"), None, 2048 + DEFAULT_ANSWER_TOKENS, Some(2048)),
        (Some("medium"), None, 8192 + DEFAULT_ANSWER_TOKENS, Some(8192)),
        (Some("high"), None, 24576 + DEFAULT_ANSWER_TOKENS, Some(24576)),
        (Some("high"), Some(40000), 40000, Some(24576)),
        // The budget gives way to a smaller max_output_tokens, down to Anthropic's minimum…
        (Some("high"), Some(5000), 5000, Some(4999)),
        // …and below it thinking is off.
        (Some("medium"), Some(1024), 1024, None),
    ];
    for (effort, max, max_tokens, budget) in cases {
        let mut body = json!({"model": "c", "input": "hi", "temperature": 0.2});
        if let Some(effort) = effort {
            body["reasoning"] = json!({"effort": effort});
        }
        if let Some(max) = max {
            body["max_output_tokens"] = json!(max);
        }
        let out = translate(body);
        assert_eq!(out["max_tokens"], max_tokens, "{effort:?} {max:?}");
        match budget {
            Some(b) => {
                assert_eq!(out["thinking"], json!({"type": "enabled", "budget_tokens": b}));
                assert!(out.get("temperature").is_none(), "thinking takes no temperature");
            }
            None => {
                assert!(out.get("thinking").is_none(), "{effort:?} {max:?}: {out}");
                assert_eq!(out["temperature"], 0.2);
            }
        }
    }
    let forced = translate(json!({"model": "c", "input": "hi", "reasoning": {"effort": "high"},
        "tools": [{"type": "function", "name": "f"}], "tool_choice": "required"}));
    assert!(forced.get("thinking").is_none(), "a forced tool turns thinking off");
    assert_eq!(forced["tool_choice"], json!({"type": "any"}));
}

#[test]
fn reasoning_items_carry_thinking_blocks_across_turns_and_foreign_ones_are_dropped() {
    let redacted = json!({"type": "redacted_thinking", "data": "EmwKAhgB…"});
    let body = json!({"model": "c", "reasoning": {"effort": "medium"}, "input": [
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs_a", "summary": [], "encrypted_content": "gAAAA-from-openai"},
        {"type": "reasoning", "id": "rs_b", "summary": [], "encrypted_content": reasoning_payload::encode(&redacted)},
        {"type": "reasoning", "id": "rs_c", "summary": [{"type": "summary_text", "text": "edited by the client"}],
         "encrypted_content": reasoning_payload::encode(&thinking_block())},
        {"type": "function_call", "call_id": "t1", "name": "f", "arguments": "not json"},
        {"type": "function_call_output", "call_id": "t1", "output": [{"type": "input_text", "text": "ok"}]}
    ]});
    let out = translate(body);
    assert_eq!(
        out["messages"][1]["content"],
        json!([redacted, thinking_block(), {"type": "tool_use", "id": "t1", "name": "f", "input": {"arguments": "not json"}}])
    );
    assert_eq!(
        out["messages"][2]["content"][0]["content"],
        json!([{"type": "text", "text": "ok"}])
    );
    assert_eq!(
        out["thinking"]["budget_tokens"], 8192,
        "the turn thinks: thinking stays on"
    );
    assert_eq!(reasoning_payload::decode("gAAAA-from-openai"), None);
    assert_eq!(reasoning_payload::decode("auxot.anthropic.v1.!!"), None);
}

#[test]
fn formats_files_and_refusals() {
    let out = translate(json!({"model": "c", "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.invalid/a.png"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0="}
        ]}],
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "user": "u1"}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "image", "source": {"type": "url", "url": "https://example.invalid/a.png"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
        ])
    );
    assert!(
        out["system"].as_str().unwrap().contains("{\"type\":\"object\"}"),
        "{out}"
    );
    assert_eq!(out["metadata"], json!({"user_id": "u1"}));
    let refused = [
        (json!({"model": "c", "input": [{"type": "hologram"}]}), "input[0].type"),
        (json!({"model": "c", "input": []}), "input"),
        (
            json!({"model": "c", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
            "input[0].content[0].image_url",
        ),
        (
            json!({"model": "c", "input": "x", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
        (
            json!({"model": "c", "input": "x", "text": {"format": {"type": "yaml"}}}),
            "text.format.type",
        ),
        (json!({"input": "x"}), "model"),
    ];
    for (body, field) in refused {
        let e = responses_to_messages_request(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field, field, "{body}: {e}");
    }
}

fn context() -> ResponseContext {
    let mut context = ResponseContext {
        model: "claude-x".into(),
        ..ResponseContext::default()
    };
    context.custom_tools.insert("apply_patch".into());
    context
}

#[test]
fn a_whole_message_becomes_a_response_with_reasoning_calls_and_usage() {
    let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            thinking_block(),
            {"type": "text", "text": "On it."},
            {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {"command": ["ls"]}},
            {"type": "tool_use", "id": "toolu_2", "name": "apply_patch", "input": {"input": "*** Begin Patch"}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}});
    let response = messages_to_response(message.to_string().as_bytes(), &context()).unwrap();
    let output = response["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(
        output[0]["summary"],
        json!([{"type": "summary_text", "text": "Let me think."}])
    );
    assert_eq!(
        reasoning_payload::decode(output[0]["encrypted_content"].as_str().unwrap()),
        Some(thinking_block())
    );
    assert_eq!(output[1]["content"][0]["text"], "On it.");
    assert_eq!(output[2]["type"], "function_call");
    assert_eq!(output[2]["call_id"], "toolu_1");
    assert_eq!(output[2]["arguments"], "{\"command\":[\"ls\"]}");
    assert_eq!(output[3]["type"], "custom_tool_call");
    assert_eq!(output[3]["input"], "*** Begin Patch");
    assert_eq!(response["status"], "completed");
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 115, "input_tokens_details": {"cached_tokens": 100}, "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 135})
    );
    let cut = json!({"content": [{"type": "text", "text": "par"}], "stop_reason": "max_tokens"});
    let response = messages_to_response(cut.to_string().as_bytes(), &context()).unwrap();
    assert_eq!(response["status"], "incomplete");
    assert_eq!(response["incomplete_details"]["reason"], "max_output_tokens");
}

fn sse(data: Value) -> SseEvent {
    SseEvent {
        event: data["type"].as_str().map(str::to_string),
        data: data.to_string(),
    }
}

fn run(events: &[Value]) -> Vec<(String, Value)> {
    let mut stream = MessagesToResponsesStream::new(context());
    let mut out = Vec::new();
    for event in events {
        out.extend(stream.push_event(&sse(event.clone())));
    }
    out.extend(stream.finish());
    super::tests::names_and_data(&out)
}

#[test]
fn a_streamed_thinking_text_and_tool_turn_has_the_real_event_sequence() {
    let events = [
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "think."}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig/+=="}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "On it."}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"command\":"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "[\"ls\"]}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "apply_patch", "input": {}}}),
        json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{\"input\":\"*** Begin"}}),
        json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": " Patch\"}"}}),
        json!({"type": "content_block_stop", "index": 3}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}}),
        json!({"type": "message_stop"}),
    ];
    let out = run(&events);
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.custom_tool_call_input.delta",
            "response.custom_tool_call_input.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (_, data)) in out.iter().enumerate() {
        assert_eq!(data["sequence_number"], i);
    }
    let reasoning = &out[8].1["item"];
    assert_eq!(reasoning["summary"][0]["text"], "Let me think.");
    assert_eq!(
        reasoning_payload::decode(reasoning["encrypted_content"].as_str().unwrap()),
        Some(thinking_block())
    );
    assert_eq!(out[22].1["input"], "*** Begin Patch");
    let completed = &out.last().unwrap().1["response"];
    let kinds: Vec<&str> = completed["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["reasoning", "message", "function_call", "custom_tool_call"]);
    assert_eq!(completed["usage"]["input_tokens"], 10);
    assert_eq!(completed["usage"]["input_tokens_details"]["cached_tokens"], 3);
    assert_eq!(completed["usage"]["output_tokens"], 30);
}

#[test]
fn an_error_event_ends_the_stream_with_error_and_response_failed() {
    let out = run(&[
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 7}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]);
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[names.len() - 2..], ["error", "response.failed"]);
    assert_eq!(out.last().unwrap().1["response"]["error"]["message"], "Overloaded");
}

fn anthropic_event() -> impl Strategy<Value = Value> {
    let index = 0u64..3;
    prop_oneof![
        Just(json!({"type": "message_start", "message": {"usage": {"input_tokens": 3}}})),
        (
            index.clone(),
            prop::sample::select(vec![
                "text",
                "thinking",
                "redacted_thinking",
                "tool_use",
                "server_tool_use"
            ])
        )
            .prop_map(|(i, kind)| json!({"type": "content_block_start", "index": i,
                "content_block": {"type": kind, "name": "apply_patch", "id": "t", "input": {}}})),
        (
            index.clone(),
            prop::sample::select(vec![
                "text_delta",
                "thinking_delta",
                "signature_delta",
                "input_json_delta"
            ]),
            "[a-z{}\":]{0,6}"
        )
            .prop_map(|(i, kind, text)| json!({"type": "content_block_delta", "index": i,
                "delta": {"type": kind, "text": text, "thinking": text, "signature": text, "partial_json": text}})),
        index.prop_map(|i| json!({"type": "content_block_stop", "index": i})),
        prop::sample::select(vec!["end_turn", "max_tokens", "tool_use"])
            .prop_map(|r| json!({"type": "message_delta", "delta": {"stop_reason": r}, "usage": {"output_tokens": 2}})),
        Just(json!({"type": "ping"})),
        Just(json!({"type": "message_stop"})),
        Just(json!({"type": "error", "error": {"message": "boom"}})),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_messages_translation(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = responses_to_messages_request(&bytes);
        let _ = messages_to_response(&bytes, &ResponseContext::default());
        let _ = reasoning_payload::decode(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn any_translated_request_alternates_roles_and_fits_its_budget(
        items in prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 3, 4, 5]), 1..10),
        effort in prop::sample::select(vec!["none", "minimal", "low", "medium", "high", "xhigh"]),
        max in prop::option::of(1u64..50_000),
    ) {
        let signed = reasoning_payload::encode(&json!({"type": "thinking", "thinking": "t", "signature": "s"}));
        let input: Vec<Value> = items.iter().enumerate().map(|(i, kind)| match kind {
            0 => json!({"role": "user", "content": "hi"}),
            1 => json!({"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}),
            2 => json!({"type": "function_call", "call_id": format!("c{i}"), "name": "f", "arguments": "{}"}),
            3 => json!({"type": "function_call_output", "call_id": format!("c{i}"), "output": "r"}),
            4 => json!({"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": signed}),
            _ => json!({"role": "developer", "content": "rules"}),
        }).collect();
        let mut body = json!({"model": "c", "input": input, "reasoning": {"effort": effort}});
        if let Some(max) = max {
            body["max_output_tokens"] = json!(max);
        }
        match responses_to_messages_request(body.to_string().as_bytes()) {
            Ok((out, _)) => {
                let messages = out["messages"].as_array().unwrap();
                prop_assert!(!messages.is_empty());
                for pair in messages.windows(2) {
                    prop_assert_ne!(&pair[0]["role"], &pair[1]["role"]);
                }
                let max_tokens = out["max_tokens"].as_u64().unwrap();
                if let Some(max) = max {
                    prop_assert_eq!(max_tokens, max);
                }
                if let Some(budget) = out["thinking"]["budget_tokens"].as_u64() {
                    prop_assert!(budget >= 1024 && budget < max_tokens);
                }
            }
            Err(e) => prop_assert_eq!(e.field, "input"),
        }
    }

    #[test]
    fn any_anthropic_event_sequence_makes_a_well_formed_event_sequence(
        events in prop::collection::vec(anthropic_event(), 0..14),
    ) {
        let out = run(&events);
        for (i, (name, data)) in out.iter().enumerate() {
            prop_assert_eq!(&data["sequence_number"], &json!(i));
            prop_assert_eq!(&data["type"], &json!(name));
        }
        let terminal: Vec<&str> = out
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| matches!(*n, "response.completed" | "response.incomplete" | "response.failed"))
            .collect();
        prop_assert_eq!(terminal.len(), 1);
        prop_assert_eq!(out.last().unwrap().0.as_str(), terminal[0]);
        let added = out.iter().filter(|(n, _)| n == "response.output_item.added").count();
        let done = out.iter().filter(|(n, _)| n == "response.output_item.done").count();
        if terminal[0] != "response.failed" {
            prop_assert_eq!(added, done);
        }
    }

    #[test]
    fn thinking_payloads_round_trip(thinking in ".{0,40}", signature in ".{0,40}") {
        let block = json!({"type": "thinking", "thinking": thinking, "signature": signature});
        prop_assert_eq!(reasoning_payload::decode(&reasoning_payload::encode(&block)), Some(block));
    }
}

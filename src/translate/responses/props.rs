//! Property tests: arbitrary bytes and arbitrary Responses-shaped JSON never panic the
//! request translation; any chat chunk sequence yields a well-formed event sequence
//! (numbered from 0, one terminal event, every added item done).

use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn vocabulary_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "message",
            "function_call",
            "function_call_output",
            "custom_tool_call",
            "custom_tool_call_output",
            "reasoning",
            "user",
            "assistant",
            "developer",
            "system",
            "input_text",
            "output_text",
            "input_image",
            "function",
            "custom",
            "auto",
            "required",
            "json_schema",
            "web_search",
            "x",
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "type",
                    "role",
                    "content",
                    "text",
                    "input",
                    "call_id",
                    "name",
                    "arguments",
                    "output",
                    "tools",
                    "tool_choice",
                    "parameters",
                    "model",
                    "instructions",
                    "stream",
                    "image_url",
                    "format",
                    "max_output_tokens",
                    "reasoning",
                    "effort",
                ])
                .prop_map(str::to_string),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn chunk() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,6}".prop_map(|t| json!({"choices": [{"index": 0, "delta": {"content": t}}]}).to_string()),
        (0u64..3, prop::option::of("[a-z_]{1,6}"), "[{}\":a-z]{0,6}").prop_map(|(i, name, args)| {
            let mut function = json!({"arguments": args});
            if let Some(name) = name {
                function["name"] = json!(name);
            }
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "id": format!("c{i}"), "function": function}]}}]})
                .to_string()
        }),
        prop::sample::select(vec!["stop", "length", "tool_calls"])
            .prop_map(|f| json!({"choices": [{"index": 0, "delta": {}, "finish_reason": f}]}).to_string()),
        Just(json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).to_string()),
        Just(json!({"error": {"message": "boom"}}).to_string()),
        "[a-z{}]{0,8}",
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = responses_to_chat_request(&bytes);
        let _ = chat_to_response(&bytes, &ResponseContext::default());
    }

    #[test]
    fn arbitrary_responses_shaped_json_never_panics(mut value in vocabulary_value(), model in "[a-z]{1,5}") {
        if let Some(map) = value.as_object_mut() {
            map.insert("model".into(), json!(model));
        }
        let _ = responses_to_chat_request(value.to_string().as_bytes());
    }

    #[test]
    fn any_chunk_sequence_makes_a_well_formed_event_sequence(
        chunks in prop::collection::vec(chunk(), 0..12),
        custom in any::<bool>(),
    ) {
        let mut context = ResponseContext { model: "m".into(), ..ResponseContext::default() };
        if custom {
            context.custom_tools.insert("a".into());
        }
        let mut stream = ChatToResponsesStream::new(context);
        let mut events = Vec::new();
        for chunk in &chunks {
            events.extend(stream.push_chunk(chunk));
        }
        events.extend(stream.finish());
        events.extend(stream.finish());
        let parsed: Vec<Value> = events
            .iter()
            .map(|e| {
                let text = std::str::from_utf8(e).unwrap();
                let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                serde_json::from_str(data).unwrap()
            })
            .collect();
        for (i, event) in parsed.iter().enumerate() {
            prop_assert_eq!(&event["sequence_number"], &json!(i));
        }
        let terminal: Vec<&Value> = parsed
            .iter()
            .filter(|e| matches!(e["type"].as_str(), Some("response.completed" | "response.incomplete" | "response.failed")))
            .collect();
        prop_assert_eq!(terminal.len(), 1);
        prop_assert_eq!(&parsed.last().unwrap()["type"], &terminal[0]["type"]);
        let added = parsed.iter().filter(|e| e["type"] == "response.output_item.added").count();
        let done = parsed.iter().filter(|e| e["type"] == "response.output_item.done").count();
        if terminal[0]["type"] != "response.failed" {
            prop_assert_eq!(added, done);
        }
    }
}

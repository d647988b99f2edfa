//! Property tests: generated valid requests of either dialect translate (and an OpenAI one
//! keeps its meaning through Anthropic and back); arbitrary bytes, arbitrary JSON built
//! from the dialects' own vocabulary, and arbitrary event sequences never panic.

use super::tests::openai_meaning;
use super::*;
use crate::translate::sse::{SseEvent, SseParser};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,!?é漢]{1,16}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_]{1,10}"
}

fn image_url() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::sample::select(vec!["image/png", "image/jpeg", "image/gif", "image/webp"]),
            "[A-Za-z0-9+/]{4,12}"
        )
            .prop_map(|(mt, data)| format!("data:{mt};base64,{data}")),
        "[a-z]{1,8}".prop_map(|host| format!("https://{host}.example/p.png")),
    ]
}

fn arguments() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        name(),
        prop_oneof![
            any::<i32>().prop_map(|n| json!(n)),
            text().prop_map(|t| json!(t)),
            any::<bool>().prop_map(|b| json!(b))
        ],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn openai_user_content() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|t| json!(t)),
        prop::collection::vec(
            prop_oneof![
                text().prop_map(|t| json!({"type": "text", "text": t})),
                image_url().prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
            ],
            1..4,
        )
        .prop_map(Value::Array),
    ]
}

/// One exchange: a user message, maybe an assistant answer with tool calls and their
/// results. Built so Anthropic's merging has nothing to merge that it cannot split again.
/// A tool call as (name, arguments, what the tool answered).
type Call = (String, Value, String);
/// An assistant answer: maybe text, and tool calls.
type Answer = (Option<String>, Vec<Call>);

fn exchange() -> impl Strategy<Value = (Value, Option<Answer>)> {
    (
        openai_user_content(),
        prop::option::of((
            prop::option::of(text()),
            prop::collection::vec((name(), arguments(), text()), 0..3),
        )),
    )
}

prop_compose! {
    fn openai_request()(
        system in prop::option::of(text()),
        exchanges in prop::collection::vec(exchange(), 1..4),
        tools in prop::collection::btree_set(name(), 0..3),
        choice in 0..5usize,
        parallel_off in any::<bool>(),
        max_tokens in 1..100_000u32,
        temperature in prop::option::of(0..=10u32),
        stop in prop::option::of(prop::collection::vec(text(), 1..3)),
        stream in prop::option::of(any::<bool>()),
        user in prop::option::of(text()),
    ) -> Value {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(json!({"role": "system", "content": system}));
        }
        for (i, (user_content, answer)) in exchanges.into_iter().enumerate() {
            messages.push(json!({"role": "user", "content": user_content}));
            let Some((said, calls)) = answer else { break };
            // An assistant turn that says nothing disappears, so say something.
            let said = if said.is_none() && calls.is_empty() { Some("ok".to_string()) } else { said };
            let mut assistant = json!({"role": "assistant", "content": said});
            if !calls.is_empty() {
                assistant["tool_calls"] = calls.iter().enumerate().map(|(k, (name, args, _))| {
                    json!({"id": format!("call_{i}_{k}"), "type": "function", "function": {"name": name, "arguments": args.to_string()}})
                }).collect();
            }
            messages.push(assistant);
            for (k, (_, _, result)) in calls.iter().enumerate() {
                messages.push(json!({"role": "tool", "tool_call_id": format!("call_{i}_{k}"), "content": result}));
            }
        }
        let mut request = json!({"model": "gpt-test", "messages": messages, "max_tokens": max_tokens});
        if let Some(t) = temperature {
            request["temperature"] = json!(f64::from(t) / 10.0);
        }
        if let Some(stop) = stop {
            request["stop"] = json!(stop);
        }
        if let Some(stream) = stream {
            request["stream"] = json!(stream);
        }
        if let Some(user) = user {
            request["user"] = json!(user);
        }
        if let Some(first) = tools.iter().next() {
            request["tools"] = tools.iter().map(|t| json!({"type": "function", "function": {"name": t, "parameters": {"type": "object", "properties": {}}}})).collect();
            let choice = [json!("auto"), json!("none"), json!("required"), json!({"type": "function", "function": {"name": first}}), Value::Null][choice].clone();
            // `none` cannot carry Anthropic's parallelism flag, so that pair cannot round-trip.
            if parallel_off && choice != json!("none") {
                request["parallel_tool_calls"] = json!(false);
            }
            if !choice.is_null() {
                request["tool_choice"] = choice;
            }
        }
        request
    }
}

/// The defaults a round trip spells out: `tool_choice: auto` with tools.
fn openai_meaning_with_defaults(request: &Value) -> Value {
    let mut meaning = openai_meaning(request);
    if meaning["tool_choice"] == json!("auto") {
        if let Some(map) = meaning.as_object_mut() {
            map.remove("tool_choice");
        }
    }
    meaning
}

fn anthropic_block(role: &'static str) -> BoxedStrategy<Value> {
    let cache = prop::option::of(Just(json!({"type": "ephemeral"})));
    let text_block = (text(), cache).prop_map(|(t, c)| {
        let mut b = json!({"type": "text", "text": t});
        if let Some(c) = c {
            b["cache_control"] = c;
        }
        b
    });
    if role == "assistant" {
        prop_oneof![
            text_block,
            (name(), arguments(), "[a-zA-Z0-9_]{1,12}")
                .prop_map(|(n, a, id)| json!({"type": "tool_use", "id": format!("toolu_{id}"), "name": n, "input": a})),
            text().prop_map(|t| json!({"type": "thinking", "thinking": t, "signature": "sig"})),
        ]
        .boxed()
    } else {
        let source = image_url()
            .prop_map(|u| match u.strip_prefix("data:") {
                Some(rest) => {
                    let (mt, data) = rest.split_once(";base64,").unwrap();
                    json!({"type": "base64", "media_type": mt, "data": data})
                }
                None => json!({"type": "url", "url": u}),
            })
            .boxed();
        let result_content = prop_oneof![
            text().prop_map(|t| json!(t)),
            prop::collection::vec(text().prop_map(|t| json!({"type": "text", "text": t})), 0..3).prop_map(Value::Array),
            source.clone().prop_map(|s| json!([{"type": "image", "source": s}])),
        ];
        prop_oneof![
            text_block,
            source.prop_map(|s| json!({"type": "image", "source": s})),
            ("[a-zA-Z0-9_]{1,12}", result_content, prop::option::of(any::<bool>())).prop_map(
                |(id, content, is_error)| {
                    let mut b =
                        json!({"type": "tool_result", "tool_use_id": format!("toolu_{id}"), "content": content});
                    if let Some(is_error) = is_error {
                        b["is_error"] = json!(is_error);
                    }
                    b
                }
            ),
        ]
        .boxed()
    }
}

fn anthropic_content(role: &'static str) -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|t| json!(t)),
        prop::collection::vec(anthropic_block(role), 1..4).prop_map(Value::Array)
    ]
}

prop_compose! {
    fn anthropic_request()(
        system in prop::option::of(prop_oneof![
            text().prop_map(|t| json!(t)),
            prop::collection::vec(text().prop_map(|t| json!({"type": "text", "text": t, "cache_control": {"type": "ephemeral"}})), 1..3).prop_map(Value::Array),
        ]),
        pairs in prop::collection::vec((anthropic_content("user"), anthropic_content("assistant")), 1..4),
        tools in prop::collection::btree_set(name(), 0..3),
        choice in 0..5usize,
        disable_parallel in any::<bool>(),
        max_tokens in 1..100_000u32,
        stream in any::<bool>(),
        thinking in any::<bool>(),
        stop in prop::option::of(prop::collection::vec(text(), 1..3)),
    ) -> Value {
        let mut messages = Vec::new();
        for (user, assistant) in pairs {
            messages.push(json!({"role": "user", "content": user}));
            messages.push(json!({"role": "assistant", "content": assistant}));
        }
        let mut request = json!({"model": "claude-test", "max_tokens": max_tokens, "messages": messages, "stream": stream,
            "metadata": {"user_id": "u"}, "top_k": 5});
        if let Some(system) = system {
            request["system"] = system;
        }
        if thinking {
            request["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
        }
        if let Some(stop) = stop {
            request["stop_sequences"] = json!(stop);
        }
        if let Some(first) = tools.iter().next() {
            request["tools"] = tools.iter().map(|t| json!({"name": t, "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}})).collect();
            let mut choice = [json!({"type": "auto"}), json!({"type": "any"}), json!({"type": "none"}), json!({"type": "tool", "name": first}), Value::Null][choice].clone();
            if disable_parallel && choice.is_object() && choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = json!(true);
            }
            if !choice.is_null() {
                request["tool_choice"] = choice;
            }
        }
        request
    }
}

/// JSON shaped like either dialect's bodies, with wrong types in every position.
fn vocabulary_json() -> impl Strategy<Value = Value> {
    let words = vec![
        "user",
        "assistant",
        "system",
        "developer",
        "tool",
        "text",
        "image",
        "image_url",
        "tool_use",
        "tool_result",
        "function",
        "thinking",
        "auto",
        "any",
        "none",
        "required",
        "data:image/png;base64,AA",
        "https://x",
        "{}",
        "{\"a\":1}",
        "[DONE]",
        "message_start",
        "content_block_start",
        "content_block_delta",
        "text_delta",
        "input_json_delta",
        "message_delta",
        "message_stop",
        "error",
        "base64",
        "url",
        "tool_calls",
        "stop",
        "length",
    ];
    let keys = vec![
        "model",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "tool_calls",
        "function",
        "name",
        "arguments",
        "id",
        "tool_call_id",
        "tool_use_id",
        "input",
        "image_url",
        "url",
        "source",
        "media_type",
        "data",
        "system",
        "tools",
        "tool_choice",
        "parameters",
        "input_schema",
        "max_tokens",
        "stop",
        "stop_sequences",
        "choices",
        "delta",
        "message",
        "finish_reason",
        "usage",
        "index",
        "content_block",
        "partial_json",
        "stop_reason",
        "error",
        "prompt_tokens",
        "input_tokens",
        "n",
        "response_format",
        "is_error",
        "metadata",
        "user",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        prop::sample::select(words).prop_map(|w| json!(w)),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(keys.clone()), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())),
        ]
    })
}

fn every_entry_point(bytes: &[u8]) {
    let _ = openai_to_anthropic_request(bytes, 1024);
    let _ = anthropic_to_openai_request(bytes);
    let _ = openai_to_anthropic_response(bytes, "m");
    let _ = anthropic_to_openai_response(bytes, "m");
    let _ = upstream_error_message(bytes);
    let text = String::from_utf8_lossy(bytes);
    let mut to_anthropic = OpenAiToAnthropicStream::new("m");
    let _ = to_anthropic.push_chunk(&text);
    let _ = to_anthropic.finish();
    let mut to_openai = AnthropicToOpenAiStream::new("m", true);
    let _ = to_openai.push_event(&SseEvent {
        event: None,
        data: text.to_string(),
    });
    let _ = to_openai.finish();
}

proptest! {
    #[test]
    fn generated_openai_requests_translate_and_round_trip(request in openai_request()) {
        let anthropic = openai_to_anthropic_request(request.to_string().as_bytes(), 1000);
        prop_assert!(anthropic.is_ok(), "{:?}", anthropic.err());
        let anthropic = anthropic.unwrap();
        let back = anthropic_to_openai_request(anthropic.to_string().as_bytes());
        prop_assert!(back.is_ok(), "{:?}", back.err());
        prop_assert_eq!(openai_meaning_with_defaults(&back.unwrap()), openai_meaning_with_defaults(&request));
    }

    #[test]
    fn generated_anthropic_requests_translate_and_back(request in anthropic_request()) {
        let openai = anthropic_to_openai_request(request.to_string().as_bytes());
        prop_assert!(openai.is_ok(), "{:?}", openai.err());
        let again = openai_to_anthropic_request(openai.unwrap().to_string().as_bytes(), 1000);
        prop_assert!(again.is_ok(), "{:?}", again.err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), cut in 1..64usize) {
        every_entry_point(&bytes);
        let mut parser = SseParser::new();
        let mut to_anthropic = OpenAiToAnthropicStream::new("m");
        let mut to_openai = AnthropicToOpenAiStream::new("m", false);
        for piece in bytes.chunks(cut) {
            for event in parser.push(piece) {
                let _ = to_anthropic.push_chunk(&event.data);
                let _ = to_openai.push_event(&event);
            }
        }
        let _ = parser.finish();
        let _ = to_anthropic.finish();
        let _ = to_openai.finish();
    }

    #[test]
    fn arbitrary_dialect_shaped_json_never_panics(value in vocabulary_json()) {
        every_entry_point(value.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_event_sequences_never_panic(events in prop::collection::vec(vocabulary_json(), 0..12)) {
        let mut to_anthropic = OpenAiToAnthropicStream::new("m");
        let mut to_openai = AnthropicToOpenAiStream::new("m", true);
        for event in &events {
            let data = event.to_string();
            let _ = to_anthropic.push_chunk(&data);
            let name = event.get("type").and_then(Value::as_str).map(str::to_string);
            let _ = to_openai.push_event(&SseEvent { event: name, data });
        }
        let _ = to_anthropic.finish();
        let _ = to_openai.finish();
    }
}

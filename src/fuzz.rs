//! Fuzz targets (proptest): every parser that reads bytes from outside — client request
//! bodies, upstream responses and SSE streams, worker frames — fed arbitrary and almost-valid
//! input. None may panic, and the stream parsers must not care where the network splits
//! their input. They run with `cargo test` (a bounded number of cases, so CI stays fast);
//! `PROPTEST_CASES=100000 cargo test --lib fuzz::` runs a longer campaign. An input that
//! ever fails becomes a named regression test at the bottom of this file.

use crate::translate::anthropic::{
    anthropic_to_openai_request, anthropic_to_openai_response, openai_to_anthropic_request,
    openai_to_anthropic_response, AnthropicToOpenAiStream, OpenAiToAnthropicStream,
};
use crate::translate::chunks::Aggregator;
use crate::translate::responses::{
    chat_to_response, messages_to_response, responses_to_chat_request, responses_to_messages_request,
    ChatToResponsesStream, MessagesToResponsesStream, ResponseContext,
};
use crate::translate::sse::{SseEvent, SseParser};
use crate::workers::protocol::{RouterMessage, WorkerMessage};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Arbitrary JSON, a few levels deep, with the keys the dialects use so the translators'
/// deeper paths are reached.
fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "model",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "tool_calls",
        "tools",
        "function",
        "name",
        "arguments",
        "input",
        "id",
        "tool_use_id",
        "system",
        "max_tokens",
        "stream",
        "stop",
        "temperature",
        "choices",
        "delta",
        "usage",
        "finish_reason",
        "stop_reason",
        "image_url",
        "source",
        "data",
        "index",
        "tool_choice",
        "parameters",
        "input_schema",
        "prompt_tokens",
        "completion_tokens",
        "input_tokens",
        "output_tokens",
        "message",
        "content_block",
        "thinking",
        "instructions",
        "call_id",
        "output",
        "max_output_tokens",
        "reasoning",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        prop::sample::select(vec![
            "user",
            "assistant",
            "system",
            "tool",
            "developer",
            "text",
            "image",
            "image_url",
            "tool_use",
            "tool_result",
            "function",
            "auto",
            "none",
            "required",
            "any",
            "message_start",
            "content_block_start",
            "content_block_delta",
            "message_delta",
            "message_stop",
            "text_delta",
            "input_json_delta",
            "stop",
            "length",
            "tool_calls",
            "end_turn",
            "",
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// A valid request of either dialect with some fields replaced by arbitrary JSON.
fn almost_valid_request() -> impl Strategy<Value = Value> {
    let base = prop_oneof![
        Just(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})),
        Just(json!({"model": "m", "max_tokens": 10, "system": "s", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}
        ], "tools": [{"name": "f", "input_schema": {"type": "object"}}]})),
        Just(json!({"model": "m", "stream": true, "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "ok"}
        ], "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}], "tool_choice": "auto"})),
    ];
    (base, prop::collection::vec((0usize..8, json_value()), 0..4)).prop_map(|(mut base, edits)| {
        for (at, value) in edits {
            mutate(&mut base, at, value);
        }
        base
    })
}

/// Replaces the `at`-th node (depth first) of `target` with `value`.
fn mutate(target: &mut Value, mut at: usize, value: Value) {
    fn walk(node: &mut Value, at: &mut usize, value: &mut Option<Value>) {
        if value.is_none() {
            return;
        }
        if *at == 0 {
            if let Some(v) = value.take() {
                *node = v;
            }
            return;
        }
        *at -= 1;
        match node {
            Value::Array(items) => items.iter_mut().for_each(|n| walk(n, at, value)),
            Value::Object(map) => map.values_mut().for_each(|n| walk(n, at, value)),
            _ => {}
        }
    }
    let mut value = Some(value);
    walk(target, &mut at, &mut value);
}

fn sse_events(bytes: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts {
        events.extend(parser.push(&bytes[start..cut.max(start)]));
        start = cut.max(start);
    }
    events.extend(parser.push(&bytes[start..]));
    events.extend(parser.finish());
    events
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn request_translators_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = anthropic_to_openai_request(&bytes);
        let _ = openai_to_anthropic_request(&bytes, 1024);
    }

    #[test]
    fn request_translators_take_any_json(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        let _ = anthropic_to_openai_request(&bytes);
        let _ = openai_to_anthropic_request(&bytes, 1024);
    }

    #[test]
    fn request_translators_take_almost_valid_requests(value in almost_valid_request()) {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        if let Ok(openai) = anthropic_to_openai_request(&bytes) {
            prop_assert!(openai.is_object());
            // Whatever one direction produced, the other reads without panicking.
            let _ = openai_to_anthropic_request(&serde_json::to_vec(&openai).unwrap_or_default(), 1024);
        }
        if let Ok(anthropic) = openai_to_anthropic_request(&bytes, 1024) {
            prop_assert!(anthropic.is_object());
            let _ = anthropic_to_openai_request(&serde_json::to_vec(&anthropic).unwrap_or_default());
        }
    }

    #[test]
    fn response_translators_take_any_json(value in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let json_bytes = serde_json::to_vec(&value).unwrap_or_default();
        for body in [&json_bytes, &bytes] {
            let _ = openai_to_anthropic_response(body, "m");
            let _ = anthropic_to_openai_response(body, "m");
        }
    }

    #[test]
    fn responses_translators_take_any_input(value in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let json_bytes = serde_json::to_vec(&value).unwrap_or_default();
        let items = serde_json::to_vec(&json!({"model": "m", "input": [value.clone()], "tools": [value.clone()]})).unwrap_or_default();
        for body in [&json_bytes, &bytes, &items] {
            if let Ok((chat, context)) = responses_to_chat_request(body) {
                prop_assert!(chat.is_object());
                let _ = chat_to_response(&json_bytes, &context);
                let _ = chat_to_response(body, &context);
            }
        }
        let _ = chat_to_response(&json_bytes, &ResponseContext::default());
        let _ = chat_to_response(&bytes, &ResponseContext::default());
        for body in [&json_bytes, &bytes, &items] {
            if let Ok((messages, context)) = responses_to_messages_request(body) {
                prop_assert!(messages["max_tokens"].as_u64().is_some_and(|n| n > 0));
                let _ = messages_to_response(&json_bytes, &context);
            }
            let _ = messages_to_response(body, &ResponseContext::default());
        }
    }

    #[test]
    fn the_responses_stream_from_messages_takes_any_events(events in prop::collection::vec(json_value(), 0..6), raw in ".{0,40}") {
        let mut stream = MessagesToResponsesStream::new(ResponseContext { model: "m".into(), ..ResponseContext::default() });
        let _ = stream.push_event(&SseEvent { event: None, data: raw });
        for event in &events {
            let _ = stream.push_event(&SseEvent { event: Some("content_block_delta".into()), data: event.to_string() });
        }
        let _ = stream.finish();
        let _ = stream.fail("cut");
    }

    #[test]
    fn the_responses_stream_takes_any_chunks(chunks in prop::collection::vec(json_value(), 0..6), raw in ".{0,40}") {
        let mut stream = ChatToResponsesStream::new(ResponseContext { model: "m".into(), ..ResponseContext::default() });
        let _ = stream.start();
        let _ = stream.push_chunk(&raw);
        for chunk in &chunks {
            let _ = stream.push_chunk(&chunk.to_string());
        }
        let _ = stream.finish();
        let _ = stream.fail("cut");
    }

    #[test]
    fn the_sse_parser_does_not_care_where_the_network_splits(
        bytes in prop::collection::vec(prop::sample::select(b"data: event:x{}\r\n:\xc3\xa9 ".to_vec()), 0..300),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = sse_events(&bytes, &[]);
        let split = sse_events(&bytes, &cuts);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn stream_translators_take_any_chunks_and_events(
        chunks in prop::collection::vec(json_value(), 0..6),
        names in prop::collection::vec(prop::option::of(prop::sample::select(vec![
            "message_start", "content_block_start", "content_block_delta", "content_block_stop",
            "message_delta", "message_stop", "ping", "error", "bogus",
        ])), 0..6),
        raw in ".{0,40}",
    ) {
        let mut to_anthropic = OpenAiToAnthropicStream::new("m");
        let mut to_openai = AnthropicToOpenAiStream::new("m", true);
        let mut aggregator = Aggregator::default();
        let _ = to_anthropic.push_chunk(&raw);
        for (i, chunk) in chunks.iter().enumerate() {
            let text = chunk.to_string();
            let _ = to_anthropic.push_chunk(&text);
            let event = SseEvent { event: names.get(i).copied().flatten().map(str::to_string), data: text.clone() };
            let _ = to_openai.push_event(&event);
            if let Ok(raw) = serde_json::value::RawValue::from_string(text) {
                let _ = aggregator.push(&raw);
            }
        }
        let _ = to_anthropic.finish();
        let _ = to_openai.finish();
        let _ = aggregator.finish("m", None);
    }

    #[test]
    fn worker_frames_take_any_text(text in ".{0,200}", value in json_value()) {
        let _ = WorkerMessage::parse(&text);
        let _ = RouterMessage::parse(&text);
        let framed = value.to_string();
        let _ = WorkerMessage::parse(&framed);
        let _ = RouterMessage::parse(&framed);
    }

    #[test]
    fn worker_frames_of_every_type_survive_mutation(
        kind in prop::sample::select(vec!["hello", "heartbeat", "models", "chunk", "done", "error", "hello_ack", "job", "cancel", "refused"]),
        fields in prop::collection::vec((prop::sample::select(vec![
            "protocol", "kind", "name", "models", "slots", "version", "job_id", "chunk", "request", "usage",
            "message", "status", "worker_id", "heartbeat_interval_ms", "heartbeat_timeout_ms",
        ]), json_value()), 0..8),
    ) {
        let mut frame = serde_json::Map::new();
        frame.insert("type".into(), Value::from(kind));
        for (k, v) in fields {
            frame.insert(k.to_string(), v);
        }
        let text = Value::Object(frame).to_string();
        if let Ok(message) = WorkerMessage::parse(&text) {
            // What parses, prints and parses again to the same.
            prop_assert_eq!(format!("{:?}", WorkerMessage::parse(&message.to_text()).ok()), format!("{:?}", Some(message)));
        }
        let _ = RouterMessage::parse(&text);
    }
}

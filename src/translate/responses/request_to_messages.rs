//! A Responses request as an Anthropic Messages request, directly (no Chat step between),
//! so what Codex relies on survives: reasoning items carry Anthropic's thinking blocks and
//! their signatures across turns, custom tools keep their freeform input.
//!
//! `reasoning.effort` turns extended thinking on with a budget ([`thinking_budget`]); the
//! answer's `max_tokens` is `max_output_tokens`, or the budget plus [`DEFAULT_ANSWER_TOKENS`]
//! when the client set none (Anthropic requires one and it must exceed the budget).

use super::input::{self, err, Content, ContentPart, InputItem};
use super::request_to_chat::read_request;
use super::tools::{self, custom_input_schema, Tool};
use super::{reasoning_payload, ResponseContext, CUSTOM_TOOL_INPUT};
use crate::translate::anthropic::TranslateError;
use base64::Engine;
use serde_json::{json, Map, Value};

/// The answer's tokens when the client set no `max_output_tokens` (beside any thinking).
pub const DEFAULT_ANSWER_TOKENS: u64 = 8192;
/// Anthropic's smallest thinking budget.
const MIN_BUDGET: u64 = 1024;

/// The thinking budget for a Responses `reasoning.effort`: `none`/`minimal` think not at
/// all, `low` 2 048 tokens, `medium` 8 192, `high` 24 576, `xhigh` 32 768.
pub fn thinking_budget(effort: &str) -> Option<u64> {
    match effort {
        "low" => Some(2048),
        "medium" => Some(8192),
        "high" => Some(24576),
        "xhigh" => Some(32768),
        _ => None,
    }
}

/// Translates a Responses request body; `Err` names the JSON path of what Anthropic
/// cannot be sent.
pub fn responses_to_messages_request(body: &[u8]) -> Result<(Value, ResponseContext), TranslateError> {
    let (req, mut context) = read_request(body)?;
    let mut out = Map::new();
    out.insert("model".into(), json!(context.model));

    let mut system: Vec<String> = Vec::new();
    match req.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            if !text.is_empty() {
                system.push(text.clone());
            }
        }
        Some(_) => return Err(err("instructions", "must be a string")),
    }
    let mut messages: Vec<Value> = Vec::new();
    match req.get("input") {
        Some(Value::String(text)) => push_block(&mut messages, "user", json!({"type": "text", "text": text})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &format!("input[{i}]"), &mut messages, &mut system)?;
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(err("input", "must be a string or an array of input items")),
    }
    if messages.is_empty() {
        return Err(err("input", "must hold at least one message"));
    }
    let thinking_fits = last_call_turn_thinks(&messages);
    out.insert("messages".into(), Value::Array(messages));

    let tools = tools(&req, &mut context)?;
    let mut forced_tool = false;
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let mut choice = match req.get("tool_choice").filter(|c| !c.is_null()) {
            Some(choice) => tool_choice(choice)?,
            None => json!({"type": "auto"}),
        };
        forced_tool = matches!(choice["type"].as_str(), Some("any" | "tool"));
        if req.get("parallel_tool_calls") == Some(&Value::Bool(false)) && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        out.insert("tool_choice".into(), choice);
    }

    if let Some(format) = req.get("text").and_then(|t| t.get("format")).filter(|f| !f.is_null()) {
        if let Some(instruction) = format_instruction(format)? {
            system.push(instruction);
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }

    let max_output = match req.get("max_output_tokens").filter(|v| !v.is_null()) {
        Some(max) => Some(
            max.as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| err("max_output_tokens", "must be a positive integer"))?,
        ),
        None => None,
    };
    let effort = req
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str);
    let mut budget = effort.and_then(thinking_budget);
    if forced_tool && budget.is_some() {
        // Anthropic refuses a forced tool with thinking on: the forced tool wins.
        tracing::debug!("thinking is off: the request forces a tool");
        budget = None;
    }
    if !thinking_fits && budget.is_some() {
        tracing::debug!("thinking is off: the last tool-calling turn carries no Anthropic thinking");
        budget = None;
    }
    let max_tokens = match (max_output, budget) {
        (Some(max), Some(b)) => {
            // max_tokens must exceed the budget: the budget gives way, down to its minimum.
            let fitted = b.min(max.saturating_sub(1));
            budget = (fitted >= MIN_BUDGET).then_some(fitted);
            max
        }
        (Some(max), None) => max,
        (None, Some(b)) => b + DEFAULT_ANSWER_TOKENS,
        (None, None) => DEFAULT_ANSWER_TOKENS,
    };
    out.insert("max_tokens".into(), json!(max_tokens));
    if let Some(budget) = budget {
        out.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }
    for key in ["temperature", "top_p"] {
        match req.get(key) {
            None | Some(Value::Null) => {}
            // Thinking accepts neither (temperature must stay 1).
            Some(n) if n.is_number() && budget.is_none() => {
                out.insert(key.into(), n.clone());
            }
            Some(n) if n.is_number() => tracing::debug!(field = key, "dropped: Anthropic refuses it with thinking on"),
            Some(_) => return Err(err(key, "must be a number")),
        }
    }
    match req.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), json!(true));
        }
        Some(_) => return Err(err("stream", "must be a boolean")),
    }
    if let Some(Value::String(user)) = req.get("safety_identifier").or_else(|| req.get("user")) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok((Value::Object(out), context))
}

/// Whether thinking can be on: with it, Anthropic wants the last assistant turn that calls
/// tools to start with its thinking block, which a conversation begun elsewhere (another
/// provider, thinking off) does not have.
fn last_call_turn_thinks(messages: &[Value]) -> bool {
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "assistant") else {
        return true;
    };
    let blocks = last["content"].as_array().map(Vec::as_slice).unwrap_or_default();
    let calls = blocks.iter().any(|b| b["type"] == "tool_use");
    let first = blocks.first().and_then(|b| b["type"].as_str());
    !calls || matches!(first, Some("thinking" | "redacted_thinking"))
}

/// Appends a content block to the conversation, joining the last message when it has the
/// same role (Anthropic wants roles to alternate; a turn's blocks travel together).
fn push_block(messages: &mut Vec<Value>, role: &str, block: Value) {
    if let Some(last) = messages.last_mut().filter(|m| m["role"] == role) {
        if let Some(content) = last["content"].as_array_mut() {
            content.push(block);
            return;
        }
    }
    messages.push(json!({"role": role, "content": [block]}));
}

const TARGET: &str = "an Anthropic model";

fn input_item(
    item: &Value,
    field: &str,
    messages: &mut Vec<Value>,
    system: &mut Vec<String>,
) -> Result<(), TranslateError> {
    match input::input_item(item, field, TARGET)? {
        InputItem::Message { role, content } => message(role, content, messages, system)?,
        InputItem::FunctionCall {
            call_id,
            name,
            arguments,
        } => {
            // Anthropic takes an object: other JSON is wrapped, broken JSON kept as text.
            let input = match serde_json::from_str::<Value>(arguments.trim()) {
                Ok(Value::Object(map)) => Value::Object(map),
                Ok(other) => json!({"value": other}),
                Err(_) if arguments.trim().is_empty() => json!({}),
                Err(_) => json!({"arguments": arguments}),
            };
            let block = json!({"type": "tool_use", "id": call_id, "name": name, "input": input});
            push_block(messages, "assistant", block);
        }
        InputItem::CustomToolCall { call_id, name, input } => {
            let block = json!({"type": "tool_use", "id": call_id, "name": name, "input": {CUSTOM_TOOL_INPUT: input}});
            push_block(messages, "assistant", block);
        }
        InputItem::ToolOutput { call_id, output } => {
            let content = match output {
                Some(Value::String(s)) => json!(s),
                Some(Value::Array(parts)) => {
                    let parts = input::content_parts(parts, &format!("{field}.output"), TARGET)?;
                    let mut blocks = Vec::with_capacity(parts.len());
                    for (path, part) in parts {
                        blocks.push(content_block(part, &path)?);
                    }
                    Value::Array(blocks)
                }
                Some(other) if !other.is_null() => json!(other.to_string()),
                _ => json!(""),
            };
            let block = json!({"type": "tool_result", "tool_use_id": call_id, "content": content});
            push_block(messages, "user", block);
        }
        InputItem::Reasoning(object) => {
            match object
                .get("encrypted_content")
                .and_then(Value::as_str)
                .and_then(reasoning_payload::decode)
            {
                Some(block) => push_block(messages, "assistant", block),
                // Reasoning from another provider (or without its content) means nothing
                // to Anthropic.
                None => tracing::debug!(field = %field, "dropped: a reasoning item Anthropic did not write"),
            }
        }
        InputItem::Hosted(kind) => {
            tracing::debug!(field = %field, kind, "dropped: a hosted tool's item has no Anthropic counterpart");
        }
    }
    Ok(())
}

fn message(
    role: &str,
    content: Content<'_>,
    messages: &mut Vec<Value>,
    system: &mut Vec<String>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        Content::Text(text) => vec![json!({"type": "text", "text": text})],
        Content::Parts(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (path, part) in parts {
                blocks.push(content_block(part, &path)?);
            }
            blocks
        }
    };
    if matches!(role, "system" | "developer") {
        // Anthropic has one system prompt: instructions from the conversation join it.
        let text: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
        let text = text.join("\n");
        if !text.is_empty() {
            system.push(text);
        }
        return Ok(());
    }
    for block in blocks {
        // Anthropic refuses empty text blocks.
        if block["type"] == "text" && block["text"].as_str().is_some_and(str::is_empty) {
            continue;
        }
        push_block(messages, role, block);
    }
    Ok(())
}

fn content_block(part: ContentPart<'_>, field: &str) -> Result<Value, TranslateError> {
    Ok(match part {
        ContentPart::Text(text) => json!({"type": "text", "text": text}),
        ContentPart::Image { url, .. } => json!({"type": "image", "source": media_source(url, field, "image_url")?}),
        ContentPart::File { data, .. } => {
            json!({"type": "document", "source": media_source(data, field, "file_data")?})
        }
    })
}

/// A `data:` URL as an inline base64 source, any other URL as a URL source.
fn media_source(url: &str, field: &str, key: &str) -> Result<Value, TranslateError> {
    let Some(rest) = url.strip_prefix("data:") else {
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(json!({"type": "url", "url": url}));
        }
        // A bare base64 file (`file_data` without a data URL) is taken as a PDF.
        if key == "file_data" && base64::engine::general_purpose::STANDARD.decode(url).is_ok() {
            return Ok(json!({"type": "base64", "media_type": "application/pdf", "data": url}));
        }
        return Err(err(format!("{field}.{key}"), "must be a data: URL or an http(s) URL"));
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| err(format!("{field}.{key}"), "is not a valid data: URL"))?;
    let media_type = meta
        .strip_suffix(";base64")
        .ok_or_else(|| err(format!("{field}.{key}"), "a data: URL must be base64-encoded"))?;
    Ok(json!({"type": "base64", "media_type": media_type, "data": data}))
}

/// The tools as Anthropic tools.
fn tools(req: &Map<String, Value>, context: &mut ResponseContext) -> Result<Vec<Value>, TranslateError> {
    let tools = tools::tools(req, context)?;
    Ok(tools
        .into_iter()
        .map(|tool| match tool {
            Tool::Function {
                name,
                description,
                parameters,
                strict: _,
            } => {
                let mut entry = json!({"name": name, "input_schema": parameters});
                if let Some(description) = description.filter(|d| !d.is_empty()) {
                    entry["description"] = json!(description);
                }
                entry
            }
            Tool::Custom { name, description } => {
                json!({"name": name, "description": description, "input_schema": custom_input_schema()})
            }
        })
        .collect())
}

fn tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            _ => Err(err("tool_choice", "must be auto, none, required or a tool object")),
        },
        Value::Object(map) => match map.get("type").and_then(Value::as_str) {
            Some("function" | "custom") => {
                let name = map
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err("tool_choice.name", "is required"))?;
                Ok(json!({"type": "tool", "name": name}))
            }
            Some("allowed_tools") => Ok(match map.get("mode").and_then(Value::as_str) {
                Some("required") => json!({"type": "any"}),
                _ => json!({"type": "auto"}),
            }),
            _ => Ok(json!({"type": "auto"})),
        },
        _ => Err(err("tool_choice", "must be auto, none, required or a tool object")),
    }
}

/// Anthropic has no structured-output switch: a JSON format becomes an instruction in the
/// system prompt (the schema included), and the answer is not validated.
fn format_instruction(format: &Value) -> Result<Option<String>, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(
            "Answer with one JSON object and nothing else: no prose, no code fences.".into(),
        )),
        Some("json_schema") => {
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| err("text.format.schema", "is required for json_schema"))?;
            Ok(Some(format!(
                "Answer with one JSON value that validates against this JSON Schema, and nothing else: no prose, no code fences.\n{schema}"
            )))
        }
        _ => Err(err("text.format.type", "must be text, json_object or json_schema")),
    }
}

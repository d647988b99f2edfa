//! A Responses request as a Chat Completions request.

use super::input::{self, err, Content, ContentPart, InputItem};
use super::tools::{self, custom_input_schema, Tool};
use super::{ResponseContext, CUSTOM_TOOL_INPUT};
use crate::translate::anthropic::TranslateError;
use serde_json::{json, Map, Value};

/// Fields read here or echoed back; any other is logged (debug) as dropped.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "store",
    "include",
    "user",
    "metadata",
    "prompt_cache_key",
    "previous_response_id",
    "background",
    "service_tier",
    "stream_options",
    "safety_identifier",
    "truncation",
];

/// Request fields a `response` object repeats back to the client.
pub(super) const ECHOED: &[&str] = &[
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "max_output_tokens",
    "temperature",
    "top_p",
    "store",
    "metadata",
    "user",
    "truncation",
    "prompt_cache_key",
];

/// A Responses request body as a JSON object, and what answering it needs: the model it
/// names (required) and the fields the `response` repeats back.
pub(super) fn read_request(body: &[u8]) -> Result<(Map<String, Value>, ResponseContext), TranslateError> {
    let req: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(err("", "the request body must be a JSON object")),
        Err(e) => return Err(err("", format!("the request body is not valid JSON: {e}"))),
    };
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        _ => return Err(err("model", "is required and must be a non-empty string")),
    };
    let mut context = ResponseContext {
        model,
        ..ResponseContext::default()
    };
    for key in ECHOED {
        if let Some(value) = req.get(*key) {
            context.echo.insert((*key).to_string(), value.clone());
        }
    }
    Ok((req, context))
}

/// Translates a Responses request body; `Err` names the JSON path of what cannot be sent
/// to a chat model.
pub fn responses_to_chat_request(body: &[u8]) -> Result<(Value, ResponseContext), TranslateError> {
    let (req, mut context) = read_request(body)?;
    for key in req.keys().filter(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        tracing::debug!(field = %key, "dropped: chat completions has no place for this Responses field");
    }
    if req.get("previous_response_id").is_some_and(|v| !v.is_null()) {
        return Err(err(
            "previous_response_id",
            "auxot keeps no server-side conversation state: send the whole conversation in `input` (with store: false)",
        ));
    }
    if req.get("background") == Some(&Value::Bool(true)) {
        return Err(err("background", "background responses are not supported by auxot"));
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(context.model));
    let tools = tools(&req, &mut context)?;

    let mut messages = Vec::new();
    match req.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) if text.is_empty() => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(_) => return Err(err("instructions", "must be a string")),
    }
    match req.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &format!("input[{i}]"), &mut messages)?;
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(err("input", "must be a string or an array of input items")),
    }
    if messages.iter().all(|m| m["role"] == "system") {
        return Err(err("input", "must hold at least one message"));
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(max) = req.get("max_output_tokens").filter(|v| !v.is_null()) {
        let max = max
            .as_u64()
            .ok_or_else(|| err("max_output_tokens", "must be a non-negative integer"))?;
        out.insert("max_tokens".into(), json!(max));
    }
    for key in ["temperature", "top_p"] {
        match req.get(key) {
            None | Some(Value::Null) => {}
            Some(n) if n.is_number() => {
                out.insert(key.into(), n.clone());
            }
            Some(_) => return Err(err(key, "must be a number")),
        }
    }
    match req.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), json!(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(_) => return Err(err("stream", "must be a boolean")),
    }
    if let Some(effort) = req
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
    {
        out.insert("reasoning_effort".into(), json!(effort));
    }
    if let Some(format) = req.get("text").and_then(|t| t.get("format")).filter(|f| !f.is_null()) {
        if let Some(response_format) = response_format(format)? {
            out.insert("response_format".into(), response_format);
        }
    }
    for key in ["user", "prompt_cache_key", "safety_identifier"] {
        if let Some(Value::String(value)) = req.get(key) {
            out.insert(key.into(), json!(value));
        }
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = req.get("tool_choice").filter(|c| !c.is_null()) {
            out.insert("tool_choice".into(), tool_choice(choice)?);
        }
        if let Some(parallel) = req.get("parallel_tool_calls").filter(|v| !v.is_null()) {
            let parallel = parallel
                .as_bool()
                .ok_or_else(|| err("parallel_tool_calls", "must be a boolean"))?;
            out.insert("parallel_tool_calls".into(), json!(parallel));
        }
    }
    Ok((Value::Object(out), context))
}

/// The tools as chat `function` tools.
fn tools(req: &Map<String, Value>, context: &mut ResponseContext) -> Result<Vec<Value>, TranslateError> {
    let tools = tools::tools(req, context)?;
    Ok(tools
        .into_iter()
        .map(|tool| match tool {
            Tool::Function {
                name,
                description,
                parameters,
                strict,
            } => {
                let mut function = Map::new();
                function.insert("name".into(), json!(name));
                if let Some(description) = description {
                    function.insert("description".into(), json!(description));
                }
                function.insert("parameters".into(), parameters);
                if let Some(strict) = strict {
                    function.insert("strict".into(), strict.clone());
                }
                json!({"type": "function", "function": function})
            }
            Tool::Custom { name, description } => {
                let mut parameters = custom_input_schema();
                parameters.insert("additionalProperties".into(), json!(false));
                json!({"type": "function", "function": {"name": name, "description": description, "parameters": parameters}})
            }
        })
        .collect())
}

fn tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Ok(json!(s)),
        Value::Object(map) => match map.get("type").and_then(Value::as_str) {
            Some("function" | "custom") => {
                let name = map
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err("tool_choice.name", "is required"))?;
                Ok(json!({"type": "function", "function": {"name": name}}))
            }
            Some("allowed_tools") => Ok(json!(map.get("mode").and_then(Value::as_str).unwrap_or("auto"))),
            _ => Ok(json!("auto")),
        },
        _ => Err(err("tool_choice", "must be auto, none, required or a tool object")),
    }
}

fn response_format(format: &Value) -> Result<Option<Value>, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key) {
                    schema.insert(key.into(), v.clone());
                }
            }
            if !schema.contains_key("name") {
                return Err(err("text.format.name", "is required for json_schema"));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(err("text.format.type", "must be text, json_object or json_schema")),
    }
}

const TARGET: &str = "a chat model";

/// Appends one input item; function calls join the assistant message before them so a
/// turn's calls travel together, as chat models expect.
fn input_item(item: &Value, field: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let (call_id, name, arguments) = match input::input_item(item, field, TARGET)? {
        InputItem::Message { role, content } => {
            out.push(json!({"role": role, "content": message_content(role, content)}));
            return Ok(());
        }
        InputItem::FunctionCall {
            call_id,
            name,
            arguments,
        } => (call_id, name, arguments.to_string()),
        InputItem::CustomToolCall { call_id, name, input } => {
            (call_id, name, json!({CUSTOM_TOOL_INPUT: input}).to_string())
        }
        InputItem::ToolOutput { call_id, output } => {
            let text = match output {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts_text(parts),
                Some(other) if !other.is_null() => other.to_string(),
                _ => String::new(),
            };
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": text}));
            return Ok(());
        }
        InputItem::Reasoning(_) => return Ok(()),
        InputItem::Hosted(kind) => {
            tracing::debug!(field = %field, kind, "dropped: a hosted tool's item has no chat counterpart");
            return Ok(());
        }
    };
    let call = json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}});
    match out.last_mut() {
        Some(last) if last["role"] == "assistant" => match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
            Some(calls) => calls.push(call),
            None => last["tool_calls"] = json!([call]),
        },
        _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
    }
    Ok(())
}

fn parts_text(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A message's content as chat takes it: only user messages take non-text parts; the
/// others' parts are joined as text.
fn message_content(role: &str, content: Content<'_>) -> Value {
    let parts = match content {
        Content::Text(text) => return json!(text),
        Content::Parts(parts) => parts,
    };
    let all_text = parts.iter().all(|(_, p)| matches!(p, ContentPart::Text(_)));
    if role != "user" || all_text {
        let text: Vec<&str> = parts
            .iter()
            .filter_map(|(_, p)| match p {
                ContentPart::Text(text) => Some(*text),
                _ => None,
            })
            .collect();
        return json!(text.join(""));
    }
    Value::Array(parts.into_iter().map(|(_, part)| content_part(part)).collect())
}

fn content_part(part: ContentPart<'_>) -> Value {
    match part {
        ContentPart::Text(text) => json!({"type": "text", "text": text}),
        ContentPart::Image { url, detail } => {
            let mut image = json!({"url": url});
            if let Some(detail) = detail {
                image["detail"] = json!(detail);
            }
            json!({"type": "image_url", "image_url": image})
        }
        ContentPart::File { data, filename } => {
            json!({"type": "file", "file": {"filename": filename.unwrap_or("file"), "file_data": data}})
        }
    }
}

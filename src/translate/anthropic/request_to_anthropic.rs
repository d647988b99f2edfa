//! An OpenAI Chat Completions request as an Anthropic Messages request.
//!
//! Anthropic wants one system prompt, strictly alternating user/assistant turns, tool
//! results inside user turns and an explicit `max_tokens`; OpenAI has none of those rules,
//! so this side reshapes the conversation rather than mapping message by message.

use super::common::{
    anthropic_tool_id, as_array, as_object, image_block_from_url, opt_bool, opt_number, opt_str, parse_object, present,
    req_str, Object,
};
use super::error::err;
use super::TranslateError;
use serde_json::{json, Map, Value};

/// Translates an OpenAI chat request body. `default_max_tokens` fills Anthropic's required
/// `max_tokens` when the client set neither `max_completion_tokens` nor `max_tokens`.
///
/// Dropped silently because Anthropic has no counterpart and ignoring them changes no
/// answer's shape: `stream_options`, `presence_penalty`, `frequency_penalty`, `logit_bias`,
/// `seed`, `logprobs`, `top_logprobs`, `store`, `metadata`, `reasoning_effort`,
/// `service_tier`, message `name`s and image `detail`, `response_format` of type `text`
/// or `json_object`. Refused (a [`TranslateError`] naming the field) because the answer
/// could not honour them: `n` > 1, `response_format` `json_schema`, audio, files, the
/// legacy `functions` API. Every `system`/`developer` message, wherever it sits, joins the
/// one Anthropic `system` prompt (separated by blank lines). `temperature` is clamped to
/// Anthropic's 0..=1.
pub fn openai_to_anthropic_request(body: &[u8], default_max_tokens: u32) -> Result<Value, TranslateError> {
    let req = parse_object(body)?;
    refuse_unsupported(&req)?;
    let mut out = Map::new();
    out.insert("model".into(), json!(req_str(&req, "model", "model")?));

    let messages = present(&req, "messages").ok_or_else(|| err("messages", "is required"))?;
    let (system, messages) = convert_messages(as_array(messages, "messages")?)?;
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(max_tokens(&req, default_max_tokens)?));

    if let Some(t) = opt_number(&req, "temperature", "temperature")? {
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = opt_number(&req, "top_p", "top_p")? {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(stops) = stop_sequences(&req)? {
        out.insert("stop_sequences".into(), json!(stops));
    }
    if let Some(stream) = opt_bool(&req, "stream", "stream")? {
        out.insert("stream".into(), json!(stream));
    }
    if let Some(user) = opt_str(&req, "user", "user")? {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    let tools = tools(&req)?;
    // Both dialects refuse a tool_choice without tools; with none there is nothing to choose.
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = tool_choice(&req)? {
            out.insert("tool_choice".into(), choice);
        }
    }
    Ok(Value::Object(out))
}

fn refuse_unsupported(req: &Object) -> Result<(), TranslateError> {
    if let Some(n) = present(req, "n") {
        if n.as_u64() != Some(1) {
            return Err(err(
                "n",
                "only one choice (n = 1) can be produced by an Anthropic model",
            ));
        }
    }
    if let Some(format) = present(req, "response_format") {
        if format.get("type").and_then(Value::as_str) == Some("json_schema") {
            return Err(err(
                "response_format",
                "json_schema structured output cannot be enforced on an Anthropic model",
            ));
        }
    }
    for key in ["functions", "function_call"] {
        if present(req, key).is_some() {
            return Err(err(key, "the legacy functions API cannot be translated; use tools"));
        }
    }
    if present(req, "audio").is_some() {
        return Err(err("audio", "audio output cannot be produced by an Anthropic model"));
    }
    if let Some(modalities) = present(req, "modalities").and_then(Value::as_array) {
        if modalities.iter().any(|m| m.as_str() != Some("text")) {
            return Err(err(
                "modalities",
                "only text output can be produced by an Anthropic model",
            ));
        }
    }
    Ok(())
}

fn max_tokens(req: &Object, default: u32) -> Result<u64, TranslateError> {
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = present(req, key) {
            return v.as_u64().ok_or_else(|| err(key, "must be a non-negative integer"));
        }
    }
    Ok(u64::from(default))
}

fn stop_sequences(req: &Object) -> Result<Option<Vec<String>>, TranslateError> {
    match present(req, "stop") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => {
            let stops = items
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err(format!("stop[{i}]"), "must be a string"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((!stops.is_empty()).then_some(stops))
        }
        Some(_) => Err(err("stop", "must be a string or an array of strings")),
    }
}

struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

fn convert_messages(list: &[Value]) -> Result<(Vec<String>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, message) in list.iter().enumerate() {
        let field = format!("messages[{i}]");
        let message = as_object(message, &field)?;
        let role_field = format!("{field}.role");
        let content = present(message, "content");
        let content_field = format!("{field}.content");
        let (role, blocks) = match req_str(message, "role", &role_field)? {
            "system" | "developer" => {
                let text = texts(content, &content_field, false)?.join("\n\n");
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            "user" => ("user", user_blocks(content, &content_field)?),
            "assistant" => ("assistant", assistant_blocks(message, &field)?),
            "tool" => ("user", vec![tool_result(message, &field)?]),
            "function" => {
                return Err(err(
                    role_field,
                    "the legacy functions API cannot be translated; use tools",
                ))
            }
            _ => return Err(err(role_field, "must be system, developer, user, assistant or tool")),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    }
    let messages = turns.into_iter().map(turn_message).collect();
    Ok((system, messages))
}

fn turn_message(turn: Turn) -> Value {
    let mut blocks = turn.blocks;
    // Anthropic wants a user turn's tool results ahead of its other content.
    blocks.sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
    let content = match blocks.as_slice() {
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => only["text"].clone(),
        _ => Value::Array(blocks),
    };
    json!({"role": turn.role, "content": content})
}

fn text_block(text: &str) -> Option<Value> {
    // Anthropic refuses empty text blocks; an empty string says nothing anyway.
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// The texts of an OpenAI content value: a string, or an array of `text` parts (and of
/// `refusal` parts, which only assistants carry).
fn texts(content: Option<&Value>, field: &str, allow_refusal: bool) -> Result<Vec<String>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| {
                let part_field = format!("{field}[{j}]");
                let part = as_object(part, &part_field)?;
                let kind_field = format!("{part_field}.type");
                match req_str(part, "type", &kind_field)? {
                    "text" => Ok(req_str(part, "text", &format!("{part_field}.text"))?.to_string()),
                    "refusal" if allow_refusal => {
                        Ok(req_str(part, "refusal", &format!("{part_field}.refusal"))?.to_string())
                    }
                    other => Err(err(
                        kind_field,
                        format!("content part type `{other}` cannot be translated here"),
                    )),
                }
            })
            .collect(),
        Some(_) => Err(err(field, "must be a string or an array of content parts")),
    }
}

fn user_blocks(content: Option<&Value>, field: &str) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Some(Value::Array(parts)) => parts,
        other => {
            return Ok(texts(other, field, false)?
                .iter()
                .filter_map(|t| text_block(t))
                .collect())
        }
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let part_field = format!("{field}[{j}]");
        let part = as_object(part, &part_field)?;
        let kind_field = format!("{part_field}.type");
        match req_str(part, "type", &kind_field)? {
            "text" => blocks.extend(text_block(req_str(part, "text", &format!("{part_field}.text"))?)),
            "image_url" => {
                let image_field = format!("{part_field}.image_url");
                let image = present(part, "image_url").ok_or_else(|| err(&image_field, "is required"))?;
                // Some clients send the URL as a bare string rather than `{url}`.
                let url = match image {
                    Value::String(url) => url.as_str(),
                    Value::Object(image) => req_str(image, "url", &format!("{image_field}.url"))?,
                    _ => return Err(err(image_field, "must be an object with a url")),
                };
                blocks.push(image_block_from_url(url, &format!("{image_field}.url"))?);
            }
            other => {
                return Err(err(
                    kind_field,
                    format!("content part type `{other}` cannot be sent to an Anthropic model"),
                ))
            }
        }
    }
    Ok(blocks)
}

fn assistant_blocks(message: &Object, field: &str) -> Result<Vec<Value>, TranslateError> {
    if present(message, "function_call").is_some() {
        return Err(err(
            format!("{field}.function_call"),
            "the legacy functions API cannot be translated; use tools",
        ));
    }
    let content_field = format!("{field}.content");
    let mut blocks: Vec<Value> = texts(present(message, "content"), &content_field, true)?
        .iter()
        .filter_map(|t| text_block(t))
        .collect();
    // A refusal with no content is still what the assistant said.
    if blocks.is_empty() {
        if let Some(refusal) = opt_str(message, "refusal", &format!("{field}.refusal"))? {
            blocks.extend(text_block(refusal));
        }
    }
    let calls_field = format!("{field}.tool_calls");
    let Some(calls) = present(message, "tool_calls") else {
        return Ok(blocks);
    };
    for (j, call) in as_array(calls, &calls_field)?.iter().enumerate() {
        let call_field = format!("{calls_field}[{j}]");
        let call = as_object(call, &call_field)?;
        let kind_field = format!("{call_field}.type");
        if let Some(kind) = opt_str(call, "type", &kind_field)? {
            if kind != "function" {
                return Err(err(kind_field, format!("tool call type `{kind}` cannot be translated")));
            }
        }
        let id = req_str(call, "id", &format!("{call_field}.id"))?;
        let function_field = format!("{call_field}.function");
        let function = as_object(present(call, "function").unwrap_or(&Value::Null), &function_field)?;
        let name = req_str(function, "name", &format!("{function_field}.name"))?;
        let input = arguments(present(function, "arguments"), &format!("{function_field}.arguments"))?;
        blocks.push(json!({"type": "tool_use", "id": anthropic_tool_id(id), "name": name, "input": input}));
    }
    Ok(blocks)
}

/// OpenAI carries tool arguments as a JSON string; Anthropic wants the object itself.
pub(super) fn arguments(arguments: Option<&Value>, field: &str) -> Result<Value, TranslateError> {
    let parsed = match arguments {
        None => return Ok(json!({})),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(json!({})),
        Some(Value::String(s)) => {
            serde_json::from_str::<Value>(s).map_err(|e| err(field, format!("is not valid JSON: {e}")))?
        }
        // Some clients send the arguments already parsed.
        Some(other) => other.clone(),
    };
    if parsed.is_object() {
        Ok(parsed)
    } else {
        Err(err(field, "must encode a JSON object"))
    }
}

fn tool_result(message: &Object, field: &str) -> Result<Value, TranslateError> {
    let id = req_str(message, "tool_call_id", &format!("{field}.tool_call_id"))?;
    let mut block = json!({"type": "tool_result", "tool_use_id": anthropic_tool_id(id)});
    let content_field = format!("{field}.content");
    match present(message, "content") {
        Some(Value::String(s)) if !s.is_empty() => block["content"] = json!(s),
        Some(Value::Array(_)) => {
            let blocks: Vec<Value> = texts(present(message, "content"), &content_field, false)?
                .iter()
                .filter_map(|t| text_block(t))
                .collect();
            if !blocks.is_empty() {
                block["content"] = Value::Array(blocks);
            }
        }
        Some(Value::String(_)) | None => {}
        Some(_) => return Err(err(content_field, "must be a string or an array of text parts")),
    }
    Ok(block)
}

fn tools(req: &Object) -> Result<Vec<Value>, TranslateError> {
    let Some(list) = present(req, "tools") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, tool) in as_array(list, "tools")?.iter().enumerate() {
        let field = format!("tools[{i}]");
        let tool = as_object(tool, &field)?;
        let kind_field = format!("{field}.type");
        if let Some(kind) = opt_str(tool, "type", &kind_field)? {
            if kind != "function" {
                return Err(err(kind_field, format!("tool type `{kind}` cannot be translated")));
            }
        }
        let function_field = format!("{field}.function");
        let function = as_object(present(tool, "function").unwrap_or(&Value::Null), &function_field)?;
        let mut converted = Map::new();
        converted.insert(
            "name".into(),
            json!(req_str(function, "name", &format!("{function_field}.name"))?),
        );
        if let Some(description) = opt_str(function, "description", &format!("{function_field}.description"))? {
            converted.insert("description".into(), json!(description));
        }
        let schema = match present(function, "parameters") {
            None => json!({"type": "object", "properties": {}}),
            Some(schema) if schema.is_object() => schema.clone(),
            Some(_) => {
                return Err(err(
                    format!("{function_field}.parameters"),
                    "must be a JSON Schema object",
                ))
            }
        };
        converted.insert("input_schema".into(), schema);
        out.push(Value::Object(converted));
    }
    Ok(out)
}

fn tool_choice(req: &Object) -> Result<Option<Value>, TranslateError> {
    let mut choice = match present(req, "tool_choice") {
        None => None,
        Some(Value::String(mode)) => Some(match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => return Err(err("tool_choice", "must be auto, none, required or a function")),
        }),
        Some(Value::Object(named)) => {
            if named.get("type").and_then(Value::as_str) != Some("function") {
                return Err(err("tool_choice.type", "only function tool choices can be translated"));
            }
            let function = as_object(
                present(named, "function").unwrap_or(&Value::Null),
                "tool_choice.function",
            )?;
            let name = req_str(function, "name", "tool_choice.function.name")?;
            Some(json!({"type": "tool", "name": name}))
        }
        Some(_) => return Err(err("tool_choice", "must be a string or an object")),
    };
    if opt_bool(req, "parallel_tool_calls", "parallel_tool_calls")? == Some(false) {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        // `none` forbids tools altogether, so it takes no parallelism flag.
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(v: Value) -> Result<Value, TranslateError> {
        openai_to_anthropic_request(v.to_string().as_bytes(), 4096)
    }

    #[test]
    fn refusals_name_the_field() {
        let base = || json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let cases: Vec<(Value, &str)> = vec![
            (json!({"n": 2}), "n"),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {}}}),
                "response_format",
            ),
            (json!({"functions": []}), "functions"),
            (json!({"stop": 5}), "stop"),
            (
                json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]}),
                "tools[0].type",
            ),
            (
                json!({"tools": [{"type": "function", "function": {}}]}),
                "tools[0].function.name",
            ),
            (
                json!({"tool_choice": "sometimes", "tools": [{"type":"function","function":{"name":"f"}}]}),
                "tool_choice",
            ),
            (json!({"max_tokens": "lots"}), "max_tokens"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "file"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///x"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
        ];
        for (patch, field) in cases {
            let mut req = base();
            for (k, v) in patch.as_object().unwrap() {
                req[k] = v.clone();
            }
            let e = translate(req.clone()).expect_err(&format!("{req} should be refused"));
            assert_eq!(e.field, field, "{req}: {e}");
        }
        assert_eq!(openai_to_anthropic_request(b"[1]", 1).unwrap_err().field, "body");
        assert_eq!(openai_to_anthropic_request(b"{", 1).unwrap_err().field, "body");
    }

    #[test]
    fn tool_choice_without_tools_is_dropped_and_parallel_flag_lands_on_the_choice() {
        let out = translate(json!({"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"required"}))
            .unwrap();
        assert!(out.get("tool_choice").is_none());
        let out = translate(json!({"model":"m","messages":[{"role":"user","content":"x"}],
            "tools":[{"type":"function","function":{"name":"f"}}],"parallel_tool_calls":false}))
        .unwrap();
        assert_eq!(
            out["tool_choice"],
            json!({"type":"auto","disable_parallel_tool_use":true})
        );
        assert_eq!(
            out["tools"][0]["input_schema"],
            json!({"type":"object","properties":{}})
        );
    }

    #[test]
    fn odd_tool_ids_are_made_acceptable_consistently() {
        let out = translate(json!({"model":"m","messages":[
            {"role":"user","content":"x"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"functions.f:0","type":"function","function":{"name":"f","arguments":""}}]},
            {"role":"tool","tool_call_id":"functions.f:0","content":"ok"}]}))
        .unwrap();
        assert_eq!(out["messages"][1]["content"][0]["id"], "functions_f_0");
        assert_eq!(out["messages"][1]["content"][0]["input"], json!({}));
        assert_eq!(out["messages"][2]["content"][0]["tool_use_id"], "functions_f_0");
    }
}

//! An Anthropic Messages request as an OpenAI Chat Completions request.
//!
//! Anthropic nests tool results inside user turns and lets them carry images; OpenAI wants
//! one `tool` message per result, right after the assistant's `tool_calls`, with text only.

use super::common::{
    as_array, as_object, image_part_from_block, opt_bool, opt_number, opt_str, parse_object, present, req_str, Object,
};
use super::error::err;
use super::TranslateError;
use serde_json::{json, Map, Value};

/// Top-level fields read by this translation; any other is logged (debug) as dropped.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
    "mcp_servers",
];

/// Translates an Anthropic Messages request body.
///
/// `thinking` and `redacted_thinking` blocks are dropped: their signatures only mean
/// something to Anthropic, and thinking passes through only Anthropic→Anthropic, which
/// never calls this module. Dropped with a debug log: top-level fields OpenAI has no place
/// for (`thinking`, `top_k`, `service_tier`, `container`, `context_management`,
/// `output_config`, …), every `cache_control`, server tools (`web_search_…`, `bash_…`: the
/// model cannot call what only Anthropic runs) and their result blocks in the history.
/// `role: "system"` messages inside `messages` (Claude Code sends them) become OpenAI
/// system messages in place; documents become text or file parts.
/// Refused with a [`TranslateError`] naming the field: `mcp_servers` (the connectors would
/// silently vanish) and malformed values.
/// A streaming request asks for `stream_options.include_usage`, so the final usage the
/// Anthropic client expects in `message_delta` is available.
pub fn anthropic_to_openai_request(body: &[u8]) -> Result<Value, TranslateError> {
    let req = parse_object(body)?;
    for key in req.keys().filter(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        tracing::debug!(field = %key, "dropped: OpenAI chat has no place for this Anthropic field");
    }
    if present(&req, "mcp_servers")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(err(
            "mcp_servers",
            "MCP connectors run only on Anthropic's side and cannot be translated",
        ));
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(req_str(&req, "model", "model")?));

    let mut messages = Vec::new();
    if let Some(system) = system_text(&req)? {
        messages.push(json!({"role": "system", "content": system}));
    }
    let list = present(&req, "messages").ok_or_else(|| err("messages", "is required"))?;
    for (i, message) in as_array(list, "messages")?.iter().enumerate() {
        convert_message(message, &format!("messages[{i}]"), &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(max) = present(&req, "max_tokens") {
        let max = max
            .as_u64()
            .ok_or_else(|| err("max_tokens", "must be a non-negative integer"))?;
        out.insert("max_tokens".into(), json!(max));
    }
    for key in ["temperature", "top_p"] {
        if let Some(n) = opt_number(&req, key, key)? {
            out.insert(key.into(), json!(n));
        }
    }
    if let Some(stops) = present(&req, "stop_sequences") {
        let stops = as_array(stops, "stop_sequences")?;
        for (i, s) in stops.iter().enumerate() {
            if !s.is_string() {
                return Err(err(format!("stop_sequences[{i}]"), "must be a string"));
            }
        }
        if !stops.is_empty() {
            out.insert("stop".into(), Value::Array(stops.clone()));
        }
    }
    if let Some(stream) = opt_bool(&req, "stream", "stream")? {
        out.insert("stream".into(), json!(stream));
        if stream {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(metadata) = present(&req, "metadata") {
        let metadata = as_object(metadata, "metadata")?;
        if let Some(user) = opt_str(metadata, "user_id", "metadata.user_id")? {
            out.insert("user".into(), json!(user));
        }
    }
    let tools = tools(&req)?;
    // OpenAI refuses tool_choice and parallel_tool_calls without tools.
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        tool_choice(&req, &mut out)?;
    }
    Ok(Value::Object(out))
}

fn system_text(req: &Object) -> Result<Option<String>, TranslateError> {
    let text = match present(req, "system") {
        None => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                let field = format!("system[{i}]");
                let block = as_object(block, &field)?;
                let kind_field = format!("{field}.type");
                match req_str(block, "type", &kind_field)? {
                    "text" => texts.push(req_str(block, "text", &format!("{field}.text"))?.to_string()),
                    other => {
                        return Err(err(
                            kind_field,
                            format!("system block type `{other}` cannot be translated"),
                        ))
                    }
                }
            }
            texts.retain(|t| !t.is_empty());
            texts.join("\n\n")
        }
        Some(_) => return Err(err("system", "must be a string or an array of text blocks")),
    };
    Ok((!text.is_empty()).then_some(text))
}

fn convert_message(message: &Value, field: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let message = as_object(message, field)?;
    let role_field = format!("{field}.role");
    let role = req_str(message, "role", &role_field)?;
    let content_field = format!("{field}.content");
    if role == "system" {
        if let Some(text) = system_message_text(present(message, "content"), &content_field)? {
            out.push(json!({"role": "system", "content": text}));
        }
        return Ok(());
    }
    if role != "user" && role != "assistant" {
        return Err(err(role_field, "must be user, assistant or system"));
    }
    let blocks = match present(message, "content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => return Err(err(content_field, "must be a string or an array of content blocks")),
    };
    if role == "user" {
        user_message(blocks, &content_field, out)
    } else {
        out.extend(assistant_message(blocks, &content_field)?);
        Ok(())
    }
}

/// A `role: "system"` message's text: a string or text blocks (others are dropped).
fn system_message_text(content: Option<&Value>, field: &str) -> Result<Option<String>, TranslateError> {
    let text = match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                let block_field = format!("{field}[{i}]");
                let (block, kind) = block_type(block, &block_field)?;
                if kind == "text" {
                    texts.push(req_str(block, "text", &format!("{block_field}.text"))?.to_string());
                } else {
                    tracing::debug!(field = %block_field, kind, "dropped: a system message holds only text");
                }
            }
            texts.join("\n\n")
        }
        _ => return Err(err(field, "must be a string or an array of content blocks")),
    };
    Ok((!text.is_empty()).then_some(text))
}

/// A `document` block as an OpenAI content part: text sources as text, PDFs as a file part.
fn document_part(block: &Object, field: &str) -> Result<Value, TranslateError> {
    let source_field = format!("{field}.source");
    let source = as_object(present(block, "source").unwrap_or(&Value::Null), &source_field)?;
    let title = opt_str(block, "title", &format!("{field}.title"))?;
    let kind_field = format!("{source_field}.type");
    let titled = |text: String| match title {
        Some(title) => format!("{title}\n\n{text}"),
        None => text,
    };
    match opt_str(source, "type", &kind_field)? {
        Some("text") => {
            let data = req_str(source, "data", &format!("{source_field}.data"))?;
            Ok(json!({"type": "text", "text": titled(data.to_string())}))
        }
        Some("content") => {
            let text = match present(source, "content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|item| item.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => {
                    return Err(err(
                        format!("{source_field}.content"),
                        "must be a string or content blocks",
                    ))
                }
            };
            Ok(json!({"type": "text", "text": titled(text)}))
        }
        Some("base64") => {
            let media_type = req_str(source, "media_type", &format!("{source_field}.media_type"))?;
            let data = req_str(source, "data", &format!("{source_field}.data"))?;
            Ok(json!({"type": "file", "file": {
                "filename": title.unwrap_or("document.pdf"),
                "file_data": format!("data:{media_type};base64,{data}"),
            }}))
        }
        Some("url") => {
            let url = req_str(source, "url", &format!("{source_field}.url"))?;
            Ok(json!({"type": "text", "text": titled(format!("(document at {url})"))}))
        }
        _ => Err(err(
            kind_field,
            "only text, content, base64 and url document sources can be translated",
        )),
    }
}

/// Server tool calls and their results ran on Anthropic's side; the history keeps their
/// text where there is some, so the model still reads what a search found.
fn is_server_tool_block(kind: &str) -> bool {
    kind == "server_tool_use" || kind == "mcp_tool_use" || kind.ends_with("_tool_result")
}

fn block_type<'a>(block: &'a Value, field: &str) -> Result<(&'a Object, &'a str), TranslateError> {
    let block = as_object(block, field)?;
    Ok((block, req_str(block, "type", &format!("{field}.type"))?))
}

fn unsupported(field: &str, kind: &str) -> TranslateError {
    err(
        format!("{field}.type"),
        format!("content block type `{kind}` cannot be sent to an OpenAI model"),
    )
}

/// One Anthropic user turn becomes its tool results as `tool` messages (OpenAI wants them
/// straight after the assistant's calls), then one user message with everything else.
fn user_message(blocks: &[Value], field: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    let mut tool_images = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let block_field = format!("{field}[{j}]");
        let (block, kind) = block_type(block, &block_field)?;
        match kind {
            "text" => {
                let text = req_str(block, "text", &format!("{block_field}.text"))?;
                parts.push(json!({"type": "text", "text": text}));
            }
            "image" => parts.push(image_part_from_block(block, &block_field)?),
            "document" => parts.push(document_part(block, &block_field)?),
            "search_result" => parts.push(json!({"type": "text", "text": search_result_text(block)})),
            "tool_result" => out.push(tool_message(block, &block_field, &mut tool_images)?),
            "thinking" | "redacted_thinking" => {}
            other if is_server_tool_block(other) => {
                tracing::debug!(field = %block_field, kind = other, "dropped: server tool block");
            }
            other => return Err(unsupported(&block_field, other)),
        }
    }
    // Tool messages cannot hold images, so those ride in the user message that follows.
    let mut user_parts = tool_images;
    user_parts.extend(parts);
    let content = match user_parts.as_slice() {
        [] => return Ok(()),
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(user_parts),
    };
    out.push(json!({"role": "user", "content": content}));
    Ok(())
}

fn tool_message(block: &Object, field: &str, images: &mut Vec<Value>) -> Result<Value, TranslateError> {
    let id = req_str(block, "tool_use_id", &format!("{field}.tool_use_id"))?;
    let content_field = format!("{field}.content");
    let mut texts = Vec::new();
    let mut had_image = false;
    match present(block, "content") {
        None => {}
        Some(Value::String(s)) => texts.push(s.clone()),
        Some(Value::Array(items)) => {
            for (k, item) in items.iter().enumerate() {
                let item_field = format!("{content_field}[{k}]");
                let (item, kind) = block_type(item, &item_field)?;
                match kind {
                    "text" => texts.push(req_str(item, "text", &format!("{item_field}.text"))?.to_string()),
                    "image" => {
                        images.push(image_part_from_block(item, &item_field)?);
                        had_image = true;
                    }
                    "document" => match document_part(item, &item_field)? {
                        part if part["type"] == "text" => texts.push(part["text"].as_str().unwrap_or("").to_string()),
                        part => {
                            images.push(part);
                            had_image = true;
                        }
                    },
                    "search_result" => texts.push(search_result_text(item)),
                    other => return Err(unsupported(&item_field, other)),
                }
            }
        }
        Some(_) => return Err(err(content_field, "must be a string or an array of content blocks")),
    }
    let mut text = texts.join("\n");
    if had_image && text.is_empty() {
        text = "(the tool returned an image, attached to the next user message)".into();
    }
    // OpenAI has no error flag on tool results; say it in the text the model reads.
    if opt_bool(block, "is_error", &format!("{field}.is_error"))? == Some(true) {
        text = format!("Error: {text}");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn assistant_message(blocks: &[Value], field: &str) -> Result<Option<Value>, TranslateError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let block_field = format!("{field}[{j}]");
        let (block, kind) = block_type(block, &block_field)?;
        match kind {
            "text" => text.push_str(req_str(block, "text", &format!("{block_field}.text"))?),
            "tool_use" => {
                let id = req_str(block, "id", &format!("{block_field}.id"))?;
                let name = req_str(block, "name", &format!("{block_field}.name"))?;
                let input = present(block, "input").cloned().unwrap_or_else(|| json!({}));
                calls.push(
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}),
                );
            }
            "thinking" | "redacted_thinking" => {}
            other if is_server_tool_block(other) => {
                tracing::debug!(field = %block_field, kind = other, "dropped: server tool block");
            }
            other => return Err(unsupported(&block_field, other)),
        }
    }
    if text.is_empty() && calls.is_empty() {
        return Ok(None);
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(Some(message))
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
        // A typed tool other than `custom` is a server tool Anthropic runs itself: the
        // model elsewhere cannot call it, so it is left out rather than failing the turn.
        if let Some(kind) = opt_str(tool, "type", &kind_field)? {
            if kind != "custom" {
                tracing::debug!(field = %kind_field, kind, "dropped: server tool runs only on Anthropic");
                continue;
            }
        }
        let mut function = Map::new();
        function.insert("name".into(), json!(req_str(tool, "name", &format!("{field}.name"))?));
        if let Some(description) = opt_str(tool, "description", &format!("{field}.description"))? {
            function.insert("description".into(), json!(description));
        }
        let parameters = match present(tool, "input_schema") {
            None => json!({"type": "object", "properties": {}}),
            Some(schema) if schema.is_object() => schema.clone(),
            Some(_) => return Err(err(format!("{field}.input_schema"), "must be a JSON Schema object")),
        };
        function.insert("parameters".into(), parameters);
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

fn search_result_text(block: &Object) -> String {
    let mut text = String::new();
    for key in ["title", "source"] {
        if let Some(value) = block.get(key).and_then(Value::as_str) {
            text.push_str(value);
            text.push('\n');
        }
    }
    if let Some(Value::Array(items)) = block.get("content") {
        for item in items {
            if let Some(t) = item.get("text").and_then(Value::as_str) {
                text.push_str(t);
                text.push('\n');
            }
        }
    }
    text.trim_end().to_string()
}

fn tool_choice(req: &Object, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let Some(choice) = present(req, "tool_choice") else {
        return Ok(());
    };
    let choice = as_object(choice, "tool_choice")?;
    let converted = match req_str(choice, "type", "tool_choice.type")? {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => json!({"type": "function", "function": {"name": req_str(choice, "name", "tool_choice.name")?}}),
        other => {
            return Err(err(
                "tool_choice.type",
                format!("tool choice `{other}` cannot be translated"),
            ))
        }
    };
    out.insert("tool_choice".into(), converted);
    if opt_bool(
        choice,
        "disable_parallel_tool_use",
        "tool_choice.disable_parallel_tool_use",
    )? == Some(true)
    {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(v: Value) -> Result<Value, TranslateError> {
        anthropic_to_openai_request(v.to_string().as_bytes())
    }

    #[test]
    fn refusals_name_the_field() {
        let base = || json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        let cases: Vec<(Value, &str)> = vec![
            (json!({"tools": [{"description": "no name"}]}), "tools[0].name"),
            (
                json!({"mcp_servers": [{"type": "url", "url": "https://x"}]}),
                "mcp_servers",
            ),
            (json!({"system": [{"type": "image"}]}), "system[0].type"),
            (json!({"system": 3}), "system"),
            (json!({"stop_sequences": [1]}), "stop_sequences[0]"),
            (
                json!({"tool_choice": {"type": "whatever"}, "tools": [{"name": "a"}]}),
                "tool_choice.type",
            ),
            (json!({"model": 5}), "model"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
                "messages[0].content[0].source.type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document"}]}]}]}),
                "messages[0].content[0].content[0].source",
            ),
            (json!({"messages": [{"role": "user"}]}), "messages[0].content"),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
                "messages[0].content[0].source.type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "mystery"}]}]}),
                "messages[0].content[0].type",
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
    }

    #[test]
    fn tool_result_images_follow_the_tool_messages() {
        let out = translate(json!({"model":"m","max_tokens":5,"messages":[
            {"role":"user","content":"look"},
            {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"screenshot","input":{}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":"t1","is_error":false,"content":[
                    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"QQ=="}}]},
                {"type":"text","text":"what do you see?"}]}]}))
        .unwrap();
        let messages = out["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[2]["role"], "tool");
        assert_eq!(messages[2]["tool_call_id"], "t1");
        assert!(messages[2]["content"].as_str().unwrap().contains("image"));
        assert_eq!(
            messages[3]["content"][0]["image_url"]["url"],
            "data:image/png;base64,QQ=="
        );
        assert_eq!(messages[3]["content"][1]["text"], "what do you see?");
    }

    #[test]
    fn errors_in_tool_results_are_said_in_the_text() {
        let out = translate(json!({"model":"m","max_tokens":5,"messages":[
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","is_error":true,"content":"no such file"}]}]}))
        .unwrap();
        assert_eq!(
            out["messages"][0],
            json!({"role":"tool","tool_call_id":"t","content":"Error: no such file"})
        );
    }

    #[test]
    fn claude_code_system_messages_documents_and_server_tools_translate() {
        let out = translate(json!({"model":"m","max_tokens":5,
            "system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],
            "thinking":{"type":"enabled","budget_tokens":1024},
            "context_management":{"edits":[]},"output_config":{"effort":"high"},
            "metadata":{"user_id":"u1"},
            "tools":[{"name":"Bash","input_schema":{"type":"object"}},{"type":"web_search_20250305","name":"web_search"}],
            "messages":[
                {"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}},
                    {"type":"document","title":"notes","source":{"type":"text","media_type":"text/plain","data":"abc"}},
                    {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"UEQ="}}]},
                {"role":"assistant","content":[{"type":"server_tool_use","id":"s","name":"web_search","input":{}},
                    {"type":"web_search_tool_result","tool_use_id":"s","content":[]},{"type":"text","text":"ok"}]},
                {"role":"system","content":"Reminder: be brief."},
                {"role":"system","content":[{"type":"text","text":"Second."}]},
                {"role":"user","content":"go"}]}))
        .unwrap();
        let messages = out["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "system", "system", "user"]);
        assert_eq!(messages[0]["content"], "You are Claude Code.");
        assert_eq!(messages[1]["content"][1]["text"], "notes\n\nabc");
        assert_eq!(messages[1]["content"][2]["type"], "file");
        assert_eq!(
            messages[1]["content"][2]["file"]["file_data"],
            "data:application/pdf;base64,UEQ="
        );
        assert_eq!(messages[2]["content"], "ok");
        assert_eq!(messages[3]["content"], "Reminder: be brief.");
        assert_eq!(messages[4]["content"], "Second.");
        assert_eq!(out["tools"].as_array().unwrap().len(), 1);
        assert_eq!(out["user"], "u1");
        for dropped in ["thinking", "context_management", "output_config"] {
            assert!(out.get(dropped).is_none(), "{dropped}");
        }
    }
}

//! A Responses request's `tools`, read once for every translation: function tools as they
//! are, custom (freeform) tools as functions of one string argument whose grammar the model
//! is told, hosted tools left out (only OpenAI runs them).

use super::input::err;
use super::{ResponseContext, CUSTOM_TOOL_INPUT};
use crate::translate::anthropic::TranslateError;
use serde_json::{json, Map, Value};

/// A tool any target can offer the model.
pub(super) enum Tool<'a> {
    Function {
        name: &'a str,
        description: Option<&'a str>,
        /// A JSON Schema object (an empty object schema when the tool has none).
        parameters: Value,
        strict: Option<&'a Value>,
    },
    /// Offered as a function whose one argument ([`custom_input_schema`]) is the raw input.
    Custom { name: &'a str, description: String },
}

/// The tools of `req` that a target other than OpenAI's Responses API can run; custom
/// tools are remembered in `context`, so their calls go back as `custom_tool_call` items.
pub(super) fn tools<'a>(
    req: &'a Map<String, Value>,
    context: &mut ResponseContext,
) -> Result<Vec<Tool<'a>>, TranslateError> {
    let list = match req.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(err("tools", "must be an array")),
    };
    let mut out = Vec::new();
    for (i, tool) in list.iter().enumerate() {
        let field = format!("tools[{i}]");
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("{field}.type"), "is required"))?;
        let name = || {
            tool.get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| err(format!("{field}.name"), "is required"))
        };
        let description = tool.get("description").and_then(Value::as_str);
        match kind {
            "function" => {
                let name = name()?;
                let parameters = match tool.get("parameters") {
                    None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                    Some(schema) if schema.is_object() => schema.clone(),
                    Some(_) => return Err(err(format!("{field}.parameters"), "must be a JSON Schema object")),
                };
                out.push(Tool::Function {
                    name,
                    description,
                    parameters,
                    strict: tool.get("strict").filter(|s| s.is_boolean()),
                });
            }
            "custom" => {
                let name = name()?;
                context.custom_tools.insert(name.to_string());
                let mut about = description.unwrap_or("").to_string();
                // No chat endpoint nor Anthropic enforces a grammar; the model reads it instead.
                if let Some(definition) = tool
                    .get("format")
                    .and_then(|f| f.get("definition"))
                    .and_then(Value::as_str)
                {
                    about.push_str("\n\nThe input must follow this grammar:\n");
                    about.push_str(definition);
                }
                out.push(Tool::Custom {
                    name,
                    description: about,
                });
            }
            other => tracing::debug!(field = %field, kind = other, "dropped: a hosted tool runs only on OpenAI"),
        }
    }
    Ok(out)
}

/// The parameters of a custom tool offered as a function: its raw input as one string.
pub(super) fn custom_input_schema() -> Map<String, Value> {
    let schema = json!({
        "type": "object",
        "properties": {CUSTOM_TOOL_INPUT: {"type": "string", "description": "The raw freeform input for this tool."}},
        "required": [CUSTOM_TOOL_INPUT]
    });
    match schema {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

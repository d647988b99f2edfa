//! What a Responses request's `input` holds, read once for either translation: its items
//! (messages, tool calls and their outputs, reasoning) and the content parts of messages.
//! `request_to_chat.rs` and `request_to_messages.rs` each write them in their dialect; what
//! neither can take is refused here, naming the JSON path and the kind of model (`target`)
//! it cannot be sent to.

use crate::translate::anthropic::TranslateError;
use serde_json::{Map, Value};

pub(super) fn err(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError {
        field: field.into(),
        message: message.into(),
    }
}

pub(super) fn str_field<'a>(object: &'a Map<String, Value>, key: &str, field: &str) -> Result<&'a str, TranslateError> {
    object
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("{field}.{key}"), "is required and must be a string"))
}

/// One content part of a message (or of a tool's output).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum ContentPart<'a> {
    /// `input_text`, `output_text`, `text`, or a `refusal`'s text.
    Text(&'a str),
    /// `input_image` by URL (a `data:` URL or http(s)).
    Image { url: &'a str, detail: Option<&'a str> },
    /// `input_file` given inline.
    File { data: &'a str, filename: Option<&'a str> },
}

pub(super) fn content_part<'a>(part: &'a Value, field: &str, target: &str) -> Result<ContentPart<'a>, TranslateError> {
    let kind = part
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("{field}.type"), "is required"))?;
    let text = |key: &str| part.get(key).and_then(Value::as_str);
    Ok(match kind {
        "input_text" | "output_text" | "text" => ContentPart::Text(
            text("text").ok_or_else(|| err(format!("{field}.text"), "is required and must be a string"))?,
        ),
        "refusal" => ContentPart::Text(text("refusal").unwrap_or("")),
        "input_image" => ContentPart::Image {
            url: text("image_url").ok_or_else(|| {
                err(
                    format!("{field}.image_url"),
                    "an image must be given as image_url (file ids need OpenAI's file store)",
                )
            })?,
            detail: text("detail"),
        },
        "input_file" => ContentPart::File {
            data: text("file_data")
                .ok_or_else(|| err(format!("{field}.file_data"), "a file must be given inline as file_data"))?,
            filename: text("filename"),
        },
        other => {
            return Err(err(
                format!("{field}.type"),
                format!("content part type `{other}` cannot be sent to {target}"),
            ))
        }
    })
}

/// Each part of `parts` with its JSON path (`{field}[j]`).
pub(super) fn content_parts<'a>(
    parts: &'a [Value],
    field: &str,
    target: &str,
) -> Result<Vec<(String, ContentPart<'a>)>, TranslateError> {
    parts
        .iter()
        .enumerate()
        .map(|(j, part)| {
            let path = format!("{field}[{j}]");
            let read = content_part(part, &path, target)?;
            Ok((path, read))
        })
        .collect()
}

/// A message's content: one text, or parts.
#[derive(Debug)]
pub(super) enum Content<'a> {
    Text(&'a str),
    Parts(Vec<(String, ContentPart<'a>)>),
}

/// One item of `input`.
#[derive(Debug)]
pub(super) enum InputItem<'a> {
    /// `role` is one of user, assistant, system, developer.
    Message {
        role: &'a str,
        content: Content<'a>,
    },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    CustomToolCall {
        call_id: &'a str,
        name: &'a str,
        input: &'a str,
    },
    /// `function_call_output` or `custom_tool_call_output`: the output as sent.
    ToolOutput {
        call_id: &'a str,
        output: Option<&'a Value>,
    },
    Reasoning(&'a Map<String, Value>),
    /// A hosted tool's call or output, or an item reference: nothing outside OpenAI runs or
    /// resolves them.
    Hosted(&'a str),
}

/// Reads one item of `input` (at `field`, e.g. `input[3]`).
pub(super) fn input_item<'a>(item: &'a Value, field: &str, target: &str) -> Result<InputItem<'a>, TranslateError> {
    let Some(object) = item.as_object() else {
        return Err(err(field, "must be an object"));
    };
    let kind = object.get("type").and_then(Value::as_str).unwrap_or("message");
    Ok(match kind {
        "message" => {
            let role = str_field(object, "role", field)?;
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(err(
                    format!("{field}.role"),
                    "must be user, assistant, system or developer",
                ));
            }
            let content_field = format!("{field}.content");
            let content = match object.get("content") {
                Some(Value::String(text)) => Content::Text(text),
                Some(Value::Array(parts)) => Content::Parts(content_parts(parts, &content_field, target)?),
                _ => return Err(err(content_field, "must be a string or an array of content parts")),
            };
            InputItem::Message { role, content }
        }
        "function_call" => InputItem::FunctionCall {
            call_id: str_field(object, "call_id", field)?,
            name: str_field(object, "name", field)?,
            arguments: str_field(object, "arguments", field)?,
        },
        "custom_tool_call" => InputItem::CustomToolCall {
            call_id: str_field(object, "call_id", field)?,
            name: str_field(object, "name", field)?,
            input: str_field(object, "input", field)?,
        },
        "function_call_output" | "custom_tool_call_output" => InputItem::ToolOutput {
            call_id: str_field(object, "call_id", field)?,
            output: object.get("output"),
        },
        "reasoning" => InputItem::Reasoning(object),
        other if other.ends_with("_call") || other.ends_with("_call_output") || other == "item_reference" => {
            InputItem::Hosted(other)
        }
        other => {
            return Err(err(
                format!("{field}.type"),
                format!("input item type `{other}` cannot be sent to {target}"),
            ))
        }
    })
}

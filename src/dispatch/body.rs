//! Top-level rewrites of a chat request body: the model a target knows, `stream` for
//! workers, an agent's system prompt. Made in the body's bytes (`translate::fields`):
//! nothing else in it is parsed into values or printed again.

use crate::translate::fields::{prepend_to_array, Edit, RawObject};
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
#[error("the request body is not a JSON object with a messages array")]
pub struct BodyError;

#[derive(Default, Clone, Copy)]
pub struct Rewrite<'a> {
    pub model: Option<&'a str>,
    /// Sets `stream: true` (a streaming client's job for a worker).
    pub force_stream: bool,
    pub system_prompt: Option<&'a str>,
    /// Sets `stream_options.include_usage`.
    pub ask_usage: bool,
}

impl Rewrite<'_> {
    pub fn is_noop(&self) -> bool {
        self.model.is_none() && !self.force_stream && self.system_prompt.is_none() && !self.ask_usage
    }
}

/// `body` unchanged (shared, not copied) when there is nothing to rewrite; otherwise only
/// the named fields' bytes change.
pub fn rewrite(body: &Bytes, spec: Rewrite<'_>) -> Result<Bytes, BodyError> {
    if spec.is_noop() {
        return Ok(body.clone());
    }
    let object = RawObject::parse(body).map_err(|_| BodyError)?;
    let mut more = Vec::with_capacity(3);
    if spec.force_stream {
        more.push(("stream", "true".to_string()));
    }
    if spec.ask_usage {
        more.push(("stream_options", r#"{"include_usage":true}"#.to_string()));
    }
    if let Some(prompt) = spec.system_prompt {
        let system = serde_json::json!({"role": "system", "content": prompt}).to_string();
        let messages = match object.get("messages") {
            Some(messages) => prepend_to_array(messages, &system).ok_or(BodyError)?,
            None => format!("[{system}]"),
        };
        more.push(("messages", messages));
    }
    Ok(with_fields(&object, spec.model, &more))
}

/// The same for an Anthropic Messages body: the agent's prompt goes before `system`.
pub fn rewrite_anthropic(body: &Bytes, model: Option<&str>, system_prompt: Option<&str>) -> Result<Bytes, BodyError> {
    if model.is_none() && system_prompt.is_none() {
        return Ok(body.clone());
    }
    let object = RawObject::parse(body).map_err(|_| BodyError)?;
    let mut more = Vec::with_capacity(1);
    if let Some(prompt) = system_prompt {
        let existing: Option<serde_json::Value> = match object.get("system") {
            Some(value) => Some(serde_json::from_str(value).map_err(|_| BodyError)?),
            None => None,
        };
        let system = match existing {
            None | Some(serde_json::Value::Null) => serde_json::json!(prompt),
            Some(serde_json::Value::String(text)) => serde_json::json!(format!("{prompt}\n\n{text}")),
            Some(serde_json::Value::Array(mut blocks)) => {
                blocks.insert(0, serde_json::json!({"type": "text", "text": prompt}));
                serde_json::Value::Array(blocks)
            }
            Some(_) => return Err(BodyError),
        };
        more.push(("system", system.to_string()));
    }
    Ok(with_fields(&object, model, &more))
}

/// The object with `model` (when given) and each of `more` (a key and its new JSON text)
/// set in place.
pub(super) fn with_fields(object: &RawObject<'_>, model: Option<&str>, more: &[(&str, String)]) -> Bytes {
    let model = model.map(json_string);
    let mut edits: Vec<(&str, Edit<'_>)> = Vec::with_capacity(more.len() + 1);
    if let Some(model) = &model {
        edits.push(("model", Edit::Set(model)));
    }
    edits.extend(more.iter().map(|(key, value)| (*key, Edit::Set(value.as_str()))));
    Bytes::from(object.edit(&edits))
}

/// A string as JSON text.
pub fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn rewrites_only_what_is_asked() {
        let body = Bytes::from_static(
            br#"{"model":"agent:coder","messages":[{"role":"user","content":"hi \"x\""}],"temperature":0.5}"#,
        );
        let out = rewrite(
            &body,
            Rewrite {
                model: Some("qwen"),
                force_stream: true,
                system_prompt: Some("Be brief."),
                ask_usage: false,
            },
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "qwen");
        assert_eq!(v["stream"], true);
        assert_eq!(v["temperature"], 0.5);
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["messages"][0]["content"], "Be brief.");
        assert_eq!(v["messages"][1]["content"], "hi \"x\"");
        let same = rewrite(&body, Rewrite::default()).unwrap();
        assert_eq!(same, body);
        assert_eq!(same.as_ptr(), body.as_ptr(), "an unchanged body is shared, not copied");
    }

    #[test]
    fn a_rewrite_keeps_every_byte_it_does_not_change() {
        let body = Bytes::from_static(
            b"{ \"model\" : \"a\",\n \"temperature\": 0.70, \"messages\": [ {\"role\":\"user\",\"content\":\"\\u00e9\",\"model\":1} ] }",
        );
        let out = rewrite(
            &body,
            Rewrite {
                model: Some("b\"c"),
                system_prompt: Some("S"),
                ..Rewrite::default()
            },
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{ \"model\" : \"b\\\"c\",\n \"temperature\": 0.70, \"messages\": [{\"content\":\"S\",\"role\":\"system\"}, {\"role\":\"user\",\"content\":\"\\u00e9\",\"model\":1} ] }"
        );
        assert!(rewrite(
            &Bytes::from_static(b"[1]"),
            Rewrite {
                force_stream: true,
                ..Rewrite::default()
            }
        )
        .is_err());
        let not_a_list = Bytes::from_static(br#"{"messages":{}}"#);
        assert!(rewrite(
            &not_a_list,
            Rewrite {
                system_prompt: Some("S"),
                ..Rewrite::default()
            }
        )
        .is_err());
    }

    #[test]
    fn anthropic_system_prompts_are_prepended_in_every_shape() {
        let cases = [
            (r#"{"model":"m","messages":[]}"#, serde_json::json!("Agent.")),
            (
                r#"{"model":"m","system":"Own.","messages":[]}"#,
                serde_json::json!("Agent.\n\nOwn."),
            ),
            (
                r#"{"model":"m","system":[{"type":"text","text":"Own.","cache_control":{"type":"ephemeral"}}],"messages":[]}"#,
                serde_json::json!([{"type":"text","text":"Agent."},{"type":"text","text":"Own.","cache_control":{"type":"ephemeral"}}]),
            ),
        ];
        for (body, expected) in cases {
            let out = rewrite_anthropic(&Bytes::from(body), Some("claude-x"), Some("Agent.")).unwrap();
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["system"], expected, "{body}");
            assert_eq!(v["model"], "claude-x");
        }
        let plain = Bytes::from_static(br#"{"model":"m","messages":[]}"#);
        let same = rewrite_anthropic(&plain, None, None).unwrap();
        assert_eq!(same.as_ptr(), plain.as_ptr(), "an unchanged body is shared, not copied");
    }
}

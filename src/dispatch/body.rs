//! Top-level rewrites of a chat request body: the model a target knows, `stream` for
//! workers, an agent's system prompt. Nested values stay raw, never re-serialised.

use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

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

/// `body` unchanged (shared, not copied) when there is nothing to rewrite.
pub fn rewrite(body: &Bytes, spec: Rewrite<'_>) -> Result<Bytes, BodyError> {
    if spec.is_noop() {
        return Ok(body.clone());
    }
    let mut fields: BTreeMap<String, &RawValue> = serde_json::from_slice(body).map_err(|_| BodyError)?;
    let model_raw;
    if let Some(model) = spec.model {
        model_raw = raw(&serde_json::to_string(model).map_err(|_| BodyError)?)?;
        fields.insert("model".into(), &model_raw);
    }
    let true_raw;
    if spec.force_stream {
        true_raw = raw("true")?;
        fields.insert("stream".into(), &true_raw);
    }
    let usage_raw;
    if spec.ask_usage {
        usage_raw = raw(r#"{"include_usage":true}"#)?;
        fields.insert("stream_options".into(), &usage_raw);
    }
    let messages_raw;
    if let Some(prompt) = spec.system_prompt {
        let messages: Vec<&RawValue> = match fields.get("messages") {
            Some(m) => serde_json::from_str(m.get()).map_err(|_| BodyError)?,
            None => Vec::new(),
        };
        let system = serde_json::json!({"role": "system", "content": prompt}).to_string();
        let mut joined =
            String::with_capacity(system.len() + 2 + messages.iter().map(|m| m.get().len() + 1).sum::<usize>());
        joined.push('[');
        joined.push_str(&system);
        for m in messages {
            joined.push(',');
            joined.push_str(m.get());
        }
        joined.push(']');
        messages_raw = raw(&joined)?;
        fields.insert("messages".into(), &messages_raw);
    }
    serde_json::to_vec(&fields).map(Bytes::from).map_err(|_| BodyError)
}

/// The same for an Anthropic Messages body: the agent's prompt goes before `system`.
pub fn rewrite_anthropic(body: &Bytes, model: Option<&str>, system_prompt: Option<&str>) -> Result<Bytes, BodyError> {
    if model.is_none() && system_prompt.is_none() {
        return Ok(body.clone());
    }
    let mut fields: BTreeMap<String, &RawValue> = serde_json::from_slice(body).map_err(|_| BodyError)?;
    let model_raw;
    if let Some(model) = model {
        model_raw = raw(&serde_json::to_string(model).map_err(|_| BodyError)?)?;
        fields.insert("model".into(), &model_raw);
    }
    let system_raw;
    if let Some(prompt) = system_prompt {
        let existing: Option<serde_json::Value> = match fields.get("system") {
            Some(value) => Some(serde_json::from_str(value.get()).map_err(|_| BodyError)?),
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
        system_raw = raw(&system.to_string())?;
        fields.insert("system".into(), &system_raw);
    }
    serde_json::to_vec(&fields).map(Bytes::from).map_err(|_| BodyError)
}

fn raw(text: &str) -> Result<Box<RawValue>, BodyError> {
    RawValue::from_string(text.to_string()).map_err(|_| BodyError)
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

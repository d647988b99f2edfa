//! Pieces both directions share: reading untrusted JSON with paths for errors, ids,
//! images, stop reasons and usage.

use super::error::err;
use super::TranslateError;
use serde_json::{json, Map, Value};

pub(super) type Object = Map<String, Value>;

pub(super) fn parse_object(body: &[u8]) -> Result<Object, TranslateError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(err("body", "must be a JSON object")),
        Err(e) => Err(err("body", format!("is not valid JSON: {e}"))),
    }
}

/// `obj[key]`, with JSON `null` read as absent: SDKs send `null` for "not set".
pub(super) fn present<'a>(obj: &'a Object, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

pub(super) fn opt_str<'a>(obj: &'a Object, key: &str, field: &str) -> Result<Option<&'a str>, TranslateError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(field, "must be a string")),
    }
}

pub(super) fn req_str<'a>(obj: &'a Object, key: &str, field: &str) -> Result<&'a str, TranslateError> {
    opt_str(obj, key, field)?.ok_or_else(|| err(field, "is required"))
}

pub(super) fn as_object<'a>(value: &'a Value, field: &str) -> Result<&'a Object, TranslateError> {
    value.as_object().ok_or_else(|| err(field, "must be an object"))
}

pub(super) fn as_array<'a>(value: &'a Value, field: &str) -> Result<&'a Vec<Value>, TranslateError> {
    value.as_array().ok_or_else(|| err(field, "must be an array"))
}

pub(super) fn opt_number(obj: &Object, key: &str, field: &str) -> Result<Option<f64>, TranslateError> {
    match present(obj, key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| err(field, "must be a number")),
    }
}

pub(super) fn opt_bool(obj: &Object, key: &str, field: &str) -> Result<Option<bool>, TranslateError> {
    match present(obj, key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| err(field, "must be a boolean")),
    }
}

pub(super) use crate::clock::now_unix;

fn fresh() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `chatcmpl-abc` → `msg_abc`, so one exchange keeps a recognisable id in both dialects.
pub(super) fn anthropic_message_id(openai_id: Option<&str>) -> String {
    match openai_id.filter(|id| !id.is_empty()) {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => format!("msg_{}", fresh()),
    }
}

/// `msg_abc` → `chatcmpl-abc`.
pub(super) fn openai_completion_id(anthropic_id: Option<&str>) -> String {
    match anthropic_id.filter(|id| !id.is_empty()) {
        Some(id) if id.starts_with("chatcmpl-") => id.to_string(),
        Some(id) => format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id)),
        None => format!("chatcmpl-{}", fresh()),
    }
}

pub(super) fn fresh_tool_use_id() -> String {
    format!("toolu_{}", fresh())
}

/// Anthropic only accepts tool ids matching `[A-Za-z0-9_-]+`, while OpenAI-compatible
/// servers mint ids like `functions.get_weather:0`. Mapping each other character to `_`
/// is deterministic, so a `tool_use` and its `tool_result` still pair up.
pub(super) fn anthropic_tool_id(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        fresh_tool_use_id()
    } else {
        cleaned
    }
}

/// An OpenAI `image_url.url` as an Anthropic image block.
pub(super) fn image_block_from_url(url: &str, field: &str) -> Result<Value, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) = rest
            .split_once(',')
            .ok_or_else(|| err(field, "is a data URL without a comma"))?;
        let media_type = header
            .strip_suffix(";base64")
            .and_then(|h| h.split(';').next())
            .filter(|mt| !mt.is_empty())
            .ok_or_else(|| err(field, "only base64 data URLs with a media type can be translated"))?;
        return Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(err(field, "must be an http(s) URL or a base64 data URL"))
}

/// An Anthropic image block as an OpenAI `image_url` content part.
pub(super) fn image_part_from_block(block: &Object, field: &str) -> Result<Value, TranslateError> {
    let source_field = format!("{field}.source");
    let source = as_object(present(block, "source").unwrap_or(&Value::Null), &source_field)?;
    let kind_field = format!("{source_field}.type");
    let url = match opt_str(source, "type", &kind_field)? {
        Some("base64") => {
            let media_type = req_str(source, "media_type", &format!("{source_field}.media_type"))?;
            let data = req_str(source, "data", &format!("{source_field}.data"))?;
            format!("data:{media_type};base64,{data}")
        }
        Some("url") => req_str(source, "url", &format!("{source_field}.url"))?.to_string(),
        _ => return Err(err(kind_field, "only base64 and url image sources can be translated")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`. Some OpenAI-compatible servers say
/// `stop` after emitting tool calls; agent loops key on `tool_use`, so tool calls win.
pub(super) fn stop_reason_from_finish(finish: Option<&str>, has_tool_use: bool) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        Some("tool_calls") | Some("function_call") => "tool_use",
        _ if has_tool_use => "tool_use",
        _ => "end_turn",
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`; a matched stop sequence is `stop`.
pub(super) fn finish_from_stop_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Token counts in Anthropic's terms, where `input` excludes cached prompt tokens; OpenAI's
/// `prompt_tokens` is the sum of all three prompt counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

fn count(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

impl Usage {
    pub fn from_openai(usage: &Value) -> Usage {
        let prompt = count(usage, "prompt_tokens").unwrap_or(0);
        let cached = usage
            .get("prompt_tokens_details")
            .and_then(|d| count(d, "cached_tokens"))
            .unwrap_or(0)
            .min(prompt);
        Usage {
            input: prompt - cached,
            output: count(usage, "completion_tokens").unwrap_or(0),
            cache_read: cached,
            cache_creation: 0,
        }
    }

    /// Anthropic streams report usage twice (`message_start`, then cumulative counts in
    /// `message_delta`); the fields a later report carries replace the earlier ones.
    pub fn update_from_anthropic(&mut self, usage: &Value) {
        let fields = [
            ("input_tokens", &mut self.input),
            ("output_tokens", &mut self.output),
            ("cache_read_input_tokens", &mut self.cache_read),
            ("cache_creation_input_tokens", &mut self.cache_creation),
        ];
        for (key, slot) in fields {
            if let Some(n) = count(usage, key) {
                *slot = n;
            }
        }
    }

    pub fn from_anthropic(usage: &Value) -> Usage {
        let mut out = Usage::default();
        out.update_from_anthropic(usage);
        out
    }

    pub fn prompt_tokens(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_creation)
    }

    pub fn to_openai(self) -> Value {
        let prompt = self.prompt_tokens();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }

    pub fn to_anthropic(self) -> Value {
        json!({
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_suffix_across_dialects() {
        assert_eq!(anthropic_message_id(Some("chatcmpl-abc")), "msg_abc");
        assert_eq!(anthropic_message_id(Some("msg_x")), "msg_x");
        assert_eq!(anthropic_message_id(Some("xyz")), "msg_xyz");
        assert!(anthropic_message_id(None).starts_with("msg_"));
        assert_eq!(openai_completion_id(Some("msg_abc")), "chatcmpl-abc");
        assert!(openai_completion_id(Some("")).starts_with("chatcmpl-"));
        assert_eq!(anthropic_tool_id("functions.get_weather:0"), "functions_get_weather_0");
        assert_eq!(anthropic_tool_id("call_Ab-9"), "call_Ab-9");
    }

    #[test]
    fn images_convert_both_ways() {
        let block = image_block_from_url("data:image/png;base64,AAAA", "f").unwrap();
        assert_eq!(
            block,
            json!({"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}})
        );
        let part = image_part_from_block(block.as_object().unwrap(), "f").unwrap();
        assert_eq!(part["image_url"]["url"], "data:image/png;base64,AAAA");
        assert_eq!(
            image_block_from_url("https://x/y.png", "f").unwrap()["source"]["type"],
            "url"
        );
        assert_eq!(image_block_from_url("data:text/plain,hi", "f").unwrap_err().field, "f");
        assert_eq!(image_block_from_url("ftp://x", "f").unwrap_err().field, "f");
        let file = json!({"type":"image","source":{"type":"file","file_id":"f1"}});
        assert_eq!(
            image_part_from_block(file.as_object().unwrap(), "m").unwrap_err().field,
            "m.source.type"
        );
    }

    #[test]
    fn usage_maps_cached_tokens_both_ways() {
        let openai =
            json!({"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 30}});
        let usage = Usage::from_openai(&openai);
        assert_eq!(
            usage.to_anthropic(),
            json!({"input_tokens":70,"output_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":30})
        );
        assert_eq!(usage.to_openai()["prompt_tokens"], 100);
        assert_eq!(usage.to_openai()["prompt_tokens_details"]["cached_tokens"], 30);
        let anthropic =
            json!({"input_tokens":5,"output_tokens":2,"cache_read_input_tokens":10,"cache_creation_input_tokens":20});
        let usage = Usage::from_anthropic(&anthropic);
        assert_eq!(usage.to_openai()["prompt_tokens"], 35);
        assert_eq!(usage.to_openai()["total_tokens"], 37);
    }

    #[test]
    fn stop_reasons_map_both_ways() {
        let table = [
            ("stop", "end_turn", "stop"),
            ("length", "max_tokens", "length"),
            ("tool_calls", "tool_use", "tool_calls"),
            ("content_filter", "refusal", "content_filter"),
        ];
        for (finish, stop, back) in table {
            assert_eq!(stop_reason_from_finish(Some(finish), false), stop);
            assert_eq!(finish_from_stop_reason(Some(stop)), back);
        }
        assert_eq!(finish_from_stop_reason(Some("stop_sequence")), "stop");
        assert_eq!(stop_reason_from_finish(Some("stop"), true), "tool_use");
        assert_eq!(stop_reason_from_finish(None, false), "end_turn");
    }
}

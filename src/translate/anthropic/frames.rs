//! Server-sent events out: the two framings the dialects use (events in are read by
//! `translate::sse`).

use bytes::Bytes;
use serde_json::Value;

/// An Anthropic event: named, its `type` repeated in the data as Anthropic does.
pub(super) fn anthropic_event(kind: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// An OpenAI event: data only.
pub(super) fn openai_event(data: &Value) -> Bytes {
    crate::translate::chunks::sse_event(&data.to_string())
}

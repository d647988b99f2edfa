//! The OpenAI Responses API (`POST /v1/responses`, what Codex and the official SDKs speak)
//! to and from OpenAI Chat Completions, which every tier understands: GPU workers and
//! chat-only providers directly, Anthropic providers through `translate::anthropic`
//! (Responses ⇄ Chat ⇄ Messages), CLI workers as their jobs.
//!
//! `request_to_chat.rs` turns a Responses request into a chat request plus the
//! [`ResponseContext`] the answer needs; `response_from_chat.rs` turns a whole
//! `chat.completion` into a `response` object; `stream_from_chat.rs` turns chat chunks into
//! the Responses event sequence, with sequence numbers, as they arrive.
//!
//! Anthropic providers get a direct translation instead (`request_to_messages.rs`,
//! `response_from_messages.rs`, `stream_from_messages.rs`), so thinking blocks and their
//! signatures survive as reasoning items; OpenAI providers get the request as it came
//! (`dispatch::responses`).
//!
//! Custom (freeform) tools such as Codex's `apply_patch` become function tools with one
//! string parameter `input`; calls to them come back as `custom_tool_call` items carrying
//! that string. Reasoning items in the input are dropped (their encrypted content means
//! something only to OpenAI); hosted tools (`web_search`, `file_search`, …) and their call
//! items are left out with a debug log, since the model behind a chat endpoint cannot run
//! them. Server-side state is not kept: `previous_response_id` is refused with a 400.

mod events;
mod input;
mod request_to_chat;
mod request_to_messages;
mod response_from_chat;
mod response_from_messages;
mod stream_from_chat;
mod stream_from_messages;
mod tools;

#[cfg(test)]
mod messages_tests;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use request_to_chat::responses_to_chat_request;
pub use request_to_messages::{responses_to_messages_request, thinking_budget, DEFAULT_ANSWER_TOKENS};
pub use response_from_chat::chat_to_response;
pub use response_from_messages::messages_to_response;
pub use stream_from_chat::ChatToResponsesStream;
pub use stream_from_messages::MessagesToResponsesStream;

use serde_json::{Map, Value};
use std::collections::HashSet;

/// What answering a request in the Responses dialect needs to know about the request.
#[derive(Debug, Clone, Default)]
pub struct ResponseContext {
    /// As the client asked for it.
    pub model: String,
    /// Tools the client declared as custom (freeform): calls to them are `custom_tool_call`.
    pub custom_tools: HashSet<String>,
    /// Request fields a `response` object repeats back (instructions, tools, tool_choice, …).
    pub echo: Map<String, Value>,
}

/// The argument name a custom tool's freeform input travels in as a function tool.
pub const CUSTOM_TOOL_INPUT: &str = "input";

/// A fresh item id with OpenAI's prefix style (`msg_…`, `fc_…`, `resp_…`).
pub(crate) fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let suffix: String = (0..24)
        .map(|_| {
            let n = rng.gen_range(0..36u8);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect();
    format!("{prefix}_{suffix}")
}

/// Anthropic's thinking blocks inside a Responses reasoning item's `encrypted_content`:
/// the block (text and signature, or redacted data) as base64url JSON behind a marker, so
/// it comes back exactly as Anthropic wrote it, whatever the client does to the summary.
pub(crate) mod reasoning_payload {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::Value;

    const MARKER: &str = "auxot.anthropic.v1.";

    /// `block` is a `thinking` or `redacted_thinking` content block.
    pub fn encode(block: &Value) -> String {
        format!("{MARKER}{}", URL_SAFE_NO_PAD.encode(block.to_string()))
    }

    /// The block inside a payload auxot wrote; `None` for anything else (OpenAI's own
    /// encrypted reasoning, a damaged payload).
    pub fn decode(payload: &str) -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(payload.strip_prefix(MARKER)?).ok()?;
        let block: Value = serde_json::from_slice(&bytes).ok()?;
        let valid = match block.get("type").and_then(Value::as_str)? {
            "thinking" => block.get("thinking")?.is_string() && block.get("signature")?.is_string(),
            "redacted_thinking" => block.get("data")?.is_string(),
            _ => false,
        };
        valid.then_some(block)
    }
}

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
//! Custom (freeform) tools such as Codex's `apply_patch` become function tools with one
//! string parameter `input`; calls to them come back as `custom_tool_call` items carrying
//! that string. Reasoning items in the input are dropped (their encrypted content means
//! something only to OpenAI); hosted tools (`web_search`, `file_search`, …) and their call
//! items are left out with a debug log, since the model behind a chat endpoint cannot run
//! them. Server-side state is not kept: `previous_response_id` is refused with a 400.

mod request_to_chat;
mod response_from_chat;
mod stream_from_chat;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use request_to_chat::responses_to_chat_request;
pub use response_from_chat::chat_to_response;
pub use stream_from_chat::ChatToResponsesStream;

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

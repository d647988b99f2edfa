//! OpenAI chat ⇄ Anthropic messages, both ways: requests, responses and SSE streams.
//!
//! Every function here is pure (no I/O besides reading the clock for `created`), never
//! panics on any input, and refuses what it cannot translate faithfully with a
//! [`TranslateError`] that names the offending JSON path, rather than guessing.
//!
//! Thinking: `thinking` and `redacted_thinking` content is dropped whenever it heads for
//! an OpenAI model or client. Its signatures are only meaningful to Anthropic, so
//! thinking passes through only Anthropic→Anthropic, which never calls this module.
//! Reasoning text some OpenAI-compatible servers add (`reasoning_content`) is dropped
//! toward Anthropic clients for the same reason: a thinking block would need a signature.

mod common;
mod error;
mod frames;
mod request_to_anthropic;
mod request_to_openai;
mod response;
mod stream_to_anthropic;
mod stream_to_openai;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use error::{
    anthropic_error_type, error_body_anthropic, error_body_openai, openai_error_type, upstream_error_message,
    TranslateError,
};
pub use request_to_anthropic::openai_to_anthropic_request;
pub use request_to_openai::anthropic_to_openai_request;
pub use response::{anthropic_to_openai_response, openai_to_anthropic_response};
pub use stream_to_anthropic::OpenAiToAnthropicStream;
pub use stream_to_openai::AnthropicToOpenAiStream;

//! Format work: OpenAI chat chunks into SSE or into one completion (`chunks.rs`), and
//! OpenAI ⇄ Anthropic translation of requests, responses and SSE streams (`anthropic/`).

pub mod anthropic;
pub mod chunks;

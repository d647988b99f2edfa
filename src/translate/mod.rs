//! Format work: OpenAI chat chunks into SSE or into one completion (`chunks.rs`).
//! OpenAI ⇄ Anthropic translation lands here with the translation issue.

pub mod chunks;

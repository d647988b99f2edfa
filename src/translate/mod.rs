//! Format work: OpenAI chat chunks into SSE or into one completion (`chunks.rs`), and
//! OpenAI ⇄ Anthropic translation of requests, responses and SSE streams (`anthropic/`).

pub mod anthropic;
pub mod chunks;
pub mod embeddings;
pub mod fields;
pub mod late_system;
pub mod responses;
pub mod sse;

/// The two API dialects auxot speaks to clients and upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions (`/v1/chat/completions`); what workers speak too.
    OpenAi,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

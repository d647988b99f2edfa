//! What a model server's answer says about tokens, whichever server it is: OpenAI's
//! `usage` (asked for with `include_usage`), llama.cpp's `timings`, Ollama's counts.

use crate::workers::protocol::{CompletionTokensDetails, PromptTokensDetails, Usage};
use serde::Deserialize;

/// The parts of a stream event the worker looks at; the event itself is forwarded raw.
/// Counts come from `usage` (asked for with `include_usage`); servers that ignore that
/// report their own: llama.cpp's `timings` (`prompt_n` + `cache_n` prompt tokens,
/// `predicted_n` generated), Ollama's `prompt_eval_count`/`eval_count`.
#[derive(Deserialize)]
pub(super) struct ChunkProbe {
    #[serde(default)]
    pub(super) usage: Option<UpstreamUsage>,
    #[serde(default)]
    timings: Option<LlamaTimings>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    pub(super) error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub(super) struct UpstreamUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Deserialize)]
struct LlamaTimings {
    #[serde(default)]
    prompt_n: Option<u64>,
    #[serde(default)]
    cache_n: Option<u64>,
    #[serde(default)]
    predicted_n: Option<u64>,
}

impl From<UpstreamUsage> for Usage {
    fn from(u: UpstreamUsage) -> Self {
        let total = if u.total_tokens == 0 {
            u.prompt_tokens + u.completion_tokens
        } else {
            u.total_tokens
        };
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: total,
            // Some servers send the details with zeros or nulls: zero is no news.
            prompt_tokens_details: u.prompt_tokens_details.filter(|d| d.cached_tokens > 0),
            completion_tokens_details: u.completion_tokens_details.filter(|d| d.reasoning_tokens > 0),
            ..Usage::default()
        }
    }
}

impl ChunkProbe {
    /// The counts this event reports, by the most exact field it has.
    pub(super) fn usage(self) -> Option<Usage> {
        if let Some(usage) = self.usage {
            return Some(usage.into());
        }
        if let Some(t) = self.timings.filter(|t| t.prompt_n.is_some() || t.predicted_n.is_some()) {
            let prompt = t.prompt_n.unwrap_or(0) + t.cache_n.unwrap_or(0);
            return Some(Usage::new(prompt, t.predicted_n.unwrap_or(0)));
        }
        match (self.prompt_eval_count, self.eval_count) {
            (None, None) => None,
            (prompt, output) => Some(Usage::new(prompt.unwrap_or(0), output.unwrap_or(0))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_that_ignore_include_usage_still_report_counts() {
        // llama.cpp's last chunk: `timings` (prompt_n excludes the cache_n reused tokens).
        let llama: ChunkProbe = serde_json::from_str(
            r#"{"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"timings":{"cache_n":4,"prompt_n":24,"prompt_ms":30.1,"predicted_n":12,"predicted_ms":80.2}}"#,
        )
        .unwrap();
        assert_eq!(llama.usage(), Some(Usage::new(28, 12)));
        let ollama: ChunkProbe =
            serde_json::from_str(r#"{"done":true,"prompt_eval_count":26,"eval_count":290}"#).unwrap();
        assert_eq!(ollama.usage(), Some(Usage::new(26, 290)));
        let vllm: ChunkProbe = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,"prompt_tokens_details":null}}"#,
        )
        .unwrap();
        assert_eq!(vllm.usage(), Some(Usage::new(9, 3)));
        let openai_details: ChunkProbe = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#,
        )
        .unwrap();
        let usage = openai_details.usage().unwrap();
        assert_eq!(usage.prompt_tokens_details.map(|d| d.cached_tokens), Some(4));
        assert_eq!(usage.completion_tokens_details.map(|d| d.reasoning_tokens), Some(2));
        let nothing: ChunkProbe = serde_json::from_str(r#"{"choices":[{"delta":{"content":"x"}}]}"#).unwrap();
        assert_eq!(nothing.usage(), None);
    }

    #[test]
    fn usage_is_probed_from_chunks() {
        let probe: ChunkProbe =
            serde_json::from_str(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#).unwrap();
        let usage: Usage = probe.usage.unwrap().into();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
            (3, 4, 7)
        );
        let probe: ChunkProbe = serde_json::from_str(r#"{"choices":[{"delta":{}}],"usage":null}"#).unwrap();
        assert!(probe.usage.is_none() && probe.error.is_none());
    }
}

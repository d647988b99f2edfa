//! `count_tokens` for a Messages client: the Anthropic provider the request would go to
//! first answers it exactly; otherwise an estimate, documented as such: about four
//! characters per token over every text the model would read (system, messages, tool
//! definitions). No tokenizer ships with auxot.

use super::passthrough::collect;
use super::ExchangeError;
use crate::dispatch::{ChatRequest, Dispatcher};
use crate::providers::ChatOutcome;
use bytes::Bytes;
use serde_json::Value;

/// A count, as the client will get it.
pub enum Count {
    /// The provider's own answer, as it sent it.
    Exact(Bytes),
    /// The provider refused the request itself (a 4xx other than 429): its answer, passed on.
    Refused { status: u16, body: Bytes },
    /// Input tokens, estimated.
    Estimate(usize),
}

/// What the model would read, as the client sent it.
pub struct CountInput<'a> {
    pub messages: &'a [Value],
    pub system: Option<&'a Value>,
    pub tools: &'a [Value],
}

pub async fn count_tokens(
    dispatcher: &Dispatcher,
    request: &ChatRequest,
    input: CountInput<'_>,
) -> Result<Count, ExchangeError> {
    match dispatcher.count_tokens_upstream(request).await {
        Some(Ok(ChatOutcome::Reply(reply))) => {
            let answer = collect(reply.body).await.map_err(ExchangeError::Unreadable)?;
            return Ok(Count::Exact(answer));
        }
        Some(Ok(ChatOutcome::Failed(failure))) if failure.status < 500 && failure.status != 429 => {
            return Ok(Count::Refused {
                status: failure.status,
                body: failure.body,
            });
        }
        Some(other) => {
            let why = match other {
                Ok(ChatOutcome::Failed(failure)) => failure.message(),
                Err(e) => e.to_string(),
                Ok(ChatOutcome::Reply(_)) => String::new(),
            };
            tracing::debug!(why = %why, "count_tokens upstream failed; estimating instead");
        }
        None => {}
    }
    Ok(Count::Estimate(estimate(&input)))
}

fn estimate(input: &CountInput<'_>) -> usize {
    let mut chars = 0usize;
    for message in input.messages {
        chars += text_chars(message);
    }
    chars += input.system.map_or(0, text_chars);
    for tool in input.tools {
        chars += tool.to_string().chars().count();
    }
    // Per-message framing costs a few tokens in every real tokenizer.
    chars.div_ceil(4) + 3 * input.messages.len()
}

/// Characters of every string value (text, tool inputs) under `value`; images count as
/// a fixed amount instead of their base64.
fn text_chars(value: &Value) -> usize {
    match value {
        Value::String(s) => s.chars().count(),
        Value::Array(items) => items.iter().map(text_chars).sum(),
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("image") {
                return 1600 * 4;
            }
            map.iter()
                .filter(|(key, _)| !matches!(key.as_str(), "type" | "role" | "id" | "tool_use_id" | "cache_control"))
                .map(|(_, v)| text_chars(v))
                .sum()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_estimate_reads_texts_not_framing_and_counts_an_image_as_a_fixed_size() {
        let messages = vec![
            json!({"role": "user", "content": "abcdefgh"}),
            json!({"role": "user", "content": [{"type": "image", "source": {"data": "x".repeat(100_000)}}]}),
        ];
        let input = CountInput {
            messages: &messages,
            system: None,
            tools: &[],
        };
        // 8 characters of text, one image (1600 tokens), 3 tokens of framing per message.
        assert_eq!(estimate(&input), 2 + 1600 + 6);
    }
}

//! Reads token counts out of what a client receives, in either dialect, streamed or not,
//! without altering a byte: usage chunks (OpenAI), `message_start`/`message_delta`
//! (Anthropic), or the `usage` of a whole JSON body.

use crate::translate::Format;
use serde::Deserialize;

/// A JSON body is looked at only up to this size (usage sits at its end; bodies are small).
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
}

pub struct UsageTap {
    format: Format,
    sse: bool,
    line: Vec<u8>,
    body: Vec<u8>,
    input: Option<u64>,
    output: Option<u64>,
    /// Bytes seen, for an estimate when no usage comes back.
    pub bytes_seen: u64,
}

#[derive(Deserialize, Default)]
struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize, Default)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    fn input(&self) -> Option<u64> {
        self.input_tokens
            .map(|i| i + self.cache_read_input_tokens.unwrap_or(0) + self.cache_creation_input_tokens.unwrap_or(0))
    }
}

#[derive(Deserialize)]
struct WithOpenAiUsage {
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct AnthropicEvent {
    #[serde(default)]
    message: Option<WithAnthropicUsage>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct WithAnthropicUsage {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

impl UsageTap {
    pub fn new(format: Format, sse: bool) -> Self {
        UsageTap {
            format,
            sse,
            line: Vec::new(),
            body: Vec::new(),
            input: None,
            output: None,
            bytes_seen: 0,
        }
    }

    pub fn observe(&mut self, bytes: &[u8]) {
        self.bytes_seen += bytes.len() as u64;
        if !self.sse {
            if self.body.len() + bytes.len() <= MAX_JSON_BODY {
                self.body.extend_from_slice(bytes);
            }
            return;
        }
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.sse_line(&line);
            } else {
                self.line.push(b);
            }
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        // Most events carry no usage: skip parsing them.
        if !data.windows(7).any(|w| w == b"\"usage\"") {
            return;
        }
        let data = data.trim_ascii();
        match self.format {
            Format::OpenAi => {
                if let Ok(WithOpenAiUsage { usage: Some(u) }) = serde_json::from_slice(data) {
                    self.input = Some(u.prompt_tokens);
                    self.output = Some(u.completion_tokens);
                }
            }
            Format::Anthropic => {
                if let Ok(event) = serde_json::from_slice::<AnthropicEvent>(data) {
                    for usage in [event.message.and_then(|m| m.usage), event.usage].into_iter().flatten() {
                        if let Some(input) = usage.input() {
                            self.input = Some(input);
                        }
                        if let Some(output) = usage.output_tokens {
                            self.output = Some(output);
                        }
                    }
                }
            }
        }
    }

    /// The counts the stream or body reported, if it reported any.
    pub fn tokens(&mut self) -> Option<Tokens> {
        if !self.sse && !self.body.is_empty() {
            let body = std::mem::take(&mut self.body);
            match self.format {
                Format::OpenAi => {
                    if let Ok(WithOpenAiUsage { usage: Some(u) }) = serde_json::from_slice(&body) {
                        self.input = Some(u.prompt_tokens);
                        self.output = Some(u.completion_tokens);
                    }
                }
                Format::Anthropic => {
                    if let Ok(event) = serde_json::from_slice::<AnthropicEvent>(&body) {
                        if let Some(u) = event.usage {
                            self.input = u.input();
                            self.output = u.output_tokens;
                        }
                    }
                }
            }
        }
        match (self.input, self.output) {
            (None, None) => None,
            (input, output) => Some(Tokens {
                input: input.unwrap_or(0),
                output: output.unwrap_or(0),
            }),
        }
    }
}

/// Whether one complete OpenAI SSE event is a usage-only chunk (no choices).
pub fn is_usage_only_event(event: &[u8]) -> bool {
    let text = String::from_utf8_lossy(event);
    let Some(data) = text.trim().strip_prefix("data:") else {
        return false;
    };
    serde_json::value::RawValue::from_string(data.trim().to_string())
        .map(|raw| crate::translate::chunks::is_usage_only(&raw))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openai_stream_usage_split_across_chunks() {
        let mut tap = UsageTap::new(Format::OpenAi, true);
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34}}\n\ndata: [DONE]\n\n";
        for piece in stream.as_bytes().chunks(7) {
            tap.observe(piece);
        }
        assert_eq!(tap.tokens(), Some(Tokens { input: 12, output: 34 }));
    }

    #[test]
    fn reads_anthropic_stream_usage_from_start_and_delta() {
        let mut tap = UsageTap::new(Format::Anthropic, true);
        tap.observe(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n");
        tap.observe(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n");
        assert_eq!(tap.tokens(), Some(Tokens { input: 15, output: 42 }));
    }

    #[test]
    fn reads_json_bodies_and_reports_none_without_usage() {
        let mut tap = UsageTap::new(Format::OpenAi, false);
        tap.observe(br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#);
        assert_eq!(tap.tokens(), Some(Tokens { input: 3, output: 4 }));
        let mut tap = UsageTap::new(Format::Anthropic, false);
        tap.observe(br#"{"content":[],"usage":{"input_tokens":7,"output_tokens":8}}"#);
        assert_eq!(tap.tokens(), Some(Tokens { input: 7, output: 8 }));
        let mut none = UsageTap::new(Format::OpenAi, true);
        none.observe(b"data: {\"choices\":[]}\n\n");
        assert_eq!(none.tokens(), None);
    }

    #[test]
    fn recognises_usage_only_events() {
        assert!(is_usage_only_event(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n"
        ));
        assert!(!is_usage_only_event(b"data: {\"choices\":[{}]}\n\n"));
        assert!(!is_usage_only_event(b"data: [DONE]\n\n"));
    }
}

//! Reads token counts and failures out of a reply, in either dialect, streamed or not,
//! without altering a byte: usage chunks (OpenAI), `message_start`/`message_delta`
//! (Anthropic), the `usage` of a whole JSON body, and error events that end a stream.
//! Cache reads and writes and reasoning tokens are kept apart, as they are priced apart.

use super::estimate::TextCounter;
use crate::translate::sse::{with_first_event, Event, SseReader};
use crate::translate::Format;
use bytes::Bytes;
use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::LazyLock;

/// A JSON body is looked at only up to this size (usage sits at its end; bodies are small).
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;
/// An SSE event longer than this is not read (usage and error events are short).
const MAX_SSE_EVENT: usize = 256 * 1024;

/// Token counts split the way they are priced. `input` excludes cache reads and writes;
/// `output` includes `reasoning`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub reasoning: u64,
}

impl Tokens {
    pub fn prompt(&self) -> u64 {
        self.input + self.cache_read + self.cache_write_5m + self.cache_write_1h
    }
}

/// Substring searches, built once: most bytes that pass carry none of these.
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
static DONE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"data: [DONE]"));
static MESSAGE_STOP: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"message_stop"));
static RESPONSE_COMPLETED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"response.completed"));

pub struct UsageTap {
    format: Format,
    sse: bool,
    /// Events are read where they lie in the chunk; only one cut by a boundary is copied.
    reader: SseReader,
    /// A JSON body's pieces, kept by reference (not copied) until it is read at the end.
    body: Vec<Bytes>,
    body_len: usize,
    tokens: Option<Tokens>,
    /// The stream carried an error event (after which nothing the client got is an answer).
    pub error: Option<String>,
    /// Bytes seen, for an estimate when no usage comes back.
    pub bytes_seen: u64,
    body_text_tokens: Option<u64>,
}

/// OpenAI's usage object, and the fields other OpenAI-compatible servers put beside it.
#[derive(Deserialize, Default)]
struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    /// Anthropic's cache-write counters, which auxot's workers pass on beside OpenAI's.
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
    /// The Responses API's names.
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    output_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

/// Splits cache-write tokens into 5-minute and 1-hour writes: by the breakdown when there
/// is one, else all 5-minute (the default TTL).
fn split_writes(total: Option<u64>, breakdown: Option<CacheCreation>) -> (u64, u64) {
    match breakdown {
        Some(CacheCreation {
            ephemeral_5m_input_tokens: five,
            ephemeral_1h_input_tokens: hour,
        }) if five.is_some() || hour.is_some() => (five.unwrap_or(0), hour.unwrap_or(0)),
        _ => (total.unwrap_or(0), 0),
    }
}

impl OpenAiUsage {
    fn tokens(&self) -> Option<Tokens> {
        let prompt = self.prompt_tokens.or(self.input_tokens);
        let output = self.completion_tokens.or(self.output_tokens);
        if prompt.is_none() && output.is_none() {
            return None;
        }
        let prompt = prompt.unwrap_or(0);
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .or(self.input_tokens_details.as_ref())
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(prompt);
        let (write_5m, write_1h) = split_writes(self.cache_creation_input_tokens, self.cache_creation);
        let output = output.unwrap_or(0);
        let reasoning = self
            .completion_tokens_details
            .as_ref()
            .or(self.output_tokens_details.as_ref())
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
            .min(output);
        Some(Tokens {
            input: prompt.saturating_sub(cached).saturating_sub(write_5m + write_1h),
            output,
            cache_read: cached,
            cache_write_5m: write_5m,
            cache_write_1h: write_1h,
            reasoning,
        })
    }
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
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
}

impl AnthropicUsage {
    /// Anthropic reports usage twice in a stream (`message_start`, then cumulative counts
    /// in `message_delta`): the fields a later report carries replace the earlier ones.
    fn update(&self, into: &mut Tokens) {
        if let Some(n) = self.input_tokens {
            into.input = n;
        }
        if let Some(n) = self.output_tokens {
            into.output = n;
        }
        if let Some(n) = self.cache_read_input_tokens {
            into.cache_read = n;
        }
        if self.cache_creation_input_tokens.is_some() || self.cache_creation.is_some() {
            let (five, hour) = split_writes(self.cache_creation_input_tokens, self.cache_creation);
            into.cache_write_5m = five;
            into.cache_write_1h = hour;
        }
    }
}

/// Any event or body: the usage may sit at the top, in `message` (Anthropic
/// `message_start`) or in `response` (Responses `response.completed`). Borrowed from the
/// bytes: a usage object is read straight into its typed form, with no tree built first.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
    #[serde(default, borrow)]
    message: Option<Inner<'a>>,
    #[serde(default, borrow)]
    response: Option<Inner<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Inner<'a> {
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
}

/// Which of the keys that tell the usage shapes apart an object has (null values count).
#[derive(Deserialize)]
struct UsageKeys {
    #[serde(default, deserialize_with = "present")]
    prompt_tokens: bool,
    #[serde(default, deserialize_with = "present")]
    completion_tokens: bool,
    #[serde(default, deserialize_with = "present")]
    input_tokens_details: bool,
    #[serde(default, deserialize_with = "present")]
    cache_read_input_tokens: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(value).map(|_| true)
}

fn error_text(error: &serde_json::Value) -> String {
    error
        .get("message")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string())
}

impl UsageTap {
    pub fn new(format: Format, sse: bool) -> Self {
        UsageTap {
            format,
            sse,
            reader: SseReader::with_max_event(MAX_SSE_EVENT),
            body: Vec::new(),
            body_len: 0,
            tokens: None,
            error: None,
            bytes_seen: 0,
            body_text_tokens: None,
        }
    }

    /// Bytes on their way, held by reference: a JSON body is read once it is whole.
    pub fn observe_bytes(&mut self, bytes: &Bytes) {
        if self.sse {
            return self.observe(bytes);
        }
        self.bytes_seen += bytes.len() as u64;
        self.body_len += bytes.len();
        if self.body_len <= MAX_JSON_BODY {
            self.body.push(bytes.clone());
        } else {
            // Too big to read usage from: nothing of it is kept.
            self.body = Vec::new();
        }
    }

    pub fn observe(&mut self, bytes: &[u8]) {
        if !self.sse {
            return self.observe_bytes(&Bytes::copy_from_slice(bytes));
        }
        self.bytes_seen += bytes.len() as u64;
        let UsageTap {
            reader,
            format,
            tokens,
            error,
            ..
        } = self;
        reader.feed(bytes, &mut |event: Event<'_>| {
            let error_event = event.name == Some("error");
            // Most events carry neither usage nor an error: skip parsing them.
            if !error_event && USAGE.find(event.data).is_none() && ERROR.find(event.data).is_none() {
                return;
            }
            read_value(*format, tokens, Some(&mut *error), error_event, event.data);
        });
    }

    /// The counts the stream or body reported, if it reported any.
    pub fn tokens(&mut self) -> Option<Tokens> {
        if !self.sse && !self.body.is_empty() {
            let pieces = std::mem::take(&mut self.body);
            let joined;
            let body: &[u8] = match pieces.as_slice() {
                [one] => one,
                many => {
                    joined = many.concat();
                    &joined
                }
            };
            // A body without a usage object has nothing to read: no parse.
            if USAGE.find(body).is_some() {
                read_value(self.format, &mut self.tokens, None, false, body);
            }
            if self.tokens.is_none_or(|t| t == Tokens::default()) {
                // Only now, and only for a body that reported nothing, is its text counted
                // for an estimate: not byte by byte as every answer passes.
                let mut text = TextCounter::default();
                text.observe(body);
                self.body_text_tokens = text.output_tokens();
            }
        }
        self.tokens
    }

    /// Whether the answer is a stream of events (else one JSON body).
    pub fn is_stream(&self) -> bool {
        self.sse
    }

    /// Output tokens estimated from the text of a JSON body that reported no usage (after
    /// `tokens`).
    pub fn body_text_tokens(&self) -> Option<u64> {
        self.body_text_tokens
    }
}

/// Reads usage from one JSON event or body into `tokens`; in a stream (`error` given), an
/// error it carries too (`error_event`: the event was named `error`).
fn read_value(
    format: Format,
    tokens: &mut Option<Tokens>,
    error: Option<&mut Option<String>>,
    error_event: bool,
    data: &[u8],
) {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(data) else {
        return;
    };
    if let Some(error) = error {
        let is_error_event = error_event
            || envelope.kind.as_deref() == Some("error")
            || envelope.kind.as_deref() == Some("response.failed");
        if let Some(reported) = envelope.error.as_ref().filter(|e| !e.is_null()) {
            *error = Some(error_text(reported));
        } else if is_error_event {
            *error = Some("the stream ended with an error event".into());
        }
    }
    let usages = [
        envelope.message.and_then(|m| m.usage),
        envelope.response.and_then(|r| r.usage),
        envelope.usage,
    ];
    for usage in usages.into_iter().flatten().filter(|u| u.get().starts_with('{')) {
        read_usage(format, tokens, usage.get());
    }
}

fn read_usage(format: Format, tokens: &mut Option<Tokens>, usage: &str) {
    let Ok(keys) = serde_json::from_str::<UsageKeys>(usage) else {
        return;
    };
    let anthropic_shape = !keys.prompt_tokens
        && !keys.completion_tokens
        && !keys.input_tokens_details
        && (format == Format::Anthropic || keys.cache_read_input_tokens);
    if anthropic_shape {
        if let Ok(u) = serde_json::from_str::<AnthropicUsage>(usage) {
            let mut updated = tokens.unwrap_or_default();
            u.update(&mut updated);
            *tokens = Some(updated);
        }
    } else if let Some(read) = serde_json::from_str::<OpenAiUsage>(usage).ok().and_then(|u| u.tokens()) {
        *tokens = Some(read);
    }
}

/// Whether one complete OpenAI SSE event is a usage-only chunk (no choices).
pub fn is_usage_only_event(event: &[u8]) -> bool {
    if USAGE.find(event).is_none() {
        return false;
    }
    with_first_event(event, |event| {
        serde_json::from_slice::<&serde_json::value::RawValue>(event.data)
            .map(crate::translate::chunks::is_usage_only)
            .unwrap_or(false)
    })
    .unwrap_or(false)
}

/// Whether `bytes` hold the event that ends a stream (`[DONE]`, `message_stop`, a
/// Responses `response.completed`), which is sent only once the row is durable.
pub fn ends_stream(bytes: &[u8]) -> bool {
    DONE.find(bytes).is_some() || MESSAGE_STOP.find(bytes).is_some() || RESPONSE_COMPLETED.find(bytes).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: u64, output: u64) -> Tokens {
        Tokens {
            input,
            output,
            ..Tokens::default()
        }
    }

    #[test]
    fn reads_openai_stream_usage_split_across_chunks() {
        let mut tap = UsageTap::new(Format::OpenAi, true);
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34}}\n\ndata: [DONE]\n\n";
        for piece in stream.as_bytes().chunks(7) {
            tap.observe(piece);
        }
        assert_eq!(tap.tokens(), Some(tokens(12, 34)));
        assert_eq!(tap.error, None);
    }

    #[test]
    fn openai_cached_and_reasoning_tokens_are_split_out() {
        let mut tap = UsageTap::new(Format::OpenAi, false);
        tap.observe(br#"{"choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":256}}}"#);
        assert_eq!(
            tap.tokens(),
            Some(Tokens {
                input: 86,
                output: 300,
                cache_read: 1920,
                reasoning: 256,
                ..Tokens::default()
            })
        );
    }

    #[test]
    fn anthropic_stream_cache_reads_and_both_write_durations() {
        let mut tap = UsageTap::new(Format::Anthropic, true);
        tap.observe(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5000,\"cache_creation_input_tokens\":300,\"cache_creation\":{\"ephemeral_5m_input_tokens\":100,\"ephemeral_1h_input_tokens\":200},\"output_tokens\":1}}}\n\n");
        tap.observe(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n");
        assert_eq!(
            tap.tokens(),
            Some(Tokens {
                input: 10,
                output: 42,
                cache_read: 5000,
                cache_write_5m: 100,
                cache_write_1h: 200,
                reasoning: 0,
            })
        );
    }

    #[test]
    fn anthropic_json_without_breakdown_books_writes_as_five_minute() {
        let mut tap = UsageTap::new(Format::Anthropic, false);
        tap.observe(br#"{"content":[],"usage":{"input_tokens":7,"output_tokens":8,"cache_creation_input_tokens":40,"cache_read_input_tokens":0}}"#);
        assert_eq!(
            tap.tokens(),
            Some(Tokens {
                input: 7,
                output: 8,
                cache_write_5m: 40,
                ..Tokens::default()
            })
        );
    }

    #[test]
    fn responses_completed_event_carries_usage() {
        let mut tap = UsageTap::new(Format::OpenAi, true);
        tap.observe(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":50,\"input_tokens_details\":{\"cached_tokens\":20},\"output_tokens\":9,\"output_tokens_details\":{\"reasoning_tokens\":4}}}}\n\n");
        assert_eq!(
            tap.tokens(),
            Some(Tokens {
                input: 30,
                output: 9,
                cache_read: 20,
                reasoning: 4,
                ..Tokens::default()
            })
        );
    }

    #[test]
    fn a_json_body_without_usage_has_its_text_counted_once_at_the_end() {
        let text = "word ".repeat(40);
        let body = format!(r#"{{"choices":[{{"message":{{"role":"assistant","content":"{text}"}}}}]}}"#);
        let mut tap = UsageTap::new(Format::OpenAi, false);
        let (head, tail) = body.as_bytes().split_at(30);
        tap.observe(head);
        tap.observe(tail);
        assert_eq!(tap.body_text_tokens(), None, "nothing counted while the body passes");
        assert_eq!(tap.tokens(), None);
        let mut counter = TextCounter::default();
        counter.observe(body.as_bytes());
        assert!(counter.output_tokens().is_some_and(|n| n > 0));
        assert_eq!(tap.body_text_tokens(), counter.output_tokens());

        let mut reported = UsageTap::new(Format::OpenAi, false);
        reported.observe(br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#);
        assert!(reported.tokens().is_some());
        assert_eq!(
            reported.body_text_tokens(),
            None,
            "a body that reports usage is not counted"
        );
    }

    #[test]
    fn reports_none_without_usage() {
        let mut none = UsageTap::new(Format::OpenAi, true);
        none.observe(b"data: {\"choices\":[]}\n\n");
        assert_eq!(none.tokens(), None);
        let mut body = UsageTap::new(Format::OpenAi, false);
        body.observe(br#"{"choices":[],"usage":null}"#);
        assert_eq!(body.tokens(), None);
    }

    #[test]
    fn error_events_in_either_dialect_are_seen() {
        let mut openai = UsageTap::new(Format::OpenAi, true);
        openai.observe(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"error\":{\"message\":\"worker died\",\"type\":\"api_error\"}}\n\n");
        assert_eq!(openai.error.as_deref(), Some("worker died"));
        let mut anthropic = UsageTap::new(Format::Anthropic, true);
        anthropic.observe(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        assert_eq!(anthropic.error.as_deref(), Some("Overloaded"));
        // A JSON body's `error` is the status's business, not the tap's.
        let mut body = UsageTap::new(Format::OpenAi, false);
        body.observe(br#"{"error":{"message":"no"}}"#);
        body.tokens();
        assert_eq!(body.error, None);
    }

    #[test]
    fn usage_split_over_data_lines_chunks_and_any_line_endings_is_read() {
        let stream = "event: x\r\ndata: {\"choices\":[],\r\ndata: \"usage\":{\"prompt_tokens\":3,\rdata: \"completion_tokens\":4}}\r\r";
        for size in 1..=stream.len() {
            let mut tap = UsageTap::new(Format::OpenAi, true);
            for piece in stream.as_bytes().chunks(size) {
                tap.observe(piece);
            }
            assert_eq!(tap.tokens(), Some(tokens(3, 4)), "pieces of {size} bytes");
        }
    }

    #[test]
    fn recognises_usage_only_events_and_stream_ends() {
        assert!(is_usage_only_event(
            b": note\r\ndata: {\"choices\":[],\r\ndata: \"usage\":{\"prompt_tokens\":1}}\r\n\r\n"
        ));
        assert!(is_usage_only_event(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n"
        ));
        assert!(!is_usage_only_event(b"data: {\"choices\":[{}]}\n\n"));
        assert!(!is_usage_only_event(b"data: [DONE]\n\n"));
        assert!(ends_stream(b"data: [DONE]\n\n"));
        assert!(ends_stream(
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        ));
        assert!(!ends_stream(b"data: {\"choices\":[]}\n\n"));
    }
}

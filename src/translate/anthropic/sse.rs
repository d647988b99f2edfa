//! Server-sent events in: an incremental parser that takes bytes as the network delivers
//! them (an event may be split anywhere, even inside a UTF-8 character). Events out: the
//! two framings the dialects use.

use bytes::Bytes;
use serde_json::Value;

/// One dispatched event: its `event:` name, if any, and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Follows the WHATWG event-stream rules that matter here: lines end in `\n`, `\r\n` or
/// `\r`; `:` starts a comment; one space after the field colon is dropped; several `data:`
/// lines join with `\n`; a blank line dispatches; an event without data is not dispatched.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The last byte was `\r`: a `\n` right after it belongs to the same line ending.
    after_cr: bool,
    seen_first_line: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &byte in bytes {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out);
                }
                _ => self.line.push(byte),
            }
        }
        out
    }

    /// The stream ended: an event the upstream left unterminated is still delivered, since
    /// some servers close without the final blank line.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut out);
        }
        self.dispatch(&mut out);
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let raw = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&raw);
        let mut line: &str = &text;
        if !std::mem::replace(&mut self.seen_first_line, true) {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` and `retry` steer browser reconnection, which a relay never does.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let data = std::mem::take(&mut self.data);
        if std::mem::take(&mut self.has_data) && !data.is_empty() {
            out.push(SseEvent { event, data });
        }
    }
}

/// An Anthropic event: named, its `type` repeated in the data as Anthropic does.
pub(super) fn anthropic_event(kind: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// An OpenAI event: data only.
pub(super) fn openai_event(data: &Value) -> Bytes {
    crate::translate::chunks::sse_event(&data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.into(),
        }
    }

    #[test]
    fn parses_events_split_anywhere() {
        let stream = "event: ping\ndata: {\"type\":\"ping\"}\n\n: keep-alive\n\nevent: message_stop\r\ndata: {\"a\":\r\ndata:\"é\"}\r\n\r\ndata: [DONE]\r\r";
        let expected = vec![
            ev(Some("ping"), "{\"type\":\"ping\"}"),
            ev(Some("message_stop"), "{\"a\":\n\"é\"}"),
            ev(None, "[DONE]"),
        ];
        let bytes = stream.as_bytes();
        for size in 1..=bytes.len() {
            let mut parser = SseParser::new();
            let mut got = Vec::new();
            for piece in bytes.chunks(size) {
                got.extend(parser.push(piece));
            }
            got.extend(parser.finish());
            assert_eq!(got, expected, "pieces of {size} bytes");
        }
    }

    #[test]
    fn fields_without_space_or_value_and_unknown_fields() {
        let mut parser = SseParser::new();
        let got = parser.push(b"\xEF\xBB\xBFdata:x\nid: 7\nretry: 10\nevent\ndata\n\nevent: lonely\n\n");
        assert_eq!(got, vec![ev(Some(""), "x\n")]);
        assert!(parser.finish().is_empty());
    }

    #[test]
    fn an_unterminated_last_event_is_delivered_on_finish() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: {\"x\":1}").is_empty());
        assert_eq!(parser.finish(), vec![ev(None, "{\"x\":1}")]);
    }
}

//! The documented tokenizer-free estimate, used only when no upstream reports counts (a
//! model server that sends no usage in its stream, a custom CLI, a stream cut short):
//!
//! - input: the request body's bytes / 4;
//! - output: the bytes of generated text / 4, rounded up. Generated text is every JSON
//!   string value, in what the client receives, under a key that carries model output in
//!   any dialect: `content`, `text`, `arguments`, `partial_json`, `thinking`,
//!   `reasoning_content`, `reasoning`, `refusal`; in a Responses stream, which repeats the
//!   whole text in its closing events, only its `delta` strings. An escape sequence counts
//!   as one byte.
//!
//! Counting text, not the bytes on the wire, keeps the estimate near the truth whatever
//! the framing: a llama.cpp-family server sends about 150 bytes of JSON per token.
//! Rows with estimated counts say so (`estimated: true`) and are never billed as spend.

pub const BYTES_PER_TOKEN: u64 = 4;

const TEXT_KEYS: &[&[u8]] = &[
    b"content",
    b"text",
    b"arguments",
    b"partial_json",
    b"thinking",
    b"reasoning_content",
    b"reasoning",
    b"refusal",
    b"delta",
];
/// No key of interest is longer; longer strings are not remembered as keys.
const LONGEST_KEY: usize = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Between values.
    #[default]
    Outside,
    /// Inside a string that may be a key; `escaped` after a backslash.
    Key { escaped: bool },
    /// A string that named a text key has ended: a `:` must follow.
    AfterKey,
    /// After `key:`: a string value is text.
    AfterColon,
    /// Inside a text value; `skip` hex digits of a `\u` escape still to pass.
    Text { escaped: bool, skip: u8 },
}

/// Counts generated-text bytes in JSON (or SSE carrying JSON) fed in pieces cut anywhere.
#[derive(Debug, Default)]
pub struct TextCounter {
    state: State,
    key: Vec<u8>,
    /// The key overflowed `LONGEST_KEY`: not one of ours.
    key_too_long: bool,
    /// The text value being read is a `delta` string (Responses).
    in_delta: bool,
    delta_bytes: u64,
    other_bytes: u64,
}

impl TextCounter {
    /// Reads `bytes`: runs of plain bytes (between values, inside a key or a text value)
    /// are skipped or counted in one go with a vectorised search for the next quote or
    /// backslash; only those and the bytes around a key's colon step the state one by one.
    pub fn observe(&mut self, mut bytes: &[u8]) {
        while let Some((&byte, rest)) = bytes.split_first() {
            let plain = match self.state {
                State::Outside => memchr::memchr(b'"', bytes).unwrap_or(bytes.len()),
                State::Key { escaped: false }
                | State::Text {
                    escaped: false,
                    skip: 0,
                } => memchr::memchr2(b'"', b'\\', bytes).unwrap_or(bytes.len()),
                _ => 0,
            };
            if plain == 0 {
                self.step(byte);
                bytes = rest;
                continue;
            }
            let (run, after) = bytes.split_at(plain);
            match self.state {
                State::Key { .. } => self.push_key(run),
                State::Text { .. } if self.in_delta => self.delta_bytes += run.len() as u64,
                State::Text { .. } => self.other_bytes += run.len() as u64,
                _ => {}
            }
            bytes = after;
        }
    }

    /// What `observe` does, a byte at a time (the tests hold them equal).
    #[cfg(test)]
    fn observe_bytewise(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.step(byte);
        }
    }

    /// Bytes of generated text seen.
    pub fn text_bytes(&self) -> u64 {
        if self.delta_bytes > 0 {
            self.delta_bytes
        } else {
            self.other_bytes
        }
    }

    /// Output tokens by the estimate; `None` when no text was seen at all.
    pub fn output_tokens(&self) -> Option<u64> {
        let bytes = self.text_bytes();
        (bytes > 0).then(|| bytes.div_ceil(BYTES_PER_TOKEN))
    }

    fn count(&mut self) {
        if self.in_delta {
            self.delta_bytes += 1;
        } else {
            self.other_bytes += 1;
        }
    }

    fn step(&mut self, byte: u8) {
        match self.state {
            State::Outside => self.outside(byte),
            State::Key { escaped } => {
                if escaped {
                    self.state = State::Key { escaped: false };
                    self.push_key(&[byte]);
                } else if byte == b'\\' {
                    self.state = State::Key { escaped: true };
                } else if byte == b'"' {
                    let ours = !self.key_too_long && TEXT_KEYS.contains(&self.key.as_slice());
                    self.in_delta = self.key == b"delta";
                    self.state = if ours { State::AfterKey } else { State::Outside };
                } else {
                    self.push_key(&[byte]);
                }
            }
            State::AfterKey => match byte {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b':' => self.state = State::AfterColon,
                _ => {
                    self.state = State::Outside;
                    self.outside(byte);
                }
            },
            State::AfterColon => match byte {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'"' => {
                    self.state = State::Text {
                        escaped: false,
                        skip: 0,
                    }
                }
                _ => {
                    self.state = State::Outside;
                    self.outside(byte);
                }
            },
            State::Text { escaped, skip } => {
                if skip > 0 {
                    self.state = State::Text {
                        escaped: false,
                        skip: skip - 1,
                    };
                } else if escaped {
                    self.count();
                    let skip = if byte == b'u' { 4 } else { 0 };
                    self.state = State::Text { escaped: false, skip };
                } else if byte == b'\\' {
                    self.state = State::Text { escaped: true, skip: 0 };
                } else if byte == b'"' {
                    self.state = State::Outside;
                } else {
                    self.count();
                }
            }
        }
    }

    fn outside(&mut self, byte: u8) {
        if byte == b'"' {
            self.key.clear();
            self.key_too_long = false;
            self.state = State::Key { escaped: false };
        }
    }

    /// Remembers a key's bytes up to `LONGEST_KEY`; past it the key is not one of ours.
    fn push_key(&mut self, bytes: &[u8]) {
        let room = LONGEST_KEY.saturating_sub(self.key.len()).min(bytes.len());
        self.key.extend_from_slice(&bytes[..room]);
        if bytes.len() > room {
            self.key_too_long = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(pieces: &[&str]) -> u64 {
        let mut counter = TextCounter::default();
        for piece in pieces {
            counter.observe(piece.as_bytes());
        }
        counter.text_bytes()
    }

    #[test]
    fn counts_only_generated_text_in_every_dialect() {
        // llama-cpp-python's spacing, an OpenAI tool call, Anthropic deltas, Responses deltas.
        let openai = "data: {\"id\": \"chatcmpl-1\", \"model\": \"qwen\", \"choices\": [{\"delta\": {\"role\": \"assistant\", \"content\": \"Hello\"}}]}\n\n";
        assert_eq!(count(&[openai]), 5);
        let tool = r#"{"choices":[{"message":{"content":null,"tool_calls":[{"function":{"name":"get","arguments":"{\"a\":1}"}}]}}]}"#;
        assert_eq!(count(&[tool]), 7);
        let anthropic = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi!\"}}\n\n";
        assert_eq!(count(&[anthropic]), 3);
        let responses = r#"{"type":"response.output_text.delta","delta":"abcd"}"#;
        assert_eq!(count(&[responses]), 4);
        // A Responses stream repeats the text when it closes: only the deltas count.
        let done = r#"{"type":"response.output_text.done","text":"abcd"}"#;
        let completed = r#"{"type":"response.completed","response":{"output":[{"content":[{"type":"output_text","text":"abcd"}]}]}}"#;
        assert_eq!(count(&[responses, done, completed]), 4);
        assert_eq!(count(&[completed]), 4, "a whole Responses answer");
        // Names, roles, ids and error messages are not generated text.
        assert_eq!(
            count(&[r#"{"model":"content","type":"text","error":{"message":"boom"}}"#]),
            0
        );
    }

    #[test]
    fn survives_any_split_and_escapes() {
        let body = r#"data: {"choices":[{"delta":{"content":"a\"b\\c\u00e9\n"}}]}"#;
        let whole = count(&[body]);
        assert_eq!(whole, 7, "a, \", b, \\, c, é and \\n");
        for cut in 1..body.len() {
            assert_eq!(count(&[&body[..cut], &body[cut..]]), whole, "cut at {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_reader_counts_exactly_what_a_byte_at_a_time_does(
            pieces in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(b"ab \\\"u0:{},[]\ncontexdlarg".to_vec()), 0..40),
                0..8,
            ),
            keys in proptest::collection::vec(proptest::sample::select(vec![
                &br#"{"content":"#[..], br#""text" : "#, br#""delta":"#, br#""a\"b":"#, br#""reasoning_content_too_long":"#, br#"\u00e9"#,
            ]), 0..6),
        ) {
            let mut input = Vec::new();
            for (i, piece) in pieces.iter().enumerate() {
                if let Some(key) = keys.get(i) {
                    input.extend_from_slice(key);
                }
                input.extend_from_slice(piece);
            }
            let mut fast = TextCounter::default();
            let mut slow = TextCounter::default();
            // Fed in the same pieces, cut where the generated pieces end.
            let mut at = 0;
            for piece in &pieces {
                let end = (at + piece.len() + 7).min(input.len());
                fast.observe(&input[at..end]);
                slow.observe_bytewise(&input[at..end]);
                at = end;
            }
            fast.observe(&input[at..]);
            slow.observe_bytewise(&input[at..]);
            proptest::prop_assert_eq!((fast.delta_bytes, fast.other_bytes), (slow.delta_bytes, slow.other_bytes));
            proptest::prop_assert_eq!(fast.state, slow.state);
            proptest::prop_assert_eq!((&fast.key, fast.key_too_long), (&slow.key, slow.key_too_long));
        }
    }

    #[test]
    fn output_tokens_round_up_and_are_none_without_text() {
        let mut counter = TextCounter::default();
        assert_eq!(counter.output_tokens(), None);
        counter.observe(br#"{"content":"12345"}"#);
        assert_eq!(counter.output_tokens(), Some(2));
    }
}

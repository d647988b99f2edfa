//! Server-sent events in: the one incremental parser for every SSE body auxot reads (a
//! provider's stream, a GPU worker's model server, the bytes a client is sent), taking bytes
//! as the network delivers them — an event, a line ending or a UTF-8 character may be split
//! anywhere.
//!
//! It follows the WHATWG event-stream rules: lines end in `\n`, `\r\n` or `\r`; a byte-order
//! mark at the very start is skipped; a line starting with `:` is a comment; a field is the
//! text before the first `:` (the whole line when there is none, with an empty value) and one
//! space after the colon is dropped; `data` lines join with `\n`; `event` names the event,
//! `id` sets the last event id (unless it holds a NUL) and `retry` a reconnection time (only
//! digits); unknown fields are ignored; a blank line dispatches. Two choices a relay makes
//! on top: an event whose data is empty is not dispatched (every dialect's events carry
//! JSON, so it would say nothing), and an event the upstream left unterminated when its body
//! ended is still delivered ([`SseReader::finish`]), since some servers close without the
//! final blank line.
//!
//! Lines are found with `memchr` and read where they lie: an event whose data is one line
//! inside one chunk is handed over without a copy; only what straddles chunks (or joins
//! several `data` lines) is gathered, into buffers that are reused from event to event.

use bytes::Bytes;
use memchr::{memchr, memchr2};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event, borrowed from the chunk or the reader: valid during the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, if the event had one (`Some("")` for an empty one).
    pub name: Option<&'a str>,
    /// The `data:` lines, joined by `\n`; never empty.
    pub data: &'a [u8],
    /// The last event id the stream set (empty: none yet).
    pub id: &'a str,
}

impl Event<'_> {
    pub fn into_owned(self) -> SseEvent {
        SseEvent {
            event: self.name.map(str::to_string),
            data: String::from_utf8_lossy(self.data).into_owned(),
        }
    }
}

/// One dispatched event, owned: its `event:` name, if any, and its `data:` lines joined by
/// `\n` (invalid UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Where the data of the event being read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// No `data` line yet.
    None,
    /// One `data` line's value, at these offsets of the chunk being fed.
    InChunk { start: usize, end: usize },
    /// In `SseReader::data`.
    Buffered,
}

/// The event-stream parser, calling back with borrowed events ([`Event`]): no allocation per
/// line or per event once its buffers have grown to the stream's longest event.
#[derive(Debug)]
pub struct SseReader {
    /// The start of a line cut by a chunk boundary (and, before the first line ends, bytes
    /// that may still be a byte-order mark).
    line: Vec<u8>,
    /// A line was cut by the last chunk boundary (its bytes in `line`, unless dropped).
    line_open: bool,
    /// The last byte was a `\r`: a `\n` right after it belongs to the same line ending.
    after_cr: bool,
    /// Past the byte-order mark check.
    started: bool,
    event: String,
    has_event: bool,
    data: Vec<u8>,
    held: Data,
    last_id: String,
    retry: Option<u64>,
    /// Events bigger than this (data, or a line still being read) are dropped.
    max_event: usize,
    /// The event being read passed `max_event`: its bytes are no longer kept.
    oversized: bool,
    dropped: u64,
}

impl Default for SseReader {
    fn default() -> Self {
        Self::new()
    }
}

impl SseReader {
    pub fn new() -> Self {
        Self::with_max_event(usize::MAX)
    }

    /// A reader that drops any event bigger than `max_event` bytes rather than hold it; see
    /// [`SseReader::dropped`].
    pub fn with_max_event(max_event: usize) -> Self {
        SseReader {
            line: Vec::new(),
            line_open: false,
            after_cr: false,
            started: false,
            event: String::new(),
            has_event: false,
            data: Vec::new(),
            held: Data::None,
            last_id: String::new(),
            retry: None,
            max_event,
            oversized: false,
            dropped: 0,
        }
    }

    /// How many events were dropped for being bigger than the limit.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The last `id:` the stream set (empty: none).
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// The last valid `retry:` the stream sent, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Reads the next bytes of the stream, calling `on_event` for each event they complete.
    pub fn feed<F: FnMut(Event<'_>)>(&mut self, chunk: &[u8], on_event: &mut F) {
        if chunk.is_empty() {
            return;
        }
        if self.started {
            return self.feed_lines(chunk, on_event);
        }
        // The first bytes of the stream: skip a byte-order mark, even one cut by a boundary.
        if !self.line_open && chunk.len() >= BOM.len() {
            self.started = true;
            let skip = if chunk.starts_with(BOM) { BOM.len() } else { 0 };
            return self.feed_lines(&chunk[skip..], on_event);
        }
        self.line.extend_from_slice(chunk);
        self.line_open = true;
        if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
            return;
        }
        self.started = true;
        self.line_open = false;
        let first = std::mem::take(&mut self.line);
        let skip = if first.starts_with(BOM) { BOM.len() } else { 0 };
        self.feed_lines(&first[skip..], on_event);
    }

    /// The stream ended: a line and an event it left unterminated are still read.
    pub fn finish<F: FnMut(Event<'_>)>(&mut self, on_event: &mut F) {
        if self.line_open {
            self.line_open = false;
            self.started = true;
            let line = std::mem::take(&mut self.line);
            self.take_line(&line, None, &[], on_event);
            self.line = line;
            self.line.clear();
        }
        self.dispatch(&[], on_event);
        self.after_cr = false;
    }

    fn feed_lines<F: FnMut(Event<'_>)>(&mut self, chunk: &[u8], on_event: &mut F) {
        let mut pos = 0;
        if std::mem::take(&mut self.after_cr) && chunk.first() == Some(&b'\n') {
            pos = 1;
        }
        while let Some(found) = memchr2(b'\n', b'\r', &chunk[pos..]) {
            let end = pos + found;
            if self.line_open {
                self.keep_line_bytes(&chunk[pos..end]);
                self.line_open = false;
                let line = std::mem::take(&mut self.line);
                self.take_line(&line, None, chunk, on_event);
                self.line = line;
                self.line.clear();
            } else {
                self.take_line(&chunk[pos..end], Some(pos), chunk, on_event);
            }
            pos = past_line_end(chunk, end, &mut self.after_cr);
        }
        if pos < chunk.len() {
            self.keep_line_bytes(&chunk[pos..]);
            self.line_open = true;
        }
        // The chunk goes away: data still read from it moves to the reader's buffer.
        if let Data::InChunk { start, end } = self.held {
            self.data.clear();
            self.data.extend_from_slice(&chunk[start..end]);
            self.held = Data::Buffered;
        }
    }

    fn keep_line_bytes(&mut self, bytes: &[u8]) {
        if self.oversized {
            return;
        }
        let held = if self.held == Data::Buffered {
            self.data.len()
        } else {
            0
        };
        if self.line.len() + bytes.len() + held > self.max_event {
            self.drop_event();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn drop_event(&mut self) {
        self.oversized = true;
        self.line.clear();
        self.data.clear();
        self.held = Data::Buffered;
    }

    /// One whole line; `at`: where it starts in `chunk` when it lies there.
    fn take_line<F: FnMut(Event<'_>)>(&mut self, line: &[u8], at: Option<usize>, chunk: &[u8], on_event: &mut F) {
        if line.is_empty() {
            // A line carried across chunks is never blank: empty, its bytes were dropped.
            if at.is_some() {
                self.dispatch(chunk, on_event);
            }
            return;
        }
        if self.oversized || line[0] == b':' {
            return;
        }
        let (name, value_at) = match memchr(b':', line) {
            Some(colon) if line.get(colon + 1) == Some(&b' ') => (&line[..colon], colon + 2),
            Some(colon) => (&line[..colon], colon + 1),
            None => (line, line.len()),
        };
        let value = &line[value_at..];
        match name {
            b"data" => match (self.held, at) {
                (Data::None, Some(at)) => {
                    self.held = Data::InChunk {
                        start: at + value_at,
                        end: at + line.len(),
                    }
                }
                _ => self.append_data(chunk, value),
            },
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
                self.has_event = true;
            }
            b"id" if memchr(0, value).is_none() => {
                self.last_id.clear();
                self.last_id.push_str(&String::from_utf8_lossy(value));
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
    }

    fn append_data(&mut self, chunk: &[u8], value: &[u8]) {
        match self.held {
            Data::None => self.data.clear(),
            Data::InChunk { start, end } => {
                self.data.clear();
                self.data.extend_from_slice(&chunk[start..end]);
                self.data.push(b'\n');
            }
            Data::Buffered => self.data.push(b'\n'),
        }
        self.held = Data::Buffered;
        if self.data.len() + value.len() + self.line.len() > self.max_event {
            return self.drop_event();
        }
        self.data.extend_from_slice(value);
    }

    fn dispatch<F: FnMut(Event<'_>)>(&mut self, chunk: &[u8], on_event: &mut F) {
        let data: &[u8] = match self.held {
            Data::None => &[],
            Data::InChunk { start, end } => &chunk[start..end],
            Data::Buffered => &self.data,
        };
        if self.oversized || data.len() > self.max_event {
            self.dropped += 1;
        } else if !data.is_empty() {
            on_event(Event {
                name: self.has_event.then_some(self.event.as_str()),
                data,
                id: &self.last_id,
            });
        }
        self.held = Data::None;
        self.has_event = false;
        self.oversized = false;
    }
}

/// Where the next line starts after the line ending at `end` (a `\n` or `\r`): past a
/// `\r\n` as one ending; a `\r` last in the chunk leaves `after_cr` for the next chunk.
fn past_line_end(chunk: &[u8], end: usize, after_cr: &mut bool) -> usize {
    let next = end + 1;
    if chunk[end] != b'\r' {
        return next;
    }
    match chunk.get(next) {
        Some(b'\n') => next + 1,
        Some(_) => next,
        None => {
            *after_cr = true;
            next
        }
    }
}

/// The reader with owned events, for callers that keep them.
#[derive(Debug, Default)]
pub struct SseParser {
    reader: SseReader,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that drops events bigger than `max_event` bytes; see [`SseParser::dropped`].
    pub fn with_max_event(max_event: usize) -> Self {
        SseParser {
            reader: SseReader::with_max_event(max_event),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.reader.feed(bytes, &mut |event| out.push(event.into_owned()));
        out
    }

    /// The stream ended: an event the upstream left unterminated is still delivered.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.reader.finish(&mut |event| out.push(event.into_owned()));
        out
    }

    /// How many events were dropped for being bigger than the limit.
    pub fn dropped(&self) -> u64 {
        self.reader.dropped()
    }

    pub fn last_event_id(&self) -> &str {
        self.reader.last_event_id()
    }
}

/// Reads the first event in `bytes` (one whole event as it was sent, say): its data is not
/// copied when it is one line.
pub fn with_first_event<R>(bytes: &[u8], read: impl FnOnce(Event<'_>) -> R) -> Option<R> {
    let mut reader = SseReader::new();
    let mut read = Some(read);
    let mut out = None;
    let mut first = |event: Event<'_>| {
        if let Some(read) = read.take() {
            out = Some(read(event));
        }
    };
    reader.feed(bytes, &mut first);
    reader.finish(&mut first);
    out
}

/// Cuts a byte stream into whole events as they were sent, every byte kept and in order, for
/// a relay that must drop or hold back some events: each piece ends with the blank line that
/// ends its event (the bytes after the last one come from [`SseFramer::finish`]).
#[derive(Debug, Default)]
pub struct SseFramer {
    /// The start of an event cut by a chunk boundary.
    pending: Vec<u8>,
    after_cr: bool,
    /// The line being read already has bytes from an earlier chunk.
    line_started: bool,
}

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The events `chunk` completes; an event that lies inside it is a slice of it, not a copy.
    pub fn push(&mut self, chunk: &Bytes) -> Vec<Bytes> {
        let mut out = Vec::new();
        if chunk.is_empty() {
            return out;
        }
        let mut event_start = 0;
        let mut pos = 0;
        if std::mem::take(&mut self.after_cr) && chunk.first() == Some(&b'\n') {
            pos = 1;
        }
        let mut line_start = pos;
        while let Some(found) = memchr2(b'\n', b'\r', &chunk[pos..]) {
            let end = pos + found;
            let blank = end == line_start && !self.line_started;
            self.line_started = false;
            pos = past_line_end(chunk, end, &mut self.after_cr);
            line_start = pos;
            if blank {
                if self.pending.is_empty() {
                    out.push(chunk.slice(event_start..pos));
                } else {
                    self.pending.extend_from_slice(&chunk[event_start..pos]);
                    out.push(Bytes::from(std::mem::take(&mut self.pending)));
                }
                event_start = pos;
            }
        }
        if line_start < chunk.len() {
            self.line_started = true;
        }
        self.pending.extend_from_slice(&chunk[event_start..]);
        out
    }

    /// The bytes after the last whole event, if any.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.after_cr = false;
        self.line_started = false;
        (!self.pending.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.pending)))
    }
}

#[cfg(test)]
mod tests;

//! The text log's fields, written as tracing's default formatter writes them but without
//! going through `Debug` for the plain values every request line carries (a short ASCII
//! string, a count, a flag). Anything else (the message, floats, `%` values, unusual text,
//! colours on a terminal) is handed to tracing's own visitor, so the line is the same
//! byte for byte.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::FormatFields;

/// The log's timestamp, written as tracing's `SystemTime` writes it
/// (`2026-12-01T11:23:45.123456Z`), but with the date and time of day worked out once a
/// second per thread rather than for every line: only the microseconds change in between.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogTime;

thread_local! {
    /// The second last written, and its text up to the decimal point.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for LogTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write_time(SystemTime::now(), w)
    }
}

fn write_time(at: SystemTime, w: &mut impl fmt::Write) -> fmt::Result {
    let Ok(since) = at.duration_since(UNIX_EPOCH) else {
        // Before 1970 (a clock set wrong): tracing's own formatter knows that calendar.
        let mut text = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut text))?;
        return w.write_str(&text);
    };
    let seconds = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != seconds {
            cached.1.clear();
            second_text(seconds, &mut cached.1)?;
            cached.0 = seconds;
        }
        w.write_str(&cached.1)
    })?;
    let mut micros = since.subsec_micros();
    let mut digits = [b'0'; 7];
    digits[6] = b'Z';
    for digit in digits[..6].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    w.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
}

/// `2026-12-01T11:23:45.` for a Unix second.
fn second_text(seconds: u64, out: &mut String) -> fmt::Result {
    use fmt::Write;
    let at = i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(fmt::Error)?;
    let year = at.year();
    if year > 9999 {
        write!(out, "+{year}")?;
    } else {
        write!(out, "{year:04}")?;
    }
    write!(
        out,
        "-{:02}-{:02}T{:02}:{:02}:{:02}.",
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `FormatFields` for the text log (`fmt().fmt_fields(QuickFields)`).
#[derive(Debug, Default, Clone, Copy)]
pub struct QuickFields;

impl<'writer> FormatFields<'writer> for QuickFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = QuickVisitor {
            plain: !writer.has_ansi_escapes(),
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct QuickVisitor<'a> {
    writer: Writer<'a>,
    /// No colours: a field's name is written as it is.
    plain: bool,
    is_empty: bool,
    result: fmt::Result,
}

impl QuickVisitor<'_> {
    /// Whether this field is written here rather than by tracing's visitor.
    fn takes(&self, field: &Field) -> bool {
        let name = field.name();
        self.plain && self.result.is_ok() && name != "message" && !name.starts_with("r#") && !name.starts_with("log.")
    }

    fn name(&mut self, field: &Field) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }

    /// Tracing's own visitor for one field, for everything not written here.
    fn fallback(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = tracing_subscriber::field::VisitOutput::finish(visitor);
        // Tracing's visitor writes nothing for the log crate's metadata fields.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    /// `field=text` written here when this field is; tracing's visitor otherwise.
    fn unquoted(&mut self, field: &Field, text: &str, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.takes(field) {
            self.result = self.name(field).and_then(|()| self.writer.write_str(text));
        } else {
            self.fallback(field, record);
        }
    }
}

/// A string whose `Debug` form is itself in quotes: printable ASCII without `"` or `\`.
fn is_plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for QuickVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.takes(field) && is_plain(value) {
            self.result = self.name(field).and_then(|()| {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            });
        } else {
            self.fallback(field, |v| v.record_str(field, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.unquoted(field, itoa::Buffer::new().format(value), |v| v.record_u64(field, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.unquoted(field, itoa::Buffer::new().format(value), |v| v.record_i64(field, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.unquoted(field, if value { "true" } else { "false" }, |v| {
            v.record_bool(field, value)
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.fallback(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.fallback(field, |v| v.record_debug(field, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn events() {
        let served = "gpt-4o";
        tracing::info!(
            api_key = "ak_123",
            agent = "-",
            model = %served,
            status = 200u16,
            delta = -3i64,
            estimated = false,
            cached = true,
            cost_usd = 0.000125,
            quoted = "say \"hi\"",
            path = "C:\\tmp",
            unicode = "café ☕",
            control = "a\tb\u{1b}[31m",
            empty = "",
            "request"
        );
        tracing::warn!(error = %std::io::Error::other("disk full"), "cannot append: {}", "the journal");
        tracing::info!("only a message with \u{1b}[2J escape");
        let err = std::io::Error::other("boom");
        tracing::error!(
            error = &err as &(dyn std::error::Error + 'static),
            r#type = "x",
            "failed"
        );
        tracing::info!(count = 7u64, "a count first");
        tracing::info!(name = "first", "");
    }

    fn render(quick: bool, ansi: bool) -> String {
        let capture = Capture::default();
        let sink = capture.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(ansi)
            .without_time()
            .with_target(false);
        if quick {
            tracing::subscriber::with_default(builder.fmt_fields(QuickFields).finish(), events);
        } else {
            tracing::subscriber::with_default(builder.finish(), events);
        }
        let bytes = capture.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_are_the_same_as_tracings_default_fields() {
        let quick = render(true, false);
        assert_eq!(quick, render(false, false));
        assert!(
            quick.contains(r#"api_key="ak_123" agent="-" model=gpt-4o status=200 delta=-3"#),
            "{quick}"
        );
        assert!(quick.contains(r#"quoted="say \"hi\"""#), "{quick}");
    }

    fn written(at: SystemTime) -> String {
        let mut text = String::new();
        write_time(at, &mut text).unwrap();
        text
    }

    #[test]
    fn the_timestamp_is_written_as_tracing_writes_it() {
        use std::time::Duration;
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(written(at), "2023-11-14T22:13:20.123456Z");
        // The same second again (from the cache), then the next one, then an earlier one.
        assert_eq!(written(at + Duration::from_nanos(7_000)), "2023-11-14T22:13:20.123463Z");
        assert_eq!(
            written(UNIX_EPOCH + Duration::new(1_700_000_001, 5_000)),
            "2023-11-14T22:13:21.000005Z"
        );
        assert_eq!(
            written(UNIX_EPOCH + Duration::new(951_782_400, 0)),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(written(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // Against tracing's own formatter, now: the same shape, and at most a moment apart.
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        let mine = {
            let mut text = String::new();
            LogTime.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        assert_eq!(mine.len(), theirs.len(), "{mine} / {theirs}");
        assert_eq!(mine[..16], theirs[..16], "{mine} / {theirs}");
    }

    #[test]
    fn coloured_lines_are_the_same_as_tracings_default_fields() {
        assert_eq!(render(true, true), render(false, true));
    }
}

//! The server's log sink: lines are appended to one in-memory buffer where they are formatted,
//! and a background thread writes what has gathered to stderr every `FLUSH_EVERY`, in one
//! `write`. A request (whose one log line is written as it ends) therefore never waits on a
//! slow terminal, pipe or journal, and never wakes another thread: a queue with a writer
//! thread woken per line cost about a fifth of the router's throughput on one core (a
//! context switch, a `write` and the thread's spinning per request), the same trade nginx's
//! buffered access log makes. A crash loses at most the last `FLUSH_EVERY` of lines; usage rows
//! are kept in the database either way. Past `MAX_BUFFERED` bytes (stderr stuck) new lines are
//! dropped and counted, and the count is reported once the sink writes again.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Past this much buffered, the flusher is woken at once instead of at its next tick.
const WAKE_AT: usize = 256 * 1024;
const MAX_BUFFERED: usize = 16 * 1024 * 1024;

struct Shared {
    lines: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stop: AtomicBool,
    flusher: std::sync::OnceLock<std::thread::Thread>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            lines: Mutex::new(Vec::with_capacity(64 * 1024)),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            flusher: std::sync::OnceLock::new(),
        }
    }

    fn append(&self, line: &[u8], urgent: bool) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() + line.len() > MAX_BUFFERED {
            drop(lines);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        lines.extend_from_slice(line);
        let wake = urgent || lines.len() >= WAKE_AT;
        drop(lines);
        if wake {
            if let Some(flusher) = self.flusher.get() {
                flusher.unpark();
            }
        }
    }

    /// Writes out what has gathered; `spare` is the buffer swapped in (its capacity reused).
    fn flush_into(&self, out: &mut impl Write, spare: &mut Vec<u8>) {
        spare.clear();
        std::mem::swap(&mut *self.lines.lock().unwrap_or_else(PoisonError::into_inner), spare);
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                spare,
                "WARN auxot: {dropped} log lines were dropped: stderr did not take them fast enough"
            );
        }
        if !spare.is_empty() {
            // Nowhere to report a failing stderr: the lines are gone either way.
            let _ = out.write_all(spare);
            let _ = out.flush();
        }
        if spare.capacity() > WAKE_AT * 4 {
            *spare = Vec::new();
        }
    }
}

/// Where `tracing_subscriber::fmt` writes: one `write_all` per formatted event. Warnings and
/// errors wake the flusher at once: rare, and an operator watching wants them now.
#[derive(Clone)]
pub struct LogBuffer {
    shared: Arc<Shared>,
    urgent: bool,
}

/// Stops the flusher and writes the last lines out when dropped (at the end of `main`).
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A sink writing to `out` (stderr in the server) from a thread of its own.
pub fn spawn<W: Write + Send + 'static>(mut out: W) -> std::io::Result<(LogBuffer, FlushGuard)> {
    let shared = Arc::new(Shared::new());
    let flusher = shared.clone();
    let thread = std::thread::Builder::new().name("auxot-log".into()).spawn(move || {
        let mut spare = Vec::with_capacity(64 * 1024);
        loop {
            std::thread::park_timeout(FLUSH_EVERY);
            let stop = flusher.stop.load(Ordering::Acquire);
            flusher.flush_into(&mut out, &mut spare);
            if stop {
                return;
            }
        }
    })?;
    let _ = shared.flusher.set(thread.thread().clone());
    Ok((
        LogBuffer {
            shared: shared.clone(),
            urgent: false,
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl LogBuffer {
    /// Writes what has gathered to `out` from the calling thread, if no one holds the buffer:
    /// for a panic hook, so that with `panic = "abort"` the lines that led up to a panic are
    /// not lost with the process.
    pub fn flush_now(&self, out: &mut impl Write) {
        let Ok(mut lines) = self.shared.lines.try_lock() else {
            return;
        };
        let _ = out.write_all(&lines);
        let _ = out.flush();
        lines.clear();
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        LogBuffer {
            shared: self.shared.clone(),
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back from another thread.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(captured: &Captured) -> String {
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_reach_the_output_in_order_without_a_flush_call() {
        let out = Captured::default();
        let (mut sink, guard) = spawn(out.clone()).unwrap();
        for n in 0..100 {
            sink.write_all(format!("line {n}\n").as_bytes()).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while text(&out).lines().count() < 100 {
            assert!(std::time::Instant::now() < deadline, "lines never reached the output");
            std::thread::sleep(Duration::from_millis(10));
        }
        let expected: String = (0..100).map(|n| format!("line {n}\n")).collect();
        assert_eq!(text(&out), expected);
        drop(guard);
    }

    #[test]
    fn warnings_and_errors_wake_the_flusher_info_lines_wait_for_it() {
        use tracing_subscriber::fmt::MakeWriter;
        let (sink, _guard) = spawn(Captured::default()).unwrap();
        let urgent = |level| {
            let meta = tracing::Metadata::new(
                "t",
                "t",
                level,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
                tracing::metadata::Kind::EVENT,
            );
            sink.make_writer_for(&meta).urgent
        };
        assert!(urgent(tracing::Level::ERROR));
        assert!(urgent(tracing::Level::WARN));
        assert!(!urgent(tracing::Level::INFO));
        assert!(!urgent(tracing::Level::DEBUG));
    }

    struct NoCallsite;
    impl tracing::callsite::Callsite for NoCallsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!()
        }
    }
    static CALLSITE: NoCallsite = NoCallsite;

    #[test]
    fn flush_now_writes_the_gathered_lines_from_the_calling_thread() {
        // No flusher thread: nothing else takes the line first.
        let mut sink = LogBuffer {
            shared: Arc::new(Shared::new()),
            urgent: false,
        };
        sink.write_all(b"before the panic\n").unwrap();
        let mut out = Vec::new();
        sink.flush_now(&mut out);
        assert_eq!(out, b"before the panic\n");
    }

    #[test]
    fn dropping_the_guard_writes_the_last_lines() {
        let out = Captured::default();
        let (mut sink, guard) = spawn(out.clone()).unwrap();
        sink.write_all(b"last words\n").unwrap();
        drop(guard);
        assert_eq!(text(&out), "last words\n");
    }

    #[test]
    fn lines_past_the_cap_are_dropped_counted_and_reported() {
        let shared = Shared::new();
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..20 {
            shared.append(&line, false);
        }
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 4);
        let mut out = Vec::new();
        shared.flush_into(&mut out, &mut Vec::new());
        assert!(out[..MAX_BUFFERED].iter().all(|b| *b == b'x'));
        let tail = String::from_utf8(out[MAX_BUFFERED..].to_vec()).unwrap();
        assert!(tail.contains("4 log lines were dropped"), "{tail}");
        // Once written out, lines are taken again.
        shared.append(b"again\n", false);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 0);
    }
}

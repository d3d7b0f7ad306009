//! Where the log goes: stderr, with the access log's lines (one per
//! request, target `access`) in batches written by one thread, so a
//! request's line costs the runtime thread a copy into a buffer, not a
//! system call.
//!
//! Order and loss: lines reach stderr in the order they were logged. Every
//! other line (start-up, the worker's state, any warning or error, an
//! access line of a 5xx, which is a `warn`) is written at once by the
//! thread that logs it, after everything buffered before it, so what led up
//! to an event is out when the event is; so is any line while more than
//! [`MAX_BUFFERED`] bytes wait (a stderr nobody reads slows logging down, as
//! an unbuffered stderr would, instead of growing memory). Access lines wait
//! at most [`FLUSH_EVERY`]. [`LogWriter::flush`] writes the rest (at exit,
//! and before a panic message); a process killed outright loses at most
//! that window of access lines.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The target whose lines are batched: the access log's.
pub const BATCHED_TARGET: &str = "access";

/// How long a line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Beyond this many buffered bytes, loggers write through themselves.
pub const MAX_BUFFERED: usize = 1 << 20;

/// The log's writer; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

struct Shared {
    /// Lines not yet written. Always locked before `sink` when both are
    /// needed, and `sink` is taken before `pending` is let go: whoever takes
    /// lines out writes them before anyone who takes later ones.
    pending: Mutex<Vec<u8>>,
    /// Signalled when the first line lands in an empty buffer.
    filled: Condvar,
    sink: Mutex<Box<dyn Write + Send>>,
    /// False when the flushing thread could not start: every line is
    /// written through, as an unbuffered stderr would.
    buffered: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter").finish_non_exhaustive()
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while writing a log line leaves nothing half-updated that
    // matters: keep logging.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogWriter {
    /// A writer to stderr, with its flushing thread.
    pub fn stderr() -> LogWriter {
        LogWriter::to(std::io::stderr())
    }

    /// A writer to `sink`, with its flushing thread (which lives as long as
    /// the process: the log is needed to the end).
    pub fn to(sink: impl Write + Send + 'static) -> LogWriter {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(16 * 1024)),
            filled: Condvar::new(),
            sink: Mutex::new(Box::new(sink)),
            buffered: std::sync::atomic::AtomicBool::new(true),
        });
        let flusher = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || flusher.run());
        if spawned.is_err() {
            shared.buffered.store(false, Ordering::Relaxed);
        }
        LogWriter { shared }
    }

    /// Writes every buffered line now.
    pub fn flush(&self) {
        self.shared.write_through(&[]);
    }

    fn push(&self, line: &[u8], urgent: bool) {
        let mut pending = lock(&self.shared.pending);
        if urgent
            || pending.len() + line.len() > MAX_BUFFERED
            || !self.shared.buffered.load(Ordering::Relaxed)
        {
            drop(pending);
            self.shared.write_through(line);
            return;
        }
        let was_empty = pending.is_empty();
        pending.extend_from_slice(line);
        drop(pending);
        if was_empty {
            self.shared.filled.notify_one();
        }
    }
}

impl Shared {
    /// Writes what is buffered, then `line`, in that order.
    fn write_through(&self, line: &[u8]) {
        let mut pending = lock(&self.pending);
        let earlier = std::mem::take(&mut *pending);
        let mut sink = lock(&self.sink);
        drop(pending);
        let _ = sink.write_all(&earlier);
        let _ = sink.write_all(line);
        let _ = sink.flush();
    }

    /// The flushing thread: waits for a first line, lets the window fill,
    /// writes it all in one call.
    fn run(&self) {
        let mut spare = Vec::with_capacity(16 * 1024);
        loop {
            let mut pending = lock(&self.pending);
            while pending.is_empty() {
                pending = self.filled.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            drop(pending);
            std::thread::sleep(FLUSH_EVERY);
            let mut pending = lock(&self.pending);
            std::mem::swap(&mut *pending, &mut spare);
            let mut sink = lock(&self.sink);
            drop(pending);
            let _ = sink.write_all(&spare);
            let _ = sink.flush();
            drop(sink);
            // A burst's buffer is not kept at its peak size.
            if spare.capacity() > 256 * 1024 {
                spare = Vec::with_capacity(16 * 1024);
            } else {
                spare.clear();
            }
        }
    }
}

/// One event's writer (tracing-subscriber formats the whole line first and
/// writes it in one `write_all`).
pub struct LineWriter<'a> {
    log: &'a LogWriter,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.log.push(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            log: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        LineWriter {
            log: self,
            // Only the per-request access lines below WARN wait (tracing
            // orders levels by verbosity: WARN and ERROR are `<=`).
            urgent: meta.target() != BATCHED_TARGET || *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read, which records each write call.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !buf.is_empty() {
                lock(&self.0).push(buf.to_vec());
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Recorded {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).concat()).unwrap()
        }
    }

    #[test]
    fn a_warning_comes_out_at_once_after_the_lines_before_it() {
        let out = Recorded::default();
        let log = LogWriter::to(out.clone());
        log.push(b"info 1\n", false);
        log.push(b"info 2\n", false);
        log.push(b"warn 3\n", true);
        // No waiting for the window: the warning wrote the earlier lines first.
        assert_eq!(out.text(), "info 1\ninfo 2\nwarn 3\n");
    }

    #[test]
    fn flush_writes_buffered_lines_in_one_write() {
        let out = Recorded::default();
        let log = LogWriter::to(out.clone());
        for i in 0..100 {
            log.push(format!("line {i}\n").as_bytes(), false);
        }
        log.flush();
        let text = out.text();
        assert_eq!(text.lines().count(), 100);
        assert!(text.starts_with("line 0\n") && text.ends_with("line 99\n"));
        // At most two writes (the thread may have taken an early part).
        assert!(lock(&out.0).len() <= 2, "{} writes", lock(&out.0).len());
    }

    #[test]
    fn a_full_buffer_makes_loggers_write_through() {
        let out = Recorded::default();
        let log = LogWriter::to(out.clone());
        let big = vec![b'x'; MAX_BUFFERED];
        log.push(&big, false);
        log.push(b"\nnext\n", false);
        // Over the bound: written by the logger itself, nothing left behind.
        assert!(out.text().ends_with("\nnext\n"));
        assert_eq!(out.text().len(), MAX_BUFFERED + 6);
    }

    #[test]
    fn only_access_lines_wait_and_order_is_kept() {
        let out = Recorded::default();
        let log = LogWriter::to(out.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "access", "request one");
            tracing::info!("worker ready");
            tracing::info!(target: "access", "request two");
            tracing::warn!(target: "access", "request three failed");
        });
        // Nothing waited for the window: the start-up line took the first
        // access line out before itself, the warning the second.
        let text = out.text();
        let at = |s: &str| {
            text.find(s)
                .unwrap_or_else(|| panic!("{s} not out: {text}"))
        };
        assert!(at("request one") < at("worker ready"));
        assert!(at("worker ready") < at("request two"));
        assert!(at("request two") < at("request three failed"));
    }

    #[test]
    fn an_access_line_alone_waits_for_the_window_or_a_flush() {
        let out = Recorded::default();
        let log = LogWriter::to(out.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "access", "request one");
        });
        log.flush();
        assert!(out.text().contains("request one"));
    }
}

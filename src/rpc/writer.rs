//! [`LineWriter`]: the worker's stdin, written by whoever sends a line.
//!
//! A request line used to go through a channel to a writer task, which
//! wrote it: one task wake-up (often on the other runtime thread) per line,
//! three lines per completion. A pipe almost always has room for a line,
//! so the sender now writes it itself, at once, under a short lock that
//! keeps lines whole and in order. Only what the pipe does not take (a full
//! pipe: codex is behind) is left in a backlog for the flusher task, which
//! waits for the pipe to drain; while a backlog exists every later line
//! joins it, so order is kept. Senders wait only when the backlog is past
//! its cap, the bound the channel's capacity used to give.
//!
//! The lock is a `std` mutex held for one non-blocking write, never across
//! an `.await`: the direct write is polled once with a waker that does
//! nothing, and anything it could not finish is the flusher's, which polls
//! with its own.
//!
//! Lines whose timing does not matter (releasing a thread, starting a
//! thread for a later request) can be *deferred*: they go out right after
//! the next line written, in the same write, or after [`DEFER`] when none
//! comes. Under load that is one write (and one wake-up of codex) less per
//! completion. After, not before: the line somebody waits for goes first.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

type Sink = Pin<Box<dyn AsyncWrite + Send>>;

/// Longest a deferred line waits for a line to ride with.
pub(super) const DEFER: Duration = Duration::from_millis(5);

/// The write end of one worker's stdin. Shared by every sender and the flusher.
pub(super) struct LineWriter {
    state: Mutex<State>,
    /// Wakes the flusher: a backlog (or an unfinished flush) is waiting.
    backlog_ready: Notify,
    /// Wakes the flusher: a deferred line is waiting (sent on the way from
    /// none to some, so once per [`DEFER`] window at most).
    deferred_ready: Notify,
    /// Wakes senders waiting for the backlog to shrink below `cap`.
    room: Notify,
    /// Backlog bytes past which senders wait.
    cap: usize,
}

struct State {
    /// `None` once shut down or failed.
    sink: Option<Sink>,
    /// Bytes the pipe has not taken yet, oldest first, from `start` on.
    backlog: Vec<u8>,
    start: usize,
    /// Deferred lines, written after the next line or by the flusher.
    deferred: Vec<u8>,
}

impl State {
    fn backlog_len(&self) -> usize {
        self.backlog.len() - self.start
    }
}

/// Why a line was not written.
#[derive(Debug)]
pub(super) enum WriteError {
    /// The writer was shut down (the channel closed).
    Closed,
    /// The pipe failed; the channel must close with this.
    Failed(io::Error),
}

impl LineWriter {
    pub(super) fn new<W: AsyncWrite + Send + 'static>(sink: W, cap: usize) -> LineWriter {
        LineWriter {
            state: Mutex::new(State {
                sink: Some(Box::pin(sink)),
                backlog: Vec::new(),
                start: 0,
                deferred: Vec::new(),
            }),
            backlog_ready: Notify::new(),
            deferred_ready: Notify::new(),
            room: Notify::new(),
            cap,
        }
    }

    /// Queues `line` to go out right after the next line written, or after
    /// [`DEFER`]. Never waits (callable from a `Drop`).
    pub(super) fn send_later(&self, line: &[u8]) -> Result<(), WriteError> {
        let mut state = self.state.lock().expect("rpc writer poisoned");
        if state.sink.is_none() {
            return Err(WriteError::Closed);
        }
        let first = state.deferred.is_empty();
        state.deferred.extend_from_slice(line);
        if first {
            self.deferred_ready.notify_one();
        }
        Ok(())
    }

    /// Writes `line`, waiting first while the backlog is past its cap.
    pub(super) async fn send(&self, line: &[u8]) -> Result<(), WriteError> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a drain between the check and
            // the wait is not missed.
            room.as_mut().enable();
            {
                let mut state = self.state.lock().expect("rpc writer poisoned");
                if state.backlog_len() < self.cap || state.sink.is_none() {
                    return self.write_locked(&mut state, line);
                }
            }
            room.await;
        }
    }

    fn write_locked(&self, state: &mut State, line: &[u8]) -> Result<(), WriteError> {
        if state.sink.is_none() {
            return Err(WriteError::Closed);
        }
        if state.deferred.is_empty() {
            return self.write_in_order(state, line);
        }
        // The deferred lines ride along, after it, in the same write.
        let mut joined = Vec::with_capacity(line.len() + state.deferred.len());
        joined.extend_from_slice(line);
        joined.extend_from_slice(&state.deferred);
        state.deferred.clear(); // keeps its capacity
        self.write_in_order(state, &joined)
    }

    /// Writes the deferred lines now (the flusher, when none rode along).
    fn write_deferred(&self) -> Result<(), WriteError> {
        let mut state = self.state.lock().expect("rpc writer poisoned");
        if state.deferred.is_empty() || state.sink.is_none() {
            return Ok(());
        }
        self.write_locked(&mut state, &[])
    }

    fn write_in_order(&self, state: &mut State, line: &[u8]) -> Result<(), WriteError> {
        if state.backlog_len() > 0 {
            // Behind earlier lines: order first.
            state.backlog.extend_from_slice(line);
            return Ok(());
        }
        let mut cx = Context::from_waker(Waker::noop());
        match write_then_flush(state.sink.as_mut().expect("checked"), &mut cx, line) {
            Ok(Wrote::All) => Ok(()),
            Ok(Wrote::Unflushed) => {
                // An empty backlog: the flusher only flushes.
                self.backlog_ready.notify_one();
                Ok(())
            }
            Ok(Wrote::Part(written)) => {
                // The pipe is full (or the flush unfinished): the flusher
                // writes the rest, and every later line after it.
                state.backlog.clear();
                state.start = 0;
                state.backlog.extend_from_slice(&line[written..]);
                self.backlog_ready.notify_one();
                Ok(())
            }
            Err(e) => {
                self.fail(state);
                Err(WriteError::Failed(e))
            }
        }
    }

    /// The pipe failed: nothing more is written, and waiting senders learn it.
    fn fail(&self, state: &mut State) {
        state.sink = None;
        state.backlog = Vec::new();
        state.start = 0;
        self.room.notify_waiters();
    }

    /// The flusher task: writes what the senders could not, until `closed`
    /// is cancelled or the pipe fails, then shuts the pipe down (dropping
    /// stdin tells codex to exit; it does so in ~15 ms, even mid-turn).
    pub(super) async fn flush_until(&self, closed: &CancellationToken) -> Result<(), io::Error> {
        // When the deferred lines waiting now are written if none rode along.
        let mut due: Option<tokio::time::Instant> = None;
        let outcome = loop {
            tokio::select! {
                _ = closed.cancelled() => break Ok(()),
                _ = self.backlog_ready.notified() => {
                    if let Err(e) = std::future::poll_fn(|cx| self.poll_drain(cx)).await {
                        break Err(e);
                    }
                }
                _ = self.deferred_ready.notified(), if due.is_none() => {
                    due = Some(tokio::time::Instant::now() + DEFER);
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    due = None;
                    if let Err(WriteError::Failed(e)) = self.write_deferred() {
                        break Err(e);
                    }
                }
            }
        };
        let sink = self.state.lock().expect("rpc writer poisoned").sink.take();
        self.room.notify_waiters();
        if let Some(mut sink) = sink {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut sink).await;
        }
        outcome
    }

    /// Writes the backlog until it is empty (then flushes) or the pipe is full.
    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        let mut state = self.state.lock().expect("rpc writer poisoned");
        let state = &mut *state;
        let Some(sink) = state.sink.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match write_then_flush(sink, cx, &state.backlog[state.start..]) {
            Ok(Wrote::Part(written)) => {
                state.start += written;
                // Under steady pressure the backlog may never empty: drop
                // what was written once it is half the buffer.
                if state.start >= state.backlog.len() / 2 {
                    state.backlog.drain(..state.start);
                    state.start = 0;
                }
                if state.backlog_len() < self.cap {
                    self.room.notify_waiters();
                }
                Poll::Pending
            }
            Ok(wrote) => {
                state.backlog.clear();
                state.start = 0;
                self.room.notify_waiters();
                match wrote {
                    Wrote::All => Poll::Ready(Ok(())),
                    // Polled again (with only the flush left) when it can go on.
                    _ => Poll::Pending,
                }
            }
            Err(e) => {
                self.fail(state);
                Poll::Ready(Err(e))
            }
        }
    }
}

/// How far a write got without waiting.
enum Wrote {
    /// All of it, flushed.
    All,
    /// All of it, but the flush did not finish.
    Unflushed,
    /// This many bytes: the sink is full.
    Part(usize),
}

/// Writes as much of `bytes` as the sink takes without waiting, then
/// flushes if all of it went. With a sender's no-op waker (the direct
/// write) or the flusher's own (the backlog).
fn write_then_flush(
    sink: &mut Sink,
    cx: &mut Context<'_>,
    bytes: &[u8],
) -> Result<Wrote, io::Error> {
    let mut written = 0;
    while written < bytes.len() {
        match sink.as_mut().poll_write(cx, &bytes[written..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(Wrote::Part(written)),
        }
    }
    match sink.as_mut().poll_flush(cx) {
        Poll::Ready(Ok(())) => Ok(Wrote::All),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(Wrote::Unflushed),
    }
}

//! [`ExecTurn`]: one `codex exec --json` process, read as a turn.
//!
//! The process is the turn: it holds a turn slot and the private directory
//! of its image and schema files for as long as it may run. Dropped before
//! it ended (the client went away), it is killed with its process group.
//! At the turn's end it is stopped the same way before the end is handed
//! on, so a client that has the end also has no process left behind.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;

use super::events::{map_line, Line};
use crate::core::{EventQueue, Failure, FailureKind, TurnEvent, TurnSlot, TurnSource};

/// A private directory removed when the turn goes.
pub(super) struct PrivateDir(pub(super) PathBuf);

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The events of one exec turn, in order. Ends after `Finished` or `Failed`.
///
/// The process's reader lives in a box that a read in flight owns (and
/// gives back with its event): the run polls its turns in place
/// ([`TurnSource::poll_next`]), and the reader's `async` steps (a line, a
/// timeout, stopping the process) are easiest kept as they are. An exec
/// turn already costs a process; a box per read is nothing beside it.
pub struct ExecTurn {
    /// The process's id, for tests that watch it.
    pid: Option<u32>,
    /// `None` while a read owns it, and after its last event.
    reader: Option<Box<ExecReader>>,
    read: Option<Read>,
}

type Read = Pin<Box<dyn Future<Output = (Box<ExecReader>, Option<TurnEvent>)> + Send>>;

/// The process and what is read from it (see [`ExecTurn`]).
struct ExecReader {
    child: Child,
    /// The process's id, which is also its process group's (`process_group(0)`).
    group: Option<u32>,
    lines: Lines<BufReader<ChildStdout>>,
    /// The last lines of codex's stderr, for a process that ends without a
    /// turn event.
    stderr: Option<JoinHandle<String>>,
    queue: EventQueue,
    /// codex's `turn.completed` or `turn.failed` was read, or the process
    /// ended: nothing left to kill.
    ended: bool,
    idle_timeout: Option<Duration>,
    refuse_host_items: bool,
    _slot: TurnSlot,
    _files: PrivateDir,
}

impl ExecTurn {
    pub(super) fn new(
        child: Child,
        idle_timeout: Option<Duration>,
        refuse_host_items: bool,
        slot: TurnSlot,
        files: PrivateDir,
    ) -> ExecTurn {
        let reader = ExecReader::new(child, idle_timeout, refuse_host_items, slot, files);
        ExecTurn {
            pid: reader.child.id(),
            reader: Some(Box::new(reader)),
            read: None,
        }
    }

    /// The process's id as it started.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The next event as a poll; `Ready(None)` after the last one (as a
    /// future: [`TurnSource::next`]).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
        let read = match &mut self.read {
            Some(read) => read,
            None => {
                let Some(mut reader) = self.reader.take() else {
                    return Poll::Ready(None);
                };
                self.read.insert(Box::pin(async move {
                    let event = reader.next().await;
                    (reader, event)
                }))
            }
        };
        let (reader, event) = ready!(read.as_mut().poll(cx));
        self.read = None;
        self.reader = Some(reader);
        Poll::Ready(event)
    }
}

impl ExecReader {
    fn new(
        mut child: Child,
        idle_timeout: Option<Duration>,
        refuse_host_items: bool,
        slot: TurnSlot,
        files: PrivateDir,
    ) -> ExecReader {
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().map(|err| {
            tokio::spawn(async move {
                // Bounded: only the tail is kept.
                let mut tail = String::new();
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "codex_exec", "{line}");
                    tail.push_str(&line);
                    tail.push('\n');
                    if tail.len() > 4096 {
                        let cut = tail.len() - 2048;
                        let cut = (cut..tail.len())
                            .find(|i| tail.is_char_boundary(*i))
                            .unwrap_or(0);
                        tail.drain(..cut);
                    }
                }
                tail
            })
        });
        ExecReader {
            group: child.id(),
            child,
            lines: BufReader::new(stdout).lines(),
            stderr,
            queue: EventQueue::default(),
            ended: false,
            idle_timeout,
            refuse_host_items,
            _slot: slot,
            _files: files,
        }
    }

    /// The next event; `None` after the last one. Cancel-safe: a dropped
    /// read loses no line (`Lines::next_line` is cancel-safe).
    async fn next(&mut self) -> Option<TurnEvent> {
        loop {
            // Stopped before the end is taken out, so that a read dropped
            // while it waits for the process loses nothing.
            if self.queue.ends_next() {
                // Boxed: it runs once per turn, and inline its state (a
                // `kill` command's) would be part of every read's future.
                Box::pin(self.stop()).await;
            }
            if let Some(event) = self.queue.pop() {
                return Some(event);
            }
            if self.queue.delivered_end() {
                return None;
            }
            let read = self.lines.next_line();
            let line = match self.idle_timeout {
                Some(limit) => match tokio::time::timeout(limit, read).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.fail(Failure::new(
                            FailureKind::Timeout,
                            format!("The model sent nothing for {} ms.", limit.as_millis()),
                        ));
                        continue;
                    }
                },
                None => read.await,
            };
            match line {
                Ok(Some(line)) => match map_line(&line) {
                    Line::Events(events) => {
                        if events
                            .iter()
                            .any(|e| matches!(e, TurnEvent::Finished | TurnEvent::Failed(_)))
                        {
                            self.ended = true;
                        }
                        self.queue.extend(events);
                    }
                    Line::HostItem(kind) if self.refuse_host_items => {
                        tracing::warn!(item = %kind, "codex exec started a host action; the turn is stopped");
                        self.fail(Failure::new(
                            FailureKind::HostToolRefused,
                            format!(
                                "The model tried to use codex's own `{kind}` tool, which this gateway does not allow."
                            ),
                        ));
                    }
                    Line::HostItem(_) | Line::Nothing => {}
                },
                // The process closed its output without saying how the turn
                // ended: it failed before or outside the turn (a bad model,
                // a config error); its stderr says why.
                Ok(None) | Err(_) => {
                    self.ended = true;
                    let status = self.child.wait().await.ok();
                    let tail = match self.stderr.take() {
                        Some(task) => task.await.unwrap_or_default(),
                        None => String::new(),
                    };
                    let why = tail
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty() && !l.starts_with("WARNING"))
                        .unwrap_or("no output")
                        .to_owned();
                    let code = status
                        .and_then(|s| s.code())
                        .map_or_else(|| "a signal".to_owned(), |c| format!("status {c}"));
                    self.fail(Failure::new(
                        FailureKind::Upstream,
                        format!("codex exec ended with {code} before the turn did: {why}"),
                    ));
                }
            }
        }
    }

    fn fail(&mut self, failure: Failure) {
        self.queue.push(TurnEvent::Failed(Box::new(failure)));
    }

    /// The turn is over: stops what is left of the process and of anything
    /// it started, and reaps it. codex exec would exit on its own after
    /// `turn.completed`, but some milliseconds later, and a tool's process
    /// it started (a script still running after its yield time) may outlive
    /// it; nothing more is read from it once the turn has ended.
    /// Cancel-safe: each step can be run again.
    async fn stop(&mut self) {
        if let Some(group) = self.group {
            kill_group(group).await;
            self.group = None;
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl TurnSource for ExecTurn {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
        ExecTurn::poll_next(self, cx)
    }

    /// Reads the turn to its end in the background (bounded by the turn's
    /// own end, its idle timeout, or the process's exit).
    fn detach(mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move { while self.next().await.is_some() {} });
    }
}

impl Drop for ExecReader {
    fn drop(&mut self) {
        if self.ended && self.queue.delivered_end() {
            return;
        }
        // The process may still call the model: stop it and whatever it
        // started. It leads its own process group (`process_group(0)`);
        // without `unsafe` there is no killpg, so `kill` does it, and the
        // child itself is killed directly as well (`kill_on_drop`).
        if let Some(pid) = self.child.id() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(kill_group(pid));
            }
        }
        let _ = self.child.start_kill();
        tracing::debug!("killed an abandoned codex exec turn");
    }
}

/// SIGKILL to process group `pgid`. Without `unsafe` there is no `killpg`,
/// so the `kill` command does it.
async fn kill_group(pgid: u32) {
    let _ = tokio::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
}

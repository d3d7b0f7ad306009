//! [`LiveThreads`]: codex threads kept loaded between a conversation's
//! requests, so its next turn continues the thread instead of rebuilding it.
//!
//! A turn that ended cleanly leaves an [`IdleThread`] (made by
//! [`TurnStream::into_idle`]): the thread with its history, no subscription,
//! no slot. The cache keeps it under the id of the conversation state it
//! holds (its *head*: a response id, or the fingerprint of a chat history
//! with its answer). A request that continues that head takes the thread out
//! (so two requests never share a turn), runs its turn, and puts it back
//! under the new head. Taking a head that a thread has already moved past is
//! a fork: the caller rebuilds, and the other branch keeps its thread.
//!
//! Bounded in number (least recently used goes first) and by idle time;
//! dropping an [`IdleThread`] unloads it from codex. The lock is never held
//! across an await, and evicted threads are dropped outside it.
//!
//! [`TurnStream::into_idle`]: super::TurnStream::into_idle

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
// tokio's clock, so expiry is tested with paused time.
use tokio::time::Instant;

use super::turn::Usage;
use crate::protocol::{ThreadIdParams, ThreadUnsubscribe};
use crate::rpc::RpcClient;

/// A loaded codex thread between two turns of its conversation.
pub struct IdleThread {
    pub(super) client: RpcClient,
    pub(super) thread_id: String,
    /// The thread's token total so far: a later turn's usage is what it adds.
    pub(super) usage_total: Usage,
    /// Turns the thread has run.
    pub(super) turns: u32,
}

impl IdleThread {
    pub fn thread_id(&self) -> &str {
        &self.thread_id
    }

    /// Turns this thread has run so far.
    pub fn turns(&self) -> u32 {
        self.turns
    }

    /// Hands the thread on to a turn; dropping what is left releases nothing.
    pub(super) fn into_parts(mut self) -> (RpcClient, String, Usage, u32) {
        let thread_id = std::mem::take(&mut self.thread_id);
        (self.client.clone(), thread_id, self.usage_total, self.turns)
    }

    /// The worker that holds it has gone (restarted): nothing left to continue.
    pub fn is_gone(&self) -> bool {
        self.client.is_closed()
    }
}

impl Drop for IdleThread {
    /// Unloads the thread: with no subscriber left, codex drops an ephemeral
    /// thread about 60 s later (`thread/closed`), and later threads reuse its
    /// memory. No other call unloads one (`thread/archive` and
    /// `thread/delete` refuse ephemeral threads): measured, see
    /// docs/benchmarks.md "Conversations".
    fn drop(&mut self) {
        // Empty: the thread was handed on to a turn (`into_parts`).
        if self.thread_id.is_empty() || self.client.is_closed() {
            return;
        }
        unsubscribe_detached(&self.client, std::mem::take(&mut self.thread_id));
    }
}

/// Sends `thread/unsubscribe` for a thread nobody reads any more, without
/// waiting for the answer (a detached request: no task, no timer).
pub(super) fn unsubscribe_detached(client: &RpcClient, thread_id: String) {
    client.send_detached::<ThreadUnsubscribe>(&ThreadIdParams { thread_id });
}

/// What [`LiveThreads::take`] found for a head.
pub enum Taken {
    /// The thread holds exactly this head: continue it.
    Thread(IdleThread),
    /// A thread once held this head and has moved on (or a request holds it
    /// right now): the conversation branches here.
    MovedOn,
    /// No thread holds it (never did, evicted, worker restarted, or the
    /// request changes the model, instructions or tools).
    None,
}

/// Why a thread left the cache without being continued.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Eviction {
    /// The cache was full.
    Capacity,
    /// Idle longer than the idle TTL.
    Idle,
    /// Its worker went away.
    WorkerGone,
    /// Its conversation state was deleted by the client.
    Deleted,
}

impl Eviction {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::Capacity => "capacity",
            Eviction::Idle => "idle",
            Eviction::WorkerGone => "worker_gone",
            Eviction::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct EvictionLabels {
    pub reason: &'static str,
}

/// How a request that could continue a conversation was served.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Continuation {
    /// A new turn on the live thread that held its parent.
    Reused,
    /// Its parent's thread had moved on (a branch): a fresh thread.
    Forked,
    /// Its parent had no live thread (evicted, restarted, another shape):
    /// a fresh thread with the whole history.
    Rebuilt,
}

impl Continuation {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Continuation::Reused => "reused",
            Continuation::Forked => "forked",
            Continuation::Rebuilt => "rebuilt",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ContinuationLabels {
    pub outcome: &'static str,
}

/// Gauges and counters of the cache, registered by the caller.
#[derive(Clone, Default)]
pub struct ThreadMetrics {
    pub live: Gauge,
    pub evictions: Family<EvictionLabels, Counter>,
    pub continuations: Family<ContinuationLabels, Counter>,
}

struct Entry {
    thread: IdleThread,
    /// Whose conversation: a head is only continued by the same key.
    owner: String,
    /// Model, instructions and tools the thread was started with.
    shape: u64,
    last_used: Instant,
}

struct State {
    entries: HashMap<String, Entry>,
    /// Heads a thread has moved past (bounded), to tell a fork from a miss
    /// (an evicted head is a miss: its conversation is rebuilt, not forked).
    moved_on: HashMap<String, Instant>,
}

/// The cache. Shared by every request.
pub struct LiveThreads {
    state: Mutex<State>,
    max: usize,
    idle_ttl: Duration,
    metrics: ThreadMetrics,
}

impl LiveThreads {
    /// `max == 0` keeps nothing: every request starts a fresh thread.
    pub fn new(max: usize, idle_ttl: Duration, metrics: ThreadMetrics) -> LiveThreads {
        LiveThreads {
            state: Mutex::new(State {
                entries: HashMap::new(),
                moved_on: HashMap::new(),
            }),
            max,
            idle_ttl,
            metrics,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max > 0
    }

    pub fn metrics(&self) -> &ThreadMetrics {
        &self.metrics
    }

    /// Counts how a continuing request was served.
    pub fn count_continuation(&self, outcome: Continuation) {
        self.metrics
            .continuations
            .get_or_create(&ContinuationLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Threads held right now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the thread that holds `head` for `owner` with this `shape`.
    pub fn take(&self, head: &str, owner: &str, shape: u64) -> Taken {
        let (taken, dropped) = {
            let mut state = self.lock();
            match state.entries.remove(head) {
                Some(e) if e.thread.is_gone() => (Taken::None, Some(e)),
                Some(e) if e.owner == owner && e.shape == shape => {
                    // Whoever asks for this head again while the turn runs forks.
                    state.moved_on.insert(head.to_owned(), Instant::now());
                    (Taken::Thread(e.thread), None)
                }
                Some(e) => {
                    // Another key's, or another model, instructions or tools:
                    // this request cannot continue it; it stays for those
                    // that can.
                    state.entries.insert(head.to_owned(), e);
                    (Taken::None, None)
                }
                None if state.moved_on.contains_key(head) => (Taken::MovedOn, None),
                None => (Taken::None, None),
            }
        };
        self.metrics.live.set(self.len() as i64);
        if let Some(entry) = dropped {
            self.count(Eviction::WorkerGone, 1);
            drop(entry);
        }
        taken
    }

    /// Keeps `thread` as the holder of `head`. Over the cap, the least
    /// recently used thread is unloaded.
    pub fn keep(&self, head: String, owner: String, shape: u64, thread: IdleThread) {
        if self.max == 0 || thread.is_gone() {
            return;
        }
        let now = Instant::now();
        let mut evicted = Vec::new();
        {
            let mut state = self.lock();
            state.moved_on.remove(&head);
            while state.entries.len() >= self.max {
                let Some(oldest) = state
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(e) = state.entries.remove(&oldest) {
                    evicted.push(e);
                }
            }
            // Two requests that ended on the same head (the same history
            // answered the same way) cannot both hold it: the older goes.
            if let Some(replaced) = state.entries.insert(
                head,
                Entry {
                    thread,
                    owner,
                    shape,
                    last_used: now,
                },
            ) {
                evicted.push(replaced);
            }
            trim_moved_on(&mut state.moved_on, self.max.saturating_mul(4).max(64));
        }
        self.metrics.live.set(self.len() as i64);
        self.count(Eviction::Capacity, evicted.len());
        drop(evicted);
    }

    /// Unloads the thread holding `head`, if any (its response was deleted).
    pub fn forget(&self, head: &str) {
        let removed = self.lock().entries.remove(head);
        self.metrics.live.set(self.len() as i64);
        if removed.is_some() {
            self.count(Eviction::Deleted, 1);
        }
    }

    /// Unloads threads idle longer than the idle TTL and threads of a worker
    /// that went away. Returns how many went.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let (idle, gone) = {
            let mut state = self.lock();
            let expired: Vec<String> = state
                .entries
                .iter()
                .filter(|(_, e)| e.thread.is_gone() || now - e.last_used >= self.idle_ttl)
                .map(|(k, _)| k.clone())
                .collect();
            let mut idle = Vec::new();
            let mut gone = Vec::new();
            for k in expired {
                if let Some(e) = state.entries.remove(&k) {
                    if e.thread.is_gone() {
                        gone.push(e);
                    } else {
                        idle.push(e);
                    }
                }
            }
            state
                .moved_on
                .retain(|_, at| now - *at < self.idle_ttl.saturating_mul(4));
            (idle, gone)
        };
        self.metrics.live.set(self.len() as i64);
        self.count(Eviction::Idle, idle.len());
        self.count(Eviction::WorkerGone, gone.len());
        idle.len() + gone.len()
    }

    fn count(&self, reason: Eviction, n: usize) {
        if n > 0 {
            self.metrics
                .evictions
                .get_or_create(&EvictionLabels {
                    reason: reason.as_str(),
                })
                .inc_by(n as u64);
        }
    }

    /// Sweeps every `every` while the cache is alive.
    pub fn spawn_sweeper(self: &std::sync::Arc<Self>, every: Duration) {
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(threads) = weak.upgrade() else {
                    return;
                };
                let n = threads.sweep();
                if n > 0 {
                    tracing::debug!(unloaded = n, "idle threads unloaded");
                }
            }
        });
    }
}

/// Keeps the `moved_on` memory bounded: the oldest marks go first.
fn trim_moved_on(moved_on: &mut HashMap<String, Instant>, cap: usize) {
    if moved_on.len() <= cap {
        return;
    }
    let mut marks: Vec<(Instant, String)> =
        moved_on.iter().map(|(k, at)| (*at, k.clone())).collect();
    marks.sort();
    for (_, k) in marks.into_iter().take(moved_on.len() - cap / 2) {
        moved_on.remove(&k);
    }
}

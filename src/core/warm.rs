//! [`WarmThreads`]: threads started ahead of demand.
//!
//! A fresh turn used to cost two round trips to codex before its first
//! token: `thread/start`, then `turn/start`. A thread's start depends only
//! on its `thread/start` params (model, instructions, tools and the
//! gateway's fixed settings), so the core keeps, per worker and per exact
//! set of params, a thread already started for the next request with the
//! same params. That request goes straight to `turn/start`; the thread that
//! replaces it is started in the same write (a deferred request, answered
//! along with the turn's events), so a warm completion costs one round trip
//! and one wake-up of codex less.
//!
//! Bounded: at most `per_key` warm threads per (worker, params), at most
//! [`MAX_KEYS`] such keys (the least recently used goes first), and the
//! warm threads of settings unused for [`IDLE_TTL`] are released by the next
//! new turn (with no new turns at all they stay, at most `per_key` ×
//! [`MAX_KEYS`] per worker). Every thread that leaves unused is
//! unsubscribed, as any other thread the gateway is done with.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::threads::unsubscribe_detached;
use crate::protocol::{Method, ThreadStart, ThreadStartResponse};
use crate::rpc::RpcClient;

/// Distinct (worker, params) pairs kept warm at once.
pub(super) const MAX_KEYS: usize = 16;

/// A warm thread unused this long is released.
pub(super) const IDLE_TTL: Duration = Duration::from_secs(300);

/// One worker's channel and one exact `thread/start` params text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    channel: usize,
    params: u64,
}

struct Entry {
    client: RpcClient,
    /// Thread ids ready for a turn.
    ready: Vec<String>,
    /// `thread/start`s sent and not answered yet.
    starting: usize,
    used: Instant,
}

/// The warm threads of every worker. Cheap to clone.
#[derive(Clone)]
pub(super) struct WarmThreads {
    inner: Arc<Inner>,
}

struct Inner {
    per_key: usize,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// What a request's `thread/start` would be, and where its warm threads are.
pub(super) struct WarmSlot {
    key: Key,
}

impl WarmThreads {
    /// `per_key` 0 keeps none (every turn starts its own thread).
    pub(super) fn new(per_key: usize) -> WarmThreads {
        WarmThreads {
            inner: Arc::new(Inner {
                per_key,
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.inner.per_key > 0
    }

    /// Where the warm threads for these exact params on this worker are.
    pub(super) fn slot(&self, client: &RpcClient, params: &RawValue) -> WarmSlot {
        let mut hasher = DefaultHasher::new();
        params.get().hash(&mut hasher);
        WarmSlot {
            key: Key {
                channel: client.channel_id(),
                params: hasher.finish(),
            },
        }
    }

    /// A warm thread for `slot`, if one is ready.
    pub(super) fn take(&self, slot: &WarmSlot) -> Option<String> {
        let (taken, released) = {
            let mut entries = self.inner.entries.lock().expect("warm threads poisoned");
            // Every new turn sweeps (16 entries at most): closed workers' and
            // idle settings' threads go.
            let released = self.sweep(&mut entries, slot.key);
            let taken = entries.get_mut(&slot.key).and_then(|entry| {
                entry.used = Instant::now();
                entry.ready.pop()
            });
            (taken, released)
        };
        release(released);
        taken
    }

    /// Starts a thread for the next request with these params, unless
    /// enough are ready or starting. The request rides with the caller's
    /// next write to this worker.
    pub(super) fn refill(&self, slot: &WarmSlot, client: &RpcClient, params: &RawValue) {
        let released = {
            let mut entries = self.inner.entries.lock().expect("warm threads poisoned");
            let released = self.sweep(&mut entries, slot.key);
            let entry = entries.entry(slot.key).or_insert_with(|| Entry {
                client: client.clone(),
                ready: Vec::new(),
                starting: 0,
                used: Instant::now(),
            });
            if entry.ready.len() + entry.starting >= self.inner.per_key {
                return release(released);
            }
            entry.starting += 1;
            released
        };
        release(released);
        let warm = self.clone();
        let key = slot.key;
        let owner = client.clone();
        // Sent while the request whose turn started is in its trace scope,
        // but for a later request: in that trace its answer could come
        // after the file was written (`trace_buffer::outside_request`).
        crate::trace_buffer::outside_request(|| {
            client.send_then(ThreadStart::NAME, params, move |answer| {
                let thread = answer.ok().and_then(|raw| {
                    serde_json::from_str::<ThreadStartResponse>(raw.get())
                        .ok()
                        .map(|r| r.thread.id)
                });
                warm.started(key, &owner, thread);
            });
        });
    }

    /// A warm thread's `thread/start` answered (`None`: it failed).
    fn started(&self, key: Key, client: &RpcClient, thread: Option<String>) {
        let unwanted = {
            let mut entries = self.inner.entries.lock().expect("warm threads poisoned");
            match entries.get_mut(&key) {
                Some(entry) => {
                    entry.starting = entry.starting.saturating_sub(1);
                    match thread {
                        Some(id) if entry.ready.len() < self.inner.per_key => {
                            entry.ready.push(id);
                            None
                        }
                        other => other,
                    }
                }
                // Evicted while it started.
                None => thread,
            }
        };
        if let Some(thread_id) = unwanted {
            unsubscribe_detached(client, thread_id);
        }
    }

    /// Drops entries of closed channels, entries idle past [`IDLE_TTL`],
    /// and the least recently used when `keep` would be one too many.
    /// Returns the threads to release (outside the lock).
    fn sweep(&self, entries: &mut HashMap<Key, Entry>, keep: Key) -> Vec<(RpcClient, String)> {
        let now = Instant::now();
        let mut released = Vec::new();
        entries.retain(|key, entry| {
            let stale = entry.client.is_closed()
                || (*key != keep && now.duration_since(entry.used) >= IDLE_TTL);
            if stale && !entry.client.is_closed() {
                for id in entry.ready.drain(..) {
                    released.push((entry.client.clone(), id));
                }
            }
            !stale
        });
        if !entries.contains_key(&keep) && entries.len() >= MAX_KEYS {
            let oldest = entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k);
            if let Some(entry) = oldest.and_then(|k| entries.remove(&k)) {
                for id in entry.ready {
                    released.push((entry.client.clone(), id));
                }
            }
        }
        released
    }

    /// Warm threads ready now (all workers).
    #[cfg(test)]
    pub(super) fn ready(&self) -> usize {
        let entries = self.inner.entries.lock().expect("warm threads poisoned");
        entries.values().map(|e| e.ready.len()).sum()
    }
}

/// Releases warm threads that leave unused (called outside the lock).
fn release(threads: Vec<(RpcClient, String)>) {
    for (client, thread_id) in threads {
        unsubscribe_detached(&client, thread_id);
    }
}

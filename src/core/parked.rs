//! [`ParkedTurns`]: the store that keeps turns paused on client tool calls
//! for the client's next request.
//!
//! When a response ends on structured tool calls, codex waits for their
//! results inside the same turn. A [`ParkedTurn`] (made by
//! [`TurnStream::park`]) is that turn without its concurrency slot;
//! [`CodexCore::resume`] is the only way back to a running [`TurnStream`].
//! The store is bounded in number and entries expire; an
//! entry that goes away drops its turn, which interrupts it. Keys are the
//! caller's: the API derives them from the conversation (the core knows no
//! dialect).
//!
//! [`CodexCore::resume`]: super::CodexCore::resume

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so expiry is tested with paused time.
use tokio::time::Instant;

use super::stream::ParkedTurn;
#[cfg(doc)]
use super::stream::TurnStream;

struct Entry {
    turn: ParkedTurn,
    expires: Instant,
}

/// The store. Shared by every request; the lock is never held across an
/// await, and turns are dropped outside it (dropping one spawns its release).
pub struct ParkedTurns {
    entries: Mutex<HashMap<u64, Entry>>,
    ttl: Duration,
    max: usize,
}

impl ParkedTurns {
    /// `max == 0` keeps nothing (every continuation rebuilds).
    pub fn new(ttl: Duration, max: usize) -> ParkedTurns {
        ParkedTurns {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max,
        }
    }

    /// Keeps `turn` under `key`. Expired entries go first; when the store is
    /// full, the entry closest to expiry makes room.
    pub fn park(&self, key: u64, turn: ParkedTurn) {
        if self.max == 0 {
            return;
        }
        let now = Instant::now();
        let evicted: Vec<Entry> = {
            let mut entries = self.entries.lock().expect("parked turns poisoned");
            let mut gone: Vec<u64> = entries
                .iter()
                .filter(|(_, e)| e.expires <= now)
                .map(|(k, _)| *k)
                .collect();
            if entries.len() - gone.len() >= self.max {
                if let Some((k, _)) = entries
                    .iter()
                    .filter(|(k, _)| !gone.contains(k))
                    .min_by_key(|(_, e)| e.expires)
                {
                    gone.push(*k);
                }
            }
            let mut evicted: Vec<Entry> = gone.iter().filter_map(|k| entries.remove(k)).collect();
            let replaced = entries.insert(
                key,
                Entry {
                    turn,
                    expires: now + self.ttl,
                },
            );
            evicted.extend(replaced);
            evicted
        };
        drop(evicted);
    }

    /// The live turn under `key`, if the call ids in `answered` cover every
    /// call it showed. An entry that is taken but not covered is dropped
    /// (its turn is interrupted): the client moved on.
    pub fn take<'a>(
        &self,
        key: u64,
        answered: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Option<ParkedTurn> {
        let entry = self
            .entries
            .lock()
            .expect("parked turns poisoned")
            .remove(&key)?;
        if entry.expires <= Instant::now() || !entry.turn.answered_by(answered) {
            return None;
        }
        Some(entry.turn)
    }

    /// Drops expired entries (a task in `app.rs` calls this periodically).
    pub fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<Entry> = {
            let mut entries = self.entries.lock().expect("parked turns poisoned");
            let keys: Vec<u64> = entries
                .iter()
                .filter(|(_, e)| e.expires <= now)
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| entries.remove(k)).collect()
        };
        drop(expired);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("parked turns poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

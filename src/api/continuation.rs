//! Turns paused on client tool calls, kept for the client's next request.
//!
//! When a response ends with structured tool calls, codex waits for their
//! results inside the same turn. If the client's next request carries those
//! results (matched by `tool_call_id`, on top of the same conversation), the
//! gateway answers the waiting calls and the same turn goes on: no new
//! thread, no replay of the history. Anything else rebuilds the
//! conversation on a fresh thread. Entries are bounded in number and expire
//! (`PROXY_TOOL_CONTINUATION_MAX`, `PROXY_TOOL_CONTINUATION_TTL_MS`); an
//! entry that goes away drops its turn, which interrupts it.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::chat::{ChatRequest, Message, Role};
use crate::core::TurnStream;

struct Parked {
    turn: TurnStream,
    calls: Vec<String>,
    expires: Instant,
}

/// The store. Shared by every request; the lock is never held across an await.
pub struct Continuations {
    entries: Mutex<HashMap<u64, Parked>>,
    ttl: Duration,
    max: usize,
}

/// What a request that continues a turn brings.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    pub key: u64,
    /// `(tool_call_id, output)` in the request's order.
    pub outputs: Vec<(String, String)>,
}

impl Continuations {
    pub fn new(ttl: Duration, max: usize) -> Continuations {
        Continuations {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max,
        }
    }

    /// Keeps a turn whose response showed `calls`, for the conversation `messages`.
    pub fn park(
        &self,
        model: &str,
        messages: &[Message],
        mut turn: TurnStream,
        calls: Vec<String>,
    ) {
        if self.max == 0 || calls.is_empty() {
            return;
        }
        // Waiting for a client costs the worker nothing: free the slot for others.
        turn.release_slot();
        let key = key(model, messages, &calls);
        let now = Instant::now();
        let evicted: Vec<Parked>;
        {
            let mut entries = self.entries.lock().expect("continuations poisoned");
            let mut gone: Vec<u64> = entries
                .iter()
                .filter(|(_, p)| p.expires <= now)
                .map(|(k, _)| *k)
                .collect();
            if entries.len() - gone.len() >= self.max {
                // Full: the entry closest to expiry makes room.
                if let Some((k, _)) = entries
                    .iter()
                    .filter(|(k, _)| !gone.contains(k))
                    .min_by_key(|(_, p)| p.expires)
                {
                    gone.push(*k);
                }
            }
            evicted = gone.iter().filter_map(|k| entries.remove(k)).collect();
            entries.insert(
                key,
                Parked {
                    turn,
                    calls,
                    expires: now + self.ttl,
                },
            );
        }
        drop(evicted); // outside the lock: dropping a turn spawns its interrupt
    }

    /// The parked turn these results answer, if any.
    pub fn take(&self, results: &Results) -> Option<TurnStream> {
        let parked = {
            let mut entries = self.entries.lock().expect("continuations poisoned");
            let p = entries.remove(&results.key)?;
            if p.expires <= Instant::now() {
                drop(entries);
                drop(p);
                return None;
            }
            p
        };
        let answered: Vec<&str> = results.outputs.iter().map(|(id, _)| id.as_str()).collect();
        let covers = parked.calls.iter().all(|c| answered.contains(&c.as_str()));
        covers.then_some(parked.turn)
    }

    /// Drops expired entries.
    pub fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<Parked> = {
            let mut entries = self.entries.lock().expect("continuations poisoned");
            let keys: Vec<u64> = entries
                .iter()
                .filter(|(_, p)| p.expires <= now)
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| entries.remove(k)).collect()
        };
        drop(expired);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("continuations poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The results a request brings for the calls of its last assistant message,
/// if it ends with tool messages.
pub fn results_of(req: &ChatRequest) -> Option<Results> {
    let last_assistant = req
        .messages
        .iter()
        .rposition(|m| m.role == Role::Assistant && !m.tool_calls.is_empty())?;
    let trailing = &req.messages[last_assistant + 1..];
    if trailing.is_empty() || trailing.iter().any(|m| m.role != Role::Tool) {
        return None;
    }
    let calls: Vec<String> = req.messages[last_assistant]
        .tool_calls
        .iter()
        .map(|c| c.id.clone())
        .collect();
    let outputs = trailing
        .iter()
        .map(|m| (m.tool_call_id.clone().unwrap_or_default(), m.text()))
        .collect();
    Some(Results {
        key: key(&req.model, &req.messages[..last_assistant], &calls),
        outputs,
    })
}

fn key(model: &str, messages: &[Message], calls: &[String]) -> u64 {
    let mut h = DefaultHasher::new();
    model.hash(&mut h);
    messages.hash(&mut h);
    calls.hash(&mut h);
    h.finish()
}

//! The governor state store behind each quota: one GCRA "theoretical arrival time" per key.
//!
//! governor's own keyed stores cannot be asked to drop a *particular* entry, and the
//! `RateLimiter` owning a store does not lend it out, so a hard cap on memory is not
//! possible with them. This store is shared (`Arc`) between the governor limiter and the
//! [`Limiter`](crate::Limiter) that enforces `max_keys`, and counts its entries in a
//! counter shared by all quotas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;

/// The handle governor's `RateLimiter` owns; the limiter keeps another one.
#[derive(Clone)]
pub(crate) struct Store(pub(crate) Arc<Entries>);

/// Key -> GCRA theoretical arrival time, in nanoseconds since the owning governor
/// limiter was created.
pub(crate) struct Entries {
    map: Mutex<HashMap<Arc<str>, u64>>,
    /// Entries across every store of one `Limiter`.
    live: Arc<AtomicUsize>,
    /// The threshold governor last passed to `retain_recent`: an entry at or below it is
    /// idle (its bucket is full again). Hard eviction ranks entries by how far above it
    /// they are, which is the time until they would become idle.
    drop_below: AtomicU64,
}

impl Store {
    pub(crate) fn new(live: Arc<AtomicUsize>) -> Self {
        Store(Arc::new(Entries {
            map: Mutex::new(HashMap::new()),
            live,
            drop_below: AtomicU64::new(0),
        }))
    }
}

impl Entries {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, u64>> {
        // The map is consistent after every statement that touches it: a panic elsewhere
        // while the lock was held leaves nothing half-done.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Appends, for each entry, the time until it becomes idle (as of the last
    /// `retain_recent`).
    pub(crate) fn times_to_idle(&self, out: &mut Vec<u64>) {
        let floor = self.drop_below.load(Ordering::Relaxed);
        out.extend(self.lock().values().map(|tat| tat.saturating_sub(floor)));
    }

    /// Removes the entries that become idle before `threshold`, and up to `*ties` of those
    /// that become idle exactly at `threshold`.
    pub(crate) fn evict_before(&self, threshold: u64, ties: &mut usize) {
        let floor = self.drop_below.load(Ordering::Relaxed);
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, tat| {
            let to_idle = tat.saturating_sub(floor);
            if to_idle < threshold {
                false
            } else if to_idle == threshold && *ties > 0 {
                *ties -= 1;
                false
            } else {
                true
            }
        });
        self.live.fetch_sub(before - map.len(), Ordering::Relaxed);
    }
}

impl Drop for Entries {
    // A store dropped with entries (its quota was removed while a request still held
    // it) must not leave them counted.
    fn drop(&mut self) {
        let n = self
            .map
            .get_mut()
            .map_or_else(|e| e.into_inner().len(), |m| m.len());
        self.live.fetch_sub(n, Ordering::Relaxed);
    }
}

impl StateStore for Store {
    type Key = Arc<str>;

    fn measure_and_replace<T, F, E>(&self, key: &Self::Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.0.lock();
        if let Some(tat) = map.get_mut(key) {
            let (out, next) = f(Some(Nanos::from(*tat)))?;
            *tat = next.into();
            return Ok(out);
        }
        let (out, next) = f(None)?;
        map.insert(Arc::clone(key), next.into());
        self.0.live.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }
}

impl ShrinkableKeyedStateStore<Arc<str>> for Store {
    fn retain_recent(&self, drop_below: Nanos) {
        let floor = drop_below.as_u64();
        self.0.drop_below.store(floor, Ordering::Relaxed);
        let mut map = self.0.lock();
        let before = map.len();
        map.retain(|_, tat| *tat > floor);
        self.0.live.fetch_sub(before - map.len(), Ordering::Relaxed);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
}

//! Shared, bounded rate-limit state: one governor GCRA limiter per quota, one entry per key.
//!
//! hyper clones the service stack for every connection and often every request, so
//! everything here lives behind one `Arc`: a `Limiter` clone is a handle, not a copy.
//!
//! Memory is bounded by `max_keys` entries in total. When an insert takes the count over
//! the cap, the limiter first drops every entry whose bucket is full again (governor's
//! `retain_recent`: forgetting those changes no decision), and if that is not enough it
//! drops the entries that would become full soonest. Either way it goes down to 90 % of
//! the cap, so a pass over the entries is paid for by `max_keys / 10` new keys and the
//! amortised cost per request stays constant even when an attacker rotates keys.
//! Forgetting a busy key is lenient (its next request sees a full bucket), never strict.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::RateLimiter;

use crate::store::{Entries, Store};
use crate::{Quota, RateKey, RateLimitStatus, RateLimited};

/// Default for [`Limiter::max_keys`].
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Per-`(key, quota)` GCRA state, shared by every clone.
///
/// The clock is governor's: [`MonotonicClock`] by default, or any
/// [`governor::clock::Clock`] such as `FakeRelativeClock` in tests.
pub struct Limiter<C: Clock = MonotonicClock> {
    shared: Arc<Shared<C>>,
}

struct Shared<C: Clock> {
    clock: C,
    buckets: RwLock<HashMap<Quota, Arc<Bucket<C>>>>,
    live: Arc<AtomicUsize>,
    max_keys: AtomicUsize,
    /// One eviction pass at a time; others skip rather than wait.
    evicting: Mutex<()>,
}

struct Bucket<C: Clock> {
    gcra: RateLimiter<Arc<str>, Store, C, StateInformationMiddleware>,
    entries: Arc<Entries>,
}

// === impl Limiter ===

impl Limiter {
    /// A limiter on the monotonic clock with room for [`DEFAULT_MAX_KEYS`] keys.
    pub fn new() -> Self {
        Self::with_clock(MonotonicClock)
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> Clone for Limiter<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// A limiter reading time from `clock`.
    pub fn with_clock(clock: C) -> Self {
        Self {
            shared: Arc::new(Shared {
                clock,
                buckets: RwLock::new(HashMap::new()),
                live: Arc::new(AtomicUsize::new(0)),
                max_keys: AtomicUsize::new(DEFAULT_MAX_KEYS),
                evicting: Mutex::new(()),
            }),
        }
    }

    /// Caps the number of `(key, quota)` entries kept (at least 1). Applies to every clone.
    pub fn max_keys(self, max_keys: usize) -> Self {
        self.shared
            .max_keys
            .store(max_keys.max(1), Ordering::Relaxed);
        self
    }

    /// Number of `(key, quota)` entries currently kept.
    pub fn len(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }

    /// `true` when no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one request against `key`'s bucket.
    ///
    /// `Ok` with the bucket's state if it is allowed, `Err` with the time to wait if not.
    pub fn check(&self, key: &RateKey) -> Result<RateLimitStatus, RateLimited> {
        let quota = key.quota;
        let Some(gquota) = quota.to_governor() else {
            // max == 0: nothing is ever allowed; the wait is the whole window.
            let window = quota.window;
            return Err(RateLimited {
                retry_after: window,
                status: RateLimitStatus {
                    limit: 0,
                    remaining: 0,
                    reset: window,
                },
            });
        };
        let bucket = self.bucket(quota, gquota);
        let interval = quota.replenish_interval();
        let outcome = match bucket.gcra.check_key(&key.key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(RateLimitStatus {
                    limit: quota.max,
                    remaining,
                    reset: interval * quota.max.saturating_sub(remaining),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(bucket.gcra.clock().now());
                Err(RateLimited {
                    retry_after: wait,
                    status: RateLimitStatus {
                        limit: quota.max,
                        remaining: 0,
                        // The bucket is full `burst - 1` intervals after the next cell.
                        reset: wait + interval * (quota.max - 1),
                    },
                })
            }
        };
        drop(bucket);
        if self.len() > self.shared.max_keys.load(Ordering::Relaxed) {
            self.evict();
        }
        outcome
    }

    /// Number of quotas with state (one governor limiter each).
    #[cfg(test)]
    pub(crate) fn quotas(&self) -> usize {
        self.shared
            .buckets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn bucket(&self, quota: Quota, gquota: governor::Quota) -> Arc<Bucket<C>> {
        let shared = &*self.shared;
        if let Some(b) = shared
            .buckets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&quota)
        {
            return Arc::clone(b);
        }
        let mut buckets = shared
            .buckets
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(quota).or_insert_with(|| {
            let store = Store::new(Arc::clone(&shared.live));
            let entries = Arc::clone(&store.0);
            Arc::new(Bucket {
                gcra: RateLimiter::new(gquota, store, shared.clock.clone()),
                entries,
            })
        });
        Arc::clone(bucket)
    }

    /// Brings the entry count down to 90 % of `max_keys`: idle entries first, then
    /// those closest to idle.
    fn evict(&self) {
        let shared = &*self.shared;
        let Ok(_pass) = shared.evicting.try_lock() else {
            return; // another request is already evicting
        };
        let max = shared.max_keys.load(Ordering::Relaxed);
        if self.len() <= max {
            return;
        }
        let low_water = max - max / 10;
        let buckets: Vec<_> = shared
            .buckets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();

        for b in &buckets {
            b.gcra.retain_recent();
        }

        if self.len() > low_water {
            let mut to_idle = Vec::with_capacity(self.len());
            for b in &buckets {
                b.entries.times_to_idle(&mut to_idle);
            }
            let excess = to_idle.len().saturating_sub(low_water);
            if excess > 0 {
                let (_, &mut threshold, _) = to_idle.select_nth_unstable(excess - 1);
                let sooner = to_idle.iter().filter(|&&t| t < threshold).count();
                let mut ties = excess - sooner;
                for b in &buckets {
                    b.entries.evict_before(threshold, &mut ties);
                }
            }
        }

        // Quotas nobody uses any more (a key's quota was changed) go too.
        drop(buckets);
        shared
            .buckets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, b| b.entries.len() > 0);
    }
}

impl<C: Clock> fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("len", &self.shared.live.load(Ordering::Relaxed))
            .field("max_keys", &self.shared.max_keys.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

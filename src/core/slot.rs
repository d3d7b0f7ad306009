//! [`TurnSlots`]: the worker's turn concurrency limit and its bounded queue.
//!
//! A slot is held while a turn may make the worker call the model: from
//! before `thread/start` until codex says the turn ended (or the turn parks
//! on client tool calls, which costs the worker no model time). Waiting for
//! a slot is bounded in both the number of waiters and the time they wait,
//! so an overloaded gateway answers 429 instead of queueing without end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::failure::{Failure, FailureKind};
use crate::worker::Lease;

/// The limit, shared by every request (clones share one semaphore).
#[derive(Clone)]
pub(crate) struct TurnSlots {
    inner: Arc<Inner>,
}

struct Inner {
    semaphore: Arc<Semaphore>,
    max: usize,
    waiting: AtomicUsize,
    queue_max: usize,
    queue_timeout: Duration,
    /// Turns holding a slot, for the metrics endpoint.
    in_flight: Option<Gauge>,
}

/// One of the slots; given back when dropped.
pub(crate) struct TurnSlot {
    _permit: OwnedSemaphorePermit,
    in_flight: Option<Gauge>,
    /// The turn counted on its worker (pool placement and draining).
    lease: Option<Lease>,
}

impl TurnSlot {
    /// Counts the turn on its worker for as long as the slot is held.
    pub(super) fn with_lease(mut self, lease: Option<Lease>) -> TurnSlot {
        self.lease = lease;
        self
    }

    /// The worker this turn runs on, if counted on one.
    pub(super) fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }
}

impl Drop for TurnSlot {
    fn drop(&mut self) {
        if let Some(g) = &self.in_flight {
            g.dec();
        }
    }
}

impl TurnSlots {
    pub(crate) fn new(
        max: usize,
        queue_max: usize,
        queue_timeout: Duration,
        in_flight: Option<Gauge>,
    ) -> TurnSlots {
        TurnSlots {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(max)),
                max,
                waiting: AtomicUsize::new(0),
                queue_max,
                queue_timeout,
                in_flight,
            }),
        }
    }

    /// A slot now, or after a short bounded wait; else `Overloaded`.
    pub(crate) async fn acquire(&self) -> Result<TurnSlot, Failure> {
        let inner = &self.inner;
        let overloaded = || {
            Failure::new(
                FailureKind::Overloaded,
                format!(
                    "The gateway is at its limit of {} concurrent turns; retry shortly.",
                    inner.max
                ),
            )
            .with_retry_after(Duration::from_secs(1))
        };
        let permit = match inner.semaphore.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Join the queue only while it has room; never wait unboundedly.
                let queued = inner.waiting.fetch_add(1, Ordering::AcqRel);
                let _leave = LeaveQueue(&inner.waiting);
                if queued >= inner.queue_max {
                    return Err(overloaded());
                }
                match tokio::time::timeout(
                    inner.queue_timeout,
                    inner.semaphore.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    _ => return Err(overloaded()),
                }
            }
        };
        if let Some(g) = &inner.in_flight {
            g.inc();
        }
        Ok(TurnSlot {
            _permit: permit,
            in_flight: inner.in_flight.clone(),
            lease: None,
        })
    }

    /// Slots free now.
    #[cfg(test)]
    pub(super) fn available(&self) -> usize {
        self.inner.semaphore.available_permits()
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.inner.max
    }

    /// Slots held now (by either backend's turns).
    pub(crate) fn in_use(&self) -> usize {
        self.inner
            .max
            .saturating_sub(self.inner.semaphore.available_permits())
    }
}

/// Leaves the wait queue however the wait ends.
struct LeaveQueue<'a>(&'a AtomicUsize);

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_limit_queues_boundedly_then_refuses() {
        let slots = TurnSlots::new(1, 1, Duration::from_secs(2), None);
        let held = slots.acquire().await.unwrap();
        // One waiter fits in the queue and gets the slot when it frees.
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        // A second waiter finds the queue full: refused at once.
        let e = slots.acquire().await.err().expect("queue full");
        assert_eq!(e.kind, FailureKind::Overloaded);
        assert!(e.retry_after.is_some());
        drop(held);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_the_queue_timeout() {
        let slots = TurnSlots::new(1, 4, Duration::from_secs(2), None);
        let _held = slots.acquire().await.unwrap();
        let started = tokio::time::Instant::now();
        let e = slots.acquire().await.err().expect("timed out");
        assert_eq!(e.kind, FailureKind::Overloaded);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(slots.available(), 0);
    }
}

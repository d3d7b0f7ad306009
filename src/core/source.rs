//! [`TurnSource`]: what the API's run reads a turn through.
//!
//! [`TurnStream`](super::TurnStream) is the real one; tests script events
//! through their own, so the shaping policy is tested without a worker.

use std::collections::VecDeque;
use std::future::Future;
use std::task::{Context, Poll};

use super::turn::TurnEvent;

/// A turn's decoded events not yet delivered, with the rule every backend's
/// reader keeps: the turn's end (`Finished` or `Failed`) is its last event;
/// whatever was queued behind it is dropped, and every read after it finds
/// [`EventQueue::delivered_end`] true.
#[derive(Debug, Default)]
pub struct EventQueue {
    events: VecDeque<TurnEvent>,
    delivered_end: bool,
}

impl EventQueue {
    pub fn push(&mut self, event: TurnEvent) {
        self.events.push_back(event);
    }

    pub fn extend(&mut self, events: impl IntoIterator<Item = TurnEvent>) {
        self.events.extend(events);
    }

    /// The next queued event, if any; the end marks the turn delivered.
    pub fn pop(&mut self) -> Option<TurnEvent> {
        let event = self.events.pop_front()?;
        if matches!(event, TurnEvent::Finished | TurnEvent::Failed(_)) {
            self.events.clear();
            self.delivered_end = true;
        }
        Some(event)
    }

    /// The next event is the turn's end (`Finished` or `Failed`).
    pub fn ends_next(&self) -> bool {
        matches!(
            self.events.front(),
            Some(TurnEvent::Finished | TurnEvent::Failed(_))
        )
    }

    /// The reader got the turn's last event.
    pub fn delivered_end(&self) -> bool {
        self.delivered_end
    }
}

/// A turn's events, in order.
///
/// A poll, not an `async fn`: the run polls each of its turns in place.
/// With a future per read, every open stream kept one boxed (as large as
/// the largest backend's read, 248 bytes) and its turn behind an
/// `Arc<Mutex<_>>` (512) so a choice could still park the turn while a
/// read waited, and every event cost a box and a lock.
pub trait TurnSource: Send + 'static {
    /// The next event; `Ready(None)` after the last one. `Pending` leaves
    /// the turn as it was (no event is taken by a poll that does not
    /// return it), and the waker of the latest poll is the one woken.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>>;

    /// The next event, as a future (for code that reads one turn alone).
    fn next(&mut self) -> impl Future<Output = Option<TurnEvent>> + Send
    where
        Self: Sized,
    {
        std::future::poll_fn(move |cx| self.poll_next(cx))
    }

    /// The client went away and the operator lets turns finish
    /// (`PROXY_KILL_ON_DISCONNECT=false`): keep the turn going unobserved.
    /// By default it is dropped, which for a real turn interrupts it.
    fn detach(self)
    where
        Self: Sized,
    {
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_is_the_last_event_delivered() {
        let mut q = EventQueue::default();
        q.extend([
            TurnEvent::TextDelta("a".into()),
            TurnEvent::Finished,
            TurnEvent::TextDelta("late".into()),
        ]);
        assert!(!q.ends_next());
        assert_eq!(q.pop(), Some(TurnEvent::TextDelta("a".into())));
        assert!(!q.delivered_end());
        assert!(q.ends_next());
        assert_eq!(q.pop(), Some(TurnEvent::Finished));
        assert!(q.delivered_end());
        assert_eq!(q.pop(), None, "what came after the end is dropped");
    }
}

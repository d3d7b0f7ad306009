//! One thread's events on their way from the reader to the thread's
//! subscriber: a bounded queue that costs what it holds.
//!
//! Why not `tokio::sync::mpsc`: every subscription lives as long as its
//! turn, which for a held stream is as long as the client keeps reading,
//! and tokio's channel allocates its slots 32 at a time (32 × 40 bytes)
//! plus about 800 bytes of shared state: 2,142 bytes per open stream
//! (heaptrack, `docs/benchmarks.md`, issue #14's ninth pass), a tenth of
//! what an open stream costs. This queue is a `VecDeque` under a mutex:
//! about 140 bytes, plus room for the events it has held at once.
//!
//! The reader is the only producer (a sender is cloned only for a wait
//! for room, on the reader's own task) and the subscriber the only
//! consumer, so the lock is taken for one push or one pop and is never
//! contended for long; it is never held across an `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;

use super::message::ThreadEvent;

/// A queue of at most `cap` events.
pub(super) fn thread_queue(cap: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            events: VecDeque::new(),
            receiver: None,
            senders: 1,
            closed: false,
            cap,
        }),
        room: Notify::new(),
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        QueueReceiver { shared },
    )
}

struct Shared {
    state: Mutex<State>,
    /// Wakes a sender waiting for room (the receiver took an event out of
    /// a full queue, or closed it).
    room: Notify,
}

struct State {
    events: VecDeque<ThreadEvent>,
    /// The receiver's waker while it waits on an empty queue.
    receiver: Option<Waker>,
    /// Live senders; none left and nothing queued ends the receiver.
    senders: usize,
    /// The receiver closed or went away: nothing more is taken.
    closed: bool,
    cap: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent
        // (each step is one push or one pop), so a poisoned lock is used.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why [`QueueSender::try_send`] did not queue the event (given back).
#[derive(Debug)]
pub(super) enum TrySendError {
    Full(ThreadEvent),
    Closed(ThreadEvent),
}

/// Why [`QueueSender::send_timeout`] did not queue the event (given back).
#[derive(Debug)]
pub(super) enum SendTimeoutError {
    Timeout(ThreadEvent),
    Closed(ThreadEvent),
}

/// The reader's end.
pub(super) struct QueueSender {
    shared: Arc<Shared>,
}

impl QueueSender {
    /// Queues `event` if there is room; never waits.
    pub(super) fn try_send(&self, event: ThreadEvent) -> Result<(), TrySendError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(TrySendError::Closed(event));
        }
        if state.events.len() >= state.cap {
            return Err(TrySendError::Full(event));
        }
        state.events.push_back(event);
        let receiver = state.receiver.take();
        drop(state);
        if let Some(waker) = receiver {
            waker.wake();
        }
        Ok(())
    }

    /// Queues `event`, waiting at most `timeout` for room.
    pub(super) async fn send_timeout(
        &self,
        mut event: ThreadEvent,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            // Registered before the attempt, so room made between the
            // attempt and the wait is not missed.
            room.as_mut().enable();
            match self.try_send(event) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(e)) => return Err(SendTimeoutError::Closed(e)),
                Err(TrySendError::Full(e)) => event = e,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(SendTimeoutError::Timeout(event));
            }
        }
    }
}

impl Clone for QueueSender {
    fn clone(&self) -> QueueSender {
        self.shared.lock().senders += 1;
        QueueSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        let receiver = (state.senders == 0)
            .then(|| state.receiver.take())
            .flatten();
        drop(state);
        if let Some(waker) = receiver {
            waker.wake();
        }
    }
}

/// The subscriber's end. Dropping it closes the queue.
pub(super) struct QueueReceiver {
    shared: Arc<Shared>,
}

impl QueueReceiver {
    /// The next event; `None` once every sender is gone and the queue is
    /// empty, or once it was closed and emptied. Cancel-safe: an event is
    /// taken only by the poll that returns it.
    #[cfg(test)]
    pub(super) async fn recv(&mut self) -> Option<ThreadEvent> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub(super) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ThreadEvent>> {
        let mut state = self.shared.lock();
        if let Some(event) = state.events.pop_front() {
            let was_full = state.events.len() + 1 >= state.cap;
            drop(state);
            if was_full {
                self.shared.room.notify_one();
            }
            return Poll::Ready(Some(event));
        }
        if state.senders == 0 || state.closed {
            return Poll::Ready(None);
        }
        match &mut state.receiver {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// An event already queued, without waiting.
    pub(super) fn try_recv(&mut self) -> Option<ThreadEvent> {
        self.shared.lock().events.pop_front()
    }

    /// Takes nothing more: senders get `Closed` from now on (one waiting
    /// for room is woken to learn it). What is queued can still be taken.
    pub(super) fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.room.notify_waiters();
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for QueueReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("QueueReceiver")
            .field("queued", &state.events.len())
            .field("senders", &state.senders)
            .field("closed", &state.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::message::Notification;

    fn event(n: u32) -> ThreadEvent {
        let params = serde_json::value::RawValue::from_string("{}".into()).unwrap();
        ThreadEvent::Notification(Notification::new(&format!("m{n}"), &params))
    }

    fn method(e: Option<ThreadEvent>) -> String {
        match e {
            Some(ThreadEvent::Notification(n)) => n.method().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn events_come_out_in_order_and_the_end_after_the_last() {
        let (tx, mut rx) = thread_queue(8);
        for n in 0..3 {
            tx.try_send(event(n)).unwrap();
        }
        drop(tx);
        for n in 0..3 {
            assert_eq!(method(rx.recv().await), format!("m{n}"));
        }
        assert!(rx.recv().await.is_none(), "no senders, nothing queued");
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_an_event_and_by_the_last_sender_going() {
        let (tx, mut rx) = thread_queue(8);
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first.is_some(), second.is_none())
        });
        tokio::task::yield_now().await;
        tx.try_send(event(0)).unwrap();
        tokio::task::yield_now().await;
        let clone = tx.clone();
        drop(tx);
        drop(clone);
        assert_eq!(waiting.await.unwrap(), (true, true));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_then_takes_once_the_receiver_makes_room() {
        let (tx, mut rx) = thread_queue(2);
        tx.try_send(event(0)).unwrap();
        tx.try_send(event(1)).unwrap();
        assert!(matches!(tx.try_send(event(2)), Err(TrySendError::Full(_))));
        let sending = tokio::spawn(async move {
            tx.send_timeout(event(2), Duration::from_secs(5))
                .await
                .is_ok()
        });
        tokio::task::yield_now().await;
        assert_eq!(method(rx.recv().await), "m0");
        assert!(sending.await.unwrap(), "room was made within the timeout");
        assert_eq!(method(rx.recv().await), "m1");
        assert_eq!(method(rx.recv().await), "m2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_waits_no_longer_than_its_timeout_and_gets_the_event_back() {
        let (tx, _rx) = thread_queue(1);
        tx.try_send(event(0)).unwrap();
        match tx.send_timeout(event(1), Duration::from_millis(250)).await {
            Err(SendTimeoutError::Timeout(e)) => assert_eq!(method(Some(e)), "m1"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_closed_or_dropped_receiver_refuses_events_and_wakes_a_waiting_sender() {
        let (tx, mut rx) = thread_queue(1);
        tx.try_send(event(0)).unwrap();
        let sending =
            tokio::spawn(async move { tx.send_timeout(event(1), Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        rx.close();
        assert!(matches!(
            sending.await.unwrap(),
            Err(SendTimeoutError::Closed(_))
        ));
        assert_eq!(
            method(rx.try_recv()),
            "m0",
            "what was queued stays takeable"
        );
        assert!(rx.try_recv().is_none());

        let (tx, rx) = thread_queue(4);
        drop(rx);
        assert!(matches!(
            tx.try_send(event(0)),
            Err(TrySendError::Closed(_))
        ));
    }
}

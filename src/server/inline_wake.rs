//! A connection task that wakes itself while it runs is polled again at
//! once, instead of being handed back to the scheduler.
//!
//! Why: tokio treats a task woken during its own poll as a *yield*: it goes
//! to the back of the run queue and, when another runtime thread is parked,
//! that thread is woken to steal it (a futex wake, a context switch, and the
//! connection moving to the other thread's caches). Every request with a
//! body does exactly that over HTTP/1: the handler reads the body from
//! hyper's body channel, whose sender is the connection's own dispatcher,
//! and taking data out wakes the sender ("send more"), that is, the task
//! being polled. Measured with `strace` at one stream: two futex calls per
//! request, the two runtime threads handing every request to each other;
//! with this wrapper, 0.2 per request.
//!
//! Polling again in place is what the wake asked for, minus the trip
//! through the scheduler. It is bounded ([`INLINE_POLLS`]): a future that
//! keeps waking itself on purpose, to let others run (hyper yields after 16
//! pipelined requests), gets a real wake-up after that, so fairness between
//! connections is kept.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// How many times in a row a poll that woke itself is repeated in place.
const INLINE_POLLS: usize = 4;

pin_project_lite::pin_project! {
    /// See the module docs.
    pub(crate) struct InlineWake<F> {
        #[pin]
        inner: F,
        flag: Arc<Flag>,
        waker: Waker,
    }
}

#[derive(Default)]
struct Flag {
    /// A wake-up arrived and the inner future has not been polled since.
    woken: AtomicBool,
    /// The inner future is being polled: a wake-up now is noted, not sent.
    polling: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst on both flags, on both sides: either this load sees
        // `polling` cleared and wakes the task, or the poll's swap below
        // sees `woken` set and polls again. A wake-up is never lost.
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

impl<F> InlineWake<F> {
    pub(crate) fn new(inner: F) -> InlineWake<F> {
        let flag = Arc::new(Flag::default());
        InlineWake {
            inner,
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future> Future for InlineWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        this.flag.task.register(cx.waker());
        this.flag.woken.store(false, Ordering::SeqCst);
        for _ in 0..INLINE_POLLS {
            this.flag.polling.store(true, Ordering::SeqCst);
            let polled = this
                .inner
                .as_mut()
                .poll(&mut Context::from_waker(this.waker));
            this.flag.polling.store(false, Ordering::SeqCst);
            if polled.is_ready() {
                return polled;
            }
            if !this.flag.woken.swap(false, Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        // Still waking itself: a real yield, through the scheduler.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the wake-ups the task gets.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Pending until polled `ready_at` times; wakes itself on each of the
    /// first `self_wakes` polls, like a channel send the same task reads.
    struct Steps {
        polls: usize,
        ready_at: usize,
        self_wakes: usize,
    }

    impl Future for Steps {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls >= self.ready_at {
                return Poll::Ready(self.polls);
            }
            if self.polls <= self.self_wakes {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    fn poll_once<F: Future>(f: Pin<&mut F>, task: &Arc<Task>) -> Poll<F::Output> {
        let waker = Waker::from(task.clone());
        f.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_future_that_wakes_itself_is_polled_again_in_place() {
        let task = Arc::new(Task::default());
        let mut f = std::pin::pin!(InlineWake::new(Steps {
            polls: 0,
            ready_at: 3,
            self_wakes: 2,
        }));
        // One poll of the task: three of the future, no trip through the scheduler.
        assert_eq!(poll_once(f.as_mut(), &task), Poll::Ready(3));
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_for_real() {
        let task = Arc::new(Task::default());
        let mut f = std::pin::pin!(InlineWake::new(Steps {
            polls: 0,
            ready_at: usize::MAX,
            self_wakes: usize::MAX,
        }));
        assert_eq!(poll_once(f.as_mut(), &task), Poll::Pending);
        // Bounded: the task is woken so others get their turn first.
        assert_eq!(f.inner.polls, INLINE_POLLS);
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wake_up_from_outside_reaches_the_task() {
        let task = Arc::new(Task::default());
        let mut f = std::pin::pin!(InlineWake::new(Steps {
            polls: 0,
            ready_at: 2,
            self_wakes: 0,
        }));
        assert_eq!(poll_once(f.as_mut(), &task), Poll::Pending);
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
        // What the future registered (here, the waker it was polled with) is
        // woken by someone else after the poll: the task hears of it.
        f.waker.wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(f.as_mut(), &task), Poll::Ready(2));
    }
}

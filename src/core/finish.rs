//! A turn start awaited in the caller's own task, finished in a task of its
//! own only if the caller goes away first.
//!
//! Why not a task per start: the start's answer from codex then wakes the
//! start's task, which wakes the caller. Two tasks woken back to back is
//! when tokio moves the first out of its LIFO slot and wakes the other
//! runtime thread to steal it: a futex call, a context switch and a
//! migration, per request, on a gateway that is idle between requests
//! (measured with `perf stat`, `docs/benchmarks.md`, issue #14's ninth and
//! tenth passes). Polled in place, codex's answer wakes the one task that
//! waits for it.
//!
//! Why a task when the caller goes: a client that disconnects while
//! `turn/start` is in flight drops the request's future. Dropped there, the
//! start would stop between codex starting the turn and the gateway
//! holding its stream, and nobody would interrupt the turn or release the
//! thread. So the rest of the start is handed to a task, whose result (a
//! stream nobody takes) is dropped, and that drop interrupts the turn and
//! releases the thread.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{Failure, FailureKind};

type Start<T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send>>;

/// A turn's start (`T`: its stream); see the module docs.
pub(super) struct FinishOnDrop<T: Send + 'static> {
    /// `None` once it has finished (or panicked).
    start: Option<Start<T>>,
}

impl<T: Send + 'static> FinishOnDrop<T> {
    /// Boxed: the caller's future stays small, and the start can be moved
    /// into a task when the caller goes.
    pub(super) fn new(start: impl Future<Output = Result<T, Failure>> + Send + 'static) -> Self {
        FinishOnDrop {
            start: Some(Box::pin(start)),
        }
    }
}

impl<T: Send + 'static> Future for FinishOnDrop<T> {
    type Output = Result<T, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(start) = self.start.as_mut() else {
            panic!("FinishOnDrop polled after it finished");
        };
        // A panic in the start fails this request, as it failed the start's
        // task before: the caller answers with an error instead of its
        // connection going down with the panic.
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| start.as_mut().poll(cx)));
        let result = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => result,
            Err(_) => {
                tracing::error!("a turn start panicked");
                Err(Failure::new(
                    FailureKind::Upstream,
                    "The turn could not be started.",
                ))
            }
        };
        self.start = None;
        Poll::Ready(result)
    }
}

impl<T: Send + 'static> Drop for FinishOnDrop<T> {
    fn drop(&mut self) {
        let Some(start) = self.start.take() else {
            return;
        };
        // Outside a runtime (a runtime shutting down drops its tasks) there
        // is nothing left to finish on; the worker's channel goes with it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // `carry`: the rest of the start's JSON-RPC lines still belong
            // to this request's trace (the scope is current here: a request
            // future is dropped inside it).
            runtime.spawn(crate::trace_buffer::carry(async move {
                let _ = start.await;
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tokio::sync::oneshot;

    use super::*;

    /// Set when dropped: stands in for a turn stream, whose drop releases the turn.
    #[derive(Debug)]
    struct Released(Arc<AtomicBool>);

    impl Drop for Released {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_start_awaited_to_the_end_gives_its_result_to_the_caller() {
        let released = Arc::new(AtomicBool::new(false));
        let start = FinishOnDrop::new({
            let released = released.clone();
            async move { Ok(Released(released)) }
        });
        let stream = start.await.expect("the start succeeds");
        assert!(!released.load(Ordering::SeqCst), "the caller holds it");
        drop(stream);
        assert!(released.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_start_whose_caller_goes_away_finishes_in_a_task_and_is_released() {
        let released = Arc::new(AtomicBool::new(false));
        let (answer, answered) = oneshot::channel::<()>();
        let start = FinishOnDrop::new({
            let released = released.clone();
            async move {
                // codex's answer to `turn/start`, still in flight
                let _ = answered.await;
                Ok(Released(released))
            }
        });
        let caller = tokio::spawn(start);
        tokio::task::yield_now().await;
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        assert!(
            !released.load(Ordering::SeqCst),
            "the start has not ended yet"
        );
        answer.send(()).unwrap();
        for _ in 0..100 {
            if released.load(Ordering::SeqCst) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the start was not finished after its caller went away");
    }

    #[tokio::test]
    async fn a_start_that_panics_fails_the_request_instead_of_its_task() {
        let start = FinishOnDrop::<()>::new(async { panic!("a bug in the start") });
        match start.await {
            Err(failure) => assert_eq!(failure.kind, FailureKind::Upstream),
            Ok(()) => panic!("a panicked start cannot succeed"),
        }
    }
}

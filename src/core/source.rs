//! [`TurnSource`]: what the API's run reads a turn through.
//!
//! [`TurnStream`](super::TurnStream) is the real one; tests script events
//! through their own, so the shaping policy is tested without a worker.

use std::future::Future;

use super::turn::TurnEvent;

/// A turn's events, in order.
pub trait TurnSource: Send + 'static {
    /// The next event; `None` after the last one. Must be cancel-safe:
    /// a read dropped before it completes loses no event (the run cancels
    /// reads when a choice ends while one waits).
    fn next(&mut self) -> impl Future<Output = Option<TurnEvent>> + Send;

    /// The client went away and the operator lets turns finish
    /// (`PROXY_KILL_ON_DISCONNECT=false`): keep the turn going unobserved.
    /// By default it is dropped, which for a real turn interrupts it.
    fn detach(self)
    where
        Self: Sized,
    {
    }
}

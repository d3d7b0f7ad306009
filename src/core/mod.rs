//! The core: runs one API request as threads and turns on the worker.
//!
//! It takes a typed [`TurnRequest`] (no HTTP, no OpenAI JSON) and yields a
//! [`TurnStream`] of typed [`TurnEvent`]s. It owns the mapping onto codex's
//! thread/turn model, the turn concurrency limit, and the lifecycle of a
//! turn: running, parked on client tool calls ([`TurnStream::park`] →
//! [`ParkedTurn`] → [`CodexCore::resume`]), or released. A stream dropped
//! before its turn ends interrupts the turn, and every thread is released
//! when its stream goes.
//!
//! Files: `service.rs` starts and resumes turns; `stream.rs` maps a thread's
//! notifications to events and owns the turn's state; `slot.rs` is the
//! concurrency limit; `parked.rs` is the store of paused turns; `threads.rs` keeps idle
//! threads loaded between a conversation's requests; `source.rs` is the
//! trait the API's run reads turns through; `turn.rs` the typed request and
//! events; `failure.rs` classifies what went wrong; `finish.rs` finishes a
//! turn start whose caller went away; `host_items.rs` says
//! which of codex's items act on the host (refused unless host tools are on).

mod failure;
mod finish;
mod host_items;
mod parked;
mod service;
mod slot;
mod source;
mod stream;
mod threads;
mod turn;
mod warm;

pub use failure::{Failure, FailureKind};
pub use parked::ParkedTurns;
pub use service::{CodexCore, CoreConfig};
pub(crate) use slot::{TurnSlot, TurnSlots};
pub use source::{EventQueue, TurnSource};
pub use stream::{ParkedTurn, TurnStream};
pub use threads::{
    Continuation, ContinuationLabels, Eviction, EvictionLabels, IdleThread, LiveThreads, Taken,
    ThreadMetrics,
};
pub use turn::{ToolCall, TurnEvent, TurnRequest, Usage};

#[cfg(test)]
mod tests;

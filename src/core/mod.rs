//! The core: runs one API request as threads and turns on the worker.
//!
//! It takes a typed [`TurnRequest`] (no HTTP, no OpenAI JSON) and yields a
//! [`TurnStream`] of typed [`TurnEvent`]s. It owns the mapping onto codex's
//! thread/turn model and the cleanup: a stream dropped before its turn ends
//! interrupts the turn, and every thread is released when its stream goes.

mod failure;
mod service;
mod stream;
mod turn;

pub use failure::{Failure, FailureKind};
pub use service::{CodexCore, CoreConfig};
pub use stream::TurnStream;
pub use turn::{ToolCall, TurnEvent, TurnRequest, Usage};

//! The JSON-RPC 2.0 channel to one `codex app-server` process.
//!
//! Senders write the worker's stdin themselves (a flusher task finishes
//! what a full pipe did not take) and one reader task owns its stdout;
//! everything else talks to them through [`RpcClient`]. The channel knows
//! framing (one JSON object per line), correlation of our request ids with
//! their responses, per-request timeouts, routing of notifications and
//! server→client requests to the subscriber of their thread, and answering
//! every server→client request nobody else will. It does not know what a chat
//! completion is.

mod client;
mod error;
mod message;
mod scan;
mod server_requests;
mod thread_queue;
mod writer;

pub use client::{
    CallObserver, Direction, LineTap, NotificationHook, RpcClient, RpcClientConfig,
    SubscriptionEnd, ThreadSubscription,
};
pub use error::RpcError;
pub use message::{Incoming, Notification, RequestId, ServerRequest, ThreadEvent};
pub use server_requests::{ServerRequestPolicy, DYNAMIC_TOOL_CALL};

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

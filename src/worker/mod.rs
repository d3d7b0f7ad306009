//! The supervised `codex app-server` process.
//!
//! [`Supervisor`] owns the child process and its lifecycle: spawn, handshake,
//! restart (how soon, and when to give up: [`RestartPolicy`]), shutdown.
//! Everyone else watches its [`WorkerStatus`] through a [`WorkerHandle`] and
//! borrows the current [`RpcClient`] from it while the worker is ready.
//!
//! [`RpcClient`]: crate::rpc::RpcClient

mod account;
mod backoff;
mod command;
mod config;
mod handshake;
mod host_tools;
mod pool;
mod restart;
mod state;
mod stderr;
mod supervisor;

pub use account::{Login, Quota, QUOTA_HOLD};
pub use backoff::Backoff;
pub use command::{safety_args, worker_command, HOST_TOOL_FEATURES};
pub use config::{PoolConfig, SandboxMode, WorkerConfig};
pub use handshake::handshake;
pub use host_tools::run_codex;
pub use pool::{rss_kb, Lease, MemberView, Picked, RecycleReason, RunningPool, WorkerPool};
pub use restart::{Decision, RestartPolicy};
pub use state::{NotReady, WorkerHandle, WorkerPhase, WorkerStatus};
pub use supervisor::Supervisor;

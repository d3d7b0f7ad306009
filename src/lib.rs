//! An OpenAI-compatible HTTP gateway in front of `codex app-server`.
//!
//! Read `docs/architecture.md` first: it draws a request's path from the
//! hyper server through the layer stack to the worker's JSON-RPC channel.

#![forbid(unsafe_code)]

pub mod access;
pub mod access_log;
pub mod api;
pub mod app;
pub mod backend;
pub mod calendar;
pub mod caller;
pub mod config;
pub mod core;
pub mod cors;
pub mod exec;
pub mod fleet;
pub mod log_format;
pub mod log_writer;
pub mod protocol;
pub mod reasoning_format;
pub mod route;
pub mod rpc;
pub mod server;
pub mod stack;
pub mod store;
pub mod telemetry;
pub mod trace_buffer;
pub mod usage;
pub mod worker;

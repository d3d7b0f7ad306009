//! [`CodexCore`]: starts threads and turns on the ready worker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use serde_json::{json, Map, Value};

use super::failure::{Failure, FailureKind};
use super::stream::{TurnCleanup, TurnStream};
use super::turn::TurnRequest;
use crate::protocol::{
    Model, ThreadInjectItems, ThreadInjectItemsParams, ThreadStart, ThreadStartParams, TurnStart,
    TurnStartParams,
};
use crate::worker::SandboxMode;
use crate::worker::{WorkerHandle, HOST_TOOL_FEATURES};

/// How the core sets up threads.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The thread's working directory.
    pub cwd: String,
    pub sandbox: SandboxMode,
    /// Let the model use codex's own host tools (off by default).
    pub enable_codex_tools: bool,
    pub model_provider: Option<String>,
    /// Longest silence from the worker before a turn fails (`None`: no limit).
    pub idle_timeout: Option<Duration>,
    /// Turns running at once (`WORKER_MAX_CONCURRENCY`).
    pub max_concurrency: usize,
    /// Requests that may wait for a slot (`WORKER_QUEUE_MAX`), and for how long.
    pub queue_max: usize,
    pub queue_timeout: Duration,
    /// Turns in flight, for the metrics endpoint.
    pub in_flight: Option<prometheus_client::metrics::gauge::Gauge>,
}

/// Runs API requests on the worker. Cheap to clone.
#[derive(Clone)]
pub struct CodexCore {
    inner: Arc<Inner>,
}

struct Inner {
    worker: WorkerHandle,
    config: CoreConfig,
    /// Per-thread overrides, built once.
    thread_config: Map<String, Value>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// One of `WORKER_MAX_CONCURRENCY` turn slots; released when the turn's stream goes.
pub(super) struct TurnSlot {
    _permit: OwnedSemaphorePermit,
    in_flight: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl Drop for TurnSlot {
    fn drop(&mut self) {
        if let Some(g) = &self.in_flight {
            g.dec();
        }
    }
}

impl CodexCore {
    pub fn new(worker: WorkerHandle, config: CoreConfig) -> CodexCore {
        let thread_config = thread_config(config.enable_codex_tools);
        CodexCore {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(config.max_concurrency)),
                waiting: AtomicUsize::new(0),
                worker,
                config,
                thread_config,
            }),
        }
    }

    pub fn worker(&self) -> &WorkerHandle {
        &self.inner.worker
    }

    /// The models the worker listed at its handshake.
    pub fn models(&self) -> Result<Arc<Vec<Model>>, Failure> {
        self.inner
            .worker
            .ready()
            .map(|(_, models)| models)
            .map_err(not_ready)
    }

    /// Starts one turn on a fresh ephemeral thread. Dropping the returned
    /// stream (or this future) before the turn ends interrupts it, and the
    /// thread is released either way.
    pub async fn start_turn(&self, req: TurnRequest) -> Result<TurnStream, Failure> {
        let (client, _) = self.inner.worker.ready().map_err(not_ready)?;
        let slot = self.acquire_slot().await?;
        let config = &self.inner.config;
        let params = ThreadStartParams {
            model: Some(req.model.clone()),
            model_provider: config.model_provider.clone(),
            cwd: Some(config.cwd.clone()),
            approval_policy: Some("never".into()),
            sandbox: Some(config.sandbox.as_str().into()),
            developer_instructions: req.instructions.clone(),
            ephemeral: Some(true),
            config: Some(self.inner.thread_config.clone()),
            dynamic_tools: (!req.tools.is_empty()).then(|| req.tools.clone()),
        };
        let thread = client
            .call::<ThreadStart>(&params)
            .await
            .map_err(|e| Failure::from_rpc(&e))?;
        let thread_id = thread.thread.id;
        // From here on the guard releases the thread however this function ends.
        let mut cleanup = TurnCleanup::new(client.clone(), thread_id.clone());
        let subscription = client.subscribe(&thread_id);

        if !req.history.is_empty() {
            let params = ThreadInjectItemsParams {
                thread_id: thread_id.clone(),
                items: req.history,
            };
            client
                .call::<ThreadInjectItems>(&params)
                .await
                .map_err(|e| Failure::from_rpc(&e))?;
        }
        let params = TurnStartParams {
            thread_id: thread_id.clone(),
            input: req.input,
            effort: req.effort,
            output_schema: req.output_schema,
        };
        let turn = client
            .call::<TurnStart>(&params)
            .await
            .map_err(|e| Failure::from_rpc(&e))?;
        cleanup.set_turn(turn.turn.id);
        Ok(TurnStream::new(
            subscription,
            cleanup,
            config.idle_timeout,
            slot,
        ))
    }

    /// Takes a turn slot again for a parked turn the client continues.
    pub async fn resume(&self, turn: &mut TurnStream) -> Result<(), Failure> {
        let slot = self.acquire_slot().await?;
        turn.set_slot(slot);
        Ok(())
    }

    /// A turn slot now, or after a short bounded wait; else `Overloaded`.
    async fn acquire_slot(&self) -> Result<TurnSlot, Failure> {
        let inner = &self.inner;
        let overloaded = || {
            Failure::new(
                FailureKind::Overloaded,
                format!(
                    "The gateway is at its limit of {} concurrent turns; retry shortly.",
                    inner.config.max_concurrency
                ),
            )
            .with_retry_after(Duration::from_secs(1))
        };
        let permit = match inner.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Join the queue only while it has room; never wait unboundedly.
                let queued = inner.waiting.fetch_add(1, Ordering::AcqRel);
                let _leave = scopeguard(|| {
                    inner.waiting.fetch_sub(1, Ordering::AcqRel);
                });
                if queued >= inner.config.queue_max {
                    return Err(overloaded());
                }
                match tokio::time::timeout(
                    inner.config.queue_timeout,
                    inner.slots.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    _ => return Err(overloaded()),
                }
            }
        };
        if let Some(g) = &inner.config.in_flight {
            g.inc();
        }
        Ok(TurnSlot {
            _permit: permit,
            in_flight: inner.config.in_flight.clone(),
        })
    }
}

/// Runs `f` on drop.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

fn not_ready(e: crate::worker::NotReady) -> Failure {
    Failure::new(
        FailureKind::NotReady,
        format!("The Codex worker is not ready: {}", e.reason),
    )
    .with_retry_after(Duration::from_secs(2))
}

/// Per-thread config overrides. Codex's host tools are switched off here
/// (the form measured to remove them from the model's tool list) as well as
/// on the worker's command line.
fn thread_config(enable_codex_tools: bool) -> Map<String, Value> {
    let mut map = Map::new();
    if !enable_codex_tools {
        for feature in HOST_TOOL_FEATURES {
            map.insert(format!("features.{feature}"), json!(false));
        }
        map.insert("agents.enabled".into(), json!(false));
        map.insert("web_search".into(), json!("disabled"));
    }
    map
}

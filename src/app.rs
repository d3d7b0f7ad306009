//! Wires configuration, worker, core, API and stack together and runs them.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use codex_maintenance::{MaintenanceHandle, MaintenanceLayer};
use codex_metrics::HttpMetrics;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiState};
use crate::backend::{BackendMetrics, Backends};
use crate::config::Config;
use crate::core::CodexCore;
use crate::exec::ExecBackend;
use crate::server::serve;
use crate::stack::{self, StackConfig};
use crate::telemetry::GatewayMetrics;
use crate::trace_buffer::TraceBuffer;
use crate::usage::UsageLedger;
use crate::worker::{WorkerHandle, WorkerPhase, WorkerPool, WorkerStatus};

/// Handles a running gateway exposes to its embedder (tests, `main`).
#[derive(Clone)]
pub struct GatewayHandles {
    /// Worker 0 (the only one with the default `WORKER_POOL_SIZE=1`). With
    /// `PROXY_BACKEND=exec` and no canary no worker runs: a handle that
    /// stays `stopped` and says so.
    pub worker: WorkerHandle,
    /// Every worker; `pool.request_all()` is the rolling restart (SIGHUP).
    /// Empty when no worker runs.
    pub pool: WorkerPool,
    pub maintenance: MaintenanceHandle,
    /// The exec backend, when configured; a restart probes it again.
    pub exec: Option<ExecBackend>,
}

impl GatewayHandles {
    /// Waits until the default backend can take turns: worker 0 ready, or
    /// the exec backend's start-up probe passed (it ran before `on_start`).
    pub async fn wait_ready(&self) -> Result<(), String> {
        match (&self.exec, self.pool.is_empty()) {
            (Some(exec), true) => exec.not_ready().map_or(Ok(()), Err),
            _ => self.worker.wait_ready().await.map_err(|e| e.reason),
        }
    }

    /// The rolling restart (SIGHUP, `POST /admin/workers/restart`): every
    /// worker in turn, and the exec backend probes its CLI again (its
    /// lockdown and models). Returns the workers queued.
    pub fn restart(&self) -> usize {
        if let Some(exec) = &self.exec {
            exec.probe_in_background();
        }
        self.pool.request_all()
    }
}

/// Runs the gateway on `listener` until `shutdown` resolves: serves, drains,
/// then stops the worker. `on_start` receives the handles once everything is wired.
///
/// `config` comes from [`Config::from_env`], which has already read the keys
/// and route files and refused an exposed configuration.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    on_start: impl FnOnce(GatewayHandles),
) -> Result<(), String> {
    let Config {
        log_json: _,
        serve: serve_config,
        access,
        api: api_config,
        maintenance: maintenance_config,
        core: mut core_config,
        worker: worker_config,
        trace: trace_config,
        usage: usage_config,
        fleet: fleet_config,
        backend: backend_config,
    } = config;
    let workdir = match &worker_config.workdir {
        Some(dir) => dir.clone(),
        None => private_workdir()?,
    };

    let mut registry = Registry::with_prefix("codex_gateway");
    let http_metrics = HttpMetrics::register(&mut registry);
    let gateway_metrics = GatewayMetrics::register(&mut registry);
    let trace_buffer = trace_config.map(|c| TraceBuffer::new(c, &mut registry));
    let trace_sweeper = trace_buffer.as_ref().map(TraceBuffer::sweeper);
    let usage = match usage_config {
        Some(c) => Some(UsageLedger::open(
            c.state_dir.as_deref(),
            c.retention,
            &mut registry,
        )?),
        None => None,
    };
    let usage_writer = usage.as_ref().map(UsageLedger::spawn_writer);
    let fleet = crate::fleet::Fleet::connect(&fleet_config, &mut registry)?;

    let shutdown_grace = worker_config.shutdown_grace;
    let stop_worker = CancellationToken::new();
    // Exec as the only backend starts no `codex app-server` at all: it is
    // the fallback for a CLI release whose app-server is broken.
    let (pool, supervisor_tasks) = match backend_config.needs_app_server() {
        true => {
            let running = WorkerPool::spawn(
                &worker_config,
                workdir.clone(),
                Some(gateway_metrics.call_observer()),
                trace_buffer.as_ref().map(TraceBuffer::tap),
                stop_worker.clone(),
            );
            (running.pool, running.supervisors)
        }
        false => (WorkerPool::from_handles(Vec::new()), Vec::new()),
    };
    gateway_metrics.watch_pool(pool.clone());
    crate::telemetry::register_pool_metrics(&mut registry, &pool);
    // WORKER_MAX_CONCURRENCY is per worker (of the configured pool: the
    // same budget whichever backend runs the turns).
    core_config.max_concurrency = core_config
        .max_concurrency
        .saturating_mul(worker_config.pool.size);

    // The two core settings only known now (see `Config::core`).
    core_config.cwd = workdir.display().to_string();
    core_config.in_flight = Some(gateway_metrics.turns_in_flight().clone());
    gateway_metrics.set_turn_slots(core_config.max_concurrency);
    let core = CodexCore::new(pool.clone(), core_config.clone());
    // The exec backend takes the core's turn slots (one limit for both) and
    // probes its CLI now, so it is ready (or says why not) before the first
    // request; a failed probe is retried, like a worker that fails to start.
    let exec = match backend_config.needs_exec() {
        true => {
            let exec = ExecBackend::new(&worker_config, &core_config, &workdir, core.turn_slots());
            exec.register_metrics(&mut registry);
            let _ = exec.probe().await;
            exec.spawn_prober(stop_worker.clone());
            Some(exec)
        }
        false => None,
    };
    let backend_metrics = BackendMetrics::register(&mut registry);
    let (maintenance_layer, maintenance) = MaintenanceLayer::pair(maintenance_config);
    let mut state = ApiState::new(core, &api_config)?;
    state.backends = Backends {
        config: backend_config,
        exec: exec.clone(),
        metrics: Some(backend_metrics),
    };
    tracing::info!(
        backend = backend_config.default.as_str(),
        canary_percent = backend_config.canary_percent,
        "turns run on codex {}",
        backend_config.default.as_str()
    );
    crate::telemetry::register_thread_metrics(&mut registry, state.threads.metrics());
    state.threads.spawn_sweeper(
        (api_config.conversations.thread_idle_ttl / 4).max(Duration::from_millis(100)),
    );
    if let Some(store) = &state.responses {
        store.spawn_sweeper(Duration::from_secs(60));
    }
    state.maintenance = Some(maintenance.clone());
    // Every replica follows the fleet's switch; the admin call writes it.
    let maintenance_follower = fleet.follow_maintenance(maintenance.clone());
    state.fleet_switch = fleet.switch.clone();
    state.replica = fleet.replica.clone();
    // Stored responses outlive their replica in Redis: a follow-up is rebuilt anywhere.
    state.responses = state
        .responses
        .take()
        .map(|store| store.shared(fleet.shared_responses(api_config.conversations.store_ttl)));
    state.stream_limit = state
        .stream_limit
        .take()
        .map(|limit| limit.shared(fleet.limits.clone()));
    state.metrics = Some(gateway_metrics);
    state.usage = usage.clone();
    state.registry = api_config.serve_metrics.then(|| Arc::new(registry));
    state.metrics_token = access.metrics_token.clone();
    let sweeper = {
        let store = state.continuations.clone();
        let every = api_config.tools.continuation_ttl / 4;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
            loop {
                tick.tick().await;
                store.sweep();
            }
        })
    };
    let draining = state.draining_flag();
    let api = Api::new(Arc::new(state));

    let service = stack::build(
        api,
        StackConfig {
            access: Arc::new(access),
            maintenance: maintenance_layer,
            http_metrics,
            output_mode: api_config.output_mode,
            reasoning_format: api_config.reasoning_format,
            sse_keepalive: api_config.sse_keepalive,
            trace_buffer,
            usage,
            shared_limits: fleet.limits.clone(),
            replica: fleet.replica.clone(),
        },
    );

    let worker = match pool.is_empty() {
        false => pool.handle(0).clone(),
        true => no_worker(),
    };
    let handles = GatewayHandles {
        worker,
        pool: pool.clone(),
        maintenance,
        exec,
    };
    on_start(handles);
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, "listening");
    let shutdown = async move {
        shutdown.await;
        draining.store(true, Ordering::Relaxed);
        tracing::info!("shutdown requested");
    };
    serve(listener, service, &serve_config, shutdown).await;

    // Streams have drained (or their deadline passed): now the worker may go.
    sweeper.abort();
    if let Some(f) = maintenance_follower {
        f.abort();
    }
    if let Some(t) = trace_sweeper {
        t.abort();
    }
    if let Some(w) = usage_writer {
        // Every request that ended has queued its usage: write it all (one
        // transaction) before the process goes; bounded in case the disk hangs.
        if tokio::time::timeout(Duration::from_secs(5), w.finish())
            .await
            .is_err()
        {
            tracing::warn!("the usage ledger was not written within 5 s of shutdown");
        }
    }
    stop_worker.cancel();
    let grace = shutdown_grace + Duration::from_secs(1);
    let stopped = futures_util::future::join_all(supervisor_tasks);
    if tokio::time::timeout(grace, stopped).await.is_err() {
        tracing::warn!("the worker did not stop in time");
    }
    Ok(())
}

/// The handle of the worker an exec-only gateway does not start.
fn no_worker() -> WorkerHandle {
    let status = WorkerStatus {
        phase: WorkerPhase::Stopped,
        last_error: Some("no app-server worker runs: PROXY_BACKEND=exec".into()),
        ..WorkerStatus::initial()
    };
    // The sender may go: the handle only ever reads this one status.
    WorkerHandle::new(tokio::sync::watch::channel(status).1)
}

/// A fresh directory for the worker's cwd: threads get a cwd with nothing in it.
fn private_workdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("codex-completions-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

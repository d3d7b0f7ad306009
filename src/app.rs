//! Wires configuration, worker, core, API and stack together and runs them.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use codex_auth::{ApiKey, KeySet};
use codex_maintenance::{MaintenanceConfig, MaintenanceHandle, MaintenanceLayer};
use codex_metrics::HttpMetrics;
use codex_rate_limit::KeyedConcurrency;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::AccessPolicy;
use crate::api::continuation::Continuations;
use crate::api::models::Aliases;
use crate::api::{Api, ApiState};
use crate::config::Config;
use crate::core::{CodexCore, CoreConfig};
use crate::server::{serve, ServeConfig};
use crate::stack::{self, StackConfig};
use crate::telemetry::GatewayMetrics;
use crate::worker::{Supervisor, WorkerHandle};

/// Handles a running gateway exposes to its embedder (tests, `main`).
#[derive(Clone)]
pub struct GatewayHandles {
    pub worker: WorkerHandle,
    pub maintenance: MaintenanceHandle,
}

/// Refuses configurations that would expose the worker to anyone who can
/// reach the port: beyond loopback, some key must exist (an empty keys file
/// does not count).
pub fn check_exposure(config: &Config, access: &AccessPolicy) -> Result<(), String> {
    if !config.host.is_loopback() && access.keys.is_empty() && !config.allow_unauthenticated {
        return Err(format!(
            "refusing to listen on {} without an API key: set PROXY_API_KEY or PROXY_API_KEYS_FILE \
             (or PROXY_ALLOW_UNAUTHENTICATED=true to accept the risk)",
            config.host
        ));
    }
    Ok(())
}

/// Runs the gateway on `listener` until `shutdown` resolves: serves, drains,
/// then stops the worker. `on_start` receives the handles once everything is wired.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    on_start: impl FnOnce(GatewayHandles),
) -> Result<(), String> {
    let workdir = match &config.worker.workdir {
        Some(dir) => dir.clone(),
        None => private_workdir()?,
    };

    let access = Arc::new(AccessPolicy::load(&config)?);
    check_exposure(&config, &access)?;
    let mut registry = Registry::with_prefix("codex_gateway");
    let http_metrics = HttpMetrics::register(&mut registry);
    let gateway_metrics = GatewayMetrics::register(&mut registry);

    let (supervisor, worker) = Supervisor::new(config.worker.clone(), workdir.clone());
    let supervisor = supervisor.with_call_observer(gateway_metrics.call_observer());
    let stop_worker = CancellationToken::new();
    let supervisor_task = tokio::spawn(supervisor.run(stop_worker.clone()));
    gateway_metrics.watch_worker(worker.clone());

    let core = CodexCore::new(
        worker.clone(),
        CoreConfig {
            cwd: workdir.display().to_string(),
            sandbox: config.worker.sandbox,
            enable_codex_tools: config.worker.enable_codex_tools,
            model_provider: config.worker.model_provider.clone(),
            idle_timeout: config.stream_idle_timeout,
            max_concurrency: config.max_concurrency,
            queue_max: config.queue_max,
            queue_timeout: config.queue_timeout,
            in_flight: Some(gateway_metrics.turns_in_flight().clone()),
        },
    );
    let (maintenance_layer, maintenance) = MaintenanceLayer::pair(MaintenanceConfig {
        enabled: config.maintenance,
        retry_after_secs: config.maintenance_retry_after_s,
        message: config.maintenance_message.clone(),
    });
    let aliases = Aliases::parse(&config.model_aliases)
        .map_err(|e| format!("invalid PROXY_MODEL_ALIASES: {e}"))?;
    let mut state = ApiState::new(core, aliases, config.max_body_bytes);
    state.uploads =
        crate::api::upload::UploadBudget::new(config.upload_budget_bytes, config.max_body_bytes);
    state.maintenance = Some(maintenance.clone());
    state.access = access.clone();
    state.metrics = Some(gateway_metrics);
    state.registry = config.metrics_enabled.then(|| Arc::new(registry));
    state.metrics_token = config.metrics_token.as_ref().map(|t| t.0.clone());
    state.stream_limit =
        (config.sse_max_concurrency > 0).then(|| KeyedConcurrency::new(config.sse_max_concurrency));
    state.trust_proxy = config.trust_proxy;
    state.request_timeout = config.request_timeout;
    state.kill_on_disconnect = config.kill_on_disconnect;
    state.tools = config.tools.clone();
    state.images = match &config.image_fetch {
        Some(c) => Some(crate::api::images::ImageFetcher::new(c.clone())?),
        None => None,
    };
    state.continuations = Arc::new(Continuations::new(
        config.tools.continuation_ttl,
        config.tools.continuation_max,
    ));
    let sweeper = {
        let store = state.continuations.clone();
        let every = config.tools.continuation_ttl / 4;
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

    let keys = KeySet::new(
        access
            .keys
            .iter()
            .map(|k| ApiKey::new(k.name.as_str(), k.secret.0.clone()))
            .collect(),
    );
    let service = stack::build(
        api,
        StackConfig {
            keys,
            access,
            maintenance: maintenance_layer,
            http_metrics,
            cors: config.cors_enabled.then(|| config.cors_origins.clone()),
            trust_proxy: config.trust_proxy,
            output_mode: config
                .output_mode
                .parse()
                .map_err(|e| format!("invalid PROXY_OUTPUT_MODE: {e}"))?,
            sse_keepalive: config.sse_keepalive,
        },
    );

    on_start(GatewayHandles {
        worker,
        maintenance,
    });
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, "listening");
    let shutdown = async move {
        shutdown.await;
        draining.store(true, Ordering::Relaxed);
        tracing::info!("shutdown requested");
    };
    serve(
        listener,
        service,
        ServeConfig {
            header_timeout: config.header_timeout,
            drain_timeout: config.shutdown_drain,
        },
        shutdown,
    )
    .await;

    // Streams have drained (or their deadline passed): now the worker may go.
    sweeper.abort();
    stop_worker.cancel();
    let grace = config.worker.shutdown_grace + Duration::from_secs(1);
    if tokio::time::timeout(grace, supervisor_task).await.is_err() {
        tracing::warn!("the worker did not stop in time");
    }
    Ok(())
}

/// A fresh directory for the worker's cwd: threads get a cwd with nothing in it.
fn private_workdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("codex-completions-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

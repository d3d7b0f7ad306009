//! `GET /healthz` (liveness) and `GET /readyz` (readiness).

use http::{Response, StatusCode};
use serde_json::json;

use super::{json_response, ApiBody, ApiState};
use crate::worker::WorkerPhase;

/// 200 while the process runs, with the workers' state for operators.
/// `backend` names the default backend; with exec as the default,
/// `worker_ready` says whether exec can take turns (no worker runs, so
/// `worker` is `null`), and `exec` carries its state.
pub(crate) fn healthz(state: &ApiState) -> Response<ApiBody> {
    let pool = state.core.pool();
    let backends = &state.backends;
    let worker_ready = match backends.exec_default() {
        Some(exec) => exec.ready(),
        None => pool.ready_count() > 0,
    };
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "codex_version": crate::protocol::pinned_codex_version(),
            "backend": backends.config.default.as_str(),
            "worker": worker_status(state),
            "worker_ready": worker_ready,
            "workers": pool.len(),
            "workers_ready": pool.available_count(),
            "exec": backends.exec.as_ref().map(|e| e.status()),
        }),
    )
}

/// Worker 0's state; `null` when no worker runs (`PROXY_BACKEND=exec`).
fn worker_status(state: &ApiState) -> Option<crate::worker::WorkerStatus> {
    let pool = state.core.pool();
    (!pool.is_empty()).then(|| pool.handle(0).status())
}

/// 200 while at least one worker is up, logged in and not draining
/// (`workers_ready` says how many can take a new turn now); 503 with the
/// reason otherwise. Workers out of quota still count as serving: the
/// gateway answers 429 `insufficient_quota` with the reset time, which a
/// load balancer taking it out would turn into a bare 503. Workers waiting
/// for a login are listed with the command to run. `worker` is worker 0's
/// state, as before there was a pool.
///
/// With exec as the default backend (`backend: "exec"`), readiness is
/// exec's: its last check of the CLI (version, lockdown, models) passed
/// (`exec` shows it, with the turn slots taken); `workers` is 0 and
/// `worker` `null` when no worker runs. Full turn slots do not make it
/// unready, as busy workers do not: the queue and 429s shed that load.
pub(crate) fn readyz(state: &ApiState) -> Response<ApiBody> {
    let pool = state.core.pool();
    let available = pool.available_count();
    let (out_of_quota, quota_resets_at) = pool.out_of_quota();
    let login_required: Vec<_> = pool
        .views()
        .into_iter()
        .filter(|w| w.status.phase == WorkerPhase::LoginRequired)
        .map(|w| json!({"worker": w.worker, "codex_home": w.codex_home, "action": w.action}))
        .collect();
    let reason = if state.draining() {
        Some("the gateway is shutting down".to_owned())
    } else if state.maintenance.as_ref().is_some_and(|m| m.is_enabled()) {
        Some("maintenance mode is on".to_owned())
    } else {
        state.backends.not_ready(&state.core)
    };
    let worker = worker_status(state);
    let (status, word) = match reason {
        None => (StatusCode::OK, "ready"),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    };
    json_response(
        status,
        &json!({
            "status": word,
            "reason": reason,
            "workers": pool.len(),
            "workers_ready": available,
            "workers_out_of_quota": out_of_quota,
            "quota_resets_at": quota_resets_at,
            "login_required": login_required,
            "worker": worker,
            "backend": state.backends.config.default.as_str(),
            "exec": state.backends.exec.as_ref().map(|e| e.status()),
        }),
    )
}

//! `GET /healthz` (liveness) and `GET /readyz` (readiness).

use http::{Response, StatusCode};
use serde_json::json;

use super::{json_response, ApiBody, ApiState};
use crate::worker::WorkerPhase;

/// 200 while the process runs, with the workers' state for operators.
pub(crate) fn healthz(state: &ApiState) -> Response<ApiBody> {
    let pool = state.core.pool();
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "codex_version": crate::protocol::pinned_codex_version(),
            "worker": pool.handle(0).status(),
            "worker_ready": pool.ready_count() > 0,
            "workers": pool.len(),
            "workers_ready": pool.available_count(),
        }),
    )
}

/// 200 while at least one worker is up, logged in and not draining
/// (`workers_ready` says how many can take a new turn now); 503 with the
/// reason otherwise. Workers out of quota still count as serving: the
/// gateway answers 429 `insufficient_quota` with the reset time, which a
/// load balancer taking it out would turn into a bare 503. Workers waiting
/// for a login are listed with the command to run. `worker` is worker 0's
/// state, as before there was a pool.
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
    } else if pool.serving_count() == 0 {
        Some(pool.not_ready().reason)
    } else {
        None
    };
    let worker = pool.handle(0).status();
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
        }),
    )
}

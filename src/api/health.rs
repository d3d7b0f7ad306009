//! `GET /healthz` (liveness) and `GET /readyz` (readiness).

use http::{Response, StatusCode};
use serde_json::json;

use super::{json_response, ApiBody, ApiState};

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

/// 200 while at least one worker can take a new turn (saying how many
/// can); 503 with the reason otherwise. `worker` is worker 0's state, as
/// before there was a pool.
pub(crate) fn readyz(state: &ApiState) -> Response<ApiBody> {
    let pool = state.core.pool();
    let available = pool.available_count();
    let reason = if state.draining() {
        Some("the gateway is shutting down".to_owned())
    } else if state.maintenance.as_ref().is_some_and(|m| m.is_enabled()) {
        Some("maintenance mode is on".to_owned())
    } else if available == 0 {
        Some(pool.not_ready().reason)
    } else {
        None
    };
    let worker = pool.handle(0).status();
    match reason {
        None => json_response(
            StatusCode::OK,
            &json!({
                "status": "ready",
                "workers": pool.len(),
                "workers_ready": available,
                "worker": worker,
            }),
        ),
        Some(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "status": "not_ready",
                "reason": reason,
                "workers": pool.len(),
                "workers_ready": available,
                "worker": worker,
            }),
        ),
    }
}

//! `GET /healthz` (liveness) and `GET /readyz` (readiness).

use http::{Response, StatusCode};
use serde_json::json;

use super::{json_response, ApiBody, ApiState};

/// 200 while the process runs, with the worker's state for operators.
pub(crate) fn healthz(state: &ApiState) -> Response<ApiBody> {
    let worker = state.core.worker().status();
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "codex_version": crate::protocol::pinned_codex_version(),
            "worker": worker,
            "worker_ready": worker.is_ready(),
        }),
    )
}

/// 200 only while requests can be served; 503 with the reason otherwise.
pub(crate) fn readyz(state: &ApiState) -> Response<ApiBody> {
    let worker = state.core.worker().status();
    let reason = if state.draining() {
        Some("the gateway is shutting down".to_owned())
    } else if state.maintenance.as_ref().is_some_and(|m| m.is_enabled()) {
        Some("maintenance mode is on".to_owned())
    } else if !worker.is_ready() {
        Some(worker.not_ready_reason())
    } else {
        None
    };
    match reason {
        None => json_response(
            StatusCode::OK,
            &json!({"status": "ready", "worker": worker}),
        ),
        Some(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not_ready", "reason": reason, "worker": worker}),
        ),
    }
}

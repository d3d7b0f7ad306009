//! `/admin/maintenance`: switch maintenance mode at run time.
//! `/admin/workers`: the worker pool; `/admin/workers/restart`: a rolling restart.
//!
//! Callers: a key marked `admin` (every `PROXY_API_KEY` key is), or, when the
//! gateway has no keys at all, a loopback client.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{json_response, ApiBody, ApiState};
use crate::caller::Caller;

/// Who called, for the log line.
pub(super) struct Admin(String);

/// Lets in the callers the stack decided may administer ([`Caller::admin`]).
pub(super) fn authorize<B>(req: &Request<B>) -> Result<Admin, ApiError> {
    let forbidden =
        |msg: &str| ApiError::new(StatusCode::FORBIDDEN, "permission_error", msg).code("forbidden");
    match req.extensions().get::<Caller>() {
        Some(Caller {
            admin: true,
            key: Some(key),
            ..
        }) => Ok(Admin(format!("key:{key}"))),
        Some(Caller {
            admin: true,
            key: None,
            ..
        }) => Ok(Admin("loopback".into())),
        Some(Caller { key: Some(_), .. }) => {
            Err(forbidden("This key may not administer the gateway."))
        }
        _ => Err(forbidden(
            "Admin endpoints need an admin key (or, with no keys configured, a loopback client).",
        )),
    }
}

pub(super) async fn maintenance(
    state: &ApiState,
    caller: &Admin,
    body: Option<Bytes>,
) -> Result<Response<ApiBody>, ApiError> {
    let Some(handle) = &state.maintenance else {
        return Err(ApiError::not_found("Maintenance mode is not available."));
    };
    if let Some(body) = body {
        let v = Value::Object(super::json_object(&body)?);
        let enabled = v
            .get("enabled")
            .and_then(Value::as_bool)
            .ok_or_else(|| ApiError::invalid("enabled", "`enabled` must be a boolean"))?;
        let message = match v.get("message") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) if !m.trim().is_empty() => Some(m.clone()),
            Some(_) => {
                return Err(ApiError::invalid(
                    "message",
                    "`message` must be a non-empty string",
                ))
            }
        };
        // With Redis the switch is the fleet's: written there first, so a
        // failure leaves every replica as it was and the caller can retry.
        if let Some(fleet) = &state.fleet_switch {
            fleet
                .publish(enabled, message.as_deref())
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "fleet maintenance switch not written");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        "The fleet's maintenance switch (Redis) cannot be reached; nothing was switched.",
                    )
                    .code("fleet_unavailable")
                })?;
        }
        if let Some(m) = message {
            handle.set_message(m);
        }
        handle.set(enabled);
        tracing::warn!(caller = %caller.0, enabled, fleet = state.fleet_switch.is_some(), "maintenance mode switched");
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "enabled": handle.is_enabled(),
            "message": &*handle.message(),
            "retry_after": handle.retry_after_secs(),
            "scope": if state.fleet_switch.is_some() { "fleet" } else { "replica" },
        }),
    ))
}

/// `GET /admin/workers`: each worker's phase, pid, turns in flight, restarts;
/// `backend`, the default backend, and `exec`, the exec backend's state
/// when it runs (with `PROXY_BACKEND=exec` alone, no worker: `size` 0).
pub(super) fn workers(state: &ApiState) -> Response<ApiBody> {
    let pool = state.core.pool();
    let (out_of_quota, quota_resets_at) = pool.out_of_quota();
    json_response(
        StatusCode::OK,
        &json!({
            "backend": state.backends.config.default.as_str(),
            "workers": pool.views(),
            "ready": pool.available_count(),
            "out_of_quota": out_of_quota,
            "quota_resets_at": quota_resets_at,
            "size": pool.len(),
            "exec": state.backends.exec.as_ref().map(|e| e.status()),
        }),
    )
}

/// `POST /admin/workers/restart`: drains and replaces every worker, one at
/// a time (an empty body or `{}`), or one (`{"worker": N}`). Answers 202 at
/// once; `GET /admin/workers` shows the progress (`draining`, `recycles`).
/// The whole restart also has the exec backend, if it runs, check its CLI
/// again (lockdown, models, version: `exec.probes`, `exec.checked_at`).
pub(super) fn restart_workers(
    state: &ApiState,
    caller: &Admin,
    body: &Bytes,
) -> Result<Response<ApiBody>, ApiError> {
    let pool = state.core.pool();
    let worker = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match super::json_object(body)?.get("worker") {
            None | Some(Value::Null) => None,
            Some(_) if pool.is_empty() => {
                return Err(ApiError::invalid(
                    "worker",
                    "No app-server worker runs on this gateway (PROXY_BACKEND=exec): \
                     restart without `worker`.",
                ))
            }
            Some(v) => match v.as_u64() {
                Some(n) if (n as usize) < pool.len() => Some(n as usize),
                _ => {
                    return Err(ApiError::invalid(
                        "worker",
                        format!(
                            "`worker` must be a worker number from 0 to {}",
                            pool.len() - 1
                        ),
                    ))
                }
            },
        }
    };
    let exec = state.backends.exec.as_ref().filter(|_| worker.is_none());
    let queued = match worker {
        Some(i) => usize::from(pool.request(i, crate::worker::RecycleReason::Requested)),
        None => pool.request_all(),
    };
    if let Some(exec) = exec {
        exec.probe_in_background();
    }
    tracing::warn!(caller = %caller.0, ?worker, queued, exec = exec.is_some(), "rolling restart requested");
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"queued": queued, "workers": pool.len(), "exec_probe": exec.is_some()}),
    ))
}

//! `/admin/maintenance`: switch maintenance mode at run time.
//!
//! Callers: a key marked `admin` (every `PROXY_API_KEY` key is), or, when the
//! gateway has no keys at all, a loopback client.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{json_response, ApiBody, ApiState};
use crate::server::PeerAddr;

/// Who called, for the log line.
pub(super) struct Admin(String);

pub(super) fn authorize<B>(state: &ApiState, req: &Request<B>) -> Result<Admin, ApiError> {
    let forbidden =
        |msg: &str| ApiError::new(StatusCode::FORBIDDEN, "permission_error", msg).code("forbidden");
    if let Some(key) = req.extensions().get::<codex_auth::AuthenticatedKey>() {
        return if state.access.is_admin(key.name()) {
            Ok(Admin(format!("key:{}", key.name())))
        } else {
            Err(forbidden("This key may not administer the gateway."))
        };
    }
    let loopback = req
        .extensions()
        .get::<PeerAddr>()
        .is_some_and(|p| p.0.ip().is_loopback());
    if state.access.keys.is_empty() && loopback {
        return Ok(Admin("loopback".into()));
    }
    Err(forbidden(
        "Admin endpoints need an admin key (or, with no keys configured, a loopback client).",
    ))
}

pub(super) fn maintenance(
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
        match v.get("message") {
            None | Some(Value::Null) => {}
            Some(Value::String(m)) if !m.trim().is_empty() => handle.set_message(m.clone()),
            Some(_) => {
                return Err(ApiError::invalid(
                    "message",
                    "`message` must be a non-empty string",
                ))
            }
        }
        handle.set(enabled);
        tracing::warn!(caller = %caller.0, enabled, "maintenance mode switched");
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "enabled": handle.is_enabled(),
            "message": &*handle.message(),
            "retry_after": handle.retry_after_secs(),
        }),
    ))
}

//! `GET /v1/usage?start=&end=&group_by=`: token usage from the ledger
//! (`crate::usage`), per key, model and hour.
//!
//! `start` and `end` are Unix seconds (default: the last 24 hours); an hour
//! is counted when it starts in `[start, end)`. `group_by` is a
//! comma-separated subset of `key`, `model`, `hour` (default: one total).
//! A key sees its own usage only; an admin key sees every key's, or one
//! key's with `key=NAME`. With no keys configured, everything is one
//! tenant's.

use http::{Response, StatusCode};
use serde_json::json;

use super::error::ApiError;
use super::{json_response, ApiBody, ApiState};
use crate::caller::Caller;
use crate::usage::GroupBy;

/// `query` is the request's query string, `caller` its [`Caller`] (taken
/// out of the request first: the request body is not `Sync`).
pub(super) async fn serve(
    state: &ApiState,
    query: Option<String>,
    caller: Option<Caller>,
) -> Result<Response<ApiBody>, ApiError> {
    let Some(ledger) = &state.usage else {
        return Err(ApiError::not_found(
            "Usage accounting is off on this gateway (PROXY_USAGE_LEDGER=false).",
        ));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut start = now.saturating_sub(86_400) / 3600 * 3600;
    let mut end = now + 1;
    let mut group = GroupBy::default();
    let mut wanted_key: Option<String> = None;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = value.replace("%2C", ",").replace("%2c", ",");
        let seconds = |param: &'static str| {
            value.parse::<u64>().map_err(|_| {
                ApiError::invalid(param, format!("`{param}` must be a Unix time in seconds."))
            })
        };
        match name {
            "start" | "start_time" => start = seconds("start")?,
            "end" | "end_time" => end = seconds("end")?,
            "group_by" => {
                for g in value.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                    match g {
                        "key" => group.key = true,
                        "model" => group.model = true,
                        "hour" => group.hour = true,
                        other => {
                            return Err(ApiError::invalid(
                                "group_by",
                                format!("`{other}` is not one of key, model, hour."),
                            ))
                        }
                    }
                }
            }
            "key" => wanted_key = Some(value.to_string()),
            other => {
                return Err(ApiError::invalid(
                    other.to_owned(),
                    format!("Unknown parameter `{other}`; use start, end, group_by, key."),
                ))
            }
        }
    }
    if start >= end {
        return Err(ApiError::invalid("end", "`end` must be after `start`."));
    }
    let admin = caller.as_ref().is_some_and(|c| c.admin);
    let own = caller.and_then(|c| c.key);
    let key = match (admin, own, wanted_key) {
        (true, _, wanted) => wanted,
        (false, Some(own), Some(wanted)) if wanted != own => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                "A key may read only its own usage; an admin key reads any.",
            )
            .code("forbidden"))
        }
        (false, Some(own), _) => Some(own),
        // Unauthenticated on a gateway with keys (a route rule let it in):
        // only what was used without a key.
        (false, None, _) => Some(String::new()),
    };
    let rows = ledger
        .query(start, end, key.clone(), group)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "usage query failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "The usage query failed.",
            )
        })?;
    let group_by: Vec<&str> = [
        ("key", group.key),
        ("model", group.model),
        ("hour", group.hour),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "start": start,
            "end": end,
            "group_by": group_by,
            "key": key,
            "data": rows,
        }),
    ))
}

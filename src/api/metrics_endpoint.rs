//! `GET /metrics`: Prometheus exposition, for loopback or a bearer token.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::{ApiBody, ApiState};
use crate::server::PeerAddr;

pub(super) fn serve<B>(state: &ApiState, req: &Request<B>) -> Result<Response<ApiBody>, ApiError> {
    let Some(registry) = &state.registry else {
        return Err(ApiError::not_found(
            "Metrics are off; set PROXY_ENABLE_METRICS=true.",
        ));
    };
    let from_loopback = req
        .extensions()
        .get::<PeerAddr>()
        .is_some_and(|p| p.0.ip().is_loopback());
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let token_ok = match (&state.metrics_token, presented) {
        (Some(expected), Some(given)) => bool::from(expected.as_bytes().ct_eq(given.as_bytes())),
        _ => false,
    };
    if !from_loopback && !token_ok {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Metrics are served to loopback clients, or with the PROXY_METRICS_TOKEN bearer token.",
        )
        .code("invalid_api_key"));
    }
    let text = codex_metrics::encode(registry);
    let mut res = Response::new(ApiBody::Body(Full::new(Bytes::from(text))));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codex_metrics::CONTENT_TYPE),
    );
    Ok(res)
}

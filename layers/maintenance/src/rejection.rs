//! The 503 responses, shaped like OpenAI's.

use bytes::Bytes;
use http::{
    header::{CONTENT_TYPE, RETRY_AFTER},
    HeaderValue, Response, StatusCode,
};

use codex_layer_support::error_body;

/// Response extension marking a 503 produced by maintenance mode, so a
/// metrics layer further out can count these apart from upstream failures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MaintenanceRejected;

/// The JSON error envelope for `message`.
pub(crate) fn body(message: &str) -> Bytes {
    error_body(message, "service_unavailable", None, "maintenance")
}

/// A 503 with `body` (rendered by [`body`]) and `Retry-After`.
pub(crate) fn response(body: Bytes, retry_after: HeaderValue) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(RETRY_AFTER, retry_after);
    response.extensions_mut().insert(MaintenanceRejected);
    response
}

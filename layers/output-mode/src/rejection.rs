//! The 400 responses, shaped like OpenAI's.

use bytes::Bytes;
use http::{header::CONTENT_TYPE, HeaderValue, Response, StatusCode};

use crate::{OutputModeLayer, UnknownOutputMode};
use codex_layer_support::error_body;

/// Response extension marking a 400 produced because the
/// `x-proxy-output-mode` header named no known mode, so metrics can count it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OutputModeRejected;

/// The 400 for `error`, with the marker in its extensions.
pub(crate) fn response(error: &UnknownOutputMode) -> Response<Bytes> {
    let body = error_body(
        &error.to_string(),
        "invalid_request_error",
        Some(OutputModeLayer::HEADER.as_str()),
        "invalid_output_mode",
    );
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.extensions_mut().insert(OutputModeRejected);
    response
}

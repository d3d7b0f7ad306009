//! The 400 responses, shaped like OpenAI's.

use bytes::Bytes;
use http::{header::CONTENT_TYPE, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::{OutputModeLayer, UnknownOutputMode};

/// Response extension marking a 400 produced because the
/// `x-proxy-output-mode` header named no known mode, so metrics can count it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OutputModeRejected;

/// The 400 for `error`, with the marker in its extensions.
pub(crate) fn response(error: &UnknownOutputMode) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": {
            "message": error.to_string(),
            "type": "invalid_request_error",
            "param": OutputModeLayer::HEADER.as_str(),
            "code": "invalid_output_mode",
        }
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.extensions_mut().insert(OutputModeRejected);
    response
}

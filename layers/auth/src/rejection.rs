//! The 401 responses, shaped like OpenAI's so SDKs surface them properly.

use bytes::Bytes;
use http::{
    header::{CONTENT_TYPE, WWW_AUTHENTICATE},
    HeaderValue, Response, StatusCode,
};

use codex_layer_support::error_body;

/// Response extension marking a 401 produced by this layer, and why.
///
/// A metrics or logging layer further out can count rejections by cause with
/// `response.extensions().get::<AuthRejected>()`, without parsing bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthRejected {
    /// No usable `Authorization: Bearer …` header.
    MissingKey,
    /// A bearer token that matches no configured key.
    InvalidKey,
}

impl AuthRejected {
    /// A stable label for metrics: `"missing_key"` or `"invalid_key"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::InvalidKey => "invalid_key",
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Self::MissingKey => {
                "You didn't provide an API key. Provide it as a Bearer token in the Authorization header."
            }
            Self::InvalidKey => "Incorrect API key provided.",
        }
    }

    /// The 401 response for this cause, with the marker in its extensions.
    pub(crate) fn into_response(self) -> Response<Bytes> {
        let body = error_body(
            self.message(),
            "invalid_request_error",
            None,
            "invalid_api_key",
        );
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response.extensions_mut().insert(self);
        response
    }
}

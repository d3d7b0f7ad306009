//! What the `codex-*` rejecting tower layers (auth, maintenance, rate limit,
//! output mode) share: OpenAI's error envelope, the reject-or-forward
//! response future, and the one response body they all answer with. Kept in
//! its own small crate so each layer stays usable alone without four copies
//! of the same code.
//!
//! Because every one of those layers returns [`ResponseBody`], and its
//! [`Default`] is an empty body whatever the inner body is, a stack of them
//! (with tower-http's CORS layer, which needs `ResBody: Default` for
//! preflights, on top) needs its body type erased only once, at the server.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use codex_layer_support::{error_body, RejectOr, ResponseBody};
//! use http::{Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // What a layer's `call` returns when it turns a request away.
//! let mut rejection = Response::new(error_body("Nope.", "invalid_request_error", None, "nope"));
//! *rejection.status_mut() = StatusCode::BAD_REQUEST;
//! type Inner = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;
//! let future = RejectOr::<Inner>::rejected(rejection);
//!
//! let response: Response<ResponseBody<Full<Bytes>>> = future.await.unwrap();
//! assert_eq!(response.status(), StatusCode::BAD_REQUEST);
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, r#"{"error":{"message":"Nope.","type":"invalid_request_error","param":null,"code":"nope"}}"#);
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod envelope;
mod future;

pub use body::ResponseBody;
pub use envelope::error_body;
pub use future::RejectOr;

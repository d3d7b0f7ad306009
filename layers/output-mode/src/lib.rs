//! Per-request choice of how tool calls are rendered to the client.
//!
//! [`OutputModeLayer`] reads the `x-proxy-output-mode` request header
//! (`obsidian-xml` or `openai-json`, case-insensitive), falls back to the
//! request's default when it is absent (a [`DefaultModePolicy`] set with
//! [`OutputModeLayer::default_by`], say per API key or per route, else the
//! layer's fixed default), and inserts the resulting [`OutputMode`]
//! into the request extensions for the handlers and the response rendering.
//! A value that names no mode gets a 400 in OpenAI's error shape
//! (`code: "invalid_output_mode"`, `param: "x-proxy-output-mode"`), marked
//! with [`OutputModeRejected`] in the response extensions.
//!
//! The response body is [`ResponseBody<ResBody>`](ResponseBody): the inner
//! body passes through untouched, or the 400's JSON. It is the body type of
//! every `codex-*` rejecting layer, and empty by `Default`, so tower-http's
//! CORS layer can sit directly outside a stack of them.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use codex_output_mode::{OutputMode, OutputModeLayer};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let svc = ServiceBuilder::new()
//!     .layer(OutputModeLayer::new(OutputMode::ObsidianXml))
//!     .service(service_fn(|req: Request<Full<Bytes>>| async move {
//!         let mode = req.extensions().get::<OutputMode>().copied();
//!         assert_eq!(mode, Some(OutputMode::OpenaiJson));
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
//!     }));
//!
//! let request = Request::post("/v1/chat/completions")
//!     .header(OutputModeLayer::HEADER, "openai-json")
//!     .body(Full::default())?;
//! assert_eq!(svc.clone().oneshot(request).await?.status(), StatusCode::OK);
//!
//! let request = Request::post("/v1/chat/completions")
//!     .header(OutputModeLayer::HEADER, "yaml")
//!     .body(Full::default())?;
//! assert_eq!(svc.oneshot(request).await?.status(), StatusCode::BAD_REQUEST);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod future;
mod layer;
mod mode;
mod policy;
mod rejection;
mod service;

pub use self::{
    future::ResponseFuture,
    layer::OutputModeLayer,
    mode::{OutputMode, UnknownOutputMode},
    policy::{DefaultModePolicy, FixedDefault},
    rejection::OutputModeRejected,
    service::OutputModeService,
};

/// The response body: the inner service's, or the 400's (shared with the
/// other `codex-*` rejecting layers).
pub use codex_layer_support::ResponseBody;

//! Bearer API-key authentication for tower HTTP services.
//!
//! [`RequireAuthLayer`] admits a request only if its `Authorization: Bearer <key>`
//! header names one of the configured [`ApiKey`]s, compared in constant time
//! (see [`KeySet`]). An admitted request carries an [`AuthenticatedKey`] in its
//! extensions, so rate limiting and logging further in can key on *who* called
//! without seeing the secret. Anything else gets the 401 OpenAI clients expect
//! (`code: "invalid_api_key"`, `WWW-Authenticate: Bearer`), marked with
//! [`AuthRejected`] in the response extensions for metrics. Probes can be
//! exempted with a policy ([`AuthPolicy`]), usually a closure.
//!
//! The response body is [`ResponseBody<ResBody>`](ResponseBody): the inner
//! body passes through untouched, or the 401's JSON. It is the body type of
//! every `codex-*` rejecting layer, and empty by `Default`, so tower-http's
//! CORS layer can sit directly outside this one.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use codex_auth::{ApiKey, AuthenticatedKey, KeySet, RequireAuthLayer};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeySet::new(vec![ApiKey::new("ci", "sk-test-123")]);
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         RequireAuthLayer::new(keys)
//!             .exempt(|req: &Request<Full<Bytes>>| req.uri().path() == "/healthz"),
//!     )
//!     .service(service_fn(|req: Request<Full<Bytes>>| async move {
//!         let who = req.extensions().get::<AuthenticatedKey>().map(|k| k.name.clone());
//!         assert_eq!(who.as_deref(), Some("ci"));
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
//!     }));
//!
//! let request = Request::get("/v1/models")
//!     .header("authorization", "Bearer sk-test-123")
//!     .body(Full::default())?;
//! let response = svc.clone().oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let request = Request::get("/v1/models").body(Full::default())?;
//! let response = svc.oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bearer;
mod future;
mod key;
mod layer;
mod policy;
mod rejection;
mod service;

pub use self::{
    bearer::bearer_token,
    future::ResponseFuture,
    key::{ApiKey, AuthenticatedKey, KeySet},
    layer::RequireAuthLayer,
    policy::{AuthPolicy, NoExemptions},
    rejection::AuthRejected,
    service::RequireAuth,
};

/// The response body: the inner service's, or the 401's (shared with the
/// other `codex-*` rejecting layers).
pub use codex_layer_support::ResponseBody;

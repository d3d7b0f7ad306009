//! A run-time maintenance switch for tower HTTP services.
//!
//! [`MaintenanceLayer::pair`] returns the layer and a [`MaintenanceHandle`].
//! While the handle is enabled, requests get a 503 with `Retry-After` and an
//! OpenAI-shaped body (`code: "maintenance"`), marked with
//! [`MaintenanceRejected`] in the response extensions; requests the policy
//! exempts (probes, metrics, the admin endpoint, see [`MaintenancePolicy`])
//! keep being served. Flipping the handle takes effect on the next request of
//! every connection, with no restart and no lock on the request path.
//!
//! The response body is [`ResponseBody<ResBody>`](ResponseBody): the inner
//! body passes through untouched, or the 503's JSON. It is the body type of
//! every `codex-*` rejecting layer, and empty by `Default`, so tower-http's
//! CORS layer can sit directly outside this one.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use codex_maintenance::{MaintenanceConfig, MaintenanceLayer};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (layer, handle) = MaintenanceLayer::pair(MaintenanceConfig::default());
//! let svc = ServiceBuilder::new()
//!     .layer(layer.exempt(|req: &Request<Full<Bytes>>| req.uri().path() == "/healthz"))
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
//!     }));
//!
//! let get = |path| Request::get(path).body(Full::default());
//! assert_eq!(svc.clone().oneshot(get("/v1/models")?).await?.status(), StatusCode::OK);
//!
//! handle.enable();
//! let response = svc.clone().oneshot(get("/v1/models")?).await?;
//! assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(response.headers()["retry-after"], "30");
//! assert_eq!(svc.oneshot(get("/healthz")?).await?.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
#[cfg(feature = "redis")]
mod fleet;
mod future;
mod handle;
mod layer;
mod policy;
mod rejection;
mod service;

pub use self::{
    config::MaintenanceConfig,
    future::ResponseFuture,
    handle::MaintenanceHandle,
    layer::MaintenanceLayer,
    policy::{MaintenancePolicy, NoExemptions},
    rejection::MaintenanceRejected,
    service::Maintenance,
};

#[cfg(feature = "redis")]
pub use self::fleet::FleetSwitch;

/// The response body: the inner service's, or the 503's (shared with the
/// other `codex-*` rejecting layers).
pub use codex_layer_support::ResponseBody;

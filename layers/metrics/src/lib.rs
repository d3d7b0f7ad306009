//! Prometheus HTTP metrics for a tower stack, recorded when the response *body* ends,
//! so a streamed completion counts whole.
//!
//! [`HttpMetrics::register`] creates the families in a `prometheus_client` registry;
//! [`MetricsLayer`] records into them. Labels are bounded: the route comes from a
//! closure returning `&'static str` (default `"unmatched"`), the rejection cause from a
//! closure over the response parts (typically checking marker types that rejecting
//! layers insert in the extensions).
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use codex_metrics::{encode, HttpMetrics, MetricsLayer};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use prometheus_client::registry::Registry;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut registry = Registry::default();
//! let metrics = HttpMetrics::register(&mut registry);
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         MetricsLayer::new(metrics)
//!             .route_label(|req: &Request<Full<Bytes>>| match req.uri().path() {
//!                 "/v1/chat/completions" => "/v1/chat/completions",
//!                 _ => "other",
//!             })
//!             .rejection_cause(|parts: &http::response::Parts| {
//!                 (parts.status == StatusCode::UNAUTHORIZED).then_some("auth")
//!             }),
//!     )
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hi"))))
//!     }));
//!
//! let req = Request::post("/v1/chat/completions").body(Full::default()).unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! res.into_body().collect().await.unwrap(); // the duration is recorded here
//!
//! let text = encode(&registry);
//! assert!(text.contains(
//!     r#"http_requests_total{route="/v1/chat/completions",method="POST",status="200"} 1"#
//! ));
//! assert!(text.contains(
//!     r#"http_request_duration_seconds_count{route="/v1/chat/completions",method="POST"} 1"#
//! ));
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod classify;
mod future;
mod layer;
mod metrics;
mod service;

pub use body::ResponseBody;
pub use classify::{CauseFn, NoRejections, RejectionCause, RouteFn, RouteLabel, Unmatched};
pub use future::ResponseFuture;
pub use layer::MetricsLayer;
pub use metrics::{encode, HttpMetrics, CONTENT_TYPE, DURATION_BUCKETS, TTFB_BUCKETS};
pub use service::Metrics;

#[cfg(test)]
mod tests;

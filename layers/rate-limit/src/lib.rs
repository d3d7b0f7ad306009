//! Per-key request rate limits (GCRA, via governor) with OpenAI-style 429 responses,
//! and a per-key limit on concurrent streams.
//!
//! A [`RateLimitPolicy`] picks, per request, the bucket ([`RateKey`]) and its [`Quota`];
//! the [`Limiter`] behind every clone of the layer counts the request. Allowed responses
//! get `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests` and
//! `x-ratelimit-reset-requests`; refused ones are a 429 with `Retry-After`, OpenAI's
//! error envelope (`"code": "rate_limit_exceeded"`) and [`RateLimited`] in the response
//! extensions. Memory is bounded by [`Limiter::max_keys`].
//!
//! The response body is [`ResponseBody<ResBody>`](ResponseBody): the inner body passes
//! through untouched, or the 429's JSON. It is the body type of every `codex-*` rejecting
//! layer, and empty by `Default`, so tower-http's CORS layer can sit outside a stack of
//! them with no body conversion in between.
//!
//! With the `redis` feature, `RedisLimits` keeps the buckets and the stream counts in
//! Redis, shared by every replica of a gateway (`RateLimitLayer::shared`,
//! `KeyedConcurrency::shared`); without it the crate needs neither Redis nor tokio.
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use codex_rate_limit::{Quota, RateKey, RateLimitLayer, RateLimited};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // One request per minute per `x-user` header; requests without it are not limited.
//! let policy = |req: &Request<Full<Bytes>>| {
//!     let user = req.headers().get("x-user")?.to_str().ok()?;
//!     Some(RateKey::new(user, Quota::per_minute(1)))
//! };
//! let svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(policy))
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hi"))))
//!     }));
//!
//! let req = || Request::builder().header("x-user", "alice").body(Full::default()).unwrap();
//! let first = svc.clone().oneshot(req()).await.unwrap();
//! assert_eq!(first.status(), StatusCode::OK);
//! assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "0");
//!
//! let second = svc.clone().oneshot(req()).await.unwrap();
//! assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(second.headers()["retry-after"], "60");
//! assert!(second.extensions().get::<RateLimited>().is_some());
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod concurrency;
mod future;
mod layer;
mod limiter;
mod policy;
mod quota;
#[cfg(feature = "redis")]
mod redis;
mod response;
mod service;
mod status;
mod store;

#[cfg(feature = "redis")]
pub use self::redis::{AcquireError, FailureMode, RedisLimits, RedisLimitsBuilder, RedisOp};
pub use concurrency::{ConcurrencyExceeded, ConcurrencyPermit, KeyedConcurrency};
pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub use limiter::{Limiter, DEFAULT_MAX_KEYS};
pub use policy::RateLimitPolicy;
pub use quota::{Quota, RateKey};
pub use response::{
    format_duration, X_RATELIMIT_LIMIT_REQUESTS, X_RATELIMIT_REMAINING_REQUESTS,
    X_RATELIMIT_RESET_REQUESTS,
};
pub use service::RateLimit;
pub use status::{LimiterUnavailable, RateLimitStatus, RateLimited};

/// The `redis` crate this layer was built with, for its connection types.
#[cfg(feature = "redis")]
pub use ::redis as redis_client;

/// The response body: the inner service's, or the 429's (shared with the
/// other `codex-*` rejecting layers).
pub use codex_layer_support::ResponseBody;

/// governor's clocks: [`clock::MonotonicClock`] (default) and
/// [`clock::FakeRelativeClock`] for tests.
pub use governor::clock;

#[cfg(test)]
mod tests;

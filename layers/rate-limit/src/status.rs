//! The outcome of a rate-limit check, as the client will see it in headers.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use codex_layer_support::error_body;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

/// A bucket's state after a request was counted; becomes the `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// The quota's `max` (`x-ratelimit-limit-requests`).
    pub limit: u32,
    /// Requests that could still be made right now (`x-ratelimit-remaining-requests`).
    pub remaining: u32,
    /// Time until the bucket is full again (`x-ratelimit-reset-requests`).
    ///
    /// For allowed requests this is rounded up to a whole replenish interval
    /// (`window / max`): governor reports the remaining burst, not the exact
    /// arrival time, so it may overstate the wait by less than one interval.
    pub reset: Duration,
}

/// A request was refused because its bucket is empty.
///
/// Returned by [`Limiter::check`](crate::Limiter::check) and inserted in the extensions
/// of every 429 response the layer produces, so outer layers (metrics, logs) can tell a
/// rate-limit rejection from a 429 of the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// Time until one more request would be allowed (`Retry-After`, rounded up).
    pub retry_after: Duration,
    /// The bucket's state (`remaining` is 0).
    pub status: RateLimitStatus,
}

/// A shared limiter (Redis) could not decide and its failure mode is `Closed`: the
/// request was refused.
///
/// Inserted in the extensions of the 503, so outer layers can count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimiterUnavailable;

impl LimiterUnavailable {
    /// A 503 in OpenAI's error format with `Retry-After: 1`.
    pub fn to_response(&self) -> Response<Bytes> {
        let body = error_body(
            "The rate limiter is unavailable. Please retry shortly.",
            "server_error",
            None,
            "rate_limiter_unavailable",
        );
        let mut res = Response::new(body);
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        res.extensions_mut().insert(*self);
        res
    }
}

impl fmt::Display for LimiterUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the shared rate limiter is unavailable")
    }
}

impl std::error::Error for LimiterUnavailable {}

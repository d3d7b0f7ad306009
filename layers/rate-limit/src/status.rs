//! The outcome of a rate-limit check, as the client will see it in headers.

use std::time::Duration;

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

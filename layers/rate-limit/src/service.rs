//! [`RateLimit`]: counts each request in its bucket and answers 429 when it is empty.
//!
//! The check happens in `call`, not `poll_ready`: the bucket depends on the request.
//! `poll_ready` only forwards to the inner service, so a rejected request leaves the
//! inner readiness unused for the next call, as tower-http's validation layers do.

use std::fmt;
use std::task::{Context, Poll};

use governor::clock::{Clock, MonotonicClock};
use http::{Request, Response};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::{Limiter, RateLimitPolicy, ResponseBody};

/// Rate-limits requests to `S`; built by [`RateLimitLayer`](crate::RateLimitLayer).
///
/// Allowed responses are the inner service's, with `x-ratelimit-*` headers added when
/// the request was counted. Rejections are 429 responses (never `Err`) carrying
/// [`RateLimited`](crate::RateLimited) in their extensions.
pub struct RateLimit<S, P, C: Clock = MonotonicClock> {
    inner: S,
    policy: P,
    limiter: Limiter<C>,
    #[cfg(feature = "redis")]
    shared: Option<crate::RedisLimits>,
}

impl<S, P, C: Clock> RateLimit<S, P, C> {
    /// Wraps `inner`, counting in `limiter` the buckets `policy` picks.
    pub fn new(inner: S, policy: P, limiter: Limiter<C>) -> Self {
        Self {
            inner,
            policy,
            limiter,
            #[cfg(feature = "redis")]
            shared: None,
        }
    }

    /// Counts in `shared` (every replica's common buckets) instead of the limiter.
    #[cfg(feature = "redis")]
    pub fn with_shared(mut self, shared: Option<crate::RedisLimits>) -> Self {
        self.shared = shared;
        self
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, P: Clone, C: Clock> Clone for RateLimit<S, P, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            limiter: self.limiter.clone(),
            #[cfg(feature = "redis")]
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, P: fmt::Debug, C: Clock> fmt::Debug for RateLimit<S, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<S, P, C, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, P, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    P: RateLimitPolicy<ReqBody>,
    C: Clock + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(key) = self.policy.classify(&req) else {
            return ResponseFuture::inner(self.inner.call(req), None);
        };
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared {
            let shared = shared.clone();
            let verdict = Box::pin(async move { shared.check(key).await });
            // The decision is asynchronous: the ready service goes into the future
            // and a fresh clone waits for the next `poll_ready`.
            let fresh = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, fresh);
            return ResponseFuture::deciding(verdict, ready, req);
        }
        match self.limiter.check(&key) {
            Ok(status) => ResponseFuture::inner(self.inner.call(req), Some(status)),
            Err(limited) => ResponseFuture::rejected(crate::response::too_many_requests(&limited)),
        }
    }
}

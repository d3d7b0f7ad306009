//! [`RateLimitLayer`]: wraps services in [`RateLimit`].

use governor::clock::{Clock, MonotonicClock};
use tower_layer::Layer;

use crate::{Limiter, RateLimit};

/// Applies per-key rate limits chosen by a [`RateLimitPolicy`](crate::RateLimitPolicy).
///
/// Every service this layer builds shares the layer's [`Limiter`], so limits hold
/// across hyper's per-connection clones of the stack.
pub struct RateLimitLayer<P, C: Clock = MonotonicClock> {
    policy: P,
    limiter: Limiter<C>,
    #[cfg(feature = "redis")]
    shared: Option<crate::RedisLimits>,
}

impl<P> RateLimitLayer<P> {
    /// A layer with a fresh [`Limiter`] on the monotonic clock.
    pub fn new(policy: P) -> Self {
        Self::with_limiter(policy, Limiter::new())
    }
}

impl<P, C: Clock + Clone> RateLimitLayer<P, C> {
    /// A layer counting in `limiter` (share one limiter between layers, or use a test clock).
    pub fn with_limiter(policy: P, limiter: Limiter<C>) -> Self {
        Self {
            policy,
            limiter,
            #[cfg(feature = "redis")]
            shared: None,
        }
    }

    /// Counts in Redis, shared by every replica, instead of in this process
    /// (`None` keeps the in-process limiter).
    #[cfg(feature = "redis")]
    pub fn shared(self, shared: Option<crate::RedisLimits>) -> Self {
        Self { shared, ..self }
    }

    /// Caps the number of `(key, quota)` entries kept; see [`Limiter::max_keys`].
    pub fn max_keys(self, max_keys: usize) -> Self {
        Self {
            limiter: self.limiter.clone().max_keys(max_keys),
            ..self
        }
    }

    /// The shared state, e.g. to read [`Limiter::len`].
    pub fn limiter(&self) -> &Limiter<C> {
        &self.limiter
    }
}

impl<P: Clone, C: Clock> Clone for RateLimitLayer<P, C> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            limiter: self.limiter.clone(),
            #[cfg(feature = "redis")]
            shared: self.shared.clone(),
        }
    }
}

impl<P: std::fmt::Debug, C: Clock> std::fmt::Debug for RateLimitLayer<P, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("policy", &self.policy)
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<S, P: Clone, C: Clock> Layer<S> for RateLimitLayer<P, C> {
    type Service = RateLimit<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let service = RateLimit::new(inner, self.policy.clone(), self.limiter.clone());
        #[cfg(feature = "redis")]
        let service = service.with_shared(self.shared.clone());
        service
    }
}

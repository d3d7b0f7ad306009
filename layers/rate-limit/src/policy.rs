//! Which bucket, if any, a request is counted in.
//!
//! The layer does not know what a "client" is: an API key id put in the request
//! extensions by the auth layer, a peer address, a route. The policy decides, per
//! request, so one `RateLimitLayer` can serve per-key quotas read from a keys file and
//! per-route limits at once.

use http::Request;

use crate::RateKey;

/// Decides which bucket and quota apply to a request; `None` means "not limited".
///
/// Implemented for every `Fn(&Request<B>) -> Option<RateKey> + Clone + Send + Sync + 'static`.
pub trait RateLimitPolicy<B> {
    /// The bucket of `req`, or `None` to let it through unlimited.
    fn classify(&self, req: &Request<B>) -> Option<RateKey>;
}

impl<B, F> RateLimitPolicy<B> for F
where
    F: Fn(&Request<B>) -> Option<RateKey> + Clone + Send + Sync + 'static,
{
    fn classify(&self, req: &Request<B>) -> Option<RateKey> {
        self(req)
    }
}

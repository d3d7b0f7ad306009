//! Which requests skip authentication.
//!
//! Probes (`/healthz`, `/readyz`) and the metrics scrape must answer without
//! a key, so the layer asks a policy before looking at `Authorization`. Any
//! `Fn(&Request<B>) -> bool + Clone` is a policy, so most callers pass a
//! closure to [`RequireAuthLayer::exempt`](crate::RequireAuthLayer::exempt).

use http::Request;

/// Decides whether a request may pass without a key.
pub trait AuthPolicy<B> {
    /// `true` when `request` needs no key. Exempt requests get no
    /// [`AuthenticatedKey`](crate::AuthenticatedKey).
    fn is_exempt(&self, request: &Request<B>) -> bool;
}

impl<B, F> AuthPolicy<B> for F
where
    F: Fn(&Request<B>) -> bool,
{
    fn is_exempt(&self, request: &Request<B>) -> bool {
        self(request)
    }
}

/// The default policy: every request needs a key.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoExemptions;

impl<B> AuthPolicy<B> for NoExemptions {
    fn is_exempt(&self, _request: &Request<B>) -> bool {
        false
    }
}

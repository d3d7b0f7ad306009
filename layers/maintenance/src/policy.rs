//! Which requests keep being served during maintenance.
//!
//! Health probes and the metrics scrape should keep answering while the API
//! is switched off (a failing liveness probe would get the gateway restarted,
//! which is not what maintenance is for), and so must the admin endpoint that
//! switches it back on. Any `Fn(&Request<B>) -> bool + Clone` is a policy.

use http::Request;

/// Decides whether a request is served even in maintenance mode.
pub trait MaintenancePolicy<B> {
    /// `true` when `request` should reach the inner service regardless.
    fn is_exempt(&self, request: &Request<B>) -> bool;
}

impl<B, F> MaintenancePolicy<B> for F
where
    F: Fn(&Request<B>) -> bool,
{
    fn is_exempt(&self, request: &Request<B>) -> bool {
        self(request)
    }
}

/// The default policy: maintenance turns every request away.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoExemptions;

impl<B> MaintenancePolicy<B> for NoExemptions {
    fn is_exempt(&self, _request: &Request<B>) -> bool {
        false
    }
}

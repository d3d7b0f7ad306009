//! How a request gets its `route` label and a response its rejection `cause`.
//!
//! Both are closures supplied by the gateway, which knows its routes and which marker
//! types its rejecting layers put in response extensions. They return `&'static str` so
//! label cardinality is bounded by the code: a client cannot mint new series by
//! requesting random paths.

use http::response::Parts;
use http::Request;

/// Names the route of a request for the `route` label.
///
/// Implemented for every `Fn(&Request<B>) -> &'static str`.
pub trait RouteLabel<B> {
    /// The label value; map anything unknown to one fixed value such as `"other"`.
    fn route(&self, req: &Request<B>) -> &'static str;
}

impl<B, F> RouteLabel<B> for F
where
    F: Fn(&Request<B>) -> &'static str,
{
    fn route(&self, req: &Request<B>) -> &'static str {
        self(req)
    }
}

/// The default route label: every request is `"unmatched"`.
///
/// Labelling by raw path would let clients create unbounded series.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unmatched;

impl<B> RouteLabel<B> for Unmatched {
    fn route(&self, _req: &Request<B>) -> &'static str {
        "unmatched"
    }
}

/// Tells whether a response is a rejection by some layer, and why.
///
/// Implemented for every `Fn(&http::response::Parts) -> Option<&'static str>`; a typical
/// one checks `parts.extensions` for the marker types of the auth and rate-limit layers.
pub trait RejectionCause {
    /// `Some(cause)` counts the response in `http_rejections_total{cause}`.
    fn cause(&self, parts: &Parts) -> Option<&'static str>;
}

impl<F> RejectionCause for F
where
    F: Fn(&Parts) -> Option<&'static str>,
{
    fn cause(&self, parts: &Parts) -> Option<&'static str> {
        self(parts)
    }
}

/// The default classifier: no response is a rejection.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRejections;

impl RejectionCause for NoRejections {
    fn cause(&self, _parts: &Parts) -> Option<&'static str> {
        None
    }
}

//! How a request gets its `route` label and a response its rejection `cause`.
//!
//! Both come from the gateway, which knows its routes and which marker types its
//! rejecting layers put in response extensions. They return `&'static str` so label
//! cardinality is bounded by the code: a client cannot mint new series by requesting
//! random paths.
//!
//! Closures are stored behind `Arc<dyn Fn>` ([`RouteFn`], [`CauseFn`]) rather than as
//! their own types: a closure type whose signature returns a `&'static str`, reached
//! through a blanket impl, trips a rustc limitation ("one type is more general than the
//! other") when hyper's connection future is checked for `Send` in `tokio::spawn`.
//! One indirect call per request is the price.

use std::fmt;
use std::sync::Arc;

use http::response::Parts;
use http::Request;

/// Names the route of a request for the `route` label.
pub trait RouteLabel<B> {
    /// The label value; map anything unknown to one fixed value such as `"other"`.
    fn route(&self, req: &Request<B>) -> &'static str;
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

/// A route-label closure, as set by [`MetricsLayer::route_label`](crate::MetricsLayer::route_label).
pub struct RouteFn<B>(Arc<DynRoute<B>>);

type DynRoute<B> = dyn Fn(&Request<B>) -> &'static str + Send + Sync;

impl<B> RouteFn<B> {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&Request<B>) -> &'static str + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl<B> RouteLabel<B> for RouteFn<B> {
    fn route(&self, req: &Request<B>) -> &'static str {
        (self.0)(req)
    }
}

impl<B> Clone for RouteFn<B> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<B> fmt::Debug for RouteFn<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouteFn")
    }
}

/// Tells whether a response is a rejection by some layer, and why.
pub trait RejectionCause {
    /// `Some(cause)` counts the response in `http_rejections_total{cause}`.
    fn cause(&self, parts: &Parts) -> Option<&'static str>;
}

/// The default classifier: no response is a rejection.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRejections;

impl RejectionCause for NoRejections {
    fn cause(&self, _parts: &Parts) -> Option<&'static str> {
        None
    }
}

/// A rejection-cause closure, as set by
/// [`MetricsLayer::rejection_cause`](crate::MetricsLayer::rejection_cause).
#[derive(Clone)]
pub struct CauseFn(Arc<DynCause>);

type DynCause = dyn Fn(&Parts) -> Option<&'static str> + Send + Sync;

impl CauseFn {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&Parts) -> Option<&'static str> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl RejectionCause for CauseFn {
    fn cause(&self, parts: &Parts) -> Option<&'static str> {
        (self.0)(parts)
    }
}

impl fmt::Debug for CauseFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CauseFn")
    }
}

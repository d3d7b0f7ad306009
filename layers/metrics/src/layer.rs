//! [`MetricsLayer`]: wraps services in [`Metrics`].

use http::response::Parts;
use http::Request;
use tower_layer::Layer;

use crate::{CauseFn, HttpMetrics, Metrics, NoRejections, RouteFn, Unmatched};

/// Records [`HttpMetrics`] for every request through the wrapped service.
///
/// Place it outermost among the layers whose rejections it should count, so it sees
/// their responses (and their markers) too.
#[derive(Clone, Debug)]
pub struct MetricsLayer<R = Unmatched, C = NoRejections> {
    metrics: HttpMetrics,
    route: R,
    cause: C,
}

impl MetricsLayer {
    /// Records into `metrics`, with every request labelled `route="unmatched"` and no
    /// rejection causes until [`route_label`](Self::route_label) and
    /// [`rejection_cause`](Self::rejection_cause) say otherwise.
    pub fn new(metrics: HttpMetrics) -> Self {
        Self {
            metrics,
            route: Unmatched,
            cause: NoRejections,
        }
    }
}

impl<R, C> MetricsLayer<R, C> {
    /// Labels requests with `route(&request)`, e.g. `"/v1/chat/completions"` or `"other"`.
    ///
    pub fn route_label<B>(
        self,
        route: impl Fn(&Request<B>) -> &'static str + Send + Sync + 'static,
    ) -> MetricsLayer<RouteFn<B>, C> {
        self.route(RouteFn::new(route))
    }

    /// Labels requests with a custom [`RouteLabel`](crate::RouteLabel).
    pub fn route<R2>(self, route: R2) -> MetricsLayer<R2, C> {
        MetricsLayer {
            metrics: self.metrics,
            route,
            cause: self.cause,
        }
    }

    /// Counts responses for which `cause(&parts)` is `Some` in `http_rejections_total`.
    pub fn rejection_cause(
        self,
        cause: impl Fn(&Parts) -> Option<&'static str> + Send + Sync + 'static,
    ) -> MetricsLayer<R, CauseFn> {
        self.rejections(CauseFn::new(cause))
    }

    /// Classifies rejections with a custom [`RejectionCause`](crate::RejectionCause).
    pub fn rejections<C2>(self, cause: C2) -> MetricsLayer<R, C2> {
        MetricsLayer {
            metrics: self.metrics,
            route: self.route,
            cause,
        }
    }
}

impl<S, R: Clone, C: Clone> Layer<S> for MetricsLayer<R, C> {
    type Service = Metrics<S, R, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::new(
            inner,
            self.metrics.clone(),
            self.route.clone(),
            self.cause.clone(),
        )
    }
}

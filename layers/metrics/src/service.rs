//! [`Metrics`]: labels the request and hands the recording to the response future.
//!
//! The histogram handles that depend only on the request (route, method) are resolved
//! here, before the inner service runs, so the response path only looks up what needs
//! the status.

use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower_service::Service;

use crate::future::{Pending, ResponseFuture};
use crate::metrics::{method_label, RouteLabels, RouteMethodLabels};
use crate::{HttpMetrics, RejectionCause, ResponseBody, RouteLabel};

/// Records HTTP metrics for `S`; built by [`MetricsLayer`](crate::MetricsLayer).
#[derive(Clone, Debug)]
pub struct Metrics<S, R, C> {
    inner: S,
    metrics: HttpMetrics,
    route: R,
    cause: C,
}

impl<S, R, C> Metrics<S, R, C> {
    /// Wraps `inner`.
    pub fn new(inner: S, metrics: HttpMetrics, route: R, cause: C) -> Self {
        Self {
            inner,
            metrics,
            route,
            cause,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, R, C, ReqBody, ResBody> Service<Request<ReqBody>> for Metrics<S, R, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RouteLabel<ReqBody>,
    C: RejectionCause + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let route = self.route.route(&req);
        let method = method_label(req.method());
        let families = &self.metrics.families;
        let pending = Pending {
            start,
            route,
            method,
            duration: Some(
                families
                    .duration
                    .get_or_create_owned(&RouteMethodLabels { route, method }),
            ),
            ttfb: Some(families.ttfb.get_or_create_owned(&RouteLabels { route })),
            metrics: self.metrics.clone(),
            cause: self.cause.clone(),
        };
        ResponseFuture::new(self.inner.call(req), pending)
    }
}

//! [`ResponseFuture`]: counts the response when its headers arrive and passes the body
//! recording on to [`ResponseBody`].

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Response};
use pin_project_lite::pin_project;
use prometheus_client::metrics::histogram::Histogram;

use crate::body::Recorder;
use crate::metrics::{CauseLabels, RequestLabels, RouteLabels, Status};
use crate::{HttpMetrics, RejectionCause, ResponseBody};

pin_project! {
    /// Response future of [`Metrics`](crate::Metrics).
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: F,
        pending: Pending<C>,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(inner: F, pending: Pending<C>) -> Self {
        Self { inner, pending }
    }
}

/// What is known before the response: when, which route and method, and the handles.
pub(crate) struct Pending<C> {
    pub(crate) start: Instant,
    pub(crate) route: &'static str,
    pub(crate) method: &'static str,
    /// `Some` until the outcome is recorded or handed to the body.
    pub(crate) duration: Option<Histogram>,
    pub(crate) ttfb: Option<Histogram>,
    pub(crate) metrics: HttpMetrics,
    pub(crate) cause: C,
}

impl<C> Pending<C> {
    fn count(&self, status: Status) {
        self.metrics
            .families
            .requests
            .get_or_create(&RequestLabels {
                route: self.route,
                method: self.method,
                status,
            })
            .inc();
    }
}

impl<C> Drop for Pending<C> {
    // hyper drops the future when the client goes away before the response headers
    // (a long non-streaming completion): still a request, and it still took time.
    fn drop(&mut self) {
        if let Some(duration) = self.duration.take() {
            self.count(Status::Canceled);
            duration.observe(self.start.elapsed().as_secs_f64());
        }
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: RejectionCause,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let pending = this.pending;
        let duration = pending
            .duration
            .take()
            .expect("ResponseFuture polled after completion");
        match result {
            Ok(res) => {
                let (parts, body) = res.into_parts();
                pending.count(Status::Code(parts.status.as_u16()));
                let families = &pending.metrics.families;
                if let Some(cause) = pending.cause.cause(&parts) {
                    families
                        .rejections
                        .get_or_create(&CauseLabels { cause })
                        .inc();
                }
                let stream = is_event_stream(&parts.headers).then(|| {
                    let open = families.streams_open.get_or_create_owned(&RouteLabels {
                        route: pending.route,
                    });
                    open.inc();
                    open
                });
                let recorder = Recorder::new(pending.start, duration, pending.ttfb.take(), stream);
                Poll::Ready(Ok(Response::from_parts(
                    parts,
                    ResponseBody::new(body, recorder),
                )))
            }
            Err(err) => {
                pending.count(Status::Error);
                duration.observe(pending.start.elapsed().as_secs_f64());
                Poll::Ready(Err(err))
            }
        }
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_detection_ignores_case_and_parameters() {
        let mut h = HeaderMap::new();
        assert!(!is_event_stream(&h));
        h.insert(CONTENT_TYPE, "text/event-stream".parse().unwrap());
        assert!(is_event_stream(&h));
        h.insert(
            CONTENT_TYPE,
            "Text/Event-Stream; charset=utf-8".parse().unwrap(),
        );
        assert!(is_event_stream(&h));
        h.insert(CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(!is_event_stream(&h));
    }
}

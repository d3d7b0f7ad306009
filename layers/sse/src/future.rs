//! The response future: rewrites the response once the inner service answers.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, Response};
use pin_project_lite::pin_project;

use crate::sse_body::BodySettings;
use crate::{Framing, Payload, ResponseBody, SseBody};

static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

pin_project! {
    /// Response future of [`Sse`](crate::Sse).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        settings: Option<BodySettings>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, settings: BodySettings) -> Self {
        Self {
            inner,
            settings: Some(settings),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Payload<B>>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let (mut parts, payload) = response.into_parts();
        let body = match payload {
            Payload::Body(body) => ResponseBody::body(body),
            Payload::Events(events) => {
                let headers = &mut parts.headers;
                let content_type = match events.framing() {
                    Framing::Sse => "text/event-stream",
                    Framing::Ndjson => "application/x-ndjson",
                };
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                headers.insert(X_ACCEL_BUFFERING.clone(), HeaderValue::from_static("no"));
                // The length of a stream is unknown; a stale value would make
                // the client stop reading early or wait forever.
                headers.remove(CONTENT_LENGTH);
                let settings = this.settings.take().unwrap_or_default();
                ResponseBody::events(SseBody::with_settings(events, settings))
            }
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

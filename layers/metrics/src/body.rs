//! [`ResponseBody`]: records duration, time to first byte and open streams as the body
//! is consumed.
//!
//! A completion stream's headers go out as soon as the model starts; what matters is
//! when its last token does. So the duration is observed when the body ends, fails, or
//! is dropped (the client went away), whichever comes first, and exactly once.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

pin_project! {
    /// Response body of [`Metrics`](crate::Metrics): the inner body, unchanged, plus
    /// the recording of its end.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        recorder: Recorder,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, recorder: Recorder) -> Self {
        Self { inner, recorder }
    }
}

/// Each handle is taken when used, so every observation happens at most once; `Drop`
/// covers the bodies that never reach their end.
pub(crate) struct Recorder {
    start: Instant,
    duration: Option<Histogram>,
    ttfb: Option<Histogram>,
    stream: Option<Gauge>,
}

impl Recorder {
    pub(crate) fn new(
        start: Instant,
        duration: Histogram,
        ttfb: Option<Histogram>,
        stream: Option<Gauge>,
    ) -> Self {
        Self {
            start,
            duration: Some(duration),
            ttfb,
            stream,
        }
    }

    fn first_byte(&mut self) {
        if let Some(ttfb) = self.ttfb.take() {
            ttfb.observe(self.start.elapsed().as_secs_f64());
        }
    }

    fn finish(&mut self) {
        if let Some(duration) = self.duration.take() {
            duration.observe(self.start.elapsed().as_secs_f64());
        }
        if let Some(open) = self.stream.take() {
            open.dec();
        }
        self.ttfb = None;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if frame.data_ref().is_some_and(|d| d.has_remaining()) {
                    this.recorder.first_byte();
                }
                // hyper stops polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.recorder.finish();
                }
            }
            Some(Err(_)) | None => this.recorder.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

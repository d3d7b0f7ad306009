//! The layer's response body: the inner body untouched, or an SSE stream.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::SseBody;

pin_project! {
    /// Response body of [`Sse`](crate::Sse): either the inner service's body,
    /// passed through frame by frame, or an [`SseBody`].
    ///
    /// Its error type is the inner body's `B::Error`: the event path cannot
    /// fail, so no boxing is needed.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Body { #[pin] body: B },
        Events { body: SseBody },
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    pub(crate) fn body(body: B) -> Self {
        Self {
            kind: Kind::Body { body },
        }
    }

    pub(crate) fn events(body: SseBody) -> Self {
        Self {
            kind: Kind::Events { body },
        }
    }

    /// Whether this body is an event stream (the inner service returned
    /// `Payload::Events`).
    pub fn is_event_stream(&self) -> bool {
        matches!(self.kind, Kind::Events { .. })
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Body { body } => body.poll_frame(cx),
            KindProj::Events { body } => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Body { body } => body.is_end_stream(),
            Kind::Events { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Body { body } => body.size_hint(),
            Kind::Events { body } => body.size_hint(),
        }
    }
}

impl<B: fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Body { body } => f.debug_tuple("ResponseBody::Body").field(body).finish(),
            Kind::Events { body } => f.debug_tuple("ResponseBody::Events").field(body).finish(),
        }
    }
}

//! [`ResponseBody`]: the inner service's body, or a small body the layer
//! answered with itself.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// Response body of the `codex-*` rejecting layers.
    ///
    /// Either the inner service's body, passed through untouched, or a
    /// complete body the layer produced itself (a rejection's error
    /// envelope). Every rejecting layer answers with this one type, so a
    /// stack of them needs no body erasure between them.
    ///
    /// [`Default`] is an empty body, whatever `B` is. That is what lets a
    /// layer further out that needs `ResBody: Default`, such as tower-http's
    /// CORS layer answering a preflight, sit directly on top of a rejecting
    /// layer.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { #[pin] body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// The inner service's body, passed through untouched.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A complete body of `bytes`.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                body: Full::new(bytes),
            },
        }
    }
}

impl<B> Default for ResponseBody<B> {
    /// An empty body (`Content-Length: 0`), without requiring `B: Default`.
    fn default() -> Self {
        Self::full(Bytes::new())
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
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;

    async fn collect<B>(body: B) -> Bytes
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Debug,
    {
        body.collect().await.unwrap().to_bytes()
    }

    /// An inner body that plays back `frames`, with no size known up front.
    struct Scripted(VecDeque<Result<Frame<Bytes>, &'static str>>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    #[tokio::test]
    async fn default_is_empty_and_says_so_up_front() {
        // `Scripted` has no `Default`: the empty body does not need one.
        let body = ResponseBody::<Scripted>::default();
        // hyper sends `Content-Length: 0` for it, as for a CORS preflight.
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(collect(body).await.is_empty());
    }

    #[tokio::test]
    async fn full_body_has_its_exact_length() {
        let body = ResponseBody::<Scripted>::full(Bytes::from_static(b"{\"error\":{}}"));
        assert_eq!(body.size_hint().exact(), Some(12));
        assert_eq!(&collect(body).await[..], b"{\"error\":{}}");
    }

    #[tokio::test]
    async fn inner_frames_errors_and_size_pass_through() {
        let frames = [Ok(Frame::data(Bytes::from_static(b"one"))), Err("reset")];
        let mut body = ResponseBody::new(Scripted(frames.into()));
        assert_eq!(body.size_hint().exact(), None);
        assert!(!body.is_end_stream());
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "one");
        assert_eq!(body.frame().await.unwrap().unwrap_err(), "reset");

        let body = ResponseBody::new(Full::new(Bytes::from_static(b"inner")));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(&collect(body).await[..], b"inner");
    }
}

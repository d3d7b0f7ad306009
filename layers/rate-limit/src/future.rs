//! [`ResponseFuture`]: the inner response with rate-limit headers, or a ready 429.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use codex_layer_support::RejectOr;
use http::Response;
use pin_project_lite::pin_project;

use crate::{RateLimitStatus, ResponseBody};

pin_project! {
    /// Response future of [`RateLimit`](crate::RateLimit).
    ///
    /// The reject-or-forward future the `codex-*` rejecting layers share, plus
    /// the one thing this layer adds to a response it lets through: the
    /// `x-ratelimit-*` headers of the bucket the request was counted in.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: RejectOr<F>,
        // `None` when the request was not counted, and for the 429, which
        // carries the headers already.
        status: Option<RateLimitStatus>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F, status: Option<RateLimitStatus>) -> Self {
        Self {
            inner: RejectOr::inner(future),
            status,
        }
    }

    pub(crate) fn rejected(response: Response<Bytes>) -> Self {
        Self {
            inner: RejectOr::rejected(response),
            status: None,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(status) = this.status.take() {
            crate::response::insert_headers(res.headers_mut(), &status);
        }
        Poll::Ready(Ok(res))
    }
}

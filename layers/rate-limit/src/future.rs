//! [`ResponseFuture`]: the inner response with rate-limit headers, or a ready 429.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;

use crate::RateLimitStatus;

pin_project! {
    /// Response future of [`RateLimit`](crate::RateLimit).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner {
            #[pin]
            future: F,
            status: Option<RateLimitStatus>,
        },
        Rejected {
            response: Option<Response<Full<Bytes>>>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F, status: Option<RateLimitStatus>) -> Self {
        Self {
            kind: Kind::Inner { future, status },
        }
    }

    pub(crate) fn rejected(response: Response<Full<Bytes>>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, status } => {
                let mut res = ready!(future.poll(cx))?;
                if let Some(status) = status.take() {
                    crate::response::insert_headers(res.headers_mut(), &status);
                }
                Poll::Ready(Ok(res.map(Either::Left)))
            }
            KindProj::Rejected { response } => {
                let res = response
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Ok(res.map(Either::Right)))
            }
        }
    }
}

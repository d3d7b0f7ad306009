//! [`RejectOr`]: either the inner service's response or a ready rejection.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Response;
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;

pin_project! {
    /// The response future of a layer that either forwards a request or
    /// rejects it with a ready response.
    ///
    /// Resolves to the inner response with its body untouched
    /// (`Either::Left`) or to the rejection (`Either::Right`).
    #[derive(Debug)]
    pub struct RejectOr<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<Full<Bytes>>> },
    }
}

impl<F> RejectOr<F> {
    /// Forwards to the inner service's future.
    pub fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    /// Resolves at once to `response`.
    pub fn rejected(response: Response<Full<Bytes>>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for RejectOr<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future
                .poll(cx)
                .map_ok(|response| response.map(Either::Left)),
            KindProj::Rejected { response } => {
                let response = response.take().expect("RejectOr polled after completion");
                Poll::Ready(Ok(response.map(Either::Right)))
            }
        }
    }
}

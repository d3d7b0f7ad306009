//! [`RejectOr`]: either the inner service's response or a ready rejection.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;

use crate::ResponseBody;

pin_project! {
    /// The response future of a layer that either forwards a request or
    /// rejects it with a ready response.
    ///
    /// Resolves to the inner response with its body untouched
    /// ([`ResponseBody::new`]) or to the rejection ([`ResponseBody::full`]).
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
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<F> RejectOr<F> {
    /// Forwards to the inner service's future.
    pub fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    /// Resolves at once to `response`, whose body is sent as it is.
    pub fn rejected(response: Response<Bytes>) -> Self {
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
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future
                .poll(cx)
                .map_ok(|response| response.map(ResponseBody::new)),
            KindProj::Rejected { response } => {
                let response = response.take().expect("RejectOr polled after completion");
                Poll::Ready(Ok(response.map(ResponseBody::full)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, future::ready};

    use http::{header::CONTENT_TYPE, StatusCode};
    use http_body_util::{BodyExt, Full};

    use super::*;

    type Inner = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

    #[derive(Clone, Debug, PartialEq)]
    struct Marker;

    #[tokio::test]
    async fn inner_response_keeps_its_parts_and_body() {
        let inner = Response::builder()
            .status(StatusCode::CREATED)
            .header(CONTENT_TYPE, "text/plain")
            .extension(Marker)
            .body(Full::new(Bytes::from_static(b"made")))
            .unwrap();
        let response = RejectOr::inner(ready(Ok::<_, Infallible>(inner)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/plain");
        assert_eq!(response.extensions().get(), Some(&Marker));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "made");
    }

    #[tokio::test]
    async fn rejection_keeps_its_parts_and_body() {
        let rejection = Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .extension(Marker)
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let response = RejectOr::<Inner>::rejected(rejection).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.extensions().get(), Some(&Marker));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "{}");
    }
}

//! [`ResponseFuture`]: the inner response with rate-limit headers, or a ready 429.
//!
//! With a shared (Redis) limiter the decision is asynchronous: the future first waits
//! for it, holding the request and the inner service that `poll_ready` made ready, and
//! then calls that service or answers the rejection.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use codex_layer_support::RejectOr;
use http::Response;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{LimiterUnavailable, RateLimitStatus, RateLimited, ResponseBody};

/// A decision: allowed (with the bucket's state when it was counted), or why not.
/// Only a shared (asynchronous) limiter produces one.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Verdict {
    Allowed(Option<RateLimitStatus>),
    Limited(RateLimited),
    /// A shared limiter could not decide and fails closed.
    Unavailable,
}

/// A decision in flight, boxed so [`ResponseFuture`] names no backend type.
pub(crate) type PendingVerdict = Pin<Box<dyn Future<Output = Verdict> + Send>>;

pin_project! {
    /// Response future of [`RateLimit`](crate::RateLimit).
    ///
    /// The reject-or-forward future the `codex-*` rejecting layers share, plus
    /// the one thing this layer adds to a response it lets through: the
    /// `x-ratelimit-*` headers of the bucket the request was counted in.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        // Waiting for a shared limiter; `service` is the ready one taken out of
        // the `RateLimit` in `call`.
        Deciding {
            verdict: PendingVerdict,
            service: Option<S>,
            request: Option<Req>,
        },
        Decided {
            #[pin]
            inner: RejectOr<S::Future>,
            // `None` when the request was not counted, and for the 429, which
            // carries the headers already.
            status: Option<RateLimitStatus>,
        },
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn inner(future: S::Future, status: Option<RateLimitStatus>) -> Self {
        Self {
            state: State::Decided {
                inner: RejectOr::inner(future),
                status,
            },
        }
    }

    pub(crate) fn rejected(response: Response<Bytes>) -> Self {
        Self {
            state: State::Decided {
                inner: RejectOr::rejected(response),
                status: None,
            },
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn deciding(verdict: PendingVerdict, service: S, request: Req) -> Self {
        Self {
            state: State::Deciding {
                verdict,
                service: Some(service),
                request: Some(request),
            },
        }
    }
}

impl<S, Req, B> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Response = Response<B>>,
{
    type Output = Result<Response<ResponseBody<B>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Deciding {
                    verdict,
                    service,
                    request,
                } => {
                    let verdict = ready!(verdict.as_mut().poll(cx));
                    let next = match verdict {
                        Verdict::Allowed(status) => {
                            let mut service = service.take().expect("polled after completion");
                            let request = request.take().expect("polled after completion");
                            State::Decided {
                                inner: RejectOr::inner(service.call(request)),
                                status,
                            }
                        }
                        Verdict::Limited(limited) => State::Decided {
                            inner: RejectOr::rejected(crate::response::too_many_requests(&limited)),
                            status: None,
                        },
                        Verdict::Unavailable => State::Decided {
                            inner: RejectOr::rejected(LimiterUnavailable.to_response()),
                            status: None,
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Decided { inner, status } => {
                    let mut res = ready!(inner.poll(cx))?;
                    if let Some(status) = status.take() {
                        crate::response::insert_headers(res.headers_mut(), &status);
                    }
                    return Poll::Ready(Ok(res));
                }
            }
        }
    }
}

impl<S: Service<Req>, Req> std::fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

//! CORS for the requests that take part in it.
//!
//! The CORS protocol is a browser's: a cross-origin request carries
//! `Origin`, and a preflight is an `OPTIONS` with `Origin`. tower-http's
//! `Cors` answers every request, so an SDK or curl request got three
//! `access-control-*`/`vary` headers it never reads, a header map built for
//! them, and, on a stream, a response header map grown past hyper's first
//! size (6 entries) that hyper keeps for the connection's next request: about
//! 650 bytes of every open stream. `CorsForBrowsers` hands a request to
//! `Cors` only when it has an `Origin` or is an `OPTIONS`; the others go
//! straight to the inner service and their answer says `vary: origin`,
//! because it would differ with one.

use std::task::{Context, Poll};

use futures_util::future::{Either, MapOk};
use futures_util::TryFutureExt;
use http::{header, HeaderValue, Method, Request, Response};
use tower::{Layer, Service};
use tower_http::cors::{Cors, CorsLayer};

/// Wraps a service in [`CorsForBrowsers`].
#[derive(Clone, Debug)]
pub struct CorsForBrowsersLayer {
    cors: CorsLayer,
}

impl CorsForBrowsersLayer {
    /// `cors` answers the browsers' requests; it should list `Origin` in its
    /// `vary`, since the answers differ by whether one was sent.
    pub fn new(cors: CorsLayer) -> Self {
        Self { cors }
    }
}

impl<S> Layer<S> for CorsForBrowsersLayer {
    type Service = CorsForBrowsers<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorsForBrowsers {
            cors: self.cors.layer(inner),
        }
    }
}

/// `Cors` for requests with `Origin` and for `OPTIONS`; the rest bypass it.
#[derive(Clone, Debug)]
pub struct CorsForBrowsers<S> {
    cors: Cors<S>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CorsForBrowsers<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<
        <Cors<S> as Service<Request<ReqBody>>>::Future,
        MapOk<S::Future, fn(Response<ResBody>) -> Response<ResBody>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both paths call the same inner service, which is what `Cors`
        // polls too.
        self.cors.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if req.method() == Method::OPTIONS || req.headers().contains_key(header::ORIGIN) {
            Either::Left(self.cors.call(req))
        } else {
            Either::Right(self.cors.get_mut().call(req).map_ok(vary_on_origin))
        }
    }
}

/// The answer to a request without `Origin`, marked as one.
fn vary_on_origin<B>(mut res: Response<B>) -> Response<B> {
    res.headers_mut()
        .append(header::VARY, HeaderValue::from_static("origin"));
    res
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http::HeaderName;
    use tower::ServiceExt;
    use tower_http::cors::AllowOrigin;

    use super::*;

    fn cors() -> CorsLayer {
        CorsLayer::new()
            .allow_origin(AllowOrigin::any())
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
            .expose_headers([HeaderName::from_static("x-request-id")])
            .max_age(Duration::from_secs(600))
            .vary([header::ORIGIN, header::ACCESS_CONTROL_REQUEST_HEADERS])
    }

    /// An inner service that answers every request 200 with an empty body,
    /// so whatever else the answer carries came from the layer.
    fn service() -> CorsForBrowsers<
        impl Service<Request<()>, Response = Response<String>, Error = Infallible> + Clone,
    > {
        CorsForBrowsersLayer::new(cors()).layer(tower::service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }))
    }

    async fn answer(req: Request<()>) -> Response<String> {
        service().oneshot(req).await.unwrap()
    }

    fn header<'a>(res: &'a Response<String>, name: &str) -> Option<&'a str> {
        res.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn a_request_without_origin_gets_no_cors_headers_and_varies_on_origin() {
        let res = answer(Request::post("/v1/chat/completions").body(()).unwrap()).await;
        assert_eq!(header(&res, "access-control-allow-origin"), None);
        assert_eq!(header(&res, "access-control-expose-headers"), None);
        let vary: Vec<_> = res.headers().get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["origin"]);
    }

    #[tokio::test]
    async fn a_cross_origin_request_gets_the_cors_headers() {
        let res = answer(
            Request::post("/v1/chat/completions")
                .header(header::ORIGIN, "https://app.example")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            header(&res, "access-control-expose-headers"),
            Some("x-request-id")
        );
        assert_eq!(
            header(&res, "vary"),
            Some("origin, access-control-request-headers")
        );
    }

    #[tokio::test]
    async fn a_preflight_is_answered_by_cors() {
        let res = answer(
            Request::options("/v1/chat/completions")
                .header(header::ORIGIN, "https://app.example")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(
                    header::ACCESS_CONTROL_REQUEST_HEADERS,
                    "authorization, x-stainless-os",
                )
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            header(&res, "access-control-allow-headers"),
            Some("authorization, x-stainless-os")
        );
        assert_eq!(header(&res, "access-control-max-age"), Some("600"));
    }

    #[tokio::test]
    async fn an_options_without_origin_still_goes_through_cors() {
        // Not a preflight by the spec, but answered as one, as before: an
        // OPTIONS never reaches the API.
        let res = answer(Request::options("/v1/models").body(()).unwrap()).await;
        assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));
        assert!(header(&res, "access-control-allow-methods").is_some());
    }
}

//! [`Maintenance`]: turns requests away while the switch is on.
//!
//! The switch is read in `call`, not `poll_ready`: a service made ready just
//! before maintenance starts still answers 503, and one made ready just before
//! it ends serves normally. Readiness stays the inner service's. The 503 is a
//! response (hyper would drop the connection on an `Err`), so `S::Error`
//! passes through unchanged.

use std::{
    fmt,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use crate::{
    rejection, MaintenanceHandle, MaintenancePolicy, NoExemptions, ResponseBody, ResponseFuture,
};

/// Answers 503 with `Retry-After` while its [`MaintenanceHandle`] is enabled,
/// except for requests its policy exempts. Built by
/// [`MaintenanceLayer`](crate::MaintenanceLayer).
#[derive(Clone)]
pub struct Maintenance<S, P = NoExemptions> {
    inner: S,
    handle: MaintenanceHandle,
    policy: P,
}

impl<S, P> Maintenance<S, P> {
    /// Wraps `inner`, switched by `handle`, exempting what `policy` says.
    pub fn new(inner: S, handle: MaintenanceHandle, policy: P) -> Self {
        Self {
            inner,
            handle,
            policy,
        }
    }

    /// The switch this service follows.
    pub fn handle(&self) -> &MaintenanceHandle {
        &self.handle
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for Maintenance<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: MaintenancePolicy<ReqBody>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if self.handle.is_enabled() && !self.policy.is_exempt(&request) {
            let notice = self.handle.notice();
            let retry_after = self.handle.retry_after().clone();
            return ResponseFuture::rejected(rejection::response(notice.body, retry_after));
        }
        ResponseFuture::inner(self.inner.call(request))
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Maintenance<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maintenance")
            .field("inner", &self.inner)
            .field("handle", &self.handle)
            .field("policy", &std::any::type_name::<P>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{
        header::{CONTENT_TYPE, RETRY_AFTER},
        StatusCode,
    };
    use http_body_util::{BodyExt, Full};
    use tower::{service_fn, ServiceBuilder, ServiceExt};
    use tower_test::mock;

    use super::*;
    use crate::{MaintenanceConfig, MaintenanceLayer, MaintenanceRejected};

    type Body = Full<Bytes>;

    fn ok(
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = impl Send>
           + Clone
           + Send {
        service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"served"))))
        })
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Full::default()).unwrap()
    }

    async fn body_json<B>(response: Response<B>) -> serde_json::Value
    where
        B: http_body::Body,
        B::Error: fmt::Debug,
    {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn disabled_passes_requests_through_untouched() {
        let (layer, handle) = MaintenanceLayer::pair(MaintenanceConfig::default());
        assert!(!handle.is_enabled());
        let svc = ServiceBuilder::new().layer(layer).service(ok());

        let res = svc.oneshot(get("/v1/models")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.extensions().get::<MaintenanceRejected>().is_none());
        assert!(res.headers().get(RETRY_AFTER).is_none());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"served");
    }

    #[tokio::test]
    async fn enabled_answers_503_with_retry_after_and_envelope() {
        let (layer, _handle) = MaintenanceLayer::pair(MaintenanceConfig {
            enabled: true,
            retry_after_secs: 120,
            ..MaintenanceConfig::default()
        });
        let svc = ServiceBuilder::new().layer(layer).service(ok());

        let res = svc.oneshot(get("/v1/chat/completions")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[RETRY_AFTER], "120");
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            res.extensions().get::<MaintenanceRejected>(),
            Some(&MaintenanceRejected)
        );
        assert_eq!(
            body_json(res).await,
            serde_json::json!({"error": {
                "message": "The service is under maintenance. Please retry later.",
                "type": "service_unavailable",
                "param": null,
                "code": "maintenance",
            }})
        );
    }

    #[tokio::test]
    async fn handle_flips_every_clone_of_the_stack_at_run_time() {
        let (layer, handle) = MaintenanceLayer::pair(MaintenanceConfig::default());
        let first = ServiceBuilder::new().layer(layer.clone()).service(ok());
        // A service built later from the same layer, as hyper does per connection.
        let second = ServiceBuilder::new().layer(layer).service(ok());

        handle.enable();
        handle.set_message("Upgrading; back at 12:00 UTC.");
        for svc in [first.clone(), second.clone()] {
            let res = svc.oneshot(get("/v1/models")).await.unwrap();
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(res.headers()[RETRY_AFTER], "30");
            assert_eq!(
                body_json(res).await["error"]["message"],
                "Upgrading; back at 12:00 UTC."
            );
        }

        handle.clone().disable();
        for svc in [first, second] {
            let res = svc.oneshot(get("/v1/models")).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn exempt_requests_are_served_during_maintenance() {
        let (layer, handle) = MaintenanceLayer::pair(MaintenanceConfig {
            enabled: true,
            ..MaintenanceConfig::default()
        });
        let layer =
            layer.exempt(|req: &Request<Body>| matches!(req.uri().path(), "/healthz" | "/metrics"));
        let svc = ServiceBuilder::new().layer(layer).service(ok());

        for path in ["/healthz", "/metrics"] {
            let res = svc.clone().oneshot(get(path)).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
        }
        let res = svc.clone().oneshot(get("/v1/models")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

        handle.disable();
        let res = svc.oneshot(get("/v1/models")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn switch_is_read_at_call_time_and_rejections_skip_the_inner_service() {
        let (layer, handle) = MaintenanceLayer::pair(MaintenanceConfig::default());
        let (mut svc, mut inner) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(layer);
        inner.allow(1);

        // Ready while off, then maintenance starts before the call.
        assert!(svc.poll_ready().is_ready());
        handle.enable();
        let res = svc.call(get("/v1/models")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            inner.poll_request().is_pending(),
            "inner saw a rejected request"
        );

        // The readiness it had is still there for the next call.
        handle.disable();
        assert!(svc.poll_ready().is_ready());
        let pending = svc.call(get("/v1/models"));
        let (request, respond) = inner.next_request().await.unwrap();
        assert_eq!(request.uri(), "/v1/models");
        respond.send_response(Response::new(Full::default()));
        assert_eq!(pending.await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_toggling_while_serving() {
        let (layer, handle) = MaintenanceLayer::pair(MaintenanceConfig::default());
        let svc = ServiceBuilder::new().layer(layer).service(ok());

        let toggler = {
            let handle = handle.clone();
            tokio::spawn(async move {
                for n in 0..500 {
                    handle.set(n % 2 == 0);
                    handle.set_message(format!("window {}", n % 3));
                    tokio::task::yield_now().await;
                }
            })
        };
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let mut seen = [0u32; 2];
                    for _ in 0..250 {
                        let res = svc.clone().oneshot(get("/v1/models")).await.unwrap();
                        match res.status() {
                            StatusCode::OK => seen[0] += 1,
                            StatusCode::SERVICE_UNAVAILABLE => {
                                seen[1] += 1;
                                let message = body_json(res).await["error"]["message"].clone();
                                let message = message.as_str().unwrap().to_owned();
                                assert!(
                                    message.starts_with("window ")
                                        || message.contains("under maintenance"),
                                    "{message}"
                                );
                            }
                            other => panic!("unexpected status {other}"),
                        }
                        tokio::task::yield_now().await;
                    }
                    seen
                })
            })
            .collect();
        toggler.await.unwrap();
        for caller in callers {
            let [served, rejected] = caller.await.unwrap();
            assert_eq!(served + rejected, 250);
        }

        // After the storm, the last write decides.
        handle.enable();
        let res = svc.clone().oneshot(get("/v1/models")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        handle.disable();
        let res = svc.oneshot(get("/v1/models")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

//! [`RequireAuth`]: checks the bearer key of each request.
//!
//! The check happens in `call`, not `poll_ready`: readiness is the inner
//! service's, and a rejected request simply leaves that readiness unused for
//! the next call on this instance. Rejections are responses (hyper would drop
//! the connection on an `Err`), so `S::Error` passes through unchanged.

use std::{
    fmt,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use crate::{
    bearer::bearer_token, AuthPolicy, AuthRejected, AuthenticatedKey, KeySet, NoExemptions,
    ResponseBody, ResponseFuture,
};

/// Admits requests carrying one of the configured bearer keys, inserting
/// [`AuthenticatedKey`] into their extensions; answers others with a 401.
/// Built by [`RequireAuthLayer`](crate::RequireAuthLayer).
#[derive(Clone)]
pub struct RequireAuth<S, P = NoExemptions> {
    inner: S,
    keys: KeySet,
    policy: P,
}

impl<S> RequireAuth<S> {
    /// Wraps `inner`, requiring one of `keys` on every request.
    pub fn new(inner: S, keys: KeySet) -> Self {
        Self {
            inner,
            keys,
            policy: NoExemptions,
        }
    }
}

impl<S, P> RequireAuth<S, P> {
    /// Lets requests for which `policy` answers `true` pass without a key.
    pub fn exempt<Q>(self, policy: Q) -> RequireAuth<S, Q> {
        RequireAuth {
            inner: self.inner,
            keys: self.keys,
            policy,
        }
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

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for RequireAuth<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: AuthPolicy<ReqBody>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Only this layer may vouch for an identity.
        request.extensions_mut().remove::<AuthenticatedKey>();

        if self.policy.is_exempt(&request) {
            return ResponseFuture::inner(self.inner.call(request));
        }
        let name = match bearer_token(request.headers()) {
            None => return ResponseFuture::rejected(AuthRejected::MissingKey.into_response()),
            Some(token) => match self.keys.lookup(token) {
                None => return ResponseFuture::rejected(AuthRejected::InvalidKey.into_response()),
                Some(name) => name,
            },
        };
        request.extensions_mut().insert(AuthenticatedKey { name });
        ResponseFuture::inner(self.inner.call(request))
    }
}

impl<S: fmt::Debug, P> fmt::Debug for RequireAuth<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireAuth")
            .field("inner", &self.inner)
            .field("keys", &self.keys)
            .field("policy", &std::any::type_name::<P>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{
        header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE},
        StatusCode,
    };
    use http_body_util::{BodyExt, Full};
    use tower::{service_fn, ServiceBuilder, ServiceExt};
    use tower_test::mock;

    use super::*;
    use crate::{ApiKey, RequireAuthLayer};

    type Body = Full<Bytes>;

    fn keys() -> KeySet {
        KeySet::new(vec![
            ApiKey::new("alice", "sk-alice-0000"),
            ApiKey::new("bob", "sk-b"),
        ])
    }

    /// Echoes the authenticated key's name, or `-` for none.
    fn whoami(
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = impl Send>
           + Clone {
        service_fn(|req: Request<Body>| async move {
            let name = req
                .extensions()
                .get::<AuthenticatedKey>()
                .map_or_else(|| "-".to_owned(), |k| k.name().to_owned());
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
        })
    }

    fn get(path: &str, authorization: Option<&str>) -> Request<Body> {
        let mut builder = Request::get(path);
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(Full::default()).unwrap()
    }

    async fn body_text<B>(response: Response<B>) -> String
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn valid_key_reaches_inner_with_its_identity() {
        let svc = ServiceBuilder::new()
            .layer(RequireAuthLayer::new(keys()))
            .service(whoami());

        for (header, who) in [
            ("Bearer sk-alice-0000", "alice"),
            ("bearer sk-b", "bob"),
            ("  BEARER   sk-b \t", "bob"),
        ] {
            let res = svc
                .clone()
                .oneshot(get("/v1/models", Some(header)))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{header}");
            assert!(res.extensions().get::<AuthRejected>().is_none());
            assert_eq!(body_text(res).await, who, "{header}");
        }
    }

    #[tokio::test]
    async fn missing_key_is_401_with_openai_envelope() {
        let svc = ServiceBuilder::new()
            .layer(RequireAuthLayer::new(keys()))
            .service(whoami());

        for header in [None, Some("Basic c2stYjo="), Some("Bearer "), Some("sk-b")] {
            let res = svc
                .clone()
                .oneshot(get("/v1/chat/completions", header))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{header:?}");
            assert_eq!(res.headers()[WWW_AUTHENTICATE], "Bearer");
            assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
            assert_eq!(
                res.extensions().get::<AuthRejected>(),
                Some(&AuthRejected::MissingKey)
            );
            let body: serde_json::Value = serde_json::from_str(&body_text(res).await).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"error": {
                    "message": "You didn't provide an API key. Provide it as a Bearer token in the Authorization header.",
                    "type": "invalid_request_error",
                    "param": null,
                    "code": "invalid_api_key",
                }})
            );
        }
    }

    #[tokio::test]
    async fn wrong_key_is_401_incorrect_api_key() {
        let svc = ServiceBuilder::new()
            .layer(RequireAuthLayer::new(keys()))
            .service(whoami());

        for header in [
            "Bearer sk-alice",
            "Bearer sk-b-",
            "Bearer SK-B",
            "Bearer sk-alice-0000x",
        ] {
            let res = svc
                .clone()
                .oneshot(get("/v1/models", Some(header)))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{header}");
            assert_eq!(res.headers()[WWW_AUTHENTICATE], "Bearer");
            assert_eq!(
                res.extensions().get::<AuthRejected>(),
                Some(&AuthRejected::InvalidKey)
            );
            let body: serde_json::Value = serde_json::from_str(&body_text(res).await).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "param": null,
                    "code": "invalid_api_key",
                }})
            );
        }
    }

    #[tokio::test]
    async fn rejected_requests_never_reach_the_inner_service() {
        let (mut svc, mut handle) =
            mock::spawn_layer::<Request<Body>, Response<Body>, _>(RequireAuthLayer::new(keys()));
        handle.allow(2);

        assert!(svc.poll_ready().is_ready());
        let rejected = svc.call(get("/v1/models", Some("Bearer nope")));
        let res = rejected.await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(
            handle.poll_request().is_pending(),
            "inner saw a rejected request"
        );

        assert!(svc.poll_ready().is_ready());
        let accepted = svc.call(get("/v1/models", Some("Bearer sk-b")));
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!(request.uri(), "/v1/models");
        assert_eq!(
            request
                .extensions()
                .get::<AuthenticatedKey>()
                .map(|k| k.name()),
            Some("bob")
        );
        respond.send_response(Response::new(Full::new(Bytes::from_static(b"inner"))));
        let res = accepted.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_text(res).await, "inner");
    }

    #[tokio::test]
    async fn not_ready_inner_means_not_ready() {
        let (mut svc, mut handle) =
            mock::spawn_layer::<Request<Body>, Response<Body>, _>(RequireAuthLayer::new(keys()));
        handle.allow(0);
        assert!(svc.poll_ready().is_pending());
        handle.allow(1);
        assert!(svc.poll_ready().is_ready());
    }

    #[tokio::test]
    async fn exempt_requests_pass_without_key_and_without_identity() {
        let svc = ServiceBuilder::new()
            .layer(
                RequireAuthLayer::new(keys())
                    .exempt(|req: &Request<Body>| req.uri().path() == "/healthz"),
            )
            .service(whoami());

        let res = svc.clone().oneshot(get("/healthz", None)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_text(res).await, "-");

        // Even with a valid key, an exempt request is not given an identity.
        let res = svc
            .clone()
            .oneshot(get("/healthz", Some("Bearer sk-b")))
            .await
            .unwrap();
        assert_eq!(body_text(res).await, "-");

        // The exemption is by path only.
        let res = svc
            .oneshot(get("/healthz/../v1/models", None))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn identities_set_before_the_layer_are_not_trusted() {
        let svc = ServiceBuilder::new()
            .layer(
                RequireAuthLayer::new(keys())
                    .exempt(|req: &Request<Body>| req.uri().path() == "/healthz"),
            )
            .service(whoami());
        let forged = || AuthenticatedKey {
            name: "mallory".into(),
        };

        let mut req = get("/healthz", None);
        req.extensions_mut().insert(forged());
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(body_text(res).await, "-");

        let mut req = get("/v1/models", Some("Bearer sk-b"));
        req.extensions_mut().insert(forged());
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(body_text(res).await, "bob");
    }

    #[test]
    fn layer_and_service_debug_are_redacted() {
        let layer = RequireAuthLayer::new(keys());
        let shown = format!("{layer:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("sk-"), "{shown}");

        let svc = RequireAuth::new("inner", keys());
        let shown = format!("{svc:?}");
        assert!(shown.contains("inner") && !shown.contains("sk-"), "{shown}");
    }
}

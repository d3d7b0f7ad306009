//! [`OutputModeService`]: resolves the output mode of each request.
//!
//! The mode is decided here, once, before routing, so every handler and the
//! response rendering read one [`OutputMode`] extension instead of parsing the
//! header themselves. A value that names no mode is refused with a 400 rather
//! than silently falling back: a client asking for `openai-json` and getting
//! XML would misparse every tool call. An empty (or all-blank) header counts
//! as absent, since clients that template headers send it when unset.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::{
    rejection, DefaultModePolicy, FixedDefault, OutputMode, OutputModeLayer, ResponseBody,
    ResponseFuture, UnknownOutputMode,
};

/// Inserts the request's [`OutputMode`] into its extensions, or answers 400
/// when `x-proxy-output-mode` names no known mode. Built by
/// [`OutputModeLayer`].
#[derive(Clone, Debug)]
pub struct OutputModeService<S, P = FixedDefault> {
    inner: S,
    default: OutputMode,
    policy: P,
}

impl<S> OutputModeService<S> {
    /// Wraps `inner`, using `default` when a request does not choose.
    pub fn new(inner: S, default: OutputMode) -> Self {
        Self::with_policy(inner, default, FixedDefault)
    }
}

impl<S, P> OutputModeService<S, P> {
    /// Wraps `inner`; a request without the header gets what `policy` says,
    /// else `default`.
    pub fn with_policy(inner: S, default: OutputMode, policy: P) -> Self {
        Self {
            inner,
            default,
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

    fn resolve<B>(&self, request: &Request<B>) -> Result<OutputMode, UnknownOutputMode>
    where
        P: DefaultModePolicy<B>,
    {
        let fallback = || self.policy.default_mode(request).unwrap_or(self.default);
        let Some(value) = request.headers().get(OutputModeLayer::HEADER) else {
            return Ok(fallback());
        };
        // `to_str` would refuse valid non-ASCII UTF-8; the client deserves to
        // see what it sent, so decode leniently and let parsing reject it.
        let value = String::from_utf8_lossy(value.as_bytes());
        if value.trim().is_empty() {
            return Ok(fallback());
        }
        value.parse()
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for OutputModeService<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: DefaultModePolicy<ReqBody>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match self.resolve(&request) {
            Ok(mode) => {
                request.extensions_mut().insert(mode);
                ResponseFuture::inner(self.inner.call(request))
            }
            Err(error) => ResponseFuture::rejected(rejection::response(&error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, fmt};

    use bytes::Bytes;
    use http::{header::CONTENT_TYPE, HeaderValue, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::{service_fn, ServiceBuilder, ServiceExt};
    use tower_test::mock;

    use super::*;
    use crate::OutputModeRejected;

    type Body = Full<Bytes>;

    /// Echoes the mode found in the extensions, or `none`.
    fn echo() -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone
    {
        service_fn(|req: Request<Body>| async move {
            let mode = req
                .extensions()
                .get::<OutputMode>()
                .map_or("none", OutputMode::as_str);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(mode))))
        })
    }

    fn with_header(value: Option<HeaderValue>) -> Request<Body> {
        let mut request = Request::post("/v1/chat/completions")
            .body(Full::default())
            .unwrap();
        if let Some(value) = value {
            request.headers_mut().insert(OutputModeLayer::HEADER, value);
        }
        request
    }

    async fn body_bytes<B>(response: Response<B>) -> Bytes
    where
        B: http_body::Body,
        B::Error: fmt::Debug,
    {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    async fn mode_for(layer: OutputModeLayer, value: Option<&'static str>) -> String {
        let svc = ServiceBuilder::new().layer(layer).service(echo());
        let res = svc
            .oneshot(with_header(value.map(HeaderValue::from_static)))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{value:?}");
        assert!(res.extensions().get::<OutputModeRejected>().is_none());
        String::from_utf8(body_bytes(res).await.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn absent_or_blank_header_uses_the_layer_default() {
        let xml = OutputModeLayer::new(OutputMode::ObsidianXml);
        let json = OutputModeLayer::new(OutputMode::OpenaiJson);
        assert_eq!(mode_for(xml, None).await, "obsidian-xml");
        assert_eq!(mode_for(json, None).await, "openai-json");
        assert_eq!(mode_for(json, Some("")).await, "openai-json");
        assert_eq!(mode_for(json, Some("   ")).await, "openai-json");
        assert_eq!(
            mode_for(OutputModeLayer::default(), None).await,
            "obsidian-xml"
        );
    }

    #[tokio::test]
    async fn the_policy_picks_the_default_and_the_header_still_wins() {
        // A policy keyed on the path, as the gateway keys it on route and key.
        let layer =
            OutputModeLayer::new(OutputMode::ObsidianXml).default_by(|req: &Request<Body>| {
                (req.uri().path() == "/sdk").then_some(OutputMode::OpenaiJson)
            });
        let svc = ServiceBuilder::new().layer(layer).service(echo());
        let call = |path: &'static str, header: Option<&'static str>| {
            let svc = svc.clone();
            async move {
                let mut req = Request::post(path).body(Full::default()).unwrap();
                if let Some(h) = header {
                    req.headers_mut()
                        .insert(OutputModeLayer::HEADER, HeaderValue::from_static(h));
                }
                let res = svc.oneshot(req).await.unwrap();
                String::from_utf8(body_bytes(res).await.to_vec()).unwrap()
            }
        };
        assert_eq!(call("/sdk", None).await, "openai-json");
        assert_eq!(call("/sdk", Some(" ")).await, "openai-json");
        assert_eq!(call("/other", None).await, "obsidian-xml");
        assert_eq!(call("/sdk", Some("obsidian-xml")).await, "obsidian-xml");
    }

    #[tokio::test]
    async fn header_overrides_the_default() {
        let xml = OutputModeLayer::new(OutputMode::ObsidianXml);
        let json = OutputModeLayer::new(OutputMode::OpenaiJson);
        assert_eq!(mode_for(xml, Some("openai-json")).await, "openai-json");
        assert_eq!(mode_for(xml, Some(" OpenAI-Json ")).await, "openai-json");
        assert_eq!(mode_for(json, Some("OBSIDIAN-XML")).await, "obsidian-xml");
    }

    async fn rejection_for(value: HeaderValue) -> serde_json::Value {
        let svc = ServiceBuilder::new()
            .layer(OutputModeLayer::default())
            .service(echo());
        let res = svc.oneshot(with_header(Some(value))).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            res.extensions().get::<OutputModeRejected>(),
            Some(&OutputModeRejected)
        );
        serde_json::from_slice(&body_bytes(res).await).unwrap()
    }

    #[tokio::test]
    async fn unknown_mode_is_400_with_openai_envelope() {
        assert_eq!(
            rejection_for(HeaderValue::from_static("xyz")).await,
            serde_json::json!({"error": {
                "message": "Unknown output mode `xyz`; expected `obsidian-xml` or `openai-json`.",
                "type": "invalid_request_error",
                "param": "x-proxy-output-mode",
                "code": "invalid_output_mode",
            }})
        );
    }

    #[tokio::test]
    async fn non_utf8_and_non_ascii_values_are_400() {
        let body = rejection_for(HeaderValue::from_bytes(b"openai-json\xff").unwrap()).await;
        assert_eq!(body["error"]["code"], "invalid_output_mode");
        assert_eq!(
            body["error"]["message"],
            "Unknown output mode `openai-json\u{FFFD}`; expected `obsidian-xml` or `openai-json`."
        );

        let body = rejection_for(HeaderValue::from_bytes("öbsidian-xml".as_bytes()).unwrap()).await;
        assert_eq!(
            body["error"]["message"],
            "Unknown output mode `öbsidian-xml`; expected `obsidian-xml` or `openai-json`."
        );
    }

    #[tokio::test]
    async fn rejected_requests_never_reach_the_inner_service() {
        let (mut svc, mut inner) = mock::spawn_layer::<Request<Body>, Response<Body>, _>(
            OutputModeLayer::new(OutputMode::OpenaiJson),
        );
        inner.allow(1);

        assert!(svc.poll_ready().is_ready());
        let res = svc
            .call(with_header(Some(HeaderValue::from_static("html"))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(
            inner.poll_request().is_pending(),
            "inner saw a rejected request"
        );

        assert!(svc.poll_ready().is_ready());
        let pending = svc.call(with_header(None));
        let (request, respond) = inner.next_request().await.unwrap();
        assert_eq!(
            request.extensions().get::<OutputMode>(),
            Some(&OutputMode::OpenaiJson)
        );
        respond.send_response(Response::new(Full::default()));
        assert_eq!(pending.await.unwrap().status(), StatusCode::OK);
    }
}

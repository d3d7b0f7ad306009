//! [`OllamaRejectionsLayer`]: the layers' rejections on the Ollama routes,
//! in Ollama's error shape.
//!
//! The rejecting layers (auth, maintenance, rate limits, output mode) are
//! standalone crates that answer in OpenAI's envelope,
//! `{"error":{"message",…}}`, and know nothing of dialects. An `ollama`
//! client reads `{"error": "message"}`: with the envelope it raises an error
//! whose text is a JSON dump instead of the reason. This layer sits above
//! them and rewrites an error body on an Ollama route from the one shape to
//! the other, keeping status, headers and response extensions (so metrics
//! still count the rejection by cause). Everything else passes through with
//! no allocation: only an Ollama route's JSON error with a small, known
//! length (the layers' rejections are complete bodies) is read.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full};
use pin_project_lite::pin_project;
use serde_json::Value;
use tower::{Layer, Service};

use crate::route::Route;

/// Longest error body this layer reads; the layers' envelopes are far smaller.
const MAX_ERROR_BODY: u64 = 16 * 1024;

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct OllamaRejectionsLayer;

impl<S> Layer<S> for OllamaRejectionsLayer {
    type Service = OllamaRejections<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OllamaRejections { inner }
    }
}

/// The service of [`OllamaRejectionsLayer`].
#[derive(Debug, Clone)]
pub struct OllamaRejections<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OllamaRejections<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = RejectionFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let ollama = req
            .extensions()
            .get::<Route>()
            .is_some_and(|r| r.is_ollama());
        RejectionFuture {
            state: State::Inner {
                future: self.inner.call(req),
                ollama,
            },
        }
    }
}

type Collect = Pin<Box<dyn Future<Output = Bytes> + Send>>;

pin_project! {
    /// The inner response, or, for an error to rewrite, its body being read.
    pub struct RejectionFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F, ollama: bool },
        Rewrite { parts: Option<http::response::Parts>, collect: Collect },
    }
}

impl<F, B, E> Future for RejectionFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes> + Send + 'static,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Inner { future, ollama } => {
                    let res = ready!(future.poll(cx))?;
                    if !(*ollama && is_small_json_error(&res)) {
                        return Poll::Ready(Ok(res.map(Either::Left)));
                    }
                    let (parts, body) = res.into_parts();
                    let collect: Collect = Box::pin(async move {
                        // A body that fails to read leaves the status to speak.
                        body.collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default()
                    });
                    this.state.set(State::Rewrite {
                        parts: Some(parts),
                        collect,
                    });
                }
                StateProj::Rewrite { parts, collect } => {
                    let bytes = ready!(collect.as_mut().poll(cx));
                    let mut parts = parts.take().expect("polled after completion");
                    let body = ollama_error(&bytes, parts.status.canonical_reason());
                    // The new body's length is not the old one's.
                    parts.headers.remove(header::CONTENT_LENGTH);
                    return Poll::Ready(Ok(Response::from_parts(
                        parts,
                        Either::Right(Full::new(body)),
                    )));
                }
            }
        }
    }
}

/// An error whose body is JSON of a known, small length: a rejection.
fn is_small_json_error<B: Body>(res: &Response<B>) -> bool {
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = res
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_ERROR_BODY);
    (res.status().is_client_error() || res.status().is_server_error()) && json && small
}

/// `{"error": "message"}` from OpenAI's envelope; a body already in Ollama's
/// shape (the API's own errors on these routes) is kept as it is.
fn ollama_error(body: &[u8], reason: Option<&str>) -> Bytes {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if parsed.as_ref().is_some_and(|v| v["error"].is_string()) {
        return Bytes::copy_from_slice(body);
    }
    let message = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str())
        .or(reason)
        .unwrap_or("error");
    Bytes::from(serde_json::json!({ "error": message }).to_string())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::{HeaderValue, StatusCode};
    use tower::ServiceExt;

    use super::*;

    type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

    /// A service answering every request with `status` and `body` as JSON.
    fn answering(
        status: StatusCode,
        body: &'static str,
    ) -> impl Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = Answer,
    > + Clone {
        tower::service_fn(move |_req: Request<()>| {
            let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *res.status_mut() = status;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
            std::future::ready(Ok(res))
        })
    }

    async fn call(
        route: Route,
        status: StatusCode,
        body: &'static str,
    ) -> (StatusCode, String, bool) {
        let svc = OllamaRejectionsLayer.layer(answering(status, body));
        let mut req = Request::new(());
        req.extensions_mut().insert(route);
        let res = svc.oneshot(req).await.unwrap();
        let status = res.status();
        let kept = res.headers().get(header::RETRY_AFTER).is_some();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap(), kept)
    }

    const ENVELOPE: &str = r#"{"error":{"message":"Too many requests.","type":"rate_limit_error","param":null,"code":"rate_limited"}}"#;

    #[tokio::test]
    async fn an_openai_envelope_on_an_ollama_route_becomes_a_bare_message() {
        let (status, body, kept) =
            call(Route::OllamaChat, StatusCode::TOO_MANY_REQUESTS, ENVELOPE).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body, r#"{"error":"Too many requests."}"#);
        assert!(kept, "headers such as Retry-After stay");
    }

    #[tokio::test]
    async fn other_routes_and_successes_pass_through_untouched() {
        let (_, body, _) = call(
            Route::ChatCompletions,
            StatusCode::TOO_MANY_REQUESTS,
            ENVELOPE,
        )
        .await;
        assert_eq!(body, ENVELOPE);
        let (_, body, _) = call(Route::OllamaChat, StatusCode::OK, r#"{"ok":true}"#).await;
        assert_eq!(body, r#"{"ok":true}"#);
    }

    #[tokio::test]
    async fn an_error_already_in_ollama_shape_or_unreadable_is_handled() {
        let (_, body, _) = call(
            Route::OllamaGenerate,
            StatusCode::NOT_FOUND,
            r#"{"error":"model not found"}"#,
        )
        .await;
        assert_eq!(body, r#"{"error":"model not found"}"#);
        let (_, body, _) = call(
            Route::OllamaTags,
            StatusCode::SERVICE_UNAVAILABLE,
            "not json",
        )
        .await;
        assert_eq!(body, r#"{"error":"Service Unavailable"}"#);
    }
}

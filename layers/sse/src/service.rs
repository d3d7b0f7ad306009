//! The service: turns `Payload::Events` responses into SSE responses.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::sse_body::BodySettings;
use crate::{Payload, ResponseFuture};

/// Maps `Response<Payload<B>>` to `Response<ResponseBody<B>>`.
///
/// `Payload::Body` passes through untouched: status, headers and body.
/// `Payload::Events` keeps the inner status and headers but sets
/// `content-type: text/event-stream`, `cache-control: no-cache`,
/// `x-accel-buffering: no` (so nginx does not hold tokens back in its buffer)
/// and drops `content-length`; the body becomes an [`SseBody`](crate::SseBody).
///
/// Holds no readiness of its own: `poll_ready` is the inner service's, so a
/// derived `Clone` is correct.
#[derive(Clone, Debug)]
pub struct Sse<S> {
    inner: S,
    settings: BodySettings,
}

// === impl Sse ===

impl<S> Sse<S> {
    /// Wraps `inner` with the default settings of [`SseLayer`](crate::SseLayer).
    pub fn new(inner: S) -> Self {
        Self::with_settings(inner, BodySettings::default())
    }

    pub(crate) fn with_settings(inner: S, settings: BodySettings) -> Self {
        Self { inner, settings }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for Sse<S>
where
    S: Service<Request<ReqBody>, Response = Response<Payload<B>>>,
{
    type Response = Response<crate::ResponseBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), self.settings.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};
    use http_body::Body;
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt};
    use tower_layer::Layer;

    use super::*;
    use crate::{EventStream, ResponseBody, SseEvent, SseLayer};

    type Inner = Response<Payload<Full<Bytes>>>;

    async fn call(
        layer: SseLayer,
        response: impl FnOnce() -> Inner,
    ) -> Response<ResponseBody<Full<Bytes>>> {
        let response = response();
        let mut response = Some(response);
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service_fn(move |_req: Request<()>| {
                let response = response.take().unwrap();
                async move { Ok::<_, Infallible>(response) }
            });
        svc.oneshot(Request::new(())).await.unwrap()
    }

    async fn text(response: Response<ResponseBody<Full<Bytes>>>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn events(list: Vec<SseEvent>) -> EventStream {
        let (tx, rx) = tokio::sync::mpsc::channel(list.len().max(1));
        for ev in list {
            tx.try_send(ev).unwrap();
        }
        EventStream::from_receiver(rx)
    }

    #[tokio::test]
    async fn ordinary_body_passes_through_untouched() {
        let json = r#"{"error":{"message":"nope","type":"invalid_request_error","param":null,"code":"x"}}"#;
        let res = call(SseLayer::new(), || {
            Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .header("content-type", "application/json")
                .header("content-length", json.len())
                .header("x-request-id", "abc")
                .body(Payload::Body(Full::new(Bytes::from(json))))
                .unwrap()
        })
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(!res.body().is_event_stream());
        let headers = res.headers().clone();
        assert_eq!(headers.len(), 3);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["content-length"], json.len().to_string().as_str());
        assert_eq!(headers["x-request-id"], "abc");
        assert_eq!(res.body().size_hint().exact(), Some(json.len() as u64));
        assert_eq!(text(res).await, json);
    }

    #[tokio::test]
    async fn event_path_sets_streaming_headers_and_keeps_the_rest() {
        let res = call(SseLayer::new(), || {
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .header("content-length", "123")
                .header("x-request-id", "abc")
                .body(Payload::Events(events(vec![SseEvent::json(
                    &serde_json::json!({"choices": []}),
                )
                .unwrap()])))
                .unwrap()
        })
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.body().is_event_stream());
        let h = res.headers();
        assert_eq!(h["content-type"], "text/event-stream");
        assert_eq!(h.get_all("content-type").iter().count(), 1);
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["x-accel-buffering"], "no");
        assert_eq!(h.get("content-length"), None::<&HeaderValue>);
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(
            text(res).await,
            "data: {\"choices\":[]}\n\ndata: [DONE]\n\n"
        );
    }

    #[tokio::test]
    async fn ndjson_stream_is_served_as_application_x_ndjson() {
        let res = call(SseLayer::new(), || {
            Response::new(Payload::Events(
                events(vec![
                    SseEvent::json(&serde_json::json!({"done": false})).unwrap(),
                    SseEvent::json(&serde_json::json!({"done": true})).unwrap(),
                ])
                .ndjson(),
            ))
        })
        .await;
        let h = res.headers();
        assert_eq!(h["content-type"], "application/x-ndjson");
        assert_eq!(h.get("content-length"), None::<&HeaderValue>);
        assert_eq!(text(res).await, "{\"done\":false}\n{\"done\":true}\n");
    }

    #[tokio::test]
    async fn responses_api_stream_has_named_events_and_no_marker() {
        let stream = events(vec![
            SseEvent::json(&serde_json::json!({"type": "response.created"}))
                .unwrap()
                .with_event("response.created"),
            SseEvent::json(&serde_json::json!({"type": "response.completed"}))
                .unwrap()
                .with_event("response.completed"),
        ])
        .done_marker(false);
        let res = call(SseLayer::new(), || Response::new(Payload::Events(stream))).await;
        assert_eq!(
            text(res).await,
            "event: response.created\ndata: {\"type\":\"response.created\"}\n\n\
             event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn layer_settings_reach_the_body() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let layer = SseLayer::new()
            .keep_alive(Duration::from_secs(5))
            .keep_alive_text("still thinking");
        let res = call(layer, || {
            Response::new(Payload::Events(EventStream::from_receiver(rx)))
        })
        .await;
        let mut body = res.into_body();
        let start = tokio::time::Instant::now();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame, ": still thinking\n\n");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        drop(tx);
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame, "data: [DONE]\n\n");
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn the_layers_coalesce_setting_reaches_the_body() {
        let ready = || {
            events(vec![
                SseEvent::data("1"),
                SseEvent::data("2"),
                SseEvent::data("3"),
            ])
        };
        let frames = |layer: SseLayer| async move {
            let res = call(layer, || Response::new(Payload::Events(ready()))).await;
            let mut body = res.into_body();
            let mut frames = Vec::new();
            while let Some(frame) = body.frame().await {
                frames.push(frame.unwrap().into_data().unwrap());
            }
            frames
        };
        // Off: one event per frame, then the marker.
        assert_eq!(
            frames(SseLayer::new().coalesce(0)).await,
            [
                "data: 1\n\n",
                "data: 2\n\n",
                "data: 3\n\n",
                "data: [DONE]\n\n"
            ]
        );
        // The default gathers what is ready (the channel here has ended, so
        // the marker comes along).
        assert_eq!(
            frames(SseLayer::new()).await,
            ["data: 1\n\ndata: 2\n\ndata: 3\n\ndata: [DONE]\n\n"]
        );
    }

    #[tokio::test]
    async fn inner_errors_pass_through() {
        let svc = SseLayer::new().layer(tower::service_fn(|_req: Request<()>| async {
            Err::<Inner, _>("worker gone")
        }));
        let err = svc.oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(err, "worker gone");
    }

    #[tokio::test]
    async fn readiness_is_the_inner_services() {
        let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Inner>();
        let mut svc = Sse::new(mock);
        handle.allow(0);
        assert!(futures_ready(&mut svc).is_pending());
        handle.allow(1);
        assert!(futures_ready(&mut svc).is_ready());
    }

    fn futures_ready<S: Service<Request<()>>>(svc: &mut S) -> Poll<Result<(), S::Error>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        svc.poll_ready(&mut cx)
    }
}

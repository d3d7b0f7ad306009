//! Layer tests: what a Prometheus scrape shows after requests go through.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tower::{service_fn, Layer, Service, ServiceExt};

use crate::{encode, HttpMetrics, MetricsLayer, ResponseBody};

/// A body the test feeds frame by frame.
struct TestBody(mpsc::Receiver<Result<Frame<Bytes>, &'static str>>);

impl Body for TestBody {
    type Data = Bytes;
    type Error = &'static str;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx)
    }
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, &'static str>>;

/// The value of the sample `name_and_labels` in the scrape, if present.
fn sample(registry: &Registry, name_and_labels: &str) -> Option<f64> {
    encode(registry).lines().find_map(|line| {
        let value = line.strip_prefix(name_and_labels)?.strip_prefix(' ')?;
        Some(value.parse().unwrap())
    })
}

/// Like [`sample`], with an absent series read as 0 (handles are resolved before use,
/// so a histogram may be exposed with a zero count).
fn value(registry: &Registry, name_and_labels: &str) -> f64 {
    sample(registry, name_and_labels).unwrap_or(0.0)
}

fn route(req: &Request<()>) -> &'static str {
    match req.uri().path() {
        "/v1/chat/completions" => "chat",
        "/v1/models" => "models",
        _ => "other",
    }
}

/// A metered service whose responses carry a [`TestBody`] the test writes to.
fn streaming_service(
    registry: &mut Registry,
    content_type: &'static str,
) -> (
    impl Service<Request<()>, Response = Response<ResponseBody<TestBody>>, Error = Infallible>,
    mpsc::Receiver<Tx>,
) {
    let (senders_tx, senders_rx) = mpsc::channel(8);
    let inner = service_fn(move |_req: Request<()>| {
        let senders_tx = senders_tx.clone();
        async move {
            let (tx, rx) = mpsc::channel(8);
            senders_tx.send(tx).await.unwrap();
            let res = Response::builder()
                .header("content-type", content_type)
                .body(TestBody(rx))
                .unwrap();
            Ok::<_, Infallible>(res)
        }
    });
    let layer = MetricsLayer::new(HttpMetrics::register(registry)).route_label(route);
    (layer.layer(inner), senders_rx)
}

fn chat() -> Request<()> {
    Request::post("/v1/chat/completions").body(()).unwrap()
}

const DURATION_COUNT: &str = r#"http_request_duration_seconds_count{route="chat",method="POST"}"#;
const TTFB_COUNT: &str = r#"http_time_to_first_byte_seconds_count{route="chat"}"#;
const STREAMS_OPEN: &str = r#"http_streams_open{route="chat"}"#;

#[tokio::test]
async fn requests_are_counted_by_route_method_and_status() {
    let mut registry = Registry::default();
    let inner = service_fn(|req: Request<()>| async move {
        let status = if req.uri().path() == "/v1/models" {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = status;
        Ok::<_, Infallible>(res)
    });
    let svc = MetricsLayer::new(HttpMetrics::register(&mut registry))
        .route_label(route)
        .layer(inner);

    for path in ["/v1/models", "/v1/models", "/nope/123", "/nope/456"] {
        let res = svc
            .clone()
            .oneshot(Request::get(path).body(()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let req = Request::delete("/v1/models").body(()).unwrap();
    svc.clone().oneshot(req).await.unwrap();

    let count = |labels: &str| sample(&registry, &format!("http_requests_total{{{labels}}}"));
    assert_eq!(
        count(r#"route="models",method="GET",status="200""#),
        Some(2.0)
    );
    // Unknown paths share one series: clients cannot create new ones.
    assert_eq!(
        count(r#"route="other",method="GET",status="404""#),
        Some(2.0)
    );
    assert_eq!(
        count(r#"route="models",method="DELETE",status="200""#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &registry,
            r#"http_request_duration_seconds_count{route="other",method="GET"}"#
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn default_route_label_is_unmatched() {
    let mut registry = Registry::default();
    let svc = MetricsLayer::new(HttpMetrics::register(&mut registry)).layer(service_fn(
        |_req: Request<()>| async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) },
    ));
    svc.oneshot(Request::get("/anything/at/all").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        sample(
            &registry,
            r#"http_requests_total{route="unmatched",method="GET",status="200"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_stream_is_timed_at_body_end_not_at_headers() {
    let mut registry = Registry::default();
    let (svc, mut senders) = streaming_service(&mut registry, "text/event-stream");

    let res = svc.oneshot(chat()).await.unwrap();
    let tx = senders.recv().await.unwrap();
    let mut body = res.into_body();

    // Headers are out; the stream is open; nothing is timed yet.
    assert_eq!(
        sample(
            &registry,
            r#"http_requests_total{route="chat",method="POST",status="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(value(&registry, STREAMS_OPEN), 1.0);
    assert_eq!(value(&registry, DURATION_COUNT), 0.0);
    assert_eq!(value(&registry, TTFB_COUNT), 0.0);

    // An empty frame is not a first byte.
    tx.send(Ok(Frame::data(Bytes::new()))).await.unwrap();
    body.frame().await.unwrap().unwrap();
    assert_eq!(value(&registry, TTFB_COUNT), 0.0);

    for chunk in ["data: a\n\n", "data: b\n\n"] {
        tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.unwrap();
        body.frame().await.unwrap().unwrap();
    }
    assert_eq!(value(&registry, TTFB_COUNT), 1.0, "first data frame");
    assert_eq!(value(&registry, DURATION_COUNT), 0.0, "still streaming");
    assert_eq!(value(&registry, STREAMS_OPEN), 1.0);

    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(value(&registry, DURATION_COUNT), 1.0);
    assert_eq!(value(&registry, STREAMS_OPEN), 0.0);

    drop(body);
    assert_eq!(value(&registry, DURATION_COUNT), 1.0, "recorded twice");
    assert_eq!(value(&registry, TTFB_COUNT), 1.0);
}

#[tokio::test]
async fn a_stream_dropped_mid_way_is_recorded_once() {
    let mut registry = Registry::default();
    let (svc, mut senders) = streaming_service(&mut registry, "text/event-stream; charset=utf-8");

    let res = svc.oneshot(chat()).await.unwrap();
    let tx = senders.recv().await.unwrap();
    let mut body = res.into_body();
    tx.send(Ok(Frame::data(Bytes::from("data: a\n\n"))))
        .await
        .unwrap();
    body.frame().await.unwrap().unwrap();
    assert_eq!(value(&registry, STREAMS_OPEN), 1.0);

    drop(body); // the client went away
    assert_eq!(value(&registry, DURATION_COUNT), 1.0);
    assert_eq!(value(&registry, STREAMS_OPEN), 0.0);
    assert!(tx.is_closed());
}

#[tokio::test]
async fn a_body_error_ends_the_request_once() {
    let mut registry = Registry::default();
    let (svc, mut senders) = streaming_service(&mut registry, "text/event-stream");
    let res = svc.oneshot(chat()).await.unwrap();
    let tx = senders.recv().await.unwrap();
    let mut body = res.into_body();

    tx.send(Err("upstream reset")).await.unwrap();
    assert_eq!(body.frame().await.unwrap().unwrap_err(), "upstream reset");
    assert_eq!(value(&registry, DURATION_COUNT), 1.0);
    assert_eq!(value(&registry, STREAMS_OPEN), 0.0);
    drop(body);
    assert_eq!(value(&registry, DURATION_COUNT), 1.0);
}

#[tokio::test]
async fn only_event_streams_count_as_open_streams() {
    let mut registry = Registry::default();
    let (svc, mut senders) = streaming_service(&mut registry, "application/json");
    let res = svc.oneshot(chat()).await.unwrap();
    let _tx = senders.recv().await.unwrap();
    assert_eq!(value(&registry, STREAMS_OPEN), 0.0);
    drop(res);
    assert_eq!(value(&registry, DURATION_COUNT), 1.0);
}

#[derive(Clone)]
struct Unauthorized;

#[tokio::test]
async fn rejections_are_counted_by_cause() {
    let mut registry = Registry::default();
    let inner = service_fn(|req: Request<()>| async move {
        let mut res = Response::new(Full::new(Bytes::new()));
        if req.headers().get("authorization").is_none() {
            *res.status_mut() = StatusCode::UNAUTHORIZED;
            res.extensions_mut().insert(Unauthorized);
        }
        Ok::<_, Infallible>(res)
    });
    let svc = MetricsLayer::new(HttpMetrics::register(&mut registry))
        .rejection_cause(|parts: &http::response::Parts| {
            parts.extensions.get::<Unauthorized>().map(|_| "auth")
        })
        .layer(inner);

    for auth in [None, None, Some("Bearer k")] {
        let mut req = Request::get("/v1/models").body(()).unwrap();
        if let Some(auth) = auth {
            req.headers_mut()
                .insert("authorization", auth.parse().unwrap());
        }
        svc.clone().oneshot(req).await.unwrap();
    }
    assert_eq!(
        sample(&registry, r#"http_rejections_total{cause="auth"}"#),
        Some(2.0)
    );
    // A 401 without the marker (say, from the upstream) is not a rejection.
    assert_eq!(
        encode(&registry).matches("http_rejections_total{").count(),
        1
    );
}

#[tokio::test]
async fn service_errors_and_cancellations_are_counted() {
    let mut registry = Registry::default();
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<Full<Bytes>>>();
    let mut svc = MetricsLayer::new(HttpMetrics::register(&mut registry))
        .route_label(route)
        .layer(mock);

    handle.allow(2);
    svc.ready().await.unwrap();
    let failed = svc.call(chat());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("worker crashed");
    assert!(failed.await.is_err());

    svc.ready().await.unwrap();
    let abandoned = svc.call(chat());
    let _pending = handle.next_request().await.unwrap();
    drop(abandoned); // client left before the response headers

    let count = |status: &str| {
        sample(
            &registry,
            &format!(r#"http_requests_total{{route="chat",method="POST",status="{status}"}}"#),
        )
    };
    assert_eq!(count("error"), Some(1.0));
    assert_eq!(count("canceled"), Some(1.0));
    assert_eq!(value(&registry, DURATION_COUNT), 2.0);
}

#[test]
fn buckets_span_llm_latencies_and_are_exposed() {
    let mut registry = Registry::default();
    let metrics = HttpMetrics::register(&mut registry);
    metrics
        .families
        .duration
        .get_or_create(&crate::metrics::RouteMethodLabels {
            route: "chat",
            method: "POST",
        })
        .observe(450.0);
    let text = encode(&registry);
    assert!(
        text.contains(
            r#"http_request_duration_seconds_bucket{le="300.0",route="chat",method="POST"} 0"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"http_request_duration_seconds_bucket{le="600.0",route="chat",method="POST"} 1"#
    ));
    assert!(text.contains("# UNIT http_request_duration_seconds seconds"));
    assert!(text.ends_with("# EOF\n"));
}

//! A plain hyper server behind `MetricsLayer`, with a `/metrics` route for Prometheus.
//!
//! ```text
//! cargo run -p codex-metrics --example metrics_server
//! curl http://127.0.0.1:PORT/hello               # route="hello"
//! curl http://127.0.0.1:PORT/teapot              # 418, counted as a rejection
//! curl -N http://127.0.0.1:PORT/stream           # 3 SSE events: one at once, then 1 s apart
//! curl http://127.0.0.1:PORT/metrics             # http_requests_total, ..._duration_seconds, ...
//! ```
//!
//! While `/stream` runs, `http_streams_open{route="stream"}` is 1; its duration lands in
//! `http_request_duration_seconds` (about 2 s) only when the stream ends, and its first
//! event in `http_time_to_first_byte_seconds`.
//!
//! Listens on 127.0.0.1:$PORT (an ephemeral port when unset). Ctrl-C stops accepting
//! and gives open connections 10 s to finish.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use codex_layer_example_server::BoxError;
use codex_metrics::{encode, HttpMetrics, MetricsLayer, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::time::{interval, Interval};
use tower::ServiceBuilder;

/// A marker a rejecting layer would insert; here the handler does it for `/teapot`.
#[derive(Clone)]
struct Teapot;

/// Three SSE events: one at once, then one a second.
struct Ticks {
    left: u32,
    every: Interval,
}

impl Body for Ticks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        std::task::ready!(self.every.poll_tick(cx));
        self.left -= 1;
        let event = format!("data: {}\n\n", self.left);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }
}

fn full(text: impl Into<Bytes>) -> BoxBody<Bytes, Infallible> {
    Full::new(text.into()).boxed()
}

async fn handle(
    registry: Arc<Registry>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let res = match req.uri().path() {
        "/metrics" => Response::builder()
            .header("content-type", CONTENT_TYPE)
            .body(full(encode(&registry))),
        "/hello" => Response::builder().body(full("hello\n")),
        "/stream" => {
            let ticks = Ticks {
                left: 3,
                every: interval(Duration::from_secs(1)),
            };
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(ticks.boxed())
        }
        "/teapot" => Response::builder()
            .status(StatusCode::IM_A_TEAPOT)
            .extension(Teapot)
            .body(full("short and stout\n")),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full("not found\n")),
    };
    Ok(res.expect("valid response"))
}

/// Known paths become their own label; everything else shares one series.
fn route(req: &Request<Incoming>) -> &'static str {
    match req.uri().path() {
        "/metrics" => "metrics",
        "/hello" => "hello",
        "/stream" => "stream",
        "/teapot" => "teapot",
        _ => "other",
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut registry = Registry::default();
    let metrics = HttpMetrics::register(&mut registry);
    let registry = Arc::new(registry);

    let service = ServiceBuilder::new()
        .layer(
            MetricsLayer::new(metrics)
                .route_label(route)
                .rejection_cause(|parts: &http::response::Parts| {
                    parts.extensions.get::<Teapot>().map(|_| "teapot")
                }),
        )
        .service_fn(move |req| handle(Arc::clone(&registry), req));

    let listener = codex_layer_example_server::bind_from_env_or_args(0).await?;
    codex_layer_example_server::serve(listener, service).await;
    Ok(())
}

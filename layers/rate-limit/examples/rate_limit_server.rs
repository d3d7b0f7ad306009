//! A plain hyper server behind `RateLimitLayer`, keyed by peer IP, plus a per-IP limit
//! on concurrent streams with `KeyedConcurrency`.
//!
//! ```text
//! RPM=5 cargo run -p codex-rate-limit --example rate_limit_server
//! for i in 1 2 3 4 5 6; do curl -si http://127.0.0.1:PORT/ | head -1; done   # five 200s, then 429
//! curl -i http://127.0.0.1:PORT/                 # x-ratelimit-* headers, or the 429's Retry-After
//! curl -N http://127.0.0.1:PORT/stream &         # a 5 s stream holds this IP's only stream slot
//! curl -i http://127.0.0.1:PORT/stream           # 429 "Too many concurrent requests" meanwhile
//! ```
//!
//! Listens on 127.0.0.1:$PORT (an ephemeral port when unset). Ctrl-C stops accepting
//! and gives open connections 10 s to finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use codex_layer_example_server::BoxError;
use codex_rate_limit::{ConcurrencyPermit, KeyedConcurrency, Quota, RateKey, RateLimitLayer};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::{interval, Interval};
use tower::ServiceBuilder;

type ResBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Five SSE events a second apart. It owns the stream slot, so the slot frees when the
/// stream ends or the client disconnects and hyper drops the body.
struct Ticks {
    _permit: ConcurrencyPermit,
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
        let event = format!("data: {} left\n\n", self.left);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }
}

/// The example server puts the peer's address in every request's extensions.
fn peer_ip(req: &Request<Incoming>) -> Option<String> {
    req.extensions()
        .get::<SocketAddr>()
        .map(|peer| peer.ip().to_string())
}

async fn handle(
    streams: KeyedConcurrency,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    if req.uri().path() != "/stream" {
        return Ok(Response::new(Full::new(Bytes::from("ok\n")).boxed()));
    }
    let ip = peer_ip(&req).unwrap_or_default();
    match streams.try_acquire(&ip) {
        Ok(permit) => {
            let body = Ticks {
                _permit: permit,
                left: 5,
                every: interval(Duration::from_secs(1)),
            };
            let res = Response::builder()
                .header("content-type", "text/event-stream")
                .body(body.boxed())
                .expect("valid response");
            Ok(res)
        }
        Err(exceeded) => Ok(exceeded.to_response().map(BodyExt::boxed)),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let rpm: u32 = std::env::var("RPM").map_or(Ok(5), |p| p.parse())?;

    // One bucket per client IP; requests without a peer address are not limited.
    let policy = move |req: &Request<Incoming>| {
        peer_ip(req).map(|ip| RateKey::new(ip, Quota::per_minute(rpm)))
    };
    let streams = KeyedConcurrency::new(1);
    let service = ServiceBuilder::new()
        // Rate-limit first: a refused request must not take a stream slot.
        .layer(RateLimitLayer::new(policy).max_keys(10_000))
        .service_fn(move |req| handle(streams.clone(), req));

    let listener = codex_layer_example_server::bind_from_env_or_args(0).await?;
    codex_layer_example_server::serve(listener, service).await;
    Ok(())
}

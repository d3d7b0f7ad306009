//! A plain hyper server that streams a counter as OpenAI-style
//! `chat.completion.chunk` events through `SseLayer`.
//!
//! ```text
//! cargo run -p codex-sse --example sse_server            # listens on 127.0.0.1:3000
//! curl -N 'http://127.0.0.1:3000/v1/chat/completions?n=3'
//! curl -N 'http://127.0.0.1:3000/v1/chat/completions?n=2&delay_ms=2500'   # keep-alives
//! curl -i  http://127.0.0.1:3000/other                                    # plain JSON 404
//! ```
//!
//! The port can be given as the first argument (or in `$PORT`). Ctrl-C stops
//! accepting and gives open connections 10 s to finish.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use codex_layer_example_server::BoxError;
use codex_sse::{EventStream, Payload, SseEvent, SseLayer};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use tokio::sync::mpsc;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let service = ServiceBuilder::new()
        // A short keep-alive so `delay_ms` above one second shows the comments.
        .layer(SseLayer::new().keep_alive(Duration::from_secs(1)))
        .service_fn(handle);

    let listener = codex_layer_example_server::bind_from_env_or_args(3000).await?;
    codex_layer_example_server::serve(listener, service).await;
    Ok(())
}

/// The inner service: answers with events or with an ordinary JSON body.
async fn handle(req: Request<Incoming>) -> Result<Response<Payload<Full<Bytes>>>, Infallible> {
    if req.uri().path() != "/v1/chat/completions" {
        let error = json!({"error": {
            "message": "Unknown path; try /v1/chat/completions",
            "type": "invalid_request_error",
            "param": null,
            "code": "unknown_url",
        }});
        let body = Full::new(Bytes::from(error.to_string()));
        let response = Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "application/json")
            .body(Payload::Body(body))
            .expect("static response parts are valid");
        return Ok(response);
    }

    let (n, delay) = params(req.uri().query().unwrap_or(""));
    // Capacity 4: if the client reads slowly, `send` waits, and the counter
    // runs at most four chunks ahead of what went out on the socket.
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for i in 1..=n {
            let delta = if i == 1 {
                json!({"role": "assistant", "content": format!("{i}")})
            } else {
                json!({"content": format!(" {i}")})
            };
            if tx.send(chunk(delta, None)).await.is_err() {
                eprintln!("client went away after {} chunks", i - 1);
                return;
            }
            tokio::time::sleep(delay).await;
        }
        let _ = tx.send(chunk(json!({}), Some("stop"))).await;
    });
    Ok(Response::new(Payload::Events(EventStream::from_receiver(
        rx,
    ))))
}

fn chunk(delta: serde_json::Value, finish_reason: Option<&str>) -> SseEvent {
    SseEvent::json(&json!({
        "id": "chatcmpl-counter",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "counter",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }))
    .expect("a serde_json::Value always serializes")
}

/// `n` (default 5, at most 1000) and `delay_ms` (default 200) from the query.
fn params(query: &str) -> (u64, Duration) {
    let mut n = 5;
    let mut delay_ms = 200;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("n", v)) => n = v.parse().unwrap_or(n).min(1000),
            Some(("delay_ms", v)) => delay_ms = v.parse().unwrap_or(delay_ms).min(60_000),
            _ => {}
        }
    }
    (n, Duration::from_millis(delay_ms))
}

//! Turns a stream of typed events into OpenAI-style Server-Sent Events, with
//! keep-alives and backpressure.
//!
//! The inner service answers with a [`Payload`]: `Payload::Body` for an
//! ordinary reply, passed through untouched, or `Payload::Events` with an
//! [`EventStream`] of [`SseEvent`]s. [`SseLayer`] turns the latter into a
//! `text/event-stream` response whose [`SseBody`] pulls events only as the
//! client takes frames (a slow client slows the producer), gathers the events
//! that are ready together into one frame (never waiting for one), sends a comment
//! after a stretch of silence (idle proxies keep the connection), and ends
//! with `data: [DONE]` as chat-completions clients expect (the Responses API
//! opts out with [`EventStream::done_marker`]). [`EventStream::ndjson`]
//! writes the same events as newline-delimited JSON instead
//! (`application/x-ndjson`, as the Ollama API streams).
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use codex_sse::{EventStream, Payload, SseEvent, SseLayer};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(SseLayer::new().keep_alive(Duration::from_secs(15)))
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         let (tx, rx) = tokio::sync::mpsc::channel(16);
//!         tokio::spawn(async move {
//!             let chunk = serde_json::json!({"object": "chat.completion.chunk"});
//!             let _ = tx.send(SseEvent::json(&chunk).unwrap()).await;
//!         });
//!         let events = EventStream::from_receiver(rx);
//!         Ok::<_, Infallible>(Response::new(Payload::<Full<Bytes>>::Events(events)))
//!     });
//!
//! let res = svc.oneshot(Request::new(Full::default())).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["content-type"], "text/event-stream");
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(
//!     body,
//!     "data: {\"object\":\"chat.completion.chunk\"}\n\ndata: [DONE]\n\n"
//! );
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod event;
mod future;
mod layer;
mod payload;
mod service;
mod sse_body;
mod stream;

pub use body::ResponseBody;
pub use event::SseEvent;
pub use future::ResponseFuture;
pub use layer::SseLayer;
pub use payload::Payload;
pub use service::Sse;
pub use sse_body::SseBody;
pub use stream::{EventStream, Framing};

// Keeps the README's examples compiling.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

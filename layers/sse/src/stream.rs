//! The stream of events an inner service hands to the layer.
//!
//! The stream is boxed so that `Payload<B>` and the response body stay one
//! concrete type whatever produced the events: a worker's `mpsc` channel, a
//! `stream::iter` in a test, a mapped upstream response.
//!
//! It is wrapped in a `Mutex` that is never locked. `Mutex<T>` is `Sync` when
//! `T` is only `Send`, and `Mutex::get_mut` reaches the value through `&mut`
//! without locking. That makes the response body `Sync`, so a gateway can erase
//! it into `http_body_util::combinators::BoxBody` (which demands `Sync`) without
//! requiring every event source to be `Sync`.

use std::fmt;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::SseEvent;

type BoxStream = Pin<Box<dyn Stream<Item = SseEvent> + Send + 'static>>;

/// A boxed stream of [`SseEvent`]s plus how to end it.
///
/// Nothing is pulled from it until the HTTP connection asks for the next body
/// frame, so a bounded source (see [`EventStream::from_receiver`]) slows its
/// producer down to the client's pace.
pub struct EventStream {
    inner: Mutex<BoxStream>,
    done_marker: bool,
    framing: Framing,
}

/// How each event goes on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// Server-Sent Events (`text/event-stream`): `data: …\n\n` frames,
    /// comment keep-alives, and the `[DONE]` marker unless opted out.
    #[default]
    Sse,
    /// Newline-delimited JSON (`application/x-ndjson`, as Ollama streams):
    /// each event's data on one line. No marker, no event names, and no
    /// keep-alive, since every line a client reads must parse as JSON.
    /// Comments are not sent.
    Ndjson,
}

// === impl EventStream ===

impl EventStream {
    /// Wraps any `Send` stream of events.
    pub fn new<S>(stream: S) -> Self
    where
        S: Stream<Item = SseEvent> + Send + 'static,
    {
        Self {
            inner: Mutex::new(Box::pin(stream)),
            done_marker: true,
            framing: Framing::Sse,
        }
    }

    /// Wraps the receiving half of a bounded channel.
    ///
    /// The stream ends when every sender is dropped. When the client goes away
    /// the body, and with it the receiver, is dropped, so the producer's next
    /// `send` fails and it can stop working.
    pub fn from_receiver(receiver: mpsc::Receiver<SseEvent>) -> Self {
        Self::new(ReceiverStream { receiver })
    }

    /// Whether to send `data: [DONE]\n\n` after the last event.
    ///
    /// On by default: OpenAI's chat-completions stream ends that way and
    /// clients wait for it. The Responses API ends with a named
    /// `response.completed` event instead and sends no marker: set `false`.
    #[must_use]
    pub fn done_marker(mut self, enabled: bool) -> Self {
        self.done_marker = enabled;
        self
    }

    /// Whether `data: [DONE]\n\n` follows the last event.
    pub fn has_done_marker(&self) -> bool {
        self.done_marker && self.framing == Framing::Sse
    }

    /// Writes the events as newline-delimited JSON instead of SSE (see
    /// [`Framing::Ndjson`]): implies no `[DONE]` marker and no keep-alive.
    #[must_use]
    pub fn ndjson(mut self) -> Self {
        self.framing = Framing::Ndjson;
        self
    }

    /// How the events go on the wire.
    pub fn framing(&self) -> Framing {
        self.framing
    }
}

impl Stream for EventStream {
    type Item = SseEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SseEvent>> {
        // Never locked, so never poisoned; `into_inner` just unwraps.
        let this = self.get_mut();
        let inner = this.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("done_marker", &self.done_marker)
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

/// `tokio_stream::wrappers::ReceiverStream`, without the dependency.
struct ReceiverStream {
    receiver: mpsc::Receiver<SseEvent>,
}

impl Stream for ReceiverStream {
    type Item = SseEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SseEvent>> {
        self.receiver.poll_recv(cx)
    }
}

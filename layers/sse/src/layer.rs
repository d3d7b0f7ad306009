//! The layer: keep-alive settings, applied to every service it wraps.

use std::time::Duration;

use tower_layer::Layer;

use crate::sse_body::KeepAlive;
use crate::Sse;

/// Applies [`Sse`] to a service whose response body is a
/// [`Payload`](crate::Payload).
///
/// Defaults: a `: keep-alive` comment after 15 s without a frame.
#[derive(Clone, Debug, Default)]
pub struct SseLayer {
    keep_alive: KeepAlive,
}

impl SseLayer {
    /// A layer with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends a keep-alive comment after `interval` without any frame.
    /// `Duration::ZERO` turns keep-alives off.
    ///
    /// Pick it below the shortest idle timeout between the gateway and its
    /// clients (nginx's `proxy_read_timeout` is 60 s by default).
    #[must_use]
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = self.keep_alive.interval(interval);
        self
    }

    /// The text of the keep-alive comment (default `"keep-alive"`).
    #[must_use]
    pub fn keep_alive_text(mut self, text: &'static str) -> Self {
        self.keep_alive = self.keep_alive.text(text);
        self
    }
}

impl<S> Layer<S> for SseLayer {
    type Service = Sse<S>;

    fn layer(&self, inner: S) -> Sse<S> {
        Sse::with_keep_alive(inner, self.keep_alive.clone())
    }
}

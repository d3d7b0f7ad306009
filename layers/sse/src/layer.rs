//! The layer: keep-alive settings, applied to every service it wraps.

use std::time::Duration;

use tower_layer::Layer;

use crate::sse_body::BodySettings;
use crate::Sse;

/// Applies [`Sse`] to a service whose response body is a
/// [`Payload`](crate::Payload).
///
/// Defaults: a `: keep-alive` comment after 15 s without a frame, and up to
/// 16 KiB of events that are ready together in one frame.
#[derive(Clone, Debug, Default)]
pub struct SseLayer {
    settings: BodySettings,
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
        self.settings.keep_alive.set_interval(interval);
        self
    }

    /// The text of the keep-alive comment (default `"keep-alive"`).
    #[must_use]
    pub fn keep_alive_text(mut self, text: &'static str) -> Self {
        self.settings.keep_alive.set_text(text);
        self
    }

    /// Gathers events that are ready together into one frame of up to
    /// `max_bytes` (default 16 KiB; a frame passes it by at most its last
    /// event). `0` sends each event in a frame of its own.
    ///
    /// A frame never waits for an event that is not there yet: the first
    /// token goes out as soon as it exists. What it saves is the per-frame
    /// work (HTTP/1 chunk headers, every body layer's `poll_frame`, an
    /// allocation per event) when a burst arrives at once.
    #[must_use]
    pub fn coalesce(mut self, max_bytes: usize) -> Self {
        self.settings.coalesce = max_bytes;
        self
    }
}

impl<S> Layer<S> for SseLayer {
    type Service = Sse<S>;

    fn layer(&self, inner: S) -> Sse<S> {
        Sse::with_settings(inner, self.settings.clone())
    }
}

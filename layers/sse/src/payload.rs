//! What the inner service returns as its response body.
//!
//! One handler answers both `stream: false` (a JSON body) and `stream: true`
//! (events) for the same route, so the inner service's body type must hold
//! either. The layer leaves `Body` untouched and turns `Events` into SSE.

use crate::EventStream;

/// The inner service's response body: an ordinary body, or events to stream.
#[derive(Debug)]
pub enum Payload<B> {
    /// An ordinary reply (JSON, an error envelope, …), passed through as is.
    Body(B),
    /// Events to send as `text/event-stream`.
    Events(EventStream),
}

impl<B> From<EventStream> for Payload<B> {
    fn from(events: EventStream) -> Self {
        Payload::Events(events)
    }
}

//! [`Renderer`]: one dialect's output shapes, fed by the pipeline.
//!
//! The pipeline calls `opening` once (streamed responses only), `event` for
//! every [`RunEvent`], and then either `closing` (streamed) or `collected`
//! (not streamed). Between the last event and the end the client sees,
//! `finished` lets a dialect that keeps its responses record this one. A
//! renderer never parses requests and never sees a turn.

use std::future::Future;
use std::pin::Pin;

use codex_sse::SseEvent;

use super::run::RunEvent;
use crate::api::error::ApiError;

pub trait Renderer: Send + 'static {
    /// Whether a stream ends with `data: [DONE]` (chat) or not (Responses
    /// ends with its own terminal event).
    const DONE_MARKER: bool;

    /// Frames sent before the first event of a stream.
    fn opening(&mut self) -> Vec<SseEvent>;

    /// Takes one event: the frames it produces when streaming; when not
    /// streaming, the renderer only accumulates (the frames are dropped).
    fn event(&mut self, event: &RunEvent) -> Vec<SseEvent>;

    /// Frames that end a stream.
    fn closing(&mut self) -> Vec<SseEvent>;

    /// The whole body of a non-streamed response (serialized as it is), or
    /// the error it failed with.
    type Collected: serde::Serialize;

    /// See [`Renderer::Collected`].
    fn collected(self) -> Result<Self::Collected, ApiError>;

    /// Work to finish once the response is complete and before its end
    /// reaches the client (storing it, so a follow-up sent the moment the
    /// client sees the end finds it). Called after `closing` when
    /// streaming, before `collected` when not. Default: nothing.
    fn finished(&mut self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        None
    }
}

//! [`Renderer`]: one dialect's output shapes, fed by the pipeline.
//!
//! The pipeline calls `opening` once (streamed responses only), `event` for
//! every [`RunEvent`], and then either `closing` (streamed) or `collected`
//! (not streamed). A renderer never parses requests and never sees a turn.

use codex_sse::SseEvent;
use serde_json::Value;

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

    /// The whole body of a non-streamed response, or the error it failed with.
    fn collected(self) -> Result<Value, ApiError>;
}

//! [`ResponseFuture`]: either the inner service's response or a ready 400.

/// Response future of [`OutputModeService`](crate::OutputModeService).
///
/// Resolves to the inner response with its body untouched or to the 400, both
/// as a [`ResponseBody`](crate::ResponseBody). The type is shared with the
/// other rejecting layers through `codex-layer-support`.
pub type ResponseFuture<F> = codex_layer_support::RejectOr<F>;

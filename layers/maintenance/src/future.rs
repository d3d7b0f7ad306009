//! [`ResponseFuture`]: either the inner service's response or a ready 503.

/// Response future of [`Maintenance`](crate::Maintenance).
///
/// Resolves to the inner response with its body untouched or to the 503, both
/// as a [`ResponseBody`](crate::ResponseBody). The type is shared with the
/// other rejecting layers through `codex-layer-support`.
pub type ResponseFuture<F> = codex_layer_support::RejectOr<F>;

//! Where a request's default mode comes from when it sends no header.
//!
//! One gateway often serves Obsidian (which reads `<use_tool>` XML) and SDK
//! clients (which read `tool_calls`) side by side; the operator knows which
//! key or route belongs to which, so the default may depend on the request.
//! Any `Fn(&Request<B>) -> Option<OutputMode> + Clone` is a policy; `None`
//! falls back to the layer's fixed default.

use http::Request;

use crate::OutputMode;

/// Decides the default [`OutputMode`] of a request that does not choose one.
pub trait DefaultModePolicy<B> {
    /// The mode for `request`, or `None` for the layer's fixed default.
    fn default_mode(&self, request: &Request<B>) -> Option<OutputMode>;
}

impl<B, F> DefaultModePolicy<B> for F
where
    F: Fn(&Request<B>) -> Option<OutputMode>,
{
    fn default_mode(&self, request: &Request<B>) -> Option<OutputMode> {
        self(request)
    }
}

/// The default policy: every request without a header gets the fixed default.
#[derive(Clone, Copy, Debug, Default)]
pub struct FixedDefault;

impl<B> DefaultModePolicy<B> for FixedDefault {
    fn default_mode(&self, _request: &Request<B>) -> Option<OutputMode> {
        None
    }
}

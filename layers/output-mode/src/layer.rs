//! [`OutputModeLayer`]: the default mode and the header that overrides it.

use http::HeaderName;
use tower_layer::Layer;

use crate::{OutputMode, OutputModeService};

/// Wraps services in [`OutputModeService`], which puts the request's
/// [`OutputMode`] in its extensions: the `x-proxy-output-mode` header's value
/// if present, otherwise the layer's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutputModeLayer {
    default: OutputMode,
}

impl OutputModeLayer {
    /// The request header that selects the mode.
    pub const HEADER: HeaderName = HeaderName::from_static("x-proxy-output-mode");

    /// Uses `default` for requests that do not choose a mode.
    pub fn new(default: OutputMode) -> Self {
        Self { default }
    }
}

impl<S> Layer<S> for OutputModeLayer {
    type Service = OutputModeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OutputModeService::new(inner, self.default)
    }
}

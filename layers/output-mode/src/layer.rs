//! [`OutputModeLayer`]: the default mode and the header that overrides it.

use http::HeaderName;
use tower_layer::Layer;

use crate::{FixedDefault, OutputMode, OutputModeService};

/// Wraps services in [`OutputModeService`], which puts the request's
/// [`OutputMode`] in its extensions: the `x-proxy-output-mode` header's value
/// if present, else what the policy `P` says for the request, else the
/// layer's fixed default.
#[derive(Clone, Copy, Debug)]
pub struct OutputModeLayer<P = FixedDefault> {
    default: OutputMode,
    policy: P,
}

impl OutputModeLayer {
    /// The request header that selects the mode.
    pub const HEADER: HeaderName = HeaderName::from_static("x-proxy-output-mode");

    /// Uses `default` for requests that do not choose a mode.
    pub fn new(default: OutputMode) -> Self {
        Self {
            default,
            policy: FixedDefault,
        }
    }
}

// By hand: a derived `Default` would be generic in `P`, and
// `OutputModeLayer::default()` could not infer it.
impl Default for OutputModeLayer {
    fn default() -> Self {
        Self::new(OutputMode::default())
    }
}

impl<P> OutputModeLayer<P> {
    /// Lets `policy` pick the default of each request that sends no header
    /// (per key, per route); where it says `None`, the fixed default holds.
    pub fn default_by<Q>(self, policy: Q) -> OutputModeLayer<Q> {
        OutputModeLayer {
            default: self.default,
            policy,
        }
    }
}

impl<S, P: Clone> Layer<S> for OutputModeLayer<P> {
    type Service = OutputModeService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        OutputModeService::with_policy(inner, self.default, self.policy.clone())
    }
}

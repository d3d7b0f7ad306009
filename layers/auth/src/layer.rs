//! [`RequireAuthLayer`]: configuration shared by every clone of the service.

use std::fmt;

use tower_layer::Layer;

use crate::{KeySet, NoExemptions, RequireAuth};

/// Wraps services in [`RequireAuth`], which admits only requests carrying a
/// configured bearer key (or exempted by the policy `P`).
#[derive(Clone)]
pub struct RequireAuthLayer<P = NoExemptions> {
    keys: KeySet,
    policy: P,
}

impl RequireAuthLayer {
    /// Requires one of `keys` on every request.
    pub fn new(keys: KeySet) -> Self {
        Self {
            keys,
            policy: NoExemptions,
        }
    }
}

impl<P> RequireAuthLayer<P> {
    /// Lets requests for which `policy` answers `true` pass without a key;
    /// replaces any previous policy. `policy` is usually a closure
    /// `|req: &Request<B>| -> bool`, see [`AuthPolicy`](crate::AuthPolicy).
    pub fn exempt<Q>(self, policy: Q) -> RequireAuthLayer<Q> {
        RequireAuthLayer {
            keys: self.keys,
            policy,
        }
    }
}

impl<S, P: Clone> Layer<S> for RequireAuthLayer<P> {
    type Service = RequireAuth<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth::new(inner, self.keys.clone()).exempt(self.policy.clone())
    }
}

impl<P> fmt::Debug for RequireAuthLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireAuthLayer")
            .field("keys", &self.keys)
            .field("policy", &std::any::type_name::<P>())
            .finish()
    }
}

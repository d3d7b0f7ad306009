//! [`MaintenanceLayer`]: builds services that all obey one switch.

use std::fmt;

use tower_layer::Layer;

use crate::{Maintenance, MaintenanceConfig, MaintenanceHandle, NoExemptions};

/// Wraps services in [`Maintenance`]. Every service it builds, and every
/// clone of those, follows the [`MaintenanceHandle`] returned by
/// [`pair`](Self::pair): hyper clones the stack per connection, so the switch
/// has to live in shared state, not in the service.
#[derive(Clone)]
pub struct MaintenanceLayer<P = NoExemptions> {
    handle: MaintenanceHandle,
    policy: P,
}

impl MaintenanceLayer {
    /// A layer and the handle that switches it, starting as `config` says.
    pub fn pair(config: MaintenanceConfig) -> (Self, MaintenanceHandle) {
        let handle = MaintenanceHandle::new(config);
        let layer = Self {
            handle: handle.clone(),
            policy: NoExemptions,
        };
        (layer, handle)
    }
}

impl<P> MaintenanceLayer<P> {
    /// Keeps serving requests for which `policy` answers `true` (probes,
    /// metrics, the admin endpoint); replaces any previous policy. `policy`
    /// is usually a closure `|req: &Request<B>| -> bool`, see
    /// [`MaintenancePolicy`](crate::MaintenancePolicy).
    pub fn exempt<Q>(self, policy: Q) -> MaintenanceLayer<Q> {
        MaintenanceLayer {
            handle: self.handle,
            policy,
        }
    }

    /// Another handle on this layer's switch.
    pub fn handle(&self) -> MaintenanceHandle {
        self.handle.clone()
    }
}

impl<S, P: Clone> Layer<S> for MaintenanceLayer<P> {
    type Service = Maintenance<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Maintenance::new(inner, self.handle.clone(), self.policy.clone())
    }
}

impl<P> fmt::Debug for MaintenanceLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaintenanceLayer")
            .field("handle", &self.handle)
            .field("policy", &std::any::type_name::<P>())
            .finish()
    }
}

//! [`MaintenanceHandle`]: the run-time switch, shared with every service.
//!
//! The flag is read on every request, so it is an `AtomicBool`: no lock on
//! the hot path. The message changes rarely and is read only while
//! rejecting, so it sits behind an `RwLock` together with the JSON body
//! already rendered from it; the lock is held just long enough to clone an
//! `Arc` and a `Bytes`, never across an `.await`.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, PoisonError, RwLock,
    },
};

use bytes::Bytes;
use http::HeaderValue;

use crate::{rejection, MaintenanceConfig};

/// Turns maintenance mode on and off for every service built from the
/// [`MaintenanceLayer`](crate::MaintenanceLayer) it was paired with.
///
/// Cloning is cheap and every clone controls the same switch.
#[derive(Clone)]
pub struct MaintenanceHandle {
    state: Arc<State>,
}

struct State {
    enabled: AtomicBool,
    retry_after_secs: u64,
    retry_after: HeaderValue,
    notice: RwLock<Notice>,
}

/// The current message and the rejection body rendered from it.
#[derive(Clone)]
pub(crate) struct Notice {
    pub(crate) message: Arc<str>,
    pub(crate) body: Bytes,
}

impl Notice {
    fn new(message: String) -> Self {
        let body = rejection::body(&message);
        Self {
            message: message.into(),
            body,
        }
    }
}

impl MaintenanceHandle {
    pub(crate) fn new(config: MaintenanceConfig) -> Self {
        Self {
            state: Arc::new(State {
                enabled: AtomicBool::new(config.enabled),
                retry_after_secs: config.retry_after_secs,
                retry_after: HeaderValue::from(config.retry_after_secs),
                notice: RwLock::new(Notice::new(config.message)),
            }),
        }
    }

    /// Starts turning API requests away.
    pub fn enable(&self) {
        self.set(true);
    }

    /// Lets API requests through again.
    pub fn disable(&self) {
        self.set(false);
    }

    /// Turns maintenance mode on (`true`) or off.
    pub fn set(&self, enabled: bool) {
        self.state.enabled.store(enabled, Ordering::Release);
    }

    /// Whether requests are currently turned away.
    pub fn is_enabled(&self) -> bool {
        self.state.enabled.load(Ordering::Acquire)
    }

    /// Replaces the message clients see; takes effect on the next rejection.
    pub fn set_message(&self, message: impl Into<String>) {
        // Rendered before taking the lock so writers hold it only to swap.
        let notice = Notice::new(message.into());
        *self
            .state
            .notice
            .write()
            .unwrap_or_else(PoisonError::into_inner) = notice;
    }

    /// The message clients currently see.
    pub fn message(&self) -> Arc<str> {
        self.notice().message
    }

    /// Seconds sent in `Retry-After`.
    pub fn retry_after_secs(&self) -> u64 {
        self.state.retry_after_secs
    }

    pub(crate) fn notice(&self) -> Notice {
        self.state
            .notice
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn retry_after(&self) -> &HeaderValue {
        &self.state.retry_after
    }
}

impl fmt::Debug for MaintenanceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaintenanceHandle")
            .field("enabled", &self.is_enabled())
            .field("retry_after_secs", &self.retry_after_secs())
            .field("message", &self.message())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    #[test]
    fn clones_share_one_switch() {
        let a = MaintenanceHandle::new(MaintenanceConfig::default());
        let b = a.clone();
        assert!(!a.is_enabled());
        b.enable();
        assert!(a.is_enabled());
        a.set(false);
        assert!(!b.is_enabled());
        a.set_message("back at noon");
        assert_eq!(&*b.message(), "back at noon");
        assert_eq!(b.retry_after_secs(), 30);
    }

    #[test]
    fn concurrent_toggling_and_messages_never_tear() {
        let handle = MaintenanceHandle::new(MaintenanceConfig::default());
        let messages: Vec<String> = (0..4)
            .map(|i| format!("window {i} {}", "x".repeat(i * 50)))
            .collect();
        // Readers may run before any writer: they must see one of these too,
        // not the default message.
        handle.set_message(messages[0].clone());

        thread::scope(|scope| {
            for (i, message) in messages.iter().enumerate() {
                let handle = handle.clone();
                scope.spawn(move || {
                    for n in 0..2_000 {
                        handle.set(n % 2 == i % 2);
                        handle.set_message(message.clone());
                    }
                });
            }
            for _ in 0..2 {
                let handle = handle.clone();
                let messages = &messages;
                scope.spawn(move || {
                    for _ in 0..2_000 {
                        let notice = handle.notice();
                        assert!(messages.iter().any(|m| **m == *notice.message));
                        // The rendered body always belongs to the message beside it.
                        assert_eq!(notice.body, rejection::body(&notice.message));
                        let _ = handle.is_enabled();
                    }
                });
            }
        });

        // Once the writers are done, the last write is what everybody sees.
        handle.enable();
        assert!(handle.clone().is_enabled());
        handle.disable();
        assert!(!handle.clone().is_enabled());
    }
}

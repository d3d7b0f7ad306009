//! What a request is limited by: a bucket name and the quota that applies to it.
//!
//! A quota is stated the way operators write it ("60 requests per minute") and converted
//! to governor's GCRA parameters only inside the limiter: the burst is `max` and one
//! request is replenished every `window / max`, so an idle key can spend its whole quota
//! at once and then gets one more request per `window / max`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// At most `max` requests per `window`, with bursts of up to `max`.
///
/// `max == 0` rejects every request in the bucket (a key that is known but not allowed
/// to make requests). A zero `window` is clamped to one nanosecond per request, which is
/// effectively unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests allowed per window; also the burst size.
    pub max: u32,
    /// The window over which `max` requests replenish.
    pub window: Duration,
}

impl Quota {
    /// `max` requests per `window`.
    pub const fn new(max: u32, window: Duration) -> Self {
        Self { max, window }
    }

    /// `max` requests per second.
    pub const fn per_second(max: u32) -> Self {
        Self::new(max, Duration::from_secs(1))
    }

    /// `max` requests per minute.
    pub const fn per_minute(max: u32) -> Self {
        Self::new(max, Duration::from_secs(60))
    }

    /// The time it takes to replenish one request (`window / max`), at least 1 ns.
    pub(crate) fn replenish_interval(&self) -> Duration {
        let per = self.window / self.max.max(1);
        per.max(Duration::from_nanos(1))
    }

    /// governor's quota for this one; `None` for `max == 0`, which governor cannot express.
    pub(crate) fn to_governor(self) -> Option<governor::Quota> {
        let burst = NonZeroU32::new(self.max)?;
        governor::Quota::with_period(self.replenish_interval()).map(|q| q.allow_burst(burst))
    }
}

/// The bucket a request is counted in, and the quota of that bucket.
///
/// State is kept per `(key, quota)`: two requests with the same key but different quotas
/// (say a per-key limit and a stricter per-route limit expressed as a different key
/// prefix) never share a bucket, and changing a key's quota starts it afresh.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RateKey {
    /// Bucket name, e.g. an API key id, a peer IP, or `"route:/v1/chat"`.
    pub key: Arc<str>,
    /// The quota of this bucket.
    pub quota: Quota,
}

impl RateKey {
    /// A bucket named `key` limited to `quota`.
    pub fn new(key: impl Into<Arc<str>>, quota: Quota) -> Self {
        Self {
            key: key.into(),
            quota,
        }
    }
}

// Keys may be API keys: never print them.
impl std::fmt::Debug for RateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateKey")
            .field("key", &"***")
            .field("quota", &self.quota)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn governor_quota_has_burst_max_and_replenishes_one_per_window_over_max() {
        let q = Quota::per_minute(60).to_governor().unwrap();
        assert_eq!(q.burst_size().get(), 60);
        assert_eq!(q.replenish_interval(), Duration::from_secs(1));
    }

    #[test]
    fn zero_max_has_no_governor_quota_and_zero_window_is_clamped() {
        assert!(Quota::new(0, Duration::from_secs(1))
            .to_governor()
            .is_none());
        let q = Quota::new(5, Duration::ZERO).to_governor().unwrap();
        assert_eq!(q.replenish_interval(), Duration::from_nanos(1));
    }

    #[test]
    fn debug_hides_the_key() {
        let k = RateKey::new("sk-secret", Quota::per_second(1));
        assert!(!format!("{k:?}").contains("sk-secret"));
    }
}

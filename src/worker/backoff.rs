//! Exponential restart delay with jitter.

use std::time::Duration;

use rand::Rng;

/// `initial * 2^(failures-1)`, capped at `max`, then scaled by a random
/// factor in [0.5, 1.0] ("equal jitter") so a fleet of gateways restarting
/// their workers together does not do so in lockstep.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The upper bound of the delay after `failures` consecutive failures (≥ 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(1u32 << exp).min(self.max)
    }

    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        let factor: f64 = rand::rng().random_range(0.5..=1.0);
        ceiling.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_and_jitters_below_the_ceiling() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_millis(5000),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(500));
        assert_eq!(b.ceiling(2), Duration::from_millis(1000));
        assert_eq!(b.ceiling(4), Duration::from_millis(4000));
        assert_eq!(b.ceiling(5), Duration::from_millis(5000));
        assert_eq!(b.ceiling(1000), Duration::from_millis(5000));
        for failures in 1..10 {
            let d = b.delay(failures);
            assert!(
                d <= b.ceiling(failures) && d >= b.ceiling(failures) / 2,
                "{d:?}"
            );
        }
    }
}

//! When to restart the worker, and when to stop trying.
//!
//! Two questions with two counters, because they have different causes:
//!
//! - **How long to wait** depends on how often the worker has failed lately
//!   (`failures`): the backoff spaces *starts*, counted from the previous
//!   start, so a worker that already ran longer than its backoff restarts at
//!   once, and only a worker that keeps dying young waits. A worker that
//!   stays ready for `healthy_reset` clears the count, so the first restart
//!   after a healthy run is always immediate.
//! - **When to give up** depends on whether the worker can start at all
//!   (`failed_starts`): only starts that never reach ready count, and one
//!   that does clears them. A worker that crashes now and then, however
//!   often, is restarted for as long as it keeps starting; a broken
//!   `CODEX_BIN` or `CODEX_HOME` is given up on after `restart_max` tries.
//!
//! Pure bookkeeping: the supervisor reports what happened and applies the
//! decision, so the policy is tested without processes or clocks.

use std::time::Duration;

use super::backoff::Backoff;

/// What the supervisor should do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start again after this delay (zero: at once).
    Restart { after: Duration },
    /// Stop trying: the worker failed to start `restart_max` times in a row.
    GiveUp,
}

/// The restart policy's state. See the module docs.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    backoff: Backoff,
    restart_max: u32,
    failures: u32,
    failed_starts: u32,
}

impl RestartPolicy {
    pub fn new(backoff: Backoff, restart_max: u32) -> RestartPolicy {
        RestartPolicy {
            backoff,
            restart_max,
            failures: 0,
            failed_starts: 0,
        }
    }

    /// Failures since the worker was last healthy (what the backoff uses).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Starts in a row that never reached ready (what the give-up uses).
    pub fn failed_starts(&self) -> u32 {
        self.failed_starts
    }

    /// The worker finished its handshake: it can start, whatever comes next.
    pub fn on_ready(&mut self) {
        self.failed_starts = 0;
    }

    /// The worker has stayed ready for `WORKER_HEALTHY_RESET_MS`.
    pub fn on_healthy(&mut self) {
        self.failures = 0;
    }

    /// The worker failed `up_for` after it was spawned (or failed to spawn:
    /// zero); `reached_ready` says whether it had finished its handshake.
    pub fn on_failure(&mut self, up_for: Duration, reached_ready: bool) -> Decision {
        self.failures = self.failures.saturating_add(1);
        if !reached_ready {
            self.failed_starts = self.failed_starts.saturating_add(1);
            if self.failed_starts >= self.restart_max {
                return Decision::GiveUp;
            }
        }
        // The backoff bounds how often the worker starts; time it already
        // ran counts towards it.
        let after = self.backoff.delay(self.failures).saturating_sub(up_for);
        Decision::Restart { after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(restart_max: u32) -> RestartPolicy {
        RestartPolicy::new(
            Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_millis(5000),
            },
            restart_max,
        )
    }

    fn delay(d: Decision) -> Duration {
        match d {
            Decision::Restart { after } => after,
            Decision::GiveUp => panic!("gave up"),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn crashes_of_a_worker_that_started_never_make_it_give_up() {
        // The reported case: 20 crashes hours apart, then 5 quick ones.
        let mut p = policy(25);
        for _ in 0..20 {
            p.on_ready();
            p.on_healthy();
            assert_eq!(
                p.on_failure(HOUR, true),
                Decision::Restart {
                    after: Duration::ZERO
                }
            );
        }
        for _ in 0..5 {
            p.on_ready();
            assert!(matches!(
                p.on_failure(SECOND / 10, true),
                Decision::Restart { .. }
            ));
        }
        // Even a hundred crashes right after the handshake do not.
        for _ in 0..100 {
            p.on_ready();
            assert!(matches!(
                p.on_failure(Duration::ZERO, true),
                Decision::Restart { .. }
            ));
        }
        assert_eq!(p.failed_starts(), 0);
    }

    #[test]
    fn a_worker_that_cannot_start_is_given_up_on_after_restart_max_tries() {
        let mut p = policy(3);
        assert!(matches!(
            p.on_failure(Duration::ZERO, false),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            p.on_failure(Duration::ZERO, false),
            Decision::Restart { .. }
        ));
        assert_eq!(p.on_failure(Duration::ZERO, false), Decision::GiveUp);

        // A start that reaches ready clears the count.
        let mut p = policy(3);
        p.on_failure(Duration::ZERO, false);
        p.on_failure(Duration::ZERO, false);
        p.on_ready();
        assert_eq!(p.failed_starts(), 0);
        assert!(matches!(
            p.on_failure(SECOND, true),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            p.on_failure(Duration::ZERO, false),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            p.on_failure(Duration::ZERO, false),
            Decision::Restart { .. }
        ));
        assert_eq!(p.on_failure(Duration::ZERO, false), Decision::GiveUp);
    }

    #[test]
    fn the_first_restart_after_a_healthy_run_is_immediate() {
        let mut p = policy(25);
        // Some quick failures push the backoff up...
        for _ in 0..6 {
            p.on_failure(Duration::ZERO, false);
        }
        assert!(delay(p.on_failure(Duration::ZERO, false)) >= Duration::from_millis(2500));
        // ...then the worker starts and stays ready long enough.
        p.on_ready();
        p.on_healthy();
        assert_eq!(p.failures(), 0);
        assert_eq!(delay(p.on_failure(31 * SECOND, true)), Duration::ZERO);
    }

    #[test]
    fn quick_repeated_failures_back_off_and_uptime_counts_towards_the_wait() {
        let mut p = policy(25);
        let ceilings = [500, 1000, 2000, 4000, 5000, 5000];
        for ceiling in ceilings {
            let d = delay(p.on_failure(Duration::ZERO, false));
            let ceiling = Duration::from_millis(ceiling);
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} for {ceiling:?}");
        }
        // A worker that crashes every 5 s (the backoff's cap) is never held
        // back, however many times it has crashed since it was last healthy.
        for _ in 0..50 {
            p.on_ready();
            assert_eq!(delay(p.on_failure(5 * SECOND, true)), Duration::ZERO);
        }
        // One that ran 3 s waits at most the remaining 2 s.
        let d = delay(p.on_failure(3 * SECOND, true));
        assert!(d <= 2 * SECOND, "{d:?}");
    }
}

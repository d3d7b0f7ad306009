//! What the accept loop does when `accept` fails.
//!
//! Two kinds of failure:
//!
//! - **The connection's own** (reset or aborted by the client before it was
//!   accepted): nothing is wrong with the server; try the next one at once.
//! - **The server's resources** (`EMFILE`/`ENFILE`, out of file descriptors;
//!   `ENOBUFS`/`ENOMEM`): the listen queue fills and probes stop getting in.
//!   Each failure asks idle connections to close (they hold the descriptors;
//!   see `connection.rs`), then waits a little, longer while it lasts, so the
//!   loop neither spins nor stalls. It is logged once when it starts and once
//!   when it is over, with the count: not on every retry. It is over once
//!   accepts have gone [`QUIET`] without failing: under a flood of idle
//!   connections accept fails, sheds, succeeds and fails again many times a
//!   second, and that is one episode, not hundreds.

use std::io;
use std::time::Duration;

use tokio::time::Instant;

/// The first retry delay of an episode; doubled on each failure.
const FIRST_RETRY: Duration = Duration::from_millis(5);
/// The longest retry delay.
const MAX_RETRY: Duration = Duration::from_millis(500);
/// How long accepts must go without failing for an episode to be over.
const QUIET: Duration = Duration::from_secs(10);

/// What to do after a failed `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OnError {
    /// Close idle connections to free descriptors.
    pub(super) shed: bool,
    /// Wait this long before the next `accept`.
    pub(super) retry_after: Duration,
    /// This failure starts an episode: log it.
    pub(super) log: bool,
}

/// A stretch of failed accepts that has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Episode {
    pub(super) failures: u64,
    pub(super) lasted: Duration,
}

/// The current episode of failed accepts, if any.
#[derive(Debug, Default)]
pub(super) struct AcceptErrors {
    episode: Option<Current>,
}

#[derive(Debug)]
struct Current {
    since: Instant,
    last: Instant,
    failures: u64,
    /// Failures since the last successful accept (drives the delay).
    in_a_row: u64,
}

impl AcceptErrors {
    pub(super) fn failed(&mut self, e: &io::Error, now: Instant) -> OnError {
        if is_connection_error(e) {
            return OnError {
                shed: false,
                retry_after: Duration::ZERO,
                log: false,
            };
        }
        let log = self.episode.is_none();
        let ep = self.episode.get_or_insert(Current {
            since: now,
            last: now,
            failures: 0,
            in_a_row: 0,
        });
        ep.last = now;
        ep.failures += 1;
        ep.in_a_row += 1;
        let doublings = (ep.in_a_row - 1).min(16) as u32;
        OnError {
            shed: true,
            retry_after: FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY),
            log,
        }
    }

    /// An accept succeeded: returns the episode if this ends it.
    pub(super) fn accepted(&mut self, now: Instant) -> Option<Episode> {
        let ep = self.episode.as_mut()?;
        ep.in_a_row = 0;
        if now - ep.last < QUIET {
            return None;
        }
        let ep = self.episode.take()?;
        Some(Episode {
            failures: ep.failures,
            lasted: ep.last - ep.since,
        })
    }
}

/// Failures that concern one connection, not the server.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        // EMFILE on Linux: "Too many open files".
        io::Error::from_raw_os_error(24)
    }

    #[test]
    fn running_out_of_descriptors_is_logged_once_per_episode_and_backs_off() {
        let mut errors = AcceptErrors::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut logged = 0;
        let mut delays = Vec::new();
        for i in 0..1000 {
            let on = errors.failed(&emfile(), t0 + ms(i));
            assert!(on.shed, "each failure frees idle descriptors");
            logged += on.log as u32;
            delays.push(on.retry_after);
        }
        assert_eq!(delays[0], ms(5));
        assert_eq!(delays[1], ms(10));
        assert_eq!(*delays.last().unwrap(), MAX_RETRY);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));

        // A flood: accepts succeed between failures. One episode all along,
        // and each success brings the delay back down.
        for i in 0..100 {
            assert_eq!(errors.accepted(t0 + ms(1000 + 10 * i)), None);
            let on = errors.failed(&emfile(), t0 + ms(1005 + 10 * i));
            logged += on.log as u32;
            assert_eq!(on.retry_after, ms(5));
        }
        assert_eq!(logged, 1, "one line for the whole episode");

        // Quiet for a while: the episode is over, once.
        let last_failure = t0 + ms(1005 + 10 * 99);
        assert_eq!(errors.accepted(last_failure + ms(100)), None);
        let episode = errors.accepted(last_failure + QUIET).unwrap();
        assert_eq!(episode.failures, 1100);
        assert_eq!(episode.lasted, last_failure - t0);
        assert_eq!(errors.accepted(last_failure + QUIET * 2), None);

        // The next episode is logged again.
        assert!(errors.failed(&emfile(), last_failure + QUIET * 3).log);
    }

    #[test]
    fn a_connection_reset_before_accept_is_not_the_servers_problem() {
        let mut errors = AcceptErrors::default();
        let on = errors.failed(
            &io::Error::from(io::ErrorKind::ConnectionAborted),
            Instant::now(),
        );
        assert_eq!(
            on,
            OnError {
                shed: false,
                retry_after: Duration::ZERO,
                log: false
            }
        );
        assert_eq!(errors.accepted(Instant::now()), None);
    }
}

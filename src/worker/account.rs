//! A worker's account as codex reports it: whether its login is there
//! (`account/read`, see [`Login`]) and whether its quota is used up
//! ([`Quota`]: rate-limit snapshots and `usageLimitExceeded` turn errors).
//!
//! Measured on codex 0.171.0 with a Responses provider answering 429
//! `{"error":{"type":"usage_limit_reached","resets_at":T}}` and the
//! `x-codex-primary-*` headers: codex first sends
//! `account/rateLimits/updated` with the primary window at `usedPercent:100`
//! and `resetsAt:T`, then fails the turn with `codexErrorInfo:
//! "usageLimitExceeded"` and a message that names the reset only as a local
//! time of day ("try again at 12:28 AM"). So the reset time is taken from the
//! snapshot; without one the worker is held out for [`QUOTA_HOLD`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::protocol::{AccountReadResponse, RateLimitSnapshot};

/// How long a worker whose quota ran out takes no new turns when codex
/// named no reset time (a provider without rate-limit headers). After it,
/// the next turn finds out again.
pub const QUOTA_HOLD: Duration = Duration::from_secs(300);

// === Quota ===

/// Whether a worker's account has quota left. Shared by the member's
/// supervisor (which feeds it from the channel's notifications) and the
/// pool (which routes by it); kept across process restarts, since the
/// account, not the process, is out of quota.
#[derive(Debug, Default)]
pub struct Quota {
    /// Unix seconds until which no new turn goes to this worker; 0: none.
    until: AtomicU64,
    /// The latest reset time of a window codex reported full.
    full_window_resets_at: AtomicU64,
}

impl Quota {
    /// An `account/rateLimits/updated` snapshot: a window at 100 % takes the
    /// worker out until that window resets. Sparse snapshots (windows null)
    /// change nothing, as codex documents. Only the account-wide limit
    /// (`codex`, or unnamed) counts: other limit ids are one model's quota
    /// (`normalModelSlug`), which leaves the others usable.
    pub fn on_snapshot(&self, snapshot: &RateLimitSnapshot, now: u64) {
        if snapshot.limit_id.as_deref().is_some_and(|id| id != "codex") {
            return;
        }
        let resets = [&snapshot.primary, &snapshot.secondary]
            .into_iter()
            .flatten()
            .filter(|w| w.used_percent >= 100)
            .filter_map(|w| u64::try_from(w.resets_at?).ok())
            .filter(|&at| at > now)
            .max();
        if let Some(at) = resets {
            self.full_window_resets_at.store(at, Ordering::Release);
            self.until.fetch_max(at, Ordering::AcqRel);
        }
    }

    /// A turn failed with `usageLimitExceeded`: out until the reset codex
    /// reported with it, else for [`QUOTA_HOLD`]. Returns that time.
    pub fn exhausted(&self, now: u64) -> u64 {
        let hint = self.full_window_resets_at.load(Ordering::Acquire);
        let until = if hint > now {
            hint
        } else {
            now + QUOTA_HOLD.as_secs()
        };
        self.until.fetch_max(until, Ordering::AcqRel).max(until)
    }

    /// The reset time while the quota is used up.
    pub fn out_until(&self, now: u64) -> Option<u64> {
        let until = self.until.load(Ordering::Acquire);
        (until > now).then_some(until)
    }
}

// === Login ===

/// A worker's login, from `account/read` after each start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Login {
    /// The provider needs an OpenAI login (ChatGPT or API key in `auth.json`).
    pub requires_openai_auth: bool,
    /// `apiKey`, `chatgpt`, … ; `None`: no login (fine for a provider that
    /// takes its key from an environment variable).
    pub account: Option<String>,
}

impl Login {
    pub fn from_response(r: &AccountReadResponse) -> Login {
        Login {
            requires_openai_auth: r.requires_openai_auth,
            account: r.account.as_ref().map(|a| a.kind.clone()),
        }
    }

    /// Missing: the provider needs an OpenAI login and there is none. A
    /// custom provider with an `env_key` needs none (`requiresOpenaiAuth`
    /// false), so it is never "missing" here; a missing key variable shows
    /// as failed turns instead.
    pub fn is_missing(&self) -> bool {
        self.requires_openai_auth && self.account.is_none()
    }
}

/// What the operator runs to log worker's `CODEX_HOME` in.
pub(super) fn login_command(codex_home: Option<&Path>) -> String {
    match codex_home {
        Some(home) => format!("CODEX_HOME={} codex login", home.display()),
        None => "codex login".to_owned(),
    }
}

/// The message a worker without a login shows in `/readyz`, `/admin/workers` and the log.
pub(super) fn login_missing_reason(codex_home: Option<&Path>) -> String {
    format!(
        "not logged in: the model provider needs an OpenAI login and {} has none. Run `{}` \
         (or `{} --with-api-key` with the key on stdin); the worker restarts by itself once \
         the login is saved",
        match codex_home {
            Some(h) => format!("CODEX_HOME {}", h.display()),
            None => "the default CODEX_HOME (~/.codex)".to_owned(),
        },
        login_command(codex_home),
        login_command(codex_home),
    )
}

/// The message a worker whose credentials the provider refused (HTTP 401)
/// shows in `/readyz`, `/admin/workers` and the log. `needs_login`: its
/// provider takes an OpenAI login (`requiresOpenaiAuth`), so a new login
/// brings it back; otherwise the key comes from the provider's `env_key`
/// (or its config), which no login replaces.
pub(super) fn login_rejected_reason(codex_home: Option<&Path>, needs_login: bool) -> String {
    let home = match codex_home {
        Some(h) => format!("CODEX_HOME {}", h.display()),
        None => "the default CODEX_HOME (~/.codex)".to_owned(),
    };
    if needs_login {
        format!(
            "login rejected: the model provider refused the login in {home} (HTTP 401: it \
             expired or was revoked). Run `{}` (or `{} --with-api-key` with the key on stdin); \
             the worker restarts by itself once the login is saved",
            login_command(codex_home),
            login_command(codex_home),
        )
    } else {
        format!(
            "credentials rejected: the model provider refused the API key of the provider \
             configured in {home} (HTTP 401: revoked or expired; the key comes from the \
             provider's `env_key` variable, which a new login does not replace). Once the key is \
             valid again (re-enabled, or a new one in the gateway's environment, which takes \
             a gateway restart), restart the worker: `POST /admin/workers/restart` or SIGHUP"
        )
    }
}

/// The file `codex login` writes; a running worker does not read it again
/// (measured), so the supervisor restarts the worker when it changes.
pub(super) fn auth_file(codex_home: Option<&Path>) -> Option<PathBuf> {
    match codex_home {
        Some(h) => Some(h.join("auth.json")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".codex/auth.json")),
    }
}

/// The auth file's modification time, to notice a new login.
pub(super) fn auth_stamp(path: Option<&Path>) -> Option<SystemTime> {
    std::fs::metadata(path?).ok()?.modified().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RateLimitWindow;

    fn window(used: i32, resets_at: Option<i64>) -> Option<RateLimitWindow> {
        Some(RateLimitWindow {
            used_percent: used,
            resets_at,
            window_duration_mins: Some(300),
        })
    }

    fn snapshot(
        primary: Option<RateLimitWindow>,
        secondary: Option<RateLimitWindow>,
    ) -> RateLimitSnapshot {
        RateLimitSnapshot {
            limit_id: Some("codex".into()),
            primary,
            secondary,
        }
    }

    #[test]
    fn a_full_window_takes_the_worker_out_until_it_resets() {
        let q = Quota::default();
        q.on_snapshot(&snapshot(window(40, Some(2_000)), None), 1_000);
        assert_eq!(q.out_until(1_000), None, "not full");
        q.on_snapshot(
            &snapshot(window(100, Some(2_000)), window(100, Some(5_000))),
            1_000,
        );
        assert_eq!(q.out_until(1_000), Some(5_000), "the later reset counts");
        // A sparse snapshot (what every turn sends) clears nothing.
        q.on_snapshot(&snapshot(None, None), 1_500);
        assert_eq!(q.out_until(1_500), Some(5_000));
        assert_eq!(q.out_until(5_000), None, "back at the reset time");
    }

    #[test]
    fn a_full_model_scoped_limit_leaves_the_account_usable() {
        let q = Quota::default();
        let mut s = snapshot(window(100, Some(2_000)), None);
        s.limit_id = Some("codex_other".into());
        q.on_snapshot(&s, 1_000);
        assert_eq!(q.out_until(1_000), None);
    }

    #[test]
    fn a_usage_limit_error_uses_the_reported_reset_or_the_hold() {
        let q = Quota::default();
        assert_eq!(q.exhausted(1_000), 1_000 + QUOTA_HOLD.as_secs());
        let q = Quota::default();
        q.on_snapshot(&snapshot(window(100, Some(1_120)), None), 1_000);
        assert_eq!(q.exhausted(1_001), 1_120);
        // A reset already past is no hint.
        assert_eq!(q.exhausted(1_200), 1_200 + QUOTA_HOLD.as_secs());
    }

    #[test]
    fn login_is_missing_only_where_the_provider_needs_one() {
        let env_key = Login {
            requires_openai_auth: false,
            account: None,
        };
        assert!(!env_key.is_missing());
        let none = Login {
            requires_openai_auth: true,
            account: None,
        };
        assert!(none.is_missing());
        let key = Login {
            requires_openai_auth: true,
            account: Some("apiKey".into()),
        };
        assert!(!key.is_missing());
        assert!(login_missing_reason(Some(Path::new("/srv/acct-b")))
            .contains("CODEX_HOME=/srv/acct-b codex login"));
        // A refused login is fixed by logging in again; a refused `env_key`
        // key by the operator, then a worker restart.
        assert!(login_rejected_reason(Some(Path::new("/srv/acct-b")), true)
            .contains("CODEX_HOME=/srv/acct-b codex login"));
        let env_key = login_rejected_reason(Some(Path::new("/srv/acct-b")), false);
        assert!(!env_key.contains("codex login`"), "{env_key}");
        assert!(env_key.contains("POST /admin/workers/restart"), "{env_key}");
    }
}

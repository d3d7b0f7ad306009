//! Spawns the worker, keeps it running, and stops it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::process::Child;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::account::{
    auth_file, auth_stamp, login_missing_reason, login_rejected_reason, Login, Quota,
};
use super::backoff::Backoff;
use super::command::worker_command;
use super::config::WorkerConfig;
use super::handshake::handshake;
use super::restart::{Decision, RestartPolicy};
use super::state::{WorkerHandle, WorkerPhase, WorkerStatus};
use super::stderr::forward_stderr;
use crate::calendar::{rfc3339, unix_now};
use crate::protocol::{
    AccountRead, AccountReadParams, RateLimitsUpdatedNotification, ACCOUNT_RATE_LIMITS_UPDATED,
};
use crate::rpc::{CallObserver, LineTap, NotificationHook, RpcClient, RpcClientConfig};

/// How often a worker without a login looks for one.
const LOGIN_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Owns the worker process. Run it with [`Supervisor::run`] in its own task.
pub struct Supervisor {
    config: WorkerConfig,
    workdir: PathBuf,
    /// Shared with the pool's [`LoginAlarm`], the one other writer: it
    /// takes the worker out the moment a turn's credentials are refused.
    status: Arc<watch::Sender<WorkerStatus>>,
    /// Woken by the [`LoginAlarm`] to re-read the account.
    login_wake: Arc<Notify>,
    observer: Option<CallObserver>,
    tap: Option<LineTap>,
    /// Fired by the pool to replace a drained worker (see [`Supervisor::recycler`]).
    recycle: Arc<Notify>,
    /// The account's quota, fed from each process's rate-limit notifications.
    quota: Arc<Quota>,
    /// The worker's number in the pool, for the log.
    member: usize,
}

/// Why [`Supervisor::watch`] returned.
enum Watched {
    /// The process died or its channel closed: a failure, restarted with backoff.
    Down(String),
    /// The pool asked for a fresh process: stopped cleanly, started again at once.
    Recycled,
    /// The gateway is shutting down; the worker is stopped.
    Shutdown,
}

struct Running {
    child: Child,
    client: RpcClient,
    /// `auth.json`'s modification time when the process started.
    auth_stamp: Option<SystemTime>,
}

impl Supervisor {
    pub fn new(config: WorkerConfig, workdir: PathBuf) -> (Supervisor, WorkerHandle) {
        let (status, rx) = watch::channel(WorkerStatus::initial());
        (
            Supervisor {
                config,
                workdir,
                status: Arc::new(status),
                login_wake: Arc::new(Notify::new()),
                observer: None,
                tap: None,
                recycle: Arc::new(Notify::new()),
                quota: Arc::new(Quota::default()),
                member: 0,
            },
            WorkerHandle::new(rx),
        )
    }

    /// Counts JSON-RPC calls (method, outcome) on every worker's channel.
    pub fn with_call_observer(mut self, observer: CallObserver) -> Supervisor {
        self.observer = Some(observer);
        self
    }

    /// Shows every line of every worker's channel to `tap` (the trace buffer).
    pub fn with_line_tap(mut self, tap: LineTap) -> Supervisor {
        self.tap = Some(tap);
        self
    }

    /// Worker `member` of the pool, its account's quota shared with the pool.
    pub fn with_account(mut self, member: usize, quota: Arc<Quota>) -> Supervisor {
        self.member = member;
        self.quota = quota;
        self
    }

    /// What the pool calls when a turn on this worker finds its credentials
    /// refused (see [`LoginAlarm::reject`]).
    pub fn login_alarm(&self) -> LoginAlarm {
        LoginAlarm {
            status: self.status.clone(),
            wake: self.login_wake.clone(),
            codex_home: self.config.codex_home.clone(),
        }
    }

    /// Notifying this stops the ready worker (stdin closed, as at shutdown)
    /// and starts a new one at once, outside the failure count and backoff.
    /// The pool calls it after draining the worker.
    pub fn recycler(&self) -> Arc<Notify> {
        self.recycle.clone()
    }

    /// Keeps a worker running until `shutdown` fires or it has failed to
    /// start `WORKER_RESTART_MAX` times in a row (see [`RestartPolicy`]).
    /// Returns once the worker is gone.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut policy = RestartPolicy::new(
            Backoff {
                initial: self.config.backoff_initial,
                max: self.config.backoff_max,
            },
            self.config.restart_max,
        );
        loop {
            if shutdown.is_cancelled() {
                self.set(|s| s.phase = WorkerPhase::Stopped);
                return;
            }
            self.set(|s| {
                s.phase = WorkerPhase::Starting;
                s.pid = None;
                s.client = None;
                s.starts += 1;
            });
            let started = Instant::now();
            let (reason, reached_ready) = match self.start_once(&shutdown).await {
                Err(e) => (e, false),
                Ok(mut running) => {
                    policy.on_ready();
                    match self.watch(&mut running, &mut policy, &shutdown).await {
                        Watched::Down(outcome) => (outcome, true),
                        Watched::Recycled => continue,
                        Watched::Shutdown => return,
                    }
                }
            };
            let decision = policy.on_failure(started.elapsed(), reached_ready);
            let failures = policy.failures();
            tracing::warn!(failures, reason = %reason, "worker is down");
            let delay = match decision {
                Decision::Restart { after } => after,
                Decision::GiveUp => {
                    let tries = policy.failed_starts();
                    tracing::error!(
                        tries,
                        reason = %reason,
                        "worker failed to start {tries} times in a row and stays down; check \
                         CODEX_BIN, CODEX_HOME and the worker log lines above, then restart the gateway"
                    );
                    self.set(|s| {
                        s.phase = WorkerPhase::Stopped;
                        s.consecutive_failures = failures;
                        s.pid = None;
                        s.client = None;
                        s.last_error = Some(format!(
                            "gave up after {tries} consecutive failed starts: {reason}"
                        ));
                    });
                    return;
                }
            };
            self.set(|s| {
                s.phase = WorkerPhase::BackingOff;
                s.consecutive_failures = failures;
                s.pid = None;
                s.client = None;
                s.last_error = Some(reason.clone());
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// Waits while the worker is ready: returns why it stopped, or `None`
    /// when the gateway is shutting down (the worker is stopped by then).
    /// Once it has stayed ready for `WORKER_HEALTHY_RESET_MS` the failure
    /// count is cleared, visibly (`consecutive_failures` in `/readyz`).
    async fn watch(
        &self,
        running: &mut Running,
        policy: &mut RestartPolicy,
        shutdown: &CancellationToken,
    ) -> Watched {
        let healthy = tokio::time::sleep(self.config.healthy_reset);
        tokio::pin!(healthy);
        let mut was_healthy = false;
        let auth_file = auth_file(self.config.codex_home.as_deref());
        let mut login_check = tokio::time::interval(LOGIN_CHECK_EVERY);
        let outcome = loop {
            tokio::select! {
                // A running codex does not read a new `auth.json` (measured):
                // once `codex login` has written one, a fresh process does.
                // Without a login since the start, or since a turn's 401.
                _ = login_check.tick(), if self.login_required() => {
                    if auth_stamp(auth_file.as_deref()) != running.auth_stamp {
                        tracing::info!(worker = self.member, "a login was saved; restarting the worker to use it");
                        self.set(|s| s.phase = WorkerPhase::Starting);
                        stop_child(running, self.config.shutdown_grace).await;
                        return Watched::Recycled;
                    }
                }
                status = running.child.wait() => break match status {
                    Ok(st) => format!("worker exited with {st}"),
                    Err(e) => format!("waiting for the worker failed: {e}"),
                },
                _ = running.client.closed() => {
                    let why = running.client.close_reason().unwrap_or_default();
                    stop_child(running, self.config.shutdown_grace).await;
                    break format!("worker channel closed: {why}");
                }
                // A turn's credentials were refused: the worker is out of
                // rotation already; what codex now says of the account
                // picks the message (a login gone, or one refused).
                _ = self.login_wake.notified() => {
                    if !self.login_required() {
                        continue;
                    }
                    let login = self.read_login(&running.client).await;
                    let home = self.config.codex_home.as_deref();
                    let reason = match &login {
                        Some(l) if l.is_missing() => login_missing_reason(home),
                        Some(l) => login_rejected_reason(home, l.requires_openai_auth),
                        None => self.status.borrow().last_error.clone().unwrap_or_default(),
                    };
                    tracing::error!(
                        worker = self.member,
                        pid = running.child.id(),
                        "worker out of rotation until it has a valid login: {reason}"
                    );
                    self.set(|s| {
                        if s.phase == WorkerPhase::LoginRequired {
                            s.last_error = Some(reason);
                            if login.is_some() {
                                s.login = login;
                            }
                        }
                    });
                }
                _ = self.recycle.notified() => {
                    tracing::info!(pid = running.child.id(), "replacing the drained worker");
                    // Not ready from here on: nothing new is sent to it.
                    self.set(|s| s.phase = WorkerPhase::Starting);
                    stop_child(running, self.config.shutdown_grace).await;
                    return Watched::Recycled;
                }
                _ = &mut healthy, if !was_healthy => {
                    was_healthy = true;
                    policy.on_healthy();
                    self.set(|s| s.consecutive_failures = 0);
                }
                _ = shutdown.cancelled() => {
                    self.set(|s| s.phase = WorkerPhase::Stopped);
                    tracing::info!("stopping the worker");
                    stop_child(running, self.config.shutdown_grace).await;
                    self.set(|s| {
                        s.pid = None;
                        s.client = None;
                        s.last_error = Some("the gateway is shutting down".into());
                    });
                    return Watched::Shutdown;
                }
            }
        };
        running.client.close(outcome.clone());
        Watched::Down(outcome)
    }

    async fn start_once(&self, shutdown: &CancellationToken) -> Result<Running, String> {
        let mut cmd = worker_command(&self.config, &self.workdir).await?;
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.config.codex_bin.display()))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("worker stdio was not piped".into());
        };
        tokio::spawn(forward_stderr(stderr, pid));
        let auth_stamp = auth_stamp(auth_file(self.config.codex_home.as_deref()).as_deref());
        let quota = self.quota.clone();
        let member = self.member;
        let on_notification = NotificationHook::new(move |method, params| {
            if method != ACCOUNT_RATE_LIMITS_UPDATED {
                return;
            }
            if let Ok(n) = serde_json::from_str::<RateLimitsUpdatedNotification>(params) {
                let now = unix_now();
                let before = quota.out_until(now);
                quota.on_snapshot(&n.rate_limits, now);
                if let (None, Some(until)) = (before, quota.out_until(now)) {
                    tracing::warn!(
                        worker = member,
                        resets_at = %rfc3339(until),
                        "the worker's account has used up its quota; it takes no new turns until the reset"
                    );
                }
            }
        });
        let client = RpcClient::spawn(
            stdout,
            stdin,
            RpcClientConfig {
                tap: self.tap.clone(),
                on_notification: Some(on_notification),
                ..RpcClientConfig::new(self.config.request_timeout)
            },
            self.observer.clone(),
        );
        self.set(|s| {
            s.phase = WorkerPhase::Handshaking;
            s.pid = pid;
        });
        let mut running = Running {
            child,
            client,
            auth_stamp,
        };
        let models = tokio::select! {
            r = handshake(&running.client, self.config.startup_timeout, self.config.handshake_timeout) => r,
            _ = shutdown.cancelled() => Err("the gateway is shutting down".into()),
        };
        match models {
            Ok(models) => {
                let login = self.read_login(&running.client).await;
                let missing = login.as_ref().is_some_and(Login::is_missing);
                let client = running.client.clone();
                if missing {
                    let reason = login_missing_reason(self.config.codex_home.as_deref());
                    tracing::error!(worker = self.member, pid, "worker is {reason}");
                    self.set(|s| {
                        s.phase = WorkerPhase::LoginRequired;
                        s.client = Some(client);
                        s.models = Arc::new(models);
                        s.last_error = Some(reason);
                        s.login = login;
                    });
                } else {
                    tracing::info!(
                        worker = self.member,
                        pid,
                        models = models.len(),
                        account = login.as_ref().and_then(|l| l.account.as_deref()),
                        "worker ready"
                    );
                    self.set(|s| {
                        s.phase = WorkerPhase::Ready;
                        s.client = Some(client);
                        s.models = Arc::new(models);
                        s.last_error = None;
                        s.login = login;
                    });
                }
                Ok(running)
            }
            Err(e) => {
                running.client.close(e.clone());
                stop_child(&mut running, self.config.shutdown_grace).await;
                Err(e)
            }
        }
    }

    /// The worker's login; `None` when codex would not say (the worker is
    /// then taken as logged in: a turn shows soon enough if it is not).
    async fn read_login(&self, client: &RpcClient) -> Option<Login> {
        let read = client.call::<AccountRead>(&AccountReadParams {
            refresh_token: None,
        });
        match tokio::time::timeout(self.config.handshake_timeout, read).await {
            Ok(Ok(r)) => Some(Login::from_response(&r)),
            Ok(Err(e)) => {
                tracing::warn!(worker = self.member, error = %e, "`account/read` failed");
                None
            }
            Err(_) => {
                tracing::warn!(worker = self.member, "`account/read` did not answer");
                None
            }
        }
    }

    fn login_required(&self) -> bool {
        self.status.borrow().phase == WorkerPhase::LoginRequired
    }

    fn set(&self, f: impl FnOnce(&mut WorkerStatus)) {
        self.status.send_modify(|s| {
            f(s);
            s.since = SystemTime::now();
        });
    }
}

/// Takes a worker out of rotation when the model provider refuses its
/// credentials, synchronously, so the turn's retry (and every request
/// after it) is placed elsewhere; then wakes the supervisor to re-read
/// the account and to watch `auth.json` for a new login.
#[derive(Clone)]
pub struct LoginAlarm {
    status: Arc<watch::Sender<WorkerStatus>>,
    wake: Arc<Notify>,
    codex_home: Option<PathBuf>,
}

impl LoginAlarm {
    /// A turn on `client`'s process got HTTP 401 from the provider. Marks
    /// the worker `login_required` if `client` is still its current
    /// process and it was ready; `true` when this call did.
    pub fn reject(&self, client: &RpcClient) -> bool {
        let home = self.codex_home.as_deref();
        let changed = self.status.send_if_modified(|s| {
            let current = s.client.as_ref().is_some_and(|c| c.same_channel(client));
            if s.phase != WorkerPhase::Ready || !current {
                return false;
            }
            let needs_login = s.login.as_ref().is_some_and(|l| l.requires_openai_auth);
            s.phase = WorkerPhase::LoginRequired;
            s.last_error = Some(login_rejected_reason(home, needs_login));
            s.since = SystemTime::now();
            true
        });
        if changed {
            self.wake.notify_one();
        }
        changed
    }
}

impl std::fmt::Debug for LoginAlarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginAlarm")
    }
}

/// Closes stdin (codex exits on EOF in ~15 ms, even mid-turn), waits up to
/// `grace`, then kills.
async fn stop_child(running: &mut Running, grace: std::time::Duration) {
    running.client.close("the worker is being stopped");
    match tokio::time::timeout(grace, running.child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(
                pid = running.child.id(),
                ?grace,
                "worker ignored stdin EOF; killing it"
            );
            let _ = running.child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::fake::pair;

    #[tokio::test]
    async fn a_refused_login_takes_only_the_current_ready_process_out_once() {
        let (old, _old_worker) = pair(RpcClientConfig::new(std::time::Duration::from_secs(5)));
        let (current, _worker) = pair(RpcClientConfig::new(std::time::Duration::from_secs(5)));
        let (status, handle) = watch::channel(WorkerStatus {
            phase: WorkerPhase::Ready,
            client: Some(current.clone()),
            login: Some(Login {
                requires_openai_auth: true,
                account: Some("apiKey".into()),
            }),
            ..WorkerStatus::initial()
        });
        let handle = WorkerHandle::new(handle);
        let wake = Arc::new(Notify::new());
        let alarm = LoginAlarm {
            status: Arc::new(status),
            wake: wake.clone(),
            codex_home: Some(PathBuf::from("/srv/acct-a")),
        };
        // A late 401 from a process already replaced changes nothing.
        assert!(!alarm.reject(&old));
        assert!(handle.is_ready());
        assert!(alarm.reject(&current));
        let s = handle.status();
        assert_eq!(s.phase, WorkerPhase::LoginRequired);
        assert!(!handle.is_ready(), "out of rotation at once");
        assert!(s
            .last_error
            .unwrap()
            .contains("CODEX_HOME=/srv/acct-a codex login"));
        // The supervisor is woken to re-read the account, once.
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
            .await
            .expect("woken");
        assert!(!alarm.reject(&current), "already out");
    }
}

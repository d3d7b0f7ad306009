//! [`WorkerPool`]: several supervised workers behind one gateway.
//!
//! Each member is a [`Supervisor`] of its own (own process, restart backoff,
//! readiness, optionally its own `CODEX_HOME`). The pool adds three things:
//!
//! * **Placement.** A new turn goes to the ready, non-draining member with
//!   the fewest turns in flight ([`WorkerPool::pick`]: a scan of a few
//!   atomics, no lock held, nothing allocated). A continuation (a parked
//!   turn's tool results, a kept conversation thread) already holds the
//!   [`RpcClient`] of the process that owns its thread and goes back there;
//!   [`WorkerPool::lease_for`] only finds that member to count the turn.
//! * **Accounting.** A [`Lease`] counts a turn in its member's in-flight
//!   figure from before `thread/start` until the turn's slot is given back.
//! * **Recycling.** One coordinator task replaces workers one at a time:
//!   the member is marked draining (no new turns), waits until its turns
//!   have ended (at most `WORKER_DRAIN_TIMEOUT_MS`), and its supervisor
//!   swaps the process. Triggers: SIGHUP and `POST /admin/workers/restart`
//!   (every member in turn, or one), `WORKER_MAX_TURNS` turns started on a
//!   process, resident memory past `WORKER_MAX_RSS_MB`.
//!
//! A drained worker's parked turns and kept threads end with its process;
//! their next request is rebuilt on another worker from the history the
//! client sends (or the response store), as after a crash.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::account::Quota;
use super::config::{PoolConfig, WorkerConfig};
use super::state::{NotReady, WorkerHandle, WorkerPhase, WorkerStatus};
use super::supervisor::{LoginAlarm, Supervisor};
use crate::calendar::{rfc3339, unix_now};
use crate::protocol::Model;
use crate::rpc::{CallObserver, RpcClient};

/// Why a worker is replaced (a metrics label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecycleReason {
    /// SIGHUP or the admin endpoint.
    Requested,
    /// `WORKER_MAX_TURNS`.
    MaxTurns,
    /// `WORKER_MAX_RSS_MB`.
    MaxRss,
}

impl RecycleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RecycleReason::Requested => "requested",
            RecycleReason::MaxTurns => "max_turns",
            RecycleReason::MaxRss => "max_rss",
        }
    }
}

/// One worker of the pool as the rest of the gateway sees it.
struct Member {
    handle: WorkerHandle,
    /// Turns holding a lease on this member now.
    /// A gauge so `/metrics` reads it as is (`worker_turns_in_flight{worker}`).
    in_flight: Gauge,
    /// Takes no new turns (being replaced).
    draining: AtomicBool,
    /// Turns started on the current process (reset when it is replaced).
    turns: AtomicU64,
    /// Replacements done by the pool (not crashes: see `starts`).
    recycles: AtomicU32,
    /// A recycle for this member is queued or running.
    recycle_pending: AtomicBool,
    /// Woken when `in_flight` drops to 0 (a drain waits on it).
    idle: Notify,
    /// Tells the member's supervisor to swap the process.
    recycle: Arc<Notify>,
    /// The member's account quota (fed by its supervisor and its turns).
    quota: Arc<Quota>,
    /// Takes the member out when its credentials are refused; `None` in a
    /// pool built from bare handles.
    login: Option<LoginAlarm>,
}

struct Inner {
    members: Box<[Member]>,
    /// Fresh turns started again on another worker because theirs was out
    /// of quota (`[0]`) or its login was refused (`[1]`).
    retries: [AtomicU64; 2],
    config: PoolConfig,
    /// The coordinator's queue; `None` in a pool built from bare handles.
    requests: Option<mpsc::Sender<(usize, RecycleReason)>>,
}

/// The workers. Cheap to clone; every request shares one.
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<Inner>,
}

/// One turn counted on a member; uncounted when dropped.
pub struct Lease {
    pool: Arc<Inner>,
    index: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let m = &self.pool.members[self.index];
        if m.in_flight.dec() == 1 {
            m.idle.notify_waiters();
        }
    }
}

impl Lease {
    /// The turn failed with `usageLimitExceeded`: its worker takes no new
    /// turns until the reset. Returns the reset time (unix seconds).
    pub fn usage_limit_reached(&self) -> u64 {
        let m = &self.pool.members[self.index];
        let now = unix_now();
        let first = m.quota.out_until(now).is_none();
        let until = m.quota.exhausted(now);
        if first {
            tracing::warn!(
                worker = self.index,
                resets_at = %rfc3339(until),
                "the worker's account is out of quota; it takes no new turns until the reset"
            );
        }
        until
    }

    /// The worker this lease counts on.
    pub fn worker(&self) -> usize {
        self.index
    }

    /// The turn ran on `client`'s process and the provider refused the
    /// worker's credentials (HTTP 401): the worker goes `login_required` at
    /// once, so nothing new is placed on it. Logged by the call that did it.
    pub fn login_rejected(&self, client: &RpcClient) {
        let m = &self.pool.members[self.index];
        if m.login.as_ref().is_some_and(|alarm| alarm.reject(client)) {
            tracing::warn!(
                worker = self.index,
                "the model provider refused the worker's credentials (HTTP 401); it takes no new turns until it has a new login"
            );
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease(worker {})", self.index)
    }
}

/// A member picked for a new turn.
pub struct Picked {
    pub client: RpcClient,
    pub models: Arc<Vec<Model>>,
    pub lease: Lease,
}

/// One row of `GET /admin/workers`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub worker: usize,
    #[serde(flatten)]
    pub status: WorkerStatus,
    pub ready: bool,
    pub draining: bool,
    pub turns_in_flight: usize,
    /// Turns started on the current process.
    pub turns_started: u64,
    /// Processes started beyond the first (crashes and recycles).
    pub restarts: u32,
    pub recycles: u32,
    pub codex_home: Option<String>,
    /// Out of quota until then (unix seconds; `null`: quota left).
    pub quota_resets_at: Option<u64>,
    /// The same as RFC 3339 UTC.
    pub quota_resets_at_utc: Option<String>,
    /// What the operator should do about this worker, if anything.
    pub action: Option<String>,
}

/// What [`WorkerPool::spawn`] starts: the pool and the tasks to wait for at shutdown.
pub struct RunningPool {
    pub pool: WorkerPool,
    pub supervisors: Vec<tokio::task::JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts `config.pool.size` supervised workers and the recycling
    /// coordinator; everything stops when `shutdown` fires.
    pub fn spawn(
        config: &WorkerConfig,
        workdir: std::path::PathBuf,
        observer: Option<CallObserver>,
        tap: Option<crate::rpc::LineTap>,
        shutdown: CancellationToken,
    ) -> RunningPool {
        let mut members = Vec::with_capacity(config.pool.size);
        let mut supervisors = Vec::with_capacity(config.pool.size);
        // Workers that share a CODEX_HOME share its account, so its quota:
        // one running out means all of them have.
        let mut quotas: Vec<(Option<std::path::PathBuf>, Arc<Quota>)> = Vec::new();
        for index in 0..config.pool.size {
            let member_config = config.for_member(index);
            let quota = match quotas.iter().find(|(h, _)| *h == member_config.codex_home) {
                Some((_, q)) => q.clone(),
                None => {
                    let q = Arc::new(Quota::default());
                    quotas.push((member_config.codex_home.clone(), q.clone()));
                    q
                }
            };
            let (mut supervisor, handle) = Supervisor::new(member_config, workdir.clone());
            if let Some(o) = &observer {
                supervisor = supervisor.with_call_observer(o.clone());
            }
            // The trace buffer sees every member's lines.
            if let Some(t) = &tap {
                supervisor = supervisor.with_line_tap(t.clone());
            }
            let recycle = supervisor.recycler();
            let mut member = Member::new(handle, recycle);
            member.quota = quota;
            member.login = Some(supervisor.login_alarm());
            supervisor = supervisor.with_account(index, member.quota.clone());
            members.push(member);
            supervisors.push(tokio::spawn(supervisor.run(shutdown.clone())));
        }
        // Bounded: one pending request per member is all that can matter.
        let (tx, rx) = mpsc::channel(config.pool.size * 2 + 1);
        let pool = WorkerPool {
            inner: Arc::new(Inner {
                retries: Default::default(),
                members: members.into_boxed_slice(),
                config: config.pool.clone(),
                requests: Some(tx),
            }),
        };
        tokio::spawn(pool.clone().coordinate(rx, shutdown.clone()));
        if pool.inner.config.max_rss_mb > 0 {
            tokio::spawn(pool.clone().watch_rss(shutdown));
        }
        RunningPool { pool, supervisors }
    }

    /// A pool over workers supervised elsewhere (tests); it never recycles.
    pub fn from_handles(handles: Vec<WorkerHandle>) -> WorkerPool {
        let members = handles
            .into_iter()
            .map(|h| Member::new(h, Arc::new(Notify::new())))
            .collect();
        WorkerPool {
            inner: Arc::new(Inner {
                retries: Default::default(),
                members,
                config: PoolConfig {
                    size: 1,
                    codex_homes: Vec::new(),
                    max_turns: 0,
                    max_rss_mb: 0,
                    drain_timeout: Duration::from_secs(60),
                },
                requests: None,
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.members.is_empty()
    }

    /// Counts a turn started again elsewhere (`quota`: out of quota, else a
    /// refused login).
    pub fn count_retry(&self, quota: bool) {
        self.inner.retries[usize::from(!quota)].fetch_add(1, Ordering::Relaxed);
    }

    /// Turns started again elsewhere so far: (out of quota, login refused).
    pub fn retries(&self) -> (u64, u64) {
        let [q, l] = &self.inner.retries;
        (q.load(Ordering::Relaxed), l.load(Ordering::Relaxed))
    }

    /// Worker `index`'s lifecycle handle.
    pub fn handle(&self, index: usize) -> &WorkerHandle {
        &self.inner.members[index].handle
    }

    /// Members ready to take turns now (draining ones included: they still
    /// serve their continuations).
    pub fn ready_count(&self) -> usize {
        self.inner
            .members
            .iter()
            .filter(|m| m.handle.is_ready())
            .count()
    }

    /// Members that can take a new turn now: ready, not draining, quota left.
    pub fn available_count(&self) -> usize {
        let now = unix_now();
        self.inner
            .members
            .iter()
            .filter(|m| {
                !m.draining.load(Ordering::Acquire)
                    && m.handle.is_ready()
                    && m.quota.out_until(now).is_none()
            })
            .count()
    }

    /// Members up, logged in and not draining, whatever their quota: while
    /// one is, the gateway answers every request itself (a turn, or 429
    /// with the reset time when all are out of quota).
    pub fn serving_count(&self) -> usize {
        self.inner
            .members
            .iter()
            .filter(|m| !m.draining.load(Ordering::Acquire) && m.handle.is_ready())
            .count()
    }

    /// Members whose account is out of quota now, and the earliest reset.
    pub fn out_of_quota(&self) -> (usize, Option<u64>) {
        let now = unix_now();
        let resets = self
            .inner
            .members
            .iter()
            .filter_map(|m| m.quota.out_until(now));
        resets.fold((0, None), |(n, first), at| {
            (n + 1, Some(first.map_or(at, |f: u64| f.min(at))))
        })
    }

    /// The ready, non-draining member with the fewest turns in flight
    /// (the lowest index on a tie), leased for one new turn.
    pub fn pick(&self) -> Result<Picked, NotReady> {
        // A drain may start between the scan and the lease: then the lease
        // is given back and the scan runs again (the drained member is
        // skipped). Bounded: each retry sees one more member draining.
        for _ in 0..=self.inner.members.len() {
            let Some(picked) = self.scan() else {
                break;
            };
            let m = &self.inner.members[picked.lease.index];
            // Pairs with the fence in `recycle`: either the drain sees this
            // lease, or this sees the drain.
            std::sync::atomic::fence(Ordering::SeqCst);
            if !m.draining.load(Ordering::SeqCst) {
                self.count_turn(picked.lease.index);
                return Ok(picked);
            }
        }
        Err(self.not_ready())
    }

    fn scan(&self) -> Option<Picked> {
        let mut best: Option<(usize, i64, RpcClient, Arc<Vec<Model>>)> = None;
        let now = unix_now();
        for (i, m) in self.inner.members.iter().enumerate() {
            // Out of quota: the others carry the load until the reset.
            if m.draining.load(Ordering::SeqCst) || m.quota.out_until(now).is_some() {
                continue;
            }
            let load = m.in_flight.get();
            if best.as_ref().is_some_and(|(_, l, _, _)| *l <= load) {
                continue;
            }
            if let Ok((client, models)) = m.handle.ready() {
                best = Some((i, load, client, models));
            }
        }
        best.map(|(index, _, client, models)| Picked {
            client,
            models,
            lease: self.lease(index),
        })
    }

    /// The models of a ready member (they are the same on every worker
    /// unless their `CODEX_HOME`s differ; the first ready one answers).
    pub fn models(&self) -> Result<Arc<Vec<Model>>, NotReady> {
        self.inner
            .members
            .iter()
            .find_map(|m| m.handle.ready().ok().map(|(_, models)| models))
            .ok_or_else(|| self.not_ready())
    }

    /// A lease on the member whose current process is `client`'s (a
    /// continuation goes back to its thread's worker); `None` once that
    /// process has been replaced.
    pub fn lease_for(&self, client: &RpcClient) -> Option<Lease> {
        let index = self
            .inner
            .members
            .iter()
            .position(|m| m.handle.owns(client))?;
        Some(self.lease(index))
    }

    /// Whether the worker whose current process is `client` can run a
    /// continuation's turn: up, logged in and with quota left (draining is
    /// fine: it still serves what it holds). When not, the conversation is
    /// rebuilt on a picked worker rather than failing where it lives until
    /// the reset or a new login.
    pub fn can_continue_on(&self, client: &RpcClient) -> bool {
        let now = unix_now();
        self.inner
            .members
            .iter()
            .find(|m| m.handle.owns(client))
            .is_some_and(|m| m.handle.is_ready() && m.quota.out_until(now).is_none())
    }

    fn lease(&self, index: usize) -> Lease {
        self.inner.members[index].in_flight.inc();
        Lease {
            pool: self.inner.clone(),
            index,
        }
    }

    /// Counts a new turn; the one that reaches `WORKER_MAX_TURNS` asks for a recycle.
    fn count_turn(&self, index: usize) {
        let max = self.inner.config.max_turns;
        let started = self.inner.members[index]
            .turns
            .fetch_add(1, Ordering::AcqRel)
            + 1;
        if max > 0 && started == max {
            self.request(index, RecycleReason::MaxTurns);
        }
    }

    /// Why no worker can take a new turn now. When the ones out of quota
    /// are all that could (the rest wait for a login or gave up), the
    /// answer carries the earliest reset: a quota error, not an outage.
    pub fn not_ready(&self) -> NotReady {
        let members = &self.inner.members;
        let now = unix_now();
        let (out, first_reset) = self.out_of_quota();
        let stuck = |m: &Member| {
            matches!(
                m.handle.status().phase,
                WorkerPhase::LoginRequired | WorkerPhase::Stopped
            )
        };
        if let Some(at) = first_reset {
            if members
                .iter()
                .all(|m| m.quota.out_until(now).is_some() || stuck(m))
            {
                let whose = if out == members.len() {
                    if out == 1 {
                        "the Codex worker's account is".to_owned()
                    } else {
                        format!("the accounts of all {out} Codex workers are")
                    }
                } else {
                    format!(
                        "{out} of {} Codex workers are out of quota and the others are not logged in or stopped; their accounts are",
                        members.len()
                    )
                };
                return NotReady {
                    phase: WorkerPhase::Ready,
                    reason: format!(
                        "{whose} out of quota; the earliest resets at {} (in {} s)",
                        rfc3339(at),
                        at.saturating_sub(now)
                    ),
                    quota_resets_at: Some(at),
                };
            }
        }
        if members.len() == 1 {
            return members[0].handle.not_ready();
        }
        let login_required: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].handle.status().phase == WorkerPhase::LoginRequired)
            .collect();
        if login_required.len() == members.len() {
            let first = members[0].handle.not_ready();
            return NotReady {
                phase: WorkerPhase::LoginRequired,
                reason: format!(
                    "none of the {} Codex workers has a valid login (GET /admin/workers \
                     says what to run for each; worker 0: {})",
                    members.len(),
                    first.reason
                ),
                quota_resets_at: None,
            };
        }
        let draining = members
            .iter()
            .filter(|m| m.draining.load(Ordering::Acquire))
            .count();
        let first = members[0].handle.not_ready();
        NotReady {
            phase: first.phase,
            reason: format!(
                "no worker of {} can take a turn ({draining} draining, {out} out of quota; worker 0: {})",
                members.len(),
                first.reason
            ),
            quota_resets_at: None,
        }
    }

    /// Asks the coordinator to replace worker `index` (ignored while one is
    /// pending for it, or when the pool does not recycle).
    pub fn request(&self, index: usize, reason: RecycleReason) -> bool {
        let Some(tx) = &self.inner.requests else {
            return false;
        };
        let m = &self.inner.members[index];
        if m.recycle_pending.swap(true, Ordering::AcqRel) {
            return false;
        }
        if tx.try_send((index, reason)).is_err() {
            m.recycle_pending.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Replaces every worker, one at a time (SIGHUP, the admin endpoint).
    /// Returns how many were queued.
    pub fn request_all(&self) -> usize {
        (0..self.len())
            .filter(|&i| self.request(i, RecycleReason::Requested))
            .count()
    }

    /// Every member, for `GET /admin/workers` and `/readyz`.
    pub fn views(&self) -> Vec<MemberView> {
        let now = unix_now();
        self.inner
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let status = m.handle.status();
                let quota = m.quota.out_until(now);
                let action = match (status.phase, quota) {
                    (WorkerPhase::LoginRequired, _) => status.last_error.clone(),
                    (_, Some(at)) => Some(format!(
                        "none: the account is out of quota until {}; the other workers take its turns",
                        rfc3339(at)
                    )),
                    (WorkerPhase::Stopped, _) => Some(
                        "restart the gateway once the cause in last_error is fixed".to_owned(),
                    ),
                    _ => None,
                };
                MemberView {
                    quota_resets_at: quota,
                    quota_resets_at_utc: quota.map(rfc3339),
                    action,
                    worker: i,
                    ready: status.is_ready(),
                    draining: m.draining.load(Ordering::Acquire),
                    turns_in_flight: m.in_flight.get().max(0) as usize,
                    turns_started: m.turns.load(Ordering::Acquire),
                    restarts: status.starts.saturating_sub(1),
                    recycles: m.recycles.load(Ordering::Acquire),
                    codex_home: self
                        .inner
                        .config
                        .codex_homes
                        .get(i)
                        .map(|p| p.display().to_string()),
                    status,
                }
            })
            .collect()
    }

    /// Turns in flight on worker `index`, the gauge itself (for `/metrics`).
    pub fn in_flight(&self, index: usize) -> &Gauge {
        &self.inner.members[index].in_flight
    }

    /// Recycles of worker `index` done so far.
    pub fn recycles(&self, index: usize) -> u32 {
        self.inner.members[index].recycles.load(Ordering::Acquire)
    }

    /// Serves recycle requests one at a time, so the rest of the pool
    /// carries the load while one member is replaced.
    async fn coordinate(
        self,
        mut rx: mpsc::Receiver<(usize, RecycleReason)>,
        shutdown: CancellationToken,
    ) {
        loop {
            let (index, reason) = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => return },
                _ = shutdown.cancelled() => return,
            };
            tokio::select! {
                _ = self.recycle(index, reason) => {}
                _ = shutdown.cancelled() => return,
            }
            self.inner.members[index]
                .recycle_pending
                .store(false, Ordering::Release);
        }
    }

    async fn recycle(&self, index: usize, reason: RecycleReason) {
        let m = &self.inner.members[index];
        let config = &self.inner.config;
        let waits_for_login = m.handle.status().phase == WorkerPhase::LoginRequired;
        if !m.handle.is_ready() && !waits_for_login {
            // Down or restarting already: a fresh process is on its way.
            return;
        }
        // A worker waiting for a login takes no turns: a fresh process is
        // how an operator brings it back once its key is good again (an
        // `env_key` provider has no `auth.json` to watch).
        // With others in the pool, drain only while another one can take
        // the new turns: replacing the last ready worker fails requests.
        if self.len() > 1 {
            let others_ready = async {
                loop {
                    let ready = self.inner.members.iter().enumerate().any(|(i, o)| {
                        i != index && o.handle.is_ready() && !o.draining.load(Ordering::Acquire)
                    });
                    if ready {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            if tokio::time::timeout(config.drain_timeout, others_ready)
                .await
                .is_err()
            {
                tracing::warn!(worker = index, "no other worker is ready; replacing anyway");
            }
        }
        let pid = m.handle.status().pid;
        tracing::info!(
            worker = index,
            pid,
            reason = reason.as_str(),
            "draining worker"
        );
        m.draining.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let drained = async {
            loop {
                let idle = m.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if m.in_flight.get() <= 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(config.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                worker = index,
                turns = m.in_flight.get(),
                timeout = ?config.drain_timeout,
                "drain timed out; stopping the worker with turns still running"
            );
        }
        let starts = m.handle.status().starts;
        m.recycle.notify_one();
        // Until the replacement is ready (or has given up), the member stays out of rotation.
        let mut handle = m.handle.clone();
        let replaced = async {
            loop {
                let s = handle.status();
                let settled = matches!(s.phase, WorkerPhase::Stopped | WorkerPhase::LoginRequired);
                if s.starts > starts && (s.is_ready() || settled) {
                    return;
                }
                if !handle.changed().await {
                    return;
                }
            }
        };
        let wait = config.drain_timeout.max(Duration::from_secs(30));
        let _ = tokio::time::timeout(wait, replaced).await;
        m.turns.store(0, Ordering::Release);
        m.recycles.fetch_add(1, Ordering::AcqRel);
        m.draining.store(false, Ordering::Release);
        tracing::info!(
            worker = index,
            old_pid = pid,
            new_pid = m.handle.status().pid,
            reason = reason.as_str(),
            "worker replaced"
        );
        tracing::debug!(target: "codex_pool", worker = index, "recycled");
    }

    /// Reads each worker's resident memory every second and recycles one past the limit.
    async fn watch_rss(self, shutdown: CancellationToken) {
        let limit_kb = self.inner.config.max_rss_mb * 1024;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            for (i, m) in self.inner.members.iter().enumerate() {
                let Some(pid) = m.handle.status().pid else {
                    continue;
                };
                if !m.handle.is_ready() {
                    continue;
                }
                if rss_kb(pid).is_some_and(|kb| kb > limit_kb)
                    && self.request(i, RecycleReason::MaxRss)
                {
                    tracing::info!(
                        worker = i,
                        pid,
                        limit_mb = self.inner.config.max_rss_mb,
                        "worker memory over WORKER_MAX_RSS_MB"
                    );
                }
            }
        }
    }
}

impl Member {
    fn new(handle: WorkerHandle, recycle: Arc<Notify>) -> Member {
        Member {
            handle,
            in_flight: Gauge::default(),
            draining: AtomicBool::new(false),
            turns: AtomicU64::new(0),
            recycles: AtomicU32::new(0),
            recycle_pending: AtomicBool::new(false),
            idle: Notify::new(),
            recycle,
            quota: Arc::new(Quota::default()),
            login: None,
        }
    }
}

impl From<WorkerHandle> for WorkerPool {
    fn from(handle: WorkerHandle) -> WorkerPool {
        WorkerPool::from_handles(vec![handle])
    }
}

/// A process's resident set size in kB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

//! [`RedisLimits`]: rate limits and stream caps shared by every replica, kept in Redis.
//!
//! Several gateway replicas behind one balancer must count a key's requests once, not
//! once per replica. Each decision is one atomic server-side Lua script, so concurrent
//! replicas never interleave a read and a write of the same bucket:
//!
//! - **GCRA** (the same algorithm and parameters as the embedded governor limiter): the
//!   bucket's "theoretical arrival time" is one string key, read and advanced in the
//!   script, with the clock taken from the Redis server (`TIME`), so replicas whose
//!   clocks disagree still agree on every decision. The key expires when the bucket
//!   would be full again, so idle keys cost nothing.
//! - **Stream leases**: a key's open streams are a sorted set of lease ids scored by
//!   their expiry. Acquiring drops expired leases, counts, and adds one in one script;
//!   a live stream refreshes its lease every third of the lease time and removes it when
//!   it ends. A replica that dies stops refreshing, and its streams stop counting one
//!   lease time later: no count is leaked for good.
//!
//! When Redis cannot be reached (or answers too slowly), [`FailureMode`] decides:
//! `Open` falls back to the in-process limits of this replica (each replica limits on its
//! own, so the fleet allows up to N times the limit), `Closed` refuses with a 503
//! ([`LimiterUnavailable`]). Every failure is counted ([`RedisLimits::errors`]) and
//! reported to the [`RedisLimits::on_error`] hook (the gateway's metrics and a
//! rate-limited log line).

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use crate::future::Verdict;
use crate::{
    ConcurrencyExceeded, KeyedConcurrency, Limiter, LimiterUnavailable, RateKey, RateLimitStatus,
    RateLimited,
};

/// The GCRA decision. KEYS[1]: the bucket; ARGV: replenish interval (µs), burst.
/// Returns `{allowed, retry_after_us, remaining, reset_us}`.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, allow_at - now, 0, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((now - new_tat) / interval) + burst
if remaining < 0 then remaining = 0 end
return {1, 0, remaining, new_tat - now}
";

/// Takes a stream lease. KEYS[1]: the key's leases; ARGV: lease id, max, lease ms.
/// Returns 1 if taken, 0 if the key already holds `max` live leases.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
return 1
";

/// Extends a live lease. KEYS[1]: the key's leases; ARGV: lease id, lease ms.
const REFRESH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
return n
";

/// What happens to a request when Redis cannot decide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// Serve, limited by this replica's in-process limits only.
    #[default]
    Open,
    /// Refuse with a 503 until Redis answers again.
    Closed,
}

impl FromStr for FailureMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            other => Err(format!("expected `open` or `closed`, got `{other}`")),
        }
    }
}

/// Which shared decision failed, for the error hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisOp {
    /// A rate-limit check.
    RateLimit,
    /// Taking a stream lease.
    StreamAcquire,
    /// Refreshing or releasing a stream lease.
    StreamLease,
}

impl RedisOp {
    /// A short label (`rate_limit`, `stream_acquire`, `stream_lease`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::StreamAcquire => "stream_acquire",
            Self::StreamLease => "stream_lease",
        }
    }
}

type ErrorHook = dyn Fn(RedisOp, FailureMode, &RedisError) + Send + Sync;

/// Rate limits and stream caps kept in Redis; clones share one connection and counters.
#[derive(Clone)]
pub struct RedisLimits {
    shared: Arc<Shared>,
}

struct Shared {
    conn: ConnectionManager,
    prefix: String,
    failure: FailureMode,
    lease: Duration,
    timeout: Duration,
    gcra: Script,
    acquire: Script,
    refresh: Script,
    errors: AtomicU64,
    on_error: Option<Box<ErrorHook>>,
    /// This replica's own limits, used while Redis is unreachable in `Open` mode.
    fallback: Limiter,
}

/// Builds a [`RedisLimits`].
pub struct RedisLimitsBuilder {
    conn: ConnectionManager,
    prefix: String,
    failure: FailureMode,
    lease: Duration,
    timeout: Duration,
    on_error: Option<Box<ErrorHook>>,
}

impl RedisLimitsBuilder {
    /// Prefix of every Redis key (default `codex:`), to share one Redis between gateways.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What to do when Redis cannot decide (default [`FailureMode::Open`]).
    pub fn failure(mut self, mode: FailureMode) -> Self {
        self.failure = mode;
        self
    }

    /// How long a stream lease lives unless refreshed (default 15 s): how long the
    /// streams of a replica that died keep counting.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// Longest a decision may wait for Redis before it counts as a failure (default 250 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Called on every failed Redis call (metrics, logs).
    pub fn on_error(
        mut self,
        hook: impl Fn(RedisOp, FailureMode, &RedisError) + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Some(Box::new(hook));
        self
    }

    /// The shared limits.
    pub fn build(self) -> RedisLimits {
        RedisLimits {
            shared: Arc::new(Shared {
                conn: self.conn,
                prefix: self.prefix,
                failure: self.failure,
                lease: self.lease,
                timeout: self.timeout,
                gcra: Script::new(GCRA),
                acquire: Script::new(ACQUIRE),
                refresh: Script::new(REFRESH),
                errors: AtomicU64::new(0),
                on_error: self.on_error,
                fallback: Limiter::new(),
            }),
        }
    }
}

/// Why a stream slot was not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireError {
    /// The key holds its maximum of streams.
    Exceeded(ConcurrencyExceeded),
    /// Redis could not decide and the failure mode is `Closed`.
    Unavailable(LimiterUnavailable),
}

impl RedisLimits {
    /// Limits kept through `conn` (use a lazy [`ConnectionManager`] so a replica starts
    /// while Redis is down).
    pub fn builder(conn: ConnectionManager) -> RedisLimitsBuilder {
        RedisLimitsBuilder {
            conn,
            prefix: "codex:".into(),
            failure: FailureMode::Open,
            lease: Duration::from_secs(15),
            timeout: Duration::from_millis(250),
            on_error: None,
        }
    }

    /// The connection, to share it with other users of the same Redis.
    pub fn connection(&self) -> ConnectionManager {
        self.shared.conn.clone()
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The configured failure mode.
    pub fn failure(&self) -> FailureMode {
        self.shared.failure
    }

    /// Redis calls that failed since start.
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    fn report(&self, op: RedisOp, err: &RedisError) {
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = &self.shared.on_error {
            hook(op, self.shared.failure, err);
        }
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        match tokio::time::timeout(self.shared.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::from((
                redis::ErrorKind::Io,
                "redis call timed out",
            ))),
        }
    }

    fn bucket_key(&self, key: &RateKey) -> String {
        let q = key.quota;
        format!(
            "{}rl:{}:{}:{}",
            self.shared.prefix,
            q.max,
            q.window.as_millis(),
            key.key
        )
    }

    /// Counts one request against `key`'s shared bucket. `Err` carries the Redis error
    /// (not yet reported); see [`check`](Self::check) for the failure mode applied.
    pub async fn check_shared(
        &self,
        key: &RateKey,
    ) -> redis::RedisResult<Result<RateLimitStatus, RateLimited>> {
        let quota = key.quota;
        if quota.max == 0 {
            return Ok(self.shared.fallback.check(key));
        }
        let interval = quota.replenish_interval();
        let interval_us = interval.as_micros().max(1) as u64;
        let mut conn = self.shared.conn.clone();
        let mut call = self.shared.gcra.key(self.bucket_key(key));
        call.arg(interval_us).arg(quota.max);
        let (allowed, retry_us, remaining, reset_us): (i64, i64, i64, i64) =
            self.timed(call.invoke_async(&mut conn)).await?;
        let us = |v: i64| Duration::from_micros(v.max(0) as u64);
        if allowed == 1 {
            Ok(Ok(RateLimitStatus {
                limit: quota.max,
                remaining: remaining.clamp(0, i64::from(quota.max)) as u32,
                reset: us(reset_us),
            }))
        } else {
            Ok(Err(RateLimited {
                retry_after: us(retry_us),
                status: RateLimitStatus {
                    limit: quota.max,
                    remaining: 0,
                    reset: us(reset_us),
                },
            }))
        }
    }

    /// Counts one request, applying the failure mode when Redis cannot decide.
    pub(crate) async fn check(&self, key: RateKey) -> Verdict {
        match self.check_shared(&key).await {
            Ok(Ok(status)) => Verdict::Allowed(Some(status)),
            Ok(Err(limited)) => Verdict::Limited(limited),
            Err(e) => {
                self.report(RedisOp::RateLimit, &e);
                match self.shared.failure {
                    FailureMode::Open => match self.shared.fallback.check(&key) {
                        Ok(status) => Verdict::Allowed(Some(status)),
                        Err(limited) => Verdict::Limited(limited),
                    },
                    FailureMode::Closed => Verdict::Unavailable,
                }
            }
        }
    }

    /// Takes one of `key`'s `max` stream slots across the fleet, falling back to
    /// `local` (this replica's counts) while Redis is unreachable in `Open` mode.
    pub(crate) async fn acquire(
        &self,
        key: &str,
        max: usize,
        local: &KeyedConcurrency,
    ) -> Result<crate::ConcurrencyPermit, AcquireError> {
        let exceeded = ConcurrencyExceeded { max_per_key: max };
        if max == 0 {
            return Err(AcquireError::Exceeded(exceeded));
        }
        let zkey = format!("{}streams:{}", self.shared.prefix, key);
        let id = format!("{:032x}", rand_id());
        let lease_ms = self.shared.lease.as_millis() as u64;
        let mut conn = self.shared.conn.clone();
        let mut call = self.shared.acquire.key(&zkey);
        call.arg(&id).arg(max).arg(lease_ms);
        match self.timed(call.invoke_async::<i64>(&mut conn)).await {
            Ok(1) => Ok(crate::ConcurrencyPermit::shared(Lease::start(
                self.clone(),
                zkey,
                id,
            ))),
            Ok(_) => Err(AcquireError::Exceeded(exceeded)),
            Err(e) => {
                self.report(RedisOp::StreamAcquire, &e);
                match self.shared.failure {
                    FailureMode::Open => local.try_acquire(key).map_err(AcquireError::Exceeded),
                    FailureMode::Closed => Err(AcquireError::Unavailable(LimiterUnavailable)),
                }
            }
        }
    }
}

impl fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimits")
            .field("prefix", &self.shared.prefix)
            .field("failure", &self.shared.failure)
            .field("lease", &self.shared.lease)
            .field("errors", &self.errors())
            .finish_non_exhaustive()
    }
}

/// Lease ids unique across replicas without a `rand` dependency: std's per-process
/// random hasher keys over a process-wide counter, plus the time.
fn rand_id() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let hashed = RandomState::new().hash_one(n);
    (u128::from(hashed) << 64) ^ nanos
}

// === impl Lease ===

/// One stream's slot in Redis: refreshed while it lives, removed when dropped.
pub(crate) struct Lease {
    refresher: tokio::task::JoinHandle<()>,
    limits: RedisLimits,
    zkey: String,
    id: String,
}

impl Lease {
    fn start(limits: RedisLimits, zkey: String, id: String) -> Self {
        let refresher = {
            let limits = limits.clone();
            let zkey = zkey.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let every = limits.shared.lease / 3;
                let lease_ms = limits.shared.lease.as_millis() as u64;
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    let mut conn = limits.shared.conn.clone();
                    let mut call = limits.shared.refresh.key(&zkey);
                    call.arg(&id).arg(lease_ms);
                    if let Err(e) = limits.timed(call.invoke_async::<i64>(&mut conn)).await {
                        limits.report(RedisOp::StreamLease, &e);
                    }
                }
            })
        };
        Self {
            refresher,
            limits,
            zkey,
            id,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.refresher.abort();
        // Removing the lease frees the slot at once; if this fails (Redis down, no
        // runtime any more) the lease expires on its own.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let limits = self.limits.clone();
        let zkey = std::mem::take(&mut self.zkey);
        let id = std::mem::take(&mut self.id);
        rt.spawn(async move {
            let mut conn = limits.shared.conn.clone();
            let del = redis::cmd("ZREM").arg(&zkey).arg(&id).to_owned();
            let res: redis::RedisResult<i64> = limits.timed(del.query_async(&mut conn)).await;
            if let Err(e) = res {
                limits.report(RedisOp::StreamLease, &e);
            }
        });
    }
}

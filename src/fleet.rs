//! Several replicas behind one balancer: what they share through Redis
//! (`PROXY_REDIS_URL`) and the name each one carries (`PROXY_REPLICA_ID`).
//!
//! - Rate limits and stream caps count fleet-wide in Redis
//!   ([`codex_rate_limit::RedisLimits`]): one key's quota is one quota, whichever
//!   replica a request reaches.
//! - The maintenance switch is one Redis hash every replica follows
//!   ([`codex_maintenance::FleetSwitch`], read every [`MAINTENANCE_POLL`]); the admin
//!   call on any replica writes it, and each replica's `/readyz` follows its own handle.
//! - The replica's name goes out as `x-codex-replica` and into Responses ids, so the
//!   balancer can send a conversation's next request to the replica that holds its
//!   thread (docs/operations.md, "Several replicas").
//!
//! Redis is never needed to start: the connection is lazy, and while Redis is
//! unreachable `PROXY_REDIS_FAILURE` decides (counted in
//! `codex_gateway_redis_errors_total{op,mode}`, logged at most every 10 s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_maintenance::FleetSwitch;
use codex_rate_limit::{FailureMode, RedisLimits, RedisOp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::FleetConfig;
use crate::store::{SharedCopies, SharedFuture, StoredResponse};

/// How often each replica reads the fleet's maintenance switch.
pub const MAINTENANCE_POLL: Duration = Duration::from_secs(1);

/// Longest a request waits for a Redis decision before the failure mode applies.
/// Generous: a refused connection (Redis down) fails at once anyway, and a burst
/// of a few hundred decisions on a loaded host must not fail open by timing out
/// (250 ms did, measured with 360 requests at once on 2 cores, tests/fleet.rs).
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// What this replica shares with the others.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    /// Fleet-wide rate limits and stream caps; `None` without `PROXY_REDIS_URL`.
    pub limits: Option<RedisLimits>,
    /// The fleet's maintenance switch; `None` without `PROXY_REDIS_URL`.
    pub switch: Option<FleetSwitch>,
    /// `PROXY_REPLICA_ID`.
    pub replica: Option<Arc<str>>,
    /// Where failed Redis calls are counted and logged.
    reporter: Option<Arc<Reporter>>,
}

#[derive(Debug)]
struct Reporter {
    errors: Family<ErrorLabels, Counter>,
    log: LogThrottle,
}

impl Reporter {
    fn report(&self, op: &'static str, mode: &'static str, e: &redis::RedisError) {
        self.errors.get_or_create(&ErrorLabels { op, mode }).inc();
        self.log.warn(op, mode, e);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    op: &'static str,
    mode: &'static str,
}

impl Fleet {
    /// Connects (lazily) to Redis and registers `redis_errors_total`. Must run on
    /// the tokio runtime (the connection manager's reconnects are tasks).
    pub fn connect(config: &FleetConfig, registry: &mut Registry) -> Result<Fleet, String> {
        let replica = config.replica.as_deref().map(Arc::from);
        let Some(url) = &config.redis_url else {
            return Ok(Fleet {
                replica,
                ..Fleet::default()
            });
        };
        let client =
            redis::Client::open(url.as_str()).map_err(|e| format!("PROXY_REDIS_URL: {e}"))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            // A request never waits for reconnect attempts: it fails over to the
            // failure mode and the manager reconnects in the background.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| format!("PROXY_REDIS_URL: {e}"))?;

        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "redis_errors",
            "Redis calls that failed, by operation and the failure mode applied",
            errors.clone(),
        );
        let reporter = Arc::new(Reporter {
            errors,
            log: LogThrottle::default(),
        });
        let limits = {
            let reporter = reporter.clone();
            RedisLimits::builder(conn.clone())
                .prefix(config.prefix.clone())
                .failure(config.failure)
                .timeout(REDIS_TIMEOUT)
                .on_error(
                    move |op: RedisOp, mode: FailureMode, e: &redis::RedisError| {
                        reporter.report(op.as_str(), mode_label(mode), e);
                    },
                )
                .build()
        };
        Ok(Fleet {
            limits: Some(limits),
            switch: Some(FleetSwitch::new(
                conn,
                format!("{}maintenance", config.prefix),
            )),
            replica,
            reporter: Some(reporter),
        })
    }

    /// Applies the fleet's maintenance switch to `handle` every
    /// [`MAINTENANCE_POLL`]; `None` without Redis. While Redis is unreachable the
    /// replica keeps the state it last read.
    pub fn follow_maintenance(
        &self,
        handle: codex_maintenance::MaintenanceHandle,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let switch = self.switch.clone()?;
        let reporter = self.reporter.clone()?;
        Some(switch.follow(handle, MAINTENANCE_POLL, move |e| {
            reporter.report("maintenance", "keep", e);
        }))
    }
}

fn mode_label(mode: FailureMode) -> &'static str {
    match mode {
        FailureMode::Open => "open",
        FailureMode::Closed => "closed",
    }
}

/// One warning per 10 s at most, saying how many failures it stands for: Redis
/// going away under load must not flood the log with one line per request.
#[derive(Debug, Default)]
struct LogThrottle {
    suppressed: AtomicU64,
    /// Milliseconds since `EPOCH` of the last line (0: never).
    last: AtomicU64,
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

impl LogThrottle {
    const EVERY: Duration = Duration::from_secs(10);

    fn warn(&self, op: &str, mode: &str, e: &redis::RedisError) {
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < Self::EVERY.as_millis() as u64 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(op, failure_mode = mode, error = %e, suppressed, "redis unavailable; failure mode applied");
    }
}

/// Stored Responses shared by the fleet: each record also goes to Redis (one JSON
/// string per response, expiring with it), and a replica that is asked for a
/// response it does not hold (its replica died, or the balancer sent the follow-up
/// elsewhere) copies the conversation's records from Redis into its own store before
/// answering. The local SQLite store stays the one that is read; Redis is what
/// survives a replica.
#[derive(Clone)]
struct SharedResponses {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    reporter: Arc<Reporter>,
}

impl std::fmt::Debug for SharedResponses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedResponses")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// The shared side of the response store (records live `ttl`, like locally);
    /// `None` without Redis.
    pub fn shared_responses(&self, ttl: Duration) -> Option<Arc<dyn SharedCopies>> {
        let limits = self.limits.as_ref()?;
        Some(Arc::new(SharedResponses {
            conn: limits.connection(),
            prefix: limits.prefix().to_owned(),
            ttl,
            reporter: self.reporter.clone()?,
        }))
    }
}

impl SharedResponses {
    fn key(&self, id: &str) -> String {
        format!("{}resp:{id}", self.prefix)
    }

    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        tokio::time::timeout(REDIS_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "redis call timed out",
                )))
            })
    }

    /// Writes `record`; a failure is counted and logged, never the request's: the
    /// conversation still continues on this replica, only not elsewhere.
    async fn put(&self, record: &StoredResponse) {
        let value = serde_json::json!({
            "id": record.id,
            "owner": record.owner,
            "parent": record.parent,
            "created_at": record.created_at,
            "input_items": record.input_items,
            "response": record.response,
        })
        .to_string();
        let expires = record.created_at.saturating_add(self.ttl.as_secs().max(1));
        let secs = expires.saturating_sub(crate::calendar::unix_now()).max(1);
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("SET")
            .arg(self.key(&record.id))
            .arg(value)
            .arg("EX")
            .arg(secs)
            .to_owned();
        if let Err(e) = self.timed(cmd.query_async::<()>(&mut conn)).await {
            self.reporter.report("response_put", "local_only", &e);
        }
    }

    /// Removes the shared copy of `id`.
    async fn delete(&self, id: &str) {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("DEL").arg(self.key(id)).to_owned();
        if let Err(e) = self.timed(cmd.query_async::<i64>(&mut conn)).await {
            self.reporter.report("response_delete", "local_only", &e);
        }
    }

    /// The shared record `id` (any owner: the store filters by owner when it reads).
    async fn get(&self, id: &str) -> Option<StoredResponse> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("GET").arg(self.key(id)).to_owned();
        let raw: Option<String> = match self.timed(cmd.query_async(&mut conn)).await {
            Ok(v) => v,
            Err(e) => {
                self.reporter.report("response_get", "local_only", &e);
                return None;
            }
        };
        let v: serde_json::Value = serde_json::from_str(&raw?).ok()?;
        Some(StoredResponse {
            id: v["id"].as_str()?.to_owned(),
            owner: v["owner"].as_str()?.to_owned(),
            parent: v["parent"].as_str().map(str::to_owned),
            created_at: v["created_at"].as_u64()?,
            input_items: v["input_items"].clone(),
            response: v["response"].clone(),
        })
    }
}

impl SharedCopies for SharedResponses {
    fn put<'a>(&'a self, record: &'a StoredResponse) -> SharedFuture<'a, ()> {
        Box::pin(SharedResponses::put(self, record))
    }

    fn get<'a>(&'a self, id: &'a str) -> SharedFuture<'a, Option<StoredResponse>> {
        Box::pin(SharedResponses::get(self, id))
    }

    fn delete<'a>(&'a self, id: &'a str) -> SharedFuture<'a, ()> {
        Box::pin(SharedResponses::delete(self, id))
    }
}

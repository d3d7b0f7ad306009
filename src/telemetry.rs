//! Gateway-level Prometheus metrics (the HTTP ones live in `codex-metrics`).
//!
//! | name (prefix `codex_gateway_`) | type | labels |
//! |---|---|---|
//! | `worker_starts_total` | counter | worker |
//! | `worker_ready` | gauge (0/1) | worker |
//! | `worker_phase` | gauge (1 for the current phase) | worker, phase |
//! | `worker_turns_in_flight` | gauge | worker |
//! | `worker_recycles_total` | counter | worker |
//! | `worker_quota_exhausted` | gauge (0/1), read at each scrape | worker |
//! | `worker_quota_resets_at_seconds` | gauge: unix time the quota comes back, 0 while there is quota, read at each scrape | worker |
//! | `worker_login_required` | gauge (0/1): no login, or the provider refused it | worker |
//! | `turn_retries_total` | counter: fresh turns started again on another worker, read at each scrape | reason (quota, login) |
//! | `workers_ready` | gauge | – |
//! | `jsonrpc_calls_total` | counter | method, outcome |
//! | `tokens_total` | counter | kind (prompt, completion, cached_prompt, reasoning), key (the key's name, `-` without keys), model (as resolved from the worker's catalog) |
//! | `time_to_first_token_seconds` | histogram | stream |
//! | `turns_in_flight` | gauge | – |
//! | `live_threads` | gauge | – |
//! | `thread_evictions_total` | counter | reason (capacity, idle, worker_gone, deleted) |
//! | `conversation_continuations_total` | counter | outcome (reused, forked, rebuilt) |
//! | `turn_slots` | gauge: turns the worker may run at once (`WORKER_MAX_CONCURRENCY`) | – |
//! | `maintenance_enabled` | gauge (0/1), read at each scrape | – |
//!
//! The alert rules over these are `deploy/prometheus/alerts.yml`; the
//! dashboard `deploy/grafana/dashboard.json`; a test checks that every
//! metric the dashboard queries is served.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::core::Usage;
use crate::rpc::CallObserver;
use crate::worker::{MemberView, WorkerPhase, WorkerPool};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    outcome: &'static str,
}

/// A usage's counts by their `kind` label of `tokens_total`: the one place
/// that pairs them, so the cached counters and the counts line up.
fn token_counts(u: &Usage) -> [(&'static str, u64); 4] {
    [
        ("prompt", u.input_tokens),
        ("completion", u.output_tokens),
        ("cached_prompt", u.cached_input_tokens),
        ("reasoning", u.reasoning_output_tokens),
    ]
}

type FoldMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The caches hold counters only (shared with their family): a panic while
/// one was held leaves nothing half-written, so a poisoned lock is used as is.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    kind: &'static str,
    /// Bounded: key names come from the operator's configuration.
    key: String,
    /// Bounded: only models of the worker's catalog get this far.
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    worker: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: &'static str,
}

/// Time-to-first-token buckets, seconds: model latency spans milliseconds
/// (offline model) to a minute (long reasoning before the first token).
pub const TTFT_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// Gateway metrics, shared by every request.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    worker_starts: Family<WorkerLabels, Counter>,
    worker_ready: Family<WorkerLabels, Gauge>,
    worker_recycles: Family<WorkerLabels, Counter>,
    workers_ready: Gauge,
    worker_phase: Family<PhaseLabels, Gauge>,
    calls: Family<CallLabels, Counter>,
    /// `calls`' counters by (method, outcome), so that counting a call is a
    /// foldhash lookup of two short strings and an atomic add, not a
    /// SipHash of its label set under the family's lock (three per request).
    call_counters: RwLock<FoldMap<(&'static str, &'static str), Counter>>,
    tokens: Family<TokenLabels, Counter>,
    /// `tokens`' four counters by key name, then model, for the same
    /// reason: a response's usage costs four atomic adds, not four
    /// label-set lookups that each allocate the key and model names.
    token_counters: RwLock<FoldMap<String, FoldMap<String, [Counter; 4]>>>,
    ttft: Family<StreamLabels, Histogram, fn() -> Histogram>,
    turns_in_flight: Gauge,
    turn_slots: Gauge,
    maintenance: Gauge,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> GatewayMetrics {
        let inner = Inner {
            worker_starts: Family::default(),
            worker_ready: Family::default(),
            worker_recycles: Family::default(),
            workers_ready: Gauge::default(),
            worker_phase: Family::default(),
            calls: Family::default(),
            call_counters: RwLock::default(),
            tokens: Family::default(),
            token_counters: RwLock::default(),
            ttft: Family::new_with_constructor(|| Histogram::new(TTFT_BUCKETS)),
            turns_in_flight: Gauge::default(),
            turn_slots: Gauge::default(),
            maintenance: Gauge::default(),
        };
        registry.register(
            "worker_starts",
            "Codex worker processes started (restarts = this - 1)",
            inner.worker_starts.clone(),
        );
        registry.register(
            "worker_ready",
            "1 while the worker is handshaken and its channel open",
            inner.worker_ready.clone(),
        );
        registry.register(
            "workers_ready",
            "Workers of the pool ready now",
            inner.workers_ready.clone(),
        );
        registry.register(
            "worker_recycles",
            "Workers drained and replaced (rolling restart, WORKER_MAX_TURNS, WORKER_MAX_RSS_MB)",
            inner.worker_recycles.clone(),
        );
        registry.register(
            "worker_phase",
            "1 for the worker's current lifecycle phase",
            inner.worker_phase.clone(),
        );
        registry.register(
            "jsonrpc_calls",
            "JSON-RPC requests to the worker by method and outcome",
            inner.calls.clone(),
        );
        registry.register(
            "tokens",
            "Tokens reported by the worker, by kind",
            inner.tokens.clone(),
        );
        registry.register_with_unit(
            "time_to_first_token",
            "From request arrival to the first content or tool call of a chat completion",
            Unit::Seconds,
            inner.ttft.clone(),
        );
        registry.register(
            "turns_in_flight",
            "Turns running on the workers now (all of them)",
            inner.turns_in_flight.clone(),
        );
        registry.register(
            "turn_slots",
            "Turns the worker may run at once (WORKER_MAX_CONCURRENCY); saturation is turns_in_flight / turn_slots",
            inner.turn_slots.clone(),
        );
        registry.register(
            "maintenance_enabled",
            "1 while maintenance mode is on",
            inner.maintenance.clone(),
        );
        GatewayMetrics {
            inner: Arc::new(inner),
        }
    }

    pub fn set_turn_slots(&self, slots: usize) {
        self.inner.turn_slots.set(slots as i64);
    }

    pub fn set_maintenance(&self, on: bool) {
        self.inner.maintenance.set(i64::from(on));
    }

    /// The observer the worker's channel reports each call to.
    pub fn call_observer(&self) -> CallObserver {
        let inner = self.inner.clone();
        Arc::new(move |method, outcome| {
            let cached = read(&inner.call_counters)
                .get(&(method, outcome))
                .map(Counter::inc)
                .is_some();
            if !cached {
                let counter = inner
                    .calls
                    .get_or_create(&CallLabels { method, outcome })
                    .clone();
                counter.inc();
                write(&inner.call_counters).insert((method, outcome), counter);
            }
        })
    }

    /// Counts a response's tokens under the key that asked and the model
    /// that answered.
    pub fn record_usage(&self, u: &Usage, key: &str, model: &str) {
        let key = if key.is_empty() { "-" } else { key };
        let counts = token_counts(u).map(|(_, n)| n);
        let add = |counters: &[Counter; 4]| {
            for (counter, n) in counters.iter().zip(counts) {
                counter.inc_by(n);
            }
        };
        if let Some(counters) = read(&self.inner.token_counters)
            .get(key)
            .and_then(|by_model| by_model.get(model))
        {
            return add(counters);
        }
        // First usage of this key and model: make the label sets once.
        let counters = token_counts(u).map(|(kind, _)| {
            self.inner
                .tokens
                .get_or_create(&TokenLabels {
                    kind,
                    key: key.to_owned(),
                    model: model.to_owned(),
                })
                .clone()
        });
        add(&counters);
        write(&self.inner.token_counters)
            .entry(key.to_owned())
            .or_default()
            .insert(model.to_owned(), counters);
    }

    pub fn record_first_token(&self, stream: bool, after: Duration) {
        let label = StreamLabels {
            stream: if stream { "true" } else { "false" },
        };
        self.inner
            .ttft
            .get_or_create(&label)
            .observe(after.as_secs_f64());
    }

    pub fn turns_in_flight(&self) -> &Gauge {
        &self.inner.turns_in_flight
    }

    /// Follows every worker's state until the gateway stops. The turns
    /// in flight per worker are the pool's own gauges, registered by
    /// [`register_pool_metrics`].
    pub fn watch_pool(&self, pool: WorkerPool) {
        for index in 0..pool.len() {
            let inner = self.inner.clone();
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut worker = pool.handle(index).clone();
                let labels = WorkerLabels {
                    worker: index.to_string(),
                };
                let mut last_starts = 0;
                let mut last_recycles = 0;
                loop {
                    let status = worker.status();
                    if status.starts > last_starts {
                        inner
                            .worker_starts
                            .get_or_create(&labels)
                            .inc_by(u64::from(status.starts - last_starts));
                        last_starts = status.starts;
                    }
                    let recycles = pool.recycles(index);
                    if recycles > last_recycles {
                        inner
                            .worker_recycles
                            .get_or_create(&labels)
                            .inc_by(u64::from(recycles - last_recycles));
                        last_recycles = recycles;
                    }
                    inner
                        .worker_ready
                        .get_or_create(&labels)
                        .set(i64::from(status.is_ready()));
                    inner.workers_ready.set(pool.ready_count() as i64);
                    for phase in [
                        WorkerPhase::Starting,
                        WorkerPhase::Handshaking,
                        WorkerPhase::Ready,
                        WorkerPhase::LoginRequired,
                        WorkerPhase::BackingOff,
                        WorkerPhase::Stopped,
                    ] {
                        let on = phase == status.phase;
                        inner
                            .worker_phase
                            .get_or_create(&PhaseLabels {
                                worker: labels.worker.clone(),
                                phase: phase_name(phase),
                            })
                            .set(i64::from(on));
                    }
                    if !worker.changed().await {
                        break;
                    }
                }
            });
        }
    }
}

/// Registers each worker's turns-in-flight gauge as
/// `worker_turns_in_flight{worker}`, and the account metrics read from the
/// pool at each scrape ([`AccountCollector`]).
pub fn register_pool_metrics(registry: &mut Registry, pool: &WorkerPool) {
    for index in 0..pool.len() {
        registry
            .sub_registry_with_label(("worker".into(), index.to_string().into()))
            .register(
                "worker_turns_in_flight",
                "Turns running on this worker now",
                pool.in_flight(index).clone(),
            );
    }
    registry.register_collector(Box::new(AccountCollector { pool: pool.clone() }));
}

/// Each worker's account as the pool routes by it. Read at scrape time: a
/// quota comes back at its reset time, which no event announces.
struct AccountCollector {
    pool: WorkerPool,
}

impl std::fmt::Debug for AccountCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    reason: &'static str,
}

impl Collector for AccountCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let views = self.pool.views();
        let per_worker = |encoder: &mut DescriptorEncoder,
                          name: &str,
                          help: &str,
                          value: &dyn Fn(&MemberView) -> i64|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for view in &views {
                let labels = WorkerLabels {
                    worker: view.worker.to_string(),
                };
                ConstGauge::new(value(view)).encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        };
        per_worker(
            &mut encoder,
            "worker_quota_exhausted",
            "1 while the worker's account is out of quota (it takes no new turns until the reset)",
            &|v| i64::from(v.quota_resets_at.is_some()),
        )?;
        per_worker(
            &mut encoder,
            "worker_quota_resets_at_seconds",
            "Unix time the worker's account quota comes back; 0 while it has quota",
            &|v| {
                v.quota_resets_at
                    .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX))
            },
        )?;
        per_worker(
            &mut encoder,
            "worker_login_required",
            "1 while the worker has no login, or the provider refused its credentials (GET /admin/workers says what to run)",
            &|v| i64::from(v.status.phase == WorkerPhase::LoginRequired),
        )?;
        let (quota, login) = self.pool.retries();
        let mut family = encoder.encode_descriptor(
            "turn_retries",
            "Fresh turns started again on another worker before anything reached the client, by why their first worker failed",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in [("quota", quota), ("login", login)] {
            ConstCounter::new(n).encode(family.encode_family(&RetryLabels { reason })?)?;
        }
        Ok(())
    }
}

fn phase_name(p: WorkerPhase) -> &'static str {
    match p {
        WorkerPhase::Starting => "starting",
        WorkerPhase::Handshaking => "handshaking",
        WorkerPhase::Ready => "ready",
        WorkerPhase::LoginRequired => "login_required",
        WorkerPhase::BackingOff => "backing_off",
        WorkerPhase::Stopped => "stopped",
    }
}

/// Registers the live-thread cache's metrics (`core::LiveThreads`).
pub fn register_thread_metrics(registry: &mut Registry, m: &crate::core::ThreadMetrics) {
    registry.register(
        "live_threads",
        "Codex threads kept loaded between a conversation's requests",
        m.live.clone(),
    );
    registry.register(
        "thread_evictions",
        "Kept threads unloaded without being continued, by reason",
        m.evictions.clone(),
    );
    registry.register(
        "conversation_continuations",
        "Requests continuing a conversation, by how: a turn on its live thread, or a fresh thread (fork, rebuild)",
        m.continuations.clone(),
    );
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn counters_found_through_the_caches_count_every_time() {
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        let usage = |input, output| Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: 1,
            reasoning_output_tokens: 0,
            total_tokens: input + output,
        };
        metrics.record_usage(&usage(10, 2), "a", "m1");
        metrics.record_usage(&usage(5, 3), "a", "m1");
        metrics.record_usage(&usage(7, 1), "a", "m2");
        metrics.record_usage(&usage(1, 1), "", "m1");
        let observe = metrics.call_observer();
        observe("turn/start", "ok");
        observe("turn/start", "ok");
        observe("turn/start", "error");
        metrics.call_observer()("turn/start", "ok");

        let text = scrape(&registry);
        for line in [
            r#"tokens_total{kind="prompt",key="a",model="m1"} 15"#,
            r#"tokens_total{kind="completion",key="a",model="m1"} 5"#,
            r#"tokens_total{kind="cached_prompt",key="a",model="m1"} 2"#,
            r#"tokens_total{kind="reasoning",key="a",model="m1"} 0"#,
            r#"tokens_total{kind="prompt",key="a",model="m2"} 7"#,
            r#"tokens_total{kind="prompt",key="-",model="m1"} 1"#,
            r#"jsonrpc_calls_total{method="turn/start",outcome="ok"} 3"#,
            r#"jsonrpc_calls_total{method="turn/start",outcome="error"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l.ends_with(line)),
                "no `{line}` in:\n{text}"
            );
        }
    }
}

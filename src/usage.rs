//! Token usage per key, model and hour, for billing and budgets.
//!
//! Each finished request's usage (codex's own accounting, the same numbers
//! the response reported) is added to one row per (hour, key name, model) in
//! `usage.sqlite3` under `PROXY_STATE_DIR`: SQLite through `rusqlite`, the
//! embedded store the response store already uses, in a file of its own so
//! its retention and its writes never contend with conversations.
//!
//! Recording never waits on the database: the access log hands each
//! request's totals to [`UsageLedger::record`], which only `try_send`s into a
//! bounded channel. One writer task drains it: the first record after a
//! quiet spell opens a [`BATCH_WINDOW`], the records of that window are
//! summed in memory per (hour, key, model), and the sums go to SQLite in one
//! transaction on the blocking pool, so under load the database sees a few
//! upserts a second whatever the request rate (was one transaction, and one
//! blocking-pool hand-off, per request). A full channel drops the record and
//! counts it (`usage_records_dropped_total`) rather than slowing requests
//! down; the writer empties the channel every window, so that takes more
//! than [`QUEUE`] requests in one window. `GET /v1/usage` asks the writer to
//! write what it holds first, so a finished request is never missing from
//! it because of the window; graceful shutdown ([`UsageWriter::finish`])
//! writes everything queued before the process exits.
//! Rows older than `PROXY_USAGE_RETENTION_DAYS` are deleted hourly.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rusqlite::{params, Connection};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::core::Usage;

/// Records waiting for the writer; beyond this they are dropped and counted.
/// The writer empties the channel once per [`BATCH_WINDOW`], so this is
/// ~65,000 requests/s before a record is dropped.
const QUEUE: usize = 16_384;

/// How long the writer gathers records before writing them.
const BATCH_WINDOW: Duration = Duration::from_millis(250);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage (
    hour              INTEGER NOT NULL,
    key               TEXT NOT NULL,
    model             TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    reasoning_tokens  INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    PRIMARY KEY (hour, key, model)
);
";

/// One request's usage, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Seconds since the epoch when the request ended.
    pub at: u64,
    /// The key's name; `""` on a gateway without keys.
    pub key: String,
    pub model: String,
    pub usage: Usage,
}

/// How `GET /v1/usage` groups its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupBy {
    pub key: bool,
    pub model: bool,
    pub hour: bool,
}

/// One row of a usage query. Ungrouped dimensions are `None` (summed over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
}

/// The ledger. Cheap to clone.
#[derive(Clone)]
pub struct UsageLedger {
    inner: Arc<Inner>,
}

/// A request to write what the writer holds; answered once it is written.
type FlushRequest = oneshot::Sender<()>;

struct Inner {
    conn: Mutex<Connection>,
    tx: mpsc::Sender<UsageRecord>,
    flush: mpsc::Sender<FlushRequest>,
    /// The receiving ends, until [`UsageLedger::spawn_writer`] takes them.
    rx: Mutex<Option<(mpsc::Receiver<UsageRecord>, mpsc::Receiver<FlushRequest>)>>,
    /// Whether a writer runs (a flush request would otherwise wait forever).
    writing: AtomicBool,
    retention: Duration,
    dropped: Counter,
}

impl std::fmt::Debug for UsageLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageLedger").finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Records summed per (hour, key, model), waiting to be written.
#[derive(Default)]
struct Pending {
    rows: HashMap<(u64, String, String), (u64, Usage)>,
}

impl Pending {
    fn add(&mut self, r: UsageRecord) {
        let (requests, sum) = self
            .rows
            .entry((r.at / 3600 * 3600, r.key, r.model))
            .or_default();
        *requests += 1;
        let u = &r.usage;
        sum.input_tokens += u.input_tokens;
        sum.cached_input_tokens += u.cached_input_tokens;
        sum.output_tokens += u.output_tokens;
        sum.reasoning_output_tokens += u.reasoning_output_tokens;
        sum.total_tokens += u.total_tokens;
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The running writer of a ledger; [`UsageWriter::finish`] it on shutdown.
#[derive(Debug)]
pub struct UsageWriter {
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl UsageWriter {
    /// Stops taking records, writes every record already queued, and returns
    /// once they are in the database. Records sent after this are dropped
    /// (and counted), so call it once no request can end any more.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

impl UsageLedger {
    /// Opens (or creates) `usage.sqlite3` in `state_dir`, or a ledger in
    /// memory without one (`PROXY_STATE_DIR=`).
    pub fn open(
        state_dir: Option<&Path>,
        retention: Duration,
        registry: &mut Registry,
    ) -> Result<UsageLedger, String> {
        let conn = match state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let conn = Connection::open(dir.join("usage.sqlite3"))
                    .map_err(|e| format!("usage ledger: {e}"))?;
                conn.pragma_update(None, "journal_mode", "WAL")
                    .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
                    .and_then(|_| conn.busy_timeout(Duration::from_secs(5)))
                    .map_err(|e| format!("usage ledger: {e}"))?;
                conn
            }
            None => Connection::open_in_memory().map_err(|e| format!("usage ledger: {e}"))?,
        };
        conn.execute_batch(SCHEMA)
            .map_err(|e| format!("usage ledger: {e}"))?;
        let dropped = Counter::default();
        registry.register(
            "usage_records_dropped",
            "Requests whose usage was not recorded because the ledger's queue was full",
            dropped.clone(),
        );
        let (tx, rx) = mpsc::channel(QUEUE);
        // Flushes come from `GET /v1/usage`; a few at once is plenty, the
        // rest just wait for the next window.
        let (flush, flush_rx) = mpsc::channel(64);
        Ok(UsageLedger {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                tx,
                flush,
                rx: Mutex::new(Some((rx, flush_rx))),
                writing: AtomicBool::new(false),
                retention,
                dropped,
            }),
        })
    }

    /// Queues a request's usage; never waits.
    pub fn record(&self, record: UsageRecord) {
        if self.inner.tx.try_send(record).is_err() {
            self.inner.dropped.inc();
        }
    }

    /// The writer (batches of queued records, see the module docs) and the
    /// hourly retention sweep. Call once; runs until [`UsageWriter::finish`].
    pub fn spawn_writer(&self) -> UsageWriter {
        let stop = CancellationToken::new();
        let ledger = self.clone();
        let ends = self.inner.rx.lock().ok().and_then(|mut r| r.take());
        if ends.is_some() {
            self.inner.writing.store(true, Ordering::Release);
        }
        let token = stop.clone();
        let task = tokio::spawn(async move {
            if let Some((rx, flushes)) = ends {
                ledger.run_writer(rx, flushes, token).await;
            }
        });
        UsageWriter { task, stop }
    }

    async fn run_writer(
        self,
        mut rx: mpsc::Receiver<UsageRecord>,
        mut flushes: mpsc::Receiver<FlushRequest>,
        stop: CancellationToken,
    ) {
        let mut sweep = tokio::time::interval(Duration::from_secs(3600));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending = Pending::default();
        loop {
            let mut flushed = Vec::new();
            let mut last = false;
            tokio::select! {
                biased;
                _ = stop.cancelled() => last = true,
                Some(ack) = flushes.recv() => flushed.push(ack),
                r = rx.recv() => match r {
                    Some(r) => pending.add(r),
                    None => last = true,
                },
                _ = sweep.tick() => {
                    let l = self.clone();
                    let _ = tokio::task::spawn_blocking(move || l.sweep(now_secs())).await;
                    continue;
                }
            }
            if !last && flushed.is_empty() {
                // A record after a quiet spell: gather the window's others
                // (without a wake-up each: nobody waits on the channel now).
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => last = true,
                    Some(ack) = flushes.recv() => flushed.push(ack),
                    _ = tokio::time::sleep(BATCH_WINDOW) => {}
                }
            }
            if last {
                // From here `record` fails (and counts); what is queued stays.
                rx.close();
            }
            while let Ok(r) = rx.try_recv() {
                pending.add(r);
            }
            if !pending.is_empty() {
                let l = self.clone();
                let rows = std::mem::take(&mut pending);
                let _ = tokio::task::spawn_blocking(move || l.write_rows(rows)).await;
            }
            for ack in flushed {
                let _ = ack.send(());
            }
            if last {
                self.inner.writing.store(false, Ordering::Release);
                return;
            }
        }
    }

    /// Waits until the writer has written what it holds (nothing to wait
    /// for without a running writer).
    async fn flush(&self) {
        if !self.inner.writing.load(Ordering::Acquire) {
            return;
        }
        let (ack, done) = oneshot::channel();
        if self.inner.flush.send(ack).await.is_ok() {
            // An error means the writer has stopped: nothing left to wait for.
            let _ = done.await;
        }
    }

    #[cfg(test)]
    fn write(&self, records: &[UsageRecord]) {
        let mut pending = Pending::default();
        for r in records {
            pending.add(r.clone());
        }
        self.write_rows(pending);
    }

    fn write_rows(&self, pending: Pending) {
        let Ok(mut conn) = self.inner.conn.lock() else {
            return;
        };
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO usage VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (hour, key, model) DO UPDATE SET
                       requests = requests + excluded.requests,
                       prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                       cached_tokens = cached_tokens + excluded.cached_tokens,
                       completion_tokens = completion_tokens + excluded.completion_tokens,
                       reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
                       total_tokens = total_tokens + excluded.total_tokens",
                )?;
                for ((hour, key, model), (requests, u)) in &pending.rows {
                    upsert.execute(params![
                        *hour as i64,
                        key,
                        model,
                        *requests as i64,
                        u.input_tokens as i64,
                        u.cached_input_tokens as i64,
                        u.output_tokens as i64,
                        u.reasoning_output_tokens as i64,
                        u.total_tokens as i64,
                    ])?;
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            let requests: u64 = pending.rows.values().map(|(n, _)| n).sum();
            tracing::warn!(error = %e, requests, "could not record usage");
        }
    }

    /// Deletes hours older than the retention; returns how many rows went.
    fn sweep(&self, now: u64) -> usize {
        let cutoff = now.saturating_sub(self.inner.retention.as_secs()) as i64;
        self.inner
            .conn
            .lock()
            .ok()
            .and_then(|c| {
                c.execute("DELETE FROM usage WHERE hour + 3600 <= ?1", [cutoff])
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Sums usage over `[start, end)` (seconds; whole hours that start in
    /// it), for `key` only when given, grouped as asked.
    pub async fn query(
        &self,
        start: u64,
        end: u64,
        key: Option<String>,
        group: GroupBy,
    ) -> Result<Vec<UsageRow>, String> {
        // What finished requests recorded is part of the answer, not left
        // in the writer's window.
        self.flush().await;
        let ledger = self.clone();
        tokio::task::spawn_blocking(move || ledger.query_now(start, end, key.as_deref(), group))
            .await
            .map_err(|e| e.to_string())?
    }

    fn query_now(
        &self,
        start: u64,
        end: u64,
        key: Option<&str>,
        group: GroupBy,
    ) -> Result<Vec<UsageRow>, String> {
        let conn = self
            .inner
            .conn
            .lock()
            .map_err(|_| "usage ledger poisoned")?;
        let mut cols = Vec::new();
        if group.hour {
            cols.push("hour");
        }
        if group.key {
            cols.push("key");
        }
        if group.model {
            cols.push("model");
        }
        let select = |c: &str| {
            if cols.contains(&c) {
                c.to_owned()
            } else {
                format!("NULL AS {c}")
            }
        };
        let group_clause = if cols.is_empty() {
            String::new()
        } else {
            format!("GROUP BY {0} ORDER BY {0}", cols.join(", "))
        };
        let sql = format!(
            "SELECT {}, {}, {}, SUM(requests), SUM(prompt_tokens), SUM(cached_tokens),
                    SUM(completion_tokens), SUM(reasoning_tokens), SUM(total_tokens)
             FROM usage WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR key = ?3)
             {group_clause}",
            select("hour"),
            select("key"),
            select("model"),
        );
        let mut stmt = conn.prepare(&sql).map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(params![start as i64, end as i64, key], |r| {
                let n = |i: usize| -> rusqlite::Result<u64> {
                    Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0) as u64)
                };
                Ok(UsageRow {
                    hour: r.get::<_, Option<i64>>(0)?.map(|h| h as u64),
                    key: r.get(1)?,
                    model: r.get(2)?,
                    requests: n(3)?,
                    prompt_tokens: n(4)?,
                    cached_prompt_tokens: n(5)?,
                    completion_tokens: n(6)?,
                    reasoning_tokens: n(7)?,
                    total_tokens: n(8)?,
                })
            })
            .map_err(|e| e.to_string())?;
        let rows: Vec<UsageRow> = rows.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        // Without grouping, an empty range still answers one row of zeros.
        Ok(rows
            .into_iter()
            .filter(|r| r.requests > 0 || cols.is_empty())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            cached_input_tokens: 0,
            output_tokens: output,
            reasoning_output_tokens: 0,
            total_tokens: input + output,
        }
    }

    fn ledger(retention_days: u64) -> UsageLedger {
        UsageLedger::open(
            None,
            Duration::from_secs(retention_days * 86_400),
            &mut Registry::default(),
        )
        .unwrap()
    }

    fn rec(at: u64, key: &str, model: &str, u: Usage) -> UsageRecord {
        UsageRecord {
            at,
            key: key.into(),
            model: model.into(),
            usage: u,
        }
    }

    const H: u64 = 1_796_068_800; // an hour boundary

    #[test]
    fn usage_is_summed_per_key_model_and_hour_and_grouped_as_asked() {
        let l = ledger(90);
        l.write(&[
            rec(H + 10, "alice", "m1", usage(100, 5)),
            rec(H + 3500, "alice", "m1", usage(50, 5)),
            rec(H + 3600, "alice", "m2", usage(10, 1)),
            rec(H + 20, "bob", "m1", usage(7, 3)),
        ]);
        let all = l.query_now(H, H + 7200, None, GroupBy::default()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (
                all[0].requests,
                all[0].prompt_tokens,
                all[0].completion_tokens
            ),
            (4, 167, 14)
        );
        assert_eq!(all[0].total_tokens, 181);

        let by_key = l
            .query_now(
                H,
                H + 7200,
                None,
                GroupBy {
                    key: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let keys: Vec<(Option<String>, u64)> = by_key
            .iter()
            .map(|r| (r.key.clone(), r.total_tokens))
            .collect();
        assert_eq!(
            keys,
            [(Some("alice".into()), 171), (Some("bob".into()), 10)]
        );

        let alice_hours = l
            .query_now(
                H,
                H + 7200,
                Some("alice"),
                GroupBy {
                    hour: true,
                    model: true,
                    key: false,
                },
            )
            .unwrap();
        let rows: Vec<(Option<u64>, Option<String>, u64)> = alice_hours
            .iter()
            .map(|r| (r.hour, r.model.clone(), r.requests))
            .collect();
        assert_eq!(
            rows,
            [
                (Some(H), Some("m1".into()), 2),
                (Some(H + 3600), Some("m2".into()), 1)
            ]
        );
        assert!(alice_hours.iter().all(|r| r.key.is_none()));

        // The range is of hours that start in it.
        let first_hour = l.query_now(H, H + 3600, None, GroupBy::default()).unwrap();
        assert_eq!(first_hour[0].requests, 3);
    }

    #[test]
    fn hours_beyond_the_retention_are_swept() {
        let l = ledger(1);
        l.write(&[
            rec(H, "k", "m", usage(1, 1)),
            rec(H + 86_400, "k", "m", usage(2, 2)),
        ]);
        assert_eq!(
            l.sweep(H + 86_400 + 3600),
            1,
            "the hour that ended a day ago goes"
        );
        let left = l
            .query_now(
                0,
                u64::MAX / 2,
                None,
                GroupBy {
                    hour: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].hour, Some(H + 86_400));
    }

    #[tokio::test]
    async fn a_query_sees_records_still_in_the_writers_window() {
        let l = ledger(90);
        let writer = l.spawn_writer();
        for _ in 0..3 {
            l.record(rec(H, "k", "m", usage(4, 2)));
        }
        // No waiting: the writer is inside its batch window, and the query
        // has it write first.
        let rows = l
            .query(H, H + 3600, None, GroupBy::default())
            .await
            .unwrap();
        assert_eq!((rows[0].requests, rows[0].total_tokens), (3, 18));
        writer.finish().await;
    }

    #[tokio::test]
    async fn finishing_the_writer_writes_everything_queued() {
        let l = ledger(90);
        let writer = l.spawn_writer();
        for i in 0..500 {
            l.record(rec(
                H + i,
                if i % 2 == 0 { "a" } else { "b" },
                "m",
                usage(1, 1),
            ));
        }
        writer.finish().await;
        let rows = l
            .query_now(
                H,
                H + 3600,
                None,
                GroupBy {
                    key: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let per_key: Vec<(Option<String>, u64, u64)> = rows
            .iter()
            .map(|r| (r.key.clone(), r.requests, r.total_tokens))
            .collect();
        assert_eq!(
            per_key,
            [(Some("a".into()), 250, 500), (Some("b".into()), 250, 500)]
        );
        // After the writer has finished, a late record is dropped and counted.
        l.record(rec(H, "a", "m", usage(1, 1)));
        assert_eq!(l.inner.dropped.get(), 1);
    }

    #[test]
    fn records_beyond_the_queue_are_dropped_and_counted() {
        let l = ledger(90);
        for _ in 0..QUEUE + 5 {
            l.record(rec(H, "k", "m", usage(1, 1)));
        }
        assert_eq!(l.inner.dropped.get(), 5);
    }
}

//! The JSON-RPC trace buffer (`PROXY_TRACE_BUFFER=true`): each request's
//! traffic with the worker, written to `{dir}/{timestamp}-{requestId}.json`
//! when the request ends, kept for `PROXY_TRACE_MAX_AGE_MS` and at most
//! `PROXY_TRACE_MAX_FILES` files.
//!
//! How lines find their request, without the core or the channel knowing
//! about requests:
//!
//! - The stack's [`TraceScopeLayer`] runs each request inside a task-local
//!   holding its request id ([`carry`] takes it into the task the core
//!   starts a turn in).
//! - The channel hands every line, both ways, to a [`LineTap`] (one branch
//!   per line when the buffer is off). A line the gateway sends inside a
//!   request's scope belongs to that request; so does the answer to it, and
//!   a thread whose id it names or that the answer creates
//!   (`thread/start`'s `result.thread.id`). The worker's notifications and
//!   requests then follow their `threadId`; the gateway's answer to a
//!   worker request follows that request's id.
//! - When the response body ends (or the client goes), the request's lines
//!   are written, redacted (`redact.rs`), and the directory is pruned. Lines
//!   that arrive later for its threads (the release of the thread after the
//!   response) are not kept.
//!
//! A request keeps at most [`MAX_LINES`] lines (a long stream of deltas);
//! the file says how many were left out.

mod files;
mod redact;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tower::{Layer, Service};
use tower_http::request_id::RequestId;

use crate::rpc::{Direction, LineTap};

/// Lines kept per request; the rest are counted, not stored.
pub const MAX_LINES: usize = 20_000;

tokio::task_local! {
    /// The request whose trace the lines sent now belong to; `None` inside
    /// [`outside_request`].
    static CURRENT: Option<Arc<str>>;
}

/// `PROXY_TRACE_*`.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    pub dir: PathBuf,
    pub max_age: Duration,
    pub max_files: usize,
    /// Keep message text and image data (`PROXY_TRACE_INCLUDE_CONTENT`).
    pub include_content: bool,
}

/// The buffer, shared by the channel's tap, the stack layer and the sweeper.
#[derive(Clone, Debug)]
pub struct TraceBuffer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: TraceConfig,
    routes: Mutex<Routes>,
    metrics: TraceMetrics,
}

/// Which request each line belongs to. Every entry points at an open
/// recording and goes when it is written.
#[derive(Debug, Default)]
struct Routes {
    recordings: HashMap<Arc<str>, Recording>,
    /// Our request ids → the request that sent them.
    calls: HashMap<i64, Arc<str>>,
    threads: HashMap<String, Arc<str>>,
    /// The worker's request ids (as JSON text) → the request of their thread.
    worker_requests: HashMap<String, Arc<str>>,
}

#[derive(Debug)]
struct Recording {
    started: SystemTime,
    lines: Vec<Value>,
    left_out: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `trace_files_written_total`, `trace_files_pruned_total{reason=age|count}`,
/// `trace_write_errors_total`.
#[derive(Clone, Debug, Default)]
struct TraceMetrics {
    written: Counter,
    pruned: Family<ReasonLabels, Counter>,
    errors: Counter,
}

impl TraceBuffer {
    /// A buffer whose metrics register in `registry`.
    pub fn new(config: TraceConfig, registry: &mut Registry) -> TraceBuffer {
        let metrics = TraceMetrics::default();
        registry.register(
            "trace_files_written",
            "JSON-RPC trace files written (PROXY_TRACE_BUFFER)",
            metrics.written.clone(),
        );
        registry.register(
            "trace_files_pruned",
            "JSON-RPC trace files removed by the sweeper, by reason (age, count)",
            metrics.pruned.clone(),
        );
        registry.register(
            "trace_write_errors",
            "JSON-RPC trace files that could not be written or pruned",
            metrics.errors.clone(),
        );
        TraceBuffer {
            inner: Arc::new(Inner {
                config,
                routes: Mutex::new(Routes::default()),
                metrics,
            }),
        }
    }

    pub fn config(&self) -> &TraceConfig {
        &self.inner.config
    }

    /// The tap the worker's channel calls for every line.
    pub fn tap(&self) -> LineTap {
        let buffer = self.clone();
        LineTap::new(move |direction, line| buffer.on_line(direction, line))
    }

    /// Runs `fut` as request `request_id`: lines it sends are its own.
    fn scope<F: Future>(&self, request_id: Arc<str>, fut: F) -> impl Future<Output = F::Output> {
        self.open(&request_id);
        CURRENT.scope(Some(request_id), fut)
    }

    fn open(&self, request_id: &Arc<str>) {
        if let Ok(mut routes) = self.inner.routes.lock() {
            routes.recordings.insert(
                request_id.clone(),
                Recording {
                    started: SystemTime::now(),
                    lines: Vec::new(),
                    left_out: 0,
                },
            );
        }
    }

    fn on_line(&self, direction: Direction, line: &[u8]) {
        let Ok(message) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        let current = match direction {
            Direction::Out => CURRENT.try_with(Option::clone).ok().flatten(),
            Direction::In => None,
        };
        let thread_of = |v: &Value| v["params"]["threadId"].as_str().map(str::to_owned);
        {
            let Ok(mut routes) = self.inner.routes.lock() else {
                return;
            };
            let owner = match direction {
                Direction::Out => {
                    let owner = current.or_else(|| {
                        thread_of(&message)
                            .and_then(|t| routes.threads.get(&t).cloned())
                            .or_else(|| {
                                // Our answer to a worker request.
                                let id = message.get("id")?.to_string();
                                message.get("method").is_none().then_some(())?;
                                routes.worker_requests.remove(&id)
                            })
                    });
                    let Some(owner) = owner.filter(|o| routes.recordings.contains_key(o)) else {
                        return;
                    };
                    if message.get("method").is_some() {
                        if let Some(id) = message["id"].as_i64() {
                            routes.calls.insert(id, owner.clone());
                        }
                    }
                    if let Some(thread) = thread_of(&message) {
                        routes.threads.insert(thread, owner.clone());
                    }
                    owner
                }
                Direction::In if message.get("method").is_some() => {
                    let Some(owner) =
                        thread_of(&message).and_then(|t| routes.threads.get(&t).cloned())
                    else {
                        return;
                    };
                    if let Some(id) = message.get("id") {
                        routes.worker_requests.insert(id.to_string(), owner.clone());
                    }
                    owner
                }
                Direction::In => {
                    let Some(owner) = message["id"]
                        .as_i64()
                        .and_then(|id| routes.calls.remove(&id))
                    else {
                        return;
                    };
                    if let Some(thread) = message["result"]["thread"]["id"].as_str() {
                        routes.threads.insert(thread.to_owned(), owner.clone());
                    }
                    owner
                }
            };
            let Some(rec) = routes.recordings.get_mut(&owner) else {
                return;
            };
            if rec.lines.len() >= MAX_LINES {
                rec.left_out += 1;
                return;
            }
            // Stored as received; redaction happens once, when written.
            rec.lines.push(json!({
                "at_ms": unix_ms(SystemTime::now()),
                "dir": match direction { Direction::Out => "to_worker", Direction::In => "from_worker" },
                "message": message,
            }));
        }
    }

    /// Writes the request's trace (on a blocking thread) and prunes.
    fn finish(&self, request_id: &Arc<str>) {
        let recording = {
            let Ok(mut routes) = self.inner.routes.lock() else {
                return;
            };
            routes.calls.retain(|_, o| o != request_id);
            routes.threads.retain(|_, o| o != request_id);
            routes.worker_requests.retain(|_, o| o != request_id);
            routes.recordings.remove(request_id)
        };
        let Some(recording) = recording else { return };
        let buffer = self.clone();
        let request_id = request_id.clone();
        let write = move || buffer.write(&request_id, recording);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(write);
            }
            Err(_) => write(),
        }
    }

    fn write(&self, request_id: &str, mut recording: Recording) {
        let config = &self.inner.config;
        for line in &mut recording.lines {
            redact::redact(&mut line["message"], config.include_content);
        }
        let ended = SystemTime::now();
        let doc = json!({
            "request_id": request_id,
            "started_at_ms": unix_ms(recording.started),
            "ended_at_ms": unix_ms(ended),
            "content_included": config.include_content,
            "lines_left_out": recording.left_out,
            "lines": recording.lines,
        });
        let name = files::file_name(recording.started, request_id);
        let bytes = serde_json::to_vec_pretty(&doc).expect("a Value serializes");
        match files::write(&config.dir, &name, &bytes) {
            Ok(_) => {
                self.inner.metrics.written.inc();
            }
            Err(e) => {
                self.inner.metrics.errors.inc();
                tracing::warn!(dir = %config.dir.display(), error = %e, "could not write a trace file");
            }
        }
        self.prune();
    }

    /// Removes traces beyond the age and count limits; logs and counts them.
    pub fn prune(&self) {
        let config = &self.inner.config;
        match files::prune(
            &config.dir,
            config.max_age,
            config.max_files,
            SystemTime::now(),
        ) {
            Ok(p) => {
                let m = &self.inner.metrics;
                if p.by_age > 0 {
                    m.pruned
                        .get_or_create(&ReasonLabels { reason: "age" })
                        .inc_by(p.by_age);
                }
                if p.by_count > 0 {
                    m.pruned
                        .get_or_create(&ReasonLabels { reason: "count" })
                        .inc_by(p.by_count);
                }
                if p.by_age + p.by_count > 0 {
                    tracing::info!(
                        by_age = p.by_age,
                        by_count = p.by_count,
                        dir = %config.dir.display(),
                        "pruned trace files"
                    );
                }
            }
            Err(e) => {
                self.inner.metrics.errors.inc();
                tracing::warn!(dir = %config.dir.display(), error = %e, "could not prune trace files");
            }
        }
    }

    /// Prunes now and then, so traces age out without traffic. Runs until aborted.
    pub fn sweeper(&self) -> tokio::task::JoinHandle<()> {
        let buffer = self.clone();
        let every =
            (self.inner.config.max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let b = buffer.clone();
                let _ = tokio::task::spawn_blocking(move || b.prune()).await;
            }
        })
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Runs `fut` in the current request's trace scope, if there is one: for
/// work a request hands to a task of its own (the core's turn start).
pub fn carry<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let current = CURRENT.try_with(Option::clone).ok().flatten();
    async move {
        match current {
            Some(id) => CURRENT.scope(Some(id), fut).await,
            None => fut.await,
        }
    }
}

/// Runs `f` in no request's trace scope: for what a request sends on
/// behalf of later ones (the warm thread its turn's start refills), whose
/// answer may come after the request's trace was written. Attributed to
/// the request, its line was kept and its answer lost.
pub fn outside_request<R>(f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(None, f)
}

// === the stack layer ===

/// Puts each request in its trace scope and writes the trace when the
/// response body ends or is dropped. Without a buffer it only passes
/// requests through (one branch), so the stack has one shape either way.
#[derive(Clone, Debug)]
pub struct TraceScopeLayer {
    buffer: Option<TraceBuffer>,
}

impl TraceScopeLayer {
    pub fn new(buffer: Option<TraceBuffer>) -> TraceScopeLayer {
        TraceScopeLayer { buffer }
    }
}

impl<S> Layer<S> for TraceScopeLayer {
    type Service = TraceScope<S>;
    fn layer(&self, inner: S) -> TraceScope<S> {
        TraceScope {
            inner,
            buffer: self.buffer.clone(),
        }
    }
}

/// The service of [`TraceScopeLayer`].
#[derive(Clone, Debug)]
pub struct TraceScope<S> {
    inner: S,
    buffer: Option<TraceBuffer>,
}

impl<S, B, ResB> Service<Request<B>> for TraceScope<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: Body + Send + 'static,
{
    type Response = Response<TraceBody<ResB>>;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(buffer) = &self.buffer else {
            let fut = self.inner.call(req);
            return Box::pin(async move {
                Ok(fut.await?.map(|inner| TraceBody {
                    inner,
                    _guard: None,
                }))
            });
        };
        let id: Arc<str> = req
            .extensions()
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .unwrap_or("unknown")
            .into();
        let guard = Finish {
            buffer: buffer.clone(),
            id: id.clone(),
        };
        let fut = buffer.scope(id, self.inner.call(req));
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|inner| TraceBody {
                inner,
                _guard: Some(guard),
            }))
        })
    }
}

/// Writes the trace on drop: of the body once sent, or of the future when
/// the client went away before the response.
struct Finish {
    buffer: TraceBuffer,
    id: Arc<str>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.buffer.finish(&self.id);
    }
}

pin_project! {
    /// The response body; the trace is written when it is dropped.
    pub struct TraceBody<B> {
        #[pin]
        inner: B,
        _guard: Option<Finish>,
    }
}

impl<B: Body> Body for TraceBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;

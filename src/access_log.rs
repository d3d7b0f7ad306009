//! One access-log line per request, written when its response body ends or
//! is dropped (a stream's line comes when the stream is over, with its real
//! duration and its tokens).
//!
//! The layer sits right under the request-id layer and outside every
//! rejecting layer, so a 401, a 429 or a maintenance 503 gets its line too.
//! It puts an [`AccessNote`] into the request's extensions; what only the
//! layers below know is written into it as it becomes known: the key's name
//! (the stack's `Caller` map), the model and the token usage (the pipeline).
//!
//! The line is the `access` target's event with the fields `request_id`,
//! `method`, `route` (the metrics label, never the raw path: no ids or
//! query strings in logs), `status`, `duration_ms`, `key` (the key's *name*,
//! never its secret), `model`, `prompt_tokens`, `completion_tokens`,
//! `total_tokens`, and `completed` (false when the client went away before
//! the body ended). `PROXY_LOG_FORMAT=json` makes it one JSON object.
//!
//! Levels: `info`; `warn` for a 5xx on an API route; `debug` for the probes
//! and `/metrics`, which an orchestrator calls every few seconds and which
//! would otherwise drown the log during an outage (their state changes are
//! logged by the supervisor: "worker is down", "worker ready").

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::request_id::RequestId;

use crate::core::Usage;
use crate::route::Route;
use crate::usage::{UsageLedger, UsageRecord};

/// What the layers below learn about a request, for its access-log line.
/// Cloned into the request's extensions; a poisoned lock only loses a field.
#[derive(Clone, Debug, Default)]
pub struct AccessNote(Arc<Mutex<Noted>>);

#[derive(Debug, Default)]
struct Noted {
    key: Option<String>,
    model: Option<String>,
    usage: Usage,
}

impl AccessNote {
    /// The name of the key the request was authenticated with.
    pub fn set_key(&self, name: &str) {
        if let Ok(mut n) = self.0.lock() {
            n.key = Some(name.to_owned());
        }
    }

    /// The model the request resolved to.
    pub fn set_model(&self, model: &str) {
        if let Ok(mut n) = self.0.lock() {
            n.model = Some(model.to_owned());
        }
    }

    /// Adds one turn's usage (a request with `n > 1` has several).
    pub fn add_usage(&self, u: &Usage) {
        if let Ok(mut n) = self.0.lock() {
            n.usage.input_tokens += u.input_tokens;
            n.usage.cached_input_tokens += u.cached_input_tokens;
            n.usage.output_tokens += u.output_tokens;
            n.usage.reasoning_output_tokens += u.reasoning_output_tokens;
            n.usage.total_tokens += u.total_tokens;
        }
    }
}

/// Adds the access-log line; see the module docs. With a ledger, the same
/// totals are recorded per key, model and hour (`crate::usage`).
#[derive(Clone, Debug, Default)]
pub struct AccessLogLayer {
    usage: Option<UsageLedger>,
}

impl AccessLogLayer {
    pub fn new(usage: Option<UsageLedger>) -> AccessLogLayer {
        AccessLogLayer { usage }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            usage: self.usage.clone(),
        }
    }
}

/// The service of [`AccessLogLayer`].
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
    usage: Option<UsageLedger>,
}

/// What the line says besides the note, fixed when the request arrives and
/// when the response head is known.
struct Entry {
    request_id: String,
    method: http::Method,
    route: Route,
    status: u16,
    started: Instant,
    note: AccessNote,
    usage: Option<UsageLedger>,
}

impl<S, B, ResB> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    ResB: Body,
{
    type Response = Response<AccessLogBody<ResB>>;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let note = AccessNote::default();
        req.extensions_mut().insert(note.clone());
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .unwrap_or("")
            .to_owned();
        let route = req
            .extensions()
            .get::<Route>()
            .copied()
            .unwrap_or(Route::Unknown);
        let method = req.method().clone();
        let started = Instant::now();
        let usage = self.usage.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let entry = Entry {
                request_id,
                method,
                route,
                status: res.status().as_u16(),
                started,
                note,
                usage,
            };
            Ok(res.map(|body| AccessLogBody {
                guard: Guard {
                    entry: Some(entry),
                    // An empty body is never polled.
                    completed: body.is_end_stream(),
                },
                inner: body,
            }))
        })
    }
}

pin_project! {
    /// The response body; writes the line when it ends or is dropped.
    pub struct AccessLogBody<B> {
        #[pin]
        inner: B,
        guard: Guard,
    }
}

/// Writes the line exactly once, on drop (hyper drops a body once it has
/// sent it, and drops it early when the client goes away).
struct Guard {
    entry: Option<Entry>,
    completed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.write(self.completed);
        }
    }
}

impl<B: Body> Body for AccessLogBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        // hyper stops polling a body that says it has ended, so a collected
        // body is complete once its last frame is out.
        if matches!(polled, Poll::Ready(None)) || this.inner.as_ref().is_end_stream() {
            this.guard.completed = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Entry {
    fn write(self, completed: bool) {
        let Entry {
            request_id,
            method,
            route,
            status,
            started,
            note,
            usage,
        } = self;
        let duration_ms = started.elapsed().as_millis() as u64;
        let noted = match note.0.lock() {
            Ok(mut n) => std::mem::take(&mut *n),
            Err(_) => Noted::default(),
        };
        let key = noted.key.as_deref().unwrap_or("-");
        let model = noted.model.as_deref().unwrap_or("-");
        let u = noted.usage;
        // What reached the model is billed: its usage, even for a response
        // that failed after the model answered.
        if let (Some(ledger), Some(model)) = (&usage, &noted.model) {
            if status < 400 || u.total_tokens > 0 {
                ledger.record(UsageRecord {
                    at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs(),
                    key: noted.key.clone().unwrap_or_default(),
                    model: model.clone(),
                    usage: u,
                });
            }
        }
        let probe = route.is_probe_or_metrics();
        let route = route.label();
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "access",
                    $level,
                    request_id = %request_id,
                    method = %method,
                    route,
                    status,
                    duration_ms,
                    key,
                    model,
                    prompt_tokens = u.input_tokens,
                    completion_tokens = u.output_tokens,
                    total_tokens = u.total_tokens,
                    completed,
                    "request"
                )
            };
        }
        if probe {
            line!(tracing::Level::DEBUG);
        } else if status >= 500 {
            line!(tracing::Level::WARN);
        } else {
            line!(tracing::Level::INFO);
        }
    }
}

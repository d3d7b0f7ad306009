//! [`RpcClient`]: correlation, timeouts and routing over one worker's stdio.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::error::RpcError;
use super::message::{Incoming, Notification, RawResult, RequestId, ServerRequest, ThreadEvent};
use super::scan;
use super::server_requests::ServerRequestPolicy;
use super::thread_queue::{
    thread_queue, QueueReceiver, QueueSender, SendTimeoutError, TrySendError,
};
use super::writer::{LineWriter, WriteError};
use crate::protocol::Method;

/// Tunables of one channel.
#[derive(Debug, Clone)]
pub struct RpcClientConfig {
    /// Deadline for every request we send (`WORKER_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Bytes the worker's stdin has not taken yet (codex is behind) before
    /// senders wait.
    pub outgoing_backlog_bytes: usize,
    /// Events buffered per thread subscriber. A subscriber that falls this far
    /// behind is cut off (its stream fails) rather than stalling every other
    /// thread on the shared stdout.
    pub subscription_capacity: usize,
    /// Longest line accepted from the worker; longer lines are logged and skipped.
    pub max_line_bytes: usize,
    /// How long the reader waits for a full subscriber before cutting it off.
    pub overflow_grace: Duration,
    /// Sees every line both ways (the trace buffer); `None` costs one branch.
    pub tap: Option<LineTap>,
    /// Gets the notifications that belong to no thread (the account's rate
    /// limits); `None`: they are dropped.
    pub on_notification: Option<NotificationHook>,
}

impl RpcClientConfig {
    /// The channel's own tunables, with the request deadline the operator
    /// chose (`WORKER_REQUEST_TIMEOUT_MS`, whose default lives in the
    /// configuration table, not here).
    pub fn new(request_timeout: Duration) -> RpcClientConfig {
        RpcClientConfig {
            request_timeout,
            outgoing_backlog_bytes: 4 * 1024 * 1024,
            // Codex can burst thousands of deltas faster than a consumer parses
            // them; ~4096 small events is a few MB at worst per lagging stream.
            subscription_capacity: 4096,
            max_line_bytes: 64 * 1024 * 1024,
            overflow_grace: Duration::from_millis(250),
            tap: None,
            on_notification: None,
        }
    }
}

/// Called once per finished request with its method and outcome
/// (`ok`, `error`, `timeout`, `gone`); the gateway counts these in Prometheus.
pub type CallObserver = Arc<dyn Fn(&'static str, &'static str) + Send + Sync>;

/// Which way a line went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written to the worker's stdin.
    Out,
    /// Read from the worker's stdout.
    In,
}

/// Called with every line the channel writes or reads, before it is
/// handled. It runs on the sender's task for [`Direction::Out`] and on the
/// reader task for [`Direction::In`], so it must be quick and never block.
#[derive(Clone)]
pub struct LineTap(Arc<TapFn>);

type TapFn = dyn Fn(Direction, &[u8]) + Send + Sync;

impl LineTap {
    pub fn new(f: impl Fn(Direction, &[u8]) + Send + Sync + 'static) -> LineTap {
        LineTap(Arc::new(f))
    }
}

impl std::fmt::Debug for LineTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineTap")
    }
}

/// Called on the reader task with each notification that names no thread
/// (method, the params' JSON text); like [`LineTap`] it must be quick and never block.
/// The params stay raw: most such notifications (`thread/started`, which
/// names its thread inside an object) are of no interest to the hook, which
/// parses only the ones it wants.
#[derive(Clone)]
pub struct NotificationHook(Arc<HookFn>);

type HookFn = dyn Fn(&str, &str) + Send + Sync;

impl NotificationHook {
    pub fn new(f: impl Fn(&str, &str) + Send + Sync + 'static) -> NotificationHook {
        NotificationHook(Arc::new(f))
    }
}

impl std::fmt::Debug for NotificationHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NotificationHook")
    }
}

/// A handle on the channel. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

struct Inner {
    writer: LineWriter,
    state: Mutex<State>,
    next_id: AtomicI64,
    closed_token: CancellationToken,
    config: RpcClientConfig,
    policy: ServerRequestPolicy,
    observer: Option<CallObserver>,
}

/// Both maps are looked up for every line codex writes, with keys codex
/// chose (our request ids, its thread ids), never a client: foldhash, not
/// the std SipHash, whose resistance to chosen keys is not needed here.
#[derive(Default)]
struct State {
    pending: HashMap<i64, Waiter, foldhash::fast::RandomState>,
    threads: HashMap<String, Subscriber, foldhash::fast::RandomState>,
    closed: Option<String>,
}

/// Who gets a request's response.
enum Waiter {
    /// A caller awaiting it.
    Caller(oneshot::Sender<Result<RawResult, RpcError>>),
    /// No caller: sent with [`RpcClient::send_detached`] (the response is
    /// only counted, an error logged) or [`RpcClient::send_then`] (it goes
    /// to `then`). `sent` bounds how long it is kept.
    Detached {
        method: &'static str,
        sent: Instant,
        then: Option<AnswerFn>,
    },
}

/// What [`RpcClient::send_then`] calls with the answer.
type AnswerFn = Box<dyn FnOnce(Result<RawResult, RpcError>) + Send>;

/// Pending requests past which detached ones older than the request
/// timeout are dropped (codex answers every request, so this only bounds
/// a worker that stopped answering).
const DETACHED_SWEEP_AT: usize = 4096;

struct Subscriber {
    tx: QueueSender,
    overflowed: Arc<AtomicBool>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.lock().expect("rpc state poisoned");
        f.debug_struct("RpcClient")
            .field("pending", &state.pending.len())
            .field("threads", &state.threads.len())
            .field("closed", &state.closed)
            .finish()
    }
}

// === impl RpcClient ===

impl RpcClient {
    /// Starts the reader and writer tasks over the worker's stdout and stdin.
    pub fn spawn<R, W>(
        reader: R,
        writer: W,
        config: RpcClientConfig,
        observer: Option<CallObserver>,
    ) -> RpcClient
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let client = RpcClient {
            inner: Arc::new(Inner {
                writer: LineWriter::new(writer, config.outgoing_backlog_bytes),
                state: Mutex::new(State::default()),
                next_id: AtomicI64::new(1),
                closed_token: CancellationToken::new(),
                config,
                policy: ServerRequestPolicy,
                observer,
            }),
        };
        tokio::spawn(flush_loop(client.clone()));
        tokio::spawn(read_loop(client.clone(), reader));
        client
    }

    /// Sends a typed request and waits for its typed response.
    ///
    /// The params are written straight into the line and the response is
    /// deserialized straight from the worker's text: no `Value` in between.
    pub async fn call<M: Method>(&self, params: &M::Params) -> Result<M::Response, RpcError> {
        self.call_as(M::NAME, params).await
    }

    /// [`RpcClient::call`] with params already encoded.
    pub async fn call_raw<M: Method>(&self, params: &RawValue) -> Result<M::Response, RpcError> {
        self.call_as(M::NAME, params).await
    }

    /// Sends a request with untyped params and waits for the raw result.
    pub async fn request(&self, method: &'static str, params: Value) -> Result<Value, RpcError> {
        self.call_as(method, &params).await
    }

    /// A request, its answer deserialized straight from the worker's text.
    async fn call_as<P: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &'static str,
        params: &P,
    ) -> Result<R, RpcError> {
        let raw = self.request_raw(method, params).await?;
        serde_json::from_str(raw.get()).map_err(|e| RpcError::Decode {
            method,
            detail: e.to_string(),
        })
    }

    async fn request_raw<P: Serialize + ?Sized>(
        &self,
        method: &'static str,
        params: &P,
    ) -> Result<RawResult, RpcError> {
        let outcome = self.request_inner(method, params).await;
        if let Some(observe) = &self.inner.observer {
            let label = match &outcome {
                Ok(_) => "ok",
                Err(RpcError::Remote { .. }) | Err(RpcError::Decode { .. }) => "error",
                Err(RpcError::Timeout { .. }) => "timeout",
                Err(RpcError::WorkerGone(_)) => "gone",
            };
            observe(method, label);
        }
        outcome
    }

    async fn request_inner<P: Serialize + ?Sized>(
        &self,
        method: &'static str,
        params: &P,
    ) -> Result<RawResult, RpcError> {
        let (id, line) = self.encode_request(method, params)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.inner.state.lock().expect("rpc state poisoned");
            if let Some(why) = &state.closed {
                return Err(RpcError::WorkerGone(why.clone()));
            }
            state.pending.insert(id, Waiter::Caller(tx));
        }
        // Removes the pending entry however this future ends (timeout, error,
        // or the caller dropping it), so the map never grows with dead ids.
        let _pending = PendingGuard { client: self, id };

        self.send_line(line).await?;

        match tokio::time::timeout(self.inner.config.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcError::WorkerGone(
                self.close_reason().unwrap_or_default(),
            )),
            Err(_) => Err(RpcError::Timeout {
                method,
                after: self.inner.config.request_timeout,
            }),
        }
    }

    /// Sends a request whose answer nobody waits for, without waiting:
    /// callable from a `Drop`. The line goes out right after the next
    /// request written, in the same write, or within a few milliseconds
    /// when none comes. The answer is counted like a call's (and an error answer
    /// logged); a closed channel or params that cannot be encoded send
    /// nothing (logged at debug: there is nobody to tell).
    ///
    /// For requests whose outcome and timing change nothing for the caller
    /// (releasing a thread): it costs no task, no timer and, under load, no
    /// write of its own, where a call costs all three.
    pub fn send_detached<M: Method>(&self, params: &M::Params) {
        self.send_deferred(M::NAME, params, None);
    }

    /// Sends a request like [`RpcClient::send_detached`] (with the next
    /// line written, no task, no timer), and hands its answer to `then`,
    /// called on the reader task: it must be quick and never block. A
    /// closed channel, params that cannot be encoded, or no answer within
    /// the request timeout (noticed when many requests are pending) call it
    /// with the error.
    pub fn send_then<P: Serialize + ?Sized>(
        &self,
        method: &'static str,
        params: &P,
        then: impl FnOnce(Result<RawResult, RpcError>) + Send + 'static,
    ) {
        self.send_deferred(method, params, Some(Box::new(then)));
    }

    fn send_deferred<P: Serialize + ?Sized>(
        &self,
        method: &'static str,
        params: &P,
        then: Option<AnswerFn>,
    ) {
        let (id, line) = match self.encode_request(method, params) {
            Ok(encoded) => encoded,
            Err(e) => {
                tracing::debug!(method, error = %e, "detached request not sent");
                if let Some(then) = then {
                    then(Err(e));
                }
                return;
            }
        };
        let expired = {
            let mut state = self.inner.state.lock().expect("rpc state poisoned");
            if let Some(why) = &state.closed {
                let why = RpcError::WorkerGone(why.clone());
                drop(state);
                if let Some(then) = then {
                    then(Err(why));
                }
                return;
            }
            let mut expired = Vec::new();
            if state.pending.len() >= DETACHED_SWEEP_AT {
                let timeout = self.inner.config.request_timeout;
                let old: Vec<i64> = state
                    .pending
                    .iter()
                    .filter(|(_, w)| {
                        matches!(w, Waiter::Detached { sent, .. } if sent.elapsed() >= timeout)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in old {
                    if let Some(Waiter::Detached {
                        method,
                        then: Some(then),
                        ..
                    }) = state.pending.remove(&id)
                    {
                        expired.push((method, then));
                    }
                }
            }
            state.pending.insert(
                id,
                Waiter::Detached {
                    method,
                    sent: Instant::now(),
                    then,
                },
            );
            expired
        };
        let timeout = self.inner.config.request_timeout;
        for (method, then) in expired {
            then(Err(RpcError::Timeout {
                method,
                after: timeout,
            }));
        }
        self.tap(&line);
        if let Err(e) = self.inner.writer.send_later(&line) {
            self.on_write_error(e);
        }
    }

    /// A request line, written in one pass with the params serialized into
    /// it directly; params that cannot be encoded fail before anything is sent.
    fn encode_request<P: Serialize + ?Sized>(
        &self,
        method: &'static str,
        params: &P,
    ) -> Result<(i64, Vec<u8>), RpcError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut line = Vec::with_capacity(256);
        {
            use std::io::Write as _;
            let _ = write!(line, "{{\"id\":{id},\"method\":");
        }
        serde_json::to_writer(&mut line, method).expect("a str always serializes");
        line.extend_from_slice(b",\"params\":");
        serde_json::to_writer(&mut line, params).map_err(|e| RpcError::Decode {
            method,
            detail: format!("cannot encode params: {e}"),
        })?;
        line.extend_from_slice(b"}\n");
        Ok((id, line))
    }

    /// Sends a notification (no answer expected).
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), RpcError> {
        let msg = match params {
            Some(params) => json!({ "method": method, "params": params }),
            None => json!({ "method": method }),
        };
        self.send_line(encode(&msg)).await
    }

    /// Answers a server→client request.
    pub async fn respond(
        &self,
        id: &RequestId,
        result: Result<Value, (i64, String)>,
    ) -> Result<(), RpcError> {
        let msg = match result {
            Ok(result) => json!({ "id": id.to_value(), "result": result }),
            Err((code, message)) => {
                json!({ "id": id.to_value(), "error": { "code": code, "message": message } })
            }
        };
        self.send_line(encode(&msg)).await
    }

    /// Routes this thread's notifications and tool-call requests to the
    /// returned subscription until it is dropped.
    pub fn subscribe(&self, thread_id: &str) -> ThreadSubscription {
        let (tx, rx) = thread_queue(self.inner.config.subscription_capacity);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut state = self.inner.state.lock().expect("rpc state poisoned");
        if state.closed.is_none() {
            state.threads.insert(
                thread_id.to_owned(),
                Subscriber {
                    tx,
                    overflowed: overflowed.clone(),
                },
            );
        }
        // When closed, `tx` is dropped here and the subscription ends at once.
        ThreadSubscription {
            rx,
            thread_id: thread_id.to_owned(),
            overflowed,
            client: self.clone(),
        }
    }

    /// Fails every pending request and ends every subscription. Idempotent;
    /// the first reason wins.
    pub fn close(&self, reason: impl Into<String>) {
        let (pending, threads) = {
            let mut state = self.inner.state.lock().expect("rpc state poisoned");
            if state.closed.is_some() {
                return;
            }
            let reason = reason.into();
            tracing::debug!(%reason, "json-rpc channel closed");
            state.closed = Some(reason);
            (
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.threads),
            )
        };
        let why = self.close_reason().unwrap_or_default();
        for (_, waiter) in pending {
            match waiter {
                Waiter::Caller(tx) => {
                    let _ = tx.send(Err(RpcError::WorkerGone(why.clone())));
                }
                Waiter::Detached {
                    then: Some(then), ..
                } => then(Err(RpcError::WorkerGone(why.clone()))),
                Waiter::Detached { then: None, .. } => {}
            }
        }
        drop(threads); // dropping the senders ends each subscription
        self.inner.closed_token.cancel();
    }

    /// Why the channel closed, if it has.
    pub fn close_reason(&self) -> Option<String> {
        self.inner
            .state
            .lock()
            .expect("rpc state poisoned")
            .closed
            .clone()
    }

    /// Identifies the channel (one worker process) while a handle on it lives.
    pub fn channel_id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Whether both are handles of one channel (one worker process).
    pub fn same_channel(&self, other: &RpcClient) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn is_closed(&self) -> bool {
        self.close_reason().is_some()
    }

    /// Resolves once the channel has closed.
    pub async fn closed(&self) {
        self.inner.closed_token.cancelled().await;
    }

    /// Requests sent and not yet answered.
    pub fn pending_requests(&self) -> usize {
        self.inner
            .state
            .lock()
            .expect("rpc state poisoned")
            .pending
            .len()
    }

    /// Threads with a live subscriber.
    pub fn subscribed_threads(&self) -> usize {
        self.inner
            .state
            .lock()
            .expect("rpc state poisoned")
            .threads
            .len()
    }

    async fn send_line(&self, line: Vec<u8>) -> Result<(), RpcError> {
        self.tap(&line);
        self.inner
            .writer
            .send(&line)
            .await
            .map_err(|e| self.on_write_error(e))
    }

    fn tap(&self, line: &[u8]) {
        if let Some(tap) = &self.inner.config.tap {
            (tap.0)(Direction::Out, line);
        }
    }

    /// A failed write closes the channel (the worker is gone or going).
    fn on_write_error(&self, e: WriteError) -> RpcError {
        if let WriteError::Failed(e) = e {
            self.close(format!("writing to worker stdin failed: {e}"));
        }
        RpcError::WorkerGone(
            self.close_reason()
                .unwrap_or_else(|| "writer stopped".into()),
        )
    }

    fn complete(&self, id: i64, result: Result<RawResult, RpcError>) -> bool {
        let waiter = self
            .inner
            .state
            .lock()
            .expect("rpc state poisoned")
            .pending
            .remove(&id);
        match waiter {
            Some(Waiter::Caller(tx)) => {
                let _ = tx.send(result);
                true
            }
            Some(Waiter::Detached { method, then, .. }) => {
                if let Err(e) = &result {
                    tracing::debug!(method, error = %e, "detached request failed");
                }
                if let Some(observe) = &self.inner.observer {
                    observe(method, if result.is_ok() { "ok" } else { "error" });
                }
                if let Some(then) = then {
                    then(result);
                }
                true
            }
            None => false,
        }
    }

    /// Delivers an event to its thread's subscriber. The reader serves every
    /// thread, so it waits for a full subscriber only `overflow_grace` (a
    /// consumer momentarily behind a burst catches up); one that stays behind
    /// is cut off rather than allowed to stall every other thread.
    async fn deliver(&self, thread_id: &str, event: ThreadEvent) -> Result<(), ThreadEvent> {
        // The common case, a subscriber with room, under the lock: no
        // clone of its sender per event.
        let (tx, overflowed, event) = {
            let mut state = self.inner.state.lock().expect("rpc state poisoned");
            let Some(sub) = state.threads.get(thread_id) else {
                return Err(event);
            };
            match sub.tx.try_send(event) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(event)) => {
                    state.threads.remove(thread_id);
                    return Err(event);
                }
                Err(TrySendError::Full(event)) => (sub.tx.clone(), sub.overflowed.clone(), event),
            }
        };
        match tx
            .send_timeout(event, self.inner.config.overflow_grace)
            .await
        {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(event)) => {
                tracing::warn!(thread_id, "subscriber fell behind; ending its stream");
                overflowed.store(true, Ordering::Release);
                self.unsubscribe(thread_id, &overflowed);
                Err(event)
            }
            Err(SendTimeoutError::Closed(event)) => {
                self.unsubscribe(thread_id, &overflowed);
                Err(event)
            }
        }
    }

    fn unsubscribe(&self, thread_id: &str, overflowed: &AtomicBool) {
        let mut state = self.inner.state.lock().expect("rpc state poisoned");
        // Only remove our own entry: a later subscription to the same id may have replaced it.
        if let Some(sub) = state.threads.get(thread_id) {
            if std::ptr::eq(Arc::as_ptr(&sub.overflowed), overflowed) {
                state.threads.remove(thread_id);
            }
        }
    }
}

struct PendingGuard<'a> {
    client: &'a RpcClient,
    id: i64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.client.inner.state.lock() {
            state.pending.remove(&self.id);
        }
    }
}

fn encode(msg: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("a serde_json::Value always serializes");
    line.push(b'\n');
    line
}

// === impl ThreadSubscription ===

/// How a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEnd {
    /// The worker went away (the reason says how).
    WorkerGone(String),
    /// This subscriber fell more than `subscription_capacity` events behind.
    Overflow,
}

/// The stream of one thread's events. Dropping it unsubscribes.
#[derive(Debug)]
pub struct ThreadSubscription {
    rx: QueueReceiver,
    thread_id: String,
    overflowed: Arc<AtomicBool>,
    client: RpcClient,
}

impl ThreadSubscription {
    /// The next event, or how the subscription ended.
    pub async fn recv(&mut self) -> Result<ThreadEvent, SubscriptionEnd> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`ThreadSubscription::recv`] as a poll: a turn's stream polls its
    /// subscription from its own `poll_next`, with no future in between.
    /// An event is taken only by the poll that returns it.
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<ThreadEvent, SubscriptionEnd>> {
        let received = std::task::ready!(self.rx.poll_recv(cx));
        std::task::Poll::Ready(match received {
            Some(event) => Ok(event),
            None if self.overflowed.load(Ordering::Acquire) => Err(SubscriptionEnd::Overflow),
            None => Err(SubscriptionEnd::WorkerGone(
                self.client
                    .close_reason()
                    .unwrap_or_else(|| "subscription ended".into()),
            )),
        })
    }

    pub fn thread_id(&self) -> &str {
        &self.thread_id
    }

    pub fn client(&self) -> &RpcClient {
        &self.client
    }
}

impl Drop for ThreadSubscription {
    fn drop(&mut self) {
        self.client.unsubscribe(&self.thread_id, &self.overflowed);
        // Answer tool calls that arrived but were never read, so codex never waits on them.
        self.rx.close();
        while let Some(event) = self.rx.try_recv() {
            if let ThreadEvent::Request(req) = event {
                answer_in_background(&self.client, *req);
            }
        }
    }
}

fn answer_in_background(client: &RpcClient, req: ServerRequest) {
    let answer = client.inner.policy.answer(&req);
    let client = client.clone();
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = client.respond(&req.id, answer).await;
        });
    }
}

// === tasks ===

/// Writes what senders left in the backlog (see [`LineWriter`]) until the
/// channel closes, then shuts the worker's stdin.
async fn flush_loop(client: RpcClient) {
    let closed = client.inner.closed_token.clone();
    if let Err(e) = client.inner.writer.flush_until(&closed).await {
        client.close(format!("writing to worker stdin failed: {e}"));
    }
}

/// Reads the worker's stdout and dispatches each line, as the bytes it
/// read: no `String` (and no UTF-8 pass of its own; the JSON parse checks
/// what it reads) per line.
async fn read_loop<R: AsyncRead + Unpin>(client: RpcClient, mut reader: R) {
    let max = client.inner.config.max_line_bytes;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // Inside a line longer than `max`: dropped up to its newline.
    let mut skipping = false;
    let reason = loop {
        let mut start = 0;
        while let Some(end) = memchr::memchr(b'\n', &buf[start..]) {
            let line = &buf[start..start + end];
            start += end + 1;
            if skipping {
                skipping = false;
                continue;
            }
            if line.len() > max {
                tracing::warn!("skipped a worker line longer than the configured maximum");
                continue;
            }
            dispatch(&client, line.strip_suffix(b"\r").unwrap_or(line)).await;
        }
        buf.drain(..start);
        if buf.len() > max {
            tracing::warn!("skipped a worker line longer than the configured maximum");
            buf.clear();
            skipping = true;
        }
        buf.reserve(READ_CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) => {
                // A last line without a newline is still a line.
                if !skipping && !buf.is_empty() {
                    let line = std::mem::take(&mut buf);
                    dispatch(&client, line.strip_suffix(b"\r").unwrap_or(&line)).await;
                }
                break "worker closed its stdout".to_owned();
            }
            Ok(_) => {}
            Err(e) => break format!("reading worker stdout failed: {e}"),
        }
    };
    client.close(reason);
}

/// Room made for each read of the worker's stdout (a pipe holds 64 KiB).
const READ_CHUNK: usize = 64 * 1024;

async fn dispatch(client: &RpcClient, line: &[u8]) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    if let Some(tap) = &client.inner.config.tap {
        (tap.0)(Direction::In, line);
    }
    // The common lines, routed without decoding them (see `scan.rs`).
    if let Some(scanned) = scan::scan(line) {
        if route_scanned(client, line, scanned).await {
            return;
        }
    }
    let Some(msg) = Incoming::parse(line) else {
        let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        tracing::warn!(line = %shown, "skipped a malformed line from the worker");
        return;
    };
    match msg {
        Incoming::Response {
            id: RequestId::Int(id),
            result,
        } => {
            let result = result
                .map(RawResult::from)
                .map_err(|(code, message)| RpcError::Remote { code, message });
            answered(client, id, result);
        }
        Incoming::Response { id, .. } => {
            tracing::debug!(?id, "response with an id this client never sends");
        }
        Incoming::Notification {
            method,
            thread_id,
            params,
        } => match thread_id {
            Some(thread) => notify(client, &thread, Notification::new(&method, &params)).await,
            None => notify_hook(client, &method, params.get()),
        },
        Incoming::Request(req) => {
            let policy = client.inner.policy;
            if policy.routes_to_subscriber(&req) {
                let thread = req.thread_id().unwrap_or_default().to_owned();
                match client
                    .deliver(&thread, ThreadEvent::Request(Box::new(req)))
                    .await
                {
                    Ok(()) => {}
                    Err(ThreadEvent::Request(req)) => answer_now(client, *req).await,
                    Err(ThreadEvent::Notification(_)) => {}
                }
            } else {
                answer_now(client, req).await;
            }
        }
    }
}

/// Routes a line [`scan`] found the parts of, as `dispatch` would have
/// after decoding it. `false` when it cannot (a part that is not UTF-8):
/// the decoder then reads the line.
async fn route_scanned(client: &RpcClient, line: &[u8], scanned: scan::Scanned) -> bool {
    match scanned {
        scan::Scanned::Notification {
            method,
            params,
            thread_id: Some(thread),
        } => {
            let Some(event) = Notification::in_line(line, method, params) else {
                return false;
            };
            // ASCII, as the scan only takes.
            let thread = std::str::from_utf8(&line[thread]).unwrap_or_default();
            notify(client, thread, event).await;
        }
        scan::Scanned::Notification {
            method,
            params,
            thread_id: None,
        } => {
            let (Ok(method), Ok(params)) = (
                std::str::from_utf8(&line[method]),
                std::str::from_utf8(&line[params]),
            ) else {
                return false;
            };
            notify_hook(client, method, params);
        }
        scan::Scanned::Response { id, result } => {
            let Some(result) = RawResult::in_line(line, result) else {
                return false;
            };
            answered(client, id, Ok(result));
        }
    }
    true
}

/// A notification for a thread, to its subscriber. One for a thread nobody
/// follows is dropped on purpose.
async fn notify(client: &RpcClient, thread: &str, event: Notification) {
    let _ = client
        .deliver(thread, ThreadEvent::Notification(event))
        .await;
}

/// A notification that names no thread, to the hook if there is one.
fn notify_hook(client: &RpcClient, method: &str, params: &str) {
    match &client.inner.config.on_notification {
        Some(hook) => (hook.0)(method, params),
        None => tracing::trace!(%method, "notification without a thread"),
    }
}

/// An answer to one of our requests, to whoever waits for it.
fn answered(client: &RpcClient, id: i64, result: Result<RawResult, RpcError>) {
    if !client.complete(id, result) {
        tracing::debug!(
            id,
            "response for a request nobody waits for (timed out or cancelled)"
        );
    }
}

async fn answer_now(client: &RpcClient, req: ServerRequest) {
    let answer = client.inner.policy.answer(&req);
    tracing::debug!(method = %req.method, ok = answer.is_ok(), "answered a worker request");
    let _ = client.respond(&req.id, answer).await;
}

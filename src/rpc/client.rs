//! [`RpcClient`]: correlation, timeouts and routing over one worker's stdio.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use super::error::RpcError;
use super::message::{Incoming, RequestId, ServerRequest, ThreadEvent};
use super::server_requests::ServerRequestPolicy;
use crate::protocol::Method;

/// Tunables of one channel.
#[derive(Debug, Clone)]
pub struct RpcClientConfig {
    /// Deadline for every request we send (`WORKER_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Lines queued for the writer task before callers wait.
    pub outgoing_capacity: usize,
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
            outgoing_capacity: 1024,
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
/// (method, params); like [`LineTap`] it must be quick and never block.
#[derive(Clone)]
pub struct NotificationHook(Arc<HookFn>);

type HookFn = dyn Fn(&str, &Value) + Send + Sync;

impl NotificationHook {
    pub fn new(f: impl Fn(&str, &Value) + Send + Sync + 'static) -> NotificationHook {
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
    outgoing: mpsc::Sender<Vec<u8>>,
    state: Mutex<State>,
    next_id: AtomicI64,
    closed_token: CancellationToken,
    config: RpcClientConfig,
    policy: ServerRequestPolicy,
    observer: Option<CallObserver>,
}

#[derive(Default)]
struct State {
    pending: HashMap<i64, oneshot::Sender<Result<Box<RawValue>, RpcError>>>,
    threads: HashMap<String, Subscriber>,
    closed: Option<String>,
}

struct Subscriber {
    tx: mpsc::Sender<ThreadEvent>,
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
        let (outgoing, outgoing_rx) = mpsc::channel(config.outgoing_capacity);
        let client = RpcClient {
            inner: Arc::new(Inner {
                outgoing,
                state: Mutex::new(State::default()),
                next_id: AtomicI64::new(1),
                closed_token: CancellationToken::new(),
                config,
                policy: ServerRequestPolicy,
                observer,
            }),
        };
        tokio::spawn(write_loop(client.clone(), writer, outgoing_rx));
        tokio::spawn(read_loop(client.clone(), reader));
        client
    }

    /// Sends a typed request and waits for its typed response.
    ///
    /// The params are written straight into the line and the response is
    /// deserialized straight from the worker's text: no `Value` in between.
    pub async fn call<M: Method>(&self, params: &M::Params) -> Result<M::Response, RpcError> {
        let raw = self.request_raw(M::NAME, params).await?;
        serde_json::from_str(raw.get()).map_err(|e| RpcError::Decode {
            method: M::NAME,
            detail: e.to_string(),
        })
    }

    /// Sends a request with untyped params and waits for the raw result.
    pub async fn request(&self, method: &'static str, params: Value) -> Result<Value, RpcError> {
        let raw = self.request_raw(method, &params).await?;
        serde_json::from_str(raw.get()).map_err(|e| RpcError::Decode {
            method,
            detail: e.to_string(),
        })
    }

    async fn request_raw<P: Serialize + ?Sized>(
        &self,
        method: &'static str,
        params: &P,
    ) -> Result<Box<RawValue>, RpcError> {
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
    ) -> Result<Box<RawValue>, RpcError> {
        // The line is written in one pass, the params serialized into it
        // directly; params that cannot be encoded fail before anything is sent.
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
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.inner.state.lock().expect("rpc state poisoned");
            if let Some(why) = &state.closed {
                return Err(RpcError::WorkerGone(why.clone()));
            }
            state.pending.insert(id, tx);
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
        let (tx, rx) = mpsc::channel(self.inner.config.subscription_capacity);
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
        for (_, tx) in pending {
            let _ = tx.send(Err(RpcError::WorkerGone(why.clone())));
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
        if let Some(tap) = &self.inner.config.tap {
            (tap.0)(Direction::Out, &line);
        }
        self.inner.outgoing.send(line).await.map_err(|_| {
            RpcError::WorkerGone(
                self.close_reason()
                    .unwrap_or_else(|| "writer stopped".into()),
            )
        })
    }

    fn complete(&self, id: i64, result: Result<Box<RawValue>, RpcError>) -> bool {
        let tx = self
            .inner
            .state
            .lock()
            .expect("rpc state poisoned")
            .pending
            .remove(&id);
        match tx {
            Some(tx) => {
                let _ = tx.send(result);
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
        let (tx, overflowed) = {
            let state = self.inner.state.lock().expect("rpc state poisoned");
            let Some(sub) = state.threads.get(thread_id) else {
                return Err(event);
            };
            (sub.tx.clone(), sub.overflowed.clone())
        };
        let event = match tx.try_send(event) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(event)) => {
                self.unsubscribe(thread_id, &overflowed);
                return Err(event);
            }
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        match tx
            .send_timeout(event, self.inner.config.overflow_grace)
            .await
        {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(event)) => {
                tracing::warn!(thread_id, "subscriber fell behind; ending its stream");
                overflowed.store(true, Ordering::Release);
                self.unsubscribe(thread_id, &overflowed);
                Err(event)
            }
            Err(mpsc::error::SendTimeoutError::Closed(event)) => {
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
    rx: mpsc::Receiver<ThreadEvent>,
    thread_id: String,
    overflowed: Arc<AtomicBool>,
    client: RpcClient,
}

impl ThreadSubscription {
    /// The next event, or how the subscription ended.
    pub async fn recv(&mut self) -> Result<ThreadEvent, SubscriptionEnd> {
        match self.rx.recv().await {
            Some(event) => Ok(event),
            None if self.overflowed.load(Ordering::Acquire) => Err(SubscriptionEnd::Overflow),
            None => Err(SubscriptionEnd::WorkerGone(
                self.client
                    .close_reason()
                    .unwrap_or_else(|| "subscription ended".into()),
            )),
        }
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
        while let Ok(event) = self.rx.try_recv() {
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

async fn write_loop<W: AsyncWrite + Unpin>(
    client: RpcClient,
    mut writer: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let closed = client.inner.closed_token.clone();
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { break };
                if let Err(e) = async { writer.write_all(&line).await?; writer.flush().await }.await {
                    client.close(format!("writing to worker stdin failed: {e}"));
                    break;
                }
            }
            _ = closed.cancelled() => break,
        }
    }
    // Dropping stdin tells codex to exit (it does so in ~15 ms, even mid-turn).
    let _ = writer.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(client: RpcClient, reader: R) {
    let codec = LinesCodec::new_with_max_length(client.inner.config.max_line_bytes);
    let mut lines = FramedRead::new(reader, codec);
    let reason = loop {
        match lines.next().await {
            None => break "worker closed its stdout".to_owned(),
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                tracing::warn!("skipped a worker line longer than the configured maximum");
            }
            Some(Err(LinesCodecError::Io(e))) => {
                break format!("reading worker stdout failed: {e}")
            }
            Some(Ok(line)) => dispatch(&client, line.as_bytes()).await,
        }
    };
    client.close(reason);
}

async fn dispatch(client: &RpcClient, line: &[u8]) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    if let Some(tap) = &client.inner.config.tap {
        (tap.0)(Direction::In, line);
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
            let result = result.map_err(|(code, message)| RpcError::Remote { code, message });
            if !client.complete(id, result) {
                tracing::debug!(
                    id,
                    "response for a request nobody waits for (timed out or cancelled)"
                );
            }
        }
        Incoming::Response { id, .. } => {
            tracing::debug!(?id, "response with an id this client never sends");
        }
        Incoming::Notification {
            method,
            thread_id,
            params,
        } => {
            if let Some(thread) = thread_id {
                // A notification for a thread nobody follows is dropped on purpose.
                let _ = client
                    .deliver(&thread, ThreadEvent::Notification { method, params })
                    .await;
            } else if let Some(hook) = &client.inner.config.on_notification {
                // Thread-less notifications are rare (account state, not
                // deltas): the hook gets them as a `Value`.
                match serde_json::from_str::<Value>(params.get()) {
                    Ok(params) => (hook.0)(&method, &params),
                    Err(e) => {
                        tracing::warn!(%method, error = %e, "notification params are not JSON")
                    }
                }
            } else {
                tracing::trace!(%method, "notification without a thread");
            }
        }
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
                    Err(ThreadEvent::Notification { .. }) => {}
                }
            } else {
                answer_now(client, req).await;
            }
        }
    }
}

async fn answer_now(client: &RpcClient, req: ServerRequest) {
    let answer = client.inner.policy.answer(&req);
    tracing::debug!(method = %req.method, ok = answer.is_ok(), "answered a worker request");
    let _ = client.respond(&req.id, answer).await;
}

//! One connection's life: the deadlines hyper does not keep on its own.
//!
//! hyper's HTTP/1 header-read timeout starts only once hyper reads a request
//! head. Before that, hyper-util's protocol sniffing waits for the first 24
//! bytes without a deadline, and HTTP/2 has none at all: a silent socket, a
//! slow h2c preface, or a preface and SETTINGS followed by silence held a
//! file descriptor for ever. So every connection is driven here under one
//! rule, the one HTTP/1 keep-alive already follows:
//!
//! **a connection with no request in flight for the header timeout is
//! closed**: a new connection that has not delivered a request head (or,
//! over h2c, a HEADERS frame) in time, an idle keep-alive connection, an
//! h2c connection with no open stream.
//!
//! "In flight" is counted by [`Activity`]: from the moment hyper hands a
//! request to the service until its response body ends or is dropped, so a
//! long SSE stream or a slow upload is never idle.
//!
//! Closing is graceful first (HTTP/1 closes at once when idle, HTTP/2 sends
//! GOAWAY), then forced after a short grace, because a silent h2 peer never
//! acknowledges the GOAWAY's PING and would otherwise keep the connection.
//! The same path closes idle connections early when the accept loop runs out
//! of file descriptors (see `accept.rs`) and at shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use super::{LingerOnClose, PeerAddr};

/// Deadlines of one connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Longest a connection may sit with no request in flight.
    pub(super) idle: Duration,
    /// Longest a connection being closed may take to say goodbye once it has
    /// nothing in flight.
    pub(super) close_grace: Duration,
    /// When descriptors run out, connections idle at least this long are
    /// closed at once; younger ones are likely clients about to send.
    pub(super) shed_after: Duration,
}

impl Limits {
    pub(super) fn new(header_timeout: Duration) -> Limits {
        Limits {
            idle: header_timeout,
            close_grace: header_timeout.min(Duration::from_secs(1)),
            shed_after: header_timeout.min(Duration::from_millis(250)),
        }
    }
}

/// Why the gateway closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CloseReason {
    /// No request in flight for [`Limits::idle`].
    Idle,
    /// Idle while the accept loop was out of file descriptors.
    Shed,
    /// The server is shutting down.
    Shutdown,
}

/// How a connection ended.
#[derive(Debug)]
pub(super) enum Ending<E> {
    /// hyper finished it (the client closed, or an error).
    Finished(Result<(), E>),
    /// The gateway closed it; `forced` when it had to be dropped because the
    /// peer did not finish the graceful close in time.
    Closed { reason: CloseReason, forced: bool },
}

// === impl Activity ===

/// Requests in flight on one connection, shared by the connection's service
/// (which counts them) and its driver (which reads the count when a
/// deadline comes due).
///
/// Plain atomics, not a channel: a request's start and end wake nobody. The
/// driver used to be woken by both (a `watch` channel), which cost every
/// request two extra polls of its connection task, each re-arming the idle
/// timer and re-registering with the server-wide pressure and shutdown
/// signals; it now looks at the count only when its timer fires.
#[derive(Debug, Clone)]
pub(super) struct Activity(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection was accepted), as
    /// nanoseconds since `origin`.
    idle_since: AtomicU64,
    origin: Instant,
}

/// One request in flight; dropping it ends it.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Shared>);

impl Activity {
    pub(super) fn new() -> Activity {
        Activity(Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            origin: Instant::now(),
        }))
    }

    pub(super) fn begin(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.0.clone())
    }

    /// Since when nothing has been in flight; `None` while something is.
    fn idle_since(&self) -> Option<Instant> {
        if self.0.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let nanos = self.0.idle_since.load(Ordering::Acquire);
        Some(self.0.origin + Duration::from_nanos(nanos))
    }

    /// When to look again: `limit` after the connection went idle, or, with
    /// a request in flight, `limit` from now (a long stream is looked at
    /// once per `limit`, and its end starts the count as before).
    fn deadline(&self, limit: Duration) -> Instant {
        self.idle_since().unwrap_or_else(Instant::now) + limit
    }

    /// Whether nothing has been in flight for at least `limit`.
    fn idle_for(&self, limit: Duration) -> bool {
        self.idle_since().is_some_and(|t| t.elapsed() >= limit)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first: a driver that sees the count at zero must not
        // read the time of an earlier idle spell.
        let nanos = self.0.origin.elapsed().as_nanos();
        self.0
            .idle_since
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === drive ===

/// Runs `conn` until it ends or the gateway closes it (module docs).
/// `graceful` starts the connection's graceful shutdown.
pub(super) async fn drive<C, E>(
    conn: C,
    graceful: impl FnOnce(Pin<&mut C>),
    activity: &Activity,
    limits: &Limits,
    shutdown: &CancellationToken,
    pressure: &Notify,
) -> Ending<E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    // In a block of its own so that the watch is gone before the grace
    // period's timer exists: the two then share their place in this
    // future, which the connection's task holds for its whole life.
    let reason = {
        // The connection's task is woken for every read and every body
        // frame; the reasons to close it are only looked at when they
        // themselves woke the task (each poll of them takes the pressure
        // and shutdown signals' locks, shared by every connection).
        let watch = WhenWoken::new(until_closing(activity, limits, shutdown, pressure));
        tokio::pin!(watch);
        tokio::select! {
            res = conn.as_mut() => return Ending::Finished(res),
            reason = watch.as_mut() => reason,
        }
    };

    graceful(conn.as_mut());
    let grace = WhenWoken::new(until_idle_for(activity, limits.close_grace, Instant::now()));
    tokio::pin!(grace);
    tokio::select! {
        _ = conn.as_mut() => Ending::Closed { reason, forced: false },
        _ = grace.as_mut() => Ending::Closed { reason, forced: true },
    }
}

/// Why the gateway should close the connection, once it should.
async fn until_closing(
    activity: &Activity,
    limits: &Limits,
    shutdown: &CancellationToken,
    pressure: &Notify,
) -> CloseReason {
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(activity.deadline(limits.idle)) => {
                if activity.idle_for(limits.idle) {
                    return CloseReason::Idle;
                }
            }
            _ = pressure.notified() => {
                if activity.idle_for(limits.shed_after) {
                    return CloseReason::Shed;
                }
            }
            _ = shutdown.cancelled() => return CloseReason::Shutdown,
        }
    }
}

/// Resolves once nothing has been in flight for `limit`, counted from
/// `from` at the earliest (when the connection was asked to close).
async fn until_idle_for(activity: &Activity, limit: Duration, from: Instant) {
    loop {
        let deadline = match activity.idle_since() {
            Some(since) => since.max(from) + limit,
            None => Instant::now() + limit,
        };
        if activity.idle_since().is_some() && deadline <= Instant::now() {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

pin_project_lite::pin_project! {
    /// Polls `inner` only when `inner` itself asked to be woken (and the
    /// first time): the rest of the time the task was woken for something
    /// else, and polling `inner` would only cost.
    struct WhenWoken<F> {
        #[pin]
        inner: F,
        flag: Arc<WakeFlag>,
        waker: Waker,
    }
}

#[derive(Default)]
struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> WhenWoken<F> {
    fn new(inner: F) -> WhenWoken<F> {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        WhenWoken {
            inner,
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read, so a wake-up in between is
        // not lost: it sets the flag and wakes this very waker.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

// === impl ConnService ===

/// The stack as one connection sees it: puts [`PeerAddr`] and the
/// connection's [`LingerOnClose`] in each request, counts requests in
/// flight until their response bodies end, and marks `Connection: close` on
/// an answer sent while the connection is set to linger (the request body
/// was not read, so the connection cannot carry another request; a client
/// that pooled it would fail its next one).
///
/// The stack is shared (`Arc`), not copied into each connection: hyper
/// clones this service for every request anyway, and each request runs on
/// a clone of the stack made then. A copy per connection was a 680-byte
/// allocation that an open stream kept for its whole life (issue #14).
#[derive(Debug)]
pub(super) struct ConnService<S> {
    stack: Arc<S>,
    peer: PeerAddr,
    activity: Activity,
    linger: LingerOnClose,
}

impl<S> Clone for ConnService<S> {
    fn clone(&self) -> ConnService<S> {
        ConnService {
            stack: self.stack.clone(),
            peer: self.peer,
            activity: self.activity.clone(),
            linger: self.linger.clone(),
        }
    }
}

impl<S> ConnService<S> {
    pub(super) fn new(
        stack: Arc<S>,
        peer: PeerAddr,
        activity: Activity,
        linger: LingerOnClose,
    ) -> ConnService<S> {
        ConnService {
            stack,
            peer,
            activity,
            linger,
        }
    }
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for ConnService<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Clone,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<Oneshot<S, Request<ReqBody>>>;

    /// Always ready: the request's own clone of the stack is polled for
    /// readiness before it is called (`Oneshot`).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let in_flight = self.activity.begin();
        req.extensions_mut().insert(self.peer);
        req.extensions_mut().insert(self.linger.clone());
        ResponseFuture {
            inner: S::clone(&self.stack).oneshot(req),
            in_flight: Some(in_flight),
            linger: self.linger.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The stack's response future; hands the in-flight mark to the body.
    pub(super) struct ResponseFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        linger: LingerOnClose,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        let linger = this.linger.is_set();
        Poll::Ready(res.map(|mut res| {
            if linger {
                res.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            res.map(|inner| TrackedBody { inner, in_flight })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted until it ends or is dropped.
    pub(super) struct TrackedBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.in_flight.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that never ends on its own and counts graceful shutdowns;
    /// `obliging` ones end as soon as they are asked to.
    struct FakeConn {
        asked: Arc<std::sync::atomic::AtomicUsize>,
        obliging: bool,
    }

    impl Future for FakeConn {
        type Output = Result<(), ()>;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            let asked = self.asked.load(std::sync::atomic::Ordering::SeqCst) > 0;
            if asked && self.obliging {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    fn fake(obliging: bool) -> (FakeConn, Arc<std::sync::atomic::AtomicUsize>) {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (
            FakeConn {
                asked: asked.clone(),
                obliging,
            },
            asked,
        )
    }

    fn ask(conn: Pin<&mut FakeConn>) {
        conn.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    const HEADER: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn an_answer_sent_while_the_connection_lingers_says_it_closes() {
        use tower::ServiceExt;
        // A handler that answers before reading the body sets the linger
        // flag (as `api::upload::read_body` does); others do not.
        let handler = tower::service_fn(|req: Request<()>| async move {
            if req.uri().path() == "/refuse" {
                req.extensions().get::<LingerOnClose>().unwrap().linger();
            }
            Ok::<_, std::convert::Infallible>(Response::new(()))
        });
        let svc = |linger: LingerOnClose| {
            ConnService::new(
                Arc::new(handler),
                PeerAddr("127.0.0.1:1".parse().unwrap()),
                Activity::new(),
                linger,
            )
        };
        let ok = svc(LingerOnClose::default())
            .oneshot(Request::get("/ok").body(()).unwrap())
            .await
            .unwrap();
        assert!(!ok.headers().contains_key(http::header::CONNECTION));
        let refused = svc(LingerOnClose::default())
            .oneshot(Request::post("/refuse").body(()).unwrap())
            .await
            .unwrap();
        // The client must not reuse the connection for another request.
        assert_eq!(refused.headers()[http::header::CONNECTION], "close");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_a_request_is_closed_after_the_header_timeout() {
        let (conn, asked) = fake(false);
        let activity = Activity::new();
        let started = Instant::now();
        let ending = drive(
            conn,
            ask,
            &activity,
            &Limits::new(HEADER),
            &CancellationToken::new(),
            &Notify::new(),
        )
        .await;
        // Asked to close at 10 s; a peer that does not oblige is dropped 1 s later.
        assert!(matches!(
            ending,
            Ending::Closed {
                reason: CloseReason::Idle,
                forced: true
            }
        ));
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), HEADER + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle_and_idleness_restarts_when_it_ends() {
        let (conn, _) = fake(true);
        let activity = Activity::new();
        let started = Instant::now();
        let a = activity.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let req = a.begin();
            // A long stream: a minute, far beyond the idle limit.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(req);
        });
        let ending = drive(
            conn,
            ask,
            &activity,
            &Limits::new(HEADER),
            &CancellationToken::new(),
            &Notify::new(),
        )
        .await;
        assert!(matches!(
            ending,
            Ending::Closed {
                reason: CloseReason::Idle,
                forced: false
            }
        ));
        assert_eq!(started.elapsed(), Duration::from_secs(5 + 60 + 10));
    }

    #[tokio::test(start_paused = true)]
    async fn descriptor_pressure_sheds_only_connections_idle_for_a_while() {
        let pressure = Arc::new(Notify::new());
        let (old, _) = fake(true);
        let (busy, _) = fake(true);
        let old_activity = Activity::new();
        let busy_activity = Activity::new();
        let _req = busy_activity.begin();
        let token = CancellationToken::new();
        let limits = Limits::new(HEADER);
        let p = pressure.clone();
        let t = token.clone();
        let old =
            tokio::spawn(async move { drive(old, ask, &old_activity, &limits, &t, &p).await });
        let p = pressure.clone();
        let t = token.clone();
        let busy =
            tokio::spawn(async move { drive(busy, ask, &busy_activity, &limits, &t, &p).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A connection accepted just now is spared: its request is likely on the way.
        let (young, _) = fake(true);
        let young_activity = Activity::new();
        let p = pressure.clone();
        let t = token.clone();
        let young =
            tokio::spawn(async move { drive(young, ask, &young_activity, &limits, &t, &p).await });
        tokio::time::sleep(Duration::from_millis(10)).await;

        pressure.notify_waiters();
        let ending = old.await.unwrap();
        assert!(matches!(
            ending,
            Ending::Closed {
                reason: CloseReason::Shed,
                ..
            }
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!busy.is_finished());
        assert!(!young.is_finished());
        token.cancel();
        assert!(matches!(
            young.await.unwrap(),
            Ending::Closed {
                reason: CloseReason::Shutdown,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_requests_in_flight() {
        let (conn, asked) = fake(false);
        let activity = Activity::new();
        let req = activity.begin();
        let token = CancellationToken::new();
        token.cancel();
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            drop(req);
        });
        let ending = drive(
            conn,
            ask,
            &activity,
            &Limits::new(HEADER),
            &token,
            &Notify::new(),
        )
        .await;
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(
            ending,
            Ending::Closed {
                reason: CloseReason::Shutdown,
                forced: true
            }
        ));
        // The request's 20 s, then the 1 s grace (the fake peer never closes).
        assert_eq!(started.elapsed(), Duration::from_secs(21));
    }
}

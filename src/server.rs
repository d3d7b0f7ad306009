//! The hyper 1 server: accept loop, per-connection tasks, graceful drain.
//!
//! Shape taken from hyper-util's `server_graceful` example: one
//! `auto::Builder` (HTTP/1.1 and h2c), a header-read timeout armed through
//! the tokio timer, a graceful shutdown of every connection, and a deadline
//! on the drain. The peer address goes into each request's extensions as
//! [`PeerAddr`].
//!
//! What hyper does not do on its own lives beside it:
//! - `connection.rs`: every connection, HTTP/1 or h2c, is closed once it has
//!   had no request in flight for the header timeout, before its first
//!   request included (hyper's own timeout starts only once it reads a
//!   request head, and HTTP/2 has none);
//! - `sniff.rs`: HTTP/1 or h2c is decided by peeking at a connection's
//!   first bytes, so hyper's first read gets the whole request head and its
//!   read buffer stays at 8 KiB (`auto` alone read the first 24 bytes, and
//!   hyper's buffer then grew to 16 KiB on every HTTP/1 connection);
//! - `accept.rs`: out of file descriptors, the loop closes idle connections,
//!   backs off, and logs once per episode;
//! - `io.rs` with `rejection.rs`: the requests hyper rejects by itself get
//!   the OpenAI envelope and an `x-request-id`, and a connection answered
//!   before its request was read closes lingering, so the client can read
//!   the answer.

mod accept;
mod connection;
mod inline_wake;
mod io;
mod rejection;
mod sniff;

pub use io::LingerOnClose;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use accept::AcceptErrors;
use connection::{Activity, CloseReason, ConnService, Ending, Limits};
use inline_wake::InlineWake;
use sniff::{Opening, Protocol, Served};

/// How often an HTTP/2 connection with open streams pings its peer, so a peer
/// that vanished mid-stream is noticed within this plus the header timeout.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// A builder for each answer of the peek (`sniff.rs`).
struct Builders {
    /// hyper's own HTTP/1 builder: its connection is half the size of
    /// `auto`'s (`sniff.rs`, `Served`).
    http1: http1::Builder,
    http2: auto::Builder<TokioExecutor>,
    /// `auto`'s own sniffing, for first bytes that are still a beginning of
    /// the HTTP/2 preface.
    either: auto::Builder<TokioExecutor>,
}

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Server settings (the `serve` group of [`Config`](crate::config::Config)).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the binary listens (`PROXY_HOST`, `PORT`); [`serve`] takes a
    /// listener already bound, so tests can bind port 0.
    pub host: IpAddr,
    pub port: u16,
    /// Time a client has to send a request's headers, and longest a
    /// connection (HTTP/1.1 or h2c, new or kept alive) may sit with no
    /// request in flight.
    pub header_timeout: Duration,
    /// How long in-flight requests and streams may run after shutdown starts.
    pub drain_timeout: Duration,
}

impl ServeConfig {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops
/// accepting and lets open connections finish up to the drain deadline.
/// Returns whether the drain finished in time.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> bool
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    // The same HTTP/1 settings again, for connections the peek found to be
    // HTTP/1: `auto` takes no ready-made HTTP/1 builder, nor hands its own out.
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(config.header_timeout);
    // One builder per answer of the peek (`sniff.rs`), the same settings.
    let builders = Arc::new(Builders {
        http1,
        http2: builder.clone().http2_only(),
        either: builder,
    });
    let limits = Limits::new(config.header_timeout);
    // Shared by every connection (see `ConnService`).
    let stack = Arc::new(service);
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    // Signalled when accept runs out of descriptors: idle connections close.
    let pressure = Arc::new(Notify::new());
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    if let Some(episode) = accept_errors.accepted(tokio::time::Instant::now()) {
                        tracing::warn!(
                            failed_accepts = episode.failures,
                            lasted_ms = episode.lasted.as_millis() as u64,
                            "accepting connections again"
                        );
                    }
                    conn
                }
                Err(e) => {
                    let on = accept_errors.failed(&e, tokio::time::Instant::now());
                    if on.log {
                        tracing::warn!(
                            error = %e,
                            "accept failed; closing idle connections and retrying \
                             (logged once until accepting works again; see the file \
                             descriptor budget in docs/operations.md)"
                        );
                    }
                    if on.shed {
                        pressure.notify_waiters();
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(on.retry_after) => {}
                        _ = &mut shutdown => break,
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let linger = LingerOnClose::default();
        let svc = ConnService::new(
            stack.clone(),
            PeerAddr(peer),
            activity.clone(),
            linger.clone(),
        );
        let builders = builders.clone();
        // Yields the connection itself, unpolled: `Opening` polls it next.
        #[allow(clippy::async_yields_async)]
        let peek = async move {
            let mut first = [0u8; sniff::PEEK_LEN];
            // A failed peek is met again by hyper's first read.
            let n = stream.peek(&mut first).await.unwrap_or(0);
            let protocol = sniff::protocol_of(&first[..n]);
            let io = TokioIo::new(io::ConnIo::new(stream, peer, linger));
            let svc = TowerToHyperService::new(svc);
            let other = match protocol {
                Protocol::Http1 => {
                    return Served::Http1(Box::pin(builders.http1.serve_connection(io, svc)));
                }
                Protocol::Http2 => &builders.http2,
                Protocol::Unsure => &builders.either,
            };
            Served::Other(Box::pin(other.serve_connection(io, svc).into_owned()))
        };
        // The peek is boxed, and so is the connection it yields (at its
        // protocol's size); the peek's box is freed once it has. Unboxed,
        // the task's future kept a slot for the connection as this block's
        // capture, as `drive`'s argument and as its pinned local (measured:
        // a 5.8 KB future for a 1.7 KB connection, held for the
        // connection's whole life).
        let conn = Opening::new(Box::pin(peek));
        let closing = closing.clone();
        let pressure = pressure.clone();
        connections.spawn(async move {
            // A connection wakes itself while serving a request: polled
            // again in place, not handed to the other runtime thread.
            let ending = InlineWake::new(connection::drive(
                conn,
                |c| c.graceful_shutdown(|conn| conn.get_mut().graceful_shutdown()),
                &activity,
                &limits,
                &closing,
                &pressure,
            ))
            .await;
            match ending {
                Ending::Finished(Ok(())) => {}
                Ending::Finished(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                Ending::Closed { reason, forced } => {
                    if reason != CloseReason::Shutdown {
                        tracing::debug!(%peer, ?reason, forced, "closed an idle connection");
                    }
                }
            }
        });
    }

    drop(listener);
    tracing::info!(deadline = ?config.drain_timeout, "draining connections");
    closing.cancel();
    connections.close();
    tokio::select! {
        _ = connections.wait() => { tracing::info!("all connections closed"); true }
        _ = tokio::time::sleep(config.drain_timeout) => {
            tracing::warn!("drain deadline reached; closing the remaining connections");
            false
        }
    }
}

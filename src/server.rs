//! The hyper 1 server: accept loop, per-connection tasks, graceful drain.
//!
//! Shape taken from hyper-util's `server_graceful` example: one
//! `auto::Builder` (HTTP/1.1 and h2c), a header-read timeout armed through
//! the tokio timer, `GracefulShutdown::watch` on every connection, and a
//! deadline on the drain. The peer address goes into each request's
//! extensions as [`PeerAddr`].

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

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
    /// Time a client has to send a request's headers (HTTP/1).
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
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept: back
                    // off briefly instead of spinning, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = service
            .clone()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                req
            });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!(deadline = ?config.drain_timeout, "draining connections");
    tokio::select! {
        _ = graceful.shutdown() => { tracing::info!("all connections closed"); true }
        _ = tokio::time::sleep(config.drain_timeout) => {
            tracing::warn!("drain deadline reached; closing the remaining connections");
            false
        }
    }
}

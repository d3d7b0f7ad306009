//! The hyper 1 server loop the `codex-*` layer examples share, so each
//! example shows its layer and not forty lines of accept loop.
//!
//! Only a `[dev-dependencies]` entry of the layer crates: a layer's normal
//! dependencies do not grow by it, and it is not published.
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use hyper::body::Incoming;
//! use tower::service_fn;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     let service = service_fn(|_req: Request<Incoming>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok\n"))))
//!     });
//!     let listener = codex_layer_example_server::bind_from_env_or_args(0).await?;
//!     codex_layer_example_server::serve(listener, service).await;
//!     Ok(())
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{error::Error, future::Future, net::SocketAddr, pin::pin, time::Duration};

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

/// The error type the examples' `main` returns.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after Ctrl-C.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Binds `127.0.0.1` on the port in `$PORT`, else in the first command-line
/// argument, else `default_port` (0 for an ephemeral port), and prints the
/// address as `listening on http://…`.
pub async fn bind_from_env_or_args(default_port: u16) -> Result<TcpListener, BoxError> {
    let port = match std::env::var("PORT")
        .ok()
        .or_else(|| std::env::args().nth(1))
    {
        Some(port) => port
            .parse()
            .map_err(|error| format!("port {port:?}: {error}"))?,
        None => default_port,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    Ok(listener)
}

/// Serves `service` on `listener` until Ctrl-C, then stops accepting and
/// gives open connections 10 s to finish.
///
/// HTTP/1.1 and h2c, with a 10 s header-read timeout. Each request carries
/// the peer's [`SocketAddr`] in its extensions, for policies keyed by client
/// address. Each request is served by a fresh clone of `service`, made ready
/// before it is called.
pub async fn serve<S, B>(listener: TcpListener, service: S)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_until(listener, service, async {
        // Without a signal handler there is nothing to wait for: run on.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await;
}

/// [`serve`], stopping when `shutdown` completes instead of on Ctrl-C.
pub async fn serve_until<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        // The timer arms the header-read timeout; without one it is ignored.
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    eprintln!("accept error: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let service = service.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert::<SocketAddr>(peer);
            service.clone().oneshot(request)
        });
        let connection = server
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("connection error: {error}");
            }
        });
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_DEADLINE) => eprintln!("drain deadline passed"),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
        sync::oneshot,
    };

    use super::*;

    #[tokio::test]
    async fn serves_requests_with_the_peer_address_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Answers with the peer address it finds in the extensions.
        let service = tower::service_fn(|request: Request<Incoming>| async move {
            let peer = request.extensions().get::<SocketAddr>().copied();
            let text = peer.map_or_else(|| "none".to_owned(), |peer| peer.ip().to_string());
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_until(listener, service, async {
            let _ = stopped.await;
        }));

        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\n127.0.0.1"), "{response}");

        // With no connection left open, shutdown returns without waiting.
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}

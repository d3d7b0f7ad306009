//! A plain hyper server behind `RequireAuthLayer`, with one key.
//!
//! ```text
//! API_KEY=sk-demo cargo run -p codex-auth --example auth_server
//! curl -i http://127.0.0.1:PORT/healthz                              # 200, no key needed
//! curl -i http://127.0.0.1:PORT/v1/models                            # 401 missing key
//! curl -i -H 'Authorization: Bearer nope' http://127.0.0.1:PORT/v1/models     # 401 incorrect key
//! curl -i -H 'Authorization: Bearer sk-demo' http://127.0.0.1:PORT/v1/models  # 200 "hello, demo"
//! ```
//!
//! Listens on 127.0.0.1:$PORT (an ephemeral port when unset). Ctrl-C stops
//! accepting and gives open connections 10 s to finish.

use std::{convert::Infallible, error::Error, pin::pin, time::Duration};

use bytes::Bytes;
use codex_auth::{ApiKey, AuthenticatedKey, KeySet, RequireAuthLayer};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = match request.extensions().get::<AuthenticatedKey>() {
        Some(key) => format!("hello, {}\n", key.name()),
        None => "ok\n".to_owned(),
    };
    Ok(Response::new(Full::new(Bytes::from(text))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(0), |p| p.parse())?;
    let secret = std::env::var("API_KEY").unwrap_or_else(|_| "sk-demo".to_owned());
    let keys = KeySet::new(vec![ApiKey::new("demo", secret)]);

    let service = ServiceBuilder::new()
        .layer(
            RequireAuthLayer::new(keys)
                .exempt(|req: &Request<Incoming>| req.uri().path() == "/healthz"),
        )
        .service_fn(hello);

    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let graceful = GracefulShutdown::new();
    let mut ctrl_c = pin!(tokio::signal::ctrl_c());

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        eprintln!("accept error: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(service.clone());
                let connection = server.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        eprintln!("connection error: {error}");
                    }
                });
            }
            _ = ctrl_c.as_mut() => break,
        }
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => eprintln!("drain deadline passed"),
    }
    Ok(())
}

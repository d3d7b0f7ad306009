//! A plain hyper server behind `OutputModeLayer`, echoing the chosen mode.
//!
//! ```text
//! cargo run -p codex-output-mode --example output_mode_server
//! curl -i http://127.0.0.1:PORT/                                        # 200 "obsidian-xml"
//! curl -i -H 'x-proxy-output-mode: OpenAI-JSON' http://127.0.0.1:PORT/  # 200 "openai-json"
//! curl -i -H 'x-proxy-output-mode: yaml' http://127.0.0.1:PORT/         # 400 invalid_output_mode
//! ```
//!
//! `OUTPUT_MODE` sets the default (`obsidian-xml` when unset). Listens on
//! 127.0.0.1:$PORT (an ephemeral port when unset). Ctrl-C stops accepting
//! and gives open connections 10 s to finish.

use std::{convert::Infallible, error::Error, pin::pin, time::Duration};

use bytes::Bytes;
use codex_output_mode::{OutputMode, OutputModeLayer};
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

async fn echo_mode(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The layer always inserts a mode on requests it lets through.
    let mode = request
        .extensions()
        .get::<OutputMode>()
        .copied()
        .unwrap_or_default();
    Ok(Response::new(Full::new(Bytes::from(format!("{mode}\n")))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(0), |p| p.parse())?;
    let default: OutputMode =
        std::env::var("OUTPUT_MODE").map_or(Ok(OutputMode::default()), |m| m.parse())?;

    let service = ServiceBuilder::new()
        .layer(OutputModeLayer::new(default))
        .service_fn(echo_mode);

    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "listening on http://{} (default mode {default})",
        listener.local_addr()?
    );

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
